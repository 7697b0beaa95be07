"""Tumors in real vessel trees: small branches are taken in (encased), major vessels kept at a margin."""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
import pytest
from scipy import ndimage

from freetumor_core.errors import InputError
from freetumor_core.labels import LabelMap, read_labels
from freetumor_core.synthesis import TumorSpec, placement, synthesize
from freetumor_core.synthesis.placement import SMALL_VESSEL_MM, VESSEL, Placer, _small_vessels, class_table
from freetumor_core.volume import Volume, read_ct

VESSEL_NAMES = {"aorta", "inferior_vena_cava", "portal_vein_and_splenic_vein"}


def _major_by_scipy(vessel: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """The vessel mask's opening by a ball of diameter SMALL_VESSEL_MM, with scipy's exact
    distance transforms (an independent computation of what placement calls major)."""
    radius = SMALL_VESSEL_MM / 2.0
    core = ndimage.distance_transform_edt(vessel, sampling=spacing) > radius
    if not core.any():
        return np.zeros_like(vessel)
    return vessel & (ndimage.distance_transform_edt(~core, sampling=spacing) <= radius)


def _tube_host(spacing=(1.6, 0.78, 0.78)):
    """A box-shaped organ crossed by a 10 mm vessel and nine 2.5 mm branches, on an anisotropic grid."""
    shape = (50, 110, 110)
    z, y, x = np.indices(shape).astype(float) * np.asarray(spacing)[:, None, None, None]
    labels = np.zeros(shape, dtype=np.uint8)
    labels[3:-3, 6:-6, 6:-6] = 5  # liver
    labels[np.hypot(y - 25.0, x - 43.0) <= 5.0] = 64  # a trunk along z, 10 mm wide
    for branch_z in (20.0, 35.0, 50.0):  # thin branches along x, 2.5 mm wide, 15 mm apart
        for branch_y in (45.0, 60.0, 75.0):
            labels[(np.hypot(z - branch_z, y - branch_y) <= 1.25) & (labels == 5)] = 63
    ct = np.where(labels == 5, 100, np.where(labels > 5, 180, -100)).astype(np.int16)
    volume = Volume(ct, spacing[::-1], (0.0, 0.0, 0.0), np.eye(3))
    names = {5: "liver", 63: "inferior_vena_cava", 64: "portal_vein_and_splenic_vein"}
    return volume, LabelMap(volume.like(labels), names)


def test_small_vessels_equal_the_opening_by_scipy():
    _, labels = _tube_host()
    spacing = np.array([1.6, 0.78, 0.78])
    vessel = np.isin(labels.array, (63, 64))
    small = _small_vessels(vessel, spacing)
    np.testing.assert_array_equal(small, vessel & ~_major_by_scipy(vessel, spacing))
    # The 2.5 mm branches are small; the 10 mm trunk is major but for a rim of voxels that no
    # ball on voxel centres covers, and that rim lies within a voxel of the major part.
    assert small[labels.array == 63].all()
    trunk = labels.array == 64
    assert small[trunk].mean() < 0.1
    major = trunk & ~small
    assert ndimage.binary_dilation(major)[trunk].all()


def test_block_by_block_measurement_equals_the_whole_mask(shared_data):
    labels = read_labels(shared_data / "ircadb_p07" / "ircadb1_07_labels.nii.gz")
    spacing = labels.volume.spacing_zyx
    crop = labels.array[60:100, 200:330, 150:280]  # liver with portal and hepatic veins
    table = class_table(labels.names, labels.ids_for("liver"), [], 256)
    vessel = table[crop] == VESSEL
    assert vessel.sum() > 1000
    placer = Placer(np.ascontiguousarray(crop), table, spacing, np.random.default_rng(0))
    # Ask for two overlapping boxes, then everything: each block is measured with its own margin.
    placer._small_vessels(np.array([5, 10, 10]), np.array([20, 60, 50]))
    placer._small_vessels(np.array([15, 40, 30]), np.array([35, 90, 120]))
    blockwise = placer._small_vessels(np.zeros(3, dtype=int), np.asarray(crop.shape))
    np.testing.assert_array_equal(blockwise, _small_vessels(vessel, spacing))
    np.testing.assert_array_equal(blockwise, vessel & ~_major_by_scipy(vessel, spacing))


def test_tumors_encase_thin_branches_and_keep_clear_of_the_trunk():
    ct, labels = _tube_host()
    spacing = ct.spacing_zyx
    major = _major_by_scipy(labels.array == 64, spacing)
    encasing = 0
    for seed in range(12):
        result = synthesize(ct, labels, TumorSpec(organ="liver", diameter_mm=12.0, count=2), seed=seed)
        tumor_id = next(i for i, n in result.labels.names.items() if n == "liver_tumor")
        tumor = result.labels.array == tumor_id
        # At least avoid_margin_mm (3 mm) from the trunk, between voxel centres.
        clearance = ndimage.distance_transform_edt(~major, sampling=spacing)
        assert clearance[tumor].min() >= 3.0 - 1e-6
        # Vessels keep their label and HU everywhere, also inside a tumor.
        vessel = labels.array > 5
        np.testing.assert_array_equal(result.labels.array[vessel], labels.array[vessel])
        np.testing.assert_array_equal(result.ct.array[vessel], ct.array[vessel])
        for record in result.tumors:
            touched = record.extra["vessels_touched"]
            assert set(touched) <= {"inferior_vena_cava"}  # only the thin branch
            if touched:
                encasing += 1
                branch = touched["inferior_vena_cava"]
                assert 0 < branch["max_calibre_mm"] <= SMALL_VESSEL_MM
                # The shape holds the requested volume: painted tumor plus encased branch.
                requested_ml = math.pi / 6 * 12.0**3 / 1000
                voxel_ml = ct.voxel_volume_ml
                assert record.volume_ml + branch["voxels"] * voxel_ml == pytest.approx(
                    requested_ml, abs=0.5 * voxel_ml
                )
    assert encasing >= 6  # the branches cross the organ: many tumors take one in


def test_medium_liver_tumors_fit_among_the_real_vessels_of_ircadb_p07(shared_data):
    folder = shared_data / "ircadb_p07"
    ct = read_ct(folder / "ircadb1_07_ct.nii.gz")
    labels = read_labels(folder / "ircadb1_07_labels.nii.gz")  # names from the JSON sidecar
    spacing = ct.spacing_zyx
    vessel_ids = [i for i, n in labels.names.items() if n in VESSEL_NAMES]
    assert len(vessel_ids) == 3
    spec = TumorSpec(organ="liver", size="medium", count=2)

    # With every vessel voxel kept at the margin (no branch may be taken in), they do not fit.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(placement, "SMALL_VESSEL_MM", 0.0)
        with pytest.raises(InputError, match="cannot hold tumor 1 of 2"):
            synthesize(ct, labels, TumorSpec(organ="liver", diameter_mm=32.0, count=2), seed=0)

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # placed as asked: no shrinking
        result = synthesize(ct, labels, spec, seed=0)
    elapsed_s = time.perf_counter() - start
    assert elapsed_s < 30.0  # about 0.2-0.4 s on 2 cores (docs/synthesis.md)

    tumor_id = next(i for i, n in result.labels.names.items() if n == "liver_tumor")
    tumor = result.labels.array == tumor_id
    low = np.maximum(np.argwhere(tumor).min(axis=0) - 20, 0)
    high = np.argwhere(tumor).max(axis=0) + 21
    box = tuple(slice(a, b) for a, b in zip(low, high, strict=True))
    vessel = np.isin(labels.array[box], vessel_ids)
    major = _major_by_scipy(vessel, spacing)
    # Every tumor voxel is at least avoid_margin_mm (3 mm) from every major vessel voxel.
    clearance = ndimage.distance_transform_edt(~major, sampling=spacing)
    assert clearance[tumor[box]].min() >= 3.0 - 1e-6
    # The vessels the tumors touch (face neighbours of tumor voxels) are small branches only.
    touching = ndimage.binary_dilation(tumor[box]) & vessel
    assert touching.any() and not (touching & major).any()
    # Encased branches keep their label and HU.
    all_vessels = np.isin(labels.array, vessel_ids)
    np.testing.assert_array_equal(result.labels.array[all_vessels], labels.array[all_vessels])
    np.testing.assert_array_equal(result.ct.array[all_vessels], ct.array[all_vessels])

    touched_names = {labels.names[int(i)] for i in np.unique(labels.array[box][touching])}
    assert any(record.extra["vessels_touched"] for record in result.tumors)  # branches taken in
    for record in result.tumors:
        assert 20.0 <= record.extra["requested_diameter_mm"] <= 40.0
        touched = record.extra["vessels_touched"]
        assert set(touched) <= touched_names
        for entry in touched.values():
            assert entry["voxels"] > 0
            assert 0 < entry["max_calibre_mm"] <= SMALL_VESSEL_MM
