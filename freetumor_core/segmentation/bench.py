"""``freetumor bench segmentation``: the default network on a whole CT; SwinUNETR plain against fast.

Results:

- ``whole_ct/default`` (s): :func:`~.inference.segment` with the ``default`` model on the whole CT
  (resampled by ``segment`` to the model's 1.5 mm), post-processing and lesion records included,
  in a fresh process (``default_repeat`` runs there); ``peak_rss/default`` (MB): that process's
  peak resident memory, imports and reading the CT included.
- ``whole_ct/swinunetr_v2_fs48/plain`` and ``.../fast`` (s): the same fixed sub-volume of that CT
  (model grid, HU windowed, ``swin_subvolume`` voxels z,y,x; ``swin_position`` ``edge``: centred in
  z, at the grid's last rows in y and first columns in x, the body's edge with the air around it;
  or ``centre``), the same weights. Plain: MONAI ``sliding_window_inference``, overlap 0.5,
  Gaussian, batch 1, fp32, the softmax of each window blended (as ``segment`` blends). Fast:
  ``segment``'s own sliding-window step, :func:`~.inference.window_probabilities`, as ``segment``
  runs it (``precision="auto"``: bf16 for SwinUNETR on a CPU with native bf16; ``fast_batch_size``
  windows a pass). ``.../fast_fp32``: the same in fp32 (the exact short cuts only).
- ``agreement`` (ratio of voxels with the same most probable class, fast against plain), and
  ``softmax_max_abs_diff`` / ``softmax_mean_abs_diff``; the same with ``/fp32`` for the fp32 path,
  and with ``/default_bf16`` for the ``default`` model (trained weights) on the same sub-volume,
  plain fp32 against the fast path in bf16.
- ``constant_windows/whole_ct`` (ratio): of the whole CT's windows at overlap 0.5, those that are one
  constant value (air), which the fast path computes once.
- ``cpu_s/swinunetr_v2_fs48/plain``, ``.../fast``, ``.../fast_fp32`` (s): the process's CPU time
  of the same runs (all its threads), steadier than wall time on a shared machine.

Weights: ``model`` (a folder or a shipped model's name) for ``default``; else the shipped
``segmenter_demo`` when there is one, else the preset with seeded random weights. SwinUNETR: the
model folder ``swin_model`` (``scripts/train_bench_swinunetr.py`` trains one), else seeded random
weights (``torch.manual_seed(0)``). The result file's ``notes`` say which, and the sub-volume's
size, place and share of air.

Options (``--option KEY=VALUE``): ``ct`` (default: the phantom), ``model``, ``swin_model``,
``device`` (``cpu``), ``default_repeat`` (2), ``swin_feature_size`` (48, random weights only),
``swin_roi`` (96), ``swin_subvolume`` (96,144,144), ``swin_position`` (edge), ``fast_batch_size``
(2), ``swin_repeat`` (1), ``fp32`` (1: also time the fp32 fast path).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..bench import Bench, peak_rss_mb

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
    import time

    from .inference import segment

    ct, _ = _ct(options)
    seconds, result = [], None
    for _ in range(int(options.get("default_repeat", 2))):
        start = time.perf_counter()
        result = segment(ct, options["model_folder"], device=options.get("device", "cpu"))
        seconds.append(time.perf_counter() - start)
    peak_mb = peak_rss_mb()
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


def _subvolume(array: np.ndarray, size_zyx: list[int], position: str = "edge") -> tuple[np.ndarray, list]:
    """The ``size_zyx`` block of ``array`` (C, z, y, x), clamped inside it, and its first voxel:
    ``centre`` at the centre; ``edge`` centred in z, at the grid's last rows in y and first columns
    in x, so that it holds the body's edge and the air around it, as a whole CT does."""
    shape = np.asarray(array.shape[1:])
    size = np.minimum(size_zyx, shape)
    start = np.clip(shape // 2 - size // 2, 0, shape - size)
    if position == "edge":
        start[1], start[2] = shape[1] - size[1], 0
    box = tuple(slice(int(a), int(a + n)) for a, n in zip(start, size, strict=True))
    return np.ascontiguousarray(array[(slice(None), *box)]), [int(v) for v in start]


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


def _swin_network(feature_size: int, folder: str | None = None) -> tuple[torch.nn.Module, Any]:
    """SwinUNETR v2 with seeded random weights, or the weights of the model folder ``folder``.

    Raises:
        InputError: ``folder`` is not a segmentation model folder holding a SwinUNETR.
    """
    from ..errors import InputError
    from ..models import build_network, load_model
    from .networks import preset_config

    if folder:
        loaded = load_model(folder, device="cpu", task="segmentation")
        if loaded.config.architecture.get("name") != "SwinUNETR":
            raise InputError(
                f"swin_model holds a {loaded.config.architecture.get('name')}, not a SwinUNETR", folder
            )
        return loaded.network.eval(), loaded.config
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


def _plain(inputs: torch.Tensor, network: torch.nn.Module, roi: list[int], overlap: float) -> torch.Tensor:
    """Plain MONAI inference as a user writes it: batch 1, fp32, the softmax of each window blended."""
    from monai.inferers import sliding_window_inference

    with torch.no_grad():
        return sliding_window_inference(
            inputs, roi, 1, lambda x: torch.softmax(network(x), dim=1), overlap=overlap, mode="gaussian"
        )


def _trained_bf16(bench: Bench, model_folder: Path, block: np.ndarray, device) -> dict[str, Any]:
    """bf16 on trained weights: the ``default`` model (UNet) on the sub-volume, plain fp32 MONAI
    against the fast path forced to bf16 (``agreement/default_bf16``)."""
    from ..models import load_model
    from .inference import window_probabilities

    loaded = load_model(model_folder, device=device, task="segmentation")
    network = loaded.network.eval()
    roi = list(loaded.config.preprocessing.patch_size_voxels or (96, 96, 96))[::-1]
    inputs = torch.from_numpy(block[: int(loaded.config.architecture["args"].get("in_channels", 1))])
    inputs = inputs[None].to(device)
    plain = _plain(inputs, network, roi, PLAIN_OVERLAP)
    bf16 = window_probabilities(inputs, network, roi, PLAIN_OVERLAP, 2, device, precision="bf16")
    _fidelity(bench, "/default_bf16", plain, bf16)
    classes = plain.argmax(1)
    return {"background_share": round(float((classes == 0).double().mean()), 4)}


def segmentation_suite(bench: Bench) -> None:
    """Whole-CT time and peak memory of the default network; SwinUNETR plain against fast."""
    from ..device import resolve_device
    from .inference import DEFAULT_OVERLAP, model_inputs, resolve_precision, window_probabilities

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

        swin_model = options.get("swin_model")
        network, config = _swin_network(int(options.get("swin_feature_size", 48)), swin_model)
        feature_size = int(config.architecture["args"].get("feature_size", 48))
        roi = [int(options.get("swin_roi", 96))] * 3
        network.to(device)
        config.preprocessing.patch_size_voxels = roi
        channels, _ = model_inputs(ct, config)
        ratio, windows = constant_window_ratio(channels, roi, PLAIN_OVERLAP)
        bench.record("constant_windows/whole_ct", ratio, "ratio")
        position = options.get("swin_position", "edge")
        size = _ints(options.get("swin_subvolume", "96,144,144"))
        block, start = _subvolume(channels, size, position)
        trained = _trained_bf16(bench, model_folder, block, device)
    inputs = torch.from_numpy(block)[None].to(device)
    _, sub_windows = constant_window_ratio(block, roi, PLAIN_OVERLAP)
    batch = int(options.get("fast_batch_size", 2))
    used = resolve_precision(network, device, "auto")
    name = f"whole_ct/{SWIN_PRESET}" + ("" if feature_size == 48 else f"_fs{feature_size}")
    bench.note(
        "swinunetr",
        {
            "weights": f"the model folder {Path(swin_model).name} (trained "
            f"{config.provenance.get('steps', '?')} steps by "
            f"{config.provenance.get('script', 'an unknown script')})"
            if swin_model
            else f"seeded random (torch.manual_seed({SEED})): no trained SwinUNETR weights here, so "
            "the classes are near-uniform (a strict test of agreement: most voxels are close calls)",
            "feature_size": feature_size,
            "parameters": sum(p.numel() for p in network.parameters()),
            "roi_voxels": roi,
            "subvolume_zyx": list(block.shape[1:]),
            "subvolume_start_zyx": start,
            "subvolume_position": position,
            "subvolume_air_share": round(float((block[0] == 0).mean()), 4),
            "whole_ct_air_share": round(float((channels[0] == 0).mean()), 4),
            "subvolume_windows": sub_windows,
            "whole_ct_windows": windows,
            "plain": "monai sliding_window_inference, overlap 0.5, gaussian, batch 1, fp32, softmax blended",
            "fast": f"segment's window_probabilities, overlap 0.5, batch {batch}, precision auto ({used}): "
            "constant windows once, fused attention, attention masks once, lean layers (pointwise convs and "
            "block upsampling as matrix products, window-attention bias once per mask)"
            + (", bf16 autocast with the output layer in fp32" if used == "bf16" else ""),
            "fast_fp32": f"the same in fp32 (exact short cuts only), batch {batch}",
            "default_bf16": "the default model (trained UNet) on the same sub-volume: plain fp32 against "
            f"the fast path in bf16; plain's classes there: {trained['background_share']:.1%} background",
        },
    )
    outputs: dict[str, torch.Tensor] = {}

    def plain() -> None:
        outputs["plain"] = _plain(inputs, network, roi, PLAIN_OVERLAP)

    def fast(precision: str) -> None:
        outputs[precision] = window_probabilities(
            inputs, network, roi, PLAIN_OVERLAP, batch, device, precision=precision
        )

    calls = {f"{name}/plain": plain, f"{name}/fast": lambda: fast("auto")}
    if options.get("fp32", "1") not in ("0", "false", "no"):
        calls[f"{name}/fast_fp32"] = lambda: fast("fp32")
    cpu_seconds: dict[str, list[float]] = {}

    def cpu_timed(key: str, call):
        def timed() -> None:
            start = time.process_time()
            call()
            cpu_seconds.setdefault(key, []).append(time.process_time() - start)

        return timed

    with torch.no_grad():  # warm-up: one window, so that no timing carries one-off set-up costs
        network(inputs[(..., *(slice(0, r) for r in roi))])
    timed_calls = {key: cpu_timed(key, call) for key, call in calls.items()}
    bench.time_interleaved(timed_calls, warmup=0, repeat=int(options.get("swin_repeat", 1)), unit="s")
    for key, values in cpu_seconds.items():  # CPU time of this process: steadier on a shared machine
        bench.record(f"cpu_s/{key.removeprefix('whole_ct/')}", values, "s")
    _fidelity(bench, "", outputs["plain"], outputs["auto"])
    if "fp32" in outputs:
        _fidelity(bench, "/fp32", outputs["plain"], outputs["fp32"])
