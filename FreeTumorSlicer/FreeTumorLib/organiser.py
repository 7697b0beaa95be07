"""The organiser's side of a Visual Turing Test: build a study, score it with its key, show the scores.

Only this module reads a key file; the reader's side (:mod:`FreeTumorLib.reading`) never does. The
scores are those of ``freetumor vtt score`` (the same ``freetumor_core.turing.scoring.score``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import slicer
import vtk

from freetumor_core.progress import ProgressLike
from freetumor_core.turing import Study, build_study, read_key, score
from freetumor_core.turing.scoring import answer_rows, write_csv, write_figure, write_json

SCORE_COLUMNS = ("group", "n", "sensitivity", "specificity", "accuracy", "fleiss_kappa")


def create_study(
    study_folder: str | os.PathLike[str],
    key_path: str | os.PathLike[str],
    real_datalist: str | os.PathLike[str],
    synthetic_datalist: str | os.PathLike[str],
    n_real: int | None = None,
    n_synthetic: int | None = None,
    seed: int = 0,
    allow_leaky: bool = False,
    progress: ProgressLike = None,
) -> Study:
    """Build a blinded study and its key (``freetumor vtt create``); see ``build_study``."""
    return build_study(
        study_folder,
        key_path,
        real_datalist,
        synthetic_datalist,
        n_real=n_real,
        n_synthetic=n_synthetic,
        seed=seed,
        allow_leaky=allow_leaky,
        progress=progress,
    )


def score_study(
    study_folder: str | os.PathLike[str],
    key_path: str | os.PathLike[str],
    output_folder: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Score every committed answer against the key, as ``freetumor vtt score`` does.

    With ``output_folder``, also writes ``scores.json``, ``answers.csv`` and ``scores.png`` there
    (atomically); their paths are returned under ``"outputs"``.

    Raises:
        InputError: a bad study folder or key file (the message names the file).
    """
    study = Study.open(study_folder)
    key = read_key(key_path, study)
    scores = score(study, key)
    if output_folder is not None:
        folder = Path(output_folder)
        scores["outputs"] = {
            "json": str(
                write_json({k: v for k, v in scores.items() if k != "outputs"}, folder / "scores.json")
            ),
            "csv": str(write_csv(answer_rows(study, key), folder / "answers.csv")),
            "png": str(write_figure(scores, folder / "scores.png")),
        }
    return scores


def _percent(value: float | None, interval: list[float] | None) -> str:
    if value is None:
        return "-"
    if interval is None:
        return f"{100 * value:.1f}%"
    return f"{100 * value:.1f}% ({100 * interval[0]:.1f}-{100 * interval[1]:.1f})"


def score_rows(scores: dict[str, Any]) -> list[dict[str, str]]:
    """One row per reader and one pooled: n, sensitivity, specificity and accuracy with their Wilson
    95% intervals (``"60.0% (23.1-88.2)"``); Fleiss' kappa on the pooled row."""
    rows = []
    kappa = scores["agreement"]["fleiss_kappa"]
    groups = [*scores["readers"].items(), ("pooled", scores["pooled"])]
    for name, summary in groups:
        row = {"group": name, "n": str(summary["n"])}
        for metric in ("sensitivity", "specificity", "accuracy"):
            row[metric] = _percent(summary[metric], summary[f"{metric}_ci95"])
        row["fleiss_kappa"] = ("-" if kappa is None else f"{kappa:.3f}") if name == "pooled" else ""
        rows.append(row)
    return rows


def add_score_table(scene: slicer.vtkMRMLScene, scores: dict[str, Any], name: str = "Turing test scores"):
    """A table node of :func:`score_rows` (text columns)."""
    node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table = node.GetTable()
    rows = score_rows(scores)
    for column in SCORE_COLUMNS:
        array = vtk.vtkStringArray()
        array.SetName(column)
        array.SetNumberOfValues(len(rows))
        for index, row in enumerate(rows):
            array.SetValue(index, row[column])
        table.AddColumn(array)
    node.SetColumnDescription("sensitivity", "synthetic cases called synthetic (Wilson 95% interval)")
    node.SetColumnDescription("specificity", "real cases called real (Wilson 95% interval)")
    node.SetColumnDescription("accuracy", "answers that are right (Wilson 95% interval)")
    node.SetColumnDescription("fleiss_kappa", "agreement over the cases every reader answered")
    table.Modified()
    return node


__all__ = ["SCORE_COLUMNS", "add_score_table", "create_study", "score_rows", "score_study"]
