"""The adversarial engine: organ conditioning, output on the input's grid, bad model folders, and
quality control by a real (tiny, trained here) segmenter on both engines."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from freetumor_core.adversarial.engine import load_synthesizer
from freetumor_core.adversarial.generator import (
    ORGANS,
    SynthesisSettings,
    difference_map,
    generator_architecture,
    noise_field,
)
from freetumor_core.cli import main
from freetumor_core.errors import InputError
from freetumor_core.models import ModelConfig, build_network, save_model
from freetumor_core.synthesis import TumorSpec, synthesize


@pytest.fixture(scope="module")
def generator_folder(tmp_path_factory):
    torch.manual_seed(3)
    architecture = generator_architecture()
    config = ModelConfig(
        task="synthesis",
        architecture=architecture,
        label_names=dict(enumerate(ORGANS)),
        provenance={"synthesis": SynthesisSettings().to_dict(), "training_data": "untrained (tests)"},
    )
    return save_model(tmp_path_factory.mktemp("generator") / "model", build_network(architecture), config)


def test_changing_only_the_organ_changes_the_generator_output(generator_folder):
    synthesizer = load_synthesizer(generator_folder, device="cpu")
    settings = synthesizer.settings
    rng = np.random.default_rng(0)
    hu = torch.from_numpy(rng.normal(60, 15, (1, 1, 32, 32, 32)).astype(np.float32))
    mask = torch.zeros_like(hu)
    mask[..., 8:24, 8:24, 8:24] = 1.0
    noise = noise_field(1, 32, np.random.default_rng(1), settings.noise_sigma)
    with torch.no_grad():
        outputs = [
            difference_map(synthesizer.network, hu, mask, torch.tensor([organ]), noise, settings)
            for organ in range(len(ORGANS))
        ]
    inside = mask.bool()
    for index in range(1, len(ORGANS)):
        change = (outputs[index] - outputs[0])[inside].abs().mean()
        assert change > 0.05, f"{ORGANS[index]} vs {ORGANS[0]}: {float(change)} HU"
    # The same organ twice: identical (the change above is the organ's, not noise).
    with torch.no_grad():
        again = difference_map(synthesizer.network, hu, mask, torch.tensor([0]), noise, settings)
    assert torch.equal(again, outputs[0])


def test_engine_paints_on_the_input_grid_and_repeats_with_the_seed(phantom, generator_folder):
    ct, labels = phantom
    spec = TumorSpec(engine="adversarial", model=str(generator_folder), size="small", count=2)
    first = synthesize(ct, labels, spec, seed=5)
    second = synthesize(ct, labels, spec, seed=5)
    assert np.array_equal(first.ct.array, second.ct.array)
    assert first.ct.array.dtype == ct.array.dtype and first.ct.same_grid(ct)
    assert [record.engine for record in first.tumors] == ["adversarial", "adversarial"]
    tumor = first.tumor_mask
    assert tumor.any() and (first.labels.array[tumor] == first.tumors[0].label_id).all()
    changed = first.ct.array != ct.array
    assert changed.any() and not changed[~labels.mask("liver")].any(), "only the organ's voxels change"
    assert 10 <= first.tumors[0].diameter_mm <= 21
    assert first.tumors[0].extra["organ_channel"] == "liver"


def test_a_broken_model_folder_gets_a_clear_error(phantom, generator_folder, tmp_path):
    import shutil

    ct, labels = phantom
    broken = tmp_path / "broken"
    shutil.copytree(generator_folder, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(InputError, match=r"model\.safetensors.*corrupt or truncated"):
        synthesize(ct, labels, TumorSpec(engine="adversarial", model=str(broken)))
    (broken / "config.json").write_text("{not json")
    with pytest.raises(InputError, match=r"config\.json.*not valid JSON"):
        synthesize(ct, labels, TumorSpec(engine="adversarial", model=str(broken)))
    with pytest.raises(InputError, match="model folder not found"):
        synthesize(ct, labels, TumorSpec(engine="adversarial", model=str(tmp_path / "missing")))


def test_a_segmentation_model_is_not_a_generator(phantom, tiny_segmenter):
    ct, labels = phantom
    with pytest.raises(InputError, match="'segmentation' model, not a 'synthesis' model"):
        synthesize(ct, labels, TumorSpec(engine="adversarial", model=str(tiny_segmenter)))


@pytest.mark.slow
def test_qc_rejects_an_invisible_tumor_and_accepts_a_visible_one(phantom, tiny_segmenter):
    ct, labels = phantom
    invisible = TumorSpec(size="small", contrast_hu=0.0, qc=str(tiny_segmenter), qc_tries=3)
    with pytest.raises(InputError, match=r"quality control failed: in 3 tries .*try 3: ") as failure:
        synthesize(ct, labels, invisible, seed=1)
    scores = [float(value) for value in str(failure.value).split("lowest ")[1][:4].split()]
    assert scores[0] < 0.7
    visible = TumorSpec(size="small", contrast_hu=-140.0, qc=str(tiny_segmenter), qc_tries=5)
    result = synthesize(ct, labels, visible, seed=1)
    assert result.tumors[0].qc_score >= 0.7
    assert result.tumors[0].extra["qc_try"] >= 1


@pytest.mark.slow
def test_cli_synthesize_adversarial_with_qc_writes_the_scores(
    tmp_path, phantom, generator_folder, tiny_segmenter
):
    from freetumor_core import write_volume

    ct, labels = phantom
    ct_path = write_volume(ct, tmp_path / "ct.nii.gz")
    labels_path = labels.save(tmp_path / "labels.nii.gz")
    common = ["synthesize", str(ct_path), "--organs", str(labels_path), "--no-snapshot", "--size", "small"]
    code = main([*common, "--engine", "adversarial", "--model", str(generator_folder), "--qc",
                 str(tiny_segmenter), "--qc-threshold", "0", "-o", str(tmp_path / "out")])  # fmt: skip
    assert code == 0
    tumors = json.loads((tmp_path / "out" / "tumors.json").read_text())
    records = tumors["tumors"] if isinstance(tumors, dict) else tumors
    assert records[0]["engine"] == "adversarial" and 0.0 <= records[0]["qc_score"] <= 1.0
    # An invisible handcrafted tumor fails quality control: exit code 2 with the scores.
    code = main([*common, "--contrast-hu", "0", "--qc", str(tiny_segmenter), "--qc-tries", "2",
                 "-o", str(tmp_path / "out2")])  # fmt: skip
    assert code == 2
