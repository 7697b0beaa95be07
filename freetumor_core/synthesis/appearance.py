"""How a tumor looks: per-organ HU contrast, texture, soft edges, necrosis, rim and mass effect.

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

from .shapes import TumorShape
from .texture import tumor_texture

RING_MM = 4.0  # thickness of the surrounding-organ shell that contrast is measured against


@dataclass(frozen=True)
class OrganAppearance:
    """Per-organ distributions (uniform ranges) of a tumor's look, portal-venous phase.

    Attributes:
        contrast_hu: mean tumor HU minus mean HU of the surrounding organ.
        texture_sd_hu: standard deviation of the tumor's internal texture.
        texture_mm: size of the texture's blotches.
        necrosis_hu: extra (negative) HU of a necrotic core.
        rim_hu: extra HU of an enhancing rim.
    """

    contrast_hu: tuple[float, float]
    texture_sd_hu: tuple[float, float]
    texture_mm: tuple[float, float]
    necrosis_hu: tuple[float, float] = (-50.0, -25.0)
    rim_hu: tuple[float, float] = (20.0, 50.0)


# Hypodense liver lesions (metastases, HCC washout); renal cell carcinoma enhances less than the
# cortex and is heterogeneous; pancreatic adenocarcinoma is hypoattenuating against the parenchyma.
APPEARANCE: dict[str, OrganAppearance] = {
    "liver": OrganAppearance((-90.0, -20.0), (4.0, 10.0), (3.0, 8.0)),
    "kidney": OrganAppearance((-100.0, -30.0), (8.0, 18.0), (3.0, 7.0)),
    "pancreas": OrganAppearance((-50.0, -15.0), (4.0, 9.0), (3.0, 6.0)),
    "default": OrganAppearance((-60.0, -20.0), (4.0, 10.0), (3.0, 8.0)),
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
    """Robust noise SD (HU) from differences of x-neighbours that both lie in ``mask``.

    Smooth anatomy and texture cancel in neighbour differences; what is left is the scan's
    fine-grained noise. Median absolute deviation, so edges and outliers do not inflate it.
    """
    both = mask[..., 1:] & mask[..., :-1]
    if int(both.sum()) < 16:
        return float("nan")
    differences = (values[..., 1:] - values[..., :-1])[both].astype(np.float64)
    mad = np.median(np.abs(differences - np.median(differences)))
    return float(1.4826 * mad / math.sqrt(2.0))


@dataclass
class Look:
    """The drawn look of one tumor (HU and mm)."""

    contrast_hu: float
    texture_sd_hu: float
    texture_mm: float
    necrosis_hu: float | None
    rim_hu: float | None


def draw_look(
    appearance: OrganAppearance,
    rng: np.random.Generator,
    contrast_hu: float | None,
    necrosis: bool,
    rim: bool,
) -> Look:
    """Draw contrast, texture, necrosis and rim from the organ's distributions."""
    drawn_contrast = float(rng.uniform(*appearance.contrast_hu))
    look = Look(
        contrast_hu=drawn_contrast if contrast_hu is None else float(contrast_hu),
        texture_sd_hu=float(rng.uniform(*appearance.texture_sd_hu)),
        texture_mm=float(rng.uniform(*appearance.texture_mm)),
        necrosis_hu=float(rng.uniform(*appearance.necrosis_hu)),
        rim_hu=float(rng.uniform(*appearance.rim_hu)),
    )
    look.necrosis_hu = look.necrosis_hu if necrosis else None
    look.rim_hu = look.rim_hu if rim else None
    return look


def edge_width_mm(radius_mm: float) -> float:
    """Width of the soft edge ramp: about a fifth of the radius, 1 to 3 mm."""
    return float(np.clip(0.2 * radius_mm, 1.0, 3.0))


def difference_map(shape: TumorShape, look: Look, rng: np.random.Generator) -> np.ndarray:
    """The HU to add on the tumor's box before contrast calibration (float32, 0 far outside).

    Soft edge: a linear ramp across ``edge_width_mm`` centred on the surface. Necrotic core: the
    part deeper than 40% of the radius; rim: a band of about 15% of the radius under the surface.
    """
    edge = edge_width_mm(shape.radius_mm)
    # Work only where the ramp is non-zero: the box also holds the margin zones around the tumor.
    reached = shape.distance_mm < np.float32(edge / 2.0)
    occupied = [np.flatnonzero(reached.any(axis=axes)) for axes in ((1, 2), (0, 2), (0, 1))]
    inner = tuple(slice(int(o[0]), int(o[-1]) + 1) for o in occupied)
    depth = -shape.distance_mm[inner]
    weight = np.clip(0.5 + depth * np.float32(1.0 / edge), 0.0, 1.0)
    texture = tumor_texture(depth.shape, shape.spacing_zyx_mm, look.texture_mm, rng)
    body = np.float32(look.contrast_hu) + np.float32(look.texture_sd_hu) * texture
    if look.necrosis_hu is not None and shape.radius_mm >= 5.0:
        core_depth = 0.4 * shape.radius_mm
        core = np.clip((depth - np.float32(core_depth)) * np.float32(1.0 / edge), 0.0, 1.0)
        body += np.float32(look.necrosis_hu) * core
    if look.rim_hu is not None:
        half_width = max(0.075 * shape.radius_mm, 0.75)
        rim = np.exp(-(((depth - np.float32(half_width)) * np.float32(1.0 / half_width)) ** 2))
        body += np.float32(look.rim_hu) * rim
    difference = np.zeros(shape.box_shape, dtype=np.float32)
    difference[inner] = body * weight
    return difference


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
