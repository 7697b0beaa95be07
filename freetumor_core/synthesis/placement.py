"""Where tumors go: inside the organ, a margin from its surface, clear of vessels and lesions.

Nothing here touches the whole volume per tumor. A lookup table turns label ids into three classes
(other, organ, avoid) once per call; candidate centres are organ voxels drawn at random; a candidate
is first screened at a few dozen points on the edge of the tumor's margin zone and then checked
exactly inside the tumor's own box. Tumors already placed carry a non-organ label, so the same check
keeps tumors apart. Tumors whose centre must lie deep (medium and large), and small ones whose
random candidates all fail, draw candidates from a distance map of the organ (computed once per
call); when no voxel is deep enough the shape is rejected before its exact margin zones are made.
"""

from __future__ import annotations

import functools
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
DEEP_FIRST_MM = 14.0  # tumors whose centre must lie this deep (large ones) go straight to the depth map
DEPTH_MAP_VOXELS = 24**3  # the organ depth map is computed on a grid coarsened to about this size
DEPTH_SLACK = 0.9  # the shape's inscribed depth is an estimate: ask for a little less
DEPTH_TIER_MM = 4.0
# Deepest first: when this many of the deepest candidates fail, the rest almost never fit either,
# and a smaller tumor (allow_shrink) is the better next try.
DEEP_FIRST_CANDIDATES = 200


@functools.lru_cache(maxsize=4096)
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
    _depth_mm: tuple[np.ndarray, np.ndarray, int] | None = field(default=None, repr=False)  # _depth_map

    def organ_voxels(self, count: int) -> np.ndarray:
        """``(n, 3)`` random organ voxel indices (uniform over the organ; n <= count)."""
        flat = self.labels.reshape(-1)
        if self._organ_flat is None:
            # Rejection sampling costs well under a millisecond while the organ is more than about
            # 1/1000 of the volume (a liver in a whole CT is 1/20); a full pass costs tens.
            draws = self.rng.integers(0, flat.size, 64 * count)
            hits = draws[self.table[flat[draws]] == ORGAN]
            if len(hits) >= max(1, count // 4):
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
        return len(self._screen(shape, centre[None, :], zones[2])) == 1 and self._fits_exactly(
            shape, centre, zones
        )

    def _fits_exactly(
        self, shape: TumorShape, centre: np.ndarray, zones: tuple[np.ndarray, np.ndarray, np.ndarray]
    ) -> bool:
        """The exact margin check in the tumor's box, for a centre whose box lies in the volume."""
        margin_zone, avoid_zone, _ = zones
        start = centre - shape.centre_index
        stop = start + np.asarray(shape.box_shape)
        box = self.table[self.labels[start[0] : stop[0], start[1] : stop[1], start[2] : stop[2]]]
        return not ((box[margin_zone] != ORGAN).any() or (box[avoid_zone] == AVOID).any())

    def _screen(self, shape: TumorShape, centres: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """The ``centres`` (in order) whose box lies in the volume and for which every
        ``centre + offset`` is an organ voxel: all candidates at once, before any exact check."""
        start = centres - shape.centre_index
        limits = np.asarray(self.labels.shape)
        # The field of view ends where the organ might go on: treat it as a surface.
        inside = (start >= 0).all(axis=1) & (start + np.asarray(shape.box_shape) <= limits).all(axis=1)
        centres = centres[inside]
        points = centres[:, None, :] + offsets[None, :, :]
        organ = self.table[self.labels[points[..., 0], points[..., 1], points[..., 2]]] == ORGAN
        return centres[organ.all(axis=1)]

    def place(self, shape: TumorShape, margin_mm: float, avoid_margin_mm: float) -> np.ndarray | None:
        """A centre ``(z, y, x)`` for ``shape`` that keeps every margin, or None when none is found."""
        # How deep below the organ surface the centre must lie, estimated from the shape alone,
        # with slack for the estimate: a lower bound used only to pick candidates.
        needed_mm = DEPTH_SLACK * (shape.inscribed_mm + margin_mm)
        deep_first = needed_mm >= DEEP_FIRST_MM
        if deep_first:
            # Medium and large tumors: random organ voxels mostly fail, so draw candidates from
            # the voxels deep enough, and give up at once (before any exact distance is computed)
            # when there are none.
            candidates = self._deep_candidates(needed_mm, DEEP_FIRST_CANDIDATES)
            # Every tumor voxel must be organ: test that at a few surface voxels for all candidates
            # at once, and give up before the exact zones when none passes.
            if len(candidates):
                candidates = self._screen(shape, candidates, shape.surface_offsets(SCREEN_POINTS, self.rng))
            if len(candidates) == 0:
                return None
        zones = (
            shape.zone(margin_mm),
            shape.zone(avoid_margin_mm),
            shape.zone_surface_offsets(margin_mm, SCREEN_POINTS, self.rng),
        )
        if not deep_first:
            for _ in range(RANDOM_ROUNDS):
                for centre in self._screen(shape, self.organ_voxels(RANDOM_CANDIDATES), zones[2]):
                    if self._fits_exactly(shape, centre, zones):
                        return centre
            # Rare: the organ is small or nearly full. Search the voxels deep enough.
            candidates = self._deep_candidates(needed_mm)
        for centre in self._screen(shape, candidates, zones[2]):
            if self._fits_exactly(shape, centre, zones):
                return centre
        return None

    def _deep_candidates(self, depth_mm: float, limit: int = EXHAUSTIVE_CANDIDATES) -> np.ndarray:
        """Up to ``limit`` organ voxels that may lie ``depth_mm`` deep: deepest
        first in tiers of ``DEPTH_TIER_MM``, random within a tier (a thin organ holds a large tumor
        only near its middle, so that is where to look first)."""
        depths, voxels, step = self._depth_map()
        chosen = np.flatnonzero(depths >= depth_mm)
        chosen = chosen[self.rng.permutation(len(chosen))]
        tiers = np.floor(depths[chosen] / DEPTH_TIER_MM)
        chosen = chosen[np.argsort(-tiers, kind="stable")][:limit]
        # Anywhere in the lattice cell, not only at its corner: where a tumor just fits, the
        # positions that hold it can lie between lattice points.
        jitter = self.rng.integers(-(step // 2), step - step // 2, size=(len(chosen), 3))
        return np.clip(voxels[chosen] + jitter, 0, np.asarray(self.labels.shape) - 1)

    def _depth_map(self) -> tuple[np.ndarray, np.ndarray, int]:
        """Depth (mm) below the organ's surface of organ voxels on a coarse lattice, their
        ``(n, 3)`` indices, and the lattice step (voxels); made once per call.

        The depth of a lattice voxel is its distance to the nearest non-organ lattice voxel: never
        less than its true depth, so no voxel that is truly deep enough is missed.
        """
        if self._depth_mm is None:
            # Only lattice voxels are ever looked at: first a lattice over the whole volume to find
            # the organ, then a finer one over the organ's bounding box.
            step = _lattice_step(self.labels.shape)
            organ = self.table[self.labels[::step, ::step, ::step]] == ORGAN
            low = np.zeros(3, dtype=int)
            if organ.any():
                bounds = [np.flatnonzero(organ.any(axis=a)) for a in ((1, 2), (0, 2), (0, 1))]
                low = np.array([max((b[0] - 1) * step, 0) for b in bounds])
                high = np.array([(b[-1] + 2) * step for b in bounds])
                crop = self.labels[low[0] : high[0], low[1] : high[1], low[2] : high[2]]
                step = _lattice_step(crop.shape)
                organ = self.table[crop[::step, ::step, ::step]] == ORGAN
            depths, lattice = _lattice_depth(organ.tobytes(), organ.shape, tuple(self.spacing_zyx_mm * step))
            self._depth_mm = (depths, lattice * step + low, step)
        return self._depth_mm


@functools.lru_cache(maxsize=8)
def _lattice_depth(
    organ_bytes: bytes, shape: tuple[int, int, int], sampling_mm: tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Depth (mm) of the organ points of a lattice and their ``(n, 3)`` lattice indices.

    Kept for the last few lattices: tumors placed one call after another into the same host (a
    reader study's cases, a benchmark, a training volume seen again) find the same lattice, and
    scipy's exact transform costs about a millisecond even on 24³ points.
    """
    organ = np.frombuffer(organ_bytes, dtype=bool).reshape(shape)
    # Pad so the field of view's edge counts as the organ's surface.
    depth = ndimage.distance_transform_edt(np.pad(organ, 1), sampling=sampling_mm)[1:-1, 1:-1, 1:-1]
    depths, lattice = depth[organ].astype(np.float32), np.argwhere(organ)
    depths.flags.writeable = False
    lattice.flags.writeable = False
    return depths, lattice


def _lattice_step(shape: tuple[int, ...]) -> int:
    """Stride of a lattice with about ``DEPTH_MAP_VOXELS`` points over an array of ``shape``."""
    return max(1, int(np.ceil(np.cbrt(np.prod(shape) / DEPTH_MAP_VOXELS))))
