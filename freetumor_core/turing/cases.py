"""Case files that do not reveal where they came from.

Every case of a study is a crop around one tumor, resampled onto the same grid (spacing, size,
identity direction, origin 0), clipped to the same HU range, rounded to integer HU and written as an
uncompressed int16 NIfTI without metadata. All case files are therefore byte-identical in their
header and identical in size: compressed files would differ in size with their content (a smooth
3 mm scan compresses better than a noisy 0.7 mm one), which would tell real from synthetic.

The region to judge is a box (mm, in the case file's own frame) around the tumor, padded by a random
margin, made the same way for every case whatever its origin.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..volume import Volume

# Air outside a scan's field of view, before clipping to the study's HU range.
OUTSIDE_HU = -1024.0


@dataclass(frozen=True)
class CaseFormat:
    """The conventions every case of a study shares.

    Attributes:
        spacing_mm: voxel size ``(x, y, z)``, mm.
        size_voxels: grid size ``(x, y, z)``; the crop spans ``size * spacing`` mm.
        hu_range: values are clipped to ``[low, high]`` HU. The default fits inside the narrowest
            window of the real data (8-bit exports hold about -184..266 HU) and holds the display
            window, so no case shows a different clipping.
        window: display preset: ``name``, ``level_hu``, ``width_hu``.
        box_padding_mm: the judged box extends the tumor's bounding box by a random margin in this
            range on each side, mm.
        centre_jitter_mm: the crop centre is moved from the tumor centre by up to this much
            ``(x, y, z)``, mm, so the tumor is not always in the middle.
    """

    spacing_mm: tuple[float, float, float] = (1.0, 1.0, 2.5)
    size_voxels: tuple[int, int, int] = (128, 128, 24)
    hu_range: tuple[int, int] = (-180, 260)
    window: dict[str, Any] = field(
        default_factory=lambda: {"name": "abdomen", "level_hu": 40, "width_hu": 400}
    )
    box_padding_mm: tuple[float, float] = (4.0, 12.0)
    centre_jitter_mm: tuple[float, float, float] = (12.0, 12.0, 5.0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaseFormat:
        return cls(
            spacing_mm=tuple(float(v) for v in data["spacing_mm"]),  # type: ignore[arg-type]
            size_voxels=tuple(int(v) for v in data["size_voxels"]),  # type: ignore[arg-type]
            hu_range=tuple(int(v) for v in data["hu_range"]),  # type: ignore[arg-type]
            window=dict(data["window"]),
            box_padding_mm=tuple(float(v) for v in data["box_padding_mm"]),  # type: ignore[arg-type]
            centre_jitter_mm=tuple(float(v) for v in data["centre_jitter_mm"]),  # type: ignore[arg-type]
        )


@dataclass
class PreparedCase:
    """A case ready to write: int16 HU ``(z, y, x)`` on the format's grid and the box to judge.

    ``box_mm`` holds ``low`` and ``high`` corners ``(x, y, z)`` in mm, in the case file's frame
    (origin 0 at the first voxel's centre, identity direction).
    """

    array: np.ndarray
    box_mm: dict[str, list[float]]

    def volume(self, case_format: CaseFormat) -> Volume:
        return Volume(self.array, case_format.spacing_mm)


def crop_around(ct: Volume, mask: np.ndarray, case_format: CaseFormat) -> tuple[Volume, np.ndarray]:
    """The part of ``ct`` (and ``mask``) that any crop of this case can reach, so that a study keeps
    only that much of each scan in memory rather than whole CTs.

    The kept box extends the tumor's bounding box by half the crop span, the centre jitter and a
    blur margin on each side. Geometry is kept (the origin moves with the first kept voxel).
    """
    reach_mm = (np.asarray(case_format.size_voxels) * np.asarray(case_format.spacing_mm)) / 2.0
    reach_mm = reach_mm + np.asarray(case_format.centre_jitter_mm) + 10.0
    indices = np.argwhere(mask)
    # Bound by the largest per-axis reach: the scan's axes need not be the case's axes.
    pad = np.ceil(reach_mm.max() / ct.spacing_zyx).astype(int)
    low = np.maximum(indices.min(axis=0) - pad, 0)
    high = np.minimum(indices.max(axis=0) + pad + 1, ct.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))
    origin = tuple(float(v) for v in ct.index_to_lps(low.astype(float)))
    sub = Volume(np.ascontiguousarray(ct.array[box]), ct.spacing, origin, ct.direction.copy())
    return sub, np.ascontiguousarray(mask[box])


def _physical_corners(volume: Volume, low_zyx: np.ndarray, high_zyx: np.ndarray) -> np.ndarray:
    """LPS positions of the 8 corners of an index box (voxel centres), shape (8, 3)."""
    corners = np.array([[z, y, x] for z in (0, 1) for y in (0, 1) for x in (0, 1)], dtype=np.float64)
    return volume.index_to_lps(low_zyx + corners * (high_zyx - low_zyx))


def _crop_origin(
    ct: Volume, mask: np.ndarray, case_format: CaseFormat, rng: np.random.Generator
) -> np.ndarray:
    """LPS position of the crop's first voxel centre: around the tumor, kept inside the scan."""
    indices = np.argwhere(mask)
    tumor = _physical_corners(ct, indices.min(axis=0).astype(float), indices.max(axis=0).astype(float))
    centre = (tumor.min(axis=0) + tumor.max(axis=0)) / 2.0
    centre += rng.uniform(-1.0, 1.0, 3) * np.asarray(case_format.centre_jitter_mm)
    span = (np.asarray(case_format.size_voxels) - 1) * np.asarray(case_format.spacing_mm)
    scan = _physical_corners(ct, np.zeros(3), np.asarray(ct.shape, dtype=float) - 1)
    scan_low, scan_high = scan.min(axis=0), scan.max(axis=0)
    origin = centre - span / 2.0
    for axis in range(3):
        if scan_high[axis] - scan_low[axis] >= span[axis]:
            # Slide the crop back into the scan rather than fill it with air outside the field of view.
            origin[axis] = np.clip(origin[axis], scan_low[axis], scan_high[axis] - span[axis])
        else:
            origin[axis] = (scan_low[axis] + scan_high[axis] - span[axis]) / 2.0
    return origin


def _source_region(ct: Volume, origin: np.ndarray, span: np.ndarray) -> tuple[slice, ...]:
    """Array slices of ``ct`` that cover the crop box (with a few voxels of margin)."""
    corners = np.array(
        [origin + span * np.array([x, y, z]) for z in (0, 1) for y in (0, 1) for x in (0, 1)], dtype=float
    )
    index = ct.lps_to_index(corners)
    low = np.maximum(np.floor(index.min(axis=0)).astype(int) - 4, 0)
    high = np.minimum(np.ceil(index.max(axis=0)).astype(int) + 5, ct.shape)
    return tuple(slice(int(a), int(max(a + 1, b))) for a, b in zip(low, high, strict=True))


def _sub_image(ct: Volume, region: tuple[slice, ...], array: np.ndarray) -> sitk.Image:
    start = np.array([s.start for s in region], dtype=float)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(ct.spacing)
    image.SetOrigin(tuple(ct.index_to_lps(start)))
    image.SetDirection(tuple(ct.direction.flatten()))
    return image


def physical_spacing_mm(ct: Volume) -> np.ndarray:
    """The scan's voxel size along the physical axes ``(x, y, z)`` of the case frame, mm."""
    return np.abs(ct.direction) @ np.asarray(ct.spacing)


def prepare_case(
    ct: Volume,
    tumor_mask: np.ndarray,
    case_format: CaseFormat,
    rng: np.random.Generator,
    resolution_mm: np.ndarray | None = None,
) -> PreparedCase:
    """Crop, resample and quantise one case exactly as every other case of the study.

    Args:
        ct: the scan (HU), any spacing and direction.
        tumor_mask: boolean ``(z, y, x)`` on ``ct``'s grid: the tumor to judge (not empty).
        case_format: the study's conventions.
        rng: random numbers for the crop position and box margin.
        resolution_mm: blur to at least this voxel size ``(x, y, z)`` in the case frame (the
            coarsest source grid of the study), so every case has the same sharpness.

    Returns:
        The int16 HU array ``(z, y, x)`` of shape ``size_voxels[::-1]`` and the judged box (mm).
    """
    spacing = np.asarray(case_format.spacing_mm)
    size = np.asarray(case_format.size_voxels)
    origin = _crop_origin(ct, tumor_mask, case_format, rng)
    region = _source_region(ct, origin, (size - 1) * spacing)
    values = ct.array[region].astype(np.float32)
    # Blur finer scans to the case resolution first, so that every case has about the same
    # sharpness and noise grain whatever scanner and spacing it comes from.
    target_xyz = spacing if resolution_mm is None else np.maximum(spacing, resolution_mm)
    # The target resolution along each of the scan's own index axes (x, y, z), then in array order.
    physical_of_index = np.argmax(np.abs(ct.direction), axis=0)
    target_zyx = target_xyz[physical_of_index][::-1]
    sigma_mm = np.sqrt(np.maximum(target_zyx**2 - ct.spacing_zyx**2, 0.0)) / 2.355
    if np.any(sigma_mm > 0):
        values = ndimage.gaussian_filter(values, sigma_mm / ct.spacing_zyx, mode="nearest")
    reference = sitk.Image([int(n) for n in size], sitk.sitkFloat32)
    reference.SetSpacing(tuple(float(s) for s in spacing))
    reference.SetOrigin(tuple(float(o) for o in origin))
    resampled = sitk.Resample(
        _sub_image(ct, region, values), reference, sitk.Transform(), sitk.sitkLinear, OUTSIDE_HU
    )
    low_hu, high_hu = case_format.hu_range
    array = np.clip(np.rint(sitk.GetArrayFromImage(resampled)), low_hu, high_hu).astype(np.int16)
    mask_image = _sub_image(ct, region, tumor_mask[region].astype(np.uint8))
    crop_mask = sitk.GetArrayFromImage(
        sitk.Resample(mask_image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    ).astype(bool)
    return PreparedCase(array, judged_box(crop_mask, case_format, rng))


def judged_box(
    crop_mask: np.ndarray, case_format: CaseFormat, rng: np.random.Generator
) -> dict[str, list[float]]:
    """The box to judge, in mm of the case frame: the tumor's bounding box plus a random margin,
    clipped to the crop. Without tumor voxels in the crop (should not happen) the box is the crop."""
    spacing = np.asarray(case_format.spacing_mm)
    extent = (np.asarray(case_format.size_voxels) - 1) * spacing
    padding = rng.uniform(*case_format.box_padding_mm, size=(2, 3))
    if crop_mask.any():
        indices = np.argwhere(crop_mask)[:, ::-1]  # (x, y, z)
        low = indices.min(axis=0) * spacing - padding[0]
        high = indices.max(axis=0) * spacing + padding[1]
    else:
        low, high = np.zeros(3), extent
    low, high = np.clip(low, 0.0, extent), np.clip(high, 0.0, extent)
    return {"low": [round(float(v), 2) for v in low], "high": [round(float(v), 2) for v in high]}
