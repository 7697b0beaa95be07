"""The ``Volume``: a 3D array and its geometry, never separated.

Conventions (the same as SimpleITK/ITK, so files round-trip exactly):

- ``array`` is indexed ``(z, y, x)`` (slice, row, column).
- ``spacing`` (mm), ``origin`` (mm) and the 3x3 ``direction`` are given in ``(x, y, z)`` index order,
  in the LPS physical frame that ITK, DICOM and 3D Slicer's file readers use. ``direction[:, i]`` is the
  physical unit vector of index axis ``i``.
- Results that people read (tumor centres) are reported in RAS millimetres, as 3D Slicer shows them:
  ``RAS = (-L, -P, S)``.

Reading goes through :func:`read_volume`, writing through :func:`write_volume` (atomic: temporary file
in the same folder, then rename).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .files import atomic_output, check_input_file, gzip_size

READABLE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".seg.nrrd", ".nhdr", ".mha", ".mhd")
WRITABLE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".seg.nrrd", ".mha")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass
class Volume:
    """A 3D scalar image with its geometry.

    Attributes:
        array: voxel values, shape ``(z, y, x)``.
        spacing: voxel size in mm, ``(x, y, z)``.
        origin: physical position (LPS, mm) of voxel ``(0, 0, 0)``, ``(x, y, z)``.
        direction: 3x3 direction cosines, column ``i`` is index axis ``i`` (x, y, z) in LPS.
        metadata: string key/value pairs kept from the file header (e.g. ``.seg.nrrd`` segment names).
    """

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"Volume needs a 3D array (z, y, x), got shape {self.array.shape}")
        self.spacing = tuple(float(s) for s in self.spacing)  # type: ignore[assignment]
        self.origin = tuple(float(o) for o in self.origin)  # type: ignore[assignment]
        self.direction = np.asarray(self.direction, dtype=np.float64).reshape(3, 3)
        if min(self.spacing) <= 0:
            raise ValueError(f"spacing must be positive, got {self.spacing}")

    # -- geometry -------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape ``(z, y, x)``."""
        return tuple(self.array.shape)  # type: ignore[return-value]

    @property
    def spacing_zyx(self) -> np.ndarray:
        """Spacing in array order ``(z, y, x)``, mm."""
        return np.asarray(self.spacing[::-1])

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in mL (1 mL = 1000 mm³)."""
        return float(np.prod(self.spacing)) / 1000.0

    def like(self, array: np.ndarray, metadata: dict[str, str] | None = None) -> Volume:
        """A new volume with this geometry and another array of the same shape."""
        if tuple(array.shape) != self.shape:
            raise ValueError(f"array shape {array.shape} differs from volume shape {self.shape}")
        return Volume(array, self.spacing, self.origin, self.direction.copy(), dict(metadata or {}))

    def same_grid(self, other: Volume, tolerance_mm: float = 1e-3) -> bool:
        """True when both volumes sample the same physical grid."""
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, atol=tolerance_mm)
            and np.allclose(self.origin, other.origin, atol=tolerance_mm)
            and np.allclose(self.direction, other.direction, atol=1e-5)
        )

    def index_to_lps(self, index_zyx: Sequence[float] | np.ndarray) -> np.ndarray:
        """Physical LPS position (mm) of array indices; accepts ``(..., 3)`` in ``(z, y, x)``."""
        ijk = np.asarray(index_zyx, dtype=np.float64)[..., ::-1]
        return np.asarray(self.origin) + (ijk * np.asarray(self.spacing)) @ self.direction.T

    def index_to_ras(self, index_zyx: Sequence[float] | np.ndarray) -> np.ndarray:
        """Physical RAS position (mm), as 3D Slicer shows it, of array indices ``(z, y, x)``."""
        return self.index_to_lps(index_zyx) @ LPS_TO_RAS

    def lps_to_index(self, point_lps: Sequence[float] | np.ndarray) -> np.ndarray:
        """Continuous array indices ``(z, y, x)`` of LPS points ``(..., 3)``."""
        offset = np.asarray(point_lps, dtype=np.float64) - np.asarray(self.origin)
        ijk = offset @ np.linalg.inv(self.direction).T / np.asarray(self.spacing)
        return ijk[..., ::-1]

    # -- SimpleITK bridge -----------------------------------------------------------------------
    def to_sitk(self) -> sitk.Image:
        """A SimpleITK image with the same voxels and geometry (metadata copied)."""
        image = sitk.GetImageFromArray(np.ascontiguousarray(self.array))
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(tuple(self.direction.flatten()))
        for key, value in self.metadata.items():
            image.SetMetaData(key, value)
        return image

    @classmethod
    def from_sitk(cls, image: sitk.Image, keep_metadata: bool = True) -> Volume:
        """Wrap a SimpleITK image (3D, scalar)."""
        metadata = {}
        if keep_metadata:
            # Reader-internal keys (ITK_*, NRRD_*) describe the old file, not the data: drop them.
            metadata = {
                key: image.GetMetaData(key)
                for key in image.GetMetaDataKeys()
                if not key.startswith(("ITK_", "NRRD_"))
            }
        return cls(
            sitk.GetArrayFromImage(image),
            image.GetSpacing(),
            image.GetOrigin(),
            np.asarray(image.GetDirection()).reshape(3, 3),
            metadata,
        )


# -- reading ------------------------------------------------------------------------------------
def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(READABLE_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


# Input limits: a header is checked against these before any voxel is read.
MIN_SPACING_MM = 0.01
MAX_SPACING_MM = 100.0
DEFAULT_MAX_IMAGE_MB = 1024
ORTHONORMAL_TOLERANCE = 1e-3


def max_image_bytes() -> int:
    """The most voxel data an input image may hold: ``FREETUMOR_MAX_IMAGE_MB`` (default 1024 MB).

    Reading needs about twice this in memory (the reader's buffer and the array).
    """
    text = os.environ.get("FREETUMOR_MAX_IMAGE_MB", "")
    try:
        megabytes = float(text) if text else DEFAULT_MAX_IMAGE_MB
    except ValueError:
        megabytes = DEFAULT_MAX_IMAGE_MB
    return int(megabytes * (1 << 20))


def _bytes_per_voxel(reader: sitk.ImageReaderBase) -> int:
    size = sitk.Image([1] * 3, reader.GetPixelID()).GetSizeOfPixelComponent()
    return size * reader.GetNumberOfComponents()


def check_geometry(
    spacing: Sequence[float], direction: Sequence[float], path: str | os.PathLike[str] | None
) -> None:
    """Refuse spacing that is not finite or outside 0.01-100 mm, and a direction that is not a
    finite orthonormal matrix.

    Raises:
        InputError: naming the file and the values.
    """
    values = np.asarray(spacing, dtype=np.float64)
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise InputError(f"voxel spacing must be positive and finite, got {tuple(values.tolist())} mm", path)
    if np.any(values < MIN_SPACING_MM) or np.any(values > MAX_SPACING_MM):
        raise InputError(
            f"voxel spacing {tuple(values.tolist())} mm is outside {MIN_SPACING_MM:g}-{MAX_SPACING_MM:g} mm",
            path,
        )
    matrix = np.asarray(direction, dtype=np.float64)
    if matrix.size != 9 or not np.all(np.isfinite(matrix)):
        raise InputError("direction matrix holds NaN or infinite values", path)
    matrix = matrix.reshape(3, 3)
    if not np.allclose(matrix.T @ matrix, np.eye(3), atol=ORTHONORMAL_TOLERANCE):
        raise InputError(
            f"direction matrix {matrix.round(4).tolist()} is not orthonormal (axes must be unit "
            "vectors at right angles)",
            path,
        )


def _check_size(size: Sequence[int], bytes_per_voxel: int, path: Path) -> int:
    voxels = int(np.prod(np.asarray(size, dtype=np.float64)))
    data_bytes = voxels * bytes_per_voxel
    limit = max_image_bytes()
    if data_bytes > limit:
        raise InputError(
            f"header announces {' x '.join(map(str, size))} voxels ({data_bytes / (1 << 20):.0f} MB), "
            f"more than the {limit / (1 << 20):.0f} MB an input may hold (FREETUMOR_MAX_IMAGE_MB)",
            path,
        )
    return data_bytes


def _check_header(path: Path) -> None:
    """Everything that can be checked before the voxels are read: type, size, geometry, file size."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    if reader.GetPixelID() in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64):
        raise InputError("complex voxel values are not supported; give a real-valued image", path)
    if reader.GetDimension() != 3:
        raise InputError(f"not a 3D image (dimension {reader.GetDimension()})", path)
    if reader.GetNumberOfComponents() != 1:
        raise InputError(f"not a scalar image ({reader.GetNumberOfComponents()} components per voxel)", path)
    data_bytes = _check_size(reader.GetSize(), _bytes_per_voxel(reader), path)
    check_geometry(reader.GetSpacing(), reader.GetDirection(), path)
    suffix = _suffix(path)
    if path.name.lower().endswith(".gz"):
        # Decompressed in bounded chunks: a small file that expands to gigabytes stops early.
        expanded = gzip_size(path, limit_bytes=data_bytes + (1 << 20))
        if suffix == ".nii.gz" and expanded < data_bytes:
            raise InputError(
                f"file is truncated ({expanded} bytes of data, the header needs {data_bytes})", path
            )
    elif suffix == ".nii":
        _check_nifti_size(path, data_bytes)


def _read_dicom_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise InputError("no DICOM series found in this folder", folder)
    if len(series) > 1:
        raise InputError(
            f"folder holds {len(series)} DICOM series ({', '.join(series)}); give one series per folder",
            folder,
        )
    files = reader.GetGDCMSeriesFileNames(str(folder), series[0])
    _check_dicom_slices(folder, files)
    reader.SetFileNames(files)
    return reader.Execute()


def _check_dicom_slices(folder: Path, files: Sequence[str]) -> None:
    """Refuse a series with missing or unevenly spaced slices (ITK would average the spacing)."""
    positions = []
    bytes_per_slice = 0
    normal = None
    for name in files:
        slice_reader = sitk.ImageFileReader()
        slice_reader.SetFileName(name)
        slice_reader.ReadImageInformation()
        width, height = slice_reader.GetSize()[:2]
        bytes_per_slice = max(bytes_per_slice, width * height * _bytes_per_voxel(slice_reader))
        if normal is None:
            cosines = [float(v) for v in slice_reader.GetMetaData("0020|0037").split("\\")]
            normal = np.cross(cosines[:3], cosines[3:])
        position = [float(v) for v in slice_reader.GetMetaData("0020|0032").split("\\")]
        positions.append(float(np.dot(normal, position)))
    _check_size((len(files), bytes_per_slice), 1, folder)
    if len(positions) < 2:
        return
    gaps = np.diff(np.sort(positions))
    if np.any(gaps < 1e-3):
        raise InputError("DICOM series holds two slices at the same position", folder)
    if gaps.max() - gaps.min() > max(0.01, 0.01 * float(np.median(gaps))):
        raise InputError(
            f"DICOM series has missing or unevenly spaced slices (gaps {gaps.min():g} to {gaps.max():g} mm); "
            "its geometry would be wrong",
            folder,
        )


def _check_nifti_size(path: Path, data_bytes: int) -> None:
    """ITK zero-fills a truncated uncompressed NIfTI-1 file: compare its size with the header's."""
    import struct

    with open(path, "rb") as handle:
        header = handle.read(348)
    for order in "<>":
        if len(header) == 348 and struct.unpack(order + "i", header[:4])[0] == 348:
            offset = struct.unpack(order + "f", header[108:112])[0]
            expected = int(offset) + data_bytes
            actual = path.stat().st_size
            if actual < expected:
                raise InputError(f"file is truncated ({actual} bytes, the header needs {expected})", path)
            return


def read_volume(path: str | os.PathLike[str]) -> Volume:
    """Read a 3D scalar image: NIfTI, NRRD (also ``.seg.nrrd``), MetaImage or a DICOM series folder.

    The header is checked before any voxel is read: size against :func:`max_image_bytes` (and
    against the file size, or the decompressed size), spacing and direction (:func:`check_geometry`),
    voxel type (no complex values); a DICOM series must have evenly spaced slices.

    Raises:
        InputError: the path is missing, not a regular file or folder, unreadable, corrupt, too large,
            not 3D, not scalar, has bad geometry, or has NaN/inf values.
    """
    path = check_input_file(path, "file", folder_ok=True)
    try:
        if path.is_dir():
            image = _read_dicom_series(path)
        else:
            if path.stat().st_size == 0:
                raise InputError("file is empty", path)
            _check_header(path)
            image = sitk.ReadImage(str(path))
    except InputError:
        raise
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown"
        raise InputError(f"cannot read image (corrupt or unsupported format): {first_line}", path) from None
    except OSError as error:
        raise InputError(f"cannot read image: {error.strerror or error}", path) from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"not a scalar image ({image.GetNumberOfComponentsPerPixel()} components per voxel)",
            path,
        )
    if image.GetDimension() != 3:
        raise InputError(f"not a 3D image (dimension {image.GetDimension()})", path)
    check_geometry(image.GetSpacing(), image.GetDirection(), path)
    # NIfTI header fields are all geometry or dtype, which Volume already carries.
    volume = Volume.from_sitk(image, keep_metadata=_suffix(path) not in (".nii", ".nii.gz"))
    if volume.array.dtype.kind == "c":
        raise InputError("complex voxel values are not supported; give a real-valued image", path)
    if volume.array.dtype.kind == "f" and not np.all(np.isfinite(volume.array)):
        bad = int(np.count_nonzero(~np.isfinite(volume.array)))
        raise InputError(f"image has {bad} NaN or infinite voxel values", path)
    volume.metadata["freetumor:source"] = str(path)
    return volume


# -- writing ------------------------------------------------------------------------------------
def write_volume(volume: Volume, path: str | os.PathLike[str], compress: bool = True) -> Path:
    """Write NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.seg.nrrd``) or ``.mha``, atomically.

    The file appears complete or not at all: data go to a temporary file in the target folder,
    which is then renamed over ``path``. Voxels and dtype are kept exactly, and so is geometry, except
    that NIfTI stores spacing, origin and direction in float32: a NIfTI source round-trips exactly, a
    DICOM or NRRD source written as NIfTI keeps its geometry to float32 precision (use NRRD for more).
    """
    path = Path(path)
    suffix = _suffix(path)
    if suffix not in WRITABLE_SUFFIXES:
        raise InputError(f"cannot write '{suffix}' files; use one of {', '.join(WRITABLE_SUFFIXES)}", path)
    image = volume.to_sitk()
    for key in image.GetMetaDataKeys():  # the project's own bookkeeping is not written out
        if key.startswith("freetumor:"):
            image.EraseMetaData(key)
    with atomic_output(path) as temporary:
        sitk.WriteImage(image, str(temporary), useCompression=compress and suffix != ".nii")
    return path


# -- RAS-ordered view ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Reorientation:
    """How a RAS-ordered array was made from the original one, so it can be undone exactly.

    ``axes`` is the ``np.transpose`` order applied to the original ``(z, y, x)`` array and ``flip``
    says which of the resulting axes were reversed.
    """

    axes: tuple[int, int, int]
    flip: tuple[bool, bool, bool]

    def apply(self, array: np.ndarray) -> np.ndarray:
        out = np.transpose(array, self.axes)
        for axis, flipped in enumerate(self.flip):
            if flipped:
                out = np.flip(out, axis)
        return out

    def undo(self, array: np.ndarray) -> np.ndarray:
        out = array
        for axis, flipped in enumerate(self.flip):
            if flipped:
                out = np.flip(out, axis)
        return np.transpose(out, np.argsort(self.axes))


def ras_view(volume: Volume) -> tuple[Volume, Reorientation]:
    """The same voxels reordered so that index axes ``(x, y, z)`` point towards R, A and S.

    This is the RAS canonical order of NIfTI tools: the array ``(z, y, x)`` then runs
    inferior→superior, posterior→anterior, left→right. Only permutations and flips are used (no
    resampling); an oblique scan is mapped to the nearest such order. The returned volume has the
    matching geometry, so physical positions are unchanged. Undo with :func:`from_ras_view`.
    """
    ras_direction = LPS_TO_RAS @ volume.direction  # columns: index axes x, y, z in RAS
    # Physical RAS axis that each index axis (x, y, z) follows most closely.
    physical_of_index = np.argmax(np.abs(ras_direction), axis=0)
    if len(set(physical_of_index.tolist())) != 3:
        raise InputError("direction matrix is degenerate; cannot reorient", None)
    # New index axis k (x=R, y=A, z=S) comes from old index axis j where physical_of_index[j] == k.
    old_index_of_new = [int(np.where(physical_of_index == k)[0][0]) for k in range(3)]
    # Array axes are reversed index axes: array axis a <-> index axis 2 - a.
    axes = tuple(2 - old_index_of_new[2 - a] for a in range(3))
    flip = tuple(bool(ras_direction[2 - a, old_index_of_new[2 - a]] < 0) for a in range(3))
    reorientation = Reorientation(axes, flip)  # type: ignore[arg-type]
    array = np.ascontiguousarray(reorientation.apply(volume.array))
    spacing = tuple(volume.spacing[j] for j in old_index_of_new)
    direction = volume.direction[:, old_index_of_new].copy()
    origin_index = np.zeros(3)
    for k, j in enumerate(old_index_of_new):
        if flip[2 - k]:
            origin_index[j] = volume.array.shape[2 - j] - 1
    origin = volume.index_to_lps(origin_index[::-1])
    for k in range(3):
        if flip[2 - k]:
            direction[:, k] = -direction[:, k]
    return Volume(array, spacing, tuple(origin), direction, dict(volume.metadata)), reorientation


def from_ras_view(array: np.ndarray, reorientation: Reorientation, original: Volume) -> Volume:
    """Map an array computed on :func:`ras_view`'s output back onto the original grid exactly."""
    return original.like(np.ascontiguousarray(reorientation.undo(array)))


# -- checks -------------------------------------------------------------------------------------
def check_hu(volume: Volume, path: str | os.PathLike[str] | None = None) -> None:
    """Refuse images whose values are not CT Hounsfield units.

    CT of the body holds air (about -1000 HU) or at least fat (about -100 HU); 8-bit windowed
    exports hold 0..255 only, and MR holds no negative values at all.

    Raises:
        InputError: the values look like 8-bit windowed data, MR or another non-CT modality.
    """
    path = path or volume.metadata.get("freetumor:source")
    array = volume.array
    if array.dtype.kind not in "iuf" or array.dtype == np.int8:
        raise InputError(
            f"CT voxels of type {array.dtype} cannot hold Hounsfield units; give int16, int32 or float data",
            path,
        )
    low, high = float(array.min()), float(array.max())
    if array.dtype == np.uint8 or (low >= 0 and high <= 255):
        raise InputError(
            f"values {low:g}..{high:g} look like 8-bit windowed data, not Hounsfield units (HU); "
            "map the window back to HU first",
            path,
        )
    if low >= -50:
        raise InputError(
            f"values {low:g}..{high:g} hold no air or fat: this does not look like CT in "
            "Hounsfield units (MR or another modality?)",
            path,
        )
    if low < -32768 or high > 40000:
        raise InputError(f"values {low:g}..{high:g} are outside any Hounsfield unit range", path)


def read_ct(path: str | os.PathLike[str], allow_non_hu: bool = False) -> Volume:
    """Read a CT in Hounsfield units (see :func:`read_volume`), checking that values are HU.

    With ``allow_non_hu=True`` a non-HU image is accepted with a warning instead of refused.
    """
    volume = read_volume(path)
    try:
        check_hu(volume, path)
    except InputError as error:
        if not allow_non_hu:
            raise
        import warnings

        warnings.warn(f"{error} (accepted because non-HU input was allowed)", stacklevel=2)
    return volume
