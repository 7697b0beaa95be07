"""The built-in phantom: deterministic, CT-like, every organ in its HU range."""

from __future__ import annotations

import numpy as np
import pytest

from freetumor_core import make_phantom
from freetumor_core.phantom import ORGAN_HU_RANGE
from freetumor_core.volume import check_hu


def test_same_seed_same_phantom_other_seed_differs(phantom):
    ct, labels = phantom
    again_ct, again_labels = make_phantom(seed=0)
    assert np.array_equal(ct.array, again_ct.array)
    assert np.array_equal(labels.array, again_labels.array)
    other_ct, _ = make_phantom(seed=1)
    assert not np.array_equal(ct.array, other_ct.array)


def test_geometry_and_type(phantom):
    ct, labels = phantom
    assert ct.spacing == (1.5, 1.5, 1.5)
    assert ct.array.dtype == np.int16
    assert labels.volume.same_grid(ct)
    check_hu(ct)  # a real CT-like range: air and fat present


@pytest.mark.parametrize("organ", sorted(ORGAN_HU_RANGE))
def test_organ_hu_ranges(phantom, organ):
    ct, labels = phantom
    # Median of the organ's core (eroded by the partial-volume edge).
    from scipy import ndimage

    core = ndimage.binary_erosion(labels.mask(organ), iterations=2)
    low, high = ORGAN_HU_RANGE[organ]
    assert low <= float(np.median(ct.array[core])) <= high


def test_anatomy_is_present_and_plausible(phantom):
    ct, labels = phantom
    volumes = labels.volumes_ml()
    assert 1200 < volumes["liver"] < 2500
    assert 80 < volumes["kidney_left"] < 250 and 80 < volumes["kidney_right"] < 250
    assert 10 < volumes["pancreas"] < 120
    assert ct.array.min() <= -1000  # outside air and bowel gas
    assert (ct.array > 500).sum() > 1000  # bone
    fat = (ct.array > -150) & (ct.array < -50)
    assert fat.mean() > 0.05
    # The liver lies on the patient's right (negative x in LPS), the spleen on the left.
    liver_x = ct.index_to_lps(np.argwhere(labels.mask("liver")).mean(0))[0]
    spleen_x = ct.index_to_lps(np.argwhere(labels.mask("spleen")).mean(0))[0]
    assert liver_x < 0 < spleen_x


def test_noise_is_ct_like(phantom):
    ct, labels = phantom
    from scipy import ndimage

    core = ndimage.binary_erosion(labels.mask("liver"), iterations=4)
    residual = ct.array.astype(np.float32) - ndimage.uniform_filter(ct.array.astype(np.float32), 5)
    assert 5.0 < float(residual[core].std()) < 25.0


@pytest.mark.parametrize("organ", ["liver", "pancreas", "kidney"])
def test_each_target_organ_holds_a_small_tumor_with_default_margins(phantom, organ):
    from freetumor_core.synthesis import TumorSpec, synthesize

    ct, labels = phantom
    result = synthesize(ct, labels, TumorSpec(organ=organ, diameter_mm=15.0), seed=3)
    assert len(result.tumors) == 1
    assert result.tumors[0].extra["shrunk"] is False
