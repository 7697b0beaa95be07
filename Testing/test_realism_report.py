"""The realism report script (a wrapper over ``freetumor realism``) on a small subset of the real data."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import sys
from pathlib import Path

import matplotlib.image
import pytest

REPO = Path(__file__).resolve().parents[1]


def _report_module():
    spec = importlib.util.spec_from_file_location("realism_report", REPO / "scripts" / "realism_report.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _rows(folder):
    with open(folder / "realism_table.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_real_tumors_only(shared_data, tmp_path):
    report = _report_module()
    output = tmp_path / "real"
    code = report.main(["--data", str(shared_data), "--output", str(output), "--real", "ircadb", "kits",
                        "--hosts", "--progress", "none"])  # fmt: skip
    assert code == 0
    rows = _rows(output)
    # IRCADb patient 17 has two liver tumors; each KiTS case one kidney tumor (specks dropped).
    assert [row["organ"] for row in rows] == ["liver", "liver", "kidney", "kidney"]
    liver_ml = sorted(float(row["volume_ml"]) for row in rows if row["organ"] == "liver")
    assert liver_ml == pytest.approx([78.6, 85.6], abs=0.2)  # the volumes the data README states
    kidney = [row for row in rows if row["organ"] == "kidney"]
    assert all(row["contrast_hu"] == "nan" for row in kidney)  # masks without CT: shape only
    for row in rows:
        assert 0.5 < float(row["sphericity"]) <= 1.05
        assert float(row["elongation"]) >= 1.0
    summary = json.loads((output / "realism_distances.json").read_text())
    assert summary["n_real"] == len(rows) and summary["n_synthetic"] == 0
    liver = summary["engines"]["handcrafted"]["comparisons"]["liver"]
    assert len(liver["real_sources"]) == 2
    assert liver["descriptors"]["contrast_hu"]["real"]["n"] == 2
    assert liver["descriptors"]["contrast_hu"]["real"]["max"] < 0  # both hypodense
    assert matplotlib.image.imread(output / "realism.png").shape[0] > 300


def test_missing_data_folder_is_an_input_error(tmp_path, capfd):
    report = _report_module()
    assert report.main(["--data", str(tmp_path / "nowhere"), "--output", str(tmp_path / "out")]) == 2
    assert "data folder not found" in capfd.readouterr().err
    assert not (tmp_path / "out").exists()


def test_real_against_synthetic_liver_tumors(shared_data, tmp_path):
    report = _report_module()
    output = tmp_path / "both"
    code = report.main(["--data", str(shared_data), "--output", str(output), "--real", "ircadb",
                        "--hosts", "phantom", "--seeds", "2", "--progress", "none"])  # fmt: skip
    assert code == 0
    rows = _rows(output)
    real = [row for row in rows if row["kind"] == "real"]
    synthetic = [row for row in rows if row["kind"] == "synthetic"]
    assert len(real) == 2
    # By default both engines, side by side: two real diameters x two seeds each.
    assert len(synthetic) == 2 * 2 * 2
    assert sorted(row["engine"] for row in synthetic) == ["adversarial"] * 4 + ["handcrafted"] * 4
    for row in synthetic:
        assert row["host"] == "phantom" and row["organ"] == "liver"
    # Synthetic tumors were asked for the real tumors' diameters.
    real_diameters = sorted(float(row["diameter_mm"]) for row in real)
    for row in synthetic:
        assert min(abs(float(row["diameter_mm"]) - d) for d in real_diameters) < 0.25 * real_diameters[0]
    summary = json.loads((output / "realism_distances.json").read_text())
    assert summary["n_synthetic"] == len(synthetic)
    assert sorted(summary["engines"]) == ["adversarial", "handcrafted"]
    for engine in summary["engines"].values():
        assert engine["n_synthetic"] == 4 and engine["hosts"] == {"phantom": 4}
        turing = engine["turing"]
        assert turing["checked"] and turing["n_real"] == 2 and turing["n_synthetic"] == 4
    for name, entry in summary["engines"]["handcrafted"]["comparisons"]["liver"]["descriptors"].items():
        distance = entry["distance"]
        assert entry["synthetic"]["n"] == 4, name
        assert math.isfinite(distance["wasserstein"]) and math.isfinite(distance["median_shift_iqr"]), name
