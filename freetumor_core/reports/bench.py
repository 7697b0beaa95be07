"""``freetumor bench reports``: sentence encoding, top-k search and volume embedding speed.

Each fast path is timed beside its plain counterpart in the same run, taking turns
(:meth:`~freetumor_core.bench.Bench.time_interleaved`), so that the ratios hold on a loaded machine:

- ``encode/*``: the sentences of a CT-RATE-style report CSV (option ``reports``, default
  ``ctrate_reports/val.csv`` in ``$FREETUMOR_SHARED_DATA``, default ``../shared/data``;
  ``sentences=N`` keeps the first N). ``encode/sentences_per_s``: the default encoder
  (``precision="auto"``) on every sentence, as reports repeat them;
  ``encode/distinct_sentences_per_s``: on each distinct sentence once; the ``*_fp32`` twins: the
  float32 reference. ``encode/fidelity`` (mean) and ``encode/fidelity_worst``: cosine of the
  default encoder's vectors against the float32 reference, over the distinct sentences.
- ``query/*``: :func:`structured_embeddings` (synthetic, not real sentence vectors), ``bank=N``
  rows (default 100,000) and ``large_bank=N`` (default 1,000,000), ``queries=N`` (default 100)
  held-out queries, timed one at a time. ``query/top10_100k``: :class:`~.search.ExactIndex`;
  ``query/top10_100k_numpy``: a float32 numpy product and ``argpartition``, the plain path;
  ``query/recall10_*``: agreement with exact float32 :func:`~.search.top_k`. ``query/top10_1m``:
  :class:`~.search.ApproximateIndex` (FAISS IVF) beside ``query/top10_1m_exact``. (The names keep
  ``100k`` and ``1m`` whatever the sizes given; the notes say the sizes.)
- ``embed/volume``: seconds to embed one CT on CPU with the MG-3D vision encoder, when
  ``freetumor_core.reports.model`` is installed; otherwise a note says it was left out.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from ..bench import Bench

SHARED_DATA = Path(
    os.environ.get("FREETUMOR_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")
)
DEFAULT_REPORTS = SHARED_DATA / "ctrate_reports" / "val.csv"


def structured_embeddings(rows: int, dimension: int = 384, seed: int = 0, rank: int = 64) -> np.ndarray:
    """Synthetic unit embeddings shaped like sentence vectors: a shared mean direction (mean cosine
    between rows about 0.2) plus ``rank`` latent directions with a decaying spectrum, normalised.
    The directions are fixed (seed 12345); ``seed`` draws the rows."""
    basis = np.random.default_rng(12345)
    mean = basis.standard_normal(dimension).astype(np.float32)
    mean *= 0.5 / np.linalg.norm(mean)
    spectrum = (1.0 / np.sqrt(1.0 + np.arange(rank) / 8.0)).astype(np.float32)
    directions = (
        basis.standard_normal((rank, dimension)).astype(np.float32) * (spectrum / np.sqrt(rank))[:, None]
    )
    generator = np.random.default_rng(seed)
    out = np.empty((rows, dimension), dtype=np.float32)
    for start in range(0, rows, 65_536):
        stop = min(rows, start + 65_536)
        block = generator.standard_normal((stop - start, rank), dtype=np.float32) @ directions + mean
        out[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def _recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, exact, strict=True)]))


def _rates(bench: Bench, name: str, result: dict, count: int) -> None:
    bench.record(name, count / result["median"], "sentences/s")


def encode_benchmarks(bench: Bench) -> None:
    from .encoder import load_encoder
    from .text import split_report
    from .zeroshot import read_report_table

    source = bench.options.get("reports") or DEFAULT_REPORTS
    if not Path(source).is_file():
        bench.note(f"encode/* left out: no report CSV at {source} (option reports=PATH)")
        return
    table = read_report_table(source)
    sentences = [s.text for text in table.texts for s in split_report(text)]
    if bench.options.get("sentences"):
        sentences = sentences[: int(bench.options["sentences"])]
    distinct = list(dict.fromkeys(sentences))
    reference = load_encoder(device="cpu", precision="fp32")
    fast = load_encoder(device="cpu", precision="auto")
    bench.note(
        f"encode: {len(sentences)} sentences ({len(distinct)} distinct) of {len(table.texts)} reports "
        f"in {source}; default precision on this CPU: {fast.precision}; batches of 64"
    )
    repeat = min(bench.repeat, 3)
    results = bench.time_interleaved(
        {
            "encode/all_s": lambda: fast.encode(sentences),
            "encode/all_s_fp32": lambda: reference.encode(sentences),
            "encode/distinct_s": lambda: fast.encode(distinct),
            "encode/distinct_s_fp32": lambda: reference.encode(distinct),
        },
        repeat=repeat,
        unit="s",
    )
    for result, name, count in zip(
        results,
        (
            "sentences_per_s",
            "sentences_per_s_fp32",
            "distinct_sentences_per_s",
            "distinct_sentences_per_s_fp32",
        ),
        (len(sentences), len(sentences), len(distinct), len(distinct)),
        strict=True,
    ):
        _rates(bench, f"encode/{name}", result, count)
    cosine = (fast.encode(distinct) * reference.encode(distinct)).sum(axis=1)
    bench.record("encode/fidelity", float(cosine.mean()), "cosine")
    bench.record("encode/fidelity_worst", float(cosine.min()), "cosine")


def query_benchmarks(bench: Bench) -> None:
    from .search import RESCORED, ApproximateIndex, ExactIndex, top_k

    count = int(bench.options.get("queries", 100))
    small, large = int(bench.options.get("bank", 100_000)), int(bench.options.get("large_bank", 1_000_000))
    queries = structured_embeddings(count, seed=1)
    bench.note(
        f"query: synthetic structured embeddings (structured_embeddings, 384-D, rank 64), banks of "
        f"{small} and {large} rows, {count} held-out queries timed one at a time, k = 10"
    )

    bank = structured_embeddings(small, seed=2)
    exact, _ = top_k(bank, queries, 10)
    index = ExactIndex(bank)

    def one_by_one(search):
        return lambda: [search(queries[i : i + 1]) for i in range(count)]

    def numpy_top10(query):
        scores = bank @ query[0]
        best = np.argpartition(-scores, 9)[:10]
        return best[np.argsort(-scores[best])]

    bench.time_interleaved(
        {
            "query/top10_100k": one_by_one(lambda q: index.search(q, 10)),
            "query/top10_100k_numpy": one_by_one(numpy_top10),
        },
        repeat=min(bench.repeat, 3),
        per_call=count,
    )
    found, _ = index.search(queries, 10)
    bench.record("query/recall10_100k", _recall(found, exact), "fraction")
    bench.record("query/rescored_in_full_100k", index.rescored_in_full, "queries")
    del bank, index

    bank = structured_embeddings(large, seed=3)
    exact, _ = top_k(bank, queries, 10)
    start = time.perf_counter()
    approximate = ApproximateIndex.build(bank)
    bench.record("index/build_1m", time.perf_counter() - start, "s")
    index = ExactIndex(bank)
    bench.time_interleaved(
        {
            "query/top10_1m": one_by_one(lambda q: approximate.search(q, 10)),
            "query/top10_1m_exact": one_by_one(lambda q: index.search(q, 10)),
        },
        repeat=min(bench.repeat, 3),
        per_call=count,
    )
    found, _ = approximate.search(queries, 10)
    bench.record("query/recall10_1m", _recall(found, exact), "fraction")
    bench.note(
        f"query/top10_1m: FAISS {type(approximate.index).__name__} (8-bit rows), "
        f"{approximate.index.nlist} clusters, {approximate.probes} probed, float32 rescoring of "
        f"{RESCORED} x k"
    )


def volume_benchmark(bench: Bench) -> None:
    """``embed/volume``: the hook for the MG-3D vision encoder (``freetumor_core.reports.model``)."""
    try:
        from . import model
    except ImportError:
        bench.note(
            "embed/volume left out: the vision encoder (freetumor_core.reports.model) is not installed"
        )
        return
    embed = getattr(model, "bench_embed_volume", None)
    if embed is None:
        bench.note("embed/volume left out: freetumor_core.reports.model has no bench_embed_volume(bench)")
        return
    embed(bench)


def reports_suite(bench: Bench) -> None:
    """Sentence encoding, top-k search (exact at 100k rows, approximate at 1M) and volume embedding."""
    parts = bench.options.get("parts", "encode,query,volume").split(",")
    if "encode" in parts:
        encode_benchmarks(bench)
    if "query" in parts:
        query_benchmarks(bench)
    if "volume" in parts:
        volume_benchmark(bench)
