"""Writes that are really atomic: a full disk, a failing writer, or a kill between two files never
leaves an incomplete or mixed output set under the final names."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from freetumor_core.cli import main as cli_main
from freetumor_core.errors import InputError
from freetumor_core.files import (
    STAGING_PREFIX,
    TEMPORARY_PREFIX,
    clean_folder,
    output_set,
    refuse_input_folder,
    write_json,
)
from freetumor_core.labels import read_labels
from freetumor_core.phantom import make_phantom
from freetumor_core.synthesis import TumorSpec, synthesize
from freetumor_core.synthesis.outputs import write_result
from freetumor_core.volume import read_volume, write_volume

SET_NAMES = ["ct.nii.gz", "labels.json", "labels.nii.gz", "snapshot.png", "tumors.json"]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A 2 mm phantom CT and labels on disk (its CT is about 2 MB compressed)."""
    folder = tmp_path_factory.mktemp("source")
    ct, labels = make_phantom(seed=0, spacing_mm=2.0)
    write_volume(ct, folder / "ct.nii.gz")
    labels.save(folder / "labels.nii.gz")
    return folder


@pytest.fixture(scope="module")
def results(source: Path):
    ct, labels = read_volume(source / "ct.nii.gz"), read_labels(source / "labels.nii.gz")
    spec = TumorSpec(organ="liver", size="small")
    return [synthesize(ct, labels, spec, seed=seed) for seed in (1, 2)]


def _snapshot_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _tumor_overlap(folder: Path) -> float:
    """Share of the labelled tumor voxels where the CT in the folder differs from the host CT: 1 for
    a whole set, about 0 for a new CT beside old labels."""
    labels = read_labels(folder / "labels.nii.gz")
    tumor = np.isin(labels.array, [i for i, n in labels.names.items() if n.endswith("_tumor")])
    ct = read_volume(folder / "ct.nii.gz").array
    host = make_phantom(seed=0, spacing_mm=2.0)[0].array
    return float(np.mean(ct[tumor] != host[tumor]))


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture()
def small_disk(tmp_path: Path):
    """A real 1 MB tmpfs (needs root and mount); skipped with the reason elsewhere."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a 1 MB tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


def test_full_disk_leaves_nothing_under_the_final_names(results, small_disk: Path) -> None:
    with pytest.raises(InputError, match="writing failed") as error:
        write_result(results[0], small_disk)
    assert "ct.nii.gz" in str(error.value) or "disk full" in str(error.value)
    assert list(small_disk.iterdir()) == []


def test_full_disk_on_the_command_line_exits_2(source: Path, small_disk: Path, capsys) -> None:
    code = cli_main(
        ["synthesize", str(source / "ct.nii.gz"), "--organs", str(source / "labels.nii.gz")]
        + ["-o", str(small_disk), "--no-snapshot"]
    )
    assert code == 2
    assert str(small_disk) in capsys.readouterr().err
    assert list(small_disk.iterdir()) == []


def test_read_only_folder_exits_2(source: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs here")
    try:
        code = cli_main(
            [
                "synthesize",
                str(source / "ct.nii.gz"),
                "--organs",
                str(source / "labels.nii.gz"),
                "-o",
                str(folder),
            ]
        )
    finally:
        subprocess.run(["umount", str(folder)], check=False)
    assert code == 2
    error = capsys.readouterr().err
    assert str(folder) in error and "not writable" in error


def _truncating_write(original, keep_bytes: int):
    def write(image, path, *args, **kwargs):
        original(image, path, *args, **kwargs)
        with open(path, "r+b") as handle:  # what a full disk does to SimpleITK: no error, a short file
            handle.truncate(keep_bytes)

    return write


@pytest.mark.parametrize(
    "member", ["ct.nii.gz", "labels.nii.gz", "labels.json", "tumors.json", "snapshot.png"]
)
def test_injected_failure_of_any_member_keeps_the_old_set(
    results, tmp_path: Path, monkeypatch, member
) -> None:
    folder = tmp_path / "out"
    write_result(results[0], folder)
    before = _snapshot_of(folder)
    assert sorted(before) == SET_NAMES
    if member.endswith(".nii.gz"):
        original = sitk.WriteImage

        def write(image, path, *args, **kwargs):
            # Temporary names keep only the suffix: tell the CT (int16 HU) from the labels by type.
            is_ct = image.GetPixelID() == sitk.sitkInt16
            failing = is_ct == (member == "ct.nii.gz")
            writer = _truncating_write(original, 0 if member == "labels.nii.gz" else 4096)
            (writer if failing else original)(image, path, *args, **kwargs)

        monkeypatch.setattr(sitk, "WriteImage", write)
    elif member.endswith(".json"):
        original_bytes = Path.write_bytes

        def write_bytes(self, data, *args, **kwargs):
            if (
                self.name.endswith(".json")
                and member in ("labels.json", "tumors.json")
                and ((b"tumors" in data) == (member == "tumors.json"))
            ):
                raise OSError(errno.ENOSPC, "No space left on device", str(self))
            return original_bytes(self, data, *args, **kwargs)

        monkeypatch.setattr(Path, "write_bytes", write_bytes)
    else:
        import freetumor_core.render as render

        def short_png(vtk, producer, path):
            with render.atomic_output(path) as temporary:
                temporary.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)  # no end chunk
            return path

        monkeypatch.setattr(render, "_write_png_atomically", short_png)
    with pytest.raises(InputError, match="writing failed") as error:
        write_result(results[1], folder)
    assert member in str(error.value)
    assert _snapshot_of(folder) == before
    assert _hidden(folder) == []


def test_set_replaces_members_it_does_not_write(results, tmp_path: Path) -> None:
    write_result(results[0], tmp_path)
    write_result(results[1], tmp_path, snapshot=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ct.nii.gz",
        "labels.json",
        "labels.nii.gz",
        "tumors.json",
    ]


KILLER = """
import os, signal, sys
import freetumor_core.files as files
from freetumor_core.cli import main
output = os.path.realpath(sys.argv[1])
stage = sys.argv[2]
real_replace = os.replace
renamed = []
def replace(source, target):
    real_replace(source, target)
    if os.path.dirname(os.path.realpath(target)) == output:
        renamed.append(target)
        if stage == "between-renames" and len(renamed) == 1:
            os.kill(os.getpid(), signal.SIGKILL)
files.os.replace = replace
real_write = files.verify_output
def verify(path, name=None, *rest):
    if stage == "before-journal" and str(name).endswith("tumors.json"):
        os.kill(os.getpid(), signal.SIGKILL)
    return real_write(path, name, *rest)
files.verify_output = verify
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.parametrize("stage", ["between-renames", "before-journal"])
def test_sigkill_during_a_set_is_repaired_by_the_next_run(source: Path, tmp_path: Path, stage: str) -> None:
    folder = tmp_path / "out"
    arguments = ["synthesize", str(source / "ct.nii.gz"), "--organs", str(source / "labels.nii.gz")]
    arguments += ["-o", str(folder), "--no-snapshot"]
    assert cli_main([*arguments, "--seed", "1"]) == 0
    old = _snapshot_of(folder)
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, str(folder), stage, *arguments, "--seed", "2"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    # Only hidden leftovers, and the visible files are never a partial write.
    assert all(name.startswith(STAGING_PREFIX) for name in _hidden(folder))
    if stage == "between-renames":
        # Old members leave before new ones come in: part of the new set, never beside old files.
        visible = {k: v for k, v in _snapshot_of(folder).items() if not k.startswith(".")}
        assert visible and visible != old
        changing = ("ct.nii.gz", "labels.nii.gz", "tumors.json")  # labels.json may be the same
        assert not any(old[name] == visible[name] for name in changing if name in visible)
    else:
        assert {k: v for k, v in _snapshot_of(folder).items() if not k.startswith(".")} == old
    clean_folder(folder)
    assert _hidden(folder) == []
    if stage == "between-renames":
        # Rolled forward: every file is from the killed run, which finished writing them.
        reference = tmp_path / "reference"
        assert cli_main([*arguments[:-3], "-o", str(reference), "--no-snapshot", "--seed", "2"]) == 0
        assert json.loads((folder / "tumors.json").read_text()) == json.loads(
            (reference / "tumors.json").read_text()
        )
        for name in ("ct.nii.gz", "labels.nii.gz"):
            assert np.array_equal(read_volume(folder / name).array, read_volume(reference / name).array)
        assert _tumor_overlap(folder) == 1.0
    else:
        assert _snapshot_of(folder) == old
        assert _tumor_overlap(folder) == 1.0


def test_leftover_temporary_files_are_hidden_and_removed(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f"{TEMPORARY_PREFIX}{dead.pid}.0badf00d.nii.gz").write_bytes(b"half")
    staging = tmp_path / f"{STAGING_PREFIX}{dead.pid}.0badf00d"
    staging.mkdir()
    (staging / "ct.nii.gz").write_bytes(b"half")
    mine = tmp_path / f"{TEMPORARY_PREFIX}{os.getpid()}.00000000.json"  # a live writer's: kept
    mine.write_text("{}")
    write_json(tmp_path / "scores.json", {"ok": True})
    assert sorted(p.name for p in tmp_path.iterdir()) == [mine.name, "scores.json"]
    with output_set(tmp_path) as staged:
        write_json(staged.path("a.json"), [1])
    assert sorted(p.name for p in tmp_path.iterdir()) == [mine.name, "a.json", "scores.json"]


def test_output_folder_that_holds_the_input_is_refused(source: Path, tmp_path: Path, capsys) -> None:
    before = _snapshot_of(source)
    code = cli_main(
        [
            "synthesize",
            str(source / "ct.nii.gz"),
            "--organs",
            str(source / "labels.nii.gz"),
            "-o",
            str(source),
        ]
    )
    assert code == 2
    assert "holds the input" in capsys.readouterr().err
    assert _snapshot_of(source) == before
    with pytest.raises(InputError, match="holds the input"):
        refuse_input_folder(source / "." / "", [source / "ct.nii.gz"])
    refuse_input_folder(tmp_path, [source / "ct.nii.gz", None])


def test_output_folder_that_is_a_file_exits_2(source: Path, tmp_path: Path) -> None:
    target = tmp_path / "file.txt"
    target.write_text("x")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli_main(
            [
                "synthesize",
                str(source / "ct.nii.gz"),
                "--organs",
                str(source / "labels.nii.gz"),
                "-o",
                str(target),
            ]
        )
    assert code == 2 and "is an existing file" in err.getvalue() and str(target) in err.getvalue()
    assert target.read_text() == "x"
