"""Real tumors for reader studies: read a datalist entry, split its tumor label into lesions.

Each lesion of the tumor label (:func:`freetumor_core.lesions.split_lesions`) is one real lesion,
described by a :class:`~freetumor_core.records.TumorRecord` with ``engine="real"``. Windowed 8-bit
exports (the DeepLesion ``.npz`` files) are read back into HU by :func:`read_windowed_npz` and
written as HU NIfTI files by :func:`windowed_npz_to_nifti`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..descriptors import describe_tumor
from ..errors import InputError
from ..labels import align_to, read_labels
from ..lesions import split_lesions
from ..records import TumorRecord
from ..volume import Volume, read_ct, write_volume
from .cases import CaseFormat, crop_around
from .datalist import DatalistEntry

# DeepLesion 8-bit exports: u8 = WINDOW_SLOPE * HU + WINDOW_INTERCEPT (fitted against the HU copy
# of one case: RMSE 0.29), i.e. a window of about -184..266 HU.
WINDOW_SLOPE = 0.5667
WINDOW_INTERCEPT = 104.35


@dataclass
class Lesion:
    """A tumor in its CT: the image, the boolean mask ``(z, y, x)`` of this lesion, its record."""

    ct: Volume
    mask: np.ndarray
    record: TumorRecord
    source: str


def measure_lesion(
    ct: Volume, mask: np.ndarray, organ: str, engine: str, context: np.ndarray | None = None
) -> TumorRecord:
    """Describe one lesion with :func:`freetumor_core.descriptors.describe_tumor`.

    Args:
        ct: the CT (HU).
        mask: boolean ``(z, y, x)`` lesion mask on ``ct``'s grid (not empty).
        organ: host organ name.
        engine: ``"real"`` for a real tumor.
        context: the host organ without tumors, which bounds the contrast shell; ``None``: any voxel.

    Returns:
        Centre of mass (RAS mm), equivalent-sphere diameter (mm), volume (mL), mean HU and contrast
        (0 when no shell voxel could be measured); the shape descriptors go to ``extra``.
    """
    described = describe_tumor(ct, mask, context)
    contrast = described["contrast_hu"]
    centre = ct.index_to_ras(np.argwhere(mask).mean(axis=0))
    shape = ("sphericity", "elongation", "surface_irregularity", "internal_sd_hu", "edge_sharpness_hu_per_mm")
    return TumorRecord(
        organ=organ,
        centre_ras_mm=tuple(float(c) for c in centre),  # type: ignore[arg-type]
        diameter_mm=described["diameter_mm"],
        volume_ml=described["volume_ml"],
        mean_hu=described["mean_hu"],
        contrast_hu=0.0 if np.isnan(contrast) else contrast,
        engine=engine,
        extra={name: round(described[name], 4) for name in shape if np.isfinite(described[name])},
    )


def read_real_lesions(entry: DatalistEntry, case_format: CaseFormat | None = None) -> list[Lesion]:
    """The lesions of one datalist entry, largest first, each with the part of its CT that a case
    crop in ``case_format`` (default :class:`CaseFormat`) can reach.

    The tumor is ``label == entry.tumor_label`` when given, else every nonzero voxel of a binary
    mask. Other nonzero labels (e.g. the host organ) bound the contrast ring.

    Raises:
        InputError: the CT is not HU, the label map does not fit the CT, the mask is not binary and no
            ``tumor_label`` is given, or there is no tumor voxel.
    """
    case_format = case_format or CaseFormat()
    ct = read_ct(entry.image)
    labels = align_to(read_labels(entry.label, names={}), ct)
    array = labels.array
    present = sorted(int(v) for v in np.unique(array) if v != 0)
    if entry.tumor_label is None:
        if len(present) > 1:
            raise InputError(
                f"{entry.source}: label map holds labels {present}; say which is the tumor with "
                "'tumor_label' in the datalist entry",
                entry.label,
            )
        tumor = array != 0
    else:
        tumor = array == entry.tumor_label
    if not tumor.any():
        raise InputError(
            f"{entry.source}: no tumor voxels (label {entry.tumor_label or 'nonzero'})", entry.label
        )
    context = (array != 0) & ~tumor if len(present) > 1 else None
    organ = entry.organ or "unspecified"
    lesions = []
    for mask in split_lesions(tumor, ct.spacing_zyx):
        record = measure_lesion(ct, mask, organ, "real", context)
        record.label_id = int(entry.tumor_label or present[0])
        record.extra.update({"source": str(entry.image), "component": len(lesions) + 1})
        lesions.append(Lesion(*crop_around(ct, mask, case_format), record, entry.source))
    return lesions


def windowed_to_hu(
    values: np.ndarray, slope: float = WINDOW_SLOPE, intercept: float = WINDOW_INTERCEPT
) -> np.ndarray:
    """HU (float64) of 8-bit windowed values: ``HU = (u8 - intercept) / slope``. Values outside the
    original window stay clipped at its ends."""
    return (np.asarray(values, dtype=np.float64) - intercept) / slope


def read_windowed_npz(
    npz_path: str | os.PathLike[str], slope: float = WINDOW_SLOPE, intercept: float = WINDOW_INTERCEPT
) -> tuple[Volume, np.ndarray]:
    """An 8-bit windowed CT ``.npz`` (``imgs``, ``gts``, ``spacing``, ``direction``, ``origin``) as a
    float32 HU volume with its geometry, and its boolean lesion mask.

    Raises:
        InputError: the file is missing, not an ``.npz`` of that layout, or not 8-bit.
    """
    npz_path = Path(npz_path)
    try:
        with np.load(npz_path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in ("imgs", "gts", "spacing", "direction", "origin")}
    except FileNotFoundError:
        raise InputError("file not found", npz_path) from None
    except KeyError as error:
        raise InputError(f"npz lacks the key {error}", npz_path) from None
    except (OSError, ValueError) as error:
        raise InputError(f"not a readable .npz file: {error}", npz_path) from None
    image, mask = arrays["imgs"], arrays["gts"]
    if image.dtype != np.uint8 or image.ndim != 3 or mask.shape != image.shape:
        raise InputError(
            f"expected 3D uint8 'imgs' and a same-shape 'gts', got {image.dtype} {image.shape} and "
            f"{mask.shape}",
            npz_path,
        )
    hu = windowed_to_hu(image, slope, intercept).astype(np.float32)
    volume = Volume(
        hu,
        spacing=tuple(arrays["spacing"].tolist()),
        origin=tuple(arrays["origin"].tolist()),
        direction=arrays["direction"].reshape(3, 3),
    )
    return volume, mask > 0


def windowed_npz_to_nifti(
    npz_path: str | os.PathLike[str],
    folder: str | os.PathLike[str],
    slope: float = WINDOW_SLOPE,
    intercept: float = WINDOW_INTERCEPT,
) -> tuple[Path, Path]:
    """Turn an 8-bit windowed CT ``.npz`` (see :func:`read_windowed_npz`) into an HU CT and a
    lesion mask, both NIfTI, with the ``.npz``'s geometry.

    Returns:
        ``(ct_path, mask_path)`` in ``folder``: ``<stem>_ct_hu.nii.gz`` (int16, whole HU) and
        ``<stem>_mask.nii.gz`` (uint8, 1 = lesion).

    Raises:
        InputError: the file is missing, not an ``.npz`` of that layout, or not 8-bit.
    """
    npz_path = Path(npz_path)
    volume, mask = read_windowed_npz(npz_path, slope, intercept)
    folder = Path(folder)
    stem = npz_path.name[: -len(".npz")]
    ct_path = write_volume(
        volume.like(np.round(volume.array).astype(np.int16)), folder / f"{stem}_ct_hu.nii.gz"
    )
    mask_path = write_volume(volume.like(mask.astype(np.uint8)), folder / f"{stem}_mask.nii.gz")
    return ct_path, mask_path
