"""Scoring formulas against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from freetumor_core.turing.scoring import agreement, fleiss_kappa, summarise, wilson_interval


def test_wilson_interval_closed_form() -> None:
    # 3 of 4, z = 1.96: (2np + z^2 -/+ z sqrt(z^2 + 4np(1-p))) / (2(n + z^2)), written out.
    z = 1.959963984540054
    low = (6 + z * z - z * math.sqrt(z * z + 3)) / (2 * (4 + z * z))
    high = (6 + z * z + z * math.sqrt(z * z + 3)) / (2 * (4 + z * z))
    assert wilson_interval(3, 4) == pytest.approx((low, high), abs=1e-12)
    assert wilson_interval(3, 4) == pytest.approx((0.3006418, 0.9544127), abs=1e-6)
    # The interval of 0/n starts at 0, that of n/n ends at 1, and both stay inside [0, 1].
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == 1.0
    assert wilson_interval(0, 0) is None


def test_fleiss_kappa_by_hand() -> None:
    # 4 cases, 3 readers, counts of (real, synthetic) calls per case.
    # Agreement per case: 1, 1, 1/3, 1/3 -> mean 2/3; category shares 1/2, 1/2 -> chance 1/2.
    # kappa = (2/3 - 1/2) / (1 - 1/2) = 1/3.
    assert fleiss_kappa([[3, 0], [0, 3], [2, 1], [1, 2]]) == pytest.approx(1 / 3)
    # Perfect agreement over both categories: 1; total split on every case: below 0.
    assert fleiss_kappa([[2, 0], [0, 2]]) == pytest.approx(1.0)
    assert fleiss_kappa([[1, 1], [1, 1]]) == pytest.approx(-1.0)
    # Undefined: every rating the same category, a single rater, no case.
    assert fleiss_kappa([[2, 0], [2, 0]]) is None
    assert fleiss_kappa([[1, 0]]) is None
    assert fleiss_kappa([]) is None
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa([[2, 0], [1, 0]])


def _row(reader: str, case: str, origin: str, call: str) -> dict:
    return {"reader": reader, "case_id": case, "origin": origin, "call": call, "correct": origin == call}


def test_summary_counts_and_agreement() -> None:
    rows = [
        _row("a", "c1", "synthetic", "synthetic"),
        _row("a", "c2", "synthetic", "real"),
        _row("a", "c3", "real", "real"),
        _row("b", "c1", "synthetic", "synthetic"),
        _row("b", "c2", "synthetic", "synthetic"),
        _row("b", "c3", "real", "synthetic"),
        _row("b", "c4", "real", "real"),
    ]
    summary = summarise(rows)
    # synthetic: 4 answers, 3 called synthetic; real: 3 answers, 2 called real; 5 of 7 right.
    assert (summary["sensitivity"], summary["specificity"], summary["accuracy"]) == (3 / 4, 2 / 3, 5 / 7)
    assert summary["n"] == 7 and summary["false_negative"] == 1 and summary["false_positive"] == 1
    assert summary["accuracy_ci95"] == pytest.approx(list(wilson_interval(5, 7)))
    # Agreement only over c1..c3 (answered by both): c1 agrees, c2 and c3 split.
    # P = (1 + 0 + 0) / 3; shares: real 2/6, synthetic 4/6 -> chance 5/9; kappa = (1/3 - 5/9) / (4/9).
    result = agreement(rows)
    assert result["n_cases"] == 3 and result["n_readers"] == 2
    assert result["fleiss_kappa"] == pytest.approx((1 / 3 - 5 / 9) / (4 / 9))
