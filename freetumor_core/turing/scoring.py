"""Scores of a reader study: how well readers tell synthetic from real.

``synthetic`` is the positive class: sensitivity is the fraction of synthetic cases called synthetic,
specificity the fraction of real cases called real, accuracy the fraction of all answers that are
right. Every proportion comes with a Wilson score 95% interval. Agreement between readers is
Fleiss' kappa over the cases every reader answered.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .. import files
from ..errors import InputError
from .build import KEY_FORMAT
from .store import CALLS, Answer
from .study import Study

Z_95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float] | None:
    """Wilson score interval of a proportion ``successes / n``; ``None`` when ``n == 0``."""
    if n == 0:
        return None
    p = successes / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # At 0 and n successes the bound is exactly 0 or 1; the subtraction leaves rounding residue.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def fleiss_kappa(counts: list[list[int]]) -> float | None:
    """Fleiss' kappa from a subjects x categories table of rating counts.

    Every row must sum to the same number of raters ``m >= 2``. Returns ``None`` when undefined: no
    subject, fewer than two raters, or every rating in one category (chance agreement is 1).

    Raises:
        ValueError: rows with different rater counts.
    """
    if not counts:
        return None
    raters = sum(counts[0])
    if any(sum(row) != raters for row in counts):
        raise ValueError("every subject needs the same number of ratings")
    if raters < 2:
        return None
    subjects = len(counts)
    agreement = [(sum(c * c for c in row) - raters) / (raters * (raters - 1)) for row in counts]
    observed = sum(agreement) / subjects
    shares = [sum(row[j] for row in counts) / (subjects * raters) for j in range(len(counts[0]))]
    expected = sum(share * share for share in shares)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def read_key(path: str | os.PathLike[str], study: Study) -> dict[str, dict[str, Any]]:
    """Read and check a key file against a study.

    Raises:
        InputError: missing or invalid JSON, another study's key, cases that do not match, or an
            entry without a valid ``origin``.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError("key file not found", path) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"key file is not valid JSON: {error}", path) from None
    if not isinstance(data, dict) or not isinstance(data.get("cases"), dict):
        raise InputError('key file must be a JSON object {"cases": {ID: {"origin": ...}}}', path)
    if data.get("format", KEY_FORMAT) != KEY_FORMAT:
        raise InputError(f"not a study key (format is not '{KEY_FORMAT}')", path)
    if data.get("study_id") not in (None, study.study_id):
        raise InputError(f"key belongs to study {data['study_id']}, not to {study.study_id}", path)
    cases = data["cases"]
    missing = sorted(set(study.case_ids) - set(cases))
    extra = sorted(set(cases) - set(study.case_ids))
    if missing or extra:
        raise InputError(
            f"key and study cases differ (missing from key: {missing[:5]}, not in study: {extra[:5]})", path
        )
    for case_id, entry in cases.items():
        if not isinstance(entry, dict) or entry.get("origin") not in CALLS:
            raise InputError(f"case {case_id}: 'origin' must be 'real' or 'synthetic'", path)
    return cases


def _size_of(entry: dict[str, Any]) -> str:
    tumors = entry.get("tumors") or []
    if not tumors:
        return "unknown"
    first = tumors[0]
    if "size_class" in first:
        return str(first["size_class"])
    from ..records import size_class

    return size_class(float(first["diameter_mm"]))


def _rows(answers: Iterable[Answer], key: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for answer in answers:
        entry = key[answer.case_id]
        rows.append(
            {
                "reader": answer.reader,
                "case_id": answer.case_id,
                "origin": entry["origin"],
                "organ": entry.get("organ", "unknown"),
                "size_class": _size_of(entry),
                "call": answer.call,
                "correct": answer.call == entry["origin"],
                "confidence": answer.confidence,
                "comment": answer.comment,
                "started_at": answer.started_at,
                "answered_at": answer.answered_at,
                "seconds_spent": answer.seconds_spent,
            }
        )
    return rows


def _proportion(successes: int, n: int) -> tuple[float | None, list[float] | None]:
    interval = wilson_interval(successes, n)
    value = successes / n if n else None
    return value, (list(interval) if interval else None)


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Sensitivity, specificity and accuracy with Wilson 95% intervals for a set of answer rows."""
    synthetic = [row for row in rows if row["origin"] == "synthetic"]
    real = [row for row in rows if row["origin"] == "real"]
    true_positive = sum(row["call"] == "synthetic" for row in synthetic)
    true_negative = sum(row["call"] == "real" for row in real)
    summary: dict[str, Any] = {"n": len(rows), "n_synthetic": len(synthetic), "n_real": len(real)}
    for name, successes, n in (
        ("sensitivity", true_positive, len(synthetic)),
        ("specificity", true_negative, len(real)),
        ("accuracy", true_positive + true_negative, len(rows)),
    ):
        summary[name], summary[f"{name}_ci95"] = _proportion(successes, n)
    summary["true_positive"] = true_positive
    summary["false_negative"] = len(synthetic) - true_positive
    summary["true_negative"] = true_negative
    summary["false_positive"] = len(real) - true_negative
    return summary


def _grouped(rows: list[dict[str, Any]], field: str) -> dict[str, Any]:
    groups = sorted({str(row[field]) for row in rows})
    return {group: summarise([row for row in rows if str(row[field]) == group]) for group in groups}


def _by_confidence(rows: list[dict[str, Any]]) -> dict[str, Any]:
    result = {}
    for level in range(1, 6):
        chosen = [row for row in rows if row["confidence"] == level]
        accuracy, interval = _proportion(sum(row["correct"] for row in chosen), len(chosen))
        result[str(level)] = {"n": len(chosen), "accuracy": accuracy, "accuracy_ci95": interval}
    return result


def _full_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    summary = summarise(rows)
    summary["by_organ"] = _grouped(rows, "organ")
    summary["by_size"] = _grouped(rows, "size_class")
    summary["by_confidence"] = _by_confidence(rows)
    return summary


def agreement(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Fleiss' kappa over the cases that every reader (with at least one answer) answered."""
    readers = sorted({row["reader"] for row in rows})
    calls: dict[str, dict[str, str]] = {}
    for row in rows:
        calls.setdefault(row["case_id"], {})[row["reader"]] = row["call"]
    complete = sorted(case for case, by_reader in calls.items() if len(by_reader) == len(readers))
    table = [[list(calls[case].values()).count(call) for call in CALLS] for case in complete]
    kappa = fleiss_kappa(table) if len(readers) >= 2 else None
    return {"fleiss_kappa": kappa, "n_readers": len(readers), "n_cases": len(complete)}


def score(study: Study, key: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Score every submitted answer of ``study`` against ``key`` (see :func:`read_key`).

    Returns:
        ``{"pooled": {...}, "readers": {name: {...}}, "agreement": {...}, "study_id": ...}``; each
        summary has ``n``, ``sensitivity``, ``specificity``, ``accuracy`` (``None`` when there is
        nothing to divide by), their ``*_ci95`` Wilson intervals, the confusion counts, and
        ``by_organ``, ``by_size`` and ``by_confidence`` breakdowns.
    """
    rows = _rows(study.answers(), key)
    readers = sorted({row["reader"] for row in rows})
    return {
        "study_id": study.study_id,
        "n_cases": len(study.case_ids),
        "pooled": _full_summary(rows),
        "readers": {
            reader: _full_summary([row for row in rows if row["reader"] == reader]) for reader in readers
        },
        "agreement": agreement(rows),
    }


def answer_rows(study: Study, key: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per answer, with the case's origin, organ, size class and whether the call was right."""
    return _rows(study.answers(), key)


def write_json(scores: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write the scores as JSON, atomically."""
    return files.write_json(path, scores)


def write_csv(rows: list[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write one row per answer as CSV, atomically."""
    fields = [
        "reader",
        "case_id",
        "origin",
        "organ",
        "size_class",
        "call",
        "correct",
        "confidence",
        "comment",
        "started_at",
        "answered_at",
        "seconds_spent",
    ]
    with files.atomic_output(path) as temporary, open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)


def write_figure(scores: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """A PNG: sensitivity, specificity and accuracy (Wilson 95% bars) per reader and pooled, and
    pooled accuracy by confidence."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [*scores["readers"], "pooled"]
    summaries = [*scores["readers"].values(), scores["pooled"]]
    metrics = ("sensitivity", "specificity", "accuracy")
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [2, 1]})
    width = 0.8 / len(metrics)
    for k, metric in enumerate(metrics):
        xs, values, errors = [], [], [[], []]
        for g, summary in enumerate(summaries):
            if summary[metric] is None:
                continue
            low, high = summary[f"{metric}_ci95"]
            xs.append(g + (k - 1) * width)
            values.append(summary[metric])
            # max(0, .): at 0 % or 100 % the bound equals the value up to rounding.
            errors[0].append(max(0.0, summary[metric] - low))
            errors[1].append(max(0.0, high - summary[metric]))
        left.bar(xs, values, width, yerr=errors, capsize=3, label=metric)
    left.axhline(0.5, color="grey", linewidth=0.8, linestyle="--")
    left.set_xticks(range(len(groups)), groups, rotation=20)
    left.set_ylim(0, 1.18)
    left.set_ylabel("proportion (Wilson 95% CI)")
    left.set_title("Telling synthetic from real")
    left.legend(fontsize=8, loc="upper center", ncol=3, frameon=False)
    levels = scores["pooled"]["by_confidence"]
    shown = [level for level, entry in levels.items() if entry["n"]]
    right.bar(
        shown,
        [levels[level]["accuracy"] for level in shown],
        yerr=[
            [max(0.0, levels[level]["accuracy"] - levels[level]["accuracy_ci95"][0]) for level in shown],
            [max(0.0, levels[level]["accuracy_ci95"][1] - levels[level]["accuracy"]) for level in shown],
        ],
        capsize=3,
        color="tab:green",
    )
    right.axhline(0.5, color="grey", linewidth=0.8, linestyle="--")
    right.set_ylim(0, 1.05)
    right.set_xlabel("confidence")
    right.set_title("Pooled accuracy by confidence")
    figure.tight_layout()
    with files.atomic_output(path) as temporary:
        figure.savefig(temporary, dpi=120, format="png")
    plt.close(figure)
    return Path(path)
