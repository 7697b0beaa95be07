"""The segmentation comparison of the two engines: its training seam and its lesion scoring."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from freetumor_core.phantom import make_phantom
from freetumor_core.synthesis import TumorSpec

REPO = Path(__file__).resolve().parents[1]


def _script(name):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(REPO / "scripts"))


def test_held_out_cases_are_painted_by_the_chosen_engine():
    demo = _script("train_demo_segmenter")
    ct, labels = make_phantom(seed=100)
    specs = [TumorSpec(organ="liver", size="small", allow_shrink=True)]
    engines = ("handcrafted", "adversarial")
    painted = {engine: demo.paint(ct, labels, specs, 7000, engine=engine) for engine in engines}
    tumors = {}
    for engine, (new_ct, new_labels) in painted.items():
        tumor = np.isin(new_labels.array, new_labels.ids_for("liver_tumor"))
        assert tumor.sum() > 100, engine
        assert new_ct.shape == ct.shape and np.allclose(new_ct.spacing, ct.spacing)
        assert (new_ct.array[tumor] != ct.array[tumor]).mean() > 0.5, engine
        tumors[engine] = (new_ct.array, tumor)
    # Same seed, same spec: the two engines paint different HU (the learned look is not the handcrafted one).
    (hand, _), (adv, _) = tumors["handcrafted"], tumors["adversarial"]
    assert not np.array_equal(hand, adv)


def test_lesion_scoring_counts_a_found_lesion_and_a_false_positive():
    compare = _script("compare_synthesis_engines")
    z, y, x = np.indices((30, 60, 60))
    truth = (z - 15) ** 2 + (y - 20) ** 2 + (x - 20) ** 2 <= 8**2
    elsewhere = (z - 15) ** 2 + (y - 45) ** 2 + (x - 45) ** 2 <= 5**2
    shifted = (z - 15) ** 2 + (y - 21) ** 2 + (x - 20) ** 2 <= 8**2
    scores = compare._lesion_scores(shifted | elsewhere, truth, (1.0, 1.0, 1.0))
    assert scores["found"] and scores["false_positive_lesions"] == 1
    assert 0.85 < scores["lesion_dice"] < 1.0
    missed = compare._lesion_scores(elsewhere, truth, (1.0, 1.0, 1.0))
    assert not missed["found"] and missed["lesion_dice"] is None and missed["false_positive_lesions"] == 1
    rate = compare._rate(1, 3)
    assert rate["rate"] == pytest.approx(0.333) and rate["wilson_95"][0] < 0.333 < rate["wilson_95"][1]


def test_the_generator_runs_on_one_thread_and_gives_the_same_tumor():
    import torch

    from freetumor_core.synthesis import synthesize

    ct, labels = make_phantom(seed=1)
    spec = TumorSpec(organ="liver", size="small", engine="adversarial", allow_shrink=True)
    threads = torch.get_num_threads()
    first = synthesize(ct, labels, spec, seed=3)
    assert torch.get_num_threads() == threads  # restored after the generator's crop
    torch.set_num_threads(1)
    try:
        second = synthesize(ct, labels, spec, seed=3)
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(first.ct.array, second.ct.array)
    assert first.tumors[0].extra["organ_channel"] == "liver"
