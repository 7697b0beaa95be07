"""The core installs as a wheel: every module, the built-in label names and the console script."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_holds_package_data_and_entry_point(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("freetumor_core-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "freetumor = freetumor_core.cli:main" in archive.read(entry_points).decode()
        archive.extractall(tmp_path / "site")
    sources = {p.relative_to(REPO).as_posix() for p in (REPO / "freetumor_core").rglob("*.py")}
    assert sources <= names
    # Import from the unpacked wheel alone (not from the source tree) and read the package data.
    code = (
        "import freetumor_core, sys; from freetumor_core.labels import totalsegmentator_names; "
        "print(freetumor_core.__file__); print(len(totalsegmentator_names()))"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(tmp_path / 'site')!r}); {code}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    location, count = result.stdout.split()
    assert location.startswith(str(tmp_path / "site"))
    assert count == "117"
