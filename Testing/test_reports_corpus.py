"""The paired corpus: synthetic tumors in phantoms and a real CT, each with a report that says what
was made (organ, size in cm, count), normal statements and explicit negatives; a held-out split."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from freetumor_core.errors import InputError
from freetumor_core.reports import split_report
from freetumor_core.reports.corpus import default_real_hosts, make_corpus, read_corpus
from freetumor_core.reports.model import default_preprocessing
from freetumor_core.volume import read_ct

ADJECTIVE = {"liver": "hepatic", "kidney": "renal", "spleen": "splenic", "pancreas": "pancreatic"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, shared_data):
    folder = tmp_path_factory.mktemp("corpus")
    real = [host for host in default_real_hosts(shared_data) if host[0] == "totalseg"]
    summary = make_corpus(
        folder, phantoms=3, cases_per_host=3, real_hosts=real, real_cases_per_host=3,
        preprocessing=default_preprocessing(32, 8.0), seed=3,
    )  # fmt: skip
    return folder, summary


def test_every_case_has_its_ct_crop_and_a_report_that_names_its_tumors(corpus):
    folder, summary = corpus
    data = json.loads((folder / "datalist.json").read_text())
    entries = data["training"] + data["validation"]
    assert summary["cases"] == len(entries) == 12
    assert summary["tumors"] == sum(len(e["tumors"]) for e in entries) > 0
    assert any(not e["tumors"] for e in entries) or len(entries) < 20
    for entry in entries:
        crop = np.load(folder / entry["crop"], allow_pickle=False)
        assert crop.shape == (32, 32, 32) and crop.dtype == np.int16
        ct = read_ct(folder / entry["image"])
        assert ct.spacing == pytest.approx((3.0, 3.0, 3.0))
        report = entry["report"]
        sentences = split_report(report)
        assert {s.section for s in sentences} == {"findings", "impression"}
        organs = {t["organ"] for t in entry["tumors"]}
        for organ in organs:
            largest = max(t["diameter_mm"] for t in entry["tumors"] if t["organ"] == organ)
            assert f"{largest / 10:.1f} cm" in report
            assert ADJECTIVE[organ] in report or organ in report
        for organ in set(ADJECTIVE) - organs:
            # a healthy organ is described as normal or explicitly negated, never as holding a lesion
            about = [s for s in sentences if organ in s.text.lower() or ADJECTIVE[organ] in s.text.lower()]
            about = [s for s in about if s.section == "findings"]
            assert about, (organ, report)
            assert all(
                s.negated or not re.search(r"lesion|mass|nodule", s.text, re.IGNORECASE) for s in about
            ), report


def test_the_held_out_split_keeps_a_real_case(corpus):
    folder, _ = corpus
    training, data = read_corpus(folder / "datalist.json", "training")
    validation, _ = read_corpus(folder / "datalist.json", "validation")
    assert {e["id"] for e in training}.isdisjoint(e["id"] for e in validation)
    assert any(e["real_host"] for e in validation)
    assert data["preprocessing"]["patch_size_voxels"] == [32, 32, 32]


def test_the_same_seed_writes_the_same_reports(tmp_path):
    first = make_corpus(
        tmp_path / "a", phantoms=1, cases_per_host=2, preprocessing=default_preprocessing(32, 8.0)
    )
    second = make_corpus(
        tmp_path / "b", phantoms=1, cases_per_host=2, preprocessing=default_preprocessing(32, 8.0)
    )
    read = [json.loads((tmp_path / name / "datalist.json").read_text()) for name in "ab"]
    assert first["cases"] == second["cases"] == 2
    assert [e["report"] for e in read[0]["training"] + read[0]["validation"]] == [
        e["report"] for e in read[1]["training"] + read[1]["validation"]
    ]


def test_a_bad_datalist_is_refused_naming_it(tmp_path):
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"training": [{"image": "missing.nii.gz", "report": "No lesion."}]}))
    with pytest.raises(InputError, match="not found") as error:
        read_corpus(path)
    assert str(path) in str(error.value)
    path.write_text(json.dumps({"training": [{"image": "x.nii.gz"}]}))
    with pytest.raises(InputError, match="report"):
        read_corpus(path)
