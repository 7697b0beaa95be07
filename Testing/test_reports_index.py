"""Index folders and retrieval: exact top-k against brute force, the round trip, match and search,
zero-shot findings, and clear errors for corrupt or foreign index folders."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_reports_vision import tiny_model_folder

from freetumor_core.errors import InputError
from freetumor_core.phantom import make_phantom
from freetumor_core.reports.index import (
    build_ct_index,
    build_report_index,
    match_ct,
    read_index,
    read_report_bank,
    search_text,
    top_k,
    zero_shot_findings,
)
from freetumor_core.reports.model import load_report_model
from freetumor_core.volume import read_ct, write_volume

REPORTS = [
    ("a", "FINDINGS: A 2.1 cm hypodense lesion is seen in the right hepatic lobe. No renal mass.\n"
          "IMPRESSION: Solitary hepatic lesion."),
    ("b", "FINDINGS: The liver is normal. No focal splenic lesion. The pancreas is normal.\n"
          "IMPRESSION: Unremarkable abdominal CT."),
    ("c", "FINDINGS: Two hypodense renal lesions, the largest 1.5 cm in the lower pole of the left kidney."),
]  # fmt: skip


@pytest.mark.parametrize("k", [1, 3, 10, 50])
def test_top_k_equals_brute_force(k):
    rng = np.random.default_rng(k)
    bank = rng.standard_normal((40, 12)).astype(np.float32)
    bank[7] = bank[3]  # a tie: the lower index comes first
    queries = rng.standard_normal((5, 12)).astype(np.float32)
    indices, scores = top_k(bank, queries, k)
    full = queries @ bank.T
    expected = np.array([sorted(range(40), key=lambda j: (-full[q, j], j))[: min(k, 40)] for q in range(5)])
    assert np.array_equal(indices, expected)
    assert np.allclose(scores, np.take_along_axis(full, expected, 1))
    tie = top_k(bank, bank[3][None], 2)[0][0]
    assert list(tie) == [3, 7]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_report_model(tiny_model_folder(tmp_path_factory.mktemp("m") / "model"), device="cpu")


@pytest.fixture(scope="module")
def cts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cts")
    paths = []
    for seed in (1, 2):
        ct, _ = make_phantom(seed, spacing_mm=6.0)
        paths.append(write_volume(ct, folder / f"phantom{seed}.nii.gz"))
    return paths


def test_report_index_round_trip_and_match(tmp_path, model, cts):
    built = build_report_index(model, REPORTS, tmp_path / "index")
    index = read_index(tmp_path / "index", kind="reports", model=model)
    assert index.ids == ["a", "b", "c"] and np.array_equal(index.embeddings, built.embeddings)
    assert np.allclose(np.linalg.norm(index.embeddings, axis=1), 1.0, atol=1e-5)
    assert index.sentence_vectors.shape == (len(index.sentences), model.dimension)
    results = match_ct(model, cts[0], index, k=2, sentences=2)
    assert [r["rank"] for r in results] == [1, 2]
    vector = model.embed_ct(read_ct(cts[0]))
    expected = index.embeddings @ vector
    assert results[0]["id"] == index.ids[int(np.argmax(expected))]
    assert results[0]["score"] == pytest.approx(float(expected.max()), abs=1e-3)
    assert results[0]["score"] >= results[1]["score"]
    for result in results:
        own = {
            s
            for s, owner in zip(index.sentences, index.sentence_owner, strict=True)
            if index.ids[owner] == result["id"]
        }
        assert {s["text"] for s in result["matched_sentences"]} <= own
        assert len(result["matched_sentences"]) <= 2


def test_ct_index_and_search(tmp_path, model, cts):
    build_ct_index(model, cts, tmp_path / "cts")
    index = read_index(tmp_path / "cts", kind="cts")
    results = search_text(model, "hypodense liver lesion", index, k=5)
    assert len(results) == 2 and {r["path"] for r in results} == {str(p.resolve()) for p in cts}
    assert results[0]["score"] >= results[1]["score"]
    with pytest.raises(InputError, match="not of reports"):
        read_index(tmp_path / "cts", kind="reports")
    with pytest.raises(InputError, match="empty"):
        search_text(model, "  ", index)


def test_zero_shot_findings_are_probabilities(model, cts):
    findings = zero_shot_findings(model, cts[0])
    assert set(findings) >= {"liver lesion", "kidney lesion"}
    for finding in findings.values():
        assert 0.0 <= finding["probability"] <= 1.0
        above = finding["positive_score"] > finding["negative_score"]
        assert (finding["probability"] > 0.5) == above or finding["probability"] == pytest.approx(0.5)


def test_corrupt_or_foreign_index_folders_get_clear_errors(tmp_path, model):
    build_report_index(model, REPORTS, tmp_path / "index")
    folder = tmp_path / "index"
    with pytest.raises(InputError, match="not an index folder"):
        read_index(tmp_path)
    (folder / "embeddings.npy").write_bytes(b"garbage")
    with pytest.raises(InputError, match=r"embeddings\.npy"):
        read_index(folder)
    build_report_index(model, REPORTS, folder)
    np.save(folder / "embeddings.npy", np.zeros((2, 16), np.float32))
    with pytest.raises(InputError, match="expected"):
        read_index(folder)
    build_report_index(model, REPORTS, folder)
    meta = json.loads((folder / "index.json").read_text())
    (folder / "index.json").write_text(json.dumps({**meta, "format": "something-else"}))
    with pytest.raises(InputError, match="not a FreeTumor report index") as error:
        read_index(folder)
    assert "index.json" in str(error.value)
    (folder / "index.json").write_text(json.dumps({**meta, "model_hash": "0" * 64}))
    with pytest.raises(InputError, match="another model"):
        read_index(folder, model=model)
    (folder / "index.json").write_text("{not json")
    with pytest.raises(InputError, match=r"index\.json"):
        read_index(folder)
    # a pickled object array is never loaded
    build_report_index(model, REPORTS, folder)
    np.save(folder / "embeddings.npy", np.array([{"x": 1}] * 3, dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match=r"embeddings\.npy"):
        read_index(folder)


def test_report_banks(tmp_path):
    (tmp_path / "bank.csv").write_text('AccessionNo,report_text\nx1,"No liver lesion."\nx2,"A renal mass."\n')
    assert read_report_bank(tmp_path / "bank.csv") == [("x1", "No liver lesion."), ("x2", "A renal mass.")]
    (tmp_path / "bank.jsonl").write_text(
        '{"id": "j1", "report": "Normal."}\n\n{"id": "j2", "text": "Mass."}\n'
    )
    assert [rid for rid, _ in read_report_bank(tmp_path / "bank.jsonl")] == ["j1", "j2"]
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "case7.txt").write_text("No ascites.")
    assert read_report_bank(folder) == [("case7", "No ascites.")]
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="no report text column") as error:
        read_report_bank(tmp_path / "bad.csv")
    assert "bad.csv" in str(error.value)
