"""Model folders: round trip through real files; every broken folder gives an InputError naming the file."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest
import torch

from freetumor_core.errors import InputError
from freetumor_core.models import (
    ModelConfig,
    Preprocessing,
    build_network,
    describe_model,
    load_model,
    read_model_config,
    save_model,
)

ARCHITECTURE = {
    "name": "UNet",
    "args": {
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": 2,
        "channels": [4, 8],
        "strides": [2],
        "num_res_units": 0,
    },
}


def make_config(**changes) -> ModelConfig:
    fields = {
        "task": "segmentation",
        "architecture": json.loads(json.dumps(ARCHITECTURE)),
        "preprocessing": Preprocessing(
            spacing_mm=[1.5, 1.5, 1.5], hu_window=[-100.0, 240.0], patch_size_voxels=[32, 32, 32]
        ),
        "label_names": {0: "background", 1: "liver"},
        "provenance": {"training_data": "phantom crops", "code_version": "test"},
        "metrics": {"liver_dice": 0.91},
        "description": "a tiny test network",
    }
    fields.update(changes)
    return ModelConfig(**fields)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    network = build_network(ARCHITECTURE)
    folder = save_model(tmp_path / "liver_model", network, make_config())
    return folder, network


def test_round_trip_keeps_weights_config_and_outputs(saved):
    folder, network = saved
    assert sorted(path.name for path in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert [path.name for path in folder.parent.iterdir()] == ["liver_model"]  # no temporary folder left
    loaded, config = load_model(folder, device="cpu", task="segmentation")
    assert not loaded.training
    theirs = loaded.state_dict()
    for name, ours in network.state_dict().items():
        assert torch.equal(ours, theirs[name]), name
    network.eval()
    image = torch.rand(1, 1, 16, 16, 16)
    assert torch.equal(network(image), loaded(image))
    assert config.label_names == {0: "background", 1: "liver"}
    assert config.preprocessing.hu_window == [-100.0, 240.0]
    assert config.preprocessing.patch_size_voxels == [32, 32, 32]
    assert config.metrics == {"liver_dice": 0.91}
    assert len(config.weights_sha256) == 64
    assert ModelConfig.from_dict(config.to_dict()) == config
    card = (folder / "README.md").read_text()
    for text in ("segmentation model: UNet", "a tiny test network", "liver", "phantom crops", "0.91"):
        assert text in card


def test_save_replaces_an_existing_folder(saved):
    folder, _ = saved
    torch.manual_seed(1)
    other = build_network(ARCHITECTURE)
    save_model(folder, other, make_config(metrics={"liver_dice": 0.5}))
    loaded, config = load_model(folder, device="cpu")
    assert config.metrics == {"liver_dice": 0.5}
    assert torch.equal(next(loaded.parameters()), next(other.parameters()).detach())
    assert [path.name for path in folder.parent.iterdir()] == ["liver_model"]


def test_describe_model(saved):
    folder, network = saved
    info = describe_model(folder)
    assert info["task"] == "segmentation"
    assert info["architecture"]["name"] == "UNet"
    assert info["parameter_count"] == sum(p.numel() for p in network.parameters())
    assert info["label_names"] == {"0": "background", "1": "liver"}
    assert info["provenance"]["training_data"] == "phantom crops"
    assert info["metrics"] == {"liver_dice": 0.91}
    size_bytes = sum(path.stat().st_size for path in folder.iterdir())
    assert info["size_mb"] == pytest.approx(size_bytes / 1e6, abs=1e-3)


def edit_config(folder, **changes):
    path = folder / "config.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def expect_error(folder, file_name, fragment, **load_args):
    with pytest.raises(InputError) as caught:
        load_model(folder, device="cpu", **load_args)
    assert caught.value.path == str(folder / file_name) if file_name else str(folder)
    assert fragment in str(caught.value)


def test_missing_folder_and_files(saved, tmp_path):
    folder, _ = saved
    expect_error(tmp_path / "nowhere", None, "model folder not found")
    (folder / "model.safetensors").unlink()
    expect_error(folder, "model.safetensors", "file not found")
    (folder / "config.json").unlink()
    expect_error(folder, "config.json", "file not found")


def test_config_that_is_not_json(saved):
    folder, _ = saved
    (folder / "config.json").write_text('{"task": "segmentation", ')
    expect_error(folder, "config.json", "not valid JSON")


def test_wrong_schema_version(saved):
    folder, _ = saved
    edit_config(folder, schema_version=99)
    expect_error(folder, "config.json", "schema_version 99 is not supported")


def test_unknown_network_name(saved):
    folder, _ = saved
    edit_config(folder, architecture={"name": "NoSuchNet", "args": {}})
    expect_error(folder, "config.json", "unknown network 'NoSuchNet'")


def test_arguments_the_network_does_not_take(saved):
    folder, _ = saved
    edit_config(folder, architecture={"name": "UNet", "args": {"spatial_dims": 3, "colour": "red"}})
    expect_error(folder, "config.json", "cannot build UNet")


def test_another_task_is_refused(saved):
    folder, _ = saved
    message = "is a 'segmentation' model, not a 'synthesis' model"
    expect_error(folder, "config.json", message, task="synthesis")


def test_tensors_with_wrong_shapes(saved):
    folder, _ = saved
    wider = json.loads(json.dumps(ARCHITECTURE))
    wider["args"]["channels"] = [6, 8]
    edit_config(folder, architecture=wider)
    expect_error(folder, "model.safetensors", "wrong shape")


def test_missing_and_unexpected_tensors(saved):
    folder, _ = saved
    deeper = json.loads(json.dumps(ARCHITECTURE))
    deeper["args"].update(channels=[4, 8, 16], strides=[2, 2])
    edit_config(folder, architecture=deeper)
    with pytest.raises(InputError) as caught:
        load_model(folder, device="cpu")
    assert caught.value.path == str(folder / "model.safetensors")
    assert "missing: " in str(caught.value) and "do not fit the UNet architecture" in str(caught.value)
    # Extra tensors: weights of a residual UNet under the plain architecture.
    residual = json.loads(json.dumps(ARCHITECTURE))
    residual["args"]["num_res_units"] = 1
    save_model(folder, build_network(residual), make_config(architecture=residual))
    edit_config(folder, architecture=ARCHITECTURE)
    expect_error(folder, "model.safetensors", "unexpected: ")


@pytest.mark.parametrize("keep_bytes", [4, 60, -16])
def test_truncated_weights(saved, keep_bytes):
    folder, _ = saved
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[:keep_bytes])
    expect_error(folder, "model.safetensors", "corrupt or truncated safetensors file")


def test_flipped_weight_bytes_fail_the_checksum(saved):
    folder, _ = saved
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    expect_error(folder, "model.safetensors", "SHA-256 differs")


class LeavesAMark:
    """Unpickling this creates a file: proof that something was unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_a_pickle_is_never_loaded(saved, tmp_path):
    folder, network = saved
    marker = tmp_path / "unpickled"
    torch.save({"state": network.state_dict(), "mark": LeavesAMark(marker)}, folder / "model.safetensors")
    edit_config(folder, weights_sha256=None)
    expect_error(folder, "model.safetensors", "corrupt or truncated safetensors file")
    assert not marker.exists()


def test_config_fields_are_checked():
    with pytest.raises(InputError, match="architecture must be"):
        ModelConfig(task="segmentation", architecture={"args": {}})
    with pytest.raises(InputError, match="unknown config field"):
        ModelConfig.from_dict({**make_config().to_dict(), "colour": "red"})
    with pytest.raises(InputError, match="hu_window must be a list of 2"):
        ModelConfig.from_dict({**make_config().to_dict(), "preprocessing": {"hu_window": [1, 2, 3]}})
    assert read_model_config  # the public reader is exported


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "freetumor_core", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_model_info(saved):
    folder, network = saved
    result = run_cli("model", "info", str(folder), "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["parameter_count"] == sum(p.numel() for p in network.parameters())
    text = run_cli("model", "info", str(folder))
    assert "segmentation" in text.stdout and "0 background, 1 liver" in text.stdout


def test_cli_truncated_weights_exit_2_naming_the_file(saved):
    folder, _ = saved
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    result = run_cli("model", "info", str(folder))
    assert result.returncode == 2
    assert f"{path}: corrupt or truncated safetensors file" in result.stderr
    assert "Traceback" not in result.stderr
