"""``freetumor bench segmentation``: the default network on a whole CT; SwinUNETR plain against fast.

Results:

- ``whole_ct/default`` (s): :func:`~.inference.segment` with the ``default`` model on the whole CT
  (resampled by ``segment`` to the model's 1.5 mm), post-processing and lesion records included,
  in a fresh process (``default_repeat`` runs there); ``peak_rss/default`` (MB): that process's
  peak resident memory, imports and reading the CT included.
- ``whole_ct/swinunetr_v2_fs48/plain`` and ``.../fast`` (s): the same fixed sub-volume of that CT
  (model grid, HU windowed, ``swin_subvolume`` voxels z,y,x at its centre), the same weights.
  Plain: MONAI ``sliding_window_inference``, overlap 0.5, Gaussian, batch 1, fp32, the softmax of
  each window blended (as ``segment`` blends). Fast: ``segment``'s own sliding-window step,
  :func:`~.inference.window_probabilities` (exact short cuts, ``fast_batch_size`` windows a pass).
  ``.../fast_bf16``: the same with bf16 autocast (lossy, an option of ``segment``).
- ``agreement`` (ratio of voxels with the same most probable class, fast against plain), and
  ``softmax_max_abs_diff`` / ``softmax_mean_abs_diff``; the same with ``/bf16`` for bf16.
- ``constant_windows/whole_ct`` (ratio): of the whole CT's windows at overlap 0.5, those that are one
  constant value (air), which the fast path computes once.

Weights: ``model`` (a folder or a shipped model's name) for ``default``; else the shipped
``segmenter_demo`` when there is one, else the preset with seeded random weights. SwinUNETR always
has seeded random weights (``torch.manual_seed(0)``). The result file's ``notes`` say which.

Options (``--option KEY=VALUE``): ``ct`` (default: the phantom), ``model``, ``device`` (``cpu``),
``default_repeat`` (2), ``swin_feature_size`` (48), ``swin_roi`` (96), ``swin_subvolume`` (96,96,144),
``fast_batch_size`` (2), ``swin_repeat`` (1), ``bf16`` (1: also time bf16).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..bench import Bench

DEMO_MODEL = "segmenter_demo"
SWIN_PRESET = "swinunetr_v2_fs48"
PLAIN_OVERLAP = 0.5
SEED = 0
PROBE = """
import json, sys
from freetumor_core.segmentation.bench import probe_default
print(json.dumps(probe_default(json.loads(sys.argv[1]))))
"""


def _ct(options: dict[str, str]):
    from ..phantom import make_phantom
    from ..volume import read_ct

    if options.get("ct"):
        return read_ct(options["ct"]), str(options["ct"])
    return make_phantom(0)[0], "phantom (make_phantom(0))"


def _default_model(options: dict[str, str], folder: Path) -> tuple[Path, str]:
    """The ``default`` model folder and a sentence on its weights."""
    from ..models import build_network, resolve_model, save_model, shipped_models
    from .networks import preset_config

    if options.get("model"):
        path = resolve_model(options["model"])
        return path, f"model folder {path}"
    if DEMO_MODEL in shipped_models():
        return resolve_model(DEMO_MODEL), f"the shipped model {DEMO_MODEL}"
    config = preset_config("default")
    torch.manual_seed(SEED)
    save_model(folder / "default", build_network(config.architecture), config)
    return folder / "default", f"the default preset with seeded random weights (torch.manual_seed({SEED}))"


def probe_default(options: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: seconds of each ``segment`` run on the whole CT, and the peak RSS (MB)."""
    import resource
    import time

    from .inference import segment

    ct, _ = _ct(options)
    seconds, result = [], None
    for _ in range(int(options.get("default_repeat", 2))):
        start = time.perf_counter()
        result = segment(ct, options["model_folder"], device=options.get("device", "cpu"))
        seconds.append(time.perf_counter() - start)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {
        "seconds": seconds,
        "peak_rss_mb": peak_mb,
        "windows": result.settings["windows"],
        "lesions": len(result.lesions),
        "model_grid_zyx": list(_model_grid_shape(ct, result.settings["model_spacing_mm"])),
    }


def _model_grid_shape(ct, spacing_mm) -> tuple[int, ...]:
    from .inference import model_grid

    if spacing_mm is None:
        return tuple(ct.shape)
    return tuple(model_grid(ct, spacing_mm)[0][::-1])


def _ints(text: str) -> list[int]:
    return [int(v) for v in str(text).split(",")]


def _subvolume(array: np.ndarray, size_zyx: list[int]) -> np.ndarray:
    """The ``size_zyx`` block at the centre of ``array`` (C, z, y, x), clamped inside it."""
    shape = np.asarray(array.shape[1:])
    size = np.minimum(size_zyx, shape)
    start = np.clip(shape // 2 - size // 2, 0, shape - size)
    box = tuple(slice(a, a + n) for a, n in zip(start, size, strict=True))
    return np.ascontiguousarray(array[(slice(None), *box)])


def constant_window_ratio(inputs: np.ndarray, roi: list[int], overlap: float) -> tuple[float, int]:
    """Of MONAI's windows over ``inputs`` (C, z, y, x), the share that hold one value per channel."""
    from monai.data.utils import dense_patch_slices

    shape = inputs.shape[1:]
    roi = [min(r, s) for r, s in zip(roi, shape, strict=True)]
    interval = [max(int(r * (1 - overlap)), 1) if s > r else r for r, s in zip(roi, shape, strict=True)]
    slices = dense_patch_slices(shape, roi, interval)
    constant = 0
    for box in slices:
        window = inputs[(slice(None), *box)].reshape(inputs.shape[0], -1)
        constant += bool(np.all(window.min(axis=1) == window.max(axis=1)))
    return constant / len(slices), len(slices)


def _swin_network(feature_size: int) -> tuple[torch.nn.Module, Any]:
    from ..models import build_network
    from .networks import preset_config

    config = preset_config(SWIN_PRESET)
    config.architecture["args"]["feature_size"] = feature_size
    torch.manual_seed(SEED)
    return build_network(config.architecture).eval(), config


def _fidelity(bench: Bench, suffix: str, plain: torch.Tensor, other: torch.Tensor) -> None:
    difference = (plain - other).abs()
    agreement = (plain.argmax(1) == other.argmax(1)).double().mean().item()
    bench.record(f"agreement{suffix}", agreement, "ratio")
    bench.record(f"softmax_max_abs_diff{suffix}", difference.max().item(), "prob")
    bench.record(f"softmax_mean_abs_diff{suffix}", difference.mean().item(), "prob")


def segmentation_suite(bench: Bench) -> None:
    """Whole-CT time and peak memory of the default network; SwinUNETR plain against fast."""
    from monai.inferers import sliding_window_inference

    from ..device import resolve_device
    from .inference import DEFAULT_OVERLAP, model_inputs, window_probabilities

    options = bench.options
    device = resolve_device(options.get("device", "cpu"))
    ct, ct_name = _ct(options)
    bench.note("ct", ct_name)
    with tempfile.TemporaryDirectory() as folder:
        model_folder, weights = _default_model(options, Path(folder))
        bench.note("default_weights", weights)
        probe_options = {**options, "model_folder": str(model_folder), "device": str(device)}
        command = [sys.executable, "-c", PROBE, json.dumps(probe_options)]
        probe = subprocess.run(command, capture_output=True, text=True, check=True)
    measured = json.loads(probe.stdout.strip().splitlines()[-1])
    bench.record("whole_ct/default", measured["seconds"], "s")
    bench.record("peak_rss/default", measured["peak_rss_mb"], "MB")
    run = {key: measured[key] for key in ("windows", "lesions", "model_grid_zyx")}
    bench.note("default_run", run | {"overlap": DEFAULT_OVERLAP})

    feature_size = int(options.get("swin_feature_size", 48))
    roi = [int(options.get("swin_roi", 96))] * 3
    network, config = _swin_network(feature_size)
    network.to(device)
    config.preprocessing.patch_size_voxels = roi
    channels, _ = model_inputs(ct, config)
    ratio, windows = constant_window_ratio(channels, roi, PLAIN_OVERLAP)
    bench.record("constant_windows/whole_ct", ratio, "ratio")
    block = _subvolume(channels, _ints(options.get("swin_subvolume", "96,96,144")))
    inputs = torch.from_numpy(block)[None].to(device)
    _, sub_windows = constant_window_ratio(block, roi, PLAIN_OVERLAP)
    batch = int(options.get("fast_batch_size", 2))
    name = f"whole_ct/{SWIN_PRESET}" + ("" if feature_size == 48 else f"_fs{feature_size}")
    bench.note(
        "swinunetr",
        {
            "weights": f"seeded random (torch.manual_seed({SEED})): no trained SwinUNETR weights here, so "
            "the classes are near-uniform and agreement is a strict test; the softmax differences say more",
            "feature_size": feature_size,
            "parameters": sum(p.numel() for p in network.parameters()),
            "roi_voxels": roi,
            "subvolume_zyx": list(block.shape[1:]),
            "subvolume_windows": sub_windows,
            "whole_ct_windows": windows,
            "plain": "monai sliding_window_inference, overlap 0.5, gaussian, batch 1, fp32, softmax blended",
            "fast": f"segment's window_probabilities, overlap 0.5, batch {batch}, fp32, exact short cuts",
        },
    )
    outputs: dict[str, torch.Tensor] = {}

    def plain() -> None:
        with torch.no_grad():
            outputs["plain"] = sliding_window_inference(
                inputs,
                roi,
                1,
                lambda x: torch.softmax(network(x), dim=1),
                overlap=PLAIN_OVERLAP,
                mode="gaussian",
            )

    def fast(precision: str) -> None:
        outputs[precision] = window_probabilities(
            inputs, network, roi, PLAIN_OVERLAP, batch, device, precision=precision
        )

    calls = {f"{name}/plain": plain, f"{name}/fast": lambda: fast("fp32")}
    if options.get("bf16", "1") not in ("0", "false", "no"):
        calls[f"{name}/fast_bf16"] = lambda: fast("bf16")
    with torch.no_grad():  # warm-up: one window, so that no timing carries one-off set-up costs
        network(inputs[(..., *(slice(0, r) for r in roi))])
    bench.time_interleaved(calls, warmup=0, repeat=int(options.get("swin_repeat", 1)), unit="s")
    _fidelity(bench, "", outputs["plain"], outputs["fp32"])
    if "bf16" in outputs:
        _fidelity(bench, "/bf16", outputs["plain"], outputs["bf16"])
