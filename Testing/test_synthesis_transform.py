"""The online synthesis transform inside a MONAI DataLoader with worker processes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor

from freetumor_core import TumorSpec
from freetumor_core.synthesis.bench import liver_patch
from freetumor_core.synthesis.transform import RandTumorSynthesisd

HU_RANGE = (-175.0, 250.0)
# A training label scheme: 1 liver, 2 liver tumor (as in the FreeTumor segmenter's classes).
NAMES = {1: "liver", 2: "liver_tumor"}


@pytest.fixture(scope="module")
def samples(phantom):
    ct, labels = phantom
    patch_ct, patch_labels = liver_patch(ct, labels)
    image = np.clip((patch_ct.array.astype(np.float32) - HU_RANGE[0]) / (HU_RANGE[1] - HU_RANGE[0]), 0, 1)
    label = (patch_labels.array == 5).astype(np.int64)  # liver only
    return [
        {"image": torch.from_numpy(image[None].copy()), "label": torch.from_numpy(label[None].copy())}
        for _ in range(4)
    ]


def test_transform_in_dataloader_with_two_workers(samples):
    transform = RandTumorSynthesisd(
        TumorSpec(organ="liver", size="small"), NAMES, spacing_mm=(1.5, 1.5, 1.5), hu_range=HU_RANGE
    )
    loader = DataLoader(Dataset(samples, transform=transform), batch_size=2, num_workers=2)
    batches = list(loader)
    assert len(batches) == 2
    tumors = []
    for batch in batches:
        assert batch["image"].shape == (2, 1, 96, 96, 96) and batch["image"].dtype == torch.float32
        for index in range(2):
            label = batch["label"][index, 0]
            tumor = label == 2
            assert tumor.sum() > 0, "no tumor painted"
            source_label = samples[0]["label"][0]
            assert bool((source_label[tumor] == 1).all()), "tumor outside the liver"
            changed = batch["image"][index, 0] != samples[0]["image"][0]
            assert bool(changed[tumor].any()) and float(batch["image"].min()) >= 0.0
            tumors.append(tumor)
    # Worker processes draw different tumors, not copies of one.
    assert len({tuple(np.argwhere(t.numpy()).mean(axis=0).round(1)) for t in tumors}) == 4


def test_transform_reads_spacing_from_metatensor_and_keeps_type(samples):
    affine = torch.diag(torch.tensor([1.5, 1.5, 1.5, 1.0], dtype=torch.float64))
    image = MetaTensor(samples[0]["image"].clone(), affine=affine)
    data = {"image": image, "label": samples[0]["label"].clone()}
    transform = RandTumorSynthesisd(TumorSpec(organ="liver", size="tiny", count=2), NAMES, hu_range=HU_RANGE)
    assert transform._spacing(image) == (1.5, 1.5, 1.5)
    transform.set_random_state(seed=3)
    out = transform(data)
    assert isinstance(out["image"], MetaTensor) and out["label"].dtype == torch.int64
    assert int((out["label"] == 2).sum()) > 0
    transform.set_random_state(seed=3)
    again = transform(data)
    assert torch.equal(out["image"], again["image"]), "same random state, same sample"


def test_transform_skips_patches_without_the_organ(samples):
    empty = {"image": samples[0]["image"].clone(), "label": torch.zeros_like(samples[0]["label"])}
    transform = RandTumorSynthesisd(TumorSpec(organ="liver"), NAMES, spacing_mm=(1.5, 1.5, 1.5))
    out = transform(empty)
    assert torch.equal(out["image"], empty["image"])


@pytest.mark.gpu
def test_transform_on_cuda_tensors(samples):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    data = {key: value.cuda() for key, value in samples[0].items()}
    transform = RandTumorSynthesisd(
        TumorSpec(organ="liver", size="small"), NAMES, spacing_mm=(1.5, 1.5, 1.5), hu_range=HU_RANGE
    )
    out = transform(data)
    assert out["image"].is_cuda and out["label"].is_cuda
    assert int((out["label"] == 2).sum()) > 0
