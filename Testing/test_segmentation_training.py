"""The segmenter trainer on the shared loop: crops with online synthetic tumors, and a few steps that
lower the loss on a tiny real set (a TotalSegmentator example CT, labelled and unlabelled)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from freetumor_core.cli import main
from freetumor_core.errors import InputError
from freetumor_core.labels import read_labels
from freetumor_core.models import load_model
from freetumor_core.segmentation import preset_config
from freetumor_core.segmentation.training import SegmenterTask
from freetumor_core.synthesis import TumorSpec, synthesize
from freetumor_core.volume import read_ct, read_volume, write_volume


@pytest.fixture(scope="module")
def datalist(shared_data, tmp_path_factory) -> Path:
    """A labelled case (the example CT with one synthetic liver tumor written as its label) and an
    unlabelled one (the same CT with its organ labels only)."""
    folder = tmp_path_factory.mktemp("datalist")
    source = shared_data / "totalseg_example"
    ct = read_ct(source / "example_ct_sm.nii.gz")
    organs = read_labels(source / "example_seg.nii.gz")
    labelled = synthesize(ct, organs, TumorSpec(organ="liver", size="medium"), seed=3)
    write_volume(labelled.ct, folder / "tumor_ct.nii.gz")
    labelled.labels.save(folder / "tumor_labels.nii.gz")
    entries = [
        {"image": "tumor_ct.nii.gz", "label": "tumor_labels.nii.gz"},
        {"image": str(source / "example_ct_sm.nii.gz"), "label": str(source / "example_seg.nii.gz")},
    ]
    path = folder / "datalist.json"
    path.write_text(json.dumps({"training": entries}))
    return path


def small_config():
    config = preset_config("default")
    config.architecture["args"].update(channels=[8, 16, 32], strides=[2, 2])
    config.preprocessing.spacing_mm = [3.0, 3.0, 3.0]
    return config


def test_crops_get_synthetic_tumors_only_in_unlabelled_cases_and_repeat(datalist):
    task = SegmenterTask(datalist, small_config(), crop_voxels=32, samples=12, synthetic_ratio=1.0, seed=4)
    cases = task.data.cases()
    assert [case.labelled for case in cases] == [True, False]
    tumor_ids = [2, 4, 6]
    # odd indices are the unlabelled case: centred on an organ, each crop gets a synthetic tumor
    synthetic = [np.isin(task.data[i]["label"].numpy(), tumor_ids).sum() for i in range(1, 12, 2)]
    assert sum(count > 0 for count in synthetic) >= 3
    again = SegmenterTask(datalist, small_config(), crop_voxels=32, samples=12, synthetic_ratio=1.0, seed=4)
    assert np.array_equal(task.data[3]["image"].numpy(), again.data[3]["image"].numpy())
    healthy = SegmenterTask(datalist, small_config(), crop_voxels=32, samples=12, synthetic_ratio=0.0, seed=4)
    assert all(not np.isin(healthy.data[i]["label"].numpy(), tumor_ids).any() for i in range(1, 12, 2))
    item = task.data[0]
    assert item["image"].shape == (1, 32, 32, 32) and 0.0 <= float(item["image"].min())
    assert float(item["image"].max()) <= 1.0


def test_size_classes_and_hu_augmentation_of_training_crops(datalist):
    options = dict(crop_voxels=32, samples=12, synthetic_ratio=1.0, seed=4)
    large = SegmenterTask(datalist, small_config(), sizes=("large",), **options)
    tiny = SegmenterTask(datalist, small_config(), sizes=("tiny",), **options)
    tumor_ids = [2, 4, 6]
    large_voxels = sum(np.isin(large.data[i]["label"].numpy(), tumor_ids).sum() for i in range(1, 12, 2))
    tiny_voxels = sum(np.isin(tiny.data[i]["label"].numpy(), tumor_ids).sum() for i in range(1, 12, 2))
    assert large_voxels > 3 * tiny_voxels > 0
    plain = SegmenterTask(datalist, small_config(), **options)
    varied = SegmenterTask(datalist, small_config(), augment=True, **options)
    hu_plain, target_plain = plain.data.sample(3, 0)
    hu_varied, target_varied = varied.data.sample(3, 0)
    assert np.array_equal(target_plain, target_varied)  # labels untouched
    body = hu_plain > -500
    assert not np.allclose(hu_plain[body], hu_varied[body])
    assert np.array_equal(hu_plain[~body], hu_varied[~body])  # air stays air
    assert np.abs(hu_plain[body] - hu_varied[body]).max() < 25 + 0.1 * np.ptp(hu_plain[body])
    # validation crops are never varied
    assert np.array_equal(varied.validation.sample(0, 2**31 - 1)[0], plain.validation.sample(0, 2**31 - 1)[0])
    with pytest.raises(InputError, match="sizes must be among tiny, small, medium, large"):
        SegmenterTask(datalist, small_config(), sizes=("huge",), **options)


def test_spatial_augmentation_moves_image_and_labels_together(datalist):
    options = dict(crop_voxels=32, samples=12, synthetic_ratio=0.0, seed=4)
    plain = SegmenterTask(datalist, small_config(), **options)
    moved = SegmenterTask(datalist, small_config(), spatial=True, **options)
    again = SegmenterTask(datalist, small_config(), spatial=True, **options)
    changed = 0
    for index in range(8):
        before, after = plain.data[index], moved.data[index]
        assert after["image"].shape == before["image"].shape and after["label"].dtype == before["label"].dtype
        # the same (seed, epoch, index), the same crop: a resumed run sees what an uninterrupted one would
        assert np.array_equal(after["image"].numpy(), again.data[index]["image"].numpy())
        assert np.array_equal(after["label"].numpy(), again.data[index]["label"].numpy())
        labels = after["label"].numpy()
        assert set(np.unique(labels)) <= set(range(7))  # nearest-neighbour labels: no blended classes
        if not np.array_equal(after["image"].numpy(), before["image"].numpy()):
            changed += 1
            # image and labels moved alike: the organ voxels of the moved crop are still the bright,
            # soft-tissue ones (windowed HU of the liver), not air
            image = after["image"].numpy()[0]
            organ = labels[0] > 0
            if organ.sum() > 50:
                assert image[organ].mean() > image[~organ].mean()
    assert changed >= 3
    # an x flip alone: image and labels mirrored exactly
    crops = moved.data
    crops.spatial.transforms[-1].prob = 0.0  # no zoom
    for flip in crops.spatial.transforms[:2]:
        flip.prob = 0.0
    crops.spatial.transforms[2].prob = 1.0
    flipped, reference = crops[5], plain.data[5]
    assert np.array_equal(flipped["label"].numpy(), reference["label"].numpy()[..., ::-1])
    assert np.array_equal(flipped["image"].numpy(), reference["image"].numpy()[..., ::-1])
    # crops drawn for validation never move
    crops.set_epoch(2**31 - 1)
    plain.data.set_epoch(2**31 - 1)
    assert np.array_equal(crops[5]["image"].numpy(), plain.data[5]["image"].numpy())


@pytest.mark.slow
def test_a_few_steps_lower_the_loss_and_the_model_segments(datalist, tmp_path):
    run = tmp_path / "run"
    argv = ["train", "segmenter", "--datalist", str(datalist), "-o", str(run), "--crop-voxels", "32"]
    argv += ["--spacing-mm", "3", "3", "3", "--samples", "8", "--synthetic-ratio", "1", "--steps", "16"]
    argv += ["--lr", "0.01", "--warmup-steps", "2", "--log-every", "1", "--validate-every", "16"]
    argv += ["--device", "cpu", "--batch-size", "2"]
    assert main(argv) == 0
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [line["losses"]["loss"] for line in lines if "losses" in line]
    assert len(losses) >= 16
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4])
    model = load_model(run / "model", device="cpu", task="segmentation")
    assert model.config.preprocessing.patch_size_voxels == [32, 32, 32]
    assert "synthetic tumors" in model.config.provenance["training_data"]
    assert 0.0 <= model.config.metrics["dice_liver"] <= 1.0 and "dice_mean" in model.config.metrics
    ct_path = datalist.parent / "tumor_ct.nii.gz"
    out = tmp_path / "seg"
    assert (
        main(["segment", str(ct_path), "-o", str(out), "--model", str(run / "model"), "--no-snapshot"]) == 0
    )
    assert read_labels(out / "labels.nii.gz").volume.same_grid(read_volume(ct_path), tolerance_mm=0)


@pytest.mark.slow
def test_online_adversarial_tumors_under_quality_control(datalist, tmp_path):
    """The adversarial engine (the shipped synthesizer_demo) paints the online tumors and the shipped
    segmenter_demo checks them: a crop's tumor is kept only with a QC score at the threshold, and
    the training log counts what QC did."""
    qc = dict(engine="adversarial", synthesizer="synthesizer_demo", qc_model="segmenter_demo")
    qc |= dict(qc_threshold=0.3, qc_tries=2, synthetic_ratio=1.0, seed=4)
    task = SegmenterTask(datalist, small_config(), crop_voxels=32, samples=4, **qc)
    checked = 0
    for index in (1, 3, 5, 7):  # the unlabelled case
        _hu, target, info = task.data.draw(index, 0)
        has_tumor = bool(np.isin(target, [2, 4, 6]).any())
        assert info["synthetic"] == info["qc_passed"] == float(has_tumor)
        if info["qc_passed"]:
            assert 0.3 <= info["qc_score"] <= 1.0
        checked += int(info["qc_passed"] + info["qc_rejected"])
    assert checked >= 1
    assert "kept when the segmenter segmenter_demo found" in task.model_config().provenance["training_data"]
    with pytest.raises(InputError, match="not a 'segmentation' model"):
        SegmenterTask(datalist, small_config(), crop_voxels=32, **{**qc, "qc_model": "synthesizer_demo"})
    with pytest.raises(InputError, match="takes no model"):
        SegmenterTask(datalist, small_config(), crop_voxels=32, synthesizer="synthesizer_demo")
    assert task.summary["qc"] == {"qc": "segmenter_demo", "qc_threshold": 0.3, "qc_tries": 2}

    run = tmp_path / "run"
    argv = ["train", "segmenter", "--datalist", str(datalist), "-o", str(run), "--crop-voxels", "32"]
    argv += ["--spacing-mm", "3", "3", "3", "--samples", "4", "--synthetic-ratio", "1", "--steps", "2"]
    argv += ["--engine", "adversarial", "--synthesizer", "synthesizer_demo", "--qc-model", "segmenter_demo"]
    argv += ["--qc-threshold", "0.3", "--qc-tries", "2", "--log-every", "1", "--device", "cpu"]
    argv += ["--batch-size", "2", "--seed", "4"]
    assert main(argv) == 0
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = [line["losses"] for line in lines if "losses" in line]
    assert len(logged) == 2 and all({"qc_passed", "qc_rejected", "qc_score"} <= set(row) for row in logged)
    assert sum(row["qc_passed"] + row["qc_rejected"] for row in logged) >= 1
