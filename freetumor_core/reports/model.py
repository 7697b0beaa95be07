"""A loaded report model: CT -> embedding, report sentences -> embeddings.

A report model folder is an ordinary model folder (``config.json``, ``model.safetensors``,
``README.md``) with ``task: "reports"`` and ``architecture: {"name": "ReportModel", ...}``
(:class:`.vision.ReportModel`). Its preprocessing says how a CT becomes the network's input
(:func:`ct_input`): resampled with linear interpolation to ``spacing_mm`` on a cube of
``patch_size_voxels`` centred on the body (the centre of the voxels above -500 HU), in the CT's own
direction; HU clipped to ``hu_window`` and scaled to [0, 1]. The sentence vectors come from the frozen
sentence encoder named in ``provenance["text_encoder"]`` (the default all-MiniLM-L6-v2 when it is
``"default"``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from ..errors import InputError
from ..models import CONFIG_FILE, WEIGHTS_FILE, ModelConfig, Preprocessing, read_model_config
from ..volume import Volume
from .text import split_report
from .vision import ARCHITECTURE_NAME, ReportModel

__all__ = [
    "BODY_HU",
    "LoadedReportModel",
    "ReportEmbedding",
    "bench_embed_volume",
    "ct_input",
    "default_preprocessing",
    "load_report_model",
    "model_hash",
    "report_sentences",
    "window",
]

BODY_HU = -500.0  # voxels above this are body (the crop is centred on them)
MAX_SENTENCES = 32  # as MG-3D: at most this many sentences of a report count


def default_preprocessing(input_voxels: int = 64, spacing_mm: float = 4.0) -> Preprocessing:
    """A cube of ``input_voxels`` at ``spacing_mm`` (default 256 mm), an abdominal HU window."""
    return Preprocessing(
        spacing_mm=[spacing_mm] * 3, hu_window=[-150.0, 250.0], patch_size_voxels=[input_voxels] * 3
    )


def ct_input(ct: Volume, preprocessing: Preprocessing) -> np.ndarray:
    """The network's input grid of a CT in HU: ``(N, N, N)`` float32 (z, y, x), not yet windowed."""
    size = preprocessing.patch_size_voxels
    spacing = preprocessing.spacing_mm or list(ct.spacing)
    if size is None:
        raise InputError("a report model's preprocessing needs patch_size_voxels")
    body = np.argwhere(ct.array > BODY_HU)
    centre_index = body.mean(0) if len(body) else (np.asarray(ct.shape) - 1) / 2.0
    centre = ct.index_to_lps(centre_index)
    direction = ct.direction
    half = (np.asarray(size, dtype=np.float64) - 1) / 2.0 * np.asarray(spacing)
    origin = centre - direction @ half
    reference = sitk.Image([int(s) for s in size], sitk.sitkFloat32)
    reference.SetSpacing([float(s) for s in spacing])
    reference.SetOrigin([float(o) for o in origin])
    reference.SetDirection([float(d) for d in direction.flatten()])
    image = sitk.Cast(ct.to_sitk(), sitk.sitkFloat32)
    resampled = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, -1024.0)
    return sitk.GetArrayFromImage(resampled).astype(np.float32)


def window(hu: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """HU clipped to the window and scaled to [0, 1] (unchanged without a window)."""
    if preprocessing.hu_window is None:
        return hu.astype(np.float32)
    low, high = preprocessing.hu_window
    return ((np.clip(hu, low, high) - low) / (high - low)).astype(np.float32)


def report_sentences(text: str) -> list[str]:
    """The sentences of a report that the model reads (findings then impression, at most 32)."""
    sentences = [s.text for s in split_report(text)][:MAX_SENTENCES]
    return sentences or [str(text).strip() or "(empty report)"]


def model_hash(folder: str | os.PathLike[str]) -> str:
    """SHA-256 of a model folder's config and weights: an index remembers which model made it."""
    digest = hashlib.sha256()
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        with open(Path(folder) / name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


@dataclass
class ReportEmbedding:
    """Embeddings of one report: its report vector and one vector per sentence."""

    vector: np.ndarray  # (D,)
    sentences: list[str]
    sentence_vectors: np.ndarray  # (S, D)


@dataclass
class LoadedReportModel:
    """A report model ready to run: the network (eval mode), its config, folder and device."""

    network: ReportModel
    config: ModelConfig
    folder: Path
    device: torch.device
    text_encoder: str | None = None  # a local Hugging Face folder; None: all-MiniLM-L6-v2

    @property
    def dimension(self) -> int:
        return int(self.network.embed_dim)

    @property
    def hash(self) -> str:
        return model_hash(self.folder)

    def sentence_vectors(self, texts: Sequence[str], progress=None) -> np.ndarray:
        """The frozen sentence encoder's vectors of ``texts`` (``len x text_dim``)."""
        from .encoder import encode_sentences

        return encode_sentences(list(texts), self.text_encoder, device=str(self.device), progress=progress)

    def embed_ct(self, ct: Volume) -> np.ndarray:
        """The unit-length ``(D,)`` embedding of a CT."""
        image = window(ct_input(ct, self.config.preprocessing), self.config.preprocessing)
        tensor = torch.from_numpy(image)[None, None].to(self.device)
        with torch.inference_mode():
            return self.network.encode_image(tensor)[0].float().cpu().numpy()

    def embed_reports(self, texts: Sequence[str], progress=None) -> list[ReportEmbedding]:
        """Report and sentence embeddings of each report text."""
        split = [report_sentences(text) for text in texts]
        unique = sorted({s for sentences in split for s in sentences})
        frozen = self.sentence_vectors(unique, progress=progress) if unique else np.zeros((0, 1))
        row = {text: index for index, text in enumerate(unique)}
        results = []
        with torch.inference_mode():
            for sentences in split:
                vectors = torch.from_numpy(frozen[[row[s] for s in sentences]]).to(self.device)
                mask = torch.ones(1, len(sentences), dtype=torch.bool, device=self.device)
                report = self.network.report_embedding(vectors[None], mask)[0]
                per_sentence = self.network.sentence_embeddings(vectors)
                results.append(
                    ReportEmbedding(
                        report.float().cpu().numpy(), sentences, per_sentence.float().cpu().numpy()
                    )
                )
        return results

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """``(len, D)`` embeddings of short texts (queries, prompts), each read as one sentence."""
        frozen = self.sentence_vectors(list(texts))
        with torch.inference_mode():
            vectors = self.network.sentence_embeddings(torch.from_numpy(frozen).to(self.device))
        return vectors.float().cpu().numpy()


def load_report_model(folder: str | os.PathLike[str], device: str = "auto") -> LoadedReportModel:
    """Load a report model folder (a path or a shipped model's name).

    Raises:
        InputError: naming the file: not a model folder, not a report model, corrupt weights, or
            tensors that do not fit the architecture.
    """
    from ..device import resolve_device
    from ..models import resolve_model
    from ..models.folder import _check_fits, _read_weights

    folder = resolve_model(folder)
    config = read_model_config(folder)
    path = folder / CONFIG_FILE
    if config.task != "reports" or config.network_name != ARCHITECTURE_NAME:
        raise InputError(f"not a report model (task {config.task!r}, network {config.network_name!r})", path)
    try:
        network = ReportModel(**config.architecture["args"])
    except (TypeError, ValueError) as error:
        raise InputError(f"cannot build {ARCHITECTURE_NAME} from its args: {error}", path) from None
    tensors = _read_weights(folder / WEIGHTS_FILE, config.weights_sha256)
    _check_fits(network, tensors, folder / WEIGHTS_FILE, ARCHITECTURE_NAME)
    network.load_state_dict(tensors, strict=True)
    torch_device = resolve_device(device)
    network.to(torch_device).eval()
    encoder = config.provenance.get("text_encoder")
    text_encoder = None if encoder in (None, "default") else str(encoder)
    return LoadedReportModel(network, config, folder, torch_device, text_encoder)


def bench_embed_volume(bench) -> None:
    """``embed/volume`` of ``freetumor bench reports``: seconds to embed one CT on the CPU.

    ``embed/volume`` is the whole of :meth:`LoadedReportModel.embed_ct` (the input grid, the HU
    window, the network); ``embed/volume_input`` and ``embed/volume_network`` are its two parts,
    timed in turns beside it. Reading the file is not counted. Options: ``model=DIR`` (a report
    model folder or a shipped model's name; default: a seeded untrained model of the default
    architecture and preprocessing, which is as fast as a trained one), ``ct=PATH`` (default:
    IRCADb patient 7 in the shared data, 512 x 512 x 151; the phantom when that is absent).
    """
    from ..volume import read_volume
    from .bench import SHARED_DATA

    if bench.options.get("model"):
        model = load_report_model(bench.options["model"], device="cpu")
        bench.note(f"embed/volume: report model {model.folder}")
    else:
        from ..models import ModelConfig
        from .vision import default_architecture

        torch.manual_seed(0)
        preprocessing = default_preprocessing()
        architecture = default_architecture(input_voxels=preprocessing.patch_size_voxels[0])
        network = ReportModel(**architecture["args"]).eval()
        config = ModelConfig(task="reports", architecture=architecture, preprocessing=preprocessing)
        model = LoadedReportModel(network, config, Path("."), torch.device("cpu"))
        bench.note(
            "embed/volume: an untrained report model of the default architecture (ReportModel, feature "
            "size 12) and preprocessing (no model=DIR given); weights do not change the time"
        )
    source = bench.options.get("ct") or SHARED_DATA / "ircadb_p07" / "ircadb1_07_ct.nii.gz"
    if Path(source).is_file():
        ct = read_volume(source)
    else:
        from ..phantom import make_phantom

        ct, _ = make_phantom(0)
        source = "the phantom (seed 0)"
    preprocessing = model.config.preprocessing
    size = "x".join(str(n) for n in preprocessing.patch_size_voxels)
    shape = "x".join(str(n) for n in reversed(ct.shape))
    bench.note(
        f"embed/volume: CT {source}, {shape} voxels, to a {size} input at "
        f"{preprocessing.spacing_mm} mm; CPU, {torch.get_num_threads()} torch threads; reading not counted"
    )
    grid = window(ct_input(ct, preprocessing), preprocessing)
    tensor = torch.from_numpy(grid)[None, None]

    def network_only():
        with torch.inference_mode():
            model.network.encode_image(tensor)

    bench.time_interleaved(
        {
            "embed/volume": lambda: model.embed_ct(ct),
            "embed/volume_input": lambda: window(ct_input(ct, preprocessing), preprocessing),
            "embed/volume_network": network_only,
        },
        repeat=min(bench.repeat, 3),
        unit="s",
    )
