"""The Synthesize panel's engine, model and QC settings, and the tumor table's QC-score column, on
real MRML (``slicer-core``)."""

from __future__ import annotations

import math
import sys
from pathlib import Path, PurePosixPath
from types import SimpleNamespace

import pytest
import slicer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "FreeTumorSlicer"))
from FreeTumorLib import nodes
from FreeTumorLib.synthesis import SynthesisRequest

from freetumor_core import TumorSpec
from freetumor_core.records import TumorRecord


def _parameters(**changes):
    values = dict(inputVolume=None, organSegmentation=None, organ="liver", size="small", count=1, seed=2,
                  marginMm=3.0, engine="handcrafted", model=PurePosixPath("."), qc=PurePosixPath("."),
                  markCentres=True)  # fmt: skip
    values.update(changes)
    return SimpleNamespace(**values)


def test_engine_model_and_qc_settings_become_the_spec(tmp_path):
    # Empty folder boxes (Slicer's "." paths) mean "none".
    request = SynthesisRequest.from_parameters(_parameters())
    assert request.spec == TumorSpec(organ="liver", size="small")
    model, segmenter = tmp_path / "generator", tmp_path / "segmenter"
    request = SynthesisRequest.from_parameters(_parameters(engine="adversarial", model=model, qc=segmenter))
    assert request.spec.engine == "adversarial" and request.spec.model == str(model)
    assert request.spec.qc == str(segmenter)
    assert TumorSpec.from_json(request.spec.to_json(tmp_path / "spec.json")) == request.spec
    # A model left in the box while the handcrafted engine is chosen is not sent.
    request = SynthesisRequest.from_parameters(_parameters(model=model))
    assert request.spec.engine == "handcrafted" and request.spec.model is None
    with pytest.raises(ValueError, match="unknown synthesis engine 'gan'"):
        SynthesisRequest.from_parameters(_parameters(engine="gan"))


def test_tumor_table_has_the_qc_score_column():
    scene = slicer.vtkMRMLScene()
    checked = TumorRecord("liver", (1.0, 2.0, 3.0), 14.0, 1.4, 60.0, -30.0, "adversarial", 7, qc_score=0.83)
    unchecked = TumorRecord("liver", (4.0, 5.0, 6.0), 8.0, 0.3, 70.0, -20.0, "handcrafted", 7)
    rows = nodes.table_rows(nodes.add_tumor_table(scene, [checked, unchecked], "tumors"))
    assert [name for name, _, _ in nodes.TABLE_COLUMNS].index("qc_score") == 5
    assert rows[0]["qc_score"] == pytest.approx(0.83)
    assert math.isnan(rows[1]["qc_score"]), "not checked: nan"
    assert rows[0]["R_mm"] == pytest.approx(1.0)
    scene.Clear(True)
