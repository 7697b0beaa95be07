"""Progress reporters are passed in: nothing, a tqdm bar (rank 0 only) or JSON lines (with the rank
when distributed); library code never prints."""

from __future__ import annotations

import io
import json

import pytest

from freetumor_core.progress import BarProgress, JsonProgress, Progress, make_progress


def test_make_progress_kinds():
    assert type(make_progress(None)) is Progress
    assert type(make_progress("none")) is Progress
    assert isinstance(make_progress("bar"), BarProgress)
    assert isinstance(make_progress("json"), JsonProgress)
    reporter = JsonProgress()
    assert make_progress(reporter) is reporter
    with pytest.raises(ValueError, match="progress must be one of"):
        make_progress("loud")


def test_json_lines_count_every_item_and_carry_rank_only_when_distributed(monkeypatch):
    stream = io.StringIO()
    reporter = JsonProgress(stream)
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert list(reporter.track(["a", "b", "c"], "steps")) == ["a", "b", "c"]
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["done"] for line in lines] == [0, 1, 2, 3]
    assert all(line["total"] == 3 and line["task"] == "steps" for line in lines)
    assert all("rank" not in line for line in lines)

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    reporter.event("metrics", step=5, loss=0.5)
    last = json.loads(stream.getvalue().splitlines()[-1])
    assert last == {"event": "metrics", "step": 5, "loss": 0.5, "rank": 1}


def test_bar_is_drawn_by_rank_zero_only(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank, drawn in (("0", True), ("1", False)):
        monkeypatch.setenv("RANK", rank)
        stream = io.StringIO()
        for _ in BarProgress(stream).track(range(3), "work"):
            pass
        assert ("work" in stream.getvalue()) is drawn


def test_library_code_prints_nothing(tmp_path, capsys):
    from freetumor_core.demo import run_demo

    run_demo(tmp_path / "quiet", seed=3)
    assert capsys.readouterr().out == ""
    stream = io.StringIO()
    run_demo(tmp_path / "json", seed=3, progress=JsonProgress(stream))
    assert capsys.readouterr().out == ""
    tasks = {json.loads(line)["task"] for line in stream.getvalue().splitlines()}
    assert "demo" in tasks
