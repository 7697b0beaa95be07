"""How a tumor looks: per-organ HU contrast, texture, soft edges, necrosis, rim and mass effect.

Contrast, texture, necrosis and rim scale with the host organ's own HU around the tumor, so one
table is plausible on enhanced and unenhanced scans alike (see :class:`OrganAppearance`).

The tumor is *added* to the host CT as a smooth difference map (contrast + texture, ramped at the
edge). Adding, rather than replacing, keeps the scan's own noise inside the tumor voxel for voxel,
so a synthetic tumor is exactly as noisy as the parenchyma around it. Where tissue is displaced
(mass effect) interpolation smooths the noise; the measured deficit is put back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .shapes import TumorShape, _bounds, mean_in
from .texture import tumor_texture

RING_MM = 4.0  # thickness of the surrounding-organ shell that contrast is measured against


# Absolute limits on the drawn look, whatever the host organ's HU.
SOLID_FLOOR_HU = 10.0  # a solid tumor's mean stays above water (fat- or fluid-dense tumors are not modelled)
MIN_CONTRAST_HU = 8.0  # at least this much darker than its organ, else it is not a visible lesion
MAX_CONTRAST_HU = 150.0  # at most this much darker (arterial-phase renal cortex at 250 HU and more)
TEXTURE_SD_LIMITS_HU = (3.0, 60.0)
MAX_BLUR_MM = 8.0  # deepest reach of the edge ramp into the tumor
WELL_DEFINED_TEXTURE = 0.25  # share of the drawn texture a well-defined tumor keeps
# Calcification-like foci: only in tumors of at least this radius, this deep below the surface,
# at most this many (clustered around one to three points).
FOCI_MIN_RADIUS_MM = 4.0
FOCI_DEPTH_MM = 1.5
MAX_FOCI = 40


@dataclass(frozen=True)
class OrganAppearance:
    """Per-organ distributions (uniform ranges) of a tumor's look, *relative to its host organ*.

    The host HU is the mean of the organ shell around the tumor (the shell the contrast is measured
    against). Scaling by it makes one table fit every phase: a tumor at 0.6 of the liver's HU is 60 HU
    in a portal-venous liver at 100 HU and 27 HU in an unenhanced one at 45 HU.

    Attributes:
        tumor_fraction: mean tumor HU / host HU.
        texture_fraction: standard deviation of the internal texture / host HU (heterogeneity comes
            mostly from uneven enhancement, so it shrinks on unenhanced scans too): the range of
            typical tumors.
        strong_texture_fraction: the range of the strongly heterogeneous minority (``None``: no such
            minority), drawn with ``strong_texture_probability``.
        texture_mm: size of the texture's blotches.
        necrosis_fraction: a necrotic core is darker by this fraction of the tumor's HU above water.
        rim_fraction: an enhancing rim is brighter by this fraction of the host HU.
        blur_fraction: how deep (fraction of the radius) the edge ramp reaches into the tumor: the
            margin's softness (small: well defined; large: ill-defined, infiltrative).
        foci_probability: the chance that a tumor holds sparse bright calcification-like foci.
        foci_hu: their peak brightness above the tumor, in HU: calcium is dense whatever the
            phase, so this is absolute, not relative to the host.
    """

    tumor_fraction: tuple[float, float]
    texture_fraction: tuple[float, float]
    texture_mm: tuple[float, float]
    strong_texture_fraction: tuple[float, float] | None = None
    strong_texture_probability: float = 0.0
    necrosis_fraction: tuple[float, float] = (0.35, 0.7)
    rim_fraction: tuple[float, float] = (0.2, 0.5)
    blur_fraction: tuple[float, float] = (0.08, 0.2)
    foci_probability: float = 0.05
    foci_hu: tuple[float, float] = (150.0, 450.0)


# Liver: metastases and HCC in the portal-venous phase sit at about 40-90% of the parenchyma
# (hypovascular metastases lowest, HCC washout highest). Kidney: renal cell carcinoma enhances
# less than the cortex and unevenly (clear-cell patchy, papillary low). Pancreas: adenocarcinoma is
# hypoattenuating, fairly homogeneous and ill-defined. Renal masses are mostly well defined.
# Texture: most real liver tumors on portal-venous CT have an internal SD of 12-40 HU (9 measured at
# 0.6-0.8 mm: median noise ratio 1.02), so typical tumors get a mild texture and a minority of 15%
# a strong one (as the calcified IRCADb-17 tumor, SD 91 HU).
# Calcification: some liver metastases (mucinous colorectal, treated) and renal cell carcinomas
# hold calcified foci; pancreatic adenocarcinoma rarely does.
APPEARANCE: dict[str, OrganAppearance] = {
    "liver": OrganAppearance(
        (0.40, 0.90),
        (0.08, 0.28),
        (6.0, 14.0),
        strong_texture_fraction=(0.28, 0.45),
        strong_texture_probability=0.15,
        foci_probability=0.15,
    ),
    "kidney": OrganAppearance(
        (0.35, 0.80), (0.12, 0.35), (6.0, 12.0), blur_fraction=(0.05, 0.12), foci_probability=0.1
    ),
    "pancreas": OrganAppearance(
        (0.50, 0.85), (0.06, 0.20), (6.0, 10.0), blur_fraction=(0.15, 0.35), foci_probability=0.02
    ),
    "default": OrganAppearance((0.45, 0.85), (0.10, 0.30), (6.0, 12.0)),
}


def appearance_for(organ: str) -> OrganAppearance:
    """The appearance table entry of an organ (``kidney_left`` uses ``kidney``)."""
    return APPEARANCE.get(base_organ(organ), APPEARANCE["default"])


def base_organ(organ: str) -> str:
    """``kidney_left`` -> ``kidney``; other names unchanged (lower case)."""
    name = organ.strip().lower().replace(" ", "_")
    for side in ("_left", "_right"):
        if name.endswith(side):
            return name[: -len(side)]
    return name


def noise_sd_hu(values: np.ndarray, mask: np.ndarray) -> float:
    """Robust noise SD (HU) from third differences of four x-neighbours that all lie in ``mask``.

    ``v[i] - 3 v[i+1] + 3 v[i+2] - v[i+3]`` cancels anything locally quadratic, so smooth anatomy
    and tumor texture (features of three voxels and more) leave almost nothing, while the scan's
    fine-grained noise passes: first differences let strong texture through (a texture of 40 HU SD
    read as 30-60% more noise on the phantom; third differences, 0-15%). Scaled so white noise of
    SD s gives s (correlated CT noise gives less, the same for any region of one scan). Median
    absolute deviation, so edges and outliers do not inflate it; at most about 4096 evenly spread
    differences are used.
    """
    runs = mask[..., :-3] & mask[..., 1:-2] & mask[..., 2:-1] & mask[..., 3:]
    starts = np.flatnonzero(runs)
    if len(starts) < 16:
        return float("nan")
    # Differences only at the chosen runs: index i of (..., X - 3) is voxel i + 3 (i // (X - 3)).
    starts = starts[:: max(1, len(starts) // 4096)]
    starts += 3 * (starts // runs.shape[-1])
    flat = values.reshape(-1)
    differences = (flat[starts].astype(np.float64) - flat[starts + 3]) + 3.0 * (
        flat[starts + 2].astype(np.float64) - flat[starts + 1]
    )
    mad = np.median(np.abs(differences - np.median(differences)))
    return float(1.4826 * mad / math.sqrt(20.0))


@dataclass
class Look:
    """The drawn look of one tumor: fractions when drawn, HU once :meth:`resolve` saw the host.

    Attributes:
        tumor_fraction, texture_fraction, necrosis_fraction, rim_fraction: drawn from the organ's
            :class:`OrganAppearance` (``necrosis_fraction``/``rim_fraction`` ``None`` when off).
        texture_mm: size of the texture's blotches.
        blur_fraction: reach of the edge ramp into the tumor, as a fraction of the radius.
        fixed_contrast_hu: a requested contrast that replaces the fraction (``None``: use it).
        contrast_hu, texture_sd_hu, necrosis_hu, rim_hu: HU set by :meth:`resolve` (NaN before;
            necrosis and rim ``None`` when off).
        foci_hu: peak HU of calcification-like foci (``None``: none).
        foci_seed: seed of the foci's positions and sizes.
    """

    tumor_fraction: float
    texture_fraction: float
    texture_mm: float
    necrosis_fraction: float | None
    rim_fraction: float | None
    blur_fraction: float = 0.0
    fixed_contrast_hu: float | None = None
    contrast_hu: float = math.nan
    texture_sd_hu: float = math.nan
    necrosis_hu: float | None = None
    rim_hu: float | None = None
    foci_hu: float | None = None
    foci_seed: int = 0

    def resolve(self, host_hu: float) -> None:
        """Turn the fractions into HU against the host organ's mean HU around the tumor (in place).

        The contrast is ``host_hu * (tumor_fraction - 1)``, kept at least :data:`MIN_CONTRAST_HU`
        and at most :data:`MAX_CONTRAST_HU` dark, and never taking the tumor below
        :data:`SOLID_FLOOR_HU` (which wins: in an organ near water density the tumor may then be
        brighter, as lesions in a fatty liver are). A ``fixed_contrast_hu`` is used as given.
        """
        host = float(host_hu)
        if self.fixed_contrast_hu is not None:
            contrast = float(self.fixed_contrast_hu)
        else:
            contrast = float(np.clip(host * (self.tumor_fraction - 1.0), -MAX_CONTRAST_HU, -MIN_CONTRAST_HU))
            contrast = max(contrast, SOLID_FLOOR_HU - host)
        # An organ below water density (none of the tables' organs) still gets a visible texture.
        scale = max(host, SOLID_FLOOR_HU + MIN_CONTRAST_HU)
        self.contrast_hu = contrast
        self.texture_sd_hu = float(np.clip(self.texture_fraction * scale, *TEXTURE_SD_LIMITS_HU))
        tumor_hu = host + contrast
        self.necrosis_hu = (
            None
            if self.necrosis_fraction is None
            else -self.necrosis_fraction * max(tumor_hu, SOLID_FLOOR_HU)
        )
        self.rim_hu = None if self.rim_fraction is None else self.rim_fraction * scale


def _texture_fraction(appearance: OrganAppearance, draw: float) -> float:
    """The texture fraction for a uniform ``draw`` in [0, 1): the typical range below
    ``1 - strong_texture_probability``, the strong range above (one draw either way, so the other
    draws of a look do not depend on which it is)."""
    low, high = appearance.texture_fraction
    strong = appearance.strong_texture_fraction
    typical = 1.0 - (appearance.strong_texture_probability if strong is not None else 0.0)
    if draw < typical:
        return low + (high - low) * draw / typical
    strong_low, strong_high = strong
    return strong_low + (strong_high - strong_low) * (draw - typical) / (1.0 - typical)


def draw_look(
    appearance: OrganAppearance,
    rng: np.random.Generator,
    contrast_hu: float | None,
    necrosis: bool,
    rim: bool,
    well_defined: bool = False,
) -> Look:
    """Draw the relative look from the organ's distributions (HU follow in :meth:`Look.resolve`).

    Every range is drawn whatever the options, so an option does not change the other draws.
    ``well_defined``: the edge ramp as short as :func:`reached_difference` allows and a quarter of
    the drawn texture.
    """
    tumor_fraction = float(rng.uniform(*appearance.tumor_fraction))
    texture_fraction = _texture_fraction(appearance, float(rng.random()))
    texture_mm = float(rng.uniform(*appearance.texture_mm))
    necrosis_fraction = float(rng.uniform(*appearance.necrosis_fraction))
    rim_fraction = float(rng.uniform(*appearance.rim_fraction))
    blur_fraction = float(rng.uniform(*appearance.blur_fraction))
    foci = bool(rng.random() < appearance.foci_probability)
    foci_hu = float(rng.uniform(*appearance.foci_hu))
    foci_seed = int(rng.integers(2**63))
    if well_defined:
        blur_fraction = 0.0  # clipped up to the shortest ramp
        texture_fraction *= WELL_DEFINED_TEXTURE
    return Look(
        tumor_fraction=tumor_fraction,
        texture_fraction=texture_fraction,
        texture_mm=texture_mm,
        necrosis_fraction=necrosis_fraction if necrosis else None,
        rim_fraction=rim_fraction if rim else None,
        blur_fraction=blur_fraction,
        fixed_contrast_hu=None if contrast_hu is None else float(contrast_hu),
        foci_hu=foci_hu if foci else None,
        foci_seed=foci_seed,
    )


def edge_width_mm(radius_mm: float) -> float:
    """Reach of the soft edge outside the surface, times two: a fifth of the radius, 1 to 3 mm.

    The engine keeps its surrounding-organ shell outside half of this; the ramp's inner part
    (:func:`difference_map`) may reach deeper.
    """
    return float(np.clip(0.2 * radius_mm, 1.0, 3.0))


def difference_map(shape: TumorShape, look: Look, rng: np.random.Generator) -> np.ndarray:
    """The HU to add on the tumor's box before contrast calibration (float32, 0 far outside):
    :func:`reached_difference` on the whole box."""
    inner, reached = reached_difference(shape, look, rng)
    difference = np.zeros(shape.box_shape, dtype=np.float32)
    difference[inner] = reached
    return difference


def reached_difference(
    shape: TumorShape, look: Look, rng: np.random.Generator
) -> tuple[tuple[slice, ...], np.ndarray]:
    """The HU to add before contrast calibration, on the part of the tumor's box the soft edge
    reaches (``inner``, which holds the whole tumor; the map is 0 elsewhere): ``(inner, map)``.

    Soft edge: a linear ramp from ``edge_width_mm / 2`` outside the surface to
    ``blur_fraction * radius`` (at least ``edge_width_mm / 2``, at most :data:`MAX_BLUR_MM`) inside,
    so ill-defined tumors fade in over several millimetres. Necrotic core: the
    part deeper than 40% of the radius; rim: a band of about 15% of the radius under the surface.
    Foci: see :func:`calcified_foci`.
    """
    if not math.isfinite(look.contrast_hu):
        raise ValueError("the look has no HU yet: call Look.resolve(host_hu) first")
    edge = edge_width_mm(shape.radius_mm)
    # Work only where the ramp is non-zero: the box also holds the margin zones around the tumor.
    region = shape.estimate_region
    reached = shape.distance_mm[region] < np.float32(edge / 2.0)
    low, high = _bounds(reached, margin=0)
    inner = tuple(
        slice(int(a) + (r.start or 0), int(b) + (r.start or 0))
        for a, b, r in zip(low, high, region, strict=True)
    )
    depth = -shape.distance_mm[inner]
    outer = edge / 2.0
    blur = float(np.clip(look.blur_fraction * shape.radius_mm, outer, MAX_BLUR_MM))
    weight = np.clip((depth + np.float32(outer)) * np.float32(1.0 / (outer + blur)), 0.0, 1.0)
    texture = tumor_texture(depth.shape, shape.spacing_zyx_mm, look.texture_mm, rng)
    # Zero mean inside: else a few large blotches shift the tumor's mean, and the engine's contrast
    # calibration would rescale the whole map (texture included) to undo it.
    texture -= np.float32(mean_in(texture, depth > 0))
    body = np.float32(look.contrast_hu) + np.float32(look.texture_sd_hu) * texture
    if look.necrosis_hu is not None and shape.radius_mm >= 5.0:
        core_depth = 0.4 * shape.radius_mm
        core = np.clip((depth - np.float32(core_depth)) * np.float32(1.0 / edge), 0.0, 1.0)
        body += np.float32(look.necrosis_hu) * core
    if look.rim_hu is not None:
        half_width = max(0.075 * shape.radius_mm, 0.75)
        rim = np.exp(-(((depth - np.float32(half_width)) * np.float32(1.0 / half_width)) ** 2))
        body += np.float32(look.rim_hu) * rim
    if look.foci_hu is not None and shape.radius_mm >= FOCI_MIN_RADIUS_MM:
        foci = calcified_foci(depth, shape.spacing_zyx_mm, shape.radius_mm, look.foci_hu, look.foci_seed)
        # Zero mean inside, as the texture, so the contrast calibration does not rescale them.
        foci -= np.float32(mean_in(foci, depth > 0))
        body += foci
    body *= weight
    return inner, body


def calcified_foci(
    depth_mm: np.ndarray, spacing_zyx_mm: np.ndarray, radius_mm: float, peak_hu: float, seed: int
) -> np.ndarray:
    """Sparse bright specks, clustered as calcifications are: float32 HU on ``depth_mm``'s box.

    Up to :data:`MAX_FOCI` Gaussian specks (0.5-1.2 mm SD, 50-100% of ``peak_hu``; a voxel takes
    the brightest speck over it) at least :data:`FOCI_DEPTH_MM` below the surface, scattered about
    one to three points with a spread of a quarter of the radius. Their number grows with the
    tumor's cross-section: about one to four per 5 mm of radius squared. Cost: a few microseconds
    per speck, paid only by the tumors that have them.
    """
    rng = np.random.default_rng(seed)
    spacing = np.asarray(spacing_zyx_mm, dtype=np.float64)
    count = int(np.clip(round(rng.uniform(0.5, 2.0) * (radius_mm / 5.0) ** 2), 1, MAX_FOCI))
    # Cluster centres deep inside, by rejection sampling (no pass over the box); else the deepest.
    draws = rng.integers(0, depth_mm.size, 64)
    deep = draws[depth_mm.reshape(-1)[draws] > np.float32(max(FOCI_DEPTH_MM, 0.5 * radius_mm))]
    if len(deep) == 0:
        deep = np.array([int(np.argmax(depth_mm))])
    deep = np.stack(np.unravel_index(deep, depth_mm.shape), axis=1)
    clusters = deep[rng.integers(0, len(deep), rng.integers(1, 4))] * spacing
    tries = clusters[rng.integers(0, len(clusters), 4 * count)] + rng.normal(
        0.0, 0.25 * radius_mm, (4 * count, 3)
    )
    index = np.rint(tries / spacing).astype(int)
    inside = np.all((index >= 0) & (index < np.asarray(depth_mm.shape)), axis=1)
    index, tries = index[inside], tries[inside]
    deep_enough = depth_mm[tuple(index.T)] > np.float32(FOCI_DEPTH_MM)
    centres_mm = tries[deep_enough][:count]
    sigmas_mm = rng.uniform(0.5, 1.2, len(centres_mm))
    peaks_hu = peak_hu * rng.uniform(0.5, 1.0, len(centres_mm))
    foci = np.zeros(depth_mm.shape, dtype=np.float32)
    if len(centres_mm) == 0:
        return foci
    # Every speck on its own box (3 SD each side, within the array), all at once: boxes of one
    # size, the largest, with zero weight past each speck's own box.
    limits = np.asarray(depth_mm.shape)
    low = np.maximum(np.floor((centres_mm - 3.0 * sigmas_mm[:, None]) / spacing).astype(int), 0)
    high = np.minimum(np.ceil((centres_mm + 3.0 * sigmas_mm[:, None]) / spacing).astype(int) + 1, limits)
    axes, indices = [], []
    for axis in range(3):
        index = low[:, axis, None] + np.arange(max(int((high - low)[:, axis].max()), 1))  # (n, B)
        weight = np.exp(
            -0.5 * ((index * spacing[axis] - centres_mm[:, axis, None]) / sigmas_mm[:, None]) ** 2
        ).astype(np.float32)
        weight[index >= high[:, axis, None]] = 0.0
        axes.append(weight)
        indices.append(np.minimum(index, limits[axis] - 1))
    specks = peaks_hu.astype(np.float32)[:, None, None, None] * axes[0][:, :, None, None]
    specks = specks * axes[1][:, None, :, None] * axes[2][:, None, None, :]
    # Zero weights land on some voxel of the array, where they change nothing (foci >= 0).
    np.maximum.at(
        foci,
        (indices[0][:, :, None, None], indices[1][:, None, :, None], indices[2][:, None, None, :]),
        specks,
    )
    return foci


def mass_effect(
    values: np.ndarray,
    labels: np.ndarray,
    keep: np.ndarray,
    centre_index: np.ndarray,
    radius_mm: float,
    spacing_zyx_mm: np.ndarray,
    strength: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Push tissue radially away from ``centre_index`` (box coordinates), as a growing mass does.

    Backward map: a point at distance rho mm takes the value from rho - u(rho), where
    u = strength * rho inside the radius and decays as 1/rho^2 outside, tapering to 0 at the box's
    edge. Voxels in ``keep`` (tumors already placed) do not move and are not pulled from. CT values
    are interpolated linearly, labels by nearest neighbour; the noise that interpolation removes is
    measured and added back.

    Returns:
        ``(values, labels)`` on the same box.
    """
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in values.shape], indexing="ij")
    offsets_mm = [
        (grid - np.float32(c)) * np.float32(s)
        for grid, c, s in zip(grids, centre_index, spacing_zyx_mm, strict=True)
    ]
    rho = np.sqrt(sum(o * o for o in offsets_mm)) + np.float32(1e-6)
    reach = float(
        min((n - 1 - c) * s for n, c, s in zip(values.shape, centre_index, spacing_zyx_mm, strict=True))
    )
    reach = min(reach, float(min(c * s for c, s in zip(centre_index, spacing_zyx_mm, strict=True))))
    outside = strength * radius_mm * (radius_mm / np.maximum(rho, radius_mm)) ** 2
    taper = np.clip(1.0 - (rho - radius_mm) / max(reach - radius_mm, 1e-3), 0.0, 1.0) ** 2
    shift_mm = np.where(rho <= radius_mm, strength * rho, outside * taper)
    scale = 1.0 - shift_mm / rho
    sources = [
        np.float32(c) + o * scale / np.float32(s)
        for o, c, s in zip(offsets_mm, centre_index, spacing_zyx_mm, strict=True)
    ]
    moved_values = ndimage.map_coordinates(values, sources, order=1, mode="nearest").astype(np.float32)
    moved_labels = ndimage.map_coordinates(labels, sources, order=0, mode="nearest").astype(labels.dtype)
    pulled_keep = ndimage.map_coordinates(keep.astype(np.uint8), sources, order=0, mode="nearest").astype(
        bool
    )
    frozen = keep | pulled_keep
    moved_values[frozen] = values[frozen]
    moved_labels[frozen] = labels[frozen]
    # Linear interpolation averages neighbours: restore the lost noise where tissue moved.
    moved = (shift_mm / np.float32(float(spacing_zyx_mm.min())) > 0.05) & ~frozen
    before = noise_sd_hu(values, moved)
    after = noise_sd_hu(moved_values, moved)
    if math.isfinite(before) and math.isfinite(after) and before > after:
        deficit = math.sqrt(before**2 - after**2)
        moved_values[moved] += rng.standard_normal(int(moved.sum()), dtype=np.float32) * np.float32(deficit)
    return moved_values, moved_labels
