"""The reader-study store and API: locking, resuming, several processes, SIGKILL, bad input.

The study here holds real lesions only (IRCADb liver tumours and the DeepLesion HU mass, each
cropped three times), because the store does not care where a case came from.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import real_lesion_entries

from freetumor_core.cli import main as cli_main
from freetumor_core.errors import InputError
from freetumor_core.turing.build import StudyCase, write_study
from freetumor_core.turing.datalist import read_datalist
from freetumor_core.turing.realcases import read_real_lesions
from freetumor_core.turing.scoring import wilson_interval
from freetumor_core.turing.store import AnswerLocked, reader_order
from freetumor_core.turing.study import Study

# A reader process: answers its remaining cases from a plan, printing each answer after commit.
READER_SCRIPT = """
import json, sys, time
from freetumor_core.turing.study import Study
from freetumor_core.turing.store import AnswerLocked
folder, reader, plan_path, pause_s = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
plan = json.load(open(plan_path))
study = Study.open(folder)
print(json.dumps({"start": study.cases(reader)}), flush=True)
for case_id in study.cases(reader):
    call, confidence = plan[case_id]
    try:
        study.answer(reader, case_id, call, confidence, comment=f"{reader} on {case_id}")
    except AnswerLocked:
        print(json.dumps({"locked": case_id}), flush=True)
        continue
    print(json.dumps({"committed": case_id}), flush=True)
    time.sleep(pause_s)
print(json.dumps({"finished": True}), flush=True)
"""


@pytest.fixture(scope="module")
def template_study(shared_data: Path, tmp_path_factory) -> Path:
    """A 9-case study (3 real lesions, each cropped three times); tests copy it before writing."""
    folder = tmp_path_factory.mktemp("template")
    datalist = folder / "real.json"
    entries = real_lesion_entries(shared_data)
    datalist.write_text(json.dumps({"training": entries}))
    lesions = [lesion for entry in read_datalist(datalist) for lesion in read_real_lesions(entry)]
    cases = [
        StudyCase("real", lesion.record.organ, lesion.ct, lesion.mask, [lesion.record], lesion.source)
        for lesion in lesions
        for _ in range(3)
    ]
    write_study(folder / "study", folder / "key.json", cases, seed=11)
    return folder / "study"


@pytest.fixture()
def study_folder(template_study: Path, tmp_path: Path) -> Path:
    target = tmp_path / "study"
    shutil.copytree(template_study, target)
    return target


def _plan(study: Study, path: Path, seed: int) -> dict[str, list]:
    rng = np.random.default_rng(seed)
    plan = {
        case_id: [str(rng.choice(["real", "synthetic"])), int(rng.integers(1, 6))]
        for case_id in study.case_ids
    }
    path.write_text(json.dumps(plan))
    return plan


def _reader(folder: Path, reader: str, plan_path: Path, pause_s: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", READER_SCRIPT, str(folder), reader, str(plan_path), str(pause_s)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_answers_are_locked_ordered_and_resumable(study_folder: Path) -> None:
    study = Study.open(study_folder)
    order = study.order("alice")
    assert sorted(order) == study.case_ids
    # Each reader has an own random order, saved at first use: the same in a fresh process.
    assert Study.open(study_folder).order("alice") == order
    assert sorted(reader_order(study.case_ids)) == study.case_ids
    assert study.order("alice") != study.order("bob")

    first = study.answer("alice", order[0], "synthetic", 4, comment="edge too sharp")
    assert first.seconds_spent is None and first.comment == "edge too sharp"
    with pytest.raises(AnswerLocked, match="already answered"):
        study.answer("alice", order[0], "real", 2)
    # A fresh process (a new Study) sees the answer and resumes after it.
    again = Study.open(study_folder)
    assert again.cases("alice") == order[1:]
    assert [a.call for a in again.answers("alice")] == ["synthetic"]

    # Showing a case starts the clock; the answer records the time spent.
    view = again.case_image(order[1], reader="alice")
    assert view.volume.array.dtype == np.int16 and view.volume.shape == (24, 128, 128)
    assert set(view.window) == {"name", "level_hu", "width_hu"}
    time.sleep(0.2)
    answer = again.answer("alice", order[1], "real", 3)
    assert answer.started_at == view.shown_at
    assert 0.2 <= answer.seconds_spent < 30
    # An explicit start time wins.
    answer = again.answer("alice", order[2], "real", 5, started_at="2020-01-01T00:00:00Z")
    assert answer.seconds_spent > 1e8


def test_bad_answers_are_refused(study_folder: Path) -> None:
    study = Study.open(study_folder)
    case_id = study.case_ids[0]
    bad = [
        (("alice", "case-000000", "real", 3), "no case 'case-000000'"),
        (("alice", case_id, "maybe", 3), "call must be"),
        (("alice", case_id, "real", 0), "confidence must be"),
        (("alice", case_id, "real", 6), "confidence must be"),
        (("alice", case_id, "real", 2.5), "confidence must be"),
        (("alice", case_id, "real", True), "confidence must be"),
        (("", case_id, "real", 3), "reader name"),
        (("../x", case_id, "real", 3), "reader name"),
        ((" alice", case_id, "real", 3), "reader name"),
    ]
    for arguments, message in bad:
        with pytest.raises(InputError, match=message):
            study.answer(*arguments)
    with pytest.raises(InputError, match="ISO 8601"):
        study.answer("alice", case_id, "real", 3, started_at="yesterday")
    with pytest.raises(InputError, match="in the future"):
        study.answer("alice", case_id, "real", 3, started_at="2999-01-01T00:00:00+00:00")
    assert study.answers() == []


def test_bad_study_folders_get_clear_errors(study_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="study folder not found"):
        Study.open(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"no study.json"):
        Study.open(tmp_path / "empty")

    manifest = study_folder / "study.json"
    original = manifest.read_text()
    manifest.write_text(original[: len(original) // 2])
    with pytest.raises(InputError, match=r"study.json: study manifest is not valid JSON"):
        Study.open(study_folder)
    data = json.loads(original)
    data["format"] = "something-else"
    manifest.write_text(json.dumps(data))
    with pytest.raises(InputError, match="not a study manifest"):
        Study.open(study_folder)
    data = json.loads(original)
    del data["cases"][next(iter(data["cases"]))]["box_mm"]
    manifest.write_text(json.dumps(data))
    with pytest.raises(InputError, match="malformed"):
        Study.open(study_folder)
    data = json.loads(original)
    data["study_id"] = "another-study"
    manifest.write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"study.db: database belongs to study"):
        Study.open(study_folder)
    manifest.write_text(original)

    case_file = study_folder / json.loads(original)["cases"][Study.open(study_folder).case_ids[0]]["file"]
    moved = case_file.with_suffix(".moved")
    case_file.rename(moved)
    with pytest.raises(InputError, match=r"case file of case-.* is missing"):
        Study.open(study_folder)
    moved.rename(case_file)

    database = study_folder / "study.db"
    database.write_bytes(b"this is not a database" * 100)
    with pytest.raises(InputError, match=r"study.db"):
        Study.open(study_folder)
    database.unlink()
    with pytest.raises(InputError, match="study database not found"):
        Study.open(study_folder)


def test_two_reader_processes_write_at_once(study_folder: Path, tmp_path: Path) -> None:
    study = Study.open(study_folder)
    plans = {name: _plan(study, tmp_path / f"{name}.json", seed) for seed, name in enumerate(("ann", "ben"))}
    processes = {name: _reader(study_folder, name, tmp_path / f"{name}.json", 0.0) for name in plans}
    for name, process in processes.items():
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        committed = [json.loads(line)["committed"] for line in out.splitlines() if "committed" in line]
        assert committed == study.order(name)
    for name, plan in plans.items():
        stored = {a.case_id: [a.call, a.confidence] for a in study.answers(name)}
        assert stored == plan
    assert study.store.integrity() == "ok"


def test_racing_the_same_answer_stores_it_once(study_folder: Path, tmp_path: Path) -> None:
    """Two processes of one reader submit the same cases: each case is stored once, the other
    submission is refused as locked."""
    study = Study.open(study_folder)
    plan_path = tmp_path / "plan.json"
    plan = _plan(study, plan_path, 5)
    processes = [_reader(study_folder, "cara", plan_path, 0.0) for _ in range(2)]
    committed, locked = [], []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        events = [json.loads(line) for line in out.splitlines()]
        committed += [e["committed"] for e in events if "committed" in e]
        locked += [e["locked"] for e in events if "locked" in e]
    assert sorted(committed) == study.case_ids
    stored = study.answers("cara")
    assert sorted(a.case_id for a in stored) == study.case_ids
    assert {a.case_id: [a.call, a.confidence] for a in stored} == plan
    # Every case that both processes had still open was refused to one of them.
    assert len(committed) + len(locked) >= len(study.case_ids)


def test_sigkill_loses_no_committed_answer_and_resumes(study_folder: Path, tmp_path: Path) -> None:
    study = Study.open(study_folder)
    plan_path = tmp_path / "plan.json"
    plan = _plan(study, plan_path, 9)
    reported: list[str] = []
    rng = np.random.default_rng(0)
    kills = 0
    for _ in range(3):
        remaining = study.cases("dora")  # read before the next process starts answering
        process = _reader(study_folder, "dora", plan_path, 0.03)
        lines = iter(process.stdout.readline, "")
        start = json.loads(next(lines))["start"]
        assert start == remaining  # resumes exactly where the last process stopped
        # Kill mid-session: after its first committed answer, at a random moment of the next one.
        first = json.loads(next(lines))
        if "finished" in first:
            break
        reported.append(first["committed"])
        time.sleep(float(rng.uniform(0.0, 0.025)))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        rest = process.stdout.read()
        process.stdout.close()
        process.stderr.close()
        kills += process.returncode == -signal.SIGKILL
        reported += [json.loads(line)["committed"] for line in rest.splitlines() if "committed" in line]
        # Nothing corrupt, nothing reported lost, nothing answered twice.
        assert study.store.integrity() == "ok"
        stored = [a.case_id for a in study.answers("dora")]
        assert set(reported) <= set(stored)
        assert len(set(stored)) == len(stored)
        assert study.cases("dora") == [case for case in study.order("dora") if case not in stored]
    assert kills >= 2
    # Finish the session without interruption.
    process = _reader(study_folder, "dora", plan_path, 0.0)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert study.cases("dora") == []
    assert {a.case_id: [a.call, a.confidence] for a in study.answers("dora")} == plan
    connection = sqlite3.connect(study_folder / "study.db")
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    connection.close()


def test_headless_commands(study_folder: Path, capsys) -> None:
    folder = str(study_folder)
    assert cli_main(["vtt", "cases", folder, "--reader", "eve"]) == 0
    order = json.loads(capsys.readouterr().out)
    assert order == Study.open(study_folder).order("eve")
    assert cli_main(["vtt", "show", folder, "--reader", "eve", "--case", order[0]]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert Path(shown["file"]).is_file() and shown["box_mm"]["low"] <= shown["box_mm"]["high"]
    arguments = ["vtt", "answer", folder, "--reader", "eve", "--case", order[0], "--call", "real"]
    assert cli_main([*arguments, "--confidence", "4", "--comment", "looks real"]) == 0
    stored = json.loads(capsys.readouterr().out)
    assert stored["call"] == "real" and stored["started_at"] == shown["shown_at"]
    assert cli_main([*arguments, "--confidence", "2"]) == 2
    assert "already answered" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli_main([*arguments[:-1], "maybe", "--confidence", "2"])
    assert exit_info.value.code == 2
    assert cli_main(["vtt", "cases", folder, "--reader", "eve"]) == 0
    assert json.loads(capsys.readouterr().out) == order[1:]
    assert cli_main(["vtt", "info", folder, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["readers"] == {"eve": {"answered": 1, "remaining": 8}}
    assert cli_main(["vtt", "cases", os.fspath(study_folder.parent), "--reader", "eve"]) == 2
    assert "no study.json" in capsys.readouterr().err


def test_score_against_a_key_by_hand(study_folder: Path, tmp_path: Path, capsys) -> None:
    """A key written by hand for the study's case ids, answers given by hand, counts done by hand."""
    study = Study.open(study_folder)
    ids = study.case_ids  # 9 cases
    origins = ["synthetic"] * 5 + ["real"] * 4
    organs = ["liver", "liver", "pancreas", "pancreas", "liver", "liver", "liver", "pancreas", "pancreas"]
    diameters = [15.0, 30.0, 15.0, 50.0, 30.0, 15.0, 30.0, 50.0, 15.0]
    key = {
        "study_id": study.study_id,
        "cases": {
            case_id: {
                "origin": origin,
                "organ": organ,
                "tumors": [{"diameter_mm": diameter, "organ": organ}],
            }
            for case_id, origin, organ, diameter in zip(ids, origins, organs, diameters, strict=True)
        },
    }
    key_path = tmp_path / "key.json"
    key_path.write_text(json.dumps(key))
    # Reader "r1": synthetic cases S S R S R, real cases R S R R; confidences 5 4 2 3 1 | 5 2 4 3.
    r1 = ["synthetic", "synthetic", "real", "synthetic", "real", "real", "synthetic", "real", "real"]
    c1 = [5, 4, 2, 3, 1, 5, 2, 4, 3]
    # Reader "r2" answers only the first 6 cases: S R R S S | S.
    r2 = ["synthetic", "real", "real", "synthetic", "synthetic", "synthetic"]
    c2 = [4, 4, 4, 2, 2, 2]
    for case_id, call, confidence in zip(ids, r1, c1, strict=True):
        study.answer("r1", case_id, call, confidence)
    for case_id, call, confidence in zip(ids[:6], r2, c2, strict=True):
        study.answer("r2", case_id, call, confidence)
    arguments = ["vtt", "score", str(study_folder), "--key", str(key_path)]
    outputs = [
        "--json",
        str(tmp_path / "s.json"),
        "--csv",
        str(tmp_path / "a.csv"),
        "--png",
        str(tmp_path / "f.png"),
    ]
    assert cli_main([*arguments, *outputs]) == 0
    assert "pooled" in capsys.readouterr().out
    scores = json.loads((tmp_path / "s.json").read_text())

    # r1: synthetic called synthetic 3/5, real called real 3/4, right 6/9.
    reader = scores["readers"]["r1"]
    assert (reader["sensitivity"], reader["specificity"], reader["accuracy"]) == (3 / 5, 3 / 4, 6 / 9)
    # r2: synthetic 3/5, real 0/1, right 3/6.
    reader = scores["readers"]["r2"]
    assert (reader["sensitivity"], reader["specificity"], reader["accuracy"]) == (3 / 5, 0.0, 3 / 6)
    # Pooled: 6/10, 3/5, 9/15 with Wilson intervals.
    pooled = scores["pooled"]
    assert (pooled["n"], pooled["sensitivity"], pooled["specificity"], pooled["accuracy"]) == (
        15,
        0.6,
        0.6,
        0.6,
    )
    assert pooled["sensitivity_ci95"] == pytest.approx(list(wilson_interval(6, 10)))
    assert pooled["accuracy_ci95"] == pytest.approx(list(wilson_interval(9, 15)))
    # By organ (pooled): liver = cases 0, 1, 4 (synthetic) and 5, 6 (real).
    # r1 calls S S R | R S: right on 0, 1, 5; r2 (cases < 6) calls S R S | S: right on 0, 4.
    # n = 5 + 4 = 9, right 5; synthetic right 4 of 6; real right 1 of 3.
    liver = pooled["by_organ"]["liver"]
    assert (liver["n"], liver["accuracy"], liver["sensitivity"], liver["specificity"]) == (
        9,
        5 / 9,
        4 / 6,
        1 / 3,
    )
    # By size: small (15 mm) = cases 0,2,5,8: r1 right on 0,5,8; r2 right on 0 -> 4/7.
    assert pooled["by_size"]["small"]["accuracy"] == pytest.approx(4 / 7)
    assert set(pooled["by_size"]) == {"small", "medium", "large"}
    # By confidence (pooled): confidence 4 = r1 cases 1,7 (right, right) + r2 cases 0,1,2 (right,
    # wrong, wrong) -> 3/5; confidence 1 = r1 case 4 (wrong) -> 0/1.
    assert pooled["by_confidence"]["4"] == {
        "n": 5,
        "accuracy": 0.6,
        "accuracy_ci95": list(wilson_interval(3, 5)),
    }
    assert pooled["by_confidence"]["1"]["accuracy"] == 0.0
    # Agreement over the 6 cases both answered: r1 S S R S R R, r2 S R R S S S -> agree on 0, 2, 3.
    # P = 3/6; shares: synthetic 7/12, real 5/12 -> chance 74/144; kappa = (1/2 - 74/144) / (70/144).
    assert scores["agreement"]["n_cases"] == 6
    assert scores["agreement"]["fleiss_kappa"] == pytest.approx((1 / 2 - 74 / 144) / (70 / 144))

    lines = (tmp_path / "a.csv").read_text().splitlines()
    assert len(lines) == 16 and lines[0].startswith("reader,case_id,origin,organ,size_class,call,correct")
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # A key for another study, or one that lacks cases, is refused with the key file named.
    wrong = dict(key, study_id="another")
    (tmp_path / "wrong.json").write_text(json.dumps(wrong))
    assert cli_main(["vtt", "score", str(study_folder), "--key", str(tmp_path / "wrong.json")]) == 2
    assert "wrong.json: key belongs to study another" in capsys.readouterr().err
    partial = dict(key, cases=dict(list(key["cases"].items())[:3]))
    (tmp_path / "partial.json").write_text(json.dumps(partial))
    assert cli_main(["vtt", "score", str(study_folder), "--key", str(tmp_path / "partial.json")]) == 2
    assert "key and study cases differ" in capsys.readouterr().err
