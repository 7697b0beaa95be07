"""``SynthesizerTask``: the generator and the discriminator on the shared trainer, guided by a frozen
segmenter (``freetumor train synthesizer``).

Data: a MONAI/MSD datalist. An entry whose labels hold lesion voxels (names such as ``liver_tumor``,
or the entry's ``tumor_label`` id) is a labelled case: each tumor (a connected piece of at least
:data:`MIN_TUMOR_VOXELS`) is a real example, its organ the entry's ``organ``, the label's host
(``liver_tumor`` -> liver) or ``other``. Every case with voxels of an organ in :data:`ORGANS`
hosts synthetic geometry: the handcrafted engine's shapes (``make_shape``) of 5-60 mm placed
where the organ is deep enough, away from real tumors. An entry may carry ``label_names`` (a name
map or a JSON file) for label maps without names.

Preprocessing (configurable): RAS order, resampling to ``spacing_mm`` (1.5 mm; CT linear, labels
nearest), HU window [-175, 250] for the networks' input; then each example's own crop on the
generator's grid (:mod:`.generator`). An item pairs one real tumor crop (random flips) with one
healthy crop and its geometry; it depends only on the seed, the epoch and its index.

Losses per batch (means over tumor voxels, as FreeTumor): the discriminator (voxel-wise classes
background 0 / real tumor 1 / synthetic tumor 2, labels built from the masks):
``L_D = 0.5 * [(1 - p(synthetic | synthetic)) + (1 - p(real | real))] + 0.5 * CE``; the generator:
``L_G = adversarial_weight * (1 - p_D(real | synthetic))
+ segmentation_weight * (1 - p_Seg(tumor | synthetic))``.
Only the two networks train; the segmenter is frozen.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..labels import LabelMap, align_to, read_labels
from ..lesions import is_lesion_label
from ..models import LoadedModel, ModelConfig, Preprocessing, build_network, load_model, resolve_model
from ..training.task import TrainTask
from ..volume import ras_view, read_ct
from .generator import (
    ORGANS,
    SynthesisSettings,
    crop_region,
    difference_map,
    discriminator_architecture,
    generator_architecture,
    noise_field,
    organ_index,
    to_grid,
    window,
)

__all__ = ["MIN_TUMOR_VOXELS", "SynthesisCrops", "SynthesizerTask"]

MIN_TUMOR_VOXELS = 20
DIAMETER_RANGE_MM = (5.0, 60.0)
VALIDATION_EPOCH = 2**31 - 1
VALIDATION_ITEMS = 4
REAL, SYNTHETIC = 1, 2


@dataclass
class _Case:
    hu: np.ndarray  # (z, y, x) float32 HU, RAS order, training spacing
    tumor: np.ndarray  # bool: real tumor voxels
    organs: dict[int, np.ndarray]  # organ channel -> bool mask
    depth_mm: dict[int, np.ndarray]  # organ channel -> distance (mm) to the organ's surface
    voxels: dict[int, np.ndarray]  # organ channel -> (N, 3) its voxels away from real tumors
    spacing_zyx: np.ndarray
    source: str


@dataclass
class _Real:
    case: int
    start: np.ndarray
    stop: np.ndarray
    organ: int
    voxels: int


def _names(entry) -> dict[int, str] | str | None:
    names = entry.extra.get("label_names")
    if isinstance(names, dict):
        return {int(key): str(value) for key, value in names.items()}
    if isinstance(names, str):
        path = Path(names)
        return str(path if path.is_absolute() else Path(entry.source.split("#")[0]).parent / path)
    return None


class SynthesisCrops(torch.utils.data.Dataset):
    """Items ``{"real_hu", "real_mask", "fake_hu", "fake_mask", "fake_organ_mask", "noise"}``
    (``(1, g, g, g)`` float32) and ``real_organ``, ``fake_organ`` (organ channel indices).

    Args:
        entries: datalist entries.
        settings: the crop grid and window.
        count: items per epoch.
        seed: seeds the items with the epoch and the index.
    """

    def __init__(self, entries: list, settings: SynthesisSettings, count: int = 64, seed: int = 0) -> None:
        self.entries, self.settings, self.count, self.seed, self.epoch = (
            list(entries),
            settings,
            count,
            seed,
            0,
        )
        self._cases: list[_Case] | None = None
        self._reals: list[_Real] = []
        self._hosts: list[tuple[int, int]] = []

    def _load(self, entry) -> tuple[_Case, list[_Real]]:
        from scipy import ndimage

        from ..synthesis.bench import resample_isotropic

        ct = read_ct(entry.image)
        labels = align_to(read_labels(entry.label, _names(entry)), ct)
        spacing = self.settings.min_spacing_mm
        ct, labels = resample_isotropic(ct.like(ct.array.astype(np.float32)), labels, spacing)
        ras, reorientation = ras_view(ct)
        array = np.ascontiguousarray(reorientation.apply(labels.array))
        if entry.tumor_label is not None:
            tumor_ids = {int(entry.tumor_label): entry.organ or "other"}
        else:
            tumor_ids = {
                key: name for key, name in labels.names.items() if key != 0 and is_lesion_label(name)
            }
        tumor = np.isin(array, list(tumor_ids)) if tumor_ids else np.zeros(array.shape, bool)
        organs, depth, voxels = {}, {}, {}
        names = LabelMap(ras.like(array), dict(labels.names))
        for channel, organ in enumerate(ORGANS[:-1]):
            ids = [i for i in names.ids_for(organ) if i not in tumor_ids]
            if not ids:
                continue
            mask = np.isin(array, ids)
            if mask.sum() < 100:
                continue
            organs[channel] = mask
            healthy = mask & ~tumor
            depth[channel] = ndimage.distance_transform_edt(healthy, sampling=ras.spacing_zyx).astype(
                np.float32
            )
            voxels[channel] = np.argwhere(healthy)
        hu = ras.array.astype(np.float32)
        case = _Case(hu, tumor, organs, depth, voxels, ras.spacing_zyx, str(entry.image))
        reals = []
        for tumor_id, name in tumor_ids.items():
            pieces, _ = ndimage.label(array == tumor_id)
            if entry.organ:
                organ = organ_index(entry.organ)
            else:
                from ..segmentation.networks import host_organ

                organ = organ_index(host_organ(name))
            for index, box in enumerate(ndimage.find_objects(pieces), 1):
                voxels = int(np.count_nonzero(pieces[box] == index))
                if box is not None and voxels >= MIN_TUMOR_VOXELS:
                    start = np.array([s.start for s in box])
                    stop = np.array([s.stop for s in box])
                    reals.append(_Real(-1, start, stop, organ, voxels))
        return case, reals

    def cases(self) -> list[_Case]:
        if self._cases is None:
            cases = []
            for number, entry in enumerate(self.entries):
                case, reals = self._load(entry)
                cases.append(case)
                for real in reals:
                    real.case = number
                    self._reals.append(real)
                self._hosts += [(number, channel) for channel in case.organs]
            if not self._reals:
                raise InputError("the datalist has no labelled case: the discriminator needs real tumors")
            if not self._hosts:
                raise InputError(
                    f"no case has voxels of an organ the generator knows ({', '.join(ORGANS[:-1])})"
                )
            self._cases = cases
        return self._cases

    def summary(self) -> dict[str, Any]:
        cases = self.cases()
        labelled = sorted({real.case for real in self._reals})
        return {
            "cases": len(cases),
            "labelled_cases": [Path(cases[i].source).name for i in labelled],
            "real_tumors": len(self._reals),
            "real_tumor_organs": sorted({ORGANS[real.organ] for real in self._reals}),
            "host_cases": sorted({Path(cases[i].source).name for i, _ in self._hosts}),
            "host_organs": sorted({ORGANS[c] for _, c in self._hosts}),
        }

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.count

    def _crop(self, case: _Case, start, stop, tumor: np.ndarray | None, rng, flips: bool) -> dict:
        region = crop_region(start, stop, case.hu.shape, case.spacing_zyx, self.settings)
        grid = self.settings.grid
        hu = case.hu[region]
        if tumor is None:
            tumor = case.tumor
        mask = tumor[region].astype(np.float32)
        out = {"hu": to_grid(hu, grid)[0], "mask": (to_grid(mask, grid)[0] > 0.5).float()}
        if flips:
            axes = [1 + a for a in range(3) if rng.random() < 0.5]
            if axes:
                out = {key: torch.flip(value, axes) for key, value in out.items()}
        return out

    def sample(self, index: int, epoch: int) -> dict[str, torch.Tensor]:
        from ..synthesis.shapes import make_shape

        cases = self.cases()
        rng = np.random.default_rng([self.seed, epoch, index])
        real = self._reals[index % len(self._reals)]
        real_crop = self._crop(cases[real.case], real.start, real.stop, None, rng, flips=True)
        case_number, channel = self._hosts[int(rng.integers(len(self._hosts)))]
        case = cases[case_number]
        diameter = float(rng.uniform(*DIAMETER_RANGE_MM))
        shape = make_shape(diameter, case.spacing_zyx, rng, 0.9, 0.0, 0.0)
        centre = _deep_voxel(case, channel, diameter / 2.0, rng)
        start = centre - shape.centre_index
        stop = start + np.asarray(shape.box_shape)
        geometry = np.zeros(case.hu.shape, bool)
        low = np.maximum(start, 0)
        high = np.minimum(stop, case.hu.shape)
        inner = tuple(slice(int(a - s), int(b - s)) for a, b, s in zip(low, high, start, strict=True))
        place = tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))
        geometry[place] = shape.mask[inner]
        organ = case.organs[channel]
        geometry &= organ & ~case.tumor
        if not geometry.any():
            geometry[tuple(centre)] = True
        fake_crop = self._crop(case, low, high, geometry, rng, flips=False)
        region = crop_region(low, high, case.hu.shape, case.spacing_zyx, self.settings)
        organ_crop = to_grid(organ[region].astype(np.float32), self.settings.grid)[0] > 0.5
        grid = self.settings.grid
        return {
            "real_hu": real_crop["hu"],
            "real_mask": real_crop["mask"],
            "real_organ": torch.tensor(real.organ),
            "fake_hu": fake_crop["hu"],
            "fake_mask": fake_crop["mask"],
            "fake_organ_mask": (organ_crop | (fake_crop["mask"] > 0)).float(),
            "fake_organ": torch.tensor(channel),
            "noise": noise_field(1, grid, rng, self.settings.noise_sigma)[0],
        }

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.sample(index, self.epoch)


def _deep_voxel(case: _Case, channel: int, depth_mm: float, rng: np.random.Generator) -> np.ndarray:
    """A random voxel of the organ at least ``depth_mm`` below its surface (else the deepest seen)."""
    voxels = case.voxels[channel]
    depth = case.depth_mm[channel]
    best, best_depth = voxels[0], -1.0
    for _ in range(200):
        voxel = voxels[int(rng.integers(len(voxels)))]
        here = float(depth[tuple(voxel)])
        if here >= depth_mm:
            return voxel
        if here > best_depth:
            best, best_depth = voxel, here
    return best


def _mean_over(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


class SynthesizerTask(TrainTask):
    """The adversarial synthesizer (see the module docstring).

    Args:
        datalist: the datalist file (its ``training`` section); ``None``: no data (for timing the
            step on batches made elsewhere).
        segmenter: a frozen segmentation model folder (or shipped name) for the segmentation-guided
            loss; ``None``: no such term (the card says so).
        settings: crop grid, spacing, HU window and difference scale.
        samples: items per epoch.
        adversarial_weight, segmentation_weight: the generator's loss weights (FreeTumor: 0.1, 1).
        generator_channels, discriminator_channels: the two UNets' channels per level.
        seed: seeds the items.
    """

    export = "generator"

    def __init__(
        self,
        datalist: str | os.PathLike[str] | None,
        segmenter: str | os.PathLike[str] | LoadedModel | None = None,
        settings: SynthesisSettings | None = None,
        samples: int = 64,
        adversarial_weight: float = 0.1,
        segmentation_weight: float = 1.0,
        generator_channels: tuple[int, ...] = (16, 32, 64, 128),
        discriminator_channels: tuple[int, ...] = (16, 32, 64),
        seed: int = 0,
    ) -> None:
        from ..turing.datalist import read_datalist

        self.datalist = str(datalist)
        self.settings = settings or SynthesisSettings()
        entries = read_datalist(datalist, "training") if datalist is not None else []
        self.data = SynthesisCrops(entries, self.settings, samples, seed)
        self.generator_architecture = generator_architecture(generator_channels)
        self.discriminator_architecture = discriminator_architecture(discriminator_channels)
        self.adversarial_weight, self.segmentation_weight = adversarial_weight, segmentation_weight
        if isinstance(segmenter, LoadedModel) or segmenter is None:
            self.segmenter = segmenter
        else:
            self.segmenter = load_model(resolve_model(segmenter), device="cpu", task="segmentation")
        if self.segmenter is not None:
            for parameter in self.segmenter.network.parameters():
                parameter.requires_grad_(False)

    # -- networks ---------------------------------------------------------------------------------
    def build_modules(self) -> dict[str, nn.Module]:
        return {
            "generator": build_network(self.generator_architecture),
            "discriminator": build_network(self.discriminator_architecture),
        }

    def stages(self) -> dict[str, list[str]]:
        return {"discriminator": ["discriminator"], "generator": ["generator"]}

    def build_optimizer(self, stage, parameters, config) -> torch.optim.Optimizer:
        # FreeTumor's Adam betas (0, 0.999); the rate and decay come from the trainer settings.
        return torch.optim.Adam(
            parameters, lr=config.lr, betas=(0.0, 0.999), weight_decay=config.weight_decay
        )

    def dataset(self) -> torch.utils.data.Dataset:
        self.data.cases()  # a bad datalist fails before training starts
        return self.data

    # -- losses -----------------------------------------------------------------------------------
    def synthetic(self, generator: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The healthy crops with the generator's tumors (HU)."""
        change = difference_map(
            generator,
            batch["fake_hu"],
            batch["fake_mask"],
            batch["fake_organ"],
            batch["noise"],
            self.settings,
        )
        return batch["fake_hu"] + change * batch["fake_organ_mask"]

    def tumor_probability(self, image_hu: torch.Tensor, organ_mask: torch.Tensor) -> torch.Tensor:
        """The frozen segmenter's probability of any tumor class per voxel, ``(B, 1, g, g, g)``."""
        from ..segmentation.networks import takes_organ_channel, tumor_labels

        loaded = self.segmenter
        network = loaded.network.to(image_hu.device).eval()
        pre = loaded.config.preprocessing
        inputs = window(image_hu, tuple(pre.hu_window)) if pre.hu_window else image_hu
        if takes_organ_channel(loaded.config):
            inputs = torch.cat([inputs, organ_mask], dim=1)
        probabilities = torch.softmax(network(inputs).float(), dim=1)
        classes = list(tumor_labels(loaded.config.label_names))
        return probabilities[:, classes].sum(dim=1, keepdim=True)

    def stage_step(self, stage: str, modules: dict[str, nn.Module], batch: Any) -> dict[str, torch.Tensor]:
        generator, discriminator = modules["generator"], modules["discriminator"]
        hu_window = self.settings.hu_window
        fake_mask, real_mask = batch["fake_mask"], batch["real_mask"]
        if stage == "discriminator":
            with torch.no_grad():
                fake = self.synthetic(generator, batch)
            real_logits = discriminator(window(batch["real_hu"], hu_window)).float()
            fake_logits = discriminator(window(fake, hu_window)).float()
            # Voxel-wise class labels from the masks: 0 background, 1 real tumor, 2 synthetic tumor.
            real_labels = (real_mask[:, 0] > 0).long() * REAL
            fake_labels = (fake_mask[:, 0] > 0).long() * SYNTHETIC
            real_p = torch.softmax(real_logits, dim=1)[:, REAL : REAL + 1]
            fake_p = torch.softmax(fake_logits, dim=1)[:, SYNTHETIC : SYNTHETIC + 1]
            miss_real = _mean_over(1.0 - real_p, real_mask)
            miss_fake = _mean_over(1.0 - fake_p, fake_mask)
            ce = F.cross_entropy(torch.cat([real_logits, fake_logits]), torch.cat([real_labels, fake_labels]))
            return {
                "loss": 0.5 * (miss_real + miss_fake) + 0.5 * ce,
                "real": miss_real,
                "synthetic": miss_fake,
            }
        fake = self.synthetic(generator, batch)
        fooled = torch.softmax(discriminator(window(fake, hu_window)).float(), dim=1)[:, REAL : REAL + 1]
        adversarial = _mean_over(1.0 - fooled, fake_mask)
        losses = {"adversarial": adversarial}
        loss = self.adversarial_weight * adversarial
        if self.segmenter is not None:
            found = self.tumor_probability(fake, batch["fake_organ_mask"])
            segmentation = _mean_over(1.0 - found, fake_mask)
            losses["segmentation"] = segmentation
            loss = loss + self.segmentation_weight * segmentation
        losses["loss"] = loss
        return losses

    def validate(self, model: nn.Module) -> dict[str, Any]:
        """On fixed items: the mean |HU change| inside the synthetic tumors and, with a segmenter,
        the mean fraction of their voxels it labels as tumor (the QC score)."""
        device = next(model.parameters()).device
        changes, found = [], []
        for index in range(VALIDATION_ITEMS):
            item = self.data.sample(index, VALIDATION_EPOCH)
            batch = {key: value[None].to(device) for key, value in item.items()}
            fake = self.synthetic(model, batch)
            mask = batch["fake_mask"]
            changes.append(float(_mean_over((fake - batch["fake_hu"]).abs(), mask)))
            if self.segmenter is not None:
                hit = (self.tumor_probability(fake, batch["fake_organ_mask"]) > 0.5).float()
                found.append(float(_mean_over(hit, mask)))
        metrics = {"mean_abs_change_hu": round(float(np.mean(changes)), 3)}
        if found:
            metrics["qc_score_mean"] = round(float(np.mean(found)), 4)
        return metrics

    def model_config(self) -> ModelConfig:
        summary = self.data.summary()
        segmenter = str(self.segmenter.folder) if self.segmenter is not None else None
        training_data = (
            f"{summary['cases']} case(s) of {os.path.basename(self.datalist)}: "
            f"{summary['real_tumors']} real tumor(s) ({', '.join(summary['real_tumor_organs'])}) "
            f"from {', '.join(summary['labelled_cases'])}; synthetic geometry in "
            f"{', '.join(summary['host_organs'])} of {', '.join(summary['host_cases'])}; "
            + (
                f"segmentation-guided by the frozen segmenter {segmenter}"
                if segmenter
                else "no segmentation-guided term"
            )
        )
        return ModelConfig(
            task="synthesis",
            architecture=self.generator_architecture,
            preprocessing=Preprocessing(
                spacing_mm=[self.settings.min_spacing_mm] * 3,
                hu_window=list(self.settings.hu_window),
                patch_size_voxels=[self.settings.grid] * 3,
            ),
            label_names=dict(enumerate(ORGANS)),
            provenance={
                "training_data": training_data,
                "synthesis": self.settings.to_dict(),
                "data_summary": summary,
                "segmenter": segmenter,
                "discriminator": self.discriminator_architecture,
                "loss_weights": {
                    "adversarial": self.adversarial_weight,
                    "segmentation": self.segmentation_weight,
                },
            },
            description=(
                "Adversarial tumor generator (FreeTumor's method): a difference map over the CT of the "
                "tumor's own crop, conditioned on the CT, the tumor mask, noise and the organ (label_names "
                "are the organ channels). Use: TumorSpec(engine='adversarial', model=this folder)."
            ),
        )
