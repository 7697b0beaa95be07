"""What to synthesize (``TumorSpec``) and what came out (``SynthesisResult``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..labels import LabelMap
from ..records import SIZE_CLASSES_MM, TumorRecord
from ..volume import Volume

MAX_DIAMETER_MM = 150.0
MAX_COUNT = 50


@dataclass(frozen=True)
class TumorSpec:
    """A request for synthetic tumors; every length is in millimetres.

    Attributes:
        organ: host organ: a label name (``liver``), a group (``kidney`` = left and right) or an id.
        size: size class by diameter (``tiny`` 5-10, ``small`` 10-20, ``medium`` 20-40, ``large``
            40-80 mm); each tumor's diameter is drawn uniformly inside the class. Default ``small``.
        diameter_mm: an explicit equivalent-sphere diameter instead of a size class.
        count: number of tumors.
        margin_mm: smallest distance from a tumor to the organ's surface (and between tumors).
        avoid_margin_mm: smallest distance from a tumor to vessels and to existing lesions.
        irregularity: 0 (plain ellipsoid) .. 1 (strong smooth random deformation of the surface).
        lobulation: 0 (none) .. 1 (up to four prominent lobes).
        necrosis: add a darker necrotic core (tumors of 10 mm and more).
        rim: add an enhancing rim.
        mass_effect: push the surrounding tissue outwards (local displacement of CT and labels).
        allow_shrink: when the organ cannot hold a tumor, place a smaller one with a warning instead
            of failing.
        contrast_hu: a fixed mean contrast against the surrounding organ, instead of the organ's
            distribution (negative: hypodense).
    """

    organ: str = "liver"
    size: str | None = None
    diameter_mm: float | None = None
    count: int = 1
    margin_mm: float = 3.0
    avoid_margin_mm: float = 3.0
    irregularity: float = 0.9
    lobulation: float = 0.0
    necrosis: bool = False
    rim: bool = False
    mass_effect: bool = False
    allow_shrink: bool = False
    contrast_hu: float | None = None

    def validated(self) -> TumorSpec:
        """This spec, checked.

        Raises:
            InputError: a value is out of range or the size is given twice or unknown.
        """
        if not str(self.organ).strip():
            raise InputError("organ name is empty")
        if self.size is not None and self.diameter_mm is not None:
            raise InputError("give either a size class or diameter_mm, not both")
        if self.size is not None and self.size not in SIZE_CLASSES_MM:
            raise InputError(f"unknown size class '{self.size}'; choose from {', '.join(SIZE_CLASSES_MM)}")
        if self.diameter_mm is not None and not 0 < self.diameter_mm <= MAX_DIAMETER_MM:
            raise InputError(f"diameter_mm must be in (0, {MAX_DIAMETER_MM:g}] mm, got {self.diameter_mm}")
        if not isinstance(self.count, int | np.integer) or not 1 <= self.count <= MAX_COUNT:
            raise InputError(f"count must be an integer from 1 to {MAX_COUNT}, got {self.count}")
        for name in ("margin_mm", "avoid_margin_mm"):
            value = getattr(self, name)
            if not math.isfinite(value) or not 0 <= value <= 50:
                raise InputError(f"{name} must be between 0 and 50 mm, got {value}")
        for name in ("irregularity", "lobulation"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise InputError(f"{name} must be between 0 and 1, got {value}")
        if self.contrast_hu is not None and not -400 <= self.contrast_hu <= 400:
            raise InputError(f"contrast_hu must be between -400 and 400 HU, got {self.contrast_hu}")
        return self

    def draw_diameter_mm(self, rng: np.random.Generator) -> float:
        """The diameter (mm) of one tumor: the explicit one, or uniform inside the size class."""
        if self.diameter_mm is not None:
            return float(self.diameter_mm)
        low, high = SIZE_CLASSES_MM[self.size or "small"]
        return float(rng.uniform(low, high))


@dataclass
class SynthesisResult:
    """The output of :func:`~freetumor_core.synthesis.synthesize`.

    Attributes:
        ct: the new CT in HU, same grid and dtype as the input.
        labels: the input's labels plus one ``<organ>_tumor`` label per organ, same grid.
        tumors: one record per synthetic tumor, in placement order.
    """

    ct: Volume
    labels: LabelMap
    tumors: list[TumorRecord] = field(default_factory=list)
