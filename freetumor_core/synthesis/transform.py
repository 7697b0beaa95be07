"""A MONAI dictionary transform that synthesizes tumors online, inside a training pipeline.

``RandTumorSynthesisd`` takes a channel-first image and label (numpy arrays, torch tensors or MONAI
MetaTensors, on CPU or a CUDA device) and returns them with tumors added, in the same type, dtype
and device. Synthesis itself runs on the CPU in the DataLoader's worker processes, which is where
online augmentation lives; a CUDA tensor is copied to the host and back.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform, Randomizable

from ..errors import InputError
from ..labels import LabelMap
from ..volume import Volume
from .engines import synthesize
from .spec import TumorSpec


class RandTumorSynthesisd(Randomizable, MapTransform):
    """Add synthetic tumors to ``data[image_key]`` and ``data[label_key]`` with probability ``prob``.

    Args:
        spec: what to make (organ, size, count, options).
        label_names: id -> name of the label array (``{1: "liver", 2: "liver_tumor"}``); the
            tumor label is ``<organ>_tumor``'s id here, or the next unused id.
        image_key, label_key: dictionary keys of the ``(1, *spatial)`` image and label.
        prob: chance of synthesizing at all.
        spacing_mm: voxel size along the array's spatial axes, in array order; taken from a
            MetaTensor's ``pixdim`` when not given.
        hu_range: when the image was scaled from HU ``[low, high]`` to ``[0, 1]`` (as
            ``ScaleIntensityRanged`` does), the transform works in HU and scales back.
        skip_unfit: leave the sample unchanged when the organ is absent or cannot hold the tumors
            (the usual case for random crops), instead of raising.
    """

    def __init__(
        self,
        spec: TumorSpec,
        label_names: Mapping[int, str],
        image_key: str = "image",
        label_key: str = "label",
        prob: float = 1.0,
        spacing_mm: Sequence[float] | None = None,
        hu_range: tuple[float, float] | None = None,
        skip_unfit: bool = True,
    ) -> None:
        MapTransform.__init__(self, [image_key, label_key])
        self.spec = spec.validated()
        self.label_names = {int(k): str(v) for k, v in label_names.items()}
        self.image_key, self.label_key = image_key, label_key
        self.prob = float(prob)
        self.spacing_mm = None if spacing_mm is None else tuple(float(s) for s in spacing_mm)
        self.hu_range = hu_range
        self.skip_unfit = skip_unfit
        self._apply = False
        self._seed = 0

    def randomize(self, data: Any = None) -> None:
        self._apply = self.R.random_sample() < self.prob
        self._seed = int(self.R.randint(0, 2**31 - 1))

    def _spacing(self, image: Any) -> tuple[float, float, float]:
        if self.spacing_mm is not None:
            return self.spacing_mm  # type: ignore[return-value]
        pixdim = getattr(image, "pixdim", None)
        if pixdim is None:
            raise InputError("spacing unknown: pass spacing_mm or use MetaTensors with pixdim")
        return tuple(float(p) for p in np.asarray(pixdim)[:3])  # type: ignore[return-value]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(data)
        self.randomize()
        if not self._apply:
            return out
        image, label = out[self.image_key], out[self.label_key]
        image_np = _to_numpy(image)[0].astype(np.float32)
        label_np = np.ascontiguousarray(_to_numpy(label)[0]).astype(np.int32)
        if self.hu_range is not None:
            low, high = self.hu_range
            image_np = image_np * np.float32(high - low) + np.float32(low)
        spacing = self._spacing(image)
        # Volume spacing is (x, y, z) for a (z, y, x) array: the reverse of array order.
        ct = Volume(image_np, spacing[::-1])
        organs = LabelMap(ct.like(label_np), dict(self.label_names))
        try:
            # The arrays are this call's own copies: paint them in place (not with quality control,
            # whose rejected tries must not stay painted).
            result = synthesize(ct, organs, self.spec, seed=self._seed, in_place=self.spec.qc is None)
        except InputError:
            if self.skip_unfit:
                return out
            raise
        new_image = result.ct.array
        if self.hu_range is not None:
            low, high = self.hu_range
            new_image = np.clip((new_image - np.float32(low)) / np.float32(high - low), 0.0, 1.0)
        out[self.image_key] = _like(image, new_image)
        out[self.label_key] = _like(label, result.labels.array)
        return out


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _like(reference: Any, channel: np.ndarray) -> Any:
    """``channel`` as channel 0 of a copy of ``reference`` (same type, dtype, device and metadata)."""
    if isinstance(reference, torch.Tensor):
        result = reference.clone()
        result[0] = torch.from_numpy(np.ascontiguousarray(channel)).to(result.device, result.dtype)
        return result
    result = np.array(reference, copy=True)
    result[0] = channel.astype(result.dtype)
    return result
