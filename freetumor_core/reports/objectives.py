"""MG-3D's objectives, each with a weight and an off switch (weight 0).

- ``contrastive``: global cross-modal alignment, symmetric InfoNCE (CT -> report and report -> CT)
  at temperature ``temperature`` (MG-3D: 0.1).
- ``correlation``: inter-patient correlation. The sentence-level similarity of two reports (each
  sentence's best cosine among the other report's sentences, averaged both ways, on the frozen
  sentence vectors) is a soft target for the cosine of their CT vectors when it is at least
  ``high`` (0.9), a target of 0 when it is at most ``low`` (0.6); pairs in between are ignored; L1.
- ``volume``: text-guided masked volume modelling: MSE of the reconstructed voxels on the masked
  blocks only.
- ``sentences``: image-guided reconstruction of masked sentence features: 1 - cosine between the
  predicted and the frozen vector of each masked sentence.

:func:`mask_volume` and :func:`mask_sentences` draw the masks from a ``torch.Generator``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from ..errors import InputError

__all__ = [
    "Objectives",
    "contrastive_loss",
    "correlation_loss",
    "mask_sentences",
    "mask_volume",
    "report_similarity",
    "sentence_loss",
    "volume_loss",
]


@dataclass
class Objectives:
    """Weights of the four objectives (0 switches one off) and their settings."""

    contrastive: float = 1.0
    correlation: float = 0.5
    volume: float = 0.5
    sentences: float = 0.5
    temperature: float = 0.1
    high: float = 0.9
    low: float = 0.6
    volume_mask_ratio: float = 0.5
    sentence_mask_ratio: float = 0.15

    def __post_init__(self) -> None:
        for name in ("contrastive", "correlation", "volume", "sentences"):
            if not getattr(self, name) >= 0:
                raise InputError(f"objective weight {name} must be >= 0, got {getattr(self, name)!r}")
        if not any(getattr(self, name) > 0 for name in ("contrastive", "correlation", "volume", "sentences")):
            raise InputError("at least one objective needs a weight above 0")
        if not self.temperature > 0:
            raise InputError(f"temperature must be positive, got {self.temperature!r}")
        if not -1.0 <= self.low < self.high <= 1.0:
            raise InputError(f"need -1 <= low < high <= 1, got low {self.low}, high {self.high}")
        for name in ("volume_mask_ratio", "sentence_mask_ratio"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise InputError(f"{name} must be between 0 and 1, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def contrastive_loss(image: torch.Tensor, report: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Symmetric InfoNCE of unit-length ``(B, D)`` CT and report vectors (row i matches row i)."""
    logits = image.float() @ report.float().T / temperature
    targets = torch.arange(len(image), device=image.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def report_similarity(sentences: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B, B)`` sentence-level similarity of reports given as frozen unit sentence vectors
    ``(B, S, T)`` with their mask ``(B, S)``: for reports i and j, the mean over i's sentences of the
    best cosine among j's, averaged with the same from j to i."""
    sentences = F.normalize(sentences.float(), dim=-1)
    cosine = torch.einsum("ist,jut->ijsu", sentences, sentences)  # (B, B, S, S)
    valid = mask[:, None, :, None] & mask[None, :, None, :]
    best = cosine.masked_fill(~valid, -2.0).amax(3)  # (B, B, S): each of i's sentences, best in j
    weights = mask[:, None, :].float()
    directed = (best * weights).sum(2) / weights.sum(2).clamp(min=1.0)
    return 0.5 * (directed + directed.T)


def correlation_loss(
    image: torch.Tensor, similarity: torch.Tensor, high: float = 0.9, low: float = 0.6
) -> torch.Tensor:
    """L1 between CT-vector cosines and report similarity targets, off the diagonal: a similarity
    >= ``high`` is its own target, <= ``low`` a target of 0, in between ignored. 0 when no pair counts."""
    cosine = image.float() @ image.float().T
    off_diagonal = ~torch.eye(len(image), dtype=torch.bool, device=image.device)
    similar, different = (similarity >= high) & off_diagonal, (similarity <= low) & off_diagonal
    target = torch.where(similar, similarity, torch.zeros_like(similarity))
    counted = similar | different
    if not counted.any():
        return cosine.sum() * 0.0
    return (cosine - target).abs()[counted].mean()


def mask_volume(
    image: torch.Tensor, block: int, ratio: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blank a ``ratio`` of the ``block``^3 blocks of ``(B, 1, N, N, N)`` images (to 0, the window's
    low end). Returns the masked images and the voxel mask ``(B, 1, N, N, N)`` (True: masked)."""
    batch, _, depth, height, width = image.shape
    grid = (depth // block, height // block, width // block)
    count = grid[0] * grid[1] * grid[2]
    keep = max(1, min(count - 1, round(count * ratio)))
    scores = torch.rand(batch, count, generator=generator).argsort(1).argsort(1) < keep
    blocks = scores.view(batch, 1, *grid).to(image.device)
    voxels = blocks.repeat_interleave(block, 2).repeat_interleave(block, 3).repeat_interleave(block, 4)
    return image.masked_fill(voxels, 0.0), voxels


def mask_sentences(
    mask: torch.Tensor, ratio: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A ``(B, S)`` choice of sentences to mask in the reports with two or more sentences: each real
    sentence with probability ``ratio``, and at least one per report."""
    draw = torch.rand(mask.shape, generator=generator).to(mask.device)
    counts = mask.sum(1)
    chosen = (draw < ratio) & mask & (counts >= 2)[:, None]
    lowest = draw.masked_fill(~mask, 2.0).argmin(1)
    need = (chosen.sum(1) == 0) & (counts >= 2)
    chosen[need, lowest[need]] = True
    return chosen


def volume_loss(reconstructed: torch.Tensor, image: torch.Tensor, voxels: torch.Tensor) -> torch.Tensor:
    """MSE on the masked voxels only."""
    return F.mse_loss(reconstructed.float()[voxels], image.float()[voxels])


def sentence_loss(predicted: torch.Tensor, sentences: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Mean ``1 - cosine`` between predicted and frozen vectors of the masked sentences; 0 when none."""
    if not masked.any():
        return predicted.sum() * 0.0
    cosine = F.cosine_similarity(predicted.float()[masked], sentences.float()[masked], dim=-1)
    return (1.0 - cosine).mean()
