"""The adversarial engine: the handcrafted engine's placement and shapes, the generator's look.

``TumorSpec(engine="adversarial", model=FOLDER)`` (or the shipped ``synthesizer_demo`` when no
model is named). Placement and the call's flow are :class:`~freetumor_core.synthesis.flow.PlacingEngine`'s;
this engine paints a placed tumor by running the generator on the tumor's own crop
(:mod:`.generator`) and adding its difference map to the organ's voxels there. Callers use
:func:`freetumor_core.synthesis.synthesize`, never this module.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..models import CONFIG_FILE, LoadedModel, load_model, resolve_model
from ..records import TumorRecord
from ..synthesis.flow import Canvas, PlacingEngine
from ..synthesis.placement import ORGAN, VESSEL
from ..synthesis.shapes import TumorShape, mean_in
from ..synthesis.spec import TumorSpec, model_for
from .generator import (
    FIXED_CHANNELS,
    ORGANS,
    SynthesisSettings,
    crop_region,
    difference_map,
    from_grid,
    noise_field,
    organ_index,
    to_grid,
)

ENGINE = "adversarial"
TASK = "synthesis"
RING_MM = 3.0
EDGE_REACH_MM = 3.0


@dataclass
class Synthesizer:
    """A loaded generator and how its output becomes HU."""

    loaded: LoadedModel
    settings: SynthesisSettings
    device: torch.device

    @property
    def network(self) -> torch.nn.Module:
        return self.loaded.network


def load_synthesizer(model: str | Path, device: str | torch.device = "auto") -> Synthesizer:
    """The generator of a synthesis model folder (or a shipped model's name).

    Raises:
        InputError: naming the file: a missing or corrupt folder, a model of another task, or a
            synthesis model that is not this engine's generator.
    """
    from ..device import resolve_device

    folder = resolve_model(model)
    torch_device = resolve_device(device)
    loaded = load_model(folder, device=torch_device, task=TASK)
    config = loaded.config
    settings = config.provenance.get("synthesis")
    in_channels = config.architecture.get("args", {}).get("in_channels")
    if not isinstance(settings, dict) or in_channels != FIXED_CHANNELS + len(ORGANS):
        raise InputError(
            f"not an adversarial generator: needs provenance.synthesis and {FIXED_CHANNELS + len(ORGANS)} "
            f"input channels (CT, mask, noise, organs {', '.join(ORGANS)}), got {in_channels}",
            folder / CONFIG_FILE,
        )
    try:
        parsed = SynthesisSettings.from_dict(settings)
    except (TypeError, ValueError) as error:
        raise InputError(f"bad provenance.synthesis: {error}", folder / CONFIG_FILE) from None
    return Synthesizer(loaded, parsed, torch_device)


@contextmanager
def _one_thread(device: torch.device):
    """One intra-op thread on the CPU while the generator runs on a tumor's 32^3 crop.

    The network is too small to share between threads: measured here, two threads spent about ten
    times the CPU time of one (waiting on each other) and took 3-10 times as long on a busy machine.
    The thread count is restored afterwards.
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass
class _Painted:
    shape: TumorShape
    centre: np.ndarray
    requested_mm: float
    region: tuple[slice, ...]
    organ_channel: str


class AdversarialEngine(PlacingEngine):
    """Tumors whose look a trained generator makes (see the module docstring).

    Args:
        device: where the generator runs (``auto``, ``cpu``, ``cuda``).
    """

    name = ENGINE

    def __init__(self, device: str = "auto") -> None:
        self.device = device
        self._models: dict[str, Synthesizer] = {}

    def synthesizer(self, spec: TumorSpec) -> Synthesizer:
        """The spec's generator, loaded once per folder."""
        key = str(model_for(spec))
        if key not in self._models:
            self._models[key] = load_synthesizer(key, self.device)
        return self._models[key]

    def reach_mm(self, spec: TumorSpec) -> float:
        return EDGE_REACH_MM + RING_MM

    def synthesize(self, ct, organs, spec, seed=None, progress=None, in_place=False):
        self.synthesizer(spec)  # a broken model folder fails before any placement work
        return super().synthesize(ct, organs, spec, seed=seed, progress=progress, in_place=in_place)

    def paint(self, canvas: Canvas, shape: TumorShape, centre: np.ndarray, requested_mm: float) -> _Painted:
        model = self.synthesizer(canvas.spec)
        settings = model.settings
        start = centre - shape.centre_index
        stop = start + np.asarray(shape.box_shape)
        region = crop_region(start, stop, canvas.ct_out.shape, canvas.ct.spacing_zyx, settings)
        values = canvas.ct_out[region].astype(np.float32)
        classes = canvas.table[canvas.labels_out[region]]
        tumor = np.zeros(values.shape, bool)
        inner = tuple(
            slice(int(a - r.start), int(b - r.start)) for a, b, r in zip(start, stop, region, strict=True)
        )
        tumor[inner] = shape.mask
        # Small vessel branches inside the tumor are encased: they keep their label and HU.
        tissue = tumor & (classes != VESSEL)
        organ = classes == ORGAN
        grid = settings.grid
        index = torch.tensor([organ_index(canvas.organ)])
        with torch.inference_mode(), _one_thread(model.device):
            noise = noise_field(1, grid, canvas.rng, settings.noise_sigma)
            change = difference_map(
                model.network,
                to_grid(values, grid).to(model.device),
                to_grid(tissue.astype(np.float32), grid).to(model.device),
                index,
                noise.to(model.device),
                settings,
            )
            added = from_grid(change, values.shape)
        added *= organ | tissue
        values += added
        dtype = canvas.ct_out.dtype
        if dtype.kind in "iu":
            limits = np.iinfo(dtype)
            values = np.clip(np.rint(values), limits.min, limits.max)
        canvas.ct_out[region] = values.astype(dtype)
        np.copyto(canvas.labels_out[region], canvas.tumor_id, where=tissue, casting="unsafe")
        return _Painted(shape, centre, requested_mm, region, ORGANS[int(index)])

    def record(self, canvas: Canvas, painted: _Painted) -> TumorRecord:
        shape, centre = painted.shape, painted.centre
        ct = canvas.ct
        start = centre - shape.centre_index
        box = tuple(slice(int(a), int(a) + n) for a, n in zip(start, shape.box_shape, strict=True))
        final = canvas.ct_out[box].astype(np.float32)
        labels = canvas.labels_out[box]
        mask = shape.mask & (labels == canvas.tumor_id)
        ring = shape.shell(1.0, RING_MM) & (canvas.table[labels] == ORGAN)
        volume_ml = int(np.count_nonzero(mask)) * ct.voxel_volume_ml
        centre_index = np.argwhere(mask).mean(axis=0) + start
        mean_hu = mean_in(final, mask)
        ring_hu = mean_in(final, ring) if ring.any() else float("nan")
        return TumorRecord(
            organ=canvas.organ,
            centre_ras_mm=tuple(float(c) for c in ct.index_to_ras(centre_index)),
            diameter_mm=float(np.cbrt(6.0 * volume_ml * 1000.0 / math.pi)),
            volume_ml=float(volume_ml),
            mean_hu=mean_hu,
            contrast_hu=mean_hu - ring_hu,
            engine=ENGINE,
            label_id=int(canvas.tumor_id),
            extra={
                "requested_diameter_mm": round(painted.requested_mm, 3),
                "shrunk": bool(2.0 * shape.radius_mm < painted.requested_mm - 1e-9),
                "model": str(self.synthesizer(canvas.spec).loaded.folder),
                "organ_channel": painted.organ_channel,
                "crop_voxels": [s.stop - s.start for s in painted.region],
            },
        )
