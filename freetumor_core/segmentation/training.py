"""``SegmenterTask``: train a segmentation network on the shared trainer loop, with synthetic tumors
made online.

Data: a MONAI/MSD datalist (``{"training": [{"image": CT, "label": LABELS}, ...]}``, optional
``validation``). An entry whose label map holds lesion voxels is a labelled case: its tumors are the
targets. An entry whose label map holds only organs is an unlabelled case: a crop of it gets a
synthetic tumor (:func:`freetumor_core.synthesis.synthesize`, either engine) in one of the model's
organs with probability ``synthetic_ratio``. Labels are mapped to the model's classes by name
(``kidney`` also takes ``kidney_left`` and ``kidney_right``); tumors must be named as the model
names them (``liver_tumor``), as synthesis names its tumors.

Every case is resampled once to the model's spacing (CT linear, labels nearest). A crop of
``crop_voxels``³ is centred on a tumor voxel (labelled case) or an organ voxel (unlabelled case)
with probability ``positive_ratio``, anywhere otherwise. A crop depends only on the seed, the epoch
and its index, so a resumed run sees what an uninterrupted one would. Loss: MONAI ``DiceCELoss``;
optimizer and schedule come from :class:`~freetumor_core.training.TrainConfig` (AdamW, warm-up +
cosine by default); validation Dice per class on fixed crops of the ``validation`` cases (or of the
training cases when there are none).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from torch import nn

from ..errors import InputError
from ..labels import LabelMap, align_to, read_labels
from ..lesions import is_lesion_label
from ..models import ModelConfig, build_network, read_model_config, resolve_model
from ..training.task import TrainTask
from ..volume import Volume, read_ct
from .inference import model_grid
from .networks import host_organ, preset_config, tumor_labels

__all__ = ["SegmentationCrops", "SegmenterTask"]

VALIDATION_EPOCH = 2**31 - 1
VALIDATION_CROPS = 8
SIZES = ("tiny", "small")
HU_SHIFT = 25.0  # intensity augmentation: HU offset drawn from [-HU_SHIFT, HU_SHIFT]
HU_SCALE = 0.1  # and a contrast factor from [1 - HU_SCALE, 1 + HU_SCALE] about the crop's organ mean
# spatial augmentation: each axis flipped with this probability, and a zoom (both image and labels,
# the crop's size kept) with this probability, by a factor drawn from ZOOM_RANGE
FLIP_PROBABILITY = 0.2
ZOOM_PROBABILITY = 0.5
ZOOM_RANGE = (0.8, 1.25)


@dataclass
class _Case:
    hu: np.ndarray  # (z, y, x) float32 HU on the model grid, padded to at least a crop
    target: np.ndarray  # (z, y, x) uint8 model classes
    spacing: tuple[float, float, float]
    labelled: bool
    source: str
    centres: np.ndarray  # (N, 3) voxels a positive crop is centred on: tumor (labelled) or organ


def _resample(volume: Volume, spacing, interpolator, default: float) -> np.ndarray:
    if spacing is None or np.allclose(spacing, volume.spacing, rtol=0, atol=1e-6):
        return volume.array
    size, spacing = model_grid(volume, spacing)
    image = sitk.Resample(
        volume.to_sitk(),
        list(size),
        sitk.Transform(),
        interpolator,
        volume.origin,
        spacing,
        tuple(volume.direction.flatten()),
        default,
    )
    return sitk.GetArrayFromImage(image)


def _targets(labels: LabelMap, label_names: dict[int, str]) -> np.ndarray:
    """Model classes from a label map's names: organs first, then tumors over them."""
    target = np.zeros(labels.array.shape, np.uint8)
    for class_id, name in sorted(label_names.items(), key=lambda item: is_lesion_label(item[1])):
        ids = labels.ids_for(name) if class_id != 0 else []
        if ids:
            target[np.isin(labels.array, ids)] = class_id
    return target


class SegmentationCrops(torch.utils.data.Dataset):
    """``{"image": (C, D, H, W) float32, "label": (1, D, H, W) int64}`` crops of a datalist's cases.

    Args:
        entries: datalist entries (``image``, ``label`` paths).
        config: the model's config (spacing, HU window, labels, input channels).
        crop_voxels: edge of the cubic crop.
        count: crops per epoch.
        synthetic_ratio: probability that a crop of an unlabelled case gets a synthetic tumor.
        positive_ratio: probability that a crop is centred on a tumor or organ voxel.
        engine: synthesis engine name.
        seed: seeds the crops with the epoch and the index.
        sizes: the size classes synthetic tumors are drawn from (uniformly).
        augment: vary each training crop's HU (offset and contrast, as between scanners and
            contrast phases); validation crops are never augmented.
        spatial: flip and zoom each training crop, image and labels alike (MONAI ``RandFlipd`` per
            axis, ``RandZoomd``; seeded by the seed, the epoch and the index), so the network sees
            lesions of other sizes and organs in other places than the few hosts hold; validation
            crops never move.
        synthesizer: the model folder (or shipped name) of a model engine (``adversarial``:
            ``TumorSpec.model``; ``None``: the engine's shipped default).
        qc_model: quality control of the synthetic tumors (``TumorSpec.qc``): a segmentation model
            folder or shipped name; a tumor is kept when it finds at least ``qc_threshold`` of its
            voxels, else new geometry is drawn, up to ``qc_tries`` times, and a crop whose tumor
            never passes stays healthy. ``qc_threshold`` and ``qc_tries`` default to TumorSpec's.
    """

    def __init__(
        self,
        entries: list,
        config: ModelConfig,
        crop_voxels: int = 96,
        count: int = 32,
        synthetic_ratio: float = 0.5,
        positive_ratio: float = 2 / 3,
        engine: str = "handcrafted",
        seed: int = 0,
        sizes: tuple[str, ...] = SIZES,
        augment: bool = False,
        spatial: bool = False,
        synthesizer: str | None = None,
        qc_model: str | None = None,
        qc_threshold: float | None = None,
        qc_tries: int | None = None,
    ) -> None:
        from ..records import SIZE_CLASSES_MM

        unknown = [size for size in sizes if size not in SIZE_CLASSES_MM]
        if not sizes or unknown:
            raise InputError(f"sizes must be among {', '.join(SIZE_CLASSES_MM)}, got {list(sizes)}")
        self.sizes, self.augment = tuple(sizes), augment
        self.spatial = _spatial_transform() if spatial else None
        self.synthesis: dict[str, Any] = {
            "engine": engine,
            "model": None if synthesizer is None else str(synthesizer),
            "qc": None if qc_model is None else str(qc_model),
        }
        for key, value in (("qc_threshold", qc_threshold), ("qc_tries", qc_tries)):
            if value is not None:  # else TumorSpec's default
                self.synthesis[key] = value
        self.tumor_spec("liver", SIZES[0])  # a bad engine, model or QC setting fails here
        for key, task in (("model", "synthesis"), ("qc", "segmentation")):
            if self.synthesis[key] is not None:
                folder = resolve_model(self.synthesis[key])
                if read_model_config(folder).task != task:
                    raise InputError(f"not a {task!r} model ({key} of the online tumors)", folder)
        self.entries, self.config = list(entries), config
        self.crop, self.count, self.seed, self.epoch = crop_voxels, count, seed, 0
        self.synthetic_ratio, self.positive_ratio, self.engine = synthetic_ratio, positive_ratio, engine
        self.names = {k: v for k, v in config.label_names.items() if k != 0}
        self.organ_classes = {k: v for k, v in self.names.items() if not is_lesion_label(v)}
        self._cases: list[_Case] | None = None

    def cases(self) -> list[_Case]:
        if self._cases is None:
            self._cases = [self._load(entry) for entry in self.entries]
        return self._cases

    def _load(self, entry) -> _Case:
        spacing = self.config.preprocessing.spacing_mm
        ct = read_ct(entry.image)
        labels = align_to(read_labels(entry.label), ct)
        target = _targets(labels, self.config.label_names)
        if not target.any():
            raise InputError("label map holds none of the model's organs or tumors", entry.label)
        hu = _resample(ct.like(ct.array.astype(np.float32)), spacing, sitk.sitkLinear, -1024.0)
        target = _resample(ct.like(target), spacing, sitk.sitkNearestNeighbor, 0).astype(np.uint8)
        pad = [(0, max(self.crop - n, 0)) for n in hu.shape]
        hu = np.pad(hu.astype(np.float32), pad, constant_values=-1024.0)
        target = np.pad(target, pad)
        tumor = np.isin(target, list(tumor_labels(self.names)))
        labelled = bool(tumor.any())
        centres = np.argwhere(tumor if labelled else target > 0)
        grid_spacing = tuple(float(s) for s in (spacing or ct.spacing))
        return _Case(hu, target, grid_spacing, labelled, str(entry.image), centres)  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.count

    def tumor_spec(self, organ: str, size: str):
        """The :class:`~freetumor_core.synthesis.TumorSpec` of one online tumor (checked)."""
        from ..synthesis import TumorSpec

        return TumorSpec(organ=organ, size=size, allow_shrink=True, **self.synthesis).validated()

    @property
    def checks_quality(self) -> bool:
        return self.synthesis["qc"] is not None

    def sample(self, index: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """The HU crop and its class crop for ``index`` in ``epoch``."""
        hu, target, _ = self.draw(index, epoch)
        return hu, target

    def draw(self, index: int, epoch: int) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
        """:meth:`sample` and what synthesis did: ``synthetic`` (1: the crop got a tumor), and with
        quality control ``qc_passed`` (1: its tumor passed), ``qc_rejected`` (1: no try passed, the
        crop stayed healthy) and ``qc_score`` (the kept tumor's, else 0)."""
        cases = self.cases()
        rng = np.random.default_rng([self.seed, epoch, index])
        case = cases[index % len(cases)]
        shape = np.array(case.hu.shape)
        if rng.random() < self.positive_ratio and len(case.centres):
            corner = case.centres[rng.integers(len(case.centres))] - self.crop // 2
        else:
            corner = rng.integers(0, shape - self.crop + 1)
        corner = np.clip(corner, 0, shape - self.crop)
        box = tuple(slice(int(c), int(c) + self.crop) for c in corner)
        hu, target = case.hu[box].copy(), case.target[box].copy()
        info = {"synthetic": 0.0}
        if self.checks_quality:
            info.update(qc_passed=0.0, qc_rejected=0.0, qc_score=0.0)
        if not case.labelled and rng.random() < self.synthetic_ratio:
            hu, target = self._synthesize(hu, target, case.spacing, rng, info)
        if self.augment and epoch != VALIDATION_EPOCH:
            hu = self._vary(hu, target, rng)
        return hu, target, info

    @staticmethod
    def _vary(hu: np.ndarray, target: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The crop's HU with a random offset, and a random contrast about its organs' mean HU."""
        body = hu > -500
        if not body.any():
            return hu
        centre = float(hu[target > 0].mean()) if (target > 0).any() else float(hu[body].mean())
        scale = 1.0 + rng.uniform(-HU_SCALE, HU_SCALE)
        shifted = np.where(body, (hu - centre) * scale + centre + rng.uniform(-HU_SHIFT, HU_SHIFT), hu)
        return shifted.astype(np.float32)

    def _synthesize(self, hu, target, spacing, rng, info) -> tuple[np.ndarray, np.ndarray]:
        from ..synthesis import synthesize

        host_names = {host_organ(name) for name in tumor_labels(self.names).values()}
        hosts = [k for k, name in self.organ_classes.items() if name in host_names and (target == k).any()]
        if not hosts:
            return hu, target
        organ = self.names[int(rng.choice(hosts))]
        ct = Volume(np.round(hu).astype(np.int16), spacing)
        labels = LabelMap(ct.like(target), dict(self.names))
        size = str(rng.choice(self.sizes))
        spec = self.tumor_spec(organ, size)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = synthesize(ct, labels, spec, seed=int(rng.integers(2**31)))
        except InputError as error:
            # This crop's part of the organ cannot hold a tumor, or no try passed quality control:
            # the crop stays healthy.
            if self.checks_quality and error.problem.startswith("quality control failed"):
                info["qc_rejected"] = 1.0
            return hu, target
        tumor_id = next(k for k, n in tumor_labels(self.names).items() if host_organ(n) == organ)
        target = target.copy()
        target[result.tumor_mask] = tumor_id
        info["synthetic"] = 1.0
        if self.checks_quality:
            info.update(qc_passed=1.0, qc_score=float(min(t.qc_score for t in result.tumors)))
        return result.ct.array.astype(np.float32), target

    def tensors(self, hu: np.ndarray, target: np.ndarray) -> dict[str, torch.Tensor]:
        window = self.config.preprocessing.hu_window
        image = hu.astype(np.float32)
        if window is not None:
            low, high = window
            image = (np.clip(image, low, high) - low) / (high - low)
        channels = [image]
        if int(self.config.architecture["args"].get("in_channels", 1)) == 2:
            channels.append((target > 0).astype(np.float32))  # the organs, their tumors included
        return {
            "image": torch.from_numpy(np.ascontiguousarray(np.stack(channels), dtype=np.float32)),
            "label": torch.from_numpy(target.astype(np.int64))[None],
        }

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        from monai.utils import convert_to_tensor

        hu, target, info = self.draw(index, self.epoch)
        item = self.tensors(hu, target)
        if self.spatial is not None and self.epoch != VALIDATION_EPOCH:
            seed = int(np.random.SeedSequence([self.seed, self.epoch, index, 1]).generate_state(1)[0])
            self.spatial.set_random_state(seed=seed)
            moved = self.spatial({"image": item["image"], "label": item["label"]})
            item["image"] = convert_to_tensor(moved["image"], torch.float32, track_meta=False).contiguous()
            item["label"] = convert_to_tensor(moved["label"], track_meta=False).round().long().contiguous()
        item.update({key: torch.tensor(value, dtype=torch.float32) for key, value in info.items()})
        return item


def _spatial_transform():
    """Flips of each axis and a zoom, the same on image and labels (MONAI dict transforms)."""
    from monai.transforms import Compose, RandFlipd, RandZoomd

    keys = ("image", "label")
    flips = [RandFlipd(keys, prob=FLIP_PROBABILITY, spatial_axis=axis) for axis in range(3)]
    zoom = RandZoomd(
        keys,
        prob=ZOOM_PROBABILITY,
        min_zoom=ZOOM_RANGE[0],
        max_zoom=ZOOM_RANGE[1],
        mode=("trilinear", "nearest"),
        padding_mode="edge",
        keep_size=True,
    )
    return Compose([*flips, zoom], lazy=False)


class SegmenterTask(TrainTask):
    """Segmentation with online synthetic tumors (see the module docstring).

    Args:
        datalist: the datalist file (``training`` and optionally ``validation``).
        config: the model's config (a preset's, :func:`preset_config`); its patch size becomes
            ``crop_voxels``.
        crop_voxels, samples, synthetic_ratio, positive_ratio, engine, seed, sizes, augment,
            spatial, synthesizer, qc_model, qc_threshold, qc_tries: see :class:`SegmentationCrops`. With
            ``qc_model``, each step also logs ``qc_passed`` and ``qc_rejected`` (crops of the batch
            whose synthetic tumor passed quality control, or never did and stayed healthy) and
            ``qc_score`` (the mean score of the passed ones, 0 when none).
    """

    def __init__(
        self,
        datalist: str | os.PathLike[str],
        config: ModelConfig | None = None,
        crop_voxels: int = 96,
        samples: int = 32,
        synthetic_ratio: float = 0.5,
        positive_ratio: float = 2 / 3,
        engine: str = "handcrafted",
        seed: int = 0,
        sizes: tuple[str, ...] = SIZES,
        augment: bool = False,
        spatial: bool = False,
        synthesizer: str | None = None,
        qc_model: str | None = None,
        qc_threshold: float | None = None,
        qc_tries: int | None = None,
    ) -> None:
        from monai.losses import DiceCELoss

        from ..synthesis import get_engine
        from ..turing.datalist import read_datalist

        for name, value in (("synthetic_ratio", synthetic_ratio), ("positive_ratio", positive_ratio)):
            if not 0.0 <= value <= 1.0:
                raise InputError(f"{name} must be from 0 to 1, got {value}")
        get_engine(engine)  # an unknown engine fails here, not in the middle of training
        config = config or preset_config("default")
        config.preprocessing.patch_size_voxels = [crop_voxels] * 3
        self.config = config
        self.datalist = str(datalist)
        training = read_datalist(datalist, "training")
        try:
            validation = read_datalist(datalist, "validation")
        except InputError:
            validation = training
        options = dict(
            crop_voxels=crop_voxels,
            synthetic_ratio=synthetic_ratio,
            positive_ratio=positive_ratio,
            engine=engine,
            seed=seed,
            sizes=tuple(sizes),
            synthesizer=synthesizer,
            qc_model=qc_model,
            qc_threshold=qc_threshold,
            qc_tries=qc_tries,
        )
        self.data = SegmentationCrops(
            training, config, count=samples, augment=augment, spatial=spatial, **options
        )
        self.validation = SegmentationCrops(validation, config, count=VALIDATION_CROPS, **options)
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
        self.summary = {
            "training_cases": len(training),
            "validation_cases": len(validation) if validation is not training else 0,
            "synthetic_ratio": synthetic_ratio,
            "engine": engine,
            "sizes": list(sizes),
            "synthesizer": synthesizer,
            "qc": {key: value for key, value in self.data.synthesis.items() if key.startswith("qc")},
        }

    def build_model(self) -> nn.Module:
        return build_network(self.config.architecture)

    def dataset(self) -> torch.utils.data.Dataset:
        return self.data

    def step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        losses = {"loss": self.loss(model(batch["image"]).float(), batch["label"])}
        if "qc_passed" in batch:
            passed = batch["qc_passed"].sum()
            losses["qc_passed"] = passed
            losses["qc_rejected"] = batch["qc_rejected"].sum()
            losses["qc_score"] = batch["qc_score"].sum() / passed.clamp(min=1)
        return losses

    def validate(self, model: nn.Module) -> dict[str, Any]:
        """Dice per class (present in the validation crops) and their mean."""
        device = next(model.parameters()).device
        overlap: dict[int, float] = {}
        total: dict[int, float] = {}
        for index in range(VALIDATION_CROPS):
            item = self.validation.tensors(*self.validation.sample(index, VALIDATION_EPOCH))
            predicted = model(item["image"][None].to(device)).argmax(1)[0].cpu().numpy()
            truth = item["label"][0].numpy()
            for class_id in self.validation.names:
                p, t = predicted == class_id, truth == class_id
                overlap[class_id] = overlap.get(class_id, 0.0) + 2.0 * np.logical_and(p, t).sum()
                total[class_id] = total.get(class_id, 0.0) + p.sum() + t.sum()
        dice = {
            f"dice_{self.validation.names[k]}": round(float(overlap[k] / total[k]), 4)
            for k in total
            if total[k] > 0
        }
        dice["dice_mean"] = round(float(np.mean(list(dice.values()))), 4) if dice else 0.0
        return dice

    def model_config(self) -> ModelConfig:
        config = self.config
        provenance = dict(config.provenance)
        provenance["training_data"] = (
            f"{self.summary['training_cases']} case(s) of {os.path.basename(self.datalist)}; unlabelled "
            f"cases got synthetic tumors ({self.summary['engine']} engine) in "
            f"{self.summary['synthetic_ratio']:.0%} of their crops"
        )
        if self.data.checks_quality:
            spec = self.data.tumor_spec("liver", SIZES[0])
            provenance["training_data"] += (
                f", kept when the segmenter {spec.qc} found at least {spec.qc_threshold:g} of a "
                f"tumor's voxels (up to {spec.qc_tries} tries)"
            )
        return ModelConfig.from_dict({**config.to_dict(), "provenance": provenance, "weights_sha256": None})
