"""The build-time leak check: features, the separation rule, harmonization, and ``vtt create`` on
the DeepLesion real cases with the TotalSegmentator example CT as host."""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from freetumor_core.cli import main as cli_main
from freetumor_core.turing.build import harmonize_noise, real_cases, synthetic_cases
from freetumor_core.turing.cases import CaseFormat, PreparedCase, physical_spacing_mm, prepare_case
from freetumor_core.turing.datalist import read_datalist
from freetumor_core.turing.leakcheck import case_features, check_leaks, noise_level_hu
from freetumor_core.turing.realcases import windowed_npz_to_nifti

NPZ_CASES = (
    "CT_Lesion_000002_03_01_035-047",
    "CT_Lesion_000010_01_01_078-090",
    "CT_Lesion_000015_01_01_081-093",
)


def deeplesion_datalists(shared_data: Path, folder: Path) -> tuple[Path, Path]:
    """``real.json``: the four DeepLesion lesions (HU, the 8-bit ones mapped back) with organ
    ``liver`` so the host can take them; ``hosts.json``: the 3 mm TotalSegmentator example CT."""
    deeplesion = shared_data / "deeplesion_medsam2"
    real = [
        {
            "image": str(deeplesion / "000015_01_01_103-115_ct_hu.nii.gz"),
            "label": str(deeplesion / "000015_01_01_103-115_lesion_mask_DERIVED.nii.gz"),
            "organ": "liver",
        }
    ]
    for name in NPZ_CASES:
        ct_path, mask_path = windowed_npz_to_nifti(deeplesion / f"{name}.npz", folder / "hu")
        real.append({"image": str(ct_path), "label": str(mask_path), "organ": "liver"})
    (folder / "real.json").write_text(json.dumps({"training": real}))
    totalseg = shared_data / "totalseg_example"
    host = {
        "image": str(totalseg / "example_ct.nii.gz"),
        "label": str(totalseg / "example_seg_fast_force_split.nii.gz"),
    }
    (folder / "hosts.json").write_text(json.dumps({"training": [host]}))
    return folder / "real.json", folder / "hosts.json"


def _soft_tissue(shape: tuple[int, int, int], noise_hu: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.rint(40.0 + rng.normal(0.0, noise_hu, shape)).astype(np.int16)


def test_features_measure_noise_and_quantization() -> None:
    noisy = _soft_tissue((24, 64, 64), 10.0, 0)
    assert noise_level_hu(noisy) == pytest.approx(10.0, rel=0.05)
    assert noise_level_hu(_soft_tissue((24, 64, 64), 3.0, 1)) == pytest.approx(3.0, rel=0.1)
    features = case_features(noisy, (0.8, 0.8, 5.0))
    assert features["source_voxel_mm"] == pytest.approx((0.8 * 0.8 * 5.0) ** (1 / 3), abs=1e-3)
    assert features["hu_occupancy"] > 0.95
    # Values on a 2 HU comb (8-bit windowed data) leave every other HU empty.
    comb = (noisy // 2) * 2
    assert case_features(comb, (1, 1, 1))["hu_occupancy"] == pytest.approx(0.5, abs=0.05)
    # White noise has far more high-frequency energy than the same noise smoothed.
    from scipy import ndimage

    smooth = np.rint(ndimage.gaussian_filter(noisy.astype(float), 1.5)).astype(np.int16)
    assert case_features(smooth, (1, 1, 1))["laplacian_sd"] < 0.3 * features["laplacian_sd"]


def test_separation_rule_and_too_few_cases() -> None:
    origins = ["real"] * 4 + ["synthetic"] * 4
    base = {"noise_hu": 10.0, "laplacian_sd": 40.0, "hu_occupancy": 1.0, "source_voxel_mm": 1.0}
    rng = np.random.default_rng(3)
    mixed = [{k: v * (1 + rng.uniform(-0.2, 0.2)) for k, v in base.items()} for _ in origins]
    report = check_leaks(mixed, origins)
    assert report["checked"] and report["separating"] == [] and not report["leaky"]
    # One feature split by a clear gap: leaky, with both groups' ranges.
    split = [dict(base, laplacian_sd=(20.0 if o == "synthetic" else 45.0) + i) for i, o in enumerate(origins)]
    report = check_leaks(split, origins)
    assert report["leaky"] and [s["feature"] for s in report["separating"]] == ["laplacian_sd"]
    assert report["separating"][0]["real"] == [45.0, 48.0]
    assert report["separating"][0]["synthetic"] == [24.0, 27.0]
    assert report["loo_accuracy"] == 1.0
    # A threshold split by a hair (under 10% of the typical value) is not called a leak.
    hair = [
        dict(case, source_voxel_mm=0.95 if o == "real" else 0.99)
        for case, o in zip(mixed, origins, strict=True)
    ]
    assert check_leaks(hair, origins)["separating"] == []
    single = check_leaks(split[:5], origins[:5])
    assert not single["checked"] and not single["leaky"] and single["loo_accuracy"] is None


def test_noise_harmonization_brings_every_case_to_the_highest_level() -> None:
    case_format = CaseFormat(size_voxels=(64, 64, 16))
    shape = case_format.size_voxels[::-1]
    prepared = [PreparedCase(_soft_tissue(shape, level, i), {}) for i, level in enumerate((2.0, 6.0, 12.0))]
    added = harmonize_noise(
        prepared, case_format, np.asarray(case_format.spacing_mm), np.random.default_rng(99)
    )
    levels = [noise_level_hu(case.array) for case in prepared]
    assert added[2] == 0.0 and added[0] > added[1] > 0
    assert levels == pytest.approx([12.0] * 3, rel=0.08)


@pytest.fixture(scope="module")
def deeplesion_lists(shared_data: Path, tmp_path_factory) -> tuple[Path, Path]:
    return deeplesion_datalists(shared_data, tmp_path_factory.mktemp("leak"))


def test_harmonization_removes_the_noise_and_sharpness_leaks(deeplesion_lists: tuple[Path, Path]) -> None:
    real_list, host_list = deeplesion_lists
    case_format = CaseFormat()
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        real = real_cases(read_datalist(real_list), None, rng, case_format)
        cases = real + synthetic_cases(read_datalist(host_list), 4, real, 0, rng, case_format)
    origins = [case.origin for case in cases]
    resolution = np.max([physical_spacing_mm(case.ct) for case in cases], axis=0)
    assert resolution.tolist() == pytest.approx([3.0, 3.0, 5.0])
    separating = {}
    for harmonized in (False, True):
        prepared = [
            prepare_case(
                case.ct, case.mask, case_format, np.random.default_rng(1), resolution if harmonized else None
            )
            for case in cases
        ]
        if harmonized:
            harmonize_noise(prepared, case_format, resolution, np.random.default_rng(2))
        features = [case_features(p.array, c.ct.spacing) for p, c in zip(prepared, cases, strict=True)]
        separating[harmonized] = {s["feature"] for s in check_leaks(features, origins)["separating"]}
    # Before: noise and high-frequency energy give the origin away; after, only the source voxel size
    # (which no processing of the case can hide) is left.
    assert {"noise_hu", "laplacian_sd", "source_voxel_mm"} <= separating[False]
    assert separating[True] == {"source_voxel_mm"}


def _create(real: Path, hosts: Path, folder: Path, *extra: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = cli_main(
            [
                "vtt",
                "create",
                "--real",
                str(real),
                "--synthetic-from",
                str(hosts),
                "-o",
                str(folder / "study"),
            ]
            + ["--key", str(folder / "key.json"), "--seed", "0", *extra]
        )
    return code, out.getvalue()


def test_vtt_create_refuses_a_leaky_study(
    deeplesion_lists: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real, hosts = deeplesion_lists
    code, _ = _create(real, hosts, tmp_path)
    error = capsys.readouterr().err
    assert code == 2
    assert "leak check failed" in error and "source_voxel_mm" in error and "--allow-leaky" in error
    assert "leave-one-out accuracy" in error
    assert not (tmp_path / "study").exists() and not (tmp_path / "key.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == []

    code, printed = _create(real, hosts, tmp_path, "--allow-leaky")
    assert code == 0
    assert "leave-one-out accuracy" in printed and "--allow-leaky" in printed
    key = json.loads((tmp_path / "key.json").read_text())
    leaks = key["leak_check"]
    assert leaks["leaky"] and leaks["allowed_leaky"] and leaks["checked"]
    assert leaks["n_real"] == 4 and leaks["n_synthetic"] == 4
    assert 0.0 <= leaks["loo_accuracy"] <= 1.0
    assert key["harmonization"]["resolution_mm"] == pytest.approx([3.0, 3.0, 5.0])
    # The report is the organiser's: nothing of it reaches the study folder.
    for path in (tmp_path / "study").rglob("*"):
        if path.suffix in (".json", ".db"):
            assert b"leak" not in path.read_bytes()
