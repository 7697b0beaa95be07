"""Whole-CT inference: ``segment(ct, model) -> SegmentationResult``, in the CT's own geometry.

Steps: the CT (HU) is clipped to the model's HU window and scaled to [0, 1]; resampled (linear) to
the model's spacing on a grid with the CT's origin and direction, so voxel (0, 0, 0) stays where it
was and the grid covers the CT; MONAI's sliding-window inference (Gaussian weighting) gives class
probabilities, averaged over flips of each axis with ``tta``; each class probability is resampled
(linear) back onto the CT's grid, where the label is the most probable class (with organ labels
given, the most probable of the classes allowed there: :func:`.postprocess.class_regions`). Resampling goes
through physical coordinates (SimpleITK), so no voxel shifts, on any spacing or direction. Then the
post-processing rules of :mod:`.postprocess` and the lesions as records.

The sliding-window step (:func:`window_probabilities`) takes short cuts by default (``fast``): a
window whose every voxel holds the same value in each channel (air clipped to the HU window's low
end) goes through the network once per distinct value, and its output is reused; a network with
MONAI's fused-attention switch (``use_flash_attention``, SwinUNETR's window attention) uses
``scaled_dot_product_attention``, and SwinUNETR's shifted-window attention masks are computed once
per shape instead of in every layer of every window; pointwise convolutions, block upsampling and
the window attention's bias take the short cuts of :mod:`.fast_layers`. These are exact up to
float rounding.
``precision="auto"`` (the default, :func:`resolve_precision`) runs bf16 autocast on CUDA, and on a
CPU with native bf16 for transformer networks (SwinUNETR), with the output layer in fp32; the
other networks (the default UNet) run fp32 on the CPU. See docs/segmentation.md for what bf16
changes.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from ..errors import InputError
from ..labels import ORGAN_GROUPS, LabelMap
from ..lesions import MIN_LESION_ML, is_lesion_label
from ..models import CONFIG_FILE, LoadedModel, load_model
from ..progress import ProgressLike, make_progress
from ..volume import Volume
from .fast_layers import lean_layers
from .networks import host_organ, takes_organ_channel, tumor_labels
from .postprocess import Lesion, class_regions, find_lesions, postprocess

__all__ = [
    "DEFAULT_OVERLAP",
    "PRECISIONS",
    "SegmentationResult",
    "model_grid",
    "model_inputs",
    "resolve_precision",
    "segment",
    "to_ct_grid",
    "window_probabilities",
]

DEFAULT_OVERLAP = 0.25
PRECISIONS = ("auto", "fp32", "bf16")
DEFAULT_PATCH_VOXELS = (96, 96, 96)
TASK = "segmentation"


@dataclass
class SegmentationResult:
    """What :func:`segment` found, on the CT's grid.

    Attributes:
        labels: the label map (the model's label names), the CT's geometry exactly.
        lesions: the lesions (records with the mean tumor probability as the score).
        tumor_probability: the probability of any tumor class per voxel (float32, ``(z, y, x)``).
        settings: how it ran (model folder, device, overlap, tta, windows, seconds).
    """

    labels: LabelMap
    lesions: list[Lesion]
    tumor_probability: np.ndarray
    settings: dict = field(default_factory=dict)


def model_grid(ct: Volume, spacing_mm) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """Size and spacing ``(x, y, z)`` of the model's grid: the CT's origin and direction, voxels of
    ``spacing_mm``, and enough of them that the last voxel centre reaches past the CT's last one."""
    spacing = tuple(float(s) for s in spacing_mm)
    size = tuple(
        math.ceil((n - 1) * s / t - 1e-6) + 1
        for n, s, t in zip(ct.shape[::-1], ct.spacing, spacing, strict=True)
    )
    return size, spacing  # type: ignore[return-value]


def _resample(image: sitk.Image, size, spacing, origin, direction, interpolator) -> sitk.Image:
    return sitk.Resample(
        image, list(size), sitk.Transform(), interpolator, origin, spacing, direction, 0.0, sitk.sitkFloat32
    )


def to_ct_grid(array: np.ndarray, grid: Volume, ct: Volume) -> np.ndarray:
    """An array on ``grid`` (a model-grid volume) resampled (linear) onto ``ct``'s grid, float32."""
    image = grid.like(np.ascontiguousarray(array, dtype=np.float32)).to_sitk()
    back = _resample(
        image, ct.shape[::-1], ct.spacing, ct.origin, tuple(ct.direction.flatten()), sitk.sitkLinear
    )
    return sitk.GetArrayFromImage(back)


def _window(array: np.ndarray, window) -> np.ndarray:
    if window is None:
        return array.astype(np.float32)
    low, high = (float(v) for v in window)
    return ((np.clip(array.astype(np.float32), low, high) - low) / (high - low)).astype(np.float32)


def _organ_masks(organs: LabelMap, label_names: dict[int, str]) -> dict[str | None, np.ndarray]:
    """Host organ -> mask, for the model's hosts that ``organs`` has voxels of (``None``: any).

    A host's mask is its organ labels and the tumor labels of that organ that ``organs`` may
    already hold (``liver`` and ``liver_tumor``): an organ's tumors are part of the organ."""
    masks: dict[str | None, np.ndarray] = {}
    present = organs.present()
    for name in tumor_labels(label_names).values():
        host = host_organ(name)
        if host is None:
            ids = [key for key, value in present.items() if not is_lesion_label(value)]
        else:
            ids = organs.ids_for(host)
            parts = {host, *ORGAN_GROUPS.get(host, ())}
            if ids:
                tumors = [key for key, value in present.items() if is_lesion_label(value)]
                ids += [key for key in tumors if host_organ(present[key]) in parts]
        mask = np.isin(organs.array, ids) if ids else None
        if mask is not None and mask.any():
            masks[host] = mask
    return masks


def _model(model, device) -> LoadedModel:
    if isinstance(model, LoadedModel):
        if model.config.task != TASK:
            raise InputError(
                f"this is a {model.config.task!r} model, not a {TASK!r} model", model.folder / CONFIG_FILE
            )
    else:
        model = load_model(model, device=device, task=TASK)
    if model.config.network_name == "SwinUNETR":
        from monai.utils import optional_import

        if not optional_import("einops")[1]:
            raise InputError(
                "MONAI's SwinUNETR needs the einops package to run: pip install einops",
                model.folder / CONFIG_FILE,
            )
    return model


def _windows(shape_zyx, roi, overlap: float) -> int:
    from monai.data.utils import dense_patch_slices

    roi = [min(r, s) for r, s in zip(roi, shape_zyx, strict=True)]
    interval = [max(int(r * (1 - overlap)), 1) if s > r else r for r, s in zip(roi, shape_zyx, strict=True)]
    return len(dense_patch_slices(shape_zyx, roi, interval))


@contextlib.contextmanager
def fused_attention(network: torch.nn.Module, enabled: bool = True) -> Iterator[None]:
    """Inside: MONAI's ``use_flash_attention`` switched on for every module of ``network`` that has
    it (``torch.nn.functional.scaled_dot_product_attention``, the same weights and, up to float
    rounding, the same result); the switches are put back after."""
    modules = _attention_switches(network) if enabled else []
    before = [m.use_flash_attention for m in modules]
    for module in modules:
        module.use_flash_attention = True
    try:
        yield
    finally:
        for module, value in zip(modules, before, strict=True):
            module.use_flash_attention = value


def _attention_switches(network: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in network.modules() if isinstance(getattr(m, "use_flash_attention", None), bool)]


def _cpu_has_bf16() -> bool:
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(network: torch.nn.Module, device: torch.device, precision: str = "auto") -> str:
    """``fp32`` or ``bf16``: ``precision`` itself, or for ``auto`` bf16 on CUDA; on the CPU bf16
    for a transformer network (one with MONAI's attention switch: SwinUNETR) when the CPU computes
    bf16 natively (oneDNN), else fp32."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16"
    if device.type == "cpu" and _attention_switches(network) and _cpu_has_bf16():
        return "bf16"
    return "fp32"


def _used_precision(network: torch.nn.Module, device: torch.device, precision: str, fast: bool) -> str:
    """What a run computes in: :func:`resolve_precision` with the short cuts; without them (plain
    inference) ``auto`` is bf16 on CUDA only."""
    resolved = resolve_precision(network, device, precision)
    if not fast and precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return resolved


@contextlib.contextmanager
def _precision(network: torch.nn.Module, device: torch.device, precision: str) -> Iterator[None]:
    """bf16 autocast for ``bf16``, with the network's output layer (``out``, as MONAI's SwinUNETR
    names it) in fp32 so that the logits are not rounded to bf16; nothing for ``fp32``."""
    if precision != "bf16":
        yield
        return
    head = getattr(network, "out", None)
    forward = getattr(head, "forward", None) if isinstance(head, torch.nn.Module) else None

    def fp32_forward(*args, **kwargs):
        with torch.autocast(device_type=device.type, enabled=False):
            return forward(*(a.float() if torch.is_tensor(a) else a for a in args), **kwargs)

    if forward is not None:
        head.forward = fp32_forward
    try:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    finally:
        if forward is not None:
            del head.forward  # the class's forward again


@contextlib.contextmanager
def attention_masks_once(enabled: bool = True) -> Iterator[None]:
    """Inside: MONAI SwinUNETR's shifted-window attention masks (``compute_mask``, a function of the
    padded feature-map size, the window and the shift only) are computed once per shape and reused,
    instead of in every layer of every window; the function is put back after."""
    from monai.networks.nets import swin_unetr

    if not enabled:
        yield
        return
    original = swin_unetr.compute_mask
    masks: dict[tuple, torch.Tensor] = {}

    def cached(dims, window_size, shift_size, device):
        key = (tuple(int(v) for v in dims), tuple(int(v) for v in window_size))
        key += (tuple(int(v) for v in shift_size), str(device))
        if key not in masks:
            masks[key] = original(dims, window_size, shift_size, device)
        return masks[key]

    swin_unetr.compute_mask = cached
    try:
        yield
    finally:
        swin_unetr.compute_mask = original


def _constant_key(window: torch.Tensor) -> tuple | None:
    """``(shape, per-channel value)`` when every voxel of each channel of ``window`` (C, ...) holds
    the same value, else ``None``."""
    flat = window.flatten(1)
    low, high = flat.amin(1), flat.amax(1)
    if bool(torch.equal(low, high)):
        return tuple(window.shape), tuple(low.tolist())
    return None


def window_probabilities(
    inputs: torch.Tensor,
    network: torch.nn.Module,
    roi: Sequence[int],
    overlap: float,
    batch_size: int = 1,
    device: torch.device | None = None,
    precision: str = "auto",
    fast: bool = True,
    on_batch: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Softmax class probabilities ``(1, C, z, y, x)`` of ``network`` over ``inputs`` ``(1, C_in, z,
    y, x)``: MONAI ``sliding_window_inference``, Gaussian weighting, ``roi`` windows (z, y, x).

    Args:
        precision: ``auto`` (:func:`resolve_precision`), ``fp32``, or ``bf16`` (bf16 autocast on
            any device, the output layer in fp32: faster, lossy).
        fast: the short cuts: constant windows computed once, fused attention, attention masks
            once, :func:`.fast_layers.lean_layers` (exact up to float rounding). Off: plain MONAI
            inference in fp32 unless ``precision`` says bf16.
        on_batch: called after each forward pass (progress).
    """
    from monai.inferers import sliding_window_inference

    device = device or inputs.device
    precision = _used_precision(network, device, precision, fast)
    reused: dict[tuple, torch.Tensor] = {}

    def forward(batch: torch.Tensor) -> torch.Tensor:
        with _precision(network, device, precision):
            logits = network(batch)
        return torch.softmax(logits.float(), dim=1)

    def reusing(batch: torch.Tensor) -> torch.Tensor:
        keys = [_constant_key(window) for window in batch]
        varying = [i for i, key in enumerate(keys) if key is None]
        if len(varying) == len(keys):
            return forward(batch)
        parts = dict(zip(varying, forward(batch[varying]), strict=True)) if varying else {}
        for i, key in enumerate(keys):
            if key is not None:
                if key not in reused:
                    reused[key] = forward(batch[i : i + 1])[0]
                parts[i] = reused[key]
        return torch.stack([parts[i] for i in range(len(keys))])

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        output = reusing(batch) if fast else forward(batch)
        if on_batch is not None:
            on_batch()
        return output

    with (
        torch.inference_mode(),
        fused_attention(network, fast),
        attention_masks_once(fast),
        lean_layers(network, fast),
    ):
        return sliding_window_inference(
            inputs, list(roi), batch_size, predictor, overlap=overlap, mode="gaussian", sw_device=device
        )


def model_inputs(ct: Volume, config, organ_masks=None) -> tuple[np.ndarray, Volume | None]:
    """The network's input channels ``(C, z, y, x)`` for ``ct``: HU windowed to [0, 1], the organ
    channel when the model takes one, on the model's grid; and that grid (``None``: the CT's)."""
    pre = config.preprocessing
    channels = [_window(ct.array, pre.hu_window)]
    if takes_organ_channel(config):
        channels.append(np.any(np.stack(list(organ_masks.values())), axis=0).astype(np.float32))
    if pre.spacing_mm is None or np.allclose(pre.spacing_mm, ct.spacing, rtol=0, atol=1e-6):
        return np.stack(channels), None
    size, spacing = model_grid(ct, pre.spacing_mm)
    direction = tuple(ct.direction.flatten())
    interpolators = [sitk.sitkLinear, sitk.sitkNearestNeighbor]
    channels = [
        sitk.GetArrayFromImage(
            _resample(ct.like(c).to_sitk(), size, spacing, ct.origin, direction, interpolators[i])
        )
        for i, c in enumerate(channels)
    ]
    return np.stack(channels), Volume(np.zeros(size[::-1], np.uint8), spacing, ct.origin, ct.direction)


def segment(
    ct: Volume,
    model: LoadedModel | str | os.PathLike[str],
    organs: LabelMap | None = None,
    device: str | torch.device = "auto",
    overlap: float = DEFAULT_OVERLAP,
    tta: bool = False,
    min_tumor_ml: float = MIN_LESION_ML,
    batch_size: int = 1,
    precision: str = "auto",
    fast: bool = True,
    progress: ProgressLike = None,
) -> SegmentationResult:
    """Segment a whole CT with a segmentation model folder (or a loaded model).

    Args:
        ct: CT in HU.
        model: a model folder of task ``segmentation``, or a :class:`LoadedModel`.
        organs: organ labels on ``ct``'s grid (:func:`freetumor_core.labels.align_to`): inside a
            given organ each voxel is that organ or its tumor, outside it neither; a model that
            takes an organ channel gets them as input.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        overlap: sliding-window overlap, 0 to < 1.
        tta: average the probabilities over flips of each axis (4 passes).
        min_tumor_ml: tumor pieces below this volume are removed.
        batch_size: windows per forward pass.
        precision: ``auto`` (:func:`resolve_precision`: bf16 on CUDA, and on a bf16 CPU for
            SwinUNETR; fp32 otherwise), ``fp32``, or ``bf16`` (faster, lossy; see
            docs/segmentation.md for the agreement measured).
        fast: the short cuts of :func:`window_probabilities` (off: plain MONAI inference).
        progress: reporter; reports the task ``segment`` (windows done of all).

    Raises:
        InputError: a folder of another task or a broken one, organ labels that hold none of the
            model's organs, organ labels missing for a model that needs them, a bad overlap or
            precision.
    """
    import time

    from ..device import resolve_device

    if not 0.0 <= overlap < 1.0:
        raise InputError(f"overlap must be from 0 to below 1, got {overlap}")
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    started = time.perf_counter()
    torch_device = resolve_device(device)
    loaded = _model(model, torch_device)
    config, network = loaded.config, loaded.network.to(torch_device).eval()
    names = dict(config.label_names) or {0: "background"}
    organ_masks = None
    if organs is not None:
        source = organs.volume.metadata.get("freetumor:source")
        if not organs.volume.same_grid(ct):
            raise InputError("organ labels are not on the CT's grid (align them first)", source)
        organ_masks = _organ_masks(organs, names)
        if tumor_labels(names) and not organ_masks:
            wanted = sorted({host_organ(n) or "any organ" for n in tumor_labels(names).values()})
            present = ", ".join(sorted(set(organs.present().values()))) or "none"
            raise InputError(
                f"the organ labels hold none of the model's organs ({', '.join(wanted) or 'none'}; "
                f"labels present: {present})",
                source,
            )
    if takes_organ_channel(config) and organs is None:
        raise InputError(
            "this model takes organ labels as a second input channel: give organ labels (--organs)",
            loaded.folder / CONFIG_FILE,
        )
    pre = config.preprocessing
    channels, grid = model_inputs(ct, config, organ_masks)
    inputs = torch.from_numpy(channels)[None].to(torch_device)
    roi = list(pre.patch_size_voxels or DEFAULT_PATCH_VOXELS)[::-1]
    flips = [(), (2,), (3,), (4,)] if tta else [()]
    reporter = make_progress(progress)
    per_pass = math.ceil(_windows(inputs.shape[2:], roi, overlap) / batch_size)
    total, done = per_pass * len(flips), 0

    def on_batch() -> None:
        nonlocal done
        done += 1
        reporter.update("segment", min(done, total), total)

    reporter.update("segment", 0, total)
    probabilities = None
    for axes in flips:
        flipped = torch.flip(inputs, axes) if axes else inputs
        output = window_probabilities(
            flipped, network, roi, overlap, batch_size, torch_device, precision, fast, on_batch
        )
        output = torch.flip(output, axes) if axes else output
        probabilities = output if probabilities is None else probabilities + output
    probabilities = (probabilities[0] / len(flips)).float().cpu().numpy()
    del inputs
    tumor_ids = set(tumor_labels(names))
    best = np.full(ct.shape, -1.0, np.float32)
    labels = np.zeros(ct.shape, np.uint8 if max(names) < 256 else np.int32)
    tumor_probability = np.zeros(ct.shape, np.float32)
    regions = class_regions(names, organ_masks)
    for channel in range(probabilities.shape[0]):
        values = probabilities[channel] if grid is None else to_ct_grid(probabilities[channel], grid, ct)
        better = values > best
        if channel in regions:
            better &= regions[channel]
        best[better] = values[better]
        labels[better] = channel
        if channel in tumor_ids:
            tumor_probability += values
    del probabilities, best
    spacing_zyx = ct.spacing_zyx
    cleaned = postprocess(labels, names, spacing_zyx, organ_masks, min_tumor_ml)
    label_map = LabelMap(ct.like(cleaned), {key: value for key, value in names.items() if key != 0})
    lesions = find_lesions(ct, label_map, tumor_probability)
    settings = {
        "model": str(Path(loaded.folder)),
        "device": str(torch_device),
        "overlap": overlap,
        "tta": tta,
        "precision": precision,
        "computed_in": _used_precision(network, torch_device, precision, fast),
        "fast": fast,
        "windows": total,
        "model_spacing_mm": pre.spacing_mm,
        "seconds": round(time.perf_counter() - started, 3),
    }
    return SegmentationResult(label_map, lesions, np.clip(tumor_probability, 0.0, 1.0), settings)
