"""The Turing Test viewer's logic on real MRML (``slicer-core``) and a real study built from
``../shared/data``: a scripted reader answers, quits and resumes; nothing shown tells real from
synthetic; the organiser's scores equal ``freetumor vtt score``."""

from __future__ import annotations

import inspect
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import slicer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "FreeTumorSlicer"))
from conftest import real_lesion_entries
from FreeTumorLib import organiser
from FreeTumorLib.reading import REGION_NAME, ReaderSession

from freetumor_core.cli import main as cli_main
from freetumor_core.phantom import make_phantom
from freetumor_core.turing import AnswerLocked, Study, build_study
from freetumor_core.volume import write_volume

N_REAL = N_SYNTHETIC = 3


@pytest.fixture(scope="module")
def built_study(shared_data: Path, tmp_path_factory) -> tuple[Path, Path]:
    """3 real cases (the two IRCADb 17 liver tumors and the DeepLesion mass) and 3 synthetic ones
    in the phantom's liver; the sources differ in resolution, so the leak check is overridden."""
    folder = tmp_path_factory.mktemp("vtt")
    (folder / "real.json").write_text(json.dumps({"training": real_lesion_entries(shared_data)}))
    ct, labels = make_phantom(seed=0)
    write_volume(ct, folder / "phantom" / "ct.nii.gz")
    labels.save(folder / "phantom" / "labels.nii.gz")
    hosts = {"training": [{"image": "phantom/ct.nii.gz", "label": "phantom/labels.nii.gz"}]}
    (folder / "hosts.json").write_text(json.dumps(hosts))
    build_study(
        folder / "study",
        folder / "key.json",
        folder / "real.json",
        folder / "hosts.json",
        n_real=N_REAL,
        n_synthetic=N_SYNTHETIC,
        seed=1,
        allow_leaky=True,
    )
    return folder / "study", folder / "key.json"


@pytest.fixture
def study(built_study, tmp_path) -> tuple[Path, Path]:
    """A private copy of the study (answers are written into it)."""
    folder, key = built_study
    shutil.copytree(folder, tmp_path / "study")
    return tmp_path / "study", key


@pytest.fixture
def scene():
    scene = slicer.vtkMRMLScene()
    yield scene
    scene.Clear(True)


def _origins(key: Path) -> dict[str, str]:
    return {case_id: entry["origin"] for case_id, entry in json.loads(key.read_text())["cases"].items()}


def _plan(case_ids: list[str], origins: dict[str, str], right_every: int) -> dict[str, tuple[str, int]]:
    """A scripted reader: right on every ``right_every``-th case, confidence cycling 1-5."""
    plan = {}
    for index, case_id in enumerate(case_ids):
        truth = origins[case_id]
        wrong = "real" if truth == "synthetic" else "synthetic"
        plan[case_id] = (truth if index % right_every == 0 else wrong, index % 5 + 1)
    return plan


def test_reader_answers_quits_resumes_and_the_store_holds_the_answers(study, scene):
    folder, key = study
    origins = _origins(key)
    session = ReaderSession(scene, folder, "alice")
    order = Study.open(folder).order("alice")
    plan = _plan(order, origins, right_every=2)
    assert session.total == N_REAL + N_SYNTHETIC
    assert session.progress_text() == "case 1 of 6"
    for number in (1, 2):
        shown = session.show_next()
        assert (shown.number, shown.label) == (number, f"case {number} of 6")
        session.answer(*plan[order[number - 1]])
    # The third case is shown, then the reader quits without answering it.
    third = session.show_next()
    assert third.number == 3
    del session

    resumed = ReaderSession(slicer.vtkMRMLScene(), folder, "alice")
    assert resumed.answered_count == 2
    assert resumed.progress_text() == "case 3 of 6"
    shown = resumed.show_next()
    assert shown.number == 3
    # Committed answers are locked, as the store keeps them.
    with pytest.raises(AnswerLocked):
        resumed.study.answer("alice", order[0], "real", 1)
    while shown is not None:
        resumed.answer(*plan[order[shown.number - 1]], comment=f"case {shown.number}")
        shown = resumed.show_next()
    assert resumed.finished
    assert resumed.progress_text() == "finished: 6 of 6 answered"
    with pytest.raises(RuntimeError, match="no case is shown"):
        resumed.answer("real", 3)

    stored = Study.open(folder).answers("alice")
    assert [answer.case_id for answer in stored] == order
    assert {answer.case_id: (answer.call, answer.confidence) for answer in stored} == plan
    assert [answer.comment for answer in stored][2:] == [f"case {n}" for n in range(3, 7)]
    # Time spent is recorded; the case shown before quitting keeps the time it was first shown.
    assert all(answer.seconds_spent is not None and answer.seconds_spent >= 0 for answer in stored)
    third_answer = stored[2]
    assert third_answer.started_at is not None and third_answer.seconds_spent >= 0
    views = Study.open(folder).store
    assert views.record_view("alice", order[2]) == third_answer.started_at


def test_organiser_scores_equal_the_command_line(study, scene, tmp_path):
    folder, key = study
    origins = _origins(key)
    for reader, right_every in (("alice", 2), ("bob", 3)):
        session = ReaderSession(scene, folder, reader)
        order = Study.open(folder).order(reader)
        plan = _plan(order, origins, right_every)
        while (shown := session.show_next()) is not None:
            session.answer(*plan[order[shown.number - 1]])
    scores = organiser.score_study(folder, key, tmp_path / "scores")
    assert (
        cli_main(["vtt", "score", str(folder), "--key", str(key), "--json", str(tmp_path / "cli.json")]) == 0
    )
    from_cli = json.loads((tmp_path / "cli.json").read_text())
    outputs = scores.pop("outputs")
    assert json.loads(json.dumps(scores)) == from_cli
    assert json.loads(Path(outputs["json"]).read_text()) == from_cli
    assert Path(outputs["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(Path(outputs["csv"]).read_text().splitlines()) == 1 + 2 * 6
    # alice is right on cases 1, 3, 5 of her order: 3 of 6.
    assert from_cli["readers"]["alice"]["accuracy"] == pytest.approx(0.5)
    assert from_cli["agreement"]["n_readers"] == 2

    table = organiser.add_score_table(scene, scores)
    rows = organiser.score_rows(scores)
    assert [row["group"] for row in rows] == ["alice", "bob", "pooled"]
    assert table.GetTable().GetNumberOfRows() == 3
    low, high = from_cli["pooled"]["accuracy_ci95"]
    pooled = table.GetTable().GetColumnByName("accuracy").GetValue(2)
    assert pooled == f"{100 * from_cli['pooled']['accuracy']:.1f}% ({100 * low:.1f}-{100 * high:.1f})"
    kappa = from_cli["agreement"]["fleiss_kappa"]
    assert rows[-1]["fleiss_kappa"] == f"{kappa:.3f}" and rows[0]["fleiss_kappa"] == ""


def _signature(scene, shown) -> dict:
    """Everything a viewer could read from what a case put into the scene, except the voxels."""
    node = shown.volume_node
    display = node.GetDisplayNode()
    matrix = np.zeros((3, 3))
    directions = [[0.0] * 3 for _ in range(3)]
    node.GetIJKToRASDirections(directions)
    matrix[:] = directions
    names = [scene.GetNthNode(i).GetName() for i in range(scene.GetNumberOfNodes())]
    return {
        "name_pattern": re.sub(r"\d+", "N", node.GetName()),
        "attributes": tuple(node.GetAttributeNames() or ()),
        "storage": node.GetStorageNode(),
        "spacing": node.GetSpacing(),
        "origin": node.GetOrigin(),
        "direction": tuple(matrix.flatten()),
        "dimensions": node.GetImageData().GetDimensions(),
        "scalar_type": node.GetImageData().GetScalarTypeAsString(),
        "window_level": (display.GetAutoWindowLevel(), display.GetWindow(), display.GetLevel()),
        "colors": display.GetColorNodeID(),
        "region": (shown.region_node.GetName(), tuple(shown.region_node.GetAttributeNames() or ())),
        "window": tuple(sorted(shown.window.items())),
        "classes": tuple(sorted(scene.GetNthNode(i).GetClassName() for i in range(scene.GetNumberOfNodes()))),
        "node_names": tuple(sorted(re.sub(r"\d+", "N", name or "") for name in names)),
    }


def test_a_case_never_exposes_its_origin(study, scene):
    folder, key = study
    origins = _origins(key)
    manifest = json.loads((folder / "study.json").read_text())
    session = ReaderSession(scene, folder, "probe")
    order = Study.open(folder).order("probe")
    signatures: dict[str, list[dict]] = {"real": [], "synthetic": []}
    while (shown := session.show_next()) is not None:
        case_id = order[shown.number - 1]
        signature = _signature(scene, shown)
        signatures[origins[case_id]].append(signature)
        assert shown.volume_node.GetName() == f"Case {shown.number}"
        # No case id or file name anywhere in the scene's node names or attributes.
        secrets = {
            case_id,
            Path(manifest["cases"][case_id]["file"]).name,
            Path(manifest["cases"][case_id]["file"]).stem,
        }
        for index in range(scene.GetNumberOfNodes()):
            node = scene.GetNthNode(index)
            texts = [node.GetName() or ""]
            texts += [f"{n}={node.GetAttribute(n)}" for n in node.GetAttributeNames() or ()]
            assert not any(secret in text for secret in secrets for text in texts), texts
        # Only the CT and the region: no label map, segmentation or model.
        assert not any(
            isinstance(
                scene.GetNthNode(i), (slicer.vtkMRMLLabelMapVolumeNode, slicer.vtkMRMLSegmentationNode)
            )
            for i in range(scene.GetNumberOfNodes())
        )
        assert shown.region_node.GetName() == REGION_NAME
        # Centred on the region to judge, which lies inside the case.
        bounds = [0.0] * 6
        shown.volume_node.GetRASBounds(bounds)
        assert all(bounds[2 * a] <= shown.centre_ras_mm[a] <= bounds[2 * a + 1] for a in range(3))
        centre = [0.0] * 3
        shown.region_node.GetCenter(centre)
        assert centre == pytest.approx(shown.centre_ras_mm)
        session.answer("real", 3)
    assert len(signatures["real"]) == N_REAL and len(signatures["synthetic"]) == N_SYNTHETIC
    # Every case, real or synthetic, looks the same to the viewer but for its voxels.
    distinct = {
        json.dumps(s, default=str, sort_keys=True) for s in signatures["real"] + signatures["synthetic"]
    }
    assert len(distinct) == 1, distinct
    window = manifest["case_format"]["window"]
    assert signatures["real"][0]["window_level"] == (False, window["width_hu"], window["level_hu"])


def test_the_reader_side_takes_no_key(study):
    parameters = list(inspect.signature(ReaderSession).parameters)
    assert parameters == ["scene", "study_folder", "reader"]
    source = (
        Path(__file__).resolve().parents[1] / "FreeTumorSlicer" / "FreeTumorLib" / "reading.py"
    ).read_text()
    assert "read_key" not in source and "scoring" not in source
    _folder, key = study
    with pytest.raises(Exception, match="not a study folder"):
        ReaderSession(slicer.vtkMRMLScene(), key.parent, "alice")
