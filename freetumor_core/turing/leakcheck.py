"""The leak check: can simple image statistics tell a study's real cases from its synthetic ones?

Before a study is written, every prepared case (what readers will see) is measured:

- ``noise_hu``: noise level, from the spread of neighbour differences in soft tissue (edges trimmed);
- ``laplacian_sd``: high-frequency energy, the standard deviation of the Laplacian in soft tissue;
- ``hu_occupancy``: HU quantization, the share of whole HU values between the 5th and 95th
  percentile of soft tissue that occur at all (8-bit windowed sources leave gaps);
- ``source_voxel_mm``: the source scan's voxel size (geometric mean of its spacing, mm).

A feature *separates* the groups when one threshold puts every real case on one side and every
synthetic case on the other, with a gap of at least :data:`SEPARATION_GAP` of the feature's typical
value. A leave-one-out nearest-centroid classifier on all features (standardised on the training
cases of each fold) gives the accuracy an observer with these statistics would reach.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

FEATURES = ("noise_hu", "laplacian_sd", "hu_occupancy", "source_voxel_mm")
SEPARATION_GAP = 0.10
MIN_PER_GROUP = 2
SOFT_TISSUE_HU = (-100.0, 200.0)


def noise_level_hu(array: np.ndarray) -> float:
    """Noise SD (HU) from in-plane neighbour differences where both voxels are soft tissue.

    Smooth anatomy cancels in a difference; edges are trimmed as outliers.
    """
    values = np.asarray(array, dtype=np.float32)
    low, high = SOFT_TISSUE_HU
    soft = (values >= low) & (values <= high)
    differences = []
    for axis in (1, 2):
        ahead = np.take(values, range(1, values.shape[axis]), axis=axis)
        behind = np.take(values, range(values.shape[axis] - 1), axis=axis)
        both = np.take(soft, range(1, values.shape[axis]), axis=axis) & np.take(
            soft, range(values.shape[axis] - 1), axis=axis
        )
        differences.append((ahead - behind)[both])
    difference = np.concatenate(differences)
    if difference.size < 16:
        return 0.0
    # SD of the differences without the outliers that edges make (beyond 4 robust SDs); unlike the
    # MAD itself, this is not stepped by whole-HU data.
    centre = np.median(difference)
    robust_sd = 1.4826 * np.median(np.abs(difference - centre))
    kept = difference[np.abs(difference - centre) <= 4.0 * max(robust_sd, 0.5)]
    return float(kept.std() / np.sqrt(2.0))


def case_features(array: np.ndarray, source_spacing_mm: Sequence[float]) -> dict[str, float]:
    """The leak-check features of one prepared case (``array``: HU, ``(z, y, x)``)."""
    values = np.asarray(array, dtype=np.float32)
    low, high = SOFT_TISSUE_HU
    soft = ndimage.binary_erosion((values >= low) & (values <= high), iterations=1)
    laplacian = ndimage.laplace(values)
    inside = values[soft]
    if inside.size:
        p5, p95 = np.percentile(inside, [5, 95])
        whole = np.rint(inside[(inside >= p5) & (inside <= p95)]).astype(np.int64)
        occupancy = len(np.unique(whole)) / max(float(np.rint(p95) - np.rint(p5) + 1), 1.0)
    else:
        occupancy = 0.0
    return {
        "noise_hu": round(noise_level_hu(values), 3),
        "laplacian_sd": round(float(laplacian[soft].std()) if soft.any() else 0.0, 3),
        "hu_occupancy": round(float(occupancy), 4),
        "source_voxel_mm": round(float(np.prod(source_spacing_mm)) ** (1.0 / 3.0), 4),
    }


def loo_predictions(matrix: np.ndarray, is_synthetic: np.ndarray) -> np.ndarray:
    """Leave-one-out nearest-centroid predictions (``True`` = synthetic), one per row of ``matrix``.

    Each row is left out in turn; the features are standardised on the other rows and the row goes
    to the group whose centroid is nearer.
    """
    predictions = np.zeros(len(matrix), dtype=bool)
    for i in range(len(matrix)):
        train = np.arange(len(matrix)) != i
        mean = matrix[train].mean(axis=0)
        scale = matrix[train].std(axis=0)
        scale[scale == 0] = 1.0
        standard = (matrix - mean) / scale
        distances = []
        for group in (False, True):
            members = train & (is_synthetic == group)
            distances.append(np.linalg.norm(standard[i] - standard[members].mean(axis=0)))
        predictions[i] = bool(distances[1] < distances[0])
    return predictions


def _loo_accuracy(matrix: np.ndarray, is_synthetic: np.ndarray) -> float:
    return float(np.mean(loo_predictions(matrix, is_synthetic) == is_synthetic))


def check_leaks(features: Sequence[dict[str, float]], origins: Sequence[str]) -> dict[str, Any]:
    """Test whether the features tell the origins apart.

    Args:
        features: one :func:`case_features` result per case.
        origins: ``"real"`` or ``"synthetic"`` per case, in the same order.

    Returns:
        ``checked`` (False with fewer than :data:`MIN_PER_GROUP` cases in a group), ``leaky``,
        ``loo_accuracy`` (leave-one-out nearest-centroid accuracy, or ``None``), ``separating`` (the
        features that split the groups, with each group's range), and the group sizes.
    """
    is_synthetic = np.array([origin == "synthetic" for origin in origins])
    n_synthetic = int(is_synthetic.sum())
    n_real = len(origins) - n_synthetic
    report: dict[str, Any] = {
        "features": list(FEATURES),
        "n_real": n_real,
        "n_synthetic": n_synthetic,
        "checked": min(n_real, n_synthetic) >= MIN_PER_GROUP,
        "leaky": False,
        "loo_accuracy": None,
        "separating": [],
    }
    if not report["checked"]:
        return report
    matrix = np.array([[case[name] for name in FEATURES] for case in features], dtype=np.float64)
    report["loo_accuracy"] = round(_loo_accuracy(matrix, is_synthetic), 4)
    for column, name in enumerate(FEATURES):
        real, synthetic = matrix[~is_synthetic, column], matrix[is_synthetic, column]
        gap = max(synthetic.min() - real.max(), real.min() - synthetic.max())
        scale = max(float(np.median(np.abs(matrix[:, column]))), 1e-9)
        if gap > 0 and gap / scale >= SEPARATION_GAP:
            report["separating"].append(
                {
                    "feature": name,
                    "real": [round(float(real.min()), 4), round(float(real.max()), 4)],
                    "synthetic": [round(float(synthetic.min()), 4), round(float(synthetic.max()), 4)],
                }
            )
    report["leaky"] = bool(report["separating"])
    return report


def describe_leaks(report: dict[str, Any]) -> str:
    """One line for people: the accuracy and the separating features."""
    if not report["checked"]:
        return (
            f"leak check skipped: it needs at least {MIN_PER_GROUP} real and {MIN_PER_GROUP} synthetic "
            f"cases (have {report['n_real']} and {report['n_synthetic']})"
        )
    parts = [
        f"{item['feature']} (real {item['real'][0]:g}..{item['real'][1]:g}, synthetic "
        f"{item['synthetic'][0]:g}..{item['synthetic'][1]:g})"
        for item in report["separating"]
    ]
    accuracy = f"leave-one-out accuracy from image statistics {100 * report['loo_accuracy']:.0f}%"
    return f"{accuracy}; separating: {', '.join(parts)}" if parts else f"{accuracy}; no feature separates"
