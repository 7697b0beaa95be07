"""Top-k search: exact float32, exact with float16 screening, FAISS IVF; the index folder's files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from freetumor_core.errors import InputError
from freetumor_core.reports.bench import structured_embeddings
from freetumor_core.reports.search import ApproximateIndex, ExactIndex, make_index, top_k


def brute_force(bank, queries, k):
    scores = queries.astype(np.float64) @ bank.astype(np.float64).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order


def test_top_k_equals_brute_force_best_first_ties_by_lower_index():
    bank = structured_embeddings(3000, seed=5)
    bank[100] = bank[2000]  # a duplicate row: equal scores, the lower index first
    queries = np.vstack([structured_embeddings(40, seed=6), bank[2000:2001]])
    indices, scores = top_k(bank, queries, 10)
    assert indices.shape == scores.shape == (41, 10) and indices.dtype == np.int64
    np.testing.assert_array_equal(indices, brute_force(bank, queries, 10))
    assert (np.diff(scores, axis=1) <= 0).all()
    assert list(indices[-1, :2]) == [100, 2000]
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ bank.T, indices, 1), rtol=1e-6)
    assert top_k(bank[:4], queries, 10)[0].shape == (41, 4)  # k beyond the bank: every row


def test_exact_index_gives_the_exact_result_and_proves_it():
    bank = structured_embeddings(20_000, seed=7)
    queries = structured_embeddings(64, seed=8)
    index = ExactIndex(bank)
    np.testing.assert_array_equal(index.search(queries, 10)[0], top_k(bank, queries, 10)[0])
    np.testing.assert_allclose(index.search(queries, 10)[1], top_k(bank, queries, 10)[1], rtol=1e-5)
    # the bound the proof rests on holds for torch's float16 product on this machine
    import torch

    screened = (torch.from_numpy(queries).half() @ torch.from_numpy(bank).half().T).float().numpy()
    error = np.abs(screened - queries @ bank.T).max(axis=1)
    assert (error <= index.error_bound(np.linalg.norm(queries, axis=1)) / 2).all()


def test_exact_index_falls_back_to_float32_where_near_ties_defeat_the_screening():
    rng = np.random.default_rng(0)
    base = structured_embeddings(1, seed=9)
    bank = base + 1e-4 * rng.standard_normal((5000, 384)).astype(np.float32)  # 5000 near-equal rows
    bank = np.vstack([bank, structured_embeddings(5000, seed=10)])
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    index = ExactIndex(bank, margin=8)
    found, _ = index.search(base, 10)
    assert index.rescored_in_full == 1
    np.testing.assert_array_equal(found, top_k(bank, base, 10)[0])


def test_approximate_index_recall_order_and_folder_round_trip(tmp_path):
    bank = structured_embeddings(20_000, seed=11)
    queries = structured_embeddings(50, seed=12)
    exact, _ = top_k(bank, queries, 10)
    index = ApproximateIndex.build(bank, clusters=100, probes=50)
    found, scores = index.search(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact, strict=True)])
    assert recall >= 0.95, recall
    assert (np.diff(scores, axis=1) <= 0).all()  # best first, scores exact for the rows found
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ bank.T, found, 1), rtol=1e-5)
    index.save(tmp_path / "ann")
    assert sorted(p.name for p in (tmp_path / "ann").iterdir()) == ["ivf.faiss", "ivf.json"]
    loaded = ApproximateIndex.load(tmp_path / "ann", bank)
    np.testing.assert_array_equal(loaded.search(queries, 10)[0], found)
    index.probes = 100  # every cluster: the exact result
    np.testing.assert_array_equal(index.search(queries, 10)[0], exact)


def test_corrupt_foreign_or_mismatched_index_folders_are_input_errors(tmp_path):
    bank = structured_embeddings(2000, seed=13)
    folder = ApproximateIndex.build(bank, clusters=20).save(tmp_path / "ann")
    with pytest.raises(InputError, match="not the one"):
        ApproximateIndex.load(folder, structured_embeddings(2000, seed=14))
    with pytest.raises(InputError, match="2000 x 384"):
        ApproximateIndex.load(folder, bank[:1000])
    (folder / "ivf.faiss").write_bytes(b"not a faiss index")
    with pytest.raises(InputError, match="corrupt") as error:
        ApproximateIndex.load(folder, bank)
    assert "ivf.faiss" in str(error.value)
    (folder / "ivf.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(InputError, match="not a FreeTumor approximate index"):
        ApproximateIndex.load(folder, bank)
    with pytest.raises(InputError, match="missing file"):
        ApproximateIndex.load(tmp_path / "empty", bank)


def test_bad_arrays_and_k_are_input_errors():
    bank = structured_embeddings(10)
    with pytest.raises(InputError, match="dimension 8"):
        top_k(bank, np.zeros((1, 8), np.float32), 1)
    with pytest.raises(InputError, match="2-D float"):
        top_k(bank, bank[0], 1)
    with pytest.raises(InputError, match="k must be"):
        ExactIndex(bank).search(bank, 0)
    with pytest.raises(InputError, match="NaN"):
        top_k(np.full((2, 384), np.nan, np.float32), bank, 1)


def test_make_index_is_exact_below_the_approximate_size():
    bank = structured_embeddings(100)
    assert isinstance(make_index(bank), ExactIndex)
    assert isinstance(make_index(bank, approximate=True), ApproximateIndex)
