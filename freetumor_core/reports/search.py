"""Top-k search over embeddings: exact (float32), exact and faster (float16 screening), approximate.

All three take a bank of ``N x D`` float32 embeddings (unit rows: a dot product is the cosine) and
queries ``Q x D``, and return ``(indices, scores)``, both ``Q x k``, best first (ties: lower index
first):

- :func:`top_k`: exact, one float32 matrix product per block of queries. For a bank used once.
- :class:`ExactIndex`: the same result, faster for a bank that is queried many times. It scores the
  bank in float16 (half the memory traffic of float32, which bounds a query's time), keeps the
  ``k + margin`` best, rescores those in float32 and proves that nothing outside them can be in the
  top k: the float16 score of any row is within ``error_bound`` of its float32 score. A query
  where the proof fails is scored again in float32 over the whole bank, so the result is always
  the exact one.
- :class:`ApproximateIndex`: FAISS's inverted-file index with 8-bit scalar-quantized rows
  (``IndexIVFScalarQuantizer``, inner product; the ``faiss-cpu`` package of the ``reports`` extra),
  for banks too large for exact search within the latency budget: :data:`APPROXIMATE_FROM` rows and
  more (measured: docs/reports.md, "Speed"). It scans the ``probes`` nearest clusters (spread over
  the CPU's threads even for one query), keeps the best ``2k`` by their 8-bit scores, rescores those
  in float32 against the bank and returns the best ``k``. It is saved to a folder as FAISS's own
  binary file and a JSON header (no pickle).

:func:`make_index` picks between the two indexes by bank size.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..files import atomic_output, write_json
from ..progress import ProgressLike, make_progress

__all__ = ["APPROXIMATE_FROM", "ApproximateIndex", "ExactIndex", "make_index", "top_k"]

APPROXIMATE_FROM = 200_000  # rows; below this, exact search takes under about 10 ms (see docs)
RESCORED = 2  # the approximate index rescores this many times k candidates in float32
QUERY_BLOCK = 64  # queries scored together (bounds the Q x N score block to 64 x N floats)
FLOAT16_MAX = 60_000.0

INDEX_FILE = "ivf.faiss"
HEADER_FILE = "ivf.json"
FORMAT = "freetumor-ivf-1"


def _as_matrix(array: Any, what: str, dimension: int | None = None) -> np.ndarray:
    matrix = np.asarray(array)
    if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.floating):
        raise InputError(
            f"{what} must be a 2-D float array (rows x dimension), got {matrix.dtype} {matrix.shape}"
        )
    if dimension is not None and matrix.shape[1] != dimension:
        raise InputError(f"{what} have dimension {matrix.shape[1]}, the bank {dimension}")
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    if not np.isfinite(matrix).all():
        raise InputError(f"{what} hold NaN or infinite values")
    return matrix


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise InputError(f"k must be a whole number of at least 1, got {k!r}")
    return int(k)


def _best(scores: np.ndarray, rows: np.ndarray | None, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best columns of each row of ``scores`` (best first, ties: lower bank index first);
    ``rows`` maps columns to bank indices (``None``: the columns are the bank indices)."""
    count = scores.shape[1]
    k = min(k, count)
    if k < count:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        kth = np.take_along_axis(scores, part, axis=1).min(axis=1, keepdims=True)
        if (scores >= kth).sum(axis=1).max() > k:  # a tie at the k-th score: take every tied column
            part = np.argsort(-scores, axis=1, kind="stable")[:, : k + int((scores == kth).sum(1).max())]
    else:
        part = np.broadcast_to(np.arange(count), scores.shape)
    values = np.take_along_axis(scores, part, axis=1)
    index = part if rows is None else np.take_along_axis(rows, part, axis=1)
    order = np.lexsort((index, -values), axis=1)[:, :k]
    return np.take_along_axis(index, order, axis=1).astype(np.int64), np.take_along_axis(
        values, order, axis=1
    )


def top_k(bank: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by float32 inner product: ``(indices int64 Q x k, scores float32 Q x k)``, best
    first; ``k`` larger than the bank gives every row.

    Raises:
        InputError: an array that is not 2-D float, NaN, a dimension mismatch, ``k < 1``.
    """
    bank = _as_matrix(bank, "the bank")
    queries = _as_matrix(queries, "the queries", bank.shape[1])
    k = _check_k(k)
    width = min(k, len(bank))
    indices = np.zeros((len(queries), width), dtype=np.int64)
    scores = np.zeros((len(queries), width), dtype=np.float32)
    if not len(bank):
        return indices, scores
    for start in range(0, len(queries), QUERY_BLOCK):
        block = slice(start, start + QUERY_BLOCK)
        indices[block], scores[block] = _best(queries[block] @ bank.T, None, k)
    return indices, scores


class ExactIndex:
    """Exact top-k over a fixed bank, faster than :func:`top_k` when queried many times.

    Holds the bank in float32 (for rescoring) and float16 (for screening): 1.5 times the bank's
    memory.
    """

    def __init__(self, bank: np.ndarray, margin: int = 64) -> None:
        import torch

        self.bank = _as_matrix(bank, "the bank")
        self.margin = int(margin)
        self._bank32 = torch.from_numpy(self.bank)
        norms = np.linalg.norm(self.bank, axis=1)
        self.max_norm = float(norms.max()) if len(norms) else 0.0
        # float16 screening only where every value fits float16's range
        fits = len(self.bank) and float(np.abs(self.bank).max()) < FLOAT16_MAX
        self._bank16 = self._bank32.to(torch.float16) if fits else None
        self.rescored_in_full = 0  # queries whose screening could not prove the top k (then exact)

    def __len__(self) -> int:
        return len(self.bank)

    @property
    def dimension(self) -> int:
        return int(self.bank.shape[1])

    def error_bound(self, query_norms: np.ndarray) -> np.ndarray:
        """A bound on |float16 score - float32 score| for queries of these norms.

        Rounding a query and a row to float16 changes each product q_i x_i by at most
        (2u + u^2)|q_i x_i| (u = 2^-11); the sum of |q_i x_i| is at most |q| |x|. Rounding the
        float16 result adds u |score|, float32 accumulation D 2^-24 |q| |x|, and values below
        float16's normal range an absolute 2^-24 per term. The bound used is twice that.
        """
        u = 2.0**-11
        product = np.asarray(query_norms, dtype=np.float64) * self.max_norm
        relative = 2 * u + u * u + u + self.dimension * 2.0**-24
        absolute = self.dimension * 2.0**-24 * (np.asarray(query_norms) + self.max_norm)
        return 2.0 * (relative * product + absolute)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k: the same result as :func:`top_k` on the bank (see the module docstring)."""
        import torch

        queries = _as_matrix(queries, "the queries", self.dimension)
        k = _check_k(k)
        keep = min(len(self.bank), k + self.margin)
        if (
            self._bank16 is None
            or keep == len(self.bank)
            or float(np.abs(queries).max(initial=0)) > FLOAT16_MAX
        ):
            return top_k(self.bank, queries, k)
        width = min(k, len(self.bank))
        indices = np.zeros((len(queries), width), dtype=np.int64)
        scores = np.zeros((len(queries), width), dtype=np.float32)
        bounds = self.error_bound(np.linalg.norm(queries, axis=1))
        with torch.inference_mode():
            for start in range(0, len(queries), QUERY_BLOCK):
                block = slice(start, start + QUERY_BLOCK)
                query = torch.from_numpy(queries[block])
                screened = query.to(torch.float16) @ self._bank16.T
                kept_scores, kept = torch.topk(screened, keep, dim=1, sorted=False)
                kept = kept.numpy()
                exact = np.einsum("qkd,qd->qk", self.bank[kept], queries[block])
                found, found_scores = _best(exact, kept, k)
                # a row left out scores at most (its float16 score + bound) <= (lowest kept + bound)
                lowest = kept_scores.float().min(dim=1).values.numpy()
                unproven = np.flatnonzero(lowest + bounds[block] >= found_scores[:, -1])
                if len(unproven):
                    self.rescored_in_full += len(unproven)
                    found[unproven], found_scores[unproven] = top_k(self.bank, queries[block][unproven], k)
                indices[block], scores[block] = found, found_scores
        return indices, scores


def _faiss():
    try:
        import faiss
    except ImportError:
        raise InputError(
            "the approximate index needs faiss: pip install 'freetumor-core[reports]' (or faiss-cpu)"
        ) from None
    return faiss


def _fingerprint(bank: np.ndarray) -> str:
    """A hash of the bank's shape and of up to 64 of its rows spread over it (cheap, catches a bank
    that is not the one the index was built from)."""
    rows = np.unique(np.linspace(0, len(bank) - 1, num=min(64, len(bank))).astype(np.int64))
    digest = hashlib.sha256(f"{bank.shape}".encode())
    digest.update(np.ascontiguousarray(bank[rows], dtype=np.float32).tobytes())
    return digest.hexdigest()


class ApproximateIndex:
    """FAISS ``IndexIVFScalarQuantizer`` (8-bit rows, inner product) over a bank, with float32
    rescoring against the bank.

    ``clusters`` inverted lists (default sqrt(N)), trained by k-means on up to 48 rows per cluster
    (the 8-bit ranges are trained on the same rows); a query scans the ``probes`` nearest lists, in
    parallel over lists (FAISS's ``parallel_mode`` 1: one query uses every thread).
    """

    def __init__(self, index: Any, bank: np.ndarray, probes: int) -> None:
        self.index = index
        self.bank = bank
        self.probes = int(probes)

    def __len__(self) -> int:
        return len(self.bank)

    @classmethod
    def build(
        cls,
        bank: np.ndarray,
        clusters: int | None = None,
        probes: int = 128,
        seed: int = 0,
        progress: ProgressLike = None,
    ) -> ApproximateIndex:
        """Train the clusters on a sample of ``bank`` and add every row (index = row number).

        Raises:
            InputError: faiss missing, a bad bank, fewer rows than clusters.
        """
        faiss = _faiss()
        bank = _as_matrix(bank, "the bank")
        clusters = int(clusters or max(1, round(np.sqrt(len(bank)))))
        if len(bank) < clusters:
            raise InputError(f"an approximate index of {clusters} clusters needs at least that many rows")
        reporter = make_progress(progress)
        sample = bank
        if len(bank) > 48 * clusters:
            sample = bank[np.random.default_rng(seed).choice(len(bank), 48 * clusters, replace=False)]
        quantizer = faiss.IndexFlatIP(bank.shape[1])
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, bank.shape[1], clusters, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
        index.cp.seed = seed
        reporter.event("train clusters", clusters=clusters, sample=len(sample))
        index.train(sample)
        step = 65_536
        for done in range(0, len(bank), step):
            index.add(bank[done : done + step])
            reporter.update("add rows", min(done + step, len(bank)), len(bank))
        return cls(index, bank, probes)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-k: ``(indices, scores)`` as :func:`top_k`, scores exact for the rows found.

        A query whose probed lists hold fewer than ``k`` rows gets index -1 and score -inf there.
        """
        queries = _as_matrix(queries, "the queries", self.bank.shape[1])
        k = _check_k(k)
        self.index.nprobe = self.probes
        self.index.parallel_mode = 1  # over the probed lists, so that one query uses every thread
        # Twice k candidates by the index's own (8-bit) scores; float32 rescoring picks the best k.
        _, found = self.index.search(queries, min(RESCORED * k, len(self.bank)))
        valid = found >= 0
        safe = np.where(valid, found, 0)
        scores = np.einsum("qkd,qd->qk", self.bank[safe], queries)
        scores = np.where(valid, scores, -np.inf).astype(np.float32)
        order = np.lexsort((np.where(valid, found, len(self.bank)), -scores), axis=1)[:, :k]
        return np.take_along_axis(found, order, 1).astype(np.int64), np.take_along_axis(scores, order, 1)

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``ivf.faiss`` (FAISS's binary index) and ``ivf.json`` (format, counts, the bank's
        fingerprint) into ``folder``, each atomically."""
        faiss = _faiss()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_output(folder / INDEX_FILE) as temporary:
            faiss.write_index(self.index, str(temporary))
        header = {
            "format": FORMAT,
            "rows": len(self.bank),
            "dimension": int(self.bank.shape[1]),
            "clusters": int(self.index.nlist),
            "probes": self.probes,
            "bank_fingerprint": _fingerprint(self.bank),
        }
        write_json(folder / HEADER_FILE, header, indent=1)
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike[str], bank: np.ndarray) -> ApproximateIndex:
        """The index saved in ``folder`` over ``bank`` (the same rows it was built from).

        Raises:
            InputError: a missing, corrupt or foreign file, or a bank other than the index's.
        """
        faiss = _faiss()
        folder = Path(folder)
        bank = _as_matrix(bank, "the bank")
        header_path, index_path = folder / HEADER_FILE, folder / INDEX_FILE
        for path in (header_path, index_path):
            if not path.is_file():
                raise InputError("no approximate index here (missing file)", path)
        try:
            header = json.loads(header_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise InputError(f"unreadable index header: {error}", header_path) from None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise InputError(f"not a FreeTumor approximate index (format is not {FORMAT!r})", header_path)
        if (header.get("rows"), header.get("dimension")) != bank.shape:
            raise InputError(
                f"the index holds {header.get('rows')} x {header.get('dimension')} rows, "
                f"the bank is {bank.shape[0]} x {bank.shape[1]}",
                header_path,
            )
        if header.get("bank_fingerprint") != _fingerprint(bank):
            raise InputError("the bank is not the one this index was built from", header_path)
        try:
            index = faiss.read_index(str(index_path))
        except RuntimeError as error:
            raise InputError(f"corrupt FAISS index: {str(error).splitlines()[0]}", index_path) from None
        if index.ntotal != len(bank) or index.d != bank.shape[1]:
            raise InputError("the FAISS file does not match its header", index_path)
        return cls(index, bank, int(header.get("probes", 128)))


def make_index(bank: np.ndarray, approximate: bool | None = None, progress: ProgressLike = None):
    """An index with ``.search(queries, k)``: :class:`ExactIndex`, or :class:`ApproximateIndex` for
    banks of :data:`APPROXIMATE_FROM` rows and more (``approximate=None``) or when asked."""
    if approximate is None:
        approximate = len(bank) >= APPROXIMATE_FROM
    if approximate:
        return ApproximateIndex.build(bank, progress=progress)
    return ExactIndex(bank)
