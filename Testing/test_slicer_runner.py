"""The Slicer process runner on real ``freetumor`` subprocesses, driven through ``poll()`` (no Qt)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "FreeTumorSlicer"))
from FreeTumorLib.runner import CoreProcess, CoreProcessError, core_command

from freetumor_core.volume import Volume, write_volume


def _collector():
    seen: dict[str, list] = {"progress": [], "done": [], "error": [], "log": []}
    callbacks = {
        "on_progress": seen["progress"].append,
        "on_done": seen["done"].append,
        "on_error": seen["error"].append,
        "on_log": seen["log"].append,
    }
    return seen, callbacks


def test_command_runs_the_core_module_with_json_progress():
    command = core_command(["phantom", "-o", "out"], python="/opt/python")
    assert command == ["/opt/python", "-m", "freetumor_core", "phantom", "-o", "out", "--progress", "json"]


def test_progress_events_and_result_arrive_through_poll(tmp_path):
    seen, callbacks = _collector()
    process = CoreProcess(["demo", "-o", tmp_path / "demo"], **callbacks).start()
    polls = 0
    while process.poll():
        polls += 1
        time.sleep(0.02)
    assert polls > 0, "poll() reported the end before the process could have finished"
    assert process.exit_code == 0 and not process.running
    assert seen["error"] == []
    # Every step of the demo, in order, from 0 to its total.
    assert {event["task"] for event in seen["progress"]} == {"demo"}
    total = seen["progress"][0]["total"]
    assert total >= 2
    assert [event["done"] for event in seen["progress"]] == list(range(total + 1))
    assert len(seen["done"]) == 1
    outputs = seen["done"][0]["outputs"]
    assert Path(outputs["ct"]).is_file() and Path(outputs["labels"]).is_file()
    # Polling after the end changes nothing and calls nothing again.
    assert process.poll() is False
    assert len(seen["done"]) == 1


def test_bad_input_file_gives_a_clear_error_with_exit_code_2(tmp_path):
    broken = write_volume(Volume(np.full((8, 16, 16), -1000, np.int16)), tmp_path / "broken_ct.nii.gz")
    broken.write_bytes(broken.read_bytes()[:-20])  # cut off the end of the compressed stream
    seen, callbacks = _collector()
    process = CoreProcess(["info", broken], **callbacks).start()
    assert process.wait(timeout_s=60)
    assert seen["done"] == []
    [error] = seen["error"]
    assert isinstance(error, CoreProcessError)
    assert error.exit_code == 2 == process.exit_code
    assert str(broken) in error.message and "truncated" in error.message
    assert str(error).startswith("freetumor info: bad input (exit code 2): ")
    assert "truncated" in error.stderr


def test_cancel_kills_the_process_group(tmp_path):
    seen, callbacks = _collector()
    output = tmp_path / "phantom"
    process = CoreProcess(["phantom", "-o", output], **callbacks).start()
    process.cancel()
    assert process.wait(timeout_s=30)
    assert process.cancelled and process.exit_code != 0
    [error] = seen["error"]
    assert error.message == "cancelled"
    assert seen["done"] == []
    assert not (output / "ct.nii.gz").exists()
    if os.name == "posix":
        # Nothing of the process group is left.
        with pytest.raises(ProcessLookupError):
            os.killpg(process.pid, 0)
