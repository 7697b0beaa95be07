"""The Reports panel's jobs on real MRML (``slicer-core``) and a real ``freetumor reports``
subprocess: a CT node -> ``reports match`` -> a table of matched reports with their sentences; a
text -> ``reports search`` -> CT hits, one loaded back as a node; Cancel; a foreign index fails
with exit code 2 and adds no nodes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import slicer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "FreeTumorSlicer"))
from FreeTumorLib import nodes
from FreeTumorLib.reports import MatchJob, ReportsRequest, SearchJob, load_hit
from FreeTumorLib.runner import CoreProcessError
from test_reports_index import REPORTS
from test_reports_vision import tiny_model_folder

from freetumor_core.phantom import make_phantom
from freetumor_core.reports.index import build_ct_index, build_report_index, match_ct, read_index
from freetumor_core.reports.model import load_report_model
from freetumor_core.volume import read_ct, write_volume


@pytest.fixture(scope="module")
def indexes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reports")
    model = load_report_model(tiny_model_folder(folder / "model"), device="cpu")
    cts = []
    for seed in (1, 2):
        ct, _ = make_phantom(seed, spacing_mm=6.0)
        cts.append(write_volume(ct, folder / f"phantom{seed}.nii.gz"))
    build_report_index(model, REPORTS, folder / "reports_index")
    build_ct_index(model, cts, folder / "ct_index")
    return model, folder / "reports_index", folder / "ct_index", cts


@pytest.fixture
def scene():
    scene = slicer.vtkMRMLScene()
    yield scene
    scene.Clear(True)


def test_requests_check_their_settings():
    with pytest.raises(ValueError, match="index folder"):
        ReportsRequest(index=".")
    with pytest.raises(ValueError, match="from 1 to 100"):
        ReportsRequest(index="x", k=0)
    assert ReportsRequest(index="idx", k=3, model="m").common() == [
        "--index", "idx", "-k", "3", "--device", "auto", "--model", "m"
    ]  # fmt: skip
    with pytest.raises(ValueError, match="type a finding"):
        SearchJob("  ", ReportsRequest(index="x"))


@pytest.mark.slow
def test_match_this_ct_gives_a_table_of_reports_with_matched_sentences(scene, indexes):
    model, reports_index, _ct_index, cts = indexes
    ct = read_ct(cts[0])
    node = nodes.add_volume_node(scene, ct, "case")
    progress, done = [], []
    job = MatchJob(node, ReportsRequest(index=str(reports_index), k=2, device="cpu"),
                   on_progress=progress.append, on_done=done.append)  # fmt: skip
    job.start()
    assert job.wait(timeout_s=600)
    assert job.error is None and done == [job.outputs]
    assert not job.folder.exists()
    matches = job.outputs.matches
    expected = match_ct(model, ct, read_index(reports_index), k=2)
    assert [m.id for m in matches] == [r["id"] for r in expected]
    assert [m.score for m in matches] == pytest.approx([r["score"] for r in expected], abs=2e-3)
    table = job.outputs.table
    assert table.GetName() == "case report matches" and table.GetNumberOfRows() == 2
    assert table.GetCellText(0, 2) == matches[0].id
    assert matches[0].sentences and all(text in matches[0].text for text, _ in matches[0].sentences)


@pytest.mark.slow
def test_search_gives_ct_hits_and_a_click_loads_the_ct(scene, indexes):
    _model, _reports_index, ct_index, cts = indexes
    done = []
    job = SearchJob("hypodense liver lesion", ReportsRequest(index=str(ct_index), k=5, device="cpu"),
                    on_done=done.append)  # fmt: skip
    job.start()
    assert job.wait(timeout_s=600)
    assert job.error is None
    hits = done[0]
    assert sorted(hit.path for hit in hits) == sorted(str(p.resolve()) for p in cts)
    assert hits[0].score >= hits[1].score
    node = load_hit(scene, hits[0])
    loaded = nodes.volume_from_node(node)
    original = read_ct(hits[0].path)
    assert np.array_equal(loaded.array, original.array) and loaded.spacing == pytest.approx(original.spacing)


def test_a_foreign_index_fails_with_exit_code_2_and_cancel_stops_a_job(scene, indexes, tmp_path):
    _model, reports_index, _ct_index, cts = indexes
    node = nodes.add_volume_node(scene, read_ct(cts[0]), "case")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "index.json").write_text(json.dumps({"format": "other"}))
    errors = []
    job = MatchJob(node, ReportsRequest(index=str(foreign)), on_error=errors.append).start()
    assert job.wait(timeout_s=600)
    [error] = errors
    assert isinstance(error, CoreProcessError) and error.exit_code == 2
    assert "index.json" in error.message and "not a FreeTumor report index" in error.message
    tables = scene.GetNodesByClass("vtkMRMLTableNode")
    assert tables.GetNumberOfItems() == 0
    cancelled = []
    job = MatchJob(node, ReportsRequest(index=str(reports_index)), on_error=cancelled.append).start()
    job.cancel()
    assert job.wait(timeout_s=60)
    assert cancelled and cancelled[0].message == "cancelled"
    assert scene.GetNodesByClass("vtkMRMLTableNode").GetNumberOfItems() == 0
