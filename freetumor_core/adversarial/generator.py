"""The generator's crop and its difference map: what both training and synthesis run.

A tumor is worked on in its own crop: the box around its mask, grown by half its extent plus
:data:`MARGIN_MM` and to at least ``grid * min_spacing_mm`` per axis, resampled (trilinear) to a
``grid``³ array. The generator (a MONAI ``UNet``) takes five or more channels there: the windowed
CT, the tumor mask, smoothed noise (the tumor's texture comes from it) and the host organ one-hot
over :data:`ORGANS`. Its output goes through ``tanh`` and a Gaussian blur (sigma 1 voxel) to a
difference map ``D`` in [-1, 1]; the new CT inside the crop is ``x + soft_mask * D * scale_hu`` with
the mask blurred by ``edge_sigma`` voxels. The change is resampled back to the CT's own voxels and
added there, so geometry is never touched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "GRID",
    "ORGANS",
    "SynthesisSettings",
    "blur",
    "crop_region",
    "difference_map",
    "discriminator_architecture",
    "from_grid",
    "generator_architecture",
    "noise_field",
    "organ_index",
    "to_grid",
    "window",
]

GRID = 32
MARGIN_MM = 4.0
ORGANS = ("liver", "pancreas", "kidney", "other")
FIXED_CHANNELS = 3  # CT, mask, noise


@dataclass(frozen=True)
class SynthesisSettings:
    """How the generator's output becomes HU (stored in a model folder's ``provenance["synthesis"]``).

    Attributes:
        grid: edge of the crop grid (voxels).
        min_spacing_mm: the crop grid's finest spacing; a crop covers at least ``grid`` of them.
        hu_window: HU clipped and scaled to [0, 1] for the networks' input.
        scale_hu: HU of a difference-map value of 1.
        edge_sigma: blur of the tumor mask (crop voxels) that makes the soft edge.
        noise_sigma: smoothing of the noise channel (crop voxels).
    """

    grid: int = GRID
    min_spacing_mm: float = 1.5
    hu_window: tuple[float, float] = (-175.0, 250.0)
    scale_hu: float = 150.0
    edge_sigma: float = 1.0
    noise_sigma: float = 1.0

    def to_dict(self) -> dict:
        return {
            "grid": self.grid,
            "min_spacing_mm": self.min_spacing_mm,
            "hu_window": list(self.hu_window),
            "scale_hu": self.scale_hu,
            "edge_sigma": self.edge_sigma,
            "noise_sigma": self.noise_sigma,
        }

    @classmethod
    def from_dict(cls, data: dict) -> SynthesisSettings:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "hu_window" in known:
            known["hu_window"] = tuple(float(v) for v in known["hu_window"])
        return cls(**known)


def generator_architecture(channels=(16, 32, 64, 128)) -> dict:
    """The generator: a MONAI ``UNet`` from the crop's channels to one difference-map channel."""
    return {
        "name": "UNet",
        "args": {
            "spatial_dims": 3,
            "in_channels": FIXED_CHANNELS + len(ORGANS),
            "out_channels": 1,
            "channels": list(channels),
            "strides": [2] * (len(channels) - 1),
            "num_res_units": 1,
        },
    }


def discriminator_architecture(channels=(16, 32, 64)) -> dict:
    """The discriminator: a MONAI ``UNet`` from the windowed crop to background / real / synthetic."""
    return {
        "name": "UNet",
        "args": {
            "spatial_dims": 3,
            "in_channels": 1,
            "out_channels": 3,
            "channels": list(channels),
            "strides": [2] * (len(channels) - 1),
            "num_res_units": 1,
        },
    }


def organ_index(organ: str | None) -> int:
    """The organ's channel in :data:`ORGANS` (``kidney_left`` -> kidney; unknown -> other)."""
    name = (organ or "").lower()
    for index, known in enumerate(ORGANS[:-1]):
        if name == known or name.startswith(known + "_") or name.endswith("_" + known):
            return index
    return len(ORGANS) - 1


def crop_region(
    mask_start: np.ndarray,
    mask_stop: np.ndarray,
    shape: tuple[int, ...],
    spacing_zyx: np.ndarray,
    settings: SynthesisSettings,
) -> tuple[slice, ...]:
    """The CT voxels ``(z, y, x)`` of a tumor's crop: its box, grown, clipped to the volume."""
    spacing = np.asarray(spacing_zyx, float)
    extent_mm = (np.asarray(mask_stop) - np.asarray(mask_start)) * spacing
    wanted_mm = np.maximum(1.5 * extent_mm + 2 * MARGIN_MM, settings.grid * settings.min_spacing_mm)
    voxels = np.ceil(wanted_mm / spacing).astype(int)
    centre = (np.asarray(mask_start) + np.asarray(mask_stop)) / 2.0
    low = np.floor(centre - voxels / 2.0).astype(int)
    low = np.clip(low, 0, None)
    high = np.minimum(low + voxels, shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))


def to_grid(array: np.ndarray | torch.Tensor, grid: int, mode: str = "trilinear") -> torch.Tensor:
    """``(z, y, x)`` voxels (or a ``(B, C, z, y, x)`` tensor) resampled to ``grid``³."""
    tensor = torch.as_tensor(array, dtype=torch.float32)
    if tensor.ndim == 3:
        tensor = tensor[None, None]
    if tuple(tensor.shape[2:]) == (grid,) * 3:
        return tensor
    return F.interpolate(tensor, size=(grid,) * 3, mode=mode, align_corners=True)


def from_grid(tensor: torch.Tensor, shape: tuple[int, int, int]) -> np.ndarray:
    """A ``(1, 1, g, g, g)`` tensor resampled (trilinear) back onto ``shape`` voxels, float32."""
    if tuple(tensor.shape[2:]) != tuple(shape):
        tensor = F.interpolate(tensor, size=tuple(shape), mode="trilinear", align_corners=True)
    return tensor[0, 0].detach().float().cpu().numpy()


def window(hu: torch.Tensor, hu_window: tuple[float, float]) -> torch.Tensor:
    """HU clipped to the window and scaled to [0, 1]."""
    low, high = hu_window
    return (hu.clamp(low, high) - low) / (high - low)


def _gaussian(sigma: float, device) -> torch.Tensor:
    radius = max(math.ceil(3 * sigma), 1)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


def blur(tensor: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a ``(B, C, z, y, x)`` tensor (replicated edges)."""
    if sigma <= 0:
        return tensor
    kernel = _gaussian(sigma, tensor.device).to(tensor.dtype)
    radius = (len(kernel) - 1) // 2
    channels = tensor.shape[1]
    out = tensor
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = len(kernel)
        weight = kernel.view(shape).repeat(channels, 1, 1, 1, 1)
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        out = F.conv3d(F.pad(out, pad, mode="replicate"), weight, groups=channels)
    return out


def noise_field(batch: int, grid: int, generator: np.random.Generator, sigma: float) -> torch.Tensor:
    """Smoothed unit-variance noise ``(B, 1, g, g, g)`` drawn from a NumPy generator."""
    noise = torch.from_numpy(generator.standard_normal((batch, 1, grid, grid, grid), dtype=np.float32))
    smooth = blur(noise, sigma)
    return smooth / smooth.flatten(1).std(dim=1).clamp_min(1e-6).view(-1, 1, 1, 1, 1)


def difference_map(
    generator: torch.nn.Module,
    hu: torch.Tensor,
    mask: torch.Tensor,
    organs: torch.Tensor,
    noise: torch.Tensor,
    settings: SynthesisSettings,
) -> torch.Tensor:
    """The HU to add to ``hu`` (``(B, 1, g, g, g)``): ``soft_mask * D * scale_hu``.

    Args:
        generator: the generator network.
        hu: crop in HU; mask: the tumor mask (0/1 floats); organs: ``(B,)`` indices into
            :data:`ORGANS`; noise: from :func:`noise_field`.
    """
    onehot = F.one_hot(organs.long(), len(ORGANS)).float().to(hu.device)
    onehot = onehot.view(*onehot.shape, 1, 1, 1).expand(-1, -1, *hu.shape[2:])
    inputs = torch.cat([window(hu, settings.hu_window), mask, noise, onehot], dim=1)
    d = blur(torch.tanh(generator(inputs).float()), 1.0)
    soft = blur(mask, settings.edge_sigma)
    return soft * d * settings.scale_hu
