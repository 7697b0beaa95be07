"""Zero-shot findings from report text: each abnormality scored from the report alone.

Two scorings of a report for an abnormality, both with the frozen sentence encoder:

- ``plain``: the cosine of the best-matching sentence against the abnormality's name (negated
  sentences count as much as positive ones: "No pleural effusion" matches "pleural effusion").
- ``negation``: the best cosine over the report's affirmed and uncertain phrases only (negated
  phrases, found by :mod:`.text`, never count; an uncertain one counts :data:`UNCERTAIN_PENALTY`
  less), against the abnormality's prompts: its name, and for abnormalities whose name is not how
  reports usually say it, the phrasings in :data:`PROMPTS`.

The AUC of each scoring against the 0/1 labels is MONAI's ``compute_roc_auc``.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..files import check_input_file, read_small_text
from ..progress import ProgressLike, make_progress
from .encoder import SentenceEncoder, load_encoder
from .text import Sentence, split_report

__all__ = [
    "PROMPTS",
    "UNCERTAIN_PENALTY",
    "ReportTable",
    "read_report_table",
    "report_scores",
    "zero_shot_text",
]

# Phrasings besides the name, for the CT-RATE abnormalities whose name reports rarely use. Which
# abnormalities get them was chosen on CT-RATE's validation reports (see docs/reports.md).
PROMPTS: dict[str, tuple[str, ...]] = {
    "Medical material": (
        "catheter", "stent", "pacemaker", "sternotomy wires", "surgical clips", "prosthesis",
        "port catheter", "drainage tube", "endotracheal tube",
    ),
    "Arterial wall calcification": (
        "calcified atherosclerotic plaques in the aorta", "atherosclerotic calcification of the aortic wall",
    ),
    "Coronary artery wall calcification": ("calcified plaques in the coronary arteries",),
    "Lymphadenopathy": ("enlarged lymph nodes", "pathologically enlarged mediastinal lymph node"),
    "Lung opacity": ("ground glass opacity", "density increase in the lung", "infiltration in the lung"),
    "Emphysema": ("emphysematous changes",),
    "Atelectasis": ("atelectatic changes",),
    "Pulmonary fibrotic sequela": ("sequelae changes", "pleuroparenchymal sequelae"),
    "Consolidation": ("consolidation areas",),
}  # fmt: skip

# An uncertain phrase ("possible atelectasis", "... pneumonia?") counts, but below an affirmed one: its
# cosine is lowered by this much (chosen on CT-RATE's validation reports, see docs/reports.md).
UNCERTAIN_PENALTY = 0.05


def prompts_for(name: str) -> list[str]:
    """The prompts of an abnormality: its name (lower case) and any phrasings in :data:`PROMPTS`."""
    return [name.lower(), *PROMPTS.get(name, ())]


@dataclass
class ReportTable:
    """A CT-RATE-style table: accession numbers, report texts and one 0/1 label column per finding."""

    accessions: list[str]
    texts: list[str]
    labels: dict[str, np.ndarray]


def read_report_table(path: str | os.PathLike[str]) -> ReportTable:
    """Read a CSV with ``AccessionNo``, ``report_text`` and one 0/1 column per abnormality.

    Raises:
        InputError: naming the file and the problem (missing columns, a label that is not 0 or 1,
            no rows, no abnormality columns).
    """
    path = check_input_file(path, "report table")
    text = read_small_text(path, "report table", max_bytes=512 << 20)
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as error:
        raise InputError(f"not a readable CSV: {error}", path) from None
    if not rows:
        raise InputError("the report table is empty", path)
    header = [name.strip() for name in rows[0]]
    for column in ("AccessionNo", "report_text"):
        if column not in header:
            raise InputError(f"no {column!r} column (columns: {', '.join(header[:6])} ...)", path)
    names = [name for name in header if name not in ("AccessionNo", "report_text", "")]
    if not names:
        raise InputError("no abnormality columns besides AccessionNo and report_text", path)
    body = [row for row in rows[1:] if any(cell.strip() for cell in row)]
    if not body:
        raise InputError("the report table has a header but no reports", path)
    position = {name: header.index(name) for name in header}
    labels = {name: np.zeros(len(body), dtype=np.int64) for name in names}
    for number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise InputError(f"row {number} has {len(row)} fields, the header {len(header)}", path)
        for name in names:
            value = row[position[name]].strip()
            if value not in ("0", "1", "0.0", "1.0"):
                raise InputError(f"row {number}, column {name!r}: label must be 0 or 1, got {value!r}", path)
            labels[name][number - 2] = int(float(value))
    accessions = [row[position["AccessionNo"]] for row in body]
    texts = [row[position["report_text"]] for row in body]
    return ReportTable(accessions, texts, labels)


def report_scores(
    reports: Sequence[list[Sentence]],
    names: Sequence[str],
    encoder: SentenceEncoder,
    batch_size: int = 64,
    progress: ProgressLike = None,
) -> dict[str, dict[str, np.ndarray]]:
    """``{name: {"plain": scores, "negation": scores}}``, one score per report (higher: more likely)."""
    texts = sorted(
        {s.text for report in reports for s in report}
        | {p.text for report in reports for s in report for p in s.phrases}
        | {prompt for name in names for prompt in prompts_for(name)}
    )
    vectors = encoder.encode(texts, batch_size=batch_size, progress=progress)
    row = {text: index for index, text in enumerate(texts)}
    results: dict[str, dict[str, np.ndarray]] = {}
    for name in names:
        name_vector = vectors[row[name.lower()]]
        prompts = vectors[[row[prompt] for prompt in prompts_for(name)]]
        sentence_cosine = {text: float(vectors[row[text]] @ name_vector) for text in row}
        prompt_cosine = {text: float((vectors[row[text]] @ prompts.T).max()) for text in row}
        plain, negation = [], []
        for report in reports:
            plain.append(max((sentence_cosine[s.text] for s in report), default=-1.0))
            counted = [
                prompt_cosine[p.text] - (UNCERTAIN_PENALTY if p.polarity == "uncertain" else 0.0)
                for s in report
                for p in s.phrases
                if p.polarity != "negated"
            ]
            negation.append(max(counted, default=-1.0))
        results[name] = {"plain": np.asarray(plain), "negation": np.asarray(negation)}
    return results


def _auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    if labels.min() == labels.max():
        return None  # AUC needs both classes
    import torch
    from monai.metrics import compute_roc_auc

    return float(compute_roc_auc(torch.as_tensor(scores), torch.as_tensor(labels)))


def zero_shot_text(
    table: ReportTable | str | os.PathLike[str],
    model: SentenceEncoder | str | os.PathLike[str] | None = None,
    device: str = "auto",
    batch_size: int = 64,
    progress: ProgressLike = None,
) -> dict:
    """Score every abnormality column from the report text alone; AUC of plain and negation-aware
    scoring. Returns ``{"abnormalities": {NAME: {"auc_plain", "auc_negation", "n_pos"}},
    "mean_auc_plain", "mean_auc_negation", "reports", "encoder"}`` (an abnormality whose column is
    all 0 or all 1 gets ``null`` AUCs and is left out of the means)."""
    if not isinstance(table, ReportTable):
        table = read_report_table(table)
    encoder = model if isinstance(model, SentenceEncoder) else load_encoder(model, device)
    reporter = make_progress(progress)
    reports = [split_report(text) for text in reporter.track(table.texts, "split reports")]
    scores = report_scores(reports, list(table.labels), encoder, batch_size, reporter)
    abnormalities = {}
    for name, labels in table.labels.items():
        abnormalities[name] = {
            "auc_plain": _auc(scores[name]["plain"], labels),
            "auc_negation": _auc(scores[name]["negation"], labels),
            "n_pos": int(labels.sum()),
        }
    valid = [entry for entry in abnormalities.values() if entry["auc_plain"] is not None]
    return {
        "abnormalities": abnormalities,
        "mean_auc_plain": float(np.mean([e["auc_plain"] for e in valid])) if valid else None,
        "mean_auc_negation": float(np.mean([e["auc_negation"] for e in valid])) if valid else None,
        "reports": len(table.texts),
        "encoder": str(encoder.folder),
    }
