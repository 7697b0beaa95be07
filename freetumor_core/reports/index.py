"""Embedding indexes of reports or CTs, and retrieval: CT -> reports, text -> CTs, zero-shot findings.

An index folder holds ``embeddings.npy`` (float32 ``(N, D)``, unit rows, read with
``allow_pickle=False``) and ``index.json``: ``format`` (``"freetumor-report-index"``), ``version``,
``kind`` (``"reports"`` or ``"cts"``), ``ids``, ``texts`` (reports) or ``paths`` (CTs),
``dimension``, ``count``, ``model_hash`` (:func:`.model.model_hash`) and ``model_folder``. A report
index also holds each report's sentence vectors (``sentences.npy``, ``(M, D)``), the report each
belongs to (``sentence_owner.npy``, int64) and their texts (``sentences`` in ``index.json``), so
that a match can show which sentences matched. The files are written as one set
(:func:`~freetumor_core.files.output_set`).

Ranking is exact (:func:`top_k`: a matrix product and a partial sort), which at the sizes measured
in ``docs/reports.md`` needs no library index.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..files import output_set, parse_json, read_small_text, write_json
from ..progress import ProgressLike, make_progress
from ..volume import read_ct
from .model import LoadedReportModel

__all__ = [
    "FINDING_PROMPTS",
    "INDEX_FILE",
    "ReportIndex",
    "build_ct_index",
    "build_report_index",
    "match_ct",
    "read_index",
    "read_report_bank",
    "search_text",
    "top_k",
    "zero_shot_findings",
]

INDEX_FILE = "index.json"
EMBEDDINGS_FILE = "embeddings.npy"
SENTENCES_FILE = "sentences.npy"
OWNER_FILE = "sentence_owner.npy"
FORMAT = "freetumor-report-index"
VERSION = 1
KINDS = ("reports", "cts")
_TEXT_COLUMNS = ("report_text", "report", "text", "findings")
_ID_COLUMNS = ("id", "AccessionNo", "accession", "case")

# Zero-shot findings: (positive prompt, negative prompt) per finding.
FINDING_PROMPTS: dict[str, tuple[str, str]] = {
    "liver lesion": ("A hypodense lesion is seen in the liver.", "No focal liver lesion."),
    "kidney lesion": ("A lesion is seen in the kidney.", "No renal mass."),
    "spleen lesion": ("A lesion is seen in the spleen.", "No focal splenic lesion."),
    "pancreas lesion": ("A lesion is seen in the pancreas.", "No pancreatic mass."),
}


def top_k(bank: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` by dot product: ``(indices, scores)``, each ``(Q, min(k, N))``, best first
    (ties: the lower index first)."""
    bank = np.asarray(bank, dtype=np.float32)
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    k = max(0, min(int(k), len(bank)))
    if k == 0:
        return np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0), np.float32)
    scores = queries @ bank.T
    if k < len(bank):
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(len(bank)), scores.shape).copy()
    chosen = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -chosen), axis=1)
    indices = np.take_along_axis(part, order, axis=1).astype(np.int64)
    return indices, np.take_along_axis(scores, indices, axis=1)


# -- report banks ------------------------------------------------------------------------------------
def read_report_bank(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """``(id, text)`` of each report in a CSV (an id column and a ``report_text``/``report``/``text``
    column), a JSONL file (objects with ``id`` and ``report`` or ``text``), a report datalist JSON
    (every section's entries) or a folder of ``.txt`` files (the id is the file name).

    Raises:
        InputError: naming the file: missing, unreadable, no text column, or no reports.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.txt"))
        reports = [(file.stem, read_small_text(file, "report")) for file in files]
    elif not path.is_file():
        raise InputError("report bank not found", path)
    else:
        text = read_small_text(path, "report bank", max_bytes=512 << 20)
        suffix = path.suffix.lower()
        if suffix == ".csv":
            reports = _read_csv(text, path)
        elif suffix == ".jsonl":
            reports = []
            for number, line in enumerate(text.splitlines(), start=1):
                if line.strip():
                    reports.append(_report_item(parse_json(line, path, f"JSONL line {number}"), number, path))
        elif suffix == ".json":
            data = parse_json(text, path, "report datalist")
            if not isinstance(data, dict):
                raise InputError("a JSON report bank is a datalist object with lists of entries", path)
            reports = [
                _report_item(item, number, path)
                for section in ("training", "validation", "test")
                for number, item in enumerate(data.get(section, []) or [], start=1)
            ]
        else:
            raise InputError("a report bank is a .csv, .jsonl, datalist .json or a folder of .txt", path)
    reports = [(str(rid), str(body)) for rid, body in reports if str(body).strip()]
    if not reports:
        raise InputError("no reports found", path)
    return reports


def _report_item(item: Any, number: int, path: Path) -> tuple[str, str]:
    if not isinstance(item, dict):
        raise InputError(f"entry {number} is not an object", path)
    body = item.get("report", item.get("text"))
    if not isinstance(body, str):
        raise InputError(f"entry {number} has no 'report' or 'text'", path)
    return str(item.get("id", f"report{number:05d}")), body


def _read_csv(text: str, path: Path) -> list[tuple[str, str]]:
    try:
        rows = list(csv.DictReader(io.StringIO(text)))
    except csv.Error as error:
        raise InputError(f"not a readable CSV: {error}", path) from None
    header = list(rows[0]) if rows else []
    text_column = next((c for c in _TEXT_COLUMNS if c in header), None)
    if text_column is None:
        raise InputError(f"no report text column ({', '.join(_TEXT_COLUMNS)})", path)
    id_column = next((c for c in _ID_COLUMNS if c in header), None)
    return [
        (row[id_column] if id_column else f"report{i:05d}", row[text_column] or "")
        for i, row in enumerate(rows)
    ]


# -- index folders ----------------------------------------------------------------------------------
@dataclass
class ReportIndex:
    """A loaded index folder."""

    folder: Path
    kind: str
    ids: list[str]
    embeddings: np.ndarray
    meta: dict[str, Any]
    sentences: list[str] | None = None
    sentence_vectors: np.ndarray | None = None
    sentence_owner: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)


def _write_index(
    output, kind: str, ids, embeddings: np.ndarray, model: LoadedReportModel, extra: dict, arrays
):
    meta = {
        "format": FORMAT, "version": VERSION, "kind": kind, "ids": list(ids),
        "dimension": int(embeddings.shape[1]), "count": len(embeddings),
        "model_hash": model.hash, "model_folder": str(Path(model.folder).resolve()), **extra,
    }  # fmt: skip
    with output_set(output, replaces=[INDEX_FILE, EMBEDDINGS_FILE, SENTENCES_FILE, OWNER_FILE]) as staged:
        for name, array in {EMBEDDINGS_FILE: embeddings, **arrays}.items():
            np.save(staged.path(name), array, allow_pickle=False)
        write_json(staged.path(INDEX_FILE), meta)
    return read_index(output)


def build_report_index(
    model: LoadedReportModel,
    reports: Sequence[tuple[str, str]],
    output: str | os.PathLike[str],
    progress: ProgressLike = None,
) -> ReportIndex:
    """Embed ``(id, text)`` reports into an index folder ``output``."""
    if not reports:
        raise InputError("no reports to index")
    embedded = model.embed_reports([text for _, text in reports], progress=progress)
    vectors = np.stack([e.vector for e in embedded]).astype(np.float32)
    sentence_vectors = np.concatenate([e.sentence_vectors for e in embedded]).astype(np.float32)
    owner = np.concatenate([np.full(len(e.sentences), i, np.int64) for i, e in enumerate(embedded)])
    extra = {"texts": [text for _, text in reports], "sentences": [s for e in embedded for s in e.sentences]}
    arrays = {SENTENCES_FILE: sentence_vectors, OWNER_FILE: owner}
    return _write_index(output, "reports", [rid for rid, _ in reports], vectors, model, extra, arrays)


def build_ct_index(
    model: LoadedReportModel,
    cts: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    progress: ProgressLike = None,
) -> ReportIndex:
    """Embed CT files into an index folder ``output`` (ids: the file names without suffix)."""
    if not cts:
        raise InputError("no CTs to index")
    paths = [Path(p).resolve() for p in cts]
    vectors = [model.embed_ct(read_ct(path)) for path in make_progress(progress).track(paths, "embed CTs")]
    ids = [path.name.split(".")[0] for path in paths]
    extra = {"paths": [str(path) for path in paths]}
    return _write_index(output, "cts", ids, np.stack(vectors).astype(np.float32), model, extra, {})


def _load_array(path: Path, dtype, shape: tuple[int | None, ...]) -> np.ndarray:
    if not path.is_file():
        raise InputError("file not found (an index folder needs it)", path)
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise InputError(f"not a readable .npy array ({error})", path) from None
    if (
        array.dtype != dtype
        or array.ndim != len(shape)
        or any(want is not None and have != want for have, want in zip(array.shape, shape, strict=False))
    ):
        raise InputError(f"array of {array.dtype} {array.shape}, expected {np.dtype(dtype)} {shape}", path)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InputError("array holds NaN or infinite values", path)
    return array


def read_index(
    folder: str | os.PathLike[str], kind: str | None = None, model: LoadedReportModel | None = None
) -> ReportIndex:
    """Read and check an index folder.

    Args:
        kind: when given, refuse an index of the other kind.
        model: when given, refuse an index made by another model (its hash differs).

    Raises:
        InputError: naming the file: missing, corrupt, foreign (not this format), of the other kind,
            made by another model, or arrays that disagree with ``index.json``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("index folder not found", folder)
    path = folder / INDEX_FILE
    if not path.is_file():
        raise InputError("not an index folder (no index.json)", path)
    meta = parse_json(read_small_text(path, "index", max_bytes=1 << 30), path, "index")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(f"not a FreeTumor report index (format is not {FORMAT!r})", path)
    if meta.get("version") != VERSION:
        raise InputError(f"index version {meta.get('version')!r} is not supported (reads {VERSION})", path)
    if meta.get("kind") not in KINDS:
        raise InputError(f"kind must be one of {', '.join(KINDS)}, got {meta.get('kind')!r}", path)
    if kind is not None and meta["kind"] != kind:
        raise InputError(f"this is an index of {meta['kind']}, not of {kind}", path)
    ids, count, dimension = meta.get("ids"), meta.get("count"), meta.get("dimension")
    if (
        not isinstance(ids, list)
        or not isinstance(count, int)
        or len(ids) != count
        or not isinstance(dimension, int)
    ):
        raise InputError("ids, count and dimension are missing or disagree", path)
    listed = meta.get("texts" if meta["kind"] == "reports" else "paths")
    if not isinstance(listed, list) or len(listed) != count:
        raise InputError(
            f"{'texts' if meta['kind'] == 'reports' else 'paths'} must list one item per id", path
        )
    if model is not None and meta.get("model_hash") != model.hash:
        raise InputError(
            f"made by another model ({meta.get('model_folder')}); rebuild it with {model.folder}", path
        )
    embeddings = _load_array(folder / EMBEDDINGS_FILE, np.float32, (count, dimension))
    index = ReportIndex(folder, meta["kind"], [str(i) for i in ids], embeddings, meta)
    if meta["kind"] == "reports":
        sentences = meta.get("sentences")
        if not isinstance(sentences, list):
            raise InputError("a report index lists its sentences", path)
        index.sentences = [str(s) for s in sentences]
        index.sentence_vectors = _load_array(folder / SENTENCES_FILE, np.float32, (len(sentences), dimension))
        index.sentence_owner = _load_array(folder / OWNER_FILE, np.int64, (len(sentences),))
        if len(sentences) and (index.sentence_owner.min() < 0 or index.sentence_owner.max() >= count):
            raise InputError("sentence owners point outside the reports", folder / OWNER_FILE)
    return index


def _check_model(index: ReportIndex, model: LoadedReportModel) -> None:
    if index.meta.get("model_hash") != model.hash or index.embeddings.shape[1] != model.dimension:
        raise InputError(
            f"made by another model ({index.meta.get('model_folder')}); rebuild it with {model.folder}",
            index.folder / INDEX_FILE,
        )


# -- retrieval ---------------------------------------------------------------------------------------
def match_ct(
    model: LoadedReportModel, ct, index: ReportIndex, k: int = 5, sentences: int = 3
) -> list[dict[str, Any]]:
    """The ``k`` reports that best match a CT (a :class:`~freetumor_core.volume.Volume` or a path),
    each with its score and its ``sentences`` best-matching sentences."""
    if index.kind != "reports":
        raise InputError("match needs an index of reports", index.folder / INDEX_FILE)
    _check_model(index, model)
    volume = read_ct(ct) if isinstance(ct, (str, os.PathLike)) else ct
    vector = model.embed_ct(volume)
    indices, scores = top_k(index.embeddings, vector[None], k)
    results = []
    for rank, (row, score) in enumerate(zip(indices[0], scores[0], strict=False), start=1):
        own = np.flatnonzero(index.sentence_owner == row)
        sentence_scores = index.sentence_vectors[own] @ vector
        best = own[np.argsort(-sentence_scores, kind="stable")[:sentences]]
        results.append({
            "rank": rank, "id": index.ids[row], "score": round(float(score), 4),
            "text": index.meta["texts"][row],
            "matched_sentences": [
                {"text": index.sentences[s], "score": round(float(index.sentence_vectors[s] @ vector), 4)}
                for s in best
            ],
        })  # fmt: skip
    return results


def search_text(model: LoadedReportModel, query: str, index: ReportIndex, k: int = 5) -> list[dict[str, Any]]:
    """The ``k`` CTs that best match a finding's text, with their scores and paths."""
    if index.kind != "cts":
        raise InputError("search needs an index of CTs", index.folder / INDEX_FILE)
    if not str(query).strip():
        raise InputError("the search text is empty")
    _check_model(index, model)
    vector = model.embed_texts([query])[0]
    indices, scores = top_k(index.embeddings, vector[None], k)
    return [
        {
            "rank": rank,
            "id": index.ids[row],
            "path": index.meta["paths"][row],
            "score": round(float(score), 4),
        }
        for rank, (row, score) in enumerate(zip(indices[0], scores[0], strict=False), start=1)
    ]


def zero_shot_findings(
    model: LoadedReportModel, ct, prompts: dict[str, tuple[str, str]] | None = None
) -> dict[str, dict[str, float]]:
    """Per finding, the probability that the CT shows it: a softmax over the CT's cosine with the
    positive and the negative prompt, at the model's training temperature."""
    prompts = prompts or FINDING_PROMPTS
    volume = read_ct(ct) if isinstance(ct, (str, os.PathLike)) else ct
    vector = model.embed_ct(volume)
    names = list(prompts)
    texts = [text for name in names for text in prompts[name]]
    cosine = model.embed_texts(texts) @ vector
    temperature = float(model.config.provenance.get("objectives", {}).get("temperature", 0.1))
    findings = {}
    for number, name in enumerate(names):
        positive, negative = float(cosine[2 * number]), float(cosine[2 * number + 1])
        probability = 1.0 / (1.0 + np.exp((negative - positive) / temperature))
        findings[name] = {
            "probability": round(float(probability), 4),
            "positive_score": round(positive, 4),
            "negative_score": round(negative, 4),
        }
    return findings
