"""The core without extras: with VTK (the ``render`` extra) unimportable, ``demo``, ``synthesize`` and
``vtt create`` still run, skipping the snapshot with one warning that names the extra.

VTK is blocked in a real subprocess (``sys.modules["vtkmodules"] = None`` makes every import of it
fail, as on a machine without the package); everything else is the installed core.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WITHOUT_VTK = (
    "import sys; sys.modules['vtkmodules'] = None; sys.modules['vtk'] = None\n"
    "from freetumor_core.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def run_without_vtk(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_VTK, *arguments],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("freetumor: warning:")]


def test_vtk_is_really_blocked():
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_VTK.replace("from freetumor_core", "import vtkmodules\nfrom x")],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "vtkmodules" in result.stderr


def test_demo_without_vtk_skips_the_snapshot_with_one_warning(tmp_path):
    result = run_without_vtk("demo", "-o", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stderr
    written = sorted(p.name for p in (tmp_path / "demo").iterdir())
    assert written == ["ct.nii.gz", "labels.json", "labels.nii.gz", "tumors.json"]
    warnings = _warnings(result.stderr)
    assert len(warnings) == 1 and "snapshot.png skipped" in warnings[0] and "[render]" in warnings[0]
    assert len(json.loads((tmp_path / "demo" / "tumors.json").read_text())["tumors"]) == 2


def test_synthesize_without_vtk(shared_data, tmp_path):
    example = shared_data / "totalseg_example"
    result = run_without_vtk(
        "synthesize",
        str(example / "example_ct.nii.gz"),
        "--organs",
        str(example / "example_seg_fast_force_split.nii.gz"),
        "--organ",
        "liver",
        "--count",
        "2",
        "--seed",
        "7",
        "-o",
        str(tmp_path / "out"),
    )
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "out" / "snapshot.png").exists()
    assert (tmp_path / "out" / "ct.nii.gz").is_file()
    warnings = _warnings(result.stderr)
    assert len(warnings) == 1 and "[render]" in warnings[0]


@pytest.mark.slow
def test_vtt_create_without_vtk(shared_data, tmp_path):
    deeplesion = shared_data / "deeplesion_medsam2"
    real = {
        "training": [
            {
                "image": str(deeplesion / "000015_01_01_103-115_ct_hu.nii.gz"),
                "label": str(deeplesion / "000015_01_01_103-115_lesion_mask_DERIVED.nii.gz"),
                "organ": "liver",
            }
        ]
    }
    example = shared_data / "totalseg_example"
    hosts = {
        "training": [
            {
                "image": str(example / "example_ct.nii.gz"),
                "label": str(example / "example_seg_fast_force_split.nii.gz"),
            }
        ]
    }
    (tmp_path / "real.json").write_text(json.dumps(real))
    (tmp_path / "hosts.json").write_text(json.dumps(hosts))
    result = run_without_vtk(
        "vtt",
        "create",
        "--real",
        str(tmp_path / "real.json"),
        "--synthetic-from",
        str(tmp_path / "hosts.json"),
        "-o",
        str(tmp_path / "study"),
        "--key",
        str(tmp_path / "key.json"),
        "--allow-leaky",
    )
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "study" / "cases").iterdir())) == 2
    vtk_warnings = [line for line in _warnings(result.stderr) if "VTK" in line]
    assert len(vtk_warnings) == 1 and "[render]" in vtk_warnings[0]
