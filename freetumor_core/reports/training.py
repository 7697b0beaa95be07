"""``ReportTask``: MG-3D volume-report pre-training on the shared trainer loop.

Data: a report datalist (``{"training": [{"image": CT, "report": TEXT, "crop": NPY?}, ...],
"validation": [...]}``, as :func:`.corpus.make_corpus` writes). A case's input grid is its cached
``crop`` when the datalist's ``preprocessing`` equals the model's, else it is made from the CT
(:func:`.model.ct_input`) once and kept in memory. Each report's sentences (at most 32) are encoded
once by the frozen sentence encoder; a batch carries them padded with a mask.

Each step computes the objectives that have a weight (:class:`.objectives.Objectives`); the masks
of the two reconstruction objectives are drawn from the global random state, which the loop seeds
and checkpoints. Validation: Recall@1/5/10 of CT -> report and report -> CT on the held-out cases.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..models import ModelConfig, Preprocessing
from ..progress import ProgressLike
from ..training.task import TrainTask
from ..volume import read_ct
from .corpus import read_corpus
from .model import ct_input, default_preprocessing, report_sentences, window
from .objectives import (
    Objectives,
    contrastive_loss,
    correlation_loss,
    mask_sentences,
    mask_volume,
    report_similarity,
    sentence_loss,
    volume_loss,
)
from .vision import ReportModel, default_architecture

__all__ = ["ReportPairs", "ReportTask", "recall_at"]


def recall_at(similarity: np.ndarray, ks: tuple[int, ...] = (1, 5, 10)) -> dict[int, float]:
    """Recall@k of a square similarity matrix whose row i's right answer is column i."""
    order = np.argsort(-similarity, axis=1, kind="stable")
    rank = np.argmax(order == np.arange(len(similarity))[:, None], axis=1)
    return {k: float(np.mean(rank < k)) for k in ks}


class ReportPairs(torch.utils.data.Dataset):
    """``{"image": (1, N, N, N), "sentences": (S, T), "mask": (S,)}`` of a datalist's cases."""

    def __init__(
        self,
        entries: list[dict[str, Any]],
        preprocessing: Preprocessing,
        sentence_vectors: dict[str, np.ndarray],
        cached_preprocessing: dict | None,
        max_sentences: int,
    ) -> None:
        self.entries, self.preprocessing = entries, preprocessing
        self.vectors, self.max_sentences = sentence_vectors, max_sentences
        self.use_crops = cached_preprocessing == preprocessing.to_dict()
        self._grids: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def grid(self, index: int) -> np.ndarray:
        """The windowed input grid of case ``index`` (float32, (N, N, N))."""
        if index not in self._grids:
            entry = self.entries[index]
            expected = tuple(self.preprocessing.patch_size_voxels or ())[::-1]
            if self.use_crops and entry.get("crop"):
                try:
                    hu = np.load(entry["crop"], allow_pickle=False)
                except (OSError, ValueError) as error:
                    raise InputError(f"not a readable crop ({error})", entry["crop"]) from None
                if hu.shape != expected:
                    raise InputError(
                        f"crop shape {hu.shape} differs from the model's {expected}", entry["crop"]
                    )
            elif entry.get("image"):
                hu = ct_input(read_ct(entry["image"]), self.preprocessing)
            else:
                raise InputError(f"case {entry['id']}: its crop does not fit the model and it has no image")
            self._grids[index] = window(hu.astype(np.float32), self.preprocessing)
        return self._grids[index]

    def sentences(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        texts = report_sentences(self.entries[index]["report"])[: self.max_sentences]
        dimension = len(next(iter(self.vectors.values())))
        vectors = np.zeros((self.max_sentences, dimension), dtype=np.float32)
        mask = np.zeros(self.max_sentences, dtype=bool)
        for row, text in enumerate(texts):
            vectors[row], mask[row] = self.vectors[text], True
        return vectors, mask

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        vectors, mask = self.sentences(index)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(self.grid(index)))[None],
            "sentences": torch.from_numpy(vectors),
            "mask": torch.from_numpy(mask),
        }


class ReportTask(TrainTask):
    """Volume-report pre-training (see the module docstring).

    Args:
        datalist: the report datalist (``training``; ``validation`` optional).
        architecture: :func:`.vision.default_architecture`'s dict (its heads follow ``objectives``).
        preprocessing: spacing, HU window, input size (its size must equal the architecture's).
        objectives: the objectives' weights and settings.
        text_encoder: a local Hugging Face folder; ``None``: all-MiniLM-L6-v2.
        device: where the frozen sentence encoder runs once at the start.
    """

    def __init__(
        self,
        datalist: str | os.PathLike[str],
        architecture: dict[str, Any] | None = None,
        preprocessing: Preprocessing | None = None,
        objectives: Objectives | None = None,
        text_encoder: str | None = None,
        device: str = "auto",
        progress: ProgressLike = None,
    ) -> None:
        from .encoder import encode_sentences

        self.objectives = objectives or Objectives()
        self.preprocessing = preprocessing or default_preprocessing()
        size = self.preprocessing.patch_size_voxels
        if size is None or len(set(size)) != 1 or size[0] % 32:
            raise InputError(
                f"the report model needs a cubic input whose edge is a multiple of 32, got {size}"
            )
        self.architecture = architecture or default_architecture(input_voxels=size[0])
        args = self.architecture["args"]
        args["input_voxels"] = size[0]
        args["masked_volume"] = self.objectives.volume > 0
        args["masked_sentences"] = self.objectives.sentences > 0
        self.datalist, self.text_encoder = str(datalist), text_encoder
        training, data = read_corpus(datalist, "training")
        try:
            validation, _ = read_corpus(datalist, "validation")
        except InputError:
            validation = []
        texts = sorted({s for e in training + validation for s in report_sentences(e["report"])})
        vectors = encode_sentences(texts, text_encoder, device=device, progress=progress)
        args["text_dim"] = int(vectors.shape[1])
        lookup = dict(zip(texts, vectors, strict=False))
        longest = max(len(report_sentences(e["report"])) for e in training + validation)
        cached = data.get("preprocessing")
        self.data = ReportPairs(training, self.preprocessing, lookup, cached, longest)
        self.validation = (
            ReportPairs(validation, self.preprocessing, lookup, cached, longest) if validation else None
        )
        self.summary = {"training_cases": len(training), "validation_cases": len(validation)}

    def build_model(self) -> nn.Module:
        return ReportModel(**self.architecture["args"])

    def dataset(self) -> torch.utils.data.Dataset:
        return self.data

    def step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        weights = self.objectives
        image, sentences, mask = batch["image"], batch["sentences"], batch["mask"]
        masked_image = voxels = chosen = None
        if weights.volume > 0:
            masked_image, voxels = mask_volume(image, ReportModel.block_voxels, weights.volume_mask_ratio)
        if weights.sentences > 0:
            chosen = mask_sentences(mask, weights.sentence_mask_ratio)
        out = model(image, sentences, mask, masked_image=masked_image, masked_sentences=chosen)
        losses: dict[str, torch.Tensor] = {}
        if weights.contrastive > 0:
            losses["contrastive_loss"] = contrastive_loss(out["image"], out["report"], weights.temperature)
        if weights.correlation > 0:
            similarity = report_similarity(sentences, mask)
            losses["correlation_loss"] = correlation_loss(out["image"], similarity, weights.high, weights.low)
        if weights.volume > 0:
            losses["volume_loss"] = volume_loss(out["volume"], image, voxels)
        if weights.sentences > 0:
            losses["sentence_loss"] = sentence_loss(out["sentences"], sentences, chosen)
        factor = {"contrastive_loss": weights.contrastive, "correlation_loss": weights.correlation,
                  "volume_loss": weights.volume, "sentence_loss": weights.sentences}  # fmt: skip
        losses["loss"] = sum(factor[name] * value for name, value in losses.items())
        return losses

    def embed(self, model: nn.Module, pairs: ReportPairs) -> tuple[np.ndarray, np.ndarray]:
        """CT and report vectors of every case of ``pairs`` (model in eval mode)."""
        device = next(model.parameters()).device
        images, reports = [], []
        for index in range(len(pairs)):
            item = pairs[index]
            images.append(model.encode_image(item["image"][None].to(device))[0].float().cpu().numpy())
            sentences, mask = item["sentences"][None].to(device), item["mask"][None].to(device)
            reports.append(model.report_embedding(sentences, mask)[0].float().cpu().numpy())
        return np.stack(images), np.stack(reports)

    def validate(self, model: nn.Module) -> dict[str, Any]:
        """Recall@1/5/10 both ways on the held-out cases (none: no metrics)."""
        if self.validation is None:
            return {}
        images, reports = self.embed(model, self.validation)
        similarity = images @ reports.T
        ct_to_report, report_to_ct = recall_at(similarity), recall_at(similarity.T)
        metrics: dict[str, Any] = {"validation_cases": len(self.validation)}
        for k in (1, 5, 10):
            metrics[f"ct_to_report_r{k}"] = round(ct_to_report[k], 4)
            metrics[f"report_to_ct_r{k}"] = round(report_to_ct[k], 4)
        metrics["chance_r1"] = round(1.0 / len(self.validation), 4)
        return metrics

    def model_config(self) -> ModelConfig:
        return ModelConfig(
            task="reports",
            architecture=self.architecture,
            preprocessing=self.preprocessing,
            provenance={
                "training_data": (
                    f"{self.summary['training_cases']} CT-report pair(s) of "
                    f"{os.path.basename(self.datalist)} ({self.summary['validation_cases']} held out)"
                ),
                "text_encoder": self.text_encoder or "default",
                "objectives": self.objectives.to_dict(),
            },
            description=(
                "MG-3D-style CT-report matching: a Swin ViT CT encoder and a projection of frozen "
                "all-MiniLM-L6-v2 sentence vectors into one embedding space. Research use only; trained "
                "on synthetic tumors and template reports, not on real patients' reports."
            ),
        )
