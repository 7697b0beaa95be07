"""Segmentation speed: the fast sliding-window path gives plain MONAI's result (exactly where its
short cuts are exact), constant windows go through the network once, and `freetumor bench
segmentation` writes its named results."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from freetumor_core.cli import main
from freetumor_core.errors import InputError
from freetumor_core.models import build_network, save_model
from freetumor_core.segmentation import preset_config, segment
from freetumor_core.segmentation.bench import constant_window_ratio
from freetumor_core.segmentation.fast_layers import lean_layers
from freetumor_core.segmentation.inference import window_probabilities
from freetumor_core.volume import Volume


def plain(inputs, network, roi, overlap=0.5, batch_size=1):
    """Plain MONAI inference, as a user would write it (softmax of each window blended)."""
    with torch.no_grad():
        return sliding_window_inference(
            inputs, roi, batch_size, lambda x: torch.softmax(network(x), 1), overlap=overlap, mode="gaussian"
        )


def body_with_air(shape=(64, 64, 112), seed=0) -> torch.Tensor:
    """Windowed CT-like input (1, 1, z, y, x): a textured body in the first half along x, then air
    (the HU window's low end, 0) wide enough that some windows hold nothing else."""
    rng = np.random.default_rng(seed)
    array = np.zeros(shape, np.float32)
    body = rng.random((shape[0], shape[1], shape[2] // 2)).astype(np.float32)
    array[:, :, : body.shape[2]] = body
    return torch.from_numpy(array)[None, None]


class Counting(nn.Module):
    """A network wrapper that counts the windows it sees."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network, self.windows = network, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.windows += x.shape[0]
        return self.network(x)


def tiny_unet() -> nn.Module:
    config = preset_config("default")
    config.architecture["args"].update(channels=[4, 8], strides=[2])
    torch.manual_seed(0)
    return build_network(config.architecture).eval()


def test_constant_windows_go_through_the_network_once_and_exactly():
    inputs, roi = body_with_air(), [32, 32, 32]
    ratio, windows = constant_window_ratio(inputs[0].numpy(), roi, 0.5)
    assert windows == 3 * 3 * 6 and ratio == pytest.approx(3 * 3 * 2 / windows)  # x starts 64 and 80
    network = Counting(tiny_unet())
    expected = plain(inputs, network, roi)
    assert network.windows == windows
    network.windows = 0
    fast = window_probabilities(inputs, network, roi, 0.5, batch_size=1, fast=True)
    assert network.windows == windows - round(ratio * windows) + 1  # one pass for all the air
    assert torch.allclose(fast, expected, atol=1e-6)
    with lean_layers(network):  # the layer short cuts round differently; the reuse adds nothing
        network.windows = 0
        assert torch.equal(fast, plain(inputs, network, roi))  # bit for bit
    network.windows = 0
    batched = window_probabilities(inputs, network, roi, 0.5, batch_size=4, fast=True)
    assert network.windows == windows - round(ratio * windows) + 1
    assert torch.allclose(batched, expected, atol=1e-6)
    assert torch.equal(batched.argmax(1), expected.argmax(1))


def test_without_short_cuts_it_is_plain_monai():
    inputs, roi = body_with_air(), [32, 32, 32]
    network = tiny_unet()
    assert torch.equal(
        window_probabilities(inputs, network, roi, 0.5, fast=False), plain(inputs, network, roi)
    )


def test_swinunetr_fast_path_gives_the_plain_labels_and_restores_attention():
    config = preset_config("swinunetr_v2_fs48")
    config.architecture["args"]["feature_size"] = 12
    torch.manual_seed(0)
    network = build_network(config.architecture).eval()
    switches = [m for m in network.modules() if hasattr(m, "use_flash_attention")]
    assert switches and not any(m.use_flash_attention for m in switches)
    seen = []
    switches[0].register_forward_pre_hook(lambda m, _: seen.append(m.use_flash_attention))
    inputs, roi = body_with_air((64, 64, 96)), [64, 64, 64]
    expected = plain(inputs, network, roi)
    fast = window_probabilities(inputs, network, roi, 0.5, batch_size=2, fast=True, precision="fp32")
    assert seen == [False, False, True]  # two plain windows, then one fused pass of two
    assert not any(m.use_flash_attention for m in switches)  # put back
    assert (fast - expected).abs().max().item() < 1e-5
    assert torch.equal(fast.argmax(1), expected.argmax(1))
    bf16 = window_probabilities(inputs, network, roi, 0.5, batch_size=2, precision="bf16")
    assert 0 < (bf16 - expected).abs().max().item() < 0.2  # lossy, yet close
    assert "forward" not in vars(network.out)  # the fp32 output layer is put back
    assert not any("forward" in vars(m) for m in network.modules())  # and every lean layer


def test_auto_precision_and_attention_masks_once(monkeypatch):
    from monai.networks.nets import swin_unetr

    from freetumor_core.segmentation import inference

    cpu = torch.device("cpu")
    config = preset_config("swinunetr_v2_fs48")
    config.architecture["args"]["feature_size"] = 12
    torch.manual_seed(0)
    swin = build_network(config.architecture).eval()
    assert inference.resolve_precision(tiny_unet(), cpu) == "fp32"  # the default UNet stays fp32
    assert inference.resolve_precision(swin, torch.device("cuda")) == "bf16"
    assert inference.resolve_precision(swin, cpu, "fp32") == "fp32"
    monkeypatch.setattr(inference, "_cpu_has_bf16", lambda: False)
    assert inference.resolve_precision(swin, cpu) == "fp32"
    monkeypatch.setattr(inference, "_cpu_has_bf16", lambda: True)
    assert inference.resolve_precision(swin, cpu) == "bf16"
    with pytest.raises(InputError, match="precision must be one of"):
        inference.resolve_precision(swin, cpu, "fp16")
    # The masks: computed once per shape inside, every call outside; the function is put back.
    original, calls = swin_unetr.compute_mask, []

    def counting(*args):
        calls.append(args[0])
        return original(*args)

    monkeypatch.setattr(swin_unetr, "compute_mask", counting)
    inputs = body_with_air((64, 64, 96))
    with torch.no_grad():
        swin(inputs[..., :64])
    per_window = len(calls)
    assert per_window >= 4  # every layer of every window
    calls.clear()
    with inference.attention_masks_once():
        with torch.no_grad():
            once = swin(inputs[..., :64])
            again = swin(inputs[..., 32:])
    assert len(calls) == len({tuple(c) for c in calls}) <= per_window  # the second window: none
    assert swin_unetr.compute_mask is counting
    with torch.no_grad():
        assert torch.equal(once, swin(inputs[..., :64]))
        assert torch.equal(again, swin(inputs[..., 32:]))


def test_segment_keeps_its_labels_with_the_short_cuts(tmp_path):
    config = preset_config("default")
    config.architecture["args"].update(channels=[4, 8], strides=[2])
    config.preprocessing.patch_size_voxels = [32, 32, 32]
    torch.manual_seed(0)
    folder = save_model(tmp_path / "tiny", build_network(config.architecture), config)
    array = np.full((40, 50, 90), -1000, np.int16)  # air on the right: constant windows
    array[:, :, :40] = np.random.default_rng(1).integers(-150, 250, (40, 50, 40))
    ct = Volume(array, (1.5, 1.5, 1.5), (0.0, 0.0, 0.0), np.eye(3))
    fast = segment(ct, folder, device="cpu", fast=True)
    slow = segment(ct, folder, device="cpu", fast=False)
    assert np.array_equal(fast.labels.array, slow.labels.array)
    assert np.allclose(fast.tumor_probability, slow.tumor_probability, atol=1e-6)  # float rounding
    assert fast.settings["fast"] and fast.settings["precision"] == "auto"
    assert fast.settings["computed_in"] == slow.settings["computed_in"] == "fp32"  # a UNet on the CPU
    with pytest.raises(InputError, match="precision must be one of auto, fp32, bf16"):
        segment(ct, folder, device="cpu", precision="fp16")


@pytest.mark.slow
def test_bench_segmentation_writes_the_named_results(tmp_path):
    config = preset_config("default")
    config.architecture["args"].update(channels=[4, 8], strides=[2])
    config.preprocessing.spacing_mm = [3.0, 3.0, 3.0]
    config.preprocessing.patch_size_voxels = [32, 32, 32]
    folder = save_model(tmp_path / "tiny", build_network(config.architecture), config)
    target = tmp_path / "segmentation.json"
    options = {
        "model": str(folder),
        "default_repeat": "1",
        "swin_feature_size": "12",
        "swin_roi": "64",
        "swin_subvolume": "64,64,96",
        "swin_position": "centre",
    }
    arguments = [item for key, value in options.items() for item in ("--option", f"{key}={value}")]
    assert main(["bench", "segmentation", "--json", str(target), *arguments]) == 0
    payload = json.loads(target.read_text())
    rows = {row["name"]: row for row in payload["results"]}
    swin = "whole_ct/swinunetr_v2_fs48_fs12"
    assert set(rows) == {
        "whole_ct/default",
        "peak_rss/default",
        "constant_windows/whole_ct",
        f"{swin}/plain",
        f"{swin}/fast",
        f"{swin}/fast_fp32",
        *(f"cpu_s/{swin.removeprefix('whole_ct/')}/{path}" for path in ("plain", "fast", "fast_fp32")),
        *(f"{name}{suffix}" for name in ("agreement", "softmax_max_abs_diff", "softmax_mean_abs_diff")
          for suffix in ("", "/fp32", "/default_bf16")),
    }  # fmt: skip
    assert rows["whole_ct/default"]["unit"] == "s" and rows["whole_ct/default"]["median"] > 0
    assert 100 < rows["peak_rss/default"]["median"] < 8000 and rows["peak_rss/default"]["unit"] == "MB"
    assert rows["agreement/fp32"]["median"] >= 0.999 and rows["softmax_max_abs_diff/fp32"]["median"] < 1e-4
    assert 0.5 < rows["agreement"]["median"] <= 1 and 0.5 < rows["agreement/default_bf16"]["median"] <= 1
    assert 0 <= rows["constant_windows/whole_ct"]["median"] <= 1
    notes = payload["notes"]
    assert notes["default_weights"] == f"model folder {folder}" and notes["ct"].startswith("phantom")
    assert notes["swinunetr"]["weights"].startswith("seeded random")
    assert (
        notes["swinunetr"]["subvolume_zyx"] == [64, 64, 96] and notes["swinunetr"]["subvolume_windows"] == 2
    )
    assert 0 <= notes["swinunetr"]["subvolume_air_share"] <= 1 and notes["swinunetr"]["fast"].count("auto")


def test_bench_swinunetr_weights_come_from_a_model_folder(tmp_path):
    from freetumor_core.segmentation.bench import _swin_network

    config = preset_config("swinunetr_v2_fs48")
    config.architecture["args"]["feature_size"] = 12
    torch.manual_seed(5)
    trained = build_network(config.architecture)
    folder = save_model(tmp_path / "swin", trained, config)
    network, loaded = _swin_network(48, str(folder))
    assert loaded.architecture["args"]["feature_size"] == 12 and not network.training
    for (name, mine), theirs in zip(network.state_dict().items(), trained.state_dict().values(), strict=True):
        assert torch.equal(mine, theirs), name
    random_network, _ = _swin_network(12)
    assert not torch.equal(next(random_network.parameters()), next(network.parameters()))
    unet = preset_config("default")
    unet.architecture["args"].update(channels=[4, 8], strides=[2])
    other = save_model(tmp_path / "unet", build_network(unet.architecture), unet)
    with pytest.raises(InputError, match="not a SwinUNETR"):
        _swin_network(48, str(other))


def test_lean_layers_give_each_layers_own_result_and_put_it_back():
    torch.manual_seed(0)
    layers = nn.ModuleList(
        [
            nn.Conv3d(6, 4, 1),  # pointwise, with bias
            nn.Conv3d(6, 4, 1, bias=False),
            nn.ConvTranspose3d(6, 4, 2, stride=2),  # kernel == stride: block upsampling
            nn.ConvTranspose3d(6, 4, (1, 2, 3), stride=(1, 2, 3), bias=False),
            nn.ConvTranspose3d(6, 4, 3, stride=2, padding=1, output_padding=1),  # not covered
            nn.Conv3d(6, 4, 3, padding=1),  # not covered
        ]
    ).eval()
    x = torch.randn(2, 6, 5, 4, 3)
    with torch.inference_mode():
        expected = [layer(x) for layer in layers]
        with lean_layers(layers):
            patched = ["forward" in vars(layer) for layer in layers]
            got = [layer(x) for layer in layers]
    assert patched == [True, True, True, True, False, False]
    for want, have in zip(expected, got, strict=True):
        assert have.shape == want.shape
        assert (have - want).abs().max().item() < 1e-5
    assert not any("forward" in vars(layer) for layer in layers)  # the class's forwards again
    own = nn.Conv3d(6, 4, 1)
    own.forward = lambda x: x  # replaced on the instance already: left as it is, and kept
    with lean_layers(own):
        assert own(x) is x
    assert own(x) is x


def test_lean_window_attention_builds_its_bias_once_per_mask():
    from monai.networks.nets.swin_unetr import WindowAttention, compute_mask

    torch.manual_seed(0)
    attention = WindowAttention(dim=8, num_heads=2, window_size=(2, 2, 2), use_flash_attention=True).eval()
    torch.nn.init.normal_(attention.relative_position_bias_table, std=1.0)
    mask = compute_mask([4, 4, 4], (2, 2, 2), (1, 1, 1), "cpu")  # 8 windows per batch item
    x = torch.randn(3 * 8, 8, 8)
    with torch.inference_mode():
        expected = attention(x, mask), attention(x, None)
        with lean_layers(attention):
            got = attention(x, mask), attention(x, None), attention(x, mask)
            assert len(vars(attention)["_bias_once"]) == 2  # one bias per mask, reused
    for want, have in zip(expected + expected[:1], got, strict=True):
        assert (have - want).abs().max().item() < 1e-6
    assert "forward" not in vars(attention) and "_bias_once" not in vars(attention)
