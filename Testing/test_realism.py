"""`freetumor realism`: the noise descriptor, the classifier two-sample test, the command on real data."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from freetumor_core.cli import main as freetumor
from freetumor_core.descriptors import describe_tumor, high_frequency_sd_hu, noise_ratio
from freetumor_core.errors import InputError
from freetumor_core.realism import realism_report, two_sample_test
from freetumor_core.volume import Volume


def _ball(shape, radius):
    z, y, x = np.indices(shape) - (np.asarray(shape)[:, None, None, None] - 1) / 2
    return z**2 + y**2 + x**2 <= radius**2


def test_high_frequency_sd_of_white_noise_and_of_smooth_anatomy():
    rng = np.random.default_rng(0)
    region = np.ones((20, 60, 60), dtype=bool)
    noise = rng.normal(0.0, 10.0, region.shape)
    # 4 v - four neighbours: variance (16 + 4) s^2 for white noise of SD s.
    assert high_frequency_sd_hu(noise, region) == pytest.approx(math.sqrt(20.0) * 10.0, rel=0.03)
    # Anything linear in y and x (and any z profile) has no in-plane Laplacian.
    z, y, x = np.indices(region.shape, dtype=float)
    ramp = 3.0 * y - 2.0 * x + 50.0 * np.sin(z)
    assert high_frequency_sd_hu(ramp, region) == pytest.approx(0.0, abs=1e-9)
    assert high_frequency_sd_hu(noise + ramp, region) == pytest.approx(math.sqrt(20.0) * 10.0, rel=0.03)
    assert math.isnan(high_frequency_sd_hu(noise, np.zeros_like(region)))


@pytest.mark.parametrize("inside_sd, expected", [(10.0, 1.0), (20.0, 2.0), (5.0, 0.5)])
def test_noise_ratio_of_a_tumor_with_known_noise(inside_sd, expected):
    rng = np.random.default_rng(1)
    shape = (40, 64, 64)
    tumor = _ball(shape, 9)
    organ = np.ones(shape, dtype=bool)
    hu = np.where(tumor, 60.0, 100.0) + rng.normal(0.0, 1.0, shape) * np.where(tumor, inside_sd, 10.0)
    ct = Volume(hu.astype(np.float32), spacing=(1.0, 1.0, 1.0))
    result = describe_tumor(ct, tumor, organ)
    assert result["noise_ratio"] == pytest.approx(expected, rel=0.08)
    # The step at the surface is left out: the Laplacian's stencil stays inside each region.
    shell = ~tumor
    assert noise_ratio(hu, tumor, shell) == pytest.approx(expected, rel=0.08)
    assert result["internal_sd_hu"] == pytest.approx(inside_sd, rel=0.08)


def test_classifier_two_sample_test_on_same_and_on_different_samples():
    rng = np.random.default_rng(2)
    same = [two_sample_test(rng.normal(0, 1, (30, 4)), rng.normal(0, 1, (60, 4))) for _ in range(5)]
    for result in same:
        low, high = result["interval_95"]
        assert low < 0.5 < high
        assert result["accuracy"] < 0.7
    assert np.mean([r["accuracy"] for r in same]) == pytest.approx(0.5, abs=0.15)
    different = two_sample_test(rng.normal(0, 1, (30, 4)), rng.normal(4, 1, (60, 4)))
    assert different["accuracy"] == pytest.approx(1.0)
    assert different["real_hits"] == [30, 30] and different["synthetic_hits"] == [60, 60]
    assert different["interval_95"][0] > 0.85
    # Few real samples: the interval is honest about it.
    few = two_sample_test(rng.normal(0, 1, (3, 4)), rng.normal(4, 1, (24, 4)))
    assert few["accuracy"] == pytest.approx(1.0) and few["interval_95"][0] < 0.7
    # A column with NaN in any row is left out, not a crash.
    real, synthetic = rng.normal(0, 1, (10, 3)), rng.normal(3, 1, (10, 3))
    real[0, 1] = np.nan
    assert two_sample_test(real, synthetic)["features_used"] == [0, 2]
    with pytest.raises(ValueError):
        two_sample_test(real[:1], synthetic)


def test_unknown_engine_names_the_registered_ones(shared_data, tmp_path, capsys):
    with pytest.raises(InputError, match=r"available: .*handcrafted"):
        realism_report(shared_data, tmp_path / "out", engines=["nonexistent"], hosts=[], real=["kits"])
    code = freetumor(["realism", "--data", str(shared_data), "-o", str(tmp_path / "out"),
                      "--engines", "nonexistent", "--progress", "none"])  # fmt: skip
    assert code == 2
    assert "unknown synthesis engine 'nonexistent'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_realism_command_on_the_high_resolution_host(shared_data, tmp_path, capsys):
    """The command end to end: three real tumors in HU against both engines' tumors in ircadb_p07
    (the default engines), side by side; the handcrafted texture keeps its tumors about as grainy
    as the liver around them."""
    output = tmp_path / "realism"
    code = freetumor(["realism", "--data", str(shared_data), "-o", str(output), "--real", "ircadb",
                      "deeplesion_hu", "--hosts", "ircadb_p07", "--seeds", "3", "--diameters-mm", "15",
                      "30", "--json", str(tmp_path / "report.json"), "--progress", "none"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "Turing test (handcrafted): balanced accuracy" in printed
    assert "Turing test (adversarial): balanced accuracy" in printed
    with open(output / "realism_table.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    synthetic = [row for row in rows if row["kind"] == "synthetic"]
    assert len(synthetic) == 2 * 2 * 3 and {row["host"] for row in synthetic} == {"ircadb_p07"}
    assert sorted({row["engine"] for row in synthetic}) == ["adversarial", "handcrafted"]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report == json.loads((output / "realism_distances.json").read_text())
    for engine in ("handcrafted", "adversarial"):
        assert report["engines"][engine]["hosts"] == {"ircadb_p07": 6}
        turing = report["engines"][engine]["turing"]
        assert turing["checked"] and turing["n_real"] == 3 and turing["n_synthetic"] == 6
        assert len(turing["real_tumors"]) == 3 and "noise_ratio" in turing["features"]
        low, high = turing["interval_95"]
        assert 0.0 <= low <= turing["accuracy"] <= high <= 1.0
    # The retuned texture: on the 0.78 mm host, typical tumors are about as grainy as their liver
    # (real liver tumors on such scans: noise ratio 0.88-1.47, internal SD 12-40 HU).
    handcrafted = [row for row in synthetic if row["engine"] == "handcrafted"]
    ratios = [float(row["noise_ratio"]) for row in handcrafted]
    sds = [float(row["internal_sd_hu"]) for row in handcrafted]
    assert 0.88 <= np.median(ratios) <= 1.47, ratios
    assert 12.0 <= np.median(sds) <= 40.0, sds
