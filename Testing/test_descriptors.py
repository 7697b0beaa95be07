"""Tumor descriptors on analytic shapes whose true values are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from freetumor_core.descriptors import (
    DESCRIPTORS,
    describe_shape,
    describe_tumor,
    distribution_distance,
)
from freetumor_core.volume import Volume

ORGAN_HU = 100.0


def _ellipsoid(shape_zyx, spacing_xyz, semi_axes_zyx_mm, centre_offset_mm=(0.0, 0.0, 0.0)):
    spacing_zyx = np.asarray(spacing_xyz[::-1])
    coords = [
        (np.arange(n) - (n - 1) / 2) * s - c
        for n, s, c in zip(shape_zyx, spacing_zyx, centre_offset_mm, strict=True)
    ]
    z, y, x = np.meshgrid(*coords, indexing="ij")
    a, b, c = semi_axes_zyx_mm
    return (z / a) ** 2 + (y / b) ** 2 + (x / c) ** 2 <= 1.0


def _ct_with_tumor(mask, spacing_xyz, tumor_hu, noise_sd=0.0, blur_mm=0.0, seed=0):
    hu = np.where(mask, tumor_hu, ORGAN_HU).astype(np.float32)
    if blur_mm:
        hu = ndimage.gaussian_filter(hu, blur_mm / np.asarray(spacing_xyz[::-1]))
    hu += np.random.default_rng(seed).normal(0.0, noise_sd, hu.shape).astype(np.float32)
    return Volume(hu, spacing=spacing_xyz)


@pytest.mark.parametrize("spacing_xyz", [(1.0, 1.0, 1.0), (0.75, 0.75, 1.6)])
def test_ball_is_round_and_convex(spacing_xyz):
    radius_mm = 12.0
    shape = tuple(int(2 * radius_mm / s) + 9 for s in spacing_xyz[::-1])
    ball = _ellipsoid(shape, spacing_xyz, (radius_mm,) * 3)
    result = describe_shape(ball, spacing_xyz[::-1])
    assert set(DESCRIPTORS) <= set(result)
    assert result["volume_ml"] == pytest.approx(4 / 3 * math.pi * radius_mm**3 / 1000, rel=0.03)
    assert result["diameter_mm"] == pytest.approx(2 * radius_mm, rel=0.02)
    assert 0.95 <= result["sphericity"] <= 1.03
    assert result["elongation"] == pytest.approx(1.0, abs=0.05)
    assert 0.0 <= result["surface_irregularity"] < 0.03
    assert math.isnan(result["contrast_hu"])  # no image: intensity descriptors are unknown


def test_elongated_ellipsoid_has_its_axis_ratio_and_lower_sphericity():
    spacing = (0.8, 0.8, 1.5)
    ellipsoid = _ellipsoid((40, 90, 60), spacing, (15.0, 30.0, 10.0))
    result = describe_shape(ellipsoid, spacing[::-1])
    assert result["elongation"] == pytest.approx(3.0, rel=0.06)
    # Sphericity of a 3:1.5:1 ellipsoid is about 0.84 (Knud Thomsen's area formula).
    p = 1.6075
    a, b, c = 30.0, 15.0, 10.0
    area = 4 * math.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)
    expected = math.pi ** (1 / 3) * (6 * 4 / 3 * math.pi * a * b * c) ** (2 / 3) / area
    assert result["sphericity"] == pytest.approx(expected, abs=0.04)


def test_non_convex_shape_is_irregular():
    spacing = (1.0, 1.0, 1.0)
    ball = _ellipsoid((40, 40, 40), spacing, (14.0, 14.0, 14.0))
    ball_irregularity = describe_shape(ball, spacing)["surface_irregularity"]
    # Two touching balls (a dumbbell) leave a large concave waist for the hull to fill.
    dumbbell = _ellipsoid((40, 40, 70), spacing, (10.0,) * 3, (0, 0, -11)) | _ellipsoid(
        (40, 40, 70), spacing, (10.0,) * 3, (0, 0, 11)
    )
    dumbbell_result = describe_shape(dumbbell, spacing)
    assert dumbbell_result["surface_irregularity"] > ball_irregularity + 0.1
    assert dumbbell_result["sphericity"] < 0.9


def test_contrast_and_spread_of_a_hypodense_ball():
    spacing = (0.8, 0.8, 2.0)
    ball = _ellipsoid((30, 80, 80), spacing, (10.0,) * 3)
    ct = _ct_with_tumor(ball, spacing, tumor_hu=60.0, noise_sd=8.0)
    organ = np.ones(ball.shape, dtype=bool)
    result = describe_tumor(ct, ball, organ)
    assert result["contrast_hu"] == pytest.approx(-40.0, abs=1.5)
    assert result["mean_hu"] == pytest.approx(60.0, abs=1.5)
    assert result["internal_sd_hu"] == pytest.approx(8.0, rel=0.1)
    assert result["shell_hu"] == pytest.approx(ORGAN_HU, abs=1.0)


def test_shell_is_restricted_to_the_organ():
    spacing = (1.0, 1.0, 1.0)
    ball = _ellipsoid((40, 40, 40), spacing, (8.0,) * 3)
    hu = np.where(ball, 60.0, ORGAN_HU)
    # Outside the organ (the upper half) lies fat at -100 HU; it must not enter the contrast.
    organ = np.ones(ball.shape, dtype=bool)
    organ[:, :20, :] = False
    hu[~organ & ~ball] = -100.0
    ct = Volume(hu.astype(np.float32), spacing=spacing)
    assert describe_tumor(ct, ball, organ & ~ball)["contrast_hu"] == pytest.approx(-40.0, abs=0.5)
    # Unrestricted, half the shell is fat and the hypodense tumor even looks hyperdense.
    assert describe_tumor(ct, ball, None)["contrast_hu"] > 40.0


def test_blurred_edge_is_less_sharp():
    spacing = (0.8, 0.8, 1.5)
    ball = _ellipsoid((36, 70, 70), spacing, (12.0,) * 3)
    organ = np.ones(ball.shape, dtype=bool)
    sharp = describe_tumor(_ct_with_tumor(ball, spacing, 50.0, noise_sd=5.0), ball, organ)
    blurred = describe_tumor(_ct_with_tumor(ball, spacing, 50.0, noise_sd=5.0, blur_mm=3.0), ball, organ)
    assert sharp["edge_sharpness_hu_per_mm"] > 1.5 * blurred["edge_sharpness_hu_per_mm"]
    assert blurred["edge_sharpness_hu_per_mm"] > 0


def test_bad_masks_are_refused():
    spacing = (1.0, 1.0, 1.0)
    ct = Volume(np.zeros((10, 10, 10), dtype=np.float32), spacing=spacing)
    with pytest.raises(ValueError, match="empty"):
        describe_tumor(ct, np.zeros((10, 10, 10), dtype=bool))
    with pytest.raises(ValueError, match="differs"):
        describe_tumor(ct, np.ones((10, 10, 9), dtype=bool))


def test_distribution_distance():
    rng = np.random.default_rng(1)
    real = rng.normal(0.0, 1.0, 400)
    same = distribution_distance(real, rng.normal(0.0, 1.0, 400))
    shifted = distribution_distance(real, rng.normal(2.0, 1.0, 400))
    assert abs(same["median_shift_iqr"]) < 0.2 and same["wasserstein"] < 0.25
    assert shifted["median_shift_iqr"] > 0.8  # pooled IQR of the mixture is about 2.4
    assert shifted["wasserstein"] == pytest.approx(2.0, abs=0.25)
    with_nan = distribution_distance([1.0, np.nan, 2.0], [3.0])
    assert with_nan["n_a"] == 2 and np.isfinite(with_nan["wasserstein"])
    assert math.isnan(distribution_distance([], [1.0])["wasserstein"])
