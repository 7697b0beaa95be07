"""``evaluate``: metrics of predicted label maps against ground truth, one pair or a datalist, as a
report (a dict), a text table and CSV. The metrics and their conventions are in :mod:`.metrics`.

Structures compared: ``tumor`` (the union of every lesion label, on either side) and each organ that
the prediction names and the ground truth has (``kidney`` also matches ``kidney_left`` +
``kidney_right``). Both label maps need label names (a ``labels.json`` sidecar, ``.seg.nrrd`` segment
names, or given explicitly): a map whose names would only be assumed is refused, since its lesions
could not be told apart from organs.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..files import parse_json, read_small_text
from ..labels import NAMES_ASSUMED, LabelMap, align_to, read_labels
from ..lesions import is_lesion_label
from ..progress import ProgressLike, make_progress
from .metrics import MATCH_DICE, SIZE_BINS, DetectionCounts, dice, match_lesions, patient_level, surface_dice

__all__ = [
    "DEFAULT_TOLERANCE_MM",
    "evaluate_datalist",
    "evaluate_files",
    "evaluate_labels",
    "format_table",
    "read_evaluation_datalist",
    "report_csv",
]

DEFAULT_TOLERANCE_MM = 2.0
SECTIONS = ("testing", "test", "validation", "training")
MATCHING_RULE = (
    f"a predicted and a ground-truth lesion match when their lesion Dice >= {MATCH_DICE}; one to one, "
    "best Dice first"
)


def tumor_mask(labels: LabelMap) -> np.ndarray:
    """The union of the lesion labels of a label map."""
    ids = [key for key, name in labels.names.items() if is_lesion_label(name)]
    return np.isin(labels.array, ids)


def evaluate_labels(
    pred: LabelMap, truth: LabelMap, tolerance_mm: float = DEFAULT_TOLERANCE_MM, case: str = "case"
) -> dict[str, Any]:
    """The metrics of one prediction (put on the ground truth's grid when it is not on it)."""
    pred = align_to(pred, truth.volume)
    spacing = truth.volume.spacing_zyx
    structures = {"tumor": (tumor_mask(pred), tumor_mask(truth))}
    for name in sorted(set(pred.present().values())):
        if is_lesion_label(name) or not truth.ids_for(name):
            continue
        truth_mask = np.isin(truth.array, truth.ids_for(name))
        if truth_mask.any():
            structures[name] = (np.isin(pred.array, pred.ids_for(name)), truth_mask)
    scores = {
        name: {"dice": dice(p, t), "nsd": surface_dice(p, t, spacing, tolerance_mm)}
        for name, (p, t) in structures.items()
    }
    counts, truth_lesions, pred_lesions = match_lesions(*structures["tumor"], spacing)
    return {
        "case": case,
        "structures": scores,
        "lesions": counts.to_dict(),
        "truth_lesions": [vars(lesion) for lesion in truth_lesions],
        "pred_lesions": [vars(lesion) for lesion in pred_lesions],
        "patient": {"truth_positive": bool(truth_lesions), "called_positive": bool(pred_lesions)},
        "_counts": counts,
    }


def _read(path: str | os.PathLike[str], names: Any) -> LabelMap:
    labels = read_labels(path, names)
    if labels.volume.metadata.get(NAMES_ASSUMED):
        raise InputError(
            "label map has no label names (no labels.json sidecar or .seg.nrrd segment names), so its "
            'lesions cannot be told apart; give the names (e.g. \'{"1": "liver", "2": "liver_tumor"}\')',
            path,
        )
    return labels


def evaluate_files(
    pred: str | os.PathLike[str],
    truth: str | os.PathLike[str],
    pred_names: Any = None,
    truth_names: Any = None,
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
) -> dict[str, Any]:
    """The report of one prediction file against one ground-truth file (see :func:`evaluate_datalist`)."""
    return _report(
        [evaluate_labels(_read(pred, pred_names), _read(truth, truth_names), tolerance_mm, str(pred))],
        tolerance_mm,
    )


def read_evaluation_datalist(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Entries ``{"pred": FILE, "label": FILE}`` (optional ``case``) of a JSON datalist: a list, or an
    object with a ``testing``, ``test``, ``validation`` or ``training`` list. Paths are relative to
    the datalist's folder.

    Raises:
        InputError: naming the datalist: not JSON, no list of entries, an entry without ``pred`` or
            ``label``, or a file that is not there.
    """
    path = Path(path)
    data = parse_json(read_small_text(path, "datalist"), path, "datalist")
    if isinstance(data, dict):
        data = next((data[key] for key in SECTIONS if isinstance(data.get(key), list)), None)
    if not isinstance(data, list) or not data:
        raise InputError(
            f"a datalist is a non-empty list of entries or has one of {', '.join(SECTIONS)}", path
        )
    entries = []
    for index, entry in enumerate(data):
        where = f"entry {index}"
        if not isinstance(entry, dict):
            raise InputError(f"{where} must be an object with 'pred' and 'label'", path)
        files = {}
        for key in ("pred", "label"):
            value = entry.get(key)
            if not isinstance(value, str) or not value.strip():
                raise InputError(f"{where}: '{key}' must be a file path, got {value!r}", path)
            file = Path(value) if Path(value).is_absolute() else path.parent / value
            if not file.exists():
                raise InputError(f"{where}: {key} file not found: {file}", path)
            files[key] = file
        entries.append({"case": str(entry.get("case", files["pred"].name)), **files})
    return entries


def evaluate_datalist(
    path: str | os.PathLike[str],
    pred_names: Any = None,
    truth_names: Any = None,
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
    progress: ProgressLike = None,
) -> dict[str, Any]:
    """The report over every entry of a datalist (:func:`read_evaluation_datalist`).

    Returns:
        ``{"cases": [...], "summary": {...}, "matching_rule": ..., "nsd_tolerance_mm": ...}``; the
        summary has the mean Dice and NSD per structure, lesion counts pooled over all cases (and
        their rates, per size bin too) and the patient-level sensitivity and specificity.
    """
    entries = read_evaluation_datalist(path)
    cases = []
    for entry in make_progress(progress).track(entries, "evaluate"):
        pred = _read(entry["pred"], pred_names)
        truth = _read(entry["label"], truth_names)
        cases.append(evaluate_labels(pred, truth, tolerance_mm, entry["case"]))
    return _report(cases, tolerance_mm)


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _report(cases: list[dict[str, Any]], tolerance_mm: float = DEFAULT_TOLERANCE_MM) -> dict[str, Any]:
    pooled = DetectionCounts()
    for case in cases:
        pooled.add(case.pop("_counts"))
    names = sorted({name for case in cases for name in case["structures"]}, key=lambda n: (n != "tumor", n))
    summary = {
        "cases": len(cases),
        "dice": {
            n: _mean([c["structures"][n]["dice"] for c in cases if n in c["structures"]]) for n in names
        },
        "nsd": {n: _mean([c["structures"][n]["nsd"] for c in cases if n in c["structures"]]) for n in names},
        "lesions": pooled.to_dict(),
        "patient_level": patient_level(
            [(c["patient"]["truth_positive"], c["patient"]["called_positive"]) for c in cases]
        ),
    }
    return {
        "cases": cases,
        "summary": summary,
        "matching_rule": MATCHING_RULE,
        "nsd_tolerance_mm": tolerance_mm,
    }


CSV_COLUMNS = (
    ["case", "tumor_dice", "tumor_nsd", "truth_lesions", "pred_lesions", "tp", "fp", "fn"]
    + ["sensitivity", "precision", "f1", "mean_lesion_dice"]
    + [f"{name}_sensitivity" for name in SIZE_BINS]
)


def _row(case: str, tumor: dict | None, lesions: dict) -> dict[str, Any]:
    row = {
        "case": case,
        "tumor_dice": None if tumor is None else tumor["dice"],
        "tumor_nsd": None if tumor is None else tumor["nsd"],
        "truth_lesions": lesions["tp"] + lesions["fn"],
        "pred_lesions": lesions["tp"] + lesions["fp"],
        **{
            key: lesions[key]
            for key in ("tp", "fp", "fn", "sensitivity", "precision", "f1", "mean_lesion_dice")
        },
    }
    row.update({f"{name}_sensitivity": lesions["bins"][name]["sensitivity"] for name in SIZE_BINS})
    return row


def report_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per case and a last row ``all`` (mean Dice and NSD, pooled lesion counts)."""
    rows = [_row(c["case"], c["structures"]["tumor"], c["lesions"]) for c in report["cases"]]
    summary = report["summary"]
    tumor = {"dice": summary["dice"].get("tumor"), "nsd": summary["nsd"].get("tumor")}
    rows.append(_row("all", tumor, summary["lesions"]))
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def report_csv(report: dict[str, Any]) -> str:
    """The report's rows (:func:`report_rows`) as CSV text; an undefined rate is an empty cell."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in report_rows(report):
        writer.writerow([_cell(row[column]) for column in CSV_COLUMNS])
    return buffer.getvalue()


def format_table(report: dict[str, Any]) -> str:
    """A text table of the report: per case and overall, and the patient level; ``-``: undefined."""
    columns = ["case", "tumor_dice", "tumor_nsd", "truth_lesions", "pred_lesions", "tp", "fp", "fn"]
    columns += ["sensitivity", "precision", "f1", "tiny_sensitivity"]
    rows = [[_cell(row[c]) or "-" for c in columns] for row in report_rows(report)]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    patient = report["summary"]["patient_level"]
    lines.append(
        f"patient level: {patient['positives']} positive, {patient['negatives']} negative cases; "
        f"sensitivity {_cell(patient['sensitivity']) or '-'}, "
        f"specificity {_cell(patient['specificity']) or '-'}"
    )
    for name, value in report["summary"]["dice"].items():
        if name != "tumor":
            lines.append(f"{name}: Dice {_cell(value)}, NSD {_cell(report['summary']['nsd'][name])}")
    lines.append(f"matching: {report['matching_rule']}; NSD tolerance {report['nsd_tolerance_mm']:g} mm")
    return "\n".join(lines)
