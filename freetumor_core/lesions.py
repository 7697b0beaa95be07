"""What a lesion is: which label names denote one, and how a mask splits into lesions.

- A label is a lesion when a word of its name (split at anything but letters) is, or ends with,
  tumor, tumour, lesion, cyst, mass, metastasis, nodule or neoplasm, singular or plural:
  ``liver_tumor``, ``kidney_cyst``, ``tumor``, ``Lesion 2``, ``livertumor01``, ``lung_nodules`` are;
  ``cystic_duct``, ``liver`` and every TotalSegmentator organ are not. Synthesis keeps its margin
  from these labels, and the snapshot and the Slicer segmentation paint them in the tumor colour.
- One lesion is one face-connected (6-connected) piece of a mask of at least
  :data:`MIN_LESION_ML`, the volume of a 5 mm ball: the smallest tumor the size classes describe
  (``tiny`` is 5-10 mm). Smaller pieces are annotation specks, not lesions a reader could judge.
  Synthetic tumors are single face-connected pieces by construction, so both are counted alike.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

LESION_WORDS = ("tumor", "tumour", "lesion", "cyst", "mass", "metastasis", "metastases", "nodule", "neoplasm")
MIN_LESION_ML = math.pi / 6.0 * 5.0**3 / 1000.0  # a 5 mm ball: 0.0654 mL


@functools.lru_cache(maxsize=4096)
def is_lesion_label(name: str) -> bool:
    """True for a label name that denotes a lesion (see the module docstring)."""
    for word in re.findall(r"[a-z]+", name.lower()):
        for lesion in LESION_WORDS:
            if word.endswith((lesion, lesion + "s", lesion + "es")):
                return True
    return False


def split_lesions(
    mask: np.ndarray, spacing_zyx_mm: Sequence[float], min_ml: float = MIN_LESION_ML
) -> list[np.ndarray]:
    """The lesions of a boolean ``(z, y, x)`` mask: face-connected pieces of at least ``min_ml``
    mL, largest first (ties in index order), each as a boolean mask of the same shape."""
    components, count = ndimage.label(mask)
    if count == 0:
        return []
    voxel_ml = float(np.prod(np.asarray(spacing_zyx_mm, dtype=np.float64))) / 1000.0
    sizes_ml = np.bincount(components.ravel())[1:] * voxel_ml
    order = np.argsort(-sizes_ml, kind="stable")
    return [components == index + 1 for index in order if sizes_ml[index] >= min_ml]
