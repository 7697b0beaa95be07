"""Atomic outputs: complete or absent, no temporary files left, ordinary permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from freetumor_core.errors import InputError
from freetumor_core.files import atomic_output, write_json, write_text


def test_output_gets_the_permissions_of_an_ordinary_file(tmp_path):
    previous = os.umask(0o022)
    try:
        path = write_text(tmp_path / "notes.txt", "hello")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_text() == "hello"


def test_failure_keeps_the_old_file_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "scores.json"
    write_json(target, {"accuracy": 0.5})
    with pytest.raises(RuntimeError), atomic_output(target) as temporary:
        temporary.write_text('{"accuracy": ')
        raise RuntimeError("cancelled half way")
    assert target.read_text() == '{\n "accuracy": 0.5\n}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.json"]


def test_temporary_name_keeps_the_format_suffix(tmp_path):
    import numpy as np
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.arange(24, dtype=np.int16).reshape(2, 3, 4))
    with atomic_output(tmp_path / "sub" / "ct.nii.gz") as temporary:
        assert temporary.name.endswith(".nii.gz") and temporary.parent == tmp_path / "sub"
        assert temporary.name.startswith(".")
        sitk.WriteImage(image, str(temporary))
    read = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "sub" / "ct.nii.gz")))
    assert read.tolist() == np.arange(24).reshape(2, 3, 4).tolist()


def test_text_of_known_length_may_be_empty_but_never_short(tmp_path, monkeypatch):
    assert write_text(tmp_path / "metrics.jsonl", "").read_text() == ""
    original = Path.write_bytes
    monkeypatch.setattr(Path, "write_bytes", lambda self, data: original(self, data[:3]))
    with pytest.raises(InputError, match="3 of 12 bytes written"):
        write_text(tmp_path / "log.jsonl", '{"step": 1}\n')
    assert not (tmp_path / "log.jsonl").exists()
