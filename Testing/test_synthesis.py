"""Tumor synthesis: placement, size, geometry, seeds, contrast, noise, errors (phantom and real CTs)."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from freetumor_core import InputError, LabelMap, TumorSpec, Volume, synthesize
from freetumor_core.phantom import make_phantom
from freetumor_core.records import SIZE_CLASSES_MM
from freetumor_core.synthesis import shapes
from freetumor_core.synthesis.appearance import (
    APPEARANCE,
    MAX_CONTRAST_HU,
    MIN_CONTRAST_HU,
    SOLID_FLOOR_HU,
    Look,
    difference_map,
    noise_sd_hu,
)
from freetumor_core.synthesis.shapes import _connected_level_set, _outside_distance_mm, make_shape

LIVER_ID = 5  # TotalSegmentator id of the liver, as in the phantom


def tumor_mask(result, organ_name: str = "liver") -> np.ndarray:
    ids = [i for i, name in result.labels.names.items() if name == f"{organ_name}_tumor"]
    assert len(ids) == 1
    return result.labels.array == ids[0]


def contrast_interval_hu(organ: str, host_hu: float) -> tuple[float, float]:
    """The contrasts (HU) the organ's tumor fractions allow against a host organ at ``host_hu``."""
    ends = [
        max(float(np.clip(host_hu * (f - 1.0), -MAX_CONTRAST_HU, -MIN_CONTRAST_HU)), SOLID_FLOOR_HU - host_hu)
        for f in APPEARANCE[organ].tumor_fraction
    ]
    return min(ends), max(ends)


def assert_contrast_follows_host(record, organ: str) -> None:
    """Measured contrast within the organ's fractions of the measured surrounding HU, as targeted."""
    host_hu = record.mean_hu - record.contrast_hu  # the shell the engine calibrates against
    low, high = contrast_interval_hu(organ, host_hu)
    # Integer HU, and the soft edge's last voxel reaching the surrounding shell, move it a little
    # (a few percent for the strong contrasts of the enhanced kidney).
    target = record.extra["target_contrast_hu"]
    tolerance = max(3.0, 0.05 * abs(target))
    assert low - tolerance <= record.contrast_hu <= high + tolerance, (record.contrast_hu, host_hu)
    assert record.contrast_hu == pytest.approx(target, abs=tolerance)
    assert record.mean_hu >= SOLID_FLOOR_HU - 3.0


def crop_around(mask: np.ndarray, pad: int) -> tuple[slice, ...]:
    where = np.argwhere(mask)
    low = np.maximum(where.min(axis=0) - pad, 0)
    high = np.minimum(where.max(axis=0) + pad + 1, mask.shape)
    return tuple(slice(a, b) for a, b in zip(low, high, strict=True))


def distance_from(structure: np.ndarray, spacing_zyx: np.ndarray) -> np.ndarray:
    """Distance (mm) of every voxel to the nearest voxel of ``structure``."""
    return ndimage.distance_transform_edt(~structure, sampling=spacing_zyx)


@pytest.fixture(scope="module")
def liver_result(phantom):
    ct, labels = phantom
    spec = TumorSpec(organ="liver", size="medium", count=3, margin_mm=4.0, avoid_margin_mm=5.0)
    return synthesize(ct, labels, spec, seed=11)


def test_tumors_inside_organ_keep_margins(phantom, liver_result):
    ct, labels = phantom
    tumors = tumor_mask(liver_result)
    assert len(liver_result.tumors) == 3
    organ = labels.array == LIVER_ID
    assert organ[tumors].all(), "a tumor voxel lies outside the liver"
    box = crop_around(organ, 12)
    spacing = ct.spacing_zyx
    # Distance of each tumor voxel to the nearest non-liver voxel: at least the 4 mm margin.
    depth = distance_from(~organ[box], spacing)
    assert depth[tumors[box]].min() >= 4.0
    vessels = np.isin(labels.array[box], labels.ids_for("vessels"))
    assert distance_from(vessels, spacing)[tumors[box]].min() >= 5.0
    # Tumors do not overlap or touch: three separate components, each at least the margin apart.
    components, count = ndimage.label(tumors[box])
    assert count == 3
    first = distance_from(components == 1, spacing)
    assert first[(components > 1)].min() >= 4.0


def test_records_agree_with_label_map(phantom, liver_result):
    ct, _ = phantom
    tumors = tumor_mask(liver_result)
    total_ml = tumors.sum() * ct.voxel_volume_ml
    assert sum(r.volume_ml for r in liver_result.tumors) == pytest.approx(total_ml, rel=1e-6)
    components, _ = ndimage.label(tumors)
    for record in liver_result.tumors:
        centre = ct.lps_to_index(np.asarray(record.centre_ras_mm) * [-1, -1, 1])
        component = components[tuple(np.round(centre).astype(int))]
        assert component > 0, "record centre is not inside a tumor"
        volume_ml = (components == component).sum() * ct.voxel_volume_ml
        assert record.volume_ml == pytest.approx(volume_ml, rel=1e-6)
        assert record.organ == "liver" and record.engine == "handcrafted"
        values = liver_result.ct.array[components == component]
        assert record.mean_hu == pytest.approx(values.mean(), abs=1e-3)


def test_original_labels_kept_and_tumor_label_added(phantom, liver_result):
    _, labels = phantom
    tumors = tumor_mask(liver_result)
    assert np.array_equal(liver_result.labels.array[~tumors], labels.array[~tumors])
    tumor_id = liver_result.tumors[0].label_id
    assert liver_result.labels.names[tumor_id] == "liver_tumor"
    assert tumor_id not in labels.names and tumor_id not in np.unique(labels.array)


def test_output_geometry_equals_input(phantom, liver_result):
    ct, labels = phantom
    for output, source in ((liver_result.ct, ct), (liver_result.labels.volume, labels.volume)):
        assert output.same_grid(source, tolerance_mm=0.0)
        assert output.array.dtype == source.array.dtype
    assert not np.shares_memory(liver_result.ct.array, ct.array)


@pytest.mark.parametrize("size", list(SIZE_CLASSES_MM))
def test_size_classes_give_requested_diameters(phantom, size):
    ct, labels = phantom
    # Two large tumors (up to 80 mm each) need not fit in the phantom's liver together, and one
    # fits only up to about 75 mm (depending on its shape): this seed draws one of 67 mm.
    count, seed = (1, 2) if size == "large" else (2, 3)
    result = synthesize(ct, labels, TumorSpec(organ="liver", size=size, count=count), seed=seed)
    low, high = SIZE_CLASSES_MM[size]
    voxel_mm3 = float(np.prod(ct.spacing))
    for record in result.tumors:
        requested = record.extra["requested_diameter_mm"]
        assert low <= requested <= high
        # Volume within half a voxel of the request (the record rounds the request to 1 µm).
        requested_mm3 = np.pi / 6 * requested**3
        assert abs(record.volume_ml * 1000 - requested_mm3) <= 0.5 * voxel_mm3 + 1e-3 * requested_mm3
        assert record.diameter_mm == pytest.approx(requested, rel=0.02)


def test_explicit_diameter_on_real_ct(shared_data):
    from freetumor_core import read_ct, read_labels

    folder = shared_data / "totalseg_example"
    ct = read_ct(folder / "example_ct.nii.gz")
    labels = read_labels(folder / "example_seg_fast_force_split.nii.gz")
    result = synthesize(ct, labels, TumorSpec(organ="liver", diameter_mm=25.0, count=2), seed=5)
    for record in result.tumors:
        # 3 mm voxels: the volume is exact to half a 27 mm³ voxel.
        assert record.diameter_mm == pytest.approx(25.0, rel=0.01)
        # A low-enhancement scan (liver about 44 HU): the tumors are darker, but not below water.
        assert_contrast_follows_host(record, "liver")
        assert -0.9 * 44.0 <= record.contrast_hu <= -MIN_CONTRAST_HU + 3.0
    assert tumor_mask(result).sum() * ct.voxel_volume_ml == pytest.approx(
        sum(r.volume_ml for r in result.tumors)
    )


def test_anisotropic_five_mm_slices():
    fine_ct, fine_labels = make_phantom(seed=1, spacing_mm=2.5)
    ct = Volume(np.ascontiguousarray(fine_ct.array[::2]), (2.5, 2.5, 5.0), fine_ct.origin)
    labels = LabelMap(ct.like(np.ascontiguousarray(fine_labels.array[::2])), dict(fine_labels.names))
    result = synthesize(
        ct, labels, TumorSpec(organ="liver", diameter_mm=30.0, count=2, margin_mm=5.0), seed=2
    )
    tumors = tumor_mask(result)
    organ = labels.array == LIVER_ID
    assert organ[tumors].all()
    box = crop_around(organ, 4)
    assert distance_from(~organ[box], ct.spacing_zyx)[tumors[box]].min() >= 5.0
    for record in result.tumors:
        assert record.diameter_mm == pytest.approx(30.0, rel=0.02)
    # A 30 mm tumor on 5 mm slices spans about six slices, not one.
    components, _ = ndimage.label(tumors)
    for component in range(1, 3):
        slices = np.unique(np.argwhere(components == component)[:, 0])
        assert 4 <= len(slices) <= 10


@pytest.mark.parametrize("spacing_zyx_mm", [(1.5, 1.5, 1.5), (5.0, 2.5, 2.5), (1.6, 0.74, 0.74)])
def test_rough_shapes_are_one_body_of_exact_volume(spacing_zyx_mm):
    """Strongly deformed and lobulated shapes: one face-connected body without cavities, the
    requested voxel count, a distance estimate that agrees with the mask, a true depth bound."""
    spacing = np.asarray(spacing_zyx_mm)
    rng = np.random.default_rng(4)
    for diameter_mm in (6.0, 18.0, 34.0):
        for _ in range(6):
            shape = make_shape(
                diameter_mm, spacing, rng, irregularity=1.0, lobulation=rng.uniform(0, 1), pad_mm=6.0
            )
            mask = shape.mask
            target = max(1, round(np.pi / 6 * diameter_mm**3 / spacing.prod()))
            assert mask.sum() == target
            assert ndimage.label(mask)[1] == 1  # face connectivity, as components are counted
            assert not (ndimage.binary_fill_holes(mask) & ~mask).any()
            # The margin zones are exact distances from this mask, so the estimate must agree.
            exact = ndimage.distance_transform_edt(~mask, sampling=spacing)
            reach = exact <= shape.pad_mm
            assert np.allclose(shape.outside_mm[reach], exact[reach], atol=1e-4)
            # The mask is known before the distance estimate (made only to paint); they agree, and
            # the estimate is far outside beyond its region.
            assert np.array_equal(shape.distance_mm <= 0, mask)
            beyond = np.ones(mask.shape, dtype=bool)
            beyond[shape.estimate_region] = False
            assert (shape.distance_mm[beyond] > 3.0).all()
            centre = tuple(shape.centre_index)
            if mask[centre]:
                depth_mm = ndimage.distance_transform_edt(mask, sampling=spacing)[centre]
                assert 0.0 <= shape.inscribed_mm <= depth_mm


@pytest.mark.parametrize("spacing_mm", [(1.5, 1.5, 1.5), (0.78, 0.78, 0.78), (5.0, 0.8, 0.8)])
def test_margin_distances_are_exact_within_reach(spacing_mm):
    """The windowed distance of the margin zones (bytes on isotropic grids, float32 otherwise)
    equals scipy's exact transform within reach, exceeds the reach beyond it, and is inf only
    where no tumor voxel lies within reach along every axis."""
    rng = np.random.default_rng(3)
    spacing = np.asarray(spacing_mm)
    for diameter, reach in ((6.0, 2.0), (18.0, 5.5), (30.0, 9.0)):
        mask = make_shape(diameter, spacing, rng, 0.6, 0.5, reach).mask
        fast = _outside_distance_mm(mask, spacing, reach)
        exact = ndimage.distance_transform_edt(~mask, sampling=spacing)
        within = exact <= reach
        assert fast.dtype == np.float32
        np.testing.assert_allclose(fast[within], exact[within], atol=1e-4)
        assert (fast[~within] > reach - 1e-4).all()
        windows = [int(reach // step) for step in spacing]
        box = tuple(2 * w + 1 for w in windows)
        nothing_near = ~ndimage.maximum_filter(mask, size=box, mode="constant")
        assert np.array_equal(np.isinf(fast), nothing_near)


def test_detached_specks_are_dropped_and_the_body_regrown():
    """A level field with a low pocket beside the body: the pocket is not tumor, the body grows by
    its lowest neighbours to the exact count, and the threshold bounds every tumor voxel."""
    z, y, x = np.mgrid[-12:13, -12:13, -12:13].astype(np.float32)
    level = np.sqrt(z * z + y * y + x * x) / 6.0
    level[0:2, 0:2, 0:2] = 0.5  # a speck in the box's corner, far from the body
    count = int((level <= 1.0).sum())
    tumor, threshold, dropped, _ = _connected_level_set(level, count, np.array([12, 12, 12]), 1.0)
    assert dropped
    assert tumor.sum() == count and ndimage.label(tumor)[1] == 1
    assert not tumor[0:2, 0:2, 0:2].any()
    border = ndimage.binary_dilation(tumor) & ~tumor
    assert level[tumor].max() <= threshold <= level[border].min()


def test_short_cuts_give_the_plain_computations_values():
    """The shape's short cuts are exact: the mirrored level field, the surface found on the tumor's
    bounding box, the bracketed k-th value."""
    rng = np.random.default_rng(5)
    spacing = np.array([2.5, 0.8, 0.7])
    half = np.array([7, 19, 23])
    z, y, x = shapes._grid_mm(half, spacing)
    a = rng.standard_normal((3, 3))
    form = ((a @ a.T + np.eye(3)) / 300.0).astype(np.float32)
    squared = form[2, 2] * x + ((2 * form[0, 2]) * z + (2 * form[1, 2]) * y)
    squared *= x
    squared += form[0, 0] * z * z + form[1, 1] * y * y + (2 * form[0, 1]) * z * y
    plain = np.sqrt(np.maximum(squared, 0))
    assert np.array_equal(shapes._ellipsoid_level(form, z, y, x), plain)

    shape = make_shape(30.0, spacing, rng, irregularity=0.8, pad_mm=5.0)
    assert shape.tumor_region != (slice(None),) * 3
    whole = shapes._sample_offsets(
        shapes._surface(shape.mask), shape.centre_index, 40, np.random.default_rng(1)
    )
    assert np.array_equal(shape.surface_offsets(40, np.random.default_rng(1)), whole)

    values = np.round(rng.standard_normal(60_000), 2).astype(np.float32)  # many ties
    for k in (0, 17, 30_000, 59_999):
        for low, high in ((-5.0, 5.0), (0.0, 0.1), (3.0, 4.0)):
            assert shapes._kth_smallest(values, k, low, high) == np.partition(values, k)[k]


def test_seed_reproduces_bit_exactly(phantom):
    ct, labels = phantom
    spec = TumorSpec(organ="kidney", size="small", count=2, necrosis=True, rim=True, lobulation=0.5)
    first = synthesize(ct, labels, spec, seed=42)
    second = synthesize(ct, labels, spec, seed=42)
    other = synthesize(ct, labels, spec, seed=43)
    assert np.array_equal(first.ct.array, second.ct.array)
    assert np.array_equal(first.labels.array, second.labels.array)
    assert [r.to_dict() for r in first.tumors] == [r.to_dict() for r in second.tumors]
    assert not np.array_equal(first.ct.array, other.ct.array)
    assert first.labels.names[first.tumors[0].label_id] == "kidney_tumor"
    kidneys = np.isin(labels.array, labels.ids_for("kidney"))
    assert kidneys[tumor_mask(first, "kidney")].all()


@pytest.mark.parametrize("organ", ["liver", "kidney"])
def test_contrast_follows_host_organ(phantom, organ):
    ct, labels = phantom
    result = synthesize(ct, labels, TumorSpec(organ=organ, size="small", count=3), seed=8)
    for record in result.tumors:
        assert_contrast_follows_host(record, organ)


def test_look_scales_with_host_hu_within_limits():
    def resolved(host_hu: float, fraction: float = 0.6, fixed: float | None = None) -> Look:
        look = Look(fraction, 0.2, 5.0, 0.5, 0.3, 0.1, fixed_contrast_hu=fixed)
        look.resolve(host_hu)
        return look

    enhanced, unenhanced = resolved(100.0), resolved(45.0)
    assert enhanced.contrast_hu == pytest.approx(-40.0)
    assert unenhanced.contrast_hu == pytest.approx(-18.0)
    assert enhanced.texture_sd_hu == pytest.approx(20.0) and unenhanced.texture_sd_hu == pytest.approx(9.0)
    assert enhanced.rim_hu == pytest.approx(30.0)
    assert enhanced.necrosis_hu == pytest.approx(-0.5 * 60.0)
    assert resolved(100.0, fraction=0.97).contrast_hu == -MIN_CONTRAST_HU  # always visible
    assert resolved(400.0, fraction=0.2).contrast_hu == -MAX_CONTRAST_HU
    assert resolved(20.0, fraction=0.3).contrast_hu == pytest.approx(SOLID_FLOOR_HU - 20.0)  # not below water
    assert resolved(45.0, fixed=-40.0).contrast_hu == -40.0  # a requested contrast is used as given


def test_liver_texture_is_mild_for_most_tumors_strong_for_a_minority():
    """Typical liver tumors get the mild range; about 15% the strong one; the other draws of a look
    do not depend on which (one uniform draw either way)."""
    from freetumor_core.synthesis.appearance import appearance_for, draw_look

    liver = appearance_for("liver")
    low, high = liver.texture_fraction
    strong_low, strong_high = liver.strong_texture_fraction
    fractions = np.array(
        [
            draw_look(liver, np.random.default_rng(seed), None, True, True).texture_fraction
            for seed in range(2000)
        ]
    )
    assert ((fractions >= low) & (fractions <= strong_high)).all()
    strong = fractions > high
    assert 0.12 < strong.mean() < 0.18
    assert (fractions[strong] >= strong_low).all() and np.median(fractions) < 0.2
    a, b = (draw_look(liver, np.random.default_rng(7), None, True, True) for _ in range(2))
    assert a == b
    # Organs without a strong minority draw their single range.
    pancreas = appearance_for("pancreas")
    drawn = draw_look(pancreas, np.random.default_rng(3), None, True, True).texture_fraction
    assert pancreas.texture_fraction[0] <= drawn <= pancreas.texture_fraction[1]


def noise_hu(image: np.ndarray, region: np.ndarray) -> float:
    """Noise SD (HU) in ``region`` along all three axes, by :func:`noise_sd_hu` (third differences)."""
    return float(
        np.sqrt(
            np.mean(
                [
                    noise_sd_hu(np.moveaxis(image, axis, -1), np.moveaxis(region, axis, -1)) ** 2
                    for axis in range(3)
                ]
            )
        )
    )


def test_noise_inside_tumor_matches_host(phantom, liver_result):
    """Noise inside each tumor's core equals that of the liver around it (0.85-1.3 times).

    Noise is measured by third differences of neighbours, which cancel the tumor's smooth texture
    (features of three voxels and more) but pass the scan's noise. A Gaussian high-pass residual
    would also see the texture's fine blotches and read a strongly textured tumor as noisy (1.5
    times its host's noise on this phantom with a texture of 40 HU SD) although its noise is
    exactly the host's. The measure is as strict about noise: extra noise of three quarters of the
    host's reads as 1.2-1.35 times, a tumor smoothed by a one-voxel Gaussian as 0.1-0.2 times.
    """
    _, labels = phantom
    image = liver_result.ct.array.astype(np.float32)
    tumors = tumor_mask(liver_result)
    components, count = ndimage.label(tumors)
    organ = labels.array == LIVER_ID
    for component in range(1, count + 1):
        tumor = components == component
        core = ndimage.binary_erosion(tumor, iterations=2)
        near = ndimage.binary_dilation(tumor, iterations=8) & ~ndimage.binary_dilation(tumor, iterations=3)
        shell = near & ndimage.binary_erosion(organ, iterations=2)
        ratio = noise_hu(image, core) / noise_hu(image, shell)
        assert 0.85 <= ratio <= 1.3, f"tumor {component}: noise ratio {ratio:.2f}"
    textures_hu = [record.extra["texture_sd_hu"] for record in liver_result.tumors]
    assert max(textures_hu) >= 15.0, "the texture is too weak for this test to tell noise from texture"


def test_necrosis_rim_and_mass_effect(phantom):
    ct, labels = phantom
    plain = synthesize(ct, labels, TumorSpec(organ="liver", diameter_mm=36.0, contrast_hu=-40.0), seed=9)
    spec = TumorSpec(
        organ="liver", diameter_mm=36.0, contrast_hu=-40.0, necrosis=True, rim=True, mass_effect=True
    )
    special = synthesize(ct, labels, spec, seed=9)
    record = special.tumors[0]
    assert record.extra["necrosis"] and record.extra["rim"] and record.extra["mass_effect"]
    tumor = tumor_mask(special)
    core = ndimage.binary_erosion(tumor, iterations=5)
    periphery = tumor & ~ndimage.binary_erosion(tumor, iterations=2)
    image = special.ct.array.astype(np.float32)
    assert image[core].mean() < image[periphery].mean() - 15.0  # dark necrotic core, bright rim
    # Without mass effect nothing changes beyond the tumor's soft edge; with it, tissue moves there.
    around = ~ndimage.binary_dilation(tumor_mask(plain) | tumor, iterations=3)
    assert np.array_equal(plain.ct.array[around], ct.array[around])
    moved = (special.ct.array != ct.array) & around
    assert moved.sum() > 1000
    assert record.contrast_hu == pytest.approx(-40.0, abs=1.0)


def test_well_defined_tumor_has_a_sharp_edge_and_little_texture(phantom):
    ct, labels = phantom
    spec = TumorSpec(organ="liver", diameter_mm=36.0, contrast_hu=-40.0)
    soft = synthesize(ct, labels, spec, seed=9)
    sharp = synthesize(ct, labels, replace(spec, well_defined=True), seed=9)
    assert sharp.tumors[0].extra["well_defined"] and not soft.tumors[0].extra["well_defined"]
    # the same geometry and contrast (the option changes no other draw) ...
    assert np.array_equal(tumor_mask(soft), tumor_mask(sharp))
    assert sharp.tumors[0].contrast_hu == pytest.approx(-40.0, abs=1.0)
    assert sharp.tumors[0].extra["texture_sd_hu"] < 0.5 * soft.tumors[0].extra["texture_sd_hu"]
    # ... with the full contrast reached closer to the surface: one voxel inside, the well-defined
    # tumor has moved further from the host's HU
    tumor = tumor_mask(soft)
    first_layer = tumor & ~ndimage.binary_erosion(tumor)
    second_layer = ndimage.binary_erosion(tumor) & ~ndimage.binary_erosion(tumor, iterations=2)
    host = ct.array.astype(np.float32)
    for layer in (first_layer, second_layer):
        soft_drop = (host - soft.ct.array)[layer].mean()
        sharp_drop = (host - sharp.ct.array)[layer].mean()
        assert sharp_drop > soft_drop + 2.0


def test_calcified_foci_are_bright_sparse_and_inside():
    """Foci: bright specks deep inside the tumor, a small share of it, the mean HU unchanged."""
    spacing = np.array([1.5, 1.5, 1.5])
    shape = make_shape(30.0, spacing, np.random.default_rng(2))
    maps = {}
    for foci_hu in (None, 400.0):
        look = Look(0.6, 0.2, 8.0, None, None, 0.1, foci_hu=foci_hu, foci_seed=7)
        look.resolve(100.0)
        maps[foci_hu] = difference_map(shape, look, np.random.default_rng(3))
    added = maps[400.0] - maps[None]
    bright = added > 100.0
    assert 3 <= bright.sum() <= 0.05 * shape.mask.sum()
    assert (shape.depth_mm()[bright] > 1.0).all()
    assert added.max() <= 400.0
    assert maps[400.0][shape.mask].mean() == pytest.approx(maps[None][shape.mask].mean(), abs=0.5)


def test_bad_requests_get_clear_errors(phantom):
    ct, labels = phantom
    with pytest.raises(InputError, match="no label named 'livr'"):
        synthesize(ct, labels, TumorSpec(organ="livr"))
    with pytest.raises(InputError, match="either a size class or diameter_mm"):
        synthesize(ct, labels, TumorSpec(size="small", diameter_mm=12.0))
    with pytest.raises(InputError, match="unknown size class 'huge'"):
        synthesize(ct, labels, TumorSpec(size="huge"))
    with pytest.raises(InputError, match="count must be"):
        synthesize(ct, labels, TumorSpec(count=0))
    with pytest.raises(InputError, match="margin_mm must be"):
        synthesize(ct, labels, TumorSpec(margin_mm=-1.0))
    with pytest.raises(InputError, match=r"organ 'kidney' cannot hold tumor 1 of 1 .*allow shrinking"):
        synthesize(ct, labels, TumorSpec(organ="kidney", diameter_mm=70.0), seed=1)
    empty = LabelMap(labels.volume.like(np.where(labels.array == LIVER_ID, 0, labels.array)), labels.names)
    with pytest.raises(InputError, match="'liver' is empty"):
        synthesize(ct, empty, TumorSpec(organ="liver"))


def test_allow_shrink_places_smaller_tumor_with_warning(phantom):
    ct, labels = phantom
    spec = TumorSpec(organ="kidney", diameter_mm=70.0, allow_shrink=True)
    with pytest.warns(UserWarning, match="cannot hold"):
        result = synthesize(ct, labels, spec, seed=1)
    record = result.tumors[0]
    assert record.extra["shrunk"] and record.diameter_mm < 70.0
    kidneys = np.isin(labels.array, labels.ids_for("kidney"))
    assert kidneys[tumor_mask(result, "kidney")].all()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "freetumor_core", *args], capture_output=True, text=True, timeout=300
    )


def test_cli_on_totalsegmentator_ct(shared_data, tmp_path):
    from freetumor_core import read_labels, read_volume

    folder = shared_data / "totalseg_example"
    process = run_cli(
        "synthesize",
        str(folder / "example_ct.nii.gz"),
        "--organs",
        str(folder / "example_seg_fast_force_split.nii.gz"),
        "--organ",
        "liver",
        "--size",
        "small",
        "--count",
        "2",
        "--seed",
        "7",
        "-o",
        str(tmp_path),
    )
    assert process.returncode == 0, process.stderr
    records = json.loads((tmp_path / "tumors.json").read_text())["tumors"]
    assert len(records) == 2
    labels = read_labels(tmp_path / "labels.nii.gz")  # names come back from labels.json
    ct = read_volume(tmp_path / "ct.nii.gz")
    source = read_volume(folder / "example_ct.nii.gz")
    assert ct.same_grid(source, tolerance_mm=1e-4) and labels.volume.same_grid(source, tolerance_mm=1e-4)
    tumors = labels.mask("liver_tumor")
    assert tumors.sum() * ct.voxel_volume_ml == pytest.approx(sum(r["volume_ml"] for r in records), rel=1e-3)
    for record in records:
        assert 10.0 <= record["diameter_mm"] <= 20.5 and record["size_class"] == "small"
        index = np.round(ct.lps_to_index(np.asarray(record["centre_ras_mm"]) * [-1, -1, 1])).astype(int)
        assert tumors[tuple(index)]
    png = (tmp_path / "snapshot.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


@pytest.mark.slow
def test_cli_on_ircadb_avoids_real_tumors_and_vessels(shared_data, tmp_path):
    from freetumor_core import read_labels

    folder = shared_data / "ircadb_liver_tumor"
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"1": "liver", "2": "liver_tumor", "3": "hepatic_vessels"}))
    process = run_cli(
        "synthesize",
        str(folder / "ircadb1_17_ct.nii.gz"),
        "--organs",
        str(folder / "ircadb1_17_labels.nii.gz"),
        "--label-names",
        str(names),
        "--organ",
        "liver",
        "--size",
        "small",
        "--count",
        "2",
        "-o",
        str(tmp_path / "out"),
    )
    assert process.returncode == 0, process.stderr
    source = read_labels(folder / "ircadb1_17_labels.nii.gz", names)
    output = read_labels(tmp_path / "out" / "labels.nii.gz")
    new = (output.array == 2) & (source.array != 2)
    assert new.any() and (source.array[new] == 1).all(), "synthetic tumors only in tumor-free liver"
    box = crop_around(new, 20)
    spacing = source.volume.spacing_zyx
    # 3 mm from the real tumors and from the major vessels (wider than 6 mm: the vessel mask's
    # opening by a 6 mm ball); small branches may be taken in, keeping their label.
    vessel = source.array[box] == 3
    core = ndimage.distance_transform_edt(vessel, sampling=spacing) > 3.0
    major = vessel & (distance_from(core, spacing) <= 3.0) if core.any() else np.zeros_like(vessel)
    real_or_major = (source.array[box] == 2) | major
    assert distance_from(real_or_major, spacing)[new[box]].min() >= 3.0
    assert (output.array[source.array == 3] == 3).all(), "vessels keep their label"
    assert len(json.loads((tmp_path / "out" / "tumors.json").read_text())["tumors"]) == 2


def test_cli_bad_organ_exits_2(shared_data, tmp_path):
    folder = shared_data / "totalseg_example"
    process = run_cli(
        "synthesize",
        str(folder / "example_ct.nii.gz"),
        "--organs",
        str(folder / "example_seg_fast_force_split.nii.gz"),
        "--organ",
        "brain",
        "-o",
        str(tmp_path),
    )
    assert process.returncode == 2
    assert "example_seg_fast_force_split.nii.gz: organ mask 'brain' is empty" in process.stderr
    assert not (tmp_path / "ct.nii.gz").exists()


def test_demo_writes_synthesis_outputs(tmp_path):
    from freetumor_core.demo import run_demo

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the demo request fits the phantom: no shrinking
        outputs = run_demo(tmp_path, seed=7)
    assert set(outputs) == {"ct", "labels", "tumors", "snapshot"}
    records = json.loads(outputs["tumors"].read_text())["tumors"]
    assert len(records) == 2 and all(r["organ"] == "liver" for r in records)


def test_cli_refuses_windowed_ct_unless_allowed(phantom, tmp_path):
    from freetumor_core import write_volume

    ct, labels = phantom
    # The same anatomy exported as an 8-bit window (DeepLesion's u8 = 0.5667 * HU + 104.35).
    windowed = ct.like(np.clip(np.round(0.5667 * ct.array + 104.35), 0, 255).astype(np.uint8))
    ct_path = write_volume(windowed, tmp_path / "windowed_ct.nii.gz")
    labels_path = labels.save(tmp_path / "labels.nii.gz")
    arguments = ["synthesize", str(ct_path), "--organs", str(labels_path), "--no-snapshot"]
    refused = run_cli(*arguments, "-o", str(tmp_path / "refused"))
    assert refused.returncode == 2
    assert f"{ct_path}: values 0..255 look like 8-bit windowed data" in refused.stderr
    assert not (tmp_path / "refused").exists()
    allowed = run_cli(*arguments, "--allow-non-hu", "-o", str(tmp_path / "allowed"))
    assert allowed.returncode == 0, allowed.stderr
    assert "accepted because non-HU input was allowed" in allowed.stderr
    assert (tmp_path / "allowed" / "tumors.json").is_file()
