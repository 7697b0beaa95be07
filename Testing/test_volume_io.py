"""Volume reading and writing on the real CTs: every format round-trips with exact geometry."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from freetumor_core import InputError, Volume, from_ras_view, ras_view, read_ct, read_volume, write_volume
from freetumor_core.labels import read_labels

REAL_FILES = [
    "totalseg_example/example_ct.nii.gz",
    "totalseg_example/example_seg_fast_force_split.nii.gz",
    "totalseg_example/example_ct_dicom",
    "totalseg_example/example_seg_dicom.nii.gz",
    "dcmqi_ct3slice/liver_spine_seg.nrrd",
    "dcmqi_ct3slice/heart_seg.nrrd",
    "dcmqi_ct3slice/ct-3slice",
    "deeplesion_medsam2/000015_01_01_103-115_ct_hu.nii.gz",
    "deeplesion_medsam2/000015_01_01_103-115_lesion_mask_DERIVED.nii.gz",
    "ircadb_liver_tumor/ircadb1_17_labels.nii.gz",
]


def assert_same_volume(a: Volume, b: Volume, float32: bool = False) -> None:
    """Voxels and dtype equal; geometry equal to double precision, or float32 (what NIfTI stores)."""
    assert a.array.dtype == b.array.dtype
    assert np.array_equal(a.array, b.array)
    if float32:
        assert np.array_equal(np.float32(a.spacing), np.float32(b.spacing))
        assert np.allclose(a.origin, b.origin, rtol=1e-6, atol=1e-4)
        assert np.allclose(a.direction, b.direction, atol=1e-6)
    else:
        # Exact up to the last bits of a double (NRRD stores spacing x direction as one vector).
        assert np.allclose(a.spacing, b.spacing, rtol=1e-12, atol=0)
        assert np.allclose(a.origin, b.origin, rtol=1e-12, atol=1e-12)
        assert np.allclose(a.direction, b.direction, rtol=0, atol=1e-12)


@pytest.mark.parametrize("relative", REAL_FILES)
@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha", ".nii"])
def test_real_files_round_trip_exactly(shared_data, tmp_path, relative, suffix):
    original = read_volume(shared_data / relative)
    written = write_volume(original, tmp_path / f"copy{suffix}")
    # NIfTI keeps geometry in float32: exact from NIfTI sources, float32-exact from the others.
    from_nifti = ".nii" in relative
    assert_same_volume(original, read_volume(written), float32=suffix.startswith(".nii") and not from_nifti)
    # SimpleITK reads our file with the very same geometry the source file had.
    reference = sitk.ReadImage(str(written))
    assert np.allclose(reference.GetSpacing(), original.spacing, rtol=1e-6)
    assert np.allclose(reference.GetOrigin(), original.origin, rtol=1e-6, atol=1e-4)


def test_ircadb_ct_round_trips_with_geometry(shared_data, tmp_path):
    ct = read_ct(shared_data / "ircadb_liver_tumor/ircadb1_17_ct.nii.gz")
    assert ct.shape == (119, 512, 512)
    assert ct.spacing[2] == pytest.approx(1.6)
    assert_same_volume(ct, read_volume(write_volume(ct, tmp_path / "ct.nii.gz")))


def test_dicom_series_matches_its_segmentation_grid(shared_data):
    ct = read_ct(shared_data / "totalseg_example/example_ct_dicom")
    assert ct.shape == (20, 512, 512)
    assert ct.spacing == pytest.approx((0.9765625, 0.9765625, 2.0))
    seg = read_volume(shared_data / "totalseg_example/example_seg_dicom.nii.gz")
    # The data README: same physical grid, with a flipped y direction in the NIfTI.
    assert np.allclose(np.abs(ct.direction), np.abs(seg.direction))
    assert not ct.same_grid(seg)


def test_label_maps_stay_integer(shared_data, tmp_path):
    labels = read_labels(shared_data / "dcmqi_ct3slice/liver_spine_seg.nrrd", {1: "liver", 2: "spine"})
    assert labels.array.dtype.kind in "iu"
    path = labels.save(tmp_path / "labels.nrrd")
    again = read_labels(path)
    assert again.array.dtype == labels.array.dtype
    assert again.names == {1: "liver", 2: "spine"}
    assert again.volumes_ml()["liver"] == pytest.approx(70.4, abs=0.1)


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path, phantom):
    ct, _ = phantom
    target = tmp_path / "ct.nii.gz"
    target.write_bytes(b"old content")

    class Boom(Exception):
        pass

    broken = ct.like(ct.array)
    broken.to_sitk = lambda: (_ for _ in ()).throw(Boom())  # the write fails before renaming
    with pytest.raises(Boom):
        write_volume(broken, target)
    assert target.read_bytes() == b"old content"
    write_volume(ct, target)
    assert [p.name for p in tmp_path.iterdir()] == ["ct.nii.gz"]


def test_seg_nrrd_segment_names_are_read(tmp_path):
    array = np.zeros((4, 5, 6), dtype=np.uint8)
    array[1, 2, 3] = 3
    volume = Volume(
        array,
        metadata={"Segment0_Name": "liver tumor", "Segment0_LabelValue": "3", "Segment0_ID": "Segment_1"},
    )
    path = write_volume(volume, tmp_path / "tumor.seg.nrrd")
    labels = read_labels(path)
    assert labels.names == {3: "liver_tumor"}


def test_ras_view_is_exact_and_reversible(shared_data):
    ct = read_volume(shared_data / "deeplesion_medsam2/000015_01_01_103-115_ct_hu.nii.gz")
    view, how = ras_view(ct)
    # Index axes now point to R, A, S.
    ras_direction = np.diag([-1.0, -1.0, 1.0]) @ view.direction
    assert np.allclose(np.abs(ras_direction), np.eye(3))
    assert np.all(np.diag(ras_direction) > 0)
    # The same physical point holds the same value in both views.
    index = np.array([4, 100, 300])
    original_index = np.round(ct.lps_to_index(view.index_to_lps(index))).astype(int)
    assert view.array[tuple(index)] == ct.array[tuple(original_index)]
    # SimpleITK agrees on the canonical orientation.
    oriented = sitk.DICOMOrient(ct.to_sitk(), "RAS")
    assert np.array_equal(sitk.GetArrayFromImage(oriented), view.array)
    back = from_ras_view(view.array, how, ct)
    assert_same_volume(back, ct)


def test_index_and_physical_coordinates_agree_with_simpleitk(shared_data):
    ct = read_volume(shared_data / "totalseg_example/example_seg_dicom.nii.gz")
    image = ct.to_sitk()
    index_zyx = (7, 120, 333)
    expected = image.TransformIndexToPhysicalPoint(index_zyx[::-1])
    assert np.allclose(ct.index_to_lps(index_zyx), expected)
    assert np.allclose(ct.lps_to_index(expected), index_zyx)
    assert np.allclose(ct.index_to_ras(index_zyx), [-expected[0], -expected[1], expected[2]])


# -- bad input ------------------------------------------------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="file not found") as error:
        read_volume(tmp_path / "nope.nii.gz")
    assert "nope.nii.gz" in str(error.value)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd"])
def test_truncated_files_are_refused(tmp_path, phantom, suffix):
    ct, _ = phantom
    good = write_volume(ct, tmp_path / f"good{suffix}", compress=False)
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    with pytest.raises(InputError, match=r"truncated|corrupt|cannot read") as error:
        read_volume(bad)
    assert str(bad) in str(error.value)


def test_garbage_and_empty_files(tmp_path):
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(InputError, match=r"garbage\.nii\.gz"):
        read_volume(garbage)
    empty = tmp_path / "empty.nrrd"
    empty.touch()
    with pytest.raises(InputError, match="empty"):
        read_volume(empty)


def test_not_3d_and_not_scalar(tmp_path):
    flat = tmp_path / "flat.nii.gz"
    sitk.WriteImage(sitk.Image(16, 16, sitk.sitkInt16), str(flat))
    with pytest.raises(InputError, match="not a 3D image"):
        read_volume(flat)
    vector = tmp_path / "vector.nii.gz"
    sitk.WriteImage(sitk.Image([8, 8, 8], sitk.sitkVectorFloat32, 3), str(vector))
    with pytest.raises(InputError, match="not a scalar image"):
        read_volume(vector)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])  # ITK's NIfTI reader turns NaN into 0 itself
def test_nan_values_are_refused(tmp_path, suffix):
    array = np.full((4, 4, 4), -1000.0, dtype=np.float32)
    array[1, 1, 1] = np.nan
    array[2, 2, 2] = np.inf
    path = write_volume(Volume(array), tmp_path / f"nan{suffix}")
    with pytest.raises(InputError, match="2 NaN or infinite"):
        read_volume(path)


def test_windowed_8bit_data_is_not_hu(shared_data, tmp_path):
    data = np.load(shared_data / "deeplesion_medsam2/CT_Lesion_000015_01_01_103-115.npz", allow_pickle=False)
    path = write_volume(Volume(data["imgs"]), tmp_path / "windowed.nii.gz")
    with pytest.raises(InputError, match="8-bit windowed"):
        read_ct(path)
    with pytest.warns(UserWarning, match="8-bit windowed"):
        read_ct(path, allow_non_hu=True)


def test_mr_like_values_are_not_hu(tmp_path):
    array = np.random.default_rng(0).integers(0, 1800, size=(8, 8, 8)).astype(np.int16)
    path = write_volume(Volume(array), tmp_path / "mr.nii.gz")
    with pytest.raises(InputError, match="no air or fat"):
        read_ct(path)
