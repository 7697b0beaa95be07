"""Label maps: names, organ selection, alignment onto the CT grid, and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from freetumor_core import InputError, Volume, align_to, read_ct, read_labels, write_volume
from freetumor_core.labels import LabelMap, read_name_map, sidecar_path


def test_totalsegmentator_names_and_volumes(shared_data):
    labels = read_labels(shared_data / "totalseg_example/example_seg_fast_force_split.nii.gz")
    volumes = labels.volumes_ml()
    expected = json.loads((shared_data / "verified_stats.json").read_text())[
        "totalseg_example/example_seg_fast_force_split.nii.gz"
    ]["labels"]
    for key, stats in expected.items():
        assert volumes[key.split(":", 1)[1]] == pytest.approx(stats["mL"], abs=0.01)
    assert volumes["liver"] == pytest.approx(1125.68, abs=0.01)


def test_kidney_selects_both_kidneys(shared_data):
    labels = read_labels(shared_data / "totalseg_example/example_seg_fast_force_split.nii.gz")
    both = labels.mask("kidney")
    assert both.sum() == labels.mask("kidney_left").sum() + labels.mask("kidney_right").sum()
    assert labels.mask("Kidney Left").sum() == labels.mask("kidney_left").sum()


def test_json_name_map_names_other_label_maps(shared_data, tmp_path):
    name_map = tmp_path / "names.json"
    name_map.write_text(json.dumps({"1": "liver", "2": "liver_tumor", "3": "hepatic_vessels"}))
    labels = read_labels(shared_data / "ircadb_liver_tumor/ircadb1_17_labels.nii.gz", name_map)
    volumes = labels.volumes_ml()
    assert sum(volumes.values()) == pytest.approx(1860.6, abs=1.0)
    assert volumes["liver_tumor"] == pytest.approx(78.6 + 85.6, abs=1.0)


def test_sidecar_names_round_trip(tmp_path, phantom):
    _, labels = phantom
    path = labels.save(tmp_path / "labels.nii.gz")
    assert sidecar_path(path).name == "labels.json"
    again = read_labels(path)
    assert again.present() == labels.present()
    assert again.volumes_ml() == pytest.approx(labels.volumes_ml())


def test_mask_on_other_grid_is_resampled_with_warning(shared_data):
    ct = read_ct(shared_data / "totalseg_example/example_ct_dicom")
    seg = read_labels(shared_data / "totalseg_example/example_seg_dicom.nii.gz")
    with pytest.warns(UserWarning, match="resampled onto the CT grid"):
        aligned = align_to(seg, ct)
    assert aligned.volume.same_grid(ct)
    # Same physical grid with a y flip: nearest neighbour gives exactly the flipped array.
    assert np.array_equal(aligned.array, seg.array[:, ::-1, :])
    assert aligned.volumes_ml()["liver"] == pytest.approx(699.4, abs=0.1)


def test_coarser_mask_is_resampled_onto_finer_ct(shared_data, tmp_path):
    ct = read_ct(shared_data / "totalseg_example/example_ct_dicom")
    seg = read_labels(shared_data / "totalseg_example/example_seg_dicom.nii.gz")
    coarse = LabelMap(
        Volume(
            seg.array[:, ::2, ::2].copy(),
            (seg.volume.spacing[0] * 2, seg.volume.spacing[1] * 2, 2.0),
            seg.volume.origin,
            seg.volume.direction,
        ),
        seg.names,
    )
    with pytest.warns(UserWarning):
        aligned = align_to(coarse, ct)
    assert aligned.volumes_ml()["liver"] == pytest.approx(699.4, rel=0.05)


def test_mask_outside_the_ct_is_refused(shared_data, tmp_path):
    ct = read_ct(shared_data / "dcmqi_ct3slice/ct-3slice")
    labels = read_labels(shared_data / "dcmqi_ct3slice/liver_seg.nrrd", {1: "liver"})
    moved = labels.volume.like(labels.array)
    moved.origin = (5000.0, 5000.0, 5000.0)
    path = write_volume(moved, tmp_path / "far_away.nrrd")
    with pytest.raises(InputError, match="does not overlap the CT") as error:
        align_to(read_labels(path, {1: "liver"}), ct)
    assert "far_away.nrrd" in str(error.value)


def test_empty_and_unknown_organs(phantom):
    _, labels = phantom
    with pytest.raises(InputError, match="no label named 'brainstem'"):
        labels.mask("brainstem")
    with pytest.raises(InputError, match="organ mask 'heart' is empty"):
        labels.mask("heart")


def test_non_integer_label_map_is_refused(tmp_path):
    path = write_volume(Volume(np.full((3, 3, 3), 0.5, dtype=np.float32)), tmp_path / "soft.nii.gz")
    with pytest.raises(InputError, match="non-integer"):
        read_labels(path)


def test_bad_name_maps(tmp_path):
    bad = tmp_path / "names.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        read_name_map(bad)
    bad.write_text('{"liver": 1}')
    with pytest.raises(InputError, match="integer label ids"):
        read_name_map(bad)
