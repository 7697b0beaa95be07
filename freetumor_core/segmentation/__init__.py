"""Tumor segmentation: networks by name, whole-CT inference, post-processing, metrics, model import.

::

    from freetumor_core.segmentation import segment, write_segmentation
    result = segment(ct, "models/liver_unet", organs=organs, device="auto", tta=True)
    write_segmentation(result, ct, "out")

See ``docs/segmentation.md``.
"""

from .inference import DEFAULT_OVERLAP, SegmentationResult, segment
from .networks import FREETUMOR_LABELS, PRESETS, preset_config
from .outputs import write_segmentation
from .postprocess import Lesion, find_lesions, postprocess

__all__ = [
    "DEFAULT_OVERLAP",
    "FREETUMOR_LABELS",
    "PRESETS",
    "Lesion",
    "SegmentationResult",
    "find_lesions",
    "postprocess",
    "preset_config",
    "segment",
    "write_segmentation",
]
