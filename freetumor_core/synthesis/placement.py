"""Where tumors go: inside the organ, a margin from its surface, clear of vessels and lesions.

Nothing here touches the whole volume per tumor. A lookup table turns label ids into four classes
(other, organ, avoid, vessel) once per call; candidate centres are organ voxels drawn at random; a candidate
is first screened at a few dozen points on the edge of the tumor's margin zone and then checked
exactly inside the tumor's own box. Tumors already placed carry a non-organ label, so the same check
keeps tumors apart. Tumors whose centre must lie deep (medium and large), and small ones whose
random candidates all fail, draw candidates from a distance map of the organ (computed once per
call); when no voxel is deep enough the shape is rejected before its exact margin zones are made.

Vessels are sorted by calibre, measured from their own mask: a vessel voxel is *major* when a ball
of diameter :data:`SMALL_VESSEL_MM` that fits inside the vessel covers it (the vessel mask's
morphological opening by that ball: trunks and large branches), else it belongs to a *small*
branch. A tumor keeps ``avoid_margin_mm`` from major vessels, as from lesions, but may take in small
branches (encasement): for placement they count as host organ. Calibre is measured only in the
blocks of :data:`VESSEL_BLOCK` voxels that placement looks at, each with a margin of the ball's
diameter around it, so the result is the same as for the whole mask.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..labels import ORGAN_GROUPS
from ..lesions import is_lesion_label
from .shapes import TumorShape, _bounds, _outside_distance_mm, _slices

OTHER, ORGAN, AVOID, VESSEL = 0, 1, 2, 3
# A tumor may take in vessel branches thinner than this (diameter, mm): segmental intrahepatic
# branches and smaller; the portal vein and its lobar branches, the hepatic vein trunks, the IVC
# and the aorta are wider.
SMALL_VESSEL_MM = 6.0
VESSEL_BLOCK = 8  # vessel calibre is measured in blocks of this many voxels a side, where needed
NOT_HOST = np.array([True, False, True, False])  # by class: neither organ nor a (possibly small) vessel
RANDOM_CANDIDATES = 96
RANDOM_ROUNDS = 4
EXHAUSTIVE_CANDIDATES = 1000
SCREEN_POINTS = 48  # screening points of a tumor up to SCREEN_RADIUS_MM; more, up to 4 times, for larger
SCREEN_RADIUS_MM = 10.0
FIRST_SCREENED = 16  # candidates screened before the rest
DEEP_FIRST_MM = 14.0  # tumors whose centre must lie this deep (large ones) go straight to the depth map
DEPTH_MAP_VOXELS = 24**3  # the organ depth map is computed on a grid coarsened to about this size
DEPTH_SLACK = 0.9  # the shape's inscribed depth is an estimate: ask for a little less
DEPTH_TIER_MM = 4.0
# Deepest first: when this many of the deepest candidates fail, the rest almost never fit either,
# and a smaller tumor (allow_shrink) is the better next try.
DEEP_FIRST_CANDIDATES = 200


@functools.lru_cache(maxsize=4096)
def is_avoided(name: str) -> bool:
    """Vessels and lesions: a tumor keeps ``avoid_margin_mm`` away from these labels (from
    vessels: from their major parts, see :func:`is_vessel`)."""
    return is_vessel(name) or is_lesion(name)


@functools.lru_cache(maxsize=4096)
def is_vessel(name: str) -> bool:
    """Vessel labels (``aorta``, ``portal_vein``, ``hepatic_vessels``, ...)."""
    return name.lower() in ORGAN_GROUPS["vessels"] and not is_lesion(name)


@functools.lru_cache(maxsize=4096)
def is_lesion(name: str) -> bool:
    """Lesion labels: the one definition, :func:`freetumor_core.lesions.is_lesion_label`."""
    return is_lesion_label(name)


@functools.lru_cache(maxsize=4096)
def name_class(name: str) -> int:
    """The class (:data:`AVOID` for lesions, :data:`VESSEL`, else :data:`OTHER`) of a label name."""
    return AVOID if is_lesion(name) else VESSEL if is_vessel(name) else OTHER


def class_table(names: dict[int, str], organ_ids: list[int], extra_avoid: list[int], size: int) -> np.ndarray:
    """uint8 lookup ``label id -> OTHER / ORGAN / AVOID / VESSEL`` of length ``size``."""
    table = np.zeros(size, dtype=np.uint8)
    ids = np.fromiter(names, dtype=np.int64, count=len(names))
    classes = np.fromiter(map(name_class, names.values()), dtype=np.uint8, count=len(names))
    inside = (ids >= 0) & (ids < size)
    table[ids[inside]] = classes[inside]
    for label in extra_avoid:
        table[label] = AVOID
    table[organ_ids] = ORGAN
    return table


@dataclass
class Placer:
    """Finds tumor positions in a label array that it reads as tumors are added.

    Attributes:
        labels: the label array being painted, ``(z, y, x)``, C-contiguous; read at the current state.
        table: class lookup (see :func:`class_table`).
        spacing_zyx_mm: voxel size.
        rng: the call's random generator.
    """

    labels: np.ndarray
    table: np.ndarray
    spacing_zyx_mm: np.ndarray
    rng: np.random.Generator
    _organ_flat: np.ndarray | None = field(default=None, repr=False)
    _depth_mm: tuple[np.ndarray, np.ndarray, np.ndarray, int] | None = field(default=None, repr=False)
    _small: np.ndarray | None = field(default=None, repr=False)  # _small_vessels
    _measured: np.ndarray | None = field(default=None, repr=False)  # blocks of _small measured

    def _small_vessels(self, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        """Boolean array of the labels' shape marking vessel voxels of small calibre, valid at
        least in the box ``[low, high)``: measured block by block as placement first looks there
        (see the module docstring)."""
        shape = np.asarray(self.labels.shape)
        if self._small is None:
            self._small = np.zeros(self.labels.shape, dtype=bool)
            self._measured = np.zeros(tuple(-(-shape // VESSEL_BLOCK)), dtype=bool)
        block_low, block_high = low // VESSEL_BLOCK, (high - 1) // VESSEL_BLOCK + 1
        missing = ~self._measured[_slices(block_low, block_high)]
        if missing.any():
            first, last = _bounds(missing, margin=0)
            first, last = first + block_low, last + block_low
            inner_low, inner_high = first * VESSEL_BLOCK, np.minimum(last * VESSEL_BLOCK, shape)
            # The opening of a voxel depends on the vessel mask up to the ball's diameter away.
            halo = np.ceil(SMALL_VESSEL_MM / self.spacing_zyx_mm).astype(int) + 1
            crop_low, crop_high = np.maximum(inner_low - halo, 0), np.minimum(inner_high + halo, shape)
            vessel = np.take(self.table, self.labels[_slices(crop_low, crop_high)]) == VESSEL
            if vessel.any():
                small = _small_vessels(vessel, self.spacing_zyx_mm)
                self._small[_slices(inner_low, inner_high)] = small[
                    _slices(inner_low - crop_low, inner_high - crop_low)
                ]
            self._measured[_slices(first, last)] = True
        return self._small

    def organ_voxels(self, count: int) -> np.ndarray:
        """``(n, 3)`` random organ voxel indices (uniform over the organ; n <= count)."""
        flat = self.labels.reshape(-1)
        if self._organ_flat is None:
            # Rejection sampling costs well under a millisecond while the organ is more than about
            # 1/1000 of the volume (a liver in a whole CT is 1/20); a full pass costs tens. A few
            # draws per voxel asked for suffice for an organ that fills much of a patch; more, for
            # a small organ in a large volume.
            for draws_per_voxel in (8, 64):
                draws = self.rng.integers(0, flat.size, draws_per_voxel * count)
                hits = draws[self.table[flat[draws]] == ORGAN]
                if len(hits) >= max(1, count // 4):
                    return np.stack(np.unravel_index(hits[:count], self.labels.shape), axis=1)
            self._organ_flat = np.flatnonzero(np.take(self.table, self.labels) == ORGAN)
        if len(self._organ_flat) == 0:
            return np.zeros((0, 3), dtype=np.int64)
        picks = self._organ_flat[self.rng.integers(0, len(self._organ_flat), count)]
        return np.stack(np.unravel_index(picks, self.labels.shape), axis=1)

    def fits(
        self, shape: TumorShape, centre: np.ndarray, zones: tuple[np.ndarray, np.ndarray, np.ndarray]
    ) -> bool:
        """True when the tumor centred at ``centre`` keeps its margins (exact check in its box)."""
        return any(True for _ in self._screened(shape, centre[None, :], zones[2])) and self._fits_exactly(
            shape, centre, zones
        )

    def _fits_exactly(
        self, shape: TumorShape, centre: np.ndarray, zones: tuple[np.ndarray, np.ndarray, np.ndarray]
    ) -> bool:
        """The exact margin check in the tumor's box, for a centre whose box lies in the volume."""
        margin_zone, avoid_zone, _ = zones
        start = centre - shape.centre_index
        box = _slices(start, start + np.asarray(shape.box_shape))
        classes = np.take(self.table, self.labels[box])  # take: faster than indexing
        # Elementwise over the box (a boolean gather of the zones would copy them first).
        if (np.take(NOT_HOST, classes) & margin_zone).any() or ((classes == AVOID) & avoid_zone).any():
            return False
        # Vessels in the zones are measured only now, for a position that passes everything else.
        vessel = (classes == VESSEL) & (
            margin_zone if margin_zone is avoid_zone else margin_zone | avoid_zone
        )
        if not vessel.any():
            return True
        low, high = _bounds(vessel, margin=0)
        return not (vessel & ~self._small_vessels(start + low, start + high)[box]).any()

    def _screen(
        self, shape: TumorShape, centres: np.ndarray, offsets: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ``centres`` (in order) whose box lies in the volume and for which every
        ``centre + offset`` is organ or vessel: all candidates at once, before any exact check.
        Also their points as flat indices into the labels ``(n, k)`` and which of them are vessel
        voxels ``(n, k)``, whose calibre :meth:`_screened` measures only for the candidates it
        gets to."""
        start = centres - shape.centre_index
        limits = np.asarray(self.labels.shape)
        # The field of view ends where the organ might go on: treat it as a surface.
        inside = (start >= 0).all(axis=1) & (start + np.asarray(shape.box_shape) <= limits).all(axis=1)
        centres = centres[inside]
        # Flat indices (the labels are C-contiguous): one gather instead of three index arrays. A
        # point lies in its candidate's box, inside the volume, so no index wraps around a row.
        strides = np.array([limits[1] * limits[2], limits[2], 1])
        points = (centres @ strides)[:, None] + (offsets @ strides)[None, :]
        classes = np.take(self.table, np.take(self.labels.reshape(-1), points))
        vessel = classes == VESSEL
        keep = ((classes == ORGAN) | vessel).all(axis=1)
        return centres[keep], points[keep], vessel[keep]

    def _screened(self, shape: TumorShape, centres: np.ndarray, offsets: np.ndarray):
        """The centres that pass :meth:`_screen` and whose vessel points are small branches, in
        order, one at a time: calibre is measured only up to the first centre that fits. The first
        few centres are screened alone, as one of them usually fits."""
        for first, last in ((0, FIRST_SCREENED), (FIRST_SCREENED, len(centres))):
            if first >= last:
                break
            passed, points, vessel = self._screen(shape, centres[first:last], offsets)
            for centre, candidate_points, candidate_vessel in zip(passed, points, vessel, strict=True):
                if candidate_vessel.any():
                    hits = candidate_points[candidate_vessel]
                    where = np.stack(np.unravel_index(hits, self.labels.shape), axis=1)
                    small = self._small_vessels(where.min(axis=0), where.max(axis=0) + 1)
                    if not np.take(small.reshape(-1), hits).all():
                        continue
                yield centre

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
                candidates = np.array(
                    list(
                        self._screened(
                            shape, candidates, shape.surface_offsets(_screen_points(shape), self.rng)
                        )
                    )
                ).reshape(-1, 3)
            if len(candidates) == 0:
                return None
        margin_zone = shape.zone(margin_mm)
        avoid_zone = margin_zone if avoid_margin_mm == margin_mm else shape.zone(avoid_margin_mm)
        zones = (
            margin_zone,
            avoid_zone,
            shape.zone_surface_offsets(margin_mm, _screen_points(shape), self.rng),
        )
        if not deep_first:
            for _ in range(RANDOM_ROUNDS):
                for centre in self._screened(shape, self.organ_voxels(RANDOM_CANDIDATES), zones[2]):
                    if self._fits_exactly(shape, centre, zones):
                        return centre
            # Rare: the organ is small or nearly full. Search the voxels deep enough.
            candidates = self._deep_candidates(needed_mm)
        for centre in self._screened(shape, candidates, zones[2]):
            if self._fits_exactly(shape, centre, zones):
                return centre
        return None

    def _deep_candidates(self, depth_mm: float, limit: int = EXHAUSTIVE_CANDIDATES) -> np.ndarray:
        """Up to ``limit`` organ voxels that may lie ``depth_mm`` deep: deepest
        first in tiers of ``DEPTH_TIER_MM``, random within a tier (a thin organ holds a large tumor
        only near its middle, so that is where to look first)."""
        depths, ranks, voxels, step = self._depth_map()
        chosen = np.flatnonzero(depths >= depth_mm)
        chosen = chosen[self.rng.permutation(len(chosen))]
        tiers = np.floor(ranks[chosen] / DEPTH_TIER_MM)
        chosen = chosen[np.argsort(-tiers, kind="stable")][:limit]
        # Anywhere in the lattice cell, not only at its corner: where a tumor just fits, the
        # positions that hold it can lie between lattice points.
        jitter = self.rng.integers(-(step // 2), step - step // 2, size=(len(chosen), 3))
        return np.clip(voxels[chosen] + jitter, 0, np.asarray(self.labels.shape) - 1)

    def _depth_map(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """Depth (mm) below the organ's surface of organ voxels on a coarse lattice, the same
        depth with every vessel counted as outside (mm, for ranking), their ``(n, 3)`` indices,
        and the lattice step (voxels); made once per call.

        The depth of a lattice voxel is its distance to the nearest lattice voxel that is neither
        organ nor vessel: never less than its true depth, so no voxel that is truly deep enough is
        missed.
        """
        if self._depth_mm is None:
            # Only lattice voxels are ever looked at: first a lattice over the whole volume to find
            # the organ, then a finer one over the organ's bounding box.
            step = _lattice_step(self.labels.shape)
            organ = self.table[self.labels[::step, ::step, ::step]] == ORGAN
            low = np.zeros(3, dtype=int)
            high = np.asarray(self.labels.shape)
            if organ.any():
                bounds = [np.flatnonzero(organ.any(axis=a)) for a in ((1, 2), (0, 2), (0, 1))]
                low = np.array([max((b[0] - 1) * step, 0) for b in bounds])
                high = np.minimum([(b[-1] + 2) * step for b in bounds], high)
                step = _lattice_step(tuple(high - low))
            # Every vessel counts as host here, whatever its calibre: that can only overstate the
            # depth, so no position is missed, and vessels need not be measured for the map.
            classes = self.table[
                self.labels[tuple(slice(a, b, step) for a, b in zip(low, high, strict=True))]
            ]
            sampling = tuple(float(s) for s in self.spacing_zyx_mm * step)
            depths = _lattice_depths(
                classes.tobytes(), classes.shape, sampling, int(step), tuple(low.tolist())
            )
            self._depth_mm = (*depths, step)
        return self._depth_mm


@functools.lru_cache(maxsize=8)
def _lattice_depths(
    classes_bytes: bytes,
    shape: tuple[int, int, int],
    sampling_mm: tuple[float, float, float],
    step: int,
    low: tuple[int, int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For the organ points of a lattice of label classes (``step`` voxels apart from ``low``):
    their depth (mm) below the surface of organ and vessel points, their depth below the surface
    of organ points alone (for ranking: where vessels run through the organ, the positions clear
    of them come first), and their voxel indices ``(n, 3)``. Read-only arrays.

    Kept for the last few lattices: tumors placed one call after another into the same host (a
    reader study's cases, a benchmark, a training volume seen again) find the same lattice, and
    scipy's exact transform costs about a millisecond even on 24³ points.
    """
    classes = np.frombuffer(classes_bytes, dtype=np.uint8).reshape(shape)
    organ = classes == ORGAN
    depths = [
        _depth_below(organ | (classes == VESSEL), sampling_mm)[organ],
        _depth_below(organ, sampling_mm)[organ],
    ]
    depths.append(np.argwhere(organ) * step + np.asarray(low))
    for array in depths:
        array.flags.writeable = False
    return tuple(depths)


def _depth_below(host: np.ndarray, sampling_mm: tuple[float, float, float]) -> np.ndarray:
    """Depth (mm) of each point below the surface of the host points (float32); the lattice's
    edge counts as a surface."""
    depth = ndimage.distance_transform_edt(np.pad(host, 1), sampling=sampling_mm)[1:-1, 1:-1, 1:-1]
    return depth.astype(np.float32)


def _screen_points(shape: TumorShape) -> int:
    """How many points screen a candidate: more on a larger surface, where a candidate that
    passes too few points often fails the exact check (which costs far more than the points)."""
    return int(SCREEN_POINTS * min(max(shape.radius_mm / SCREEN_RADIUS_MM, 1.0), 4.0))


def clear_caches() -> None:
    """Forget what earlier calls kept (organ depth lattices, label name classes): the next call
    runs cold, as the first call on a new host does."""
    _lattice_depths.cache_clear()
    for memo in (name_class, is_avoided, is_vessel, is_lesion):
        memo.cache_clear()


def _small_vessels(vessel: np.ndarray, spacing_mm: np.ndarray) -> np.ndarray:
    """Vessel voxels of small calibre in a vessel mask: not in its opening by a ball of diameter
    :data:`SMALL_VESSEL_MM`.

    The opening is exact on voxel centres: the core is the voxels deeper than the ball's radius
    (the nearest centre outside the vessel is further away), and the major part is the vessel
    voxels within that radius of the core. Two distance transforms limited to that radius: a few
    dozen array operations.
    """
    radius = SMALL_VESSEL_MM / 2.0
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    core = _outside_distance_mm(~vessel, spacing, radius) > np.float32(radius)
    small = vessel & (_outside_distance_mm(core, spacing, radius) > np.float32(radius))
    return small


def _lattice_step(shape: tuple[int, ...]) -> int:
    """Stride of a lattice with about ``DEPTH_MAP_VOXELS`` points over an array of ``shape``."""
    return max(1, int(np.ceil(np.cbrt(np.prod(shape) / DEPTH_MAP_VOXELS))))
