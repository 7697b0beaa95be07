"""Segmentation metrics: Dice and normalized surface Dice (MONAI), lesion-wise detection, and
patient-level sensitivity and specificity.

Conventions (stated once, used everywhere):

- **Dice** and **NSD** of two empty masks are 1 (nothing to find, nothing found); of one empty mask
  and one that is not, 0. NSD (``monai.metrics.compute_surface_dice``) is the fraction of both
  surfaces that lies within ``tolerance_mm`` of the other, in physical mm (the voxel spacing).
- **Lesions** are :func:`freetumor_core.lesions.split_lesions`' pieces (face-connected, at least
  a 5 mm ball) of the union of all lesion labels.
- **Matching rule.** A predicted lesion and a ground-truth lesion are a candidate pair when their
  lesion Dice (2|A∩B| / (|A| + |B|)) is at least :data:`MATCH_DICE` (0.1). Pairs are taken one to
  one, best Dice first (ties: larger ground-truth lesion first); a lesion is in at most one pair.
  Matched ground-truth lesions are true positives, unmatched ones false negatives, unmatched
  predicted lesions false positives.
- **Sensitivity** = TP / (TP + FN), **precision** = TP / (TP + FP), **F1** = 2 TP / (2 TP + FP + FN);
  each is ``None`` where its denominator is 0 (no ground-truth lesion, no predicted lesion, neither).
- **Size bins** (tiny < 10 mm: early detection, small 10-20, medium 20-40, large >= 40 mm;
  :data:`freetumor_core.records.SIZE_CLASSES_MM`) go by the ground-truth lesion's equivalent-sphere
  diameter for TP and FN, and by the predicted lesion's for FP.
- **Patient level**: a case is positive when its ground truth has a lesion, called positive when
  the prediction has one; sensitivity = called positives / positives, specificity = called
  negatives / negatives (``None`` without positives or negatives).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..records import SIZE_CLASSES_MM, size_class
from .postprocess import label_lesions

__all__ = [
    "MATCH_DICE",
    "DetectionCounts",
    "LesionMatch",
    "dice",
    "match_lesions",
    "patient_level",
    "surface_dice",
]

MATCH_DICE = 0.1
SIZE_BINS = tuple(SIZE_CLASSES_MM)


def _ratio(numerator: float, denominator: float) -> float | None:
    return None if denominator == 0 else float(numerator) / float(denominator)


def _tensor(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]


def _crop(pred: np.ndarray, truth: np.ndarray, margin: int) -> tuple[np.ndarray, np.ndarray]:
    either = pred | truth
    box = []
    for axis in range(3):
        hits = np.flatnonzero(either.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(max(int(hits[0]) - margin, 0), int(hits[-1]) + 1 + margin))
    # Padding keeps a surface that touches the border of the crop a surface.
    pad = [(margin, margin)] * 3
    return np.pad(pred[tuple(box)], pad), np.pad(truth[tuple(box)], pad)


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks (``monai.metrics.compute_dice``); 1 when both are empty."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if not pred.any() and not truth.any():
        return 1.0
    from monai.metrics import compute_dice

    pred, truth = _crop(pred, truth, 1)
    return float(compute_dice(_tensor(pred), _tensor(truth), include_background=True, ignore_empty=False))


def surface_dice(
    pred: np.ndarray, truth: np.ndarray, spacing_zyx_mm: Sequence[float], tolerance_mm: float
) -> float:
    """Normalized surface Dice at ``tolerance_mm`` (``monai.metrics.compute_surface_dice``)."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if not pred.any() and not truth.any():
        return 1.0
    if not pred.any() or not truth.any():
        return 0.0
    from monai.metrics import compute_surface_dice

    pred, truth = _crop(pred, truth, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        value = compute_surface_dice(
            _tensor(pred),
            _tensor(truth),
            class_thresholds=[float(tolerance_mm)],
            include_background=True,
            spacing=[float(s) for s in spacing_zyx_mm],
        )
    return float(value)


@dataclass
class LesionMatch:
    """One lesion of either side: its equivalent diameter and size bin, and its partner's lesion
    Dice when matched (``None``: unmatched)."""

    diameter_mm: float
    size_class: str
    dice: float | None


@dataclass
class DetectionCounts:
    """Lesion-wise counts (overall and per size bin) and the rates they give."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    bins: dict[str, dict[str, int]] = field(
        default_factory=lambda: {name: {"tp": 0, "fp": 0, "fn": 0} for name in SIZE_BINS}
    )
    lesion_dice: list[float] = field(default_factory=list)

    def add(self, other: DetectionCounts) -> None:
        self.tp, self.fp, self.fn = self.tp + other.tp, self.fp + other.fp, self.fn + other.fn
        for name in SIZE_BINS:
            for key in ("tp", "fp", "fn"):
                self.bins[name][key] += other.bins[name][key]
        self.lesion_dice += other.lesion_dice

    @staticmethod
    def rates(tp: int, fp: int, fn: int) -> dict[str, float | None]:
        return {
            "sensitivity": _ratio(tp, tp + fn),
            "precision": _ratio(tp, tp + fp),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        }

    def to_dict(self) -> dict:
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            **self.rates(self.tp, self.fp, self.fn),
            "mean_lesion_dice": _ratio(sum(self.lesion_dice), len(self.lesion_dice)),
            "bins": {name: {**counts, **self.rates(**counts)} for name, counts in self.bins.items()},
        }


def _diameters(components: np.ndarray, ids: list[int], voxel_ml: float) -> list[float]:
    counts = np.bincount(components.ravel())
    return [(6.0 * counts[i] * voxel_ml * 1000.0 / math.pi) ** (1.0 / 3.0) for i in ids]


def match_lesions(
    pred: np.ndarray, truth: np.ndarray, spacing_zyx_mm: Sequence[float]
) -> tuple[DetectionCounts, list[LesionMatch], list[LesionMatch]]:
    """Match predicted to ground-truth lesions by the module's rule.

    Returns:
        ``(counts, truth_lesions, predicted_lesions)``: the counts and, for every lesion of each
        side (largest first), its size and its match's lesion Dice.
    """
    voxel_ml = float(np.prod(np.asarray(spacing_zyx_mm, dtype=np.float64))) / 1000.0
    pred_components, pred_ids, _ = label_lesions(np.asarray(pred, bool), spacing_zyx_mm)
    truth_components, truth_ids, _ = label_lesions(np.asarray(truth, bool), spacing_zyx_mm)
    pred_sizes = np.bincount(pred_components.ravel())
    truth_sizes = np.bincount(truth_components.ravel())
    both = (pred_components > 0) & (truth_components > 0)
    pairs: dict[tuple[int, int], int] = {}
    if both.any():
        keys, counts = np.unique(
            np.stack([truth_components[both], pred_components[both]]), axis=1, return_counts=True
        )
        pairs = {(int(t), int(p)): int(c) for (t, p), c in zip(keys.T, counts, strict=True)}
    truth_set, pred_set = set(truth_ids), set(pred_ids)
    candidates = []
    for (t, p), overlap in pairs.items():
        if t in truth_set and p in pred_set:
            value = 2.0 * overlap / (truth_sizes[t] + pred_sizes[p])
            if value >= MATCH_DICE:
                candidates.append((-value, -int(truth_sizes[t]), t, p))
    matched_truth: dict[int, float] = {}
    matched_pred: dict[int, float] = {}
    for negative, _, t, p in sorted(candidates):
        if t not in matched_truth and p not in matched_pred:
            matched_truth[t] = matched_pred[p] = -negative
    truth_lesions = [
        LesionMatch(d, size_class(d), matched_truth.get(i))
        for i, d in zip(truth_ids, _diameters(truth_components, truth_ids, voxel_ml), strict=True)
    ]
    pred_lesions = [
        LesionMatch(d, size_class(d), matched_pred.get(i))
        for i, d in zip(pred_ids, _diameters(pred_components, pred_ids, voxel_ml), strict=True)
    ]
    counts = DetectionCounts()
    for lesion in truth_lesions:
        key = "tp" if lesion.dice is not None else "fn"
        setattr(counts, key, getattr(counts, key) + 1)
        counts.bins[lesion.size_class][key] += 1
        if lesion.dice is not None:
            counts.lesion_dice.append(lesion.dice)
    for lesion in pred_lesions:
        if lesion.dice is None:
            counts.fp += 1
            counts.bins[lesion.size_class]["fp"] += 1
    return counts, truth_lesions, pred_lesions


def patient_level(cases: Sequence[tuple[bool, bool]]) -> dict:
    """Patient-level sensitivity and specificity of ``(truth has a lesion, prediction has one)``."""
    positives = [called for truth, called in cases if truth]
    negatives = [called for truth, called in cases if not truth]
    return {
        "positives": len(positives),
        "negatives": len(negatives),
        "sensitivity": _ratio(sum(positives), len(positives)),
        "specificity": _ratio(len(negatives) - sum(negatives), len(negatives)),
    }
