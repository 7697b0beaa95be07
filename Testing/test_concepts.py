"""One definition per concept: what a lesion label is, what one lesion is, the DeepLesion 8-bit
window, and a reader-study case on a host that already holds a real tumor."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from freetumor_core import Volume, read_ct, read_labels, totalsegmentator_names, write_volume
from freetumor_core.lesions import MIN_LESION_ML, is_lesion_label, split_lesions
from freetumor_core.render import TUMOR_RGB, compose_axial_rgb
from freetumor_core.synthesis.placement import is_avoided

REPO = Path(__file__).resolve().parents[1]


def _realism_report():
    from freetumor_core import realism

    return realism


# -- lesion labels ------------------------------------------------------------------------------
LESIONS = ("liver_tumor", "kidney_cyst", "tumor", "Lesion 2", "livertumor01", "lung_nodules",
           "pancreatic mass", "liver_metastases", "adrenal_tumour", "renal_neoplasm")  # fmt: skip
NOT_LESIONS = ("liver", "cystic_duct", "kidney_left", "massive", "gallbladder", "label_7")
VESSELS = ("portal_vein", "hepatic_vessels", "aorta")


def test_lesion_labels():
    assert all(is_lesion_label(name) for name in LESIONS)
    assert not any(is_lesion_label(name) for name in NOT_LESIONS + VESSELS)
    # The only lesions among the TotalSegmentator classes are its kidney cysts.
    found = [name for name in totalsegmentator_names().values() if is_lesion_label(name)]
    assert found == ["kidney_cyst_left", "kidney_cyst_right"]


def test_placement_snapshot_and_slicer_agree_on_lesions():
    import slicer

    sys.path.insert(0, str(REPO / "FreeTumorSlicer"))
    from FreeTumorLib import nodes

    from freetumor_core import LabelMap

    # Placement keeps its margin from every lesion label and from vessels (which are not lesions).
    assert all(is_avoided(name) for name in LESIONS + VESSELS)
    assert not any(is_avoided(name) for name in NOT_LESIONS)

    # The snapshot paints a kidney cyst in the tumor colour, as Slicer does.
    labels = np.zeros((40, 40), dtype=np.uint8)
    labels[5:20, 5:20], labels[22:35, 22:35] = 1, 2
    names = {1: "kidney_left", 2: "kidney_cyst"}
    rgb = compose_axial_rgb(np.full((40, 40), 40.0, np.float32), labels, names, (-160.0, 240.0))
    tumor_like = np.abs(rgb.astype(float) - np.asarray(TUMOR_RGB)).sum(axis=-1) < 60
    assert tumor_like[22:35, 22:35].any() and not tumor_like[5:20, 5:20].any()

    volume = Volume(labels[None].repeat(3, axis=0), (1.0, 1.0, 1.0))
    scene = slicer.vtkMRMLScene()
    reference = nodes.add_volume_node(scene, volume.like(np.zeros(volume.shape, np.int16)), "ct")
    segmentation = nodes.add_segmentation_node(scene, LabelMap(volume, names), "organs", reference=reference)
    colours = {}
    segments = segmentation.GetSegmentation()
    for index in range(segments.GetNumberOfSegments()):
        segment = segments.GetNthSegment(index)
        colours[segment.GetName()] = tuple(segment.GetColor())
    assert colours["kidney_cyst"] == pytest.approx(nodes.TUMOR_COLOR)
    assert colours["kidney_left"] != pytest.approx(nodes.TUMOR_COLOR)
    scene.Clear(True)


# -- one lesion ---------------------------------------------------------------------------------
def _pieces() -> np.ndarray:
    """Two 4³ cubes touching only at a corner (26- but not 6-connected), and a 2³ speck."""
    mask = np.zeros((20, 20, 20), dtype=bool)
    mask[2:6, 2:6, 2:6] = True
    mask[6:10, 6:10, 6:9] = True  # 48 voxels, corner to corner with the first
    mask[15:17, 15:17, 15:17] = True
    return mask


def test_split_lesions_face_connected_with_a_minimum_volume():
    mask = _pieces()
    # 1 mm voxels: the cubes are 0.064 and 0.048 mL, below a 5 mm ball (0.0654 mL).
    assert split_lesions(mask, (1.0, 1.0, 1.0)) == []
    lesions = split_lesions(mask, (1.5, 1.5, 1.5))  # 0.216, 0.162 and 0.027 mL
    assert [int(lesion.sum()) for lesion in lesions] == [64, 48], (
        "face-connected, largest first, speck dropped"
    )
    assert MIN_LESION_ML == pytest.approx(np.pi / 6 * 0.125)
    assert len(split_lesions(mask, (1.5, 1.5, 1.5), min_ml=0.0)) == 3


def test_reader_study_and_realism_report_count_lesions_alike(tmp_path):
    from freetumor_core.turing.datalist import DatalistEntry
    from freetumor_core.turing.realcases import read_real_lesions

    mask = _pieces()
    ct = Volume(np.full(mask.shape, 40, np.int16), (1.5, 1.5, 1.5))
    ct.array[mask], ct.array[0] = 10, -1000  # a slice of air: a CT in HU
    ct_path = write_volume(ct, tmp_path / "ct.nii.gz")
    kits = tmp_path / "kits23_masks"
    label_path = write_volume(ct.like(mask.astype(np.uint8) * 2), kits / "case_00001_segmentation.nii.gz")
    entry = DatalistEntry(image=ct_path, label=label_path, organ="kidney", tumor_label=2, source="case 1")
    study = [lesion.record.volume_ml for lesion in read_real_lesions(entry)]
    report = [float(lesion.mask.sum()) * 1.5**3 / 1000 for lesion in _realism_report()._kits(tmp_path)]
    assert study == pytest.approx([0.216, 0.162])
    assert report == pytest.approx(study)


# -- the DeepLesion window ----------------------------------------------------------------------
def test_one_deeplesion_window(tmp_path):
    from freetumor_core.turing.realcases import WINDOW_INTERCEPT, WINDOW_SLOPE, windowed_npz_to_nifti

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 6, 5), dtype=np.uint8)
    gts = np.zeros(images.shape, np.uint8)
    gts[1:3, 2:4, 1:4] = 1
    folder = tmp_path / "deeplesion_medsam2"
    folder.mkdir()
    direction = np.array([0, 1, 0, 1, 0, 0, 0, 0, -1], dtype=np.float64)
    np.savez(folder / "CT_Lesion_case.npz", imgs=images, gts=gts, spacing=np.array([0.8, 0.7, 5.0]),
             direction=direction, origin=np.array([1.0, 2.0, 3.0]))  # fmt: skip
    (lesion,) = _realism_report()._deeplesion_npz(tmp_path)
    expected_hu = (images.astype(np.float64) - WINDOW_INTERCEPT) / WINDOW_SLOPE
    assert lesion.ct.array == pytest.approx(expected_hu, abs=1e-3)
    assert (lesion.mask == (gts > 0)).all()
    ct_path, _ = windowed_npz_to_nifti(folder / "CT_Lesion_case.npz", tmp_path / "out")
    written = read_ct(ct_path, allow_non_hu=True)
    assert (written.array == np.round(expected_hu)).all()
    assert written.origin == pytest.approx(lesion.ct.origin) and written.spacing == pytest.approx(
        (0.8, 0.7, 5.0)
    )


# -- a synthetic case on a host with a real tumor -----------------------------------------------
def test_synthetic_case_holds_only_the_new_tumor(shared_data, tmp_path):
    from freetumor_core.records import TumorRecord
    from freetumor_core.turing.build import StudyCase, synthetic_cases
    from freetumor_core.turing.cases import CaseFormat
    from freetumor_core.turing.datalist import read_datalist

    folder = shared_data / "ircadb_liver_tumor"
    # IRCADb 17: 1 liver, 2 liver tumour (two real tumours, 164 mL), 3 intrahepatic veins.
    labels_path = tmp_path / "ircadb1_17_labels.nii.gz"
    labels_path.symlink_to(folder / "ircadb1_17_labels.nii.gz")
    (tmp_path / "ircadb1_17_labels.json").write_text(
        json.dumps({"labels": {"1": "liver", "2": "liver_tumor", "3": "hepatic_vessels"}})
    )
    datalist = tmp_path / "hosts.json"
    host = {"image": str(folder / "ircadb1_17_ct.nii.gz"), "label": str(labels_path), "organ": "liver"}
    datalist.write_text(json.dumps({"training": [host]}))
    target_record = TumorRecord("liver", (0.0, 0.0, 0.0), 15.0, 1.77, 60.0, -40.0, "real")
    target = StudyCase("real", "liver", None, None, [target_record], "target")  # only organ and size are read
    rng = np.random.default_rng(0)
    (case,) = synthetic_cases(read_datalist(datalist), 1, [target], 3, rng, CaseFormat())

    (record,) = case.tumors
    ct = read_ct(folder / "ircadb1_17_ct.nii.gz")
    host_labels = read_labels(labels_path)
    assert record.label_id == 2, "the synthetic tumor shares the host's liver_tumor label"
    assert case.mask.sum() * ct.voxel_volume_ml == pytest.approx(record.volume_ml)
    assert record.volume_ml < 5.0
    # Where the case's crop lies in the host: its origin is a host voxel.
    low = np.rint(ct.lps_to_index(np.asarray(case.ct.origin))).astype(int)
    box = tuple(slice(a, a + n) for a, n in zip(low, case.ct.shape, strict=True))
    real = host_labels.array[box] == 2
    assert real.any(), "the crop reaches the real tumors: the test must see them"
    assert not (case.mask & real).any(), "the real tumor is not the case's tumor"
    assert (case.ct.array[real] == ct.array[box][real]).all(), "the real tumor stays in the image as it was"
