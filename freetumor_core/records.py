"""``TumorRecord``: what was made or found, in the words every part of the project speaks.

Synthesis, segmentation, reports and reader studies all describe a tumor with this record.
Positions are RAS millimetres (as 3D Slicer shows them), sizes in mm and mL, values in HU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Size classes by diameter (mm): lower bound inclusive, upper bound exclusive (large: up to 80).
SIZE_CLASSES_MM: dict[str, tuple[float, float]] = {
    "tiny": (5.0, 10.0),
    "small": (10.0, 20.0),
    "medium": (20.0, 40.0),
    "large": (40.0, 80.0),
}


def size_class(diameter_mm: float) -> str:
    """The size class (tiny, small, medium, large) of a tumor of this diameter."""
    if diameter_mm < SIZE_CLASSES_MM["small"][0]:
        return "tiny"
    if diameter_mm < SIZE_CLASSES_MM["medium"][0]:
        return "small"
    if diameter_mm < SIZE_CLASSES_MM["large"][0]:
        return "medium"
    return "large"


@dataclass
class TumorRecord:
    """One tumor.

    Attributes:
        organ: host organ name (``liver``, ``pancreas``, ``kidney``, ...).
        centre_ras_mm: centre of mass, RAS mm.
        diameter_mm: equivalent-sphere diameter, mm.
        volume_ml: volume, mL.
        mean_hu: mean HU inside the tumor.
        contrast_hu: mean HU inside minus mean HU of the surrounding organ (negative: hypodense).
        engine: what made it (``handcrafted``, ``freetumor``, ...) or ``real`` for a real tumor.
        label_id: the tumor's id in its label map (0 when not in one).
        qc_score: fraction of tumor voxels a segmenter called tumor, when checked.
        extra: anything engine-specific (JSON-serialisable).
    """

    organ: str
    centre_ras_mm: tuple[float, float, float]
    diameter_mm: float
    volume_ml: float
    mean_hu: float
    contrast_hu: float
    engine: str
    label_id: int = 0
    qc_score: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def size_class(self) -> str:
        return size_class(self.diameter_mm)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (adds ``size_class``)."""
        data = asdict(self)
        data["centre_ras_mm"] = [round(float(c), 3) for c in self.centre_ras_mm]
        for key in ("diameter_mm", "volume_ml", "mean_hu", "contrast_hu"):
            data[key] = round(float(data[key]), 3)
        data["size_class"] = self.size_class
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TumorRecord:
        known = {key: value for key, value in data.items() if key in cls.__dataclass_fields__}
        known["centre_ras_mm"] = tuple(float(c) for c in known["centre_ras_mm"])
        return cls(**known)
