"""Segmentation networks by name: the presets a model folder's ``config.json`` can start from.

A model folder names its network as ``{"name": <monai.networks.nets class>, "args": {...}}``; these
presets are the two the project uses:

- ``default``: a small MONAI ``UNet`` (16-32-64-128 channels, one residual unit per level, 0.6 M
  parameters, 0.2 s per 96³ window on 2 CPU cores) at 1.5 mm: it segments a whole abdominal CT on a
  laptop CPU in seconds.
- ``swinunetr_v2_fs48``: MONAI ``SwinUNETR`` v2 with feature size 48 (72.8 M parameters), FreeTumor's
  segmenter, 96³ patches at 1.5 mm.

Both predict FreeTumor's 7 classes (:data:`FREETUMOR_LABELS`). A network whose ``in_channels`` is 2
takes the organ labels as its second input channel (1 inside any of its organs, 0 elsewhere); such a
model needs organ labels at inference.
"""

from __future__ import annotations

import copy
import re

from ..lesions import LESION_WORDS, is_lesion_label
from ..models import ModelConfig, Preprocessing

__all__ = [
    "DEFAULT_MODEL",
    "FREETUMOR_LABELS",
    "HU_WINDOW",
    "PRESETS",
    "host_organ",
    "preset_config",
    "takes_organ_channel",
    "tumor_labels",
]

FREETUMOR_LABELS: dict[int, str] = {
    0: "background",
    1: "liver",
    2: "liver_tumor",
    3: "pancreas",
    4: "pancreas_tumor",
    5: "kidney",
    6: "kidney_tumor",
}
HU_WINDOW = [-175.0, 250.0]
DEFAULT_MODEL = "segmenter_demo"  # the shipped demo model (freetumor_core/data/models/segmenter_demo)
SPACING_MM = [1.5, 1.5, 1.5]

PRESETS: dict[str, dict] = {
    "default": {
        "architecture": {
            "name": "UNet",
            "args": {
                "spatial_dims": 3,
                "in_channels": 1,
                "out_channels": len(FREETUMOR_LABELS),
                "channels": [16, 32, 64, 128],
                "strides": [2, 2, 2],
                "num_res_units": 1,
            },
        },
        "patch_size_voxels": [96, 96, 96],
        "description": "A small MONAI UNet for liver, pancreas and kidney and their tumors at 1.5 mm.",
    },
    "swinunetr_v2_fs48": {
        "architecture": {
            "name": "SwinUNETR",
            "args": {
                "spatial_dims": 3,
                "in_channels": 1,
                "out_channels": len(FREETUMOR_LABELS),
                "feature_size": 48,
                "use_v2": True,
            },
        },
        "patch_size_voxels": [96, 96, 96],
        "description": "MONAI SwinUNETR v2 (feature size 48): FreeTumor's segmenter for liver, pancreas "
        "and kidney and their tumors at 1.5 mm.",
    },
}


def preset_config(name: str, **changes) -> ModelConfig:
    """A segmentation :class:`ModelConfig` from a preset; ``changes`` replace config fields.

    Raises:
        KeyError: an unknown preset name.
    """
    preset = copy.deepcopy(PRESETS[name])
    fields = {
        "task": "segmentation",
        "architecture": preset["architecture"],
        "preprocessing": Preprocessing(
            spacing_mm=list(SPACING_MM),
            hu_window=list(HU_WINDOW),
            patch_size_voxels=preset["patch_size_voxels"],
        ),
        "label_names": dict(FREETUMOR_LABELS),
        "description": preset["description"],
    }
    fields.update(changes)
    return ModelConfig(**fields)


def takes_organ_channel(config: ModelConfig) -> bool:
    """Whether the network takes the organ labels as a second input channel."""
    return int(config.architecture.get("args", {}).get("in_channels", 1)) == 2


def tumor_labels(label_names: dict[int, str]) -> dict[int, str]:
    """The output labels that are lesions (``liver_tumor``, ...), by id."""
    return {key: name for key, name in label_names.items() if key != 0 and is_lesion_label(name)}


def host_organ(tumor_name: str) -> str | None:
    """The organ a tumor label belongs to: its name without the lesion word (``liver_tumor`` ->
    ``liver``); ``None`` when nothing is left (``tumor``)."""
    words = [word for word in re.split(r"[^a-z]+", tumor_name.lower()) if word]
    kept = [word for word in words if not any(word.startswith(lesion) for lesion in LESION_WORDS)]
    return "_".join(kept) or None
