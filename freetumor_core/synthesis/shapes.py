"""Tumor shapes in millimetres: a rotated ellipsoid with smooth random deformation and lobes.

A shape is a *level field* on a small box around the tumor centre: about 1 at the surface of the
undeformed ellipsoid and growing outwards. The tumor is ``level <= threshold``, where the threshold
is chosen so the painted volume equals the requested volume exactly (to one voxel). The field over
its local gradient estimates the depth below the surface (soft edges, rims, cores); margins use an
exact distance transform of the small box only.
All work happens in voxels of the actual (possibly anisotropic) spacing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .texture import smooth_noise

AXIS_JITTER = 0.3  # log-scale spread of the three ellipsoid radii
SMOOTH_UNION = 0.15  # level units over which lobes merge with the body
# Most level units the deformation moves the surface at irregularity 1. Above about 0.33 the
# field's slope can beat the ellipsoid's and leave detached specks of tumor beside the body.
DEFORMATION_LEVEL = 0.3
DEFORMATION_SPREAD = (0.6, 1.0)  # per-tumor factor on that amplitude: some smoother, some rougher
FINE_FEATURE = 0.5  # the fine deformation octave's feature size relative to the coarse one
FINE_SHARE = 0.5  # share of the amplitude given to the fine octave (surface roughness)


@dataclass
class TumorShape:
    """One tumor shape on its own box.

    Attributes:
        distance_mm: float32 ``(z, y, x)`` signed distance estimate to the tumor surface on the box
            (negative inside): the level field over its local gradient, a first-order estimate
            with sub-voxel precision, used for soft edges, rims and cores.
        outside_mm: float32 exact distance (mm) from each voxel centre to the nearest tumor voxel
            centre (0 inside), used for margins.
        centre_index: ``(z, y, x)`` index in the box of the tumor centre.
        radius_mm: requested radius.
        spacing_zyx_mm: voxel size in array order.
    """

    distance_mm: np.ndarray
    outside_mm: np.ndarray
    centre_index: np.ndarray
    radius_mm: float
    spacing_zyx_mm: np.ndarray

    @property
    def box_shape(self) -> tuple[int, int, int]:
        return tuple(self.distance_mm.shape)  # type: ignore[return-value]

    @property
    def mask(self) -> np.ndarray:
        """Boolean tumor mask on the box."""
        return self.distance_mm <= 0

    def zone(self, distance_mm: float) -> np.ndarray:
        """The voxels whose centres lie within ``distance_mm`` of a tumor voxel's centre (exact)."""
        return self.outside_mm <= np.float32(distance_mm)

    def depth_mm(self) -> np.ndarray:
        """Depth (mm) below the surface, first-order estimate: positive inside, negative outside."""
        return -self.distance_mm

    def zone_surface_offsets(self, distance_mm: float, count: int, rng: np.random.Generator) -> np.ndarray:
        """Up to ``count`` ``(z, y, x)`` offsets from the centre to voxels on the edge of a zone."""
        top = np.float32(distance_mm)
        shell = np.argwhere(
            (self.outside_mm <= top) & (self.outside_mm > top - np.float32(self.spacing_zyx_mm.max()))
        )
        if len(shell) > count:
            shell = shell[rng.choice(len(shell), size=count, replace=False)]
        return shell - self.centre_index


def _rotation(rng: np.random.Generator) -> np.ndarray:
    """A random 3x3 rotation (QR of a Gaussian matrix, signs fixed so it is uniform)."""
    matrix, upper = np.linalg.qr(rng.standard_normal((3, 3)))
    matrix = matrix * np.sign(np.diag(upper))
    if np.linalg.det(matrix) < 0:
        matrix[:, 0] = -matrix[:, 0]
    return matrix


def _grid_mm(half: np.ndarray, spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    axes = [((np.arange(2 * h + 1) - h) * s).astype(np.float32) for h, s in zip(half, spacing, strict=True)]
    return axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]


def make_shape(
    diameter_mm: float,
    spacing_zyx_mm: np.ndarray,
    rng: np.random.Generator,
    irregularity: float = 0.6,
    lobulation: float = 0.0,
    pad_mm: float = 5.0,
) -> TumorShape:
    """Draw one tumor shape of equivalent-sphere diameter ``diameter_mm``.

    Args:
        diameter_mm: diameter of the sphere with the tumor's volume (mm).
        spacing_zyx_mm: voxel size ``(z, y, x)`` in mm.
        rng: random generator (the only source of randomness).
        irregularity: 0..1, amplitude of the smooth surface deformation (0: ellipsoid).
        lobulation: 0..1, number and size of lobes.
        pad_mm: the box reaches at least this far beyond the tumor (room for margin zones).
    """
    spacing = np.asarray(spacing_zyx_mm, dtype=np.float64)
    radius = diameter_mm / 2.0
    factors = np.exp(rng.uniform(-AXIS_JITTER, AXIS_JITTER, 3))
    radii = radius * factors / np.cbrt(factors.prod())
    rotation = _rotation(rng)
    lobe_count = round(4 * lobulation)
    lobe_directions = rng.standard_normal((lobe_count, 3))
    lobe_directions /= np.linalg.norm(lobe_directions, axis=1, keepdims=True) + 1e-12
    lobe_centres = 0.6 * radius * lobe_directions
    lobe_radii = radius * (0.3 + 0.25 * lobulation) * rng.uniform(0.8, 1.2, lobe_count)
    amplitude = DEFORMATION_LEVEL * irregularity * float(rng.uniform(*DEFORMATION_SPREAD))
    deformation_seed = int(rng.integers(2**63))

    # Half extent (mm) of the undeformed shape along each array axis.
    ellipsoid_extent = np.sqrt(((rotation * radii[:, None]) ** 2).sum(axis=0))
    lobe_extent = (np.abs(lobe_centres) + lobe_radii[:, None]).max(axis=0) if lobe_count else 0.0
    extent = np.maximum(ellipsoid_extent, lobe_extent) * (1.0 + amplitude)
    # Inverse quadratic form: d^2 = p^T M p with p in mm, (z, y, x) order.
    form = rotation.T @ np.diag(1.0 / radii**2) @ rotation
    voxel_mm3 = float(spacing.prod())
    target_voxels = max(1, round(np.pi / 6.0 * diameter_mm**3 / voxel_mm3))
    for growth in (1.15, 1.5, 2.0, 3.0):
        # Generous: the box is cropped to what the margin zones need once the shape is known.
        half = np.ceil((extent * growth + 1.3 * pad_mm) / spacing).astype(int) + 1
        z, y, x = _grid_mm(half, spacing)
        cross = (2 * form[0, 2]) * z + (2 * form[1, 2]) * y  # (Z, Y, 1)
        plane = form[0, 0] * z * z + form[1, 1] * y * y + (2 * form[0, 1]) * z * y  # (Z, Y, 1)
        squared = cross * x + plane + form[2, 2] * x * x
        np.maximum(squared, 0, out=squared)
        level = np.sqrt(squared, dtype=np.float32)
        if lobe_count:
            for centre, lobe_radius in zip(lobe_centres, lobe_radii, strict=True):
                # 1 on the lobe's surface, rising like the ellipsoid's field (1/radius per mm).
                lobe = np.sqrt(
                    (z - np.float32(centre[0])) ** 2
                    + (y - np.float32(centre[1])) ** 2
                    + (x - np.float32(centre[2])) ** 2
                )
                lobe = (lobe - np.float32(lobe_radius)) * np.float32(1.0 / radius) + np.float32(1.0)
                level = _smooth_minimum(level, lobe, SMOOTH_UNION)
        if amplitude > 0:
            deformation = np.random.default_rng(deformation_seed)
            # Two octaves, bumps about the radius and finer roughness; each is clipped, so together
            # they move the level by at most ``amplitude``.
            for feature, share in ((1.0, 1.0 - FINE_SHARE), (FINE_FEATURE, FINE_SHARE)):
                feature_mm = max(0.9 * feature * radius, 2.0 * float(spacing.min()))
                field = smooth_noise(level.shape, spacing, feature_mm, deformation)
                np.clip(field, -1.5, 1.5, out=field)
                # Additive, so the field's gradient stays bounded far from the surface.
                level += np.float32(share * amplitude / 1.5) * field
        flat = level.ravel()
        threshold = float(np.partition(flat, target_voxels - 1)[target_voxels - 1])
        distance = _distance_estimate(level, spacing, threshold)
        # The estimate only sizes the box; margins use the exact distance below.
        inside_reach = distance <= np.float32(1.2 * pad_mm + float(spacing.max()))
        # The reach zone must stay clear of the box faces, else the box was too small.
        if not _touches_faces(inside_reach):
            break
    # Crop to the reach zone: every later step works on this smaller box.
    low, high = _bounds(inside_reach, margin=1)
    cropped = np.ascontiguousarray(distance[low[0] : high[0], low[1] : high[1], low[2] : high[2]])
    outside = ndimage.distance_transform_edt(cropped > 0, sampling=spacing).astype(np.float32)
    if _touches_faces(outside <= np.float32(pad_mm)):
        # The estimate cut the box too tight for the exact zone: keep the whole box.
        low, high, cropped = np.zeros(3, int), np.asarray(level.shape), distance
        outside = ndimage.distance_transform_edt(cropped > 0, sampling=spacing).astype(np.float32)
    return TumorShape(cropped, outside, half - low, radius, spacing)


def _bounds(mask: np.ndarray, margin: int) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` index bounds of ``mask``'s bounding box grown by ``margin`` voxels."""
    occupied = [np.flatnonzero(mask.any(axis=axes)) for axes in ((1, 2), (0, 2), (0, 1))]
    low = np.array([max(o[0] - margin, 0) for o in occupied])
    high = np.array([min(o[-1] + 1 + margin, n) for o, n in zip(occupied, mask.shape, strict=True)])
    return low, high


def _touches_faces(mask: np.ndarray) -> bool:
    return bool(mask[[0, -1]].any() or mask[:, [0, -1]].any() or mask[:, :, [0, -1]].any())


def _smooth_minimum(a: np.ndarray, b: np.ndarray, width: float) -> np.ndarray:
    """Polynomial smooth minimum: a union without a crease, so gradients stay continuous."""
    blend = np.clip(0.5 + (0.5 / width) * (b - a), 0.0, 1.0)
    return b + (a - b) * blend - np.float32(width) * blend * (1.0 - blend)


def _distance_estimate(level: np.ndarray, spacing: np.ndarray, threshold: float) -> np.ndarray:
    """``(level - threshold) / |grad level|`` in mm (central differences; one-sided at the faces)."""
    squared = np.zeros(level.shape, dtype=np.float32)
    for axis in range(3):
        gradient = np.gradient(level, axis=axis) * np.float32(1.0 / spacing[axis])
        gradient *= gradient
        squared += gradient
    np.sqrt(squared, out=squared)
    np.maximum(squared, np.float32(1e-6), out=squared)
    distance = level - np.float32(threshold)
    distance /= squared
    return distance
