"""``describe``: what a file holds (geometry, HU statistics, or label names with volumes in mL)."""

from __future__ import annotations

from typing import Any

import numpy as np


def looks_like_labels(array: np.ndarray) -> bool:
    """Integer, non-negative, and few distinct values: a label map rather than an image."""
    if array.dtype.kind not in "iu" or array.min() < 0 or array.max() > 1000:
        return False
    return len(np.unique(array[:: max(1, array.shape[0] // 16)])) <= 256


def describe(path: str, names: str | None = None) -> dict[str, Any]:
    """Geometry, value statistics and (for label maps) label names with volumes in mL."""
    from .labels import read_labels
    from .volume import read_volume

    volume = read_volume(path)
    info: dict[str, Any] = {
        "file": str(path),
        "size_xyz": list(volume.shape[::-1]),
        "spacing_mm": [round(s, 6) for s in volume.spacing],
        "origin_mm": [round(o, 4) for o in volume.origin],
        "direction": [round(float(d), 6) for d in volume.direction.flatten()],
        "dtype": str(volume.array.dtype),
        "extent_mm": [round(n * s, 2) for n, s in zip(volume.shape[::-1], volume.spacing, strict=True)],
    }
    if names or looks_like_labels(volume.array):
        labels = read_labels(path, names)
        info["kind"] = "labels"
        info["labels_ml"] = {name: round(ml, 2) for name, ml in labels.volumes_ml().items()}
    else:
        values = volume.array
        p1, p50, p99 = np.percentile(values, [1, 50, 99])
        info["kind"] = "image"
        info["hu"] = {
            "min": float(values.min()),
            "max": float(values.max()),
            "mean": round(float(values.mean()), 2),
            "p1": float(p1),
            "p50": float(p50),
            "p99": float(p99),
        }
    return info
