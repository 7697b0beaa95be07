"""Shape and intensity descriptors of one tumor, and distances between two samples of them.

Every descriptor is in physical units (mm, mL, HU), so tumors on different grids compare. They are
what the realism report contrasts between real and synthetic tumors:

- ``volume_ml``, ``diameter_mm`` (equivalent-sphere diameter);
- ``sphericity``: area of the equivalent sphere / surface area (1 for a ball, lower when irregular;
  meaningful for masks at least ~5 voxels across: tinier ones can exceed 1);
- ``elongation``: longest / shortest principal axis of the voxel cloud (1 for a ball);
- ``surface_irregularity``: 1 - volume / convex-hull volume of the surface (0 for a convex shape);
- ``mean_hu``, ``internal_sd_hu``: HU level and spread inside;
- ``contrast_hu``: mean HU inside minus mean HU of a 3-10 mm shell of surrounding organ;
- ``edge_sharpness_hu_per_mm``: mean HU gradient magnitude on the tumor boundary;
- ``noise_ratio``: high-frequency noise inside / outside, the SD of the in-plane Laplacian inside the
  tumor over the same in the 3-10 mm shell of surrounding organ (1 when the tumor is as grainy as its
  host; see :func:`high_frequency_sd_hu`).

Surface measures need VTK (``freetumor-core[render]``): a marching-cubes surface (flying edges)
of the lightly smoothed mask, measured by ``vtkMassProperties``; its vertices give the convex hull.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import ndimage, stats
from scipy.spatial import ConvexHull, QhullError

from .render import VTK_MISSING, vtk_available
from .volume import Volume

SHELL_MM = (3.0, 10.0)
# Gaussian width (voxels, per axis) that removes the voxel staircase before contouring: on
# voxelised balls of radius 8-30 voxels the surface area then lies within ~3 % of 4*pi*r^2.
SURFACE_SMOOTHING_VOXELS = 0.7
GRADIENT_SMOOTHING_MM = 0.75
DESCRIPTORS = (
    "volume_ml",
    "diameter_mm",
    "sphericity",
    "elongation",
    "surface_irregularity",
    "mean_hu",
    "internal_sd_hu",
    "contrast_hu",
    "edge_sharpness_hu_per_mm",
    "noise_ratio",
)
SHAPE_DESCRIPTORS = DESCRIPTORS[:5]
# In-plane (y, x) 4-neighbour Laplacian and the cross its stencil covers.
LAPLACIAN_CROSS = ndimage.generate_binary_structure(2, 1)[None]


def _crop_box(mask: np.ndarray, margin_voxels: np.ndarray) -> tuple[slice, ...]:
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    return tuple(
        slice(max(b.start - int(m), 0), min(b.stop + int(m), n))
        for b, m, n in zip(box, margin_voxels, mask.shape, strict=True)
    )


def iso_surface(mask: np.ndarray, spacing_zyx_mm: Sequence[float]) -> tuple[float, float, np.ndarray]:
    """Flying-edges iso-surface (level 0.5) of the lightly smoothed binary ``(z, y, x)`` mask.

    Returns:
        ``(area_mm2, enclosed_volume_mm3, vertices_mm)``; ``vertices_mm`` is ``(n, 3)`` in ``(x, y, z)``.
    """
    from vtkmodules.util.numpy_support import numpy_to_vtk, vtk_to_numpy
    from vtkmodules.vtkCommonDataModel import vtkImageData
    from vtkmodules.vtkFiltersCore import vtkFlyingEdges3D, vtkMassProperties

    padded = np.pad(mask.astype(np.float32), 3)
    # Masks a few voxels across vanish under smoothing at level 0.5: contour those unsmoothed.
    for sigma in (SURFACE_SMOOTHING_VOXELS, 0.0):
        smooth = np.ascontiguousarray(ndimage.gaussian_filter(padded, sigma) if sigma else padded)
        image = vtkImageData()
        image.SetDimensions(smooth.shape[2], smooth.shape[1], smooth.shape[0])
        image.SetSpacing(*(float(s) for s in spacing_zyx_mm[::-1]))
        image.GetPointData().SetScalars(numpy_to_vtk(smooth.ravel(), deep=True))
        contour = vtkFlyingEdges3D()
        contour.SetInputData(image)
        contour.SetValue(0, 0.5)
        contour.ComputeNormalsOff()
        contour.ComputeScalarsOff()
        contour.Update()
        surface = contour.GetOutput()
        if surface.GetNumberOfPoints() > 0:
            break
    else:
        return 0.0, 0.0, np.zeros((0, 3))
    properties = vtkMassProperties()
    properties.SetInputData(surface)
    properties.Update()
    vertices = vtk_to_numpy(surface.GetPoints().GetData()).astype(np.float64)
    return float(properties.GetSurfaceArea()), float(properties.GetVolume()), vertices


def convex_deficit(enclosed_volume_mm3: float, vertices_mm: np.ndarray) -> float:
    """1 - volume / convex-hull volume of a closed surface (0 for a convex shape, NaN if flat)."""
    try:
        hull_mm3 = ConvexHull(vertices_mm).volume
    except (QhullError, ValueError):  # fewer than 4 points or all in one plane
        return float("nan")
    return float(max(0.0, 1.0 - enclosed_volume_mm3 / hull_mm3))


def principal_axes_mm(mask: np.ndarray, spacing_zyx_mm: Sequence[float]) -> np.ndarray:
    """Standard deviations (mm) of the mask along its principal axes, largest first.

    Each voxel counts as a uniform box, so its own extent (spacing²/12 per axis) is added to the
    covariance of voxel centres; thick slices then do not make thin objects look flatter.
    """
    spacing = np.asarray(spacing_zyx_mm, dtype=np.float64)
    points = np.argwhere(mask) * spacing
    covariance = np.atleast_2d(np.cov(points, rowvar=False)) if len(points) > 1 else np.zeros((3, 3))
    covariance = covariance + np.diag(spacing**2 / 12.0)
    eigenvalues = np.clip(np.linalg.eigvalsh(covariance), 0.0, None)
    return np.sqrt(eigenvalues[::-1])


def edge_sharpness_hu_per_mm(
    hu: np.ndarray, tumor: np.ndarray, spacing_zyx_mm: Sequence[float], within: np.ndarray | None = None
) -> float:
    """Mean HU gradient magnitude (HU/mm) on the two-voxel band around the tumor boundary.

    The HU are smoothed by a Gaussian of :data:`GRADIENT_SMOOTHING_MM` first so that image noise does
    not dominate. ``within`` (e.g. tumor ∪ organ) drops band voxels whose neighbourhood leaves it, so
    a tumor touching the organ edge is not scored on the organ's own border with fat or air.
    """
    spacing = np.asarray(spacing_zyx_mm, dtype=np.float64)
    smooth = ndimage.gaussian_filter(hu.astype(np.float64), GRADIENT_SMOOTHING_MM / spacing)
    gradient = np.gradient(smooth, *spacing)
    magnitude = np.sqrt(sum(g**2 for g in gradient))
    band = ndimage.binary_dilation(tumor) & ~ndimage.binary_erosion(tumor, border_value=0)
    if within is not None:
        band &= ndimage.binary_erosion(within, iterations=2, border_value=0)
    return float(magnitude[band].mean()) if band.any() else float("nan")


def high_frequency_sd_hu(hu: np.ndarray, region: np.ndarray) -> float:
    """Standard deviation of the in-plane Laplacian ``4 v - (four y/x neighbours)`` over the voxels of
    ``region`` whose whole stencil lies in ``region`` (HU; NaN with fewer than 16 such voxels).

    In-plane, because slices are often thicker than pixels and readers look at axial slices. Smooth
    anatomy (anything locally linear) gives 0; white noise of SD s gives ``sqrt(20) s``.
    """
    region = np.asarray(region, dtype=bool)
    core = ndimage.binary_erosion(region, LAPLACIAN_CROSS, border_value=0)
    if int(core.sum()) < 16:
        return float("nan")
    values = hu.astype(np.float64)
    laplacian = 4.0 * values
    for axis in (1, 2):
        laplacian -= np.roll(values, 1, axis) + np.roll(values, -1, axis)
    return float(laplacian[core].std())


def noise_ratio(hu: np.ndarray, tumor: np.ndarray, shell: np.ndarray) -> float:
    """:func:`high_frequency_sd_hu` inside ``tumor`` over that in ``shell`` (NaN if either is too
    small or the shell is flat)."""
    inside, outside = high_frequency_sd_hu(hu, tumor), high_frequency_sd_hu(hu, shell)
    if not (math.isfinite(inside) and math.isfinite(outside)) or outside <= 0:
        return float("nan")
    return inside / outside


def describe_tumor(ct: Volume, tumor_mask: np.ndarray, organ_mask: np.ndarray | None = None) -> dict:
    """Descriptors of one tumor (see the module docstring for their meaning).

    Args:
        ct: CT in HU on the mask's grid (its spacing gives the millimetres).
        tumor_mask: boolean ``(z, y, x)`` mask of one tumor.
        organ_mask: boolean ``(z, y, x)`` mask of the host organ without any tumor; restricts the
            contrast shell and the edge band. ``None``: the shell is everything around the tumor.

    Returns:
        ``{descriptor: float}`` for every name in :data:`DESCRIPTORS`, plus ``shell_hu`` and
        ``voxels``. NaN where a value cannot be measured (no CT, or no organ in the shell).

    Raises:
        ValueError: the tumor mask is empty or its shape differs from the CT's.
    """
    return _describe(tumor_mask, ct.spacing_zyx, ct.array, organ_mask)


def describe_shape(tumor_mask: np.ndarray, spacing_zyx_mm: Sequence[float]) -> dict:
    """Shape descriptors only (intensity ones are NaN), for masks without an image (e.g. KiTS).

    Raises:
        ValueError: the mask is empty.
    """
    return _describe(tumor_mask, np.asarray(spacing_zyx_mm, dtype=np.float64), None, None)


def _describe(
    tumor_mask: np.ndarray,
    spacing_zyx: np.ndarray,
    hu: np.ndarray | None,
    organ_mask: np.ndarray | None,
) -> dict:
    tumor_mask = np.asarray(tumor_mask, dtype=bool)
    if not tumor_mask.any():
        raise ValueError("tumor mask is empty")
    for name, other in (("CT", hu), ("organ mask", organ_mask)):
        if other is not None and other.shape != tumor_mask.shape:
            raise ValueError(f"{name} shape {other.shape} differs from the tumor mask's {tumor_mask.shape}")
    spacing = np.asarray(spacing_zyx, dtype=np.float64)
    box = _crop_box(tumor_mask, np.ceil(SHELL_MM[1] / spacing) + 2)
    tumor = tumor_mask[box]
    voxels = int(tumor.sum())
    volume_mm3 = voxels * float(np.prod(spacing))
    if vtk_available():
        area_mm2, enclosed_mm3, vertices_mm = iso_surface(tumor, spacing)
    else:  # the surface descriptors need VTK: NaN (and one warning) rather than a failed job
        warnings.warn(f"sphericity and surface irregularity not measured: {VTK_MISSING}", stacklevel=3)
        area_mm2, enclosed_mm3, vertices_mm = 0.0, float("nan"), np.zeros((0, 3))
    axes_mm = principal_axes_mm(tumor, spacing)
    result = {
        "volume_ml": volume_mm3 / 1000.0,
        "diameter_mm": float((6.0 * volume_mm3 / np.pi) ** (1.0 / 3.0)),
        "sphericity": (
            float(np.pi ** (1.0 / 3.0) * (6.0 * volume_mm3) ** (2.0 / 3.0) / area_mm2)
            if area_mm2 > 0
            else float("nan")
        ),
        "elongation": float(axes_mm[0] / axes_mm[2]) if axes_mm[2] > 0 else float("inf"),
        "surface_irregularity": convex_deficit(enclosed_mm3, vertices_mm),
        "mean_hu": float("nan"),
        "internal_sd_hu": float("nan"),
        "contrast_hu": float("nan"),
        "edge_sharpness_hu_per_mm": float("nan"),
        "noise_ratio": float("nan"),
        "shell_hu": float("nan"),
        "voxels": voxels,
    }
    if hu is None:
        return result
    hu_box = hu[box].astype(np.float64)
    organ = None if organ_mask is None else np.asarray(organ_mask[box], dtype=bool) & ~tumor
    inside = hu_box[tumor]
    distance_mm = ndimage.distance_transform_edt(~tumor, sampling=spacing)
    shell = (distance_mm > SHELL_MM[0]) & (distance_mm <= SHELL_MM[1])
    if organ is not None:
        shell &= organ
    result["mean_hu"] = float(inside.mean())
    result["internal_sd_hu"] = float(inside.std())
    if shell.any():
        result["shell_hu"] = float(hu_box[shell].mean())
        result["contrast_hu"] = result["mean_hu"] - result["shell_hu"]
        result["noise_ratio"] = noise_ratio(hu_box, tumor, shell)
    within = None if organ is None else (organ | tumor)
    result["edge_sharpness_hu_per_mm"] = edge_sharpness_hu_per_mm(hu_box, tumor, spacing, within)
    return result


def distribution_distance(a: Sequence[float], b: Sequence[float]) -> dict:
    """How far sample ``b`` (e.g. synthetic) lies from sample ``a`` (e.g. real) for one descriptor.

    Non-finite values are dropped. The scale is the interquartile range of both samples pooled
    (falling back to their standard deviation, then to 1 when all values are equal).

    Returns:
        ``n_a``, ``n_b``; ``median_a``, ``median_b``; ``median_shift_iqr`` = (median b - median a) /
        scale (signed); ``wasserstein`` (1-D earth mover's distance, in the descriptor's unit);
        ``wasserstein_iqr`` = wasserstein / scale. NaN when either sample is empty.
    """
    first = np.asarray(a, dtype=np.float64)
    second = np.asarray(b, dtype=np.float64)
    first, second = first[np.isfinite(first)], second[np.isfinite(second)]
    out = {"n_a": len(first), "n_b": len(second)}
    if not len(first) or not len(second):
        keys = ("median_a", "median_b", "median_shift_iqr", "wasserstein", "wasserstein_iqr", "scale")
        return {**out, **dict.fromkeys(keys, float("nan"))}
    pooled = np.concatenate([first, second])
    scale = float(stats.iqr(pooled))
    if scale <= 0:
        scale = float(pooled.std()) or 1.0
    median_a, median_b = float(np.median(first)), float(np.median(second))
    wasserstein = float(stats.wasserstein_distance(first, second))
    return {
        **out,
        "median_a": median_a,
        "median_b": median_b,
        "median_shift_iqr": (median_b - median_a) / scale,
        "wasserstein": wasserstein,
        "wasserstein_iqr": wasserstein / scale,
        "scale": scale,
    }
