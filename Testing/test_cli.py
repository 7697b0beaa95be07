"""The `freetumor` command line: exit codes, messages, JSON progress, info, phantom, demo, bench."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from freetumor_core.cli import main


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "freetumor_core", *args], capture_output=True, text=True, timeout=300
    )


def test_help_lists_commands():
    result = run("--help")
    assert result.returncode == 0
    for command in ("info", "phantom", "demo", "bench"):
        assert command in result.stdout


def test_info_names_organs_with_volumes(shared_data):
    result = run("info", str(shared_data / "totalseg_example/example_seg_fast_force_split.nii.gz"))
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[7:]}
    for organ in ("liver", "spleen", "kidney_left", "kidney_right", "pancreas"):
        assert organ in lines
    assert "1125.68 mL" in lines["liver"]


def test_info_json_on_ct(shared_data, capsys):
    assert main(["info", str(shared_data / "totalseg_example/example_ct.nii.gz"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "image"
    assert info["spacing_mm"] == [3.0, 3.0, 3.0]
    assert info["hu"]["min"] == -1207 and info["hu"]["max"] == 3382


def test_corrupt_file_exits_2_naming_it(tmp_path, shared_data):
    corrupt = tmp_path / "corrupt_ct.nii.gz"
    corrupt.write_bytes((shared_data / "totalseg_example/example_ct.nii.gz").read_bytes()[:5000])
    result = run("info", str(corrupt))
    assert result.returncode == 2
    assert str(corrupt) in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_file_exits_2():
    result = run("info", "/definitely/not/here.nii.gz")
    assert result.returncode == 2
    assert "/definitely/not/here.nii.gz: file not found" in result.stderr


def test_phantom_command_writes_ct_and_labels(tmp_path):
    result = run("phantom", "-o", str(tmp_path), "--progress", "json")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[-1]["event"] == "done"
    assert (tmp_path / "ct.nii.gz").is_file() and (tmp_path / "labels.json").is_file()
    info = run("info", str(tmp_path / "labels.nii.gz"), "--json")
    assert "liver" in json.loads(info.stdout)["labels_ml"]


def test_json_progress_before_or_after_the_command(tmp_path):
    for args in (
        ["--progress", "json", "demo", "-o", str(tmp_path)],
        ["demo", "-o", str(tmp_path), "--progress", "json"],
    ):
        result = run(*args)
        assert result.returncode == 0, result.stderr
        events = [json.loads(line) for line in result.stdout.splitlines()]
        assert any(event["event"] == "progress" for event in events)
        assert events[-1]["event"] == "done"
        assert (tmp_path / "ct.nii.gz").is_file()


def test_bench_io_writes_the_documented_json(tmp_path, capsys):
    target = tmp_path / "io.json"
    assert main(["bench", "io", "--json", str(target), "--repeat", "2"]) == 0
    payload = json.loads(target.read_text())
    assert payload["suite"] == "io"
    assert {"cpu", "cores", "torch", "device"} <= set(payload["machine"])
    names = {row["name"]: row for row in payload["results"]}
    assert set(names) == {"read/nifti", "write/nifti"}
    for row in names.values():
        assert row["unit"] == "ms" and row["n"] == 2 and 0 < row["min"] <= row["median"] <= row["max"]
    assert "read/nifti" in capsys.readouterr().out


def test_unknown_bench_suite_exits_2(capsys):
    assert main(["bench", "nonsense"]) == 2
    assert "unknown benchmark suite" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["info"], ["nonsense"]])
def test_usage_errors_exit_2(argv):
    assert run(*argv).returncode == 2


def test_every_registered_suite_resolves():
    import importlib

    from freetumor_core.bench import SUITES

    for suite, target in SUITES.items():
        module_name, function_name = target.split(":")
        assert callable(getattr(importlib.import_module(module_name), function_name)), suite


def test_bench_turing_reports_case_and_answer_times(tmp_path):
    target = tmp_path / "turing.json"
    assert main(["bench", "turing", "--json", str(target), "--repeat", "1", "--option", "cases=4"]) == 0
    names = {row["name"]: row for row in json.loads(target.read_text())["results"]}
    assert set(names) == {"prepare_case", "answer", "remaining_cases"}
    assert all(row["median"] > 0 for row in names.values())


def test_peak_memory_of_a_probe_is_its_own_not_its_parents():
    import subprocess
    import sys

    import numpy as np

    held = np.ones(400 * 2**20 // 8)  # this process now holds 400 MB
    code = "from freetumor_core.bench import peak_rss_mb; print(peak_rss_mb())"
    child = float(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    )
    assert 5 < child < 300, child  # a fresh interpreter with numpy: tens of MB, never the parent's 400
    del held


def test_interleaved_timing_takes_turns():
    from freetumor_core.bench import Bench

    order: list[str] = []
    bench = Bench("demo", repeat=3)
    rows = bench.time_interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, warmup=1)
    assert order == ["a", "b"] * 4  # one warm-up round, then three timed rounds, in turns
    assert [row["name"] for row in rows] == ["a", "b"] and all(row["n"] == 3 for row in rows)
    # A prepared argument is made before each call of its function, outside the clock.
    made, got = [], []
    bench.time_interleaved(
        {"c": got.append}, warmup=0, repeat=2, prepare={"c": lambda: made.append(1) or len(made)}
    )
    assert got == [1, 2]


def test_bench_synthesis_reports_every_documented_result(tmp_path):
    target = tmp_path / "synthesis.json"
    assert main(["bench", "synthesis", "--json", str(target), "--repeat", "1"]) == 0
    rows = {row["name"]: row for row in json.loads(target.read_text())["results"]}
    sizes = [f"patch96/{size}" for size in ("tiny", "small", "medium", "large")]
    cold = [f"{name}/cold" for name in sizes]  # nothing kept from earlier calls
    in_place = [f"{name}/in_place" for name in sizes]  # on fresh copies made outside the clock
    assert set(rows) == {*sizes, *in_place, *cold, "whole_ct/small", "startup", "peak_rss"}
    assert all(rows[name]["unit"] == "ms" for name in [*sizes, *in_place, *cold, "whole_ct/small"])
    assert rows["startup"]["unit"] == "s" and rows["peak_rss"]["unit"] == "MB"
    assert 0 < rows["patch96/tiny"]["median"] < rows["patch96/large"]["median"]


def test_unnamed_label_map_says_totalsegmentator_names_were_assumed(shared_data, tmp_path):
    ircadb = shared_data / "ircadb_liver_tumor"
    result = run(
        "synthesize",
        str(ircadb / "ircadb1_17_ct.nii.gz"),
        "--organs",
        str(ircadb / "ircadb1_17_labels.nii.gz"),
        "-o",
        str(tmp_path / "out"),
    )
    assert result.returncode == 2
    assert "ircadb1_17_labels.nii.gz" in result.stderr
    assert "TotalSegmentator names were assumed" in result.stderr and "--label-names" in result.stderr
    named = run(
        "synthesize",
        str(ircadb / "ircadb1_17_ct.nii.gz"),
        "--organs",
        str(ircadb / "ircadb1_17_labels.nii.gz"),
        "--label-names",
        '{"1": "liver", "2": "liver_tumor", "3": "hepatic_vessels"}',
        "--no-snapshot",
        "-o",
        str(tmp_path / "named"),
    )
    assert named.returncode == 0, named.stderr
