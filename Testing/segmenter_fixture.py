"""A tiny segmentation model trained for seconds on phantom crops (for the quality-control tests)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from freetumor_core.models import ModelConfig, Preprocessing, build_network
from freetumor_core.training import TrainConfig, TrainTask, train

CROP = 24
WINDOW = (-175.0, 250.0)
LABELS = {0: "background", 1: "liver_tumor"}


def _crops(phantom, count: int = 20) -> list[tuple[np.ndarray, np.ndarray]]:
    from freetumor_core.synthesis import TumorSpec, synthesize

    ct, labels = phantom
    crops = []
    rng = np.random.default_rng(0)
    for index in range(count):
        contrast = float(rng.choice([-1, 1]) * rng.uniform(80, 150))
        size = "tiny" if index % 2 else "small"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = synthesize(ct, labels, TumorSpec(size=size, contrast_hu=contrast), seed=index)
        tumor = result.tumor_mask
        target = tumor.astype(np.int64)
        centre = np.argwhere(tumor).mean(axis=0).astype(int) + rng.integers(-7, 8, 3)
        low = np.clip(centre - CROP // 2, 0, np.array(ct.shape) - CROP)
        box = tuple(slice(int(a), int(a) + CROP) for a in low)
        image = (np.clip(result.ct.array[box].astype(np.float32), *WINDOW) - WINDOW[0]) / (
            WINDOW[1] - WINDOW[0]
        )
        crops.append((image, target[box]))
    return crops


class _Crops(torch.utils.data.Dataset):
    def __init__(self, crops) -> None:
        self.crops = crops

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, index: int):
        image, target = self.crops[index]
        return {"image": torch.from_numpy(image)[None], "label": torch.from_numpy(target)[None]}


class TinySegmenterTask(TrainTask):
    def __init__(self, crops) -> None:
        from monai.losses import DiceCELoss

        self.data = _Crops(crops)
        self.architecture = {
            "name": "UNet",
            "args": {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [8, 16, 32],
                     "strides": [2, 2], "num_res_units": 1},
        }  # fmt: skip
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)

    def build_model(self):
        return build_network(self.architecture)

    def dataset(self):
        return self.data

    def step(self, model, batch):
        return {"loss": self.loss(model(batch["image"]).float(), batch["label"])}

    def model_config(self) -> ModelConfig:
        return ModelConfig(
            task="segmentation",
            architecture=self.architecture,
            preprocessing=Preprocessing(
                spacing_mm=[1.5] * 3, hu_window=list(WINDOW), patch_size_voxels=[CROP] * 3
            ),
            label_names=dict(LABELS),
            provenance={"training_data": "phantom crops with visible synthetic liver tumors (tests only)"},
            description="Tiny test segmenter: finds clearly visible liver tumors in the phantom.",
        )


def train_tiny_segmenter(folder: Path, phantom, steps: int = 150) -> Path:
    task = TinySegmenterTask(_crops(phantom))
    config = TrainConfig(
        steps=steps, batch_size=4, lr=1e-2, device="cpu", checkpoint_every=steps, log_every=20
    )
    return train(task, config, folder / "run").model_dir
