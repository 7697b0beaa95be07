"""The toy task that proves the loop: a small MONAI UNet segmenting the liver on crops of the phantom.

Crops of ``crop_voxels``³ (1.5 mm voxels) are cut from :func:`freetumor_core.phantom.make_phantom`,
two in three centred on the liver's surface, the rest anywhere around the liver. A crop depends only on
its index and the epoch, so a resumed run sees exactly the crops an uninterrupted one would.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..models import ModelConfig, Preprocessing, build_network
from .task import TrainTask

__all__ = ["HU_WINDOW", "LiverCrops", "ToyLiverTask"]

HU_WINDOW = (-100.0, 240.0)
# The crops of this epoch number are the validation crops; training never gets that far.
VALIDATION_EPOCH = 2**31 - 1


def window_hu(array: np.ndarray, window: tuple[float, float] = HU_WINDOW) -> np.ndarray:
    """HU clipped to ``window`` and scaled to ``[0, 1]`` (float32)."""
    low, high = window
    return ((np.clip(array.astype(np.float32), low, high) - low) / (high - low)).astype(np.float32)


class LiverCrops(torch.utils.data.Dataset):
    """``{"image": (1, D, H, W) float32 in [0, 1], "label": (1, D, H, W) int64 liver mask}`` crops.

    Args:
        count: crops per epoch.
        crop_voxels: edge of the cubic crop (voxels).
        seed: seeds the crop positions together with the epoch and the index.
        phantom_seed: which phantom.
    """

    def __init__(self, count: int = 16, crop_voxels: int = 32, seed: int = 0, phantom_seed: int = 0) -> None:
        from ..phantom import make_phantom

        ct, labels = make_phantom(seed=phantom_seed)
        self.image = window_hu(ct.array)
        self.liver = labels.mask("liver").astype(np.int64)
        from scipy import ndimage

        # Centres on the liver's surface: a crop there holds liver and its surroundings.
        surface = self.liver.astype(bool) & ~ndimage.binary_erosion(self.liver.astype(bool))
        self.liver_voxels = np.argwhere(surface)
        self.low = np.maximum(self.liver_voxels.min(0) - crop_voxels, 0)
        self.high = np.minimum(self.liver_voxels.max(0) + 1, np.array(self.liver.shape) - crop_voxels)
        self.count, self.crop, self.seed, self.epoch = count, crop_voxels, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.count

    def corner(self, index: int, epoch: int | None = None) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch if epoch is None else epoch, index])
        if rng.random() < 2 / 3:
            centre = self.liver_voxels[rng.integers(len(self.liver_voxels))]
            corner = centre - self.crop // 2
        else:
            corner = rng.integers(self.low, self.high + 1)
        return np.clip(corner, 0, np.array(self.liver.shape) - self.crop)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        z, y, x = (int(value) for value in self.corner(index))
        box = (slice(z, z + self.crop), slice(y, y + self.crop), slice(x, x + self.crop))
        return {
            "image": torch.from_numpy(np.ascontiguousarray(self.image[box]))[None],
            "label": torch.from_numpy(np.ascontiguousarray(self.liver[box]))[None],
        }


class ToyLiverTask(TrainTask):
    """Liver segmentation on phantom crops with a small ``monai.networks.nets.UNet`` and Dice + CE."""

    def __init__(
        self,
        channels: tuple[int, ...] = (8, 16, 32),
        crop_voxels: int = 32,
        samples: int = 16,
        seed: int = 0,
    ) -> None:
        from monai.losses import DiceCELoss

        self.architecture = {
            "name": "UNet",
            "args": {
                "spatial_dims": 3,
                "in_channels": 1,
                "out_channels": 2,
                "channels": list(channels),
                "strides": [2] * (len(channels) - 1),
                "num_res_units": 1,
            },
        }
        self.crop_voxels, self.samples, self.seed = crop_voxels, samples, seed
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
        self._data: LiverCrops | None = None

    def _crops(self) -> LiverCrops:
        if self._data is None:
            self._data = LiverCrops(self.samples, self.crop_voxels, self.seed)
        return self._data

    def build_model(self) -> nn.Module:
        return build_network(self.architecture)

    def dataset(self) -> torch.utils.data.Dataset:
        return self._crops()

    def step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = model(batch["image"])
        loss = self.loss(logits.float(), batch["label"])
        return {"loss": loss}

    def validate(self, model: nn.Module) -> dict[str, Any]:
        """Liver Dice on 8 fixed crops drawn apart from the training crops (same phantom)."""
        crops = self._crops()
        device = next(model.parameters()).device
        overlap = total = 0.0
        for index in range(8):
            z, y, x = (int(value) for value in crops.corner(index, epoch=VALIDATION_EPOCH))
            box = (slice(z, z + crops.crop), slice(y, y + crops.crop), slice(x, x + crops.crop))
            image = torch.from_numpy(np.ascontiguousarray(crops.image[box]))[None, None].to(device)
            predicted = model(image).argmax(1)[0].cpu().numpy().astype(bool)
            truth = crops.liver[box].astype(bool)
            overlap += 2.0 * np.logical_and(predicted, truth).sum()
            total += predicted.sum() + truth.sum()
        return {"liver_dice": round(float(overlap / total) if total else 1.0, 4)}

    def model_config(self) -> ModelConfig:
        return ModelConfig(
            task="segmentation",
            architecture=self.architecture,
            preprocessing=Preprocessing(
                spacing_mm=[1.5, 1.5, 1.5],
                hu_window=list(HU_WINDOW),
                patch_size_voxels=[self.crop_voxels] * 3,
            ),
            label_names={0: "background", 1: "liver"},
            provenance={
                "training_data": f"procedural phantom (seed 0): {self.samples} random "
                f"{self.crop_voxels}^3 crops per epoch around the liver"
            },
            description="Toy liver segmentation on the built-in phantom: it proves the trainer; "
            "it is not for use on patients.",
        )
