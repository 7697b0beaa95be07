"""Where tumors go: inside the organ, a margin from its surface, clear of vessels and lesions.

Nothing here touches the whole volume per tumor. A lookup table turns label ids into three classes
(other, organ, avoid) once per call; candidate centres are organ voxels drawn at random; a candidate
is first screened at a few dozen points on the edge of the tumor's margin zone and then checked
exactly inside the tumor's own box. Tumors already placed carry a non-organ label, so the same check
keeps tumors apart. Only when random candidates all fail is a distance map of the organ computed
(once per call) to search the deep parts of the organ systematically.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..labels import ORGAN_GROUPS
from .shapes import TumorShape

OTHER, ORGAN, AVOID = 0, 1, 2
LESION_WORDS = ("tumor", "tumour", "lesion", "cyst", "metasta", "mass", "nodule")
RANDOM_CANDIDATES = 96
RANDOM_ROUNDS = 4
EXHAUSTIVE_CANDIDATES = 1000
SCREEN_POINTS = 48


def is_avoided(name: str) -> bool:
    """Vessels and lesions: a tumor keeps ``avoid_margin_mm`` away from these labels."""
    name = name.lower()
    return name in ORGAN_GROUPS["vessels"] or any(word in name for word in LESION_WORDS)


def class_table(names: dict[int, str], organ_ids: list[int], extra_avoid: list[int], size: int) -> np.ndarray:
    """uint8 lookup ``label id -> OTHER / ORGAN / AVOID`` of length ``size``."""
    table = np.zeros(size, dtype=np.uint8)
    for label, name in names.items():
        if label < size and is_avoided(name):
            table[label] = AVOID
    for label in extra_avoid:
        table[label] = AVOID
    table[organ_ids] = ORGAN
    return table


@dataclass
class Placer:
    """Finds tumor positions in a label array that it reads as tumors are added.

    Attributes:
        labels: the label array being painted, ``(z, y, x)``; read at the current state.
        table: class lookup (see :func:`class_table`).
        spacing_zyx_mm: voxel size.
        rng: the call's random generator.
    """

    labels: np.ndarray
    table: np.ndarray
    spacing_zyx_mm: np.ndarray
    rng: np.random.Generator
    _organ_flat: np.ndarray | None = field(default=None, repr=False)
    _depth_mm: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    def organ_voxels(self, count: int) -> np.ndarray:
        """``(n, 3)`` random organ voxel indices (uniform over the organ; n <= count)."""
        flat = self.labels.reshape(-1)
        if self._organ_flat is None:
            # Rejection sampling costs microseconds when the organ is a fair part of the volume.
            draws = self.rng.integers(0, flat.size, 16 * count)
            hits = draws[self.table[flat[draws]] == ORGAN]
            if len(hits) >= count:
                return np.stack(np.unravel_index(hits[:count], self.labels.shape), axis=1)
            self._organ_flat = np.flatnonzero(self.table[self.labels] == ORGAN)
        if len(self._organ_flat) == 0:
            return np.zeros((0, 3), dtype=np.int64)
        picks = self._organ_flat[self.rng.integers(0, len(self._organ_flat), count)]
        return np.stack(np.unravel_index(picks, self.labels.shape), axis=1)

    def fits(
        self, shape: TumorShape, centre: np.ndarray, zones: tuple[np.ndarray, np.ndarray, np.ndarray]
    ) -> bool:
        """True when the tumor centred at ``centre`` keeps its margins (exact check in its box)."""
        margin_zone, avoid_zone, screen = zones
        start = centre - shape.centre_index
        stop = start + np.asarray(shape.box_shape)
        if (start < 0).any() or (stop > np.asarray(self.labels.shape)).any():
            return False  # the field of view ends where the organ might go on: treat it as a surface
        points = screen + centre
        if (self.table[self.labels[points[:, 0], points[:, 1], points[:, 2]]] != ORGAN).any():
            return False
        box = self.table[self.labels[start[0] : stop[0], start[1] : stop[1], start[2] : stop[2]]]
        return not ((box[margin_zone] != ORGAN).any() or (box[avoid_zone] == AVOID).any())

    def place(self, shape: TumorShape, margin_mm: float, avoid_margin_mm: float) -> np.ndarray | None:
        """A centre ``(z, y, x)`` for ``shape`` that keeps every margin, or None when none is found."""
        zones = (
            shape.zone(margin_mm),
            shape.zone(avoid_margin_mm),
            shape.zone_surface_offsets(margin_mm, SCREEN_POINTS, self.rng),
        )
        for _ in range(RANDOM_ROUNDS):
            for centre in self.organ_voxels(RANDOM_CANDIDATES):
                if self.fits(shape, centre, zones):
                    return centre
        # Rare: the organ is small or nearly full. Search the voxels deep enough to hold the zone.
        offsets_mm = zones[2] * self.spacing_zyx_mm
        needed_mm = float(np.sqrt((offsets_mm**2).sum(axis=1)).min()) if len(offsets_mm) else 0.0
        deep = self._deep_voxels(needed_mm)
        if len(deep) > EXHAUSTIVE_CANDIDATES:
            deep = deep[self.rng.choice(len(deep), EXHAUSTIVE_CANDIDATES, replace=False)]
        else:
            deep = deep[self.rng.permutation(len(deep))]
        for centre in deep:
            if self.fits(shape, centre, zones):
                return centre
        return None

    def _deep_voxels(self, depth_mm: float) -> np.ndarray:
        """``(n, 3)`` organ voxels at least ``depth_mm`` from the organ's surface (map made once)."""
        if self._depth_mm is None:
            organ = self.table[self.labels] == ORGAN
            if not organ.any():
                self._depth_mm = (np.zeros((0,), np.float32), np.zeros((0, 3), np.int64))
            else:
                low = [int(np.flatnonzero(organ.any(axis=a))[0]) for a in ((1, 2), (0, 2), (0, 1))]
                high = [int(np.flatnonzero(organ.any(axis=a))[-1]) + 1 for a in ((1, 2), (0, 2), (0, 1))]
                crop = organ[low[0] : high[0], low[1] : high[1], low[2] : high[2]]
                # Every other voxel is enough to find candidates (the exact check follows), and the
                # distance transform is then 8 times cheaper; the slack covers the coarser grid.
                step = 2 if crop.size > 64**3 else 1
                coarse = crop[::step, ::step, ::step]
                # Pad so the field of view's edge counts as the organ's surface.
                depth = ndimage.distance_transform_edt(
                    np.pad(coarse, 1), sampling=self.spacing_zyx_mm * step
                )[1:-1, 1:-1, 1:-1]
                slack = float(np.linalg.norm(self.spacing_zyx_mm)) * (step - 1)
                inside = np.argwhere(coarse)
                self._depth_mm = (depth[coarse].astype(np.float32) + slack, inside * step + np.asarray(low))
        depths, voxels = self._depth_mm
        return voxels[depths >= depth_mm]
