"""Segmentation metrics against hand-computed cases, empty prediction and empty ground truth included."""

from __future__ import annotations

import math

import numpy as np
import pytest

from freetumor_core.segmentation.metrics import dice, match_lesions, patient_level, surface_dice

SHAPE = (40, 40, 60)
ISO = (1.0, 1.0, 1.0)


def cube(corner, side, shape=SHAPE) -> np.ndarray:
    mask = np.zeros(shape, bool)
    z, y, x = corner
    mask[z : z + side, y : y + side, x : x + side] = True
    return mask


def ball(centre, radius, shape=SHAPE) -> np.ndarray:
    grid = np.indices(shape)
    return sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius**2


def test_dice_hand_computed():
    a = cube((5, 5, 5), 10)
    b = cube((5, 5, 10), 10)  # shifted by 5 voxels: overlap 500 of 1000 + 1000
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, a) == pytest.approx(1.0)
    assert dice(a, cube((5, 5, 30), 10)) == 0.0


def test_dice_empty_cases():
    empty = np.zeros(SHAPE, bool)
    assert dice(empty, empty) == 1.0
    assert dice(empty, cube((5, 5, 5), 4)) == 0.0  # empty prediction
    assert dice(cube((5, 5, 5), 4), empty) == 0.0  # empty ground truth


def test_surface_dice_hand_computed():
    a = cube((5, 5, 5), 6)
    far = cube((5, 5, 40), 6)  # the same cube, far away: its surface is nowhere near the truth's
    # Prediction A + B, truth A: A's surface counts on both sides, B's on neither: 2|dA| / 3|dA|.
    assert surface_dice(a | far, a, ISO, 2.0) == pytest.approx(2.0 / 3.0)
    assert surface_dice(a, a, ISO, 0.5) == pytest.approx(1.0)
    assert surface_dice(a, far, ISO, 2.0) == 0.0


def test_surface_dice_uses_physical_spacing():
    a = cube((5, 5, 5), 6)
    shifted = cube((6, 5, 5), 6)  # one voxel along z
    assert surface_dice(a, shifted, (1.0, 1.0, 1.0), 1.5) == pytest.approx(1.0)
    assert surface_dice(a, shifted, (5.0, 1.0, 1.0), 1.5) < 0.9  # the same shift is 5 mm


def test_surface_dice_empty_cases():
    empty = np.zeros(SHAPE, bool)
    assert surface_dice(empty, empty, ISO, 2.0) == 1.0
    assert surface_dice(empty, cube((5, 5, 5), 4), ISO, 2.0) == 0.0
    assert surface_dice(cube((5, 5, 5), 4), empty, ISO, 2.0) == 0.0


def diameter(voxels: int) -> float:
    return (6.0 * voxels / math.pi) ** (1.0 / 3.0)


def test_lesion_matching_counts_and_size_bins():
    large = ball((20, 20, 12), 6)  # about 12 mm: small bin
    tiny = cube((5, 5, 40), 7)  # 343 mm3: 8.7 mm, tiny
    weak = cube((28, 28, 48), 8)  # 512 mm3, overlapped by a prediction with Dice < 0.1
    truth = large | tiny | weak
    grazing = cube((34, 34, 54), 5)  # 125 voxels, 8 inside `weak`: Dice 16 / 637 = 0.025
    false_positive = cube((2, 30, 2), 8)  # 512 mm3: 9.9 mm, tiny
    pred = large | grazing | false_positive
    counts, truth_lesions, pred_lesions = match_lesions(pred, truth, ISO)
    assert diameter(343) == pytest.approx(8.68, abs=0.01)
    assert [lesion.size_class for lesion in truth_lesions] == ["small", "tiny", "tiny"]
    assert [lesion.size_class for lesion in pred_lesions] == ["small", "tiny", "tiny"]
    assert (counts.tp, counts.fp, counts.fn) == (1, 2, 2)
    result = counts.to_dict()
    assert result["sensitivity"] == pytest.approx(1 / 3)
    assert result["precision"] == pytest.approx(1 / 3)
    assert result["f1"] == pytest.approx(2 / (2 + 2 + 2))
    assert result["mean_lesion_dice"] == pytest.approx(1.0)
    assert result["bins"]["small"]["tp"] == 1 and result["bins"]["small"]["sensitivity"] == 1.0
    assert result["bins"]["tiny"] == {
        "tp": 0, "fp": 2, "fn": 2, "sensitivity": 0.0, "precision": 0.0, "f1": 0.0
    }  # fmt: skip
    assert result["bins"]["large"]["sensitivity"] is None


def test_lesion_matching_is_one_to_one_by_best_dice():
    truth = cube((10, 10, 10), 10)
    better = cube((10, 10, 10), 10) & (np.indices(SHAPE)[2] < 17)  # 700 voxels inside: Dice 0.82
    worse = cube((10, 10, 17), 10) & (np.indices(SHAPE)[2] >= 18)  # 200 inside, 700 outside: Dice 0.21
    counts, truth_lesions, _ = match_lesions(better | worse, truth, ISO)
    assert (counts.tp, counts.fp, counts.fn) == (1, 1, 0)
    assert truth_lesions[0].dice == pytest.approx(2 * 700 / 1700)


def test_lesion_matching_threshold():
    truth = cube((5, 5, 5), 20)  # 8000 voxels
    inside = cube((5, 5, 5), 8)  # 512 inside: Dice 2*512/8512 = 0.12 >= 0.1: found
    assert match_lesions(inside, truth, ISO)[0].tp == 1
    smaller = cube((5, 5, 5), 7)  # 343: Dice 0.082: not found
    counts = match_lesions(smaller, truth, ISO)[0]
    assert (counts.tp, counts.fp, counts.fn) == (0, 1, 1)


def test_lesion_metrics_with_empty_sides():
    empty = np.zeros(SHAPE, bool)
    truth = cube((5, 5, 5), 8) | cube((20, 20, 30), 8)
    missed = match_lesions(empty, truth, ISO)[0].to_dict()  # empty prediction
    assert (missed["tp"], missed["fp"], missed["fn"]) == (0, 0, 2)
    assert missed["sensitivity"] == 0.0 and missed["precision"] is None and missed["f1"] == 0.0
    invented = match_lesions(truth, empty, ISO)[0].to_dict()  # empty ground truth
    assert (invented["tp"], invented["fp"], invented["fn"]) == (0, 2, 0)
    assert invented["sensitivity"] is None and invented["precision"] == 0.0 and invented["f1"] == 0.0
    nothing = match_lesions(empty, empty, ISO)[0].to_dict()
    assert nothing["sensitivity"] is None and nothing["precision"] is None and nothing["f1"] is None


def test_specks_below_a_lesion_are_not_lesions():
    speck = cube((5, 5, 5), 3)  # 27 mm3, below the 5 mm ball (65 mm3)
    counts = match_lesions(speck, np.zeros(SHAPE, bool), ISO)[0]
    assert (counts.tp, counts.fp, counts.fn) == (0, 0, 0)
    # the same voxel count is a lesion at 2 mm voxels (216 mm3)
    assert match_lesions(speck, np.zeros(SHAPE, bool), (2.0, 2.0, 2.0))[0].fp == 1


def test_patient_level_hand_computed():
    cases = [(True, True), (True, False), (False, False), (False, True), (False, False)]
    result = patient_level(cases)
    assert result == {"positives": 2, "negatives": 3, "sensitivity": 0.5, "specificity": pytest.approx(2 / 3)}
    assert patient_level([(False, False)])["sensitivity"] is None
    assert patient_level([(True, True)])["specificity"] is None
