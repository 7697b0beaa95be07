"""The report model's networks and its model folder: embeddings, the CT's input grid, loading."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from freetumor_core.errors import InputError
from freetumor_core.models import ModelConfig, save_model
from freetumor_core.reports.model import ct_input, default_preprocessing, load_report_model, window
from freetumor_core.reports.vision import ReportModel, default_architecture
from freetumor_core.volume import Volume

TINY = dict(feature_size=6, embed_dim=16, input_voxels=32, depths=[1, 1, 1, 1])


def tiny_model_folder(folder, text_dim: int = 384):
    """A tiny report model folder with untrained weights (seeded)."""
    torch.manual_seed(0)
    architecture = default_architecture(feature_size=6, embed_dim=16, text_dim=text_dim, input_voxels=32)
    architecture["args"]["depths"] = [1, 1, 1, 1]
    network = ReportModel(**architecture["args"])
    config = ModelConfig(
        task="reports", architecture=architecture, preprocessing=default_preprocessing(32, 8.0),
        provenance={"text_encoder": "default", "objectives": {"temperature": 0.1}},
    )  # fmt: skip
    return save_model(folder, network, config)


def test_embeddings_are_unit_length_and_shaped():
    model = ReportModel(**TINY, text_dim=24)
    image = torch.rand(3, 1, 32, 32, 32)
    sentences = torch.randn(3, 4, 24)
    mask = torch.tensor([[True] * 4, [True, True, False, False], [True, False, False, False]])
    out = model(image, sentences, mask, masked_image=image, masked_sentences=mask & False)
    assert out["image"].shape == (3, 16) and out["report"].shape == (3, 16)
    assert torch.allclose(out["image"].norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(out["report"].norm(dim=1), torch.ones(3), atol=1e-5)
    assert out["volume"].shape == image.shape and out["sentences"].shape == (3, 4, 24)
    # A padded sentence changes nothing: the report vector reads only the real ones.
    changed = sentences.clone()
    changed[2, 1:] = 100.0
    again = model.report_embedding(changed, mask)
    assert torch.allclose(again[2], out["report"][2], atol=1e-5)


def test_input_must_be_a_multiple_of_32():
    with pytest.raises(ValueError, match="multiple of 32"):
        ReportModel(**{**TINY, "input_voxels": 48})


def test_ct_input_is_a_cube_centred_on_the_body():
    # A 40 mm "body" at 100 HU off the centre of a 2 x 2 x 3 mm air volume on a flipped grid.
    array = np.full((40, 60, 60), -1000, np.int16)
    array[5:19, 30:50, 8:28] = 100  # 14 x 3 mm by 20 x 2 mm by 20 x 2 mm
    ct = Volume(array, (2.0, 2.0, 3.0), (10.0, -20.0, 5.0), np.diag([-1.0, 1.0, -1.0]))
    preprocessing = default_preprocessing(32, 4.0)
    grid = ct_input(ct, preprocessing)
    assert grid.shape == (32, 32, 32) and grid.dtype == np.float32
    assert np.all(grid[13:19, 13:19, 13:19] > 90)  # the centre is body
    assert grid[:3].max() < -900 and grid[:, :, :3].max() < -900  # 40 mm away is air
    scaled = window(grid, preprocessing)
    assert scaled.min() >= 0.0 and scaled.max() <= 1.0 and scaled[16, 16, 16] == pytest.approx(0.625)
    # The same anatomy moved in space (another origin) gives the same grid.
    moved = Volume(
        ct.array, ct.spacing, (ct.origin[0] + 40.0, ct.origin[1] - 7.0, ct.origin[2]), ct.direction
    )
    assert np.allclose(ct_input(moved, preprocessing), grid, atol=1e-3)


def test_model_folder_round_trip(tmp_path):
    folder = tiny_model_folder(tmp_path / "model")
    loaded = load_report_model(folder, device="cpu")
    assert loaded.dimension == 16 and len(loaded.hash) == 64
    again = load_report_model(folder, device="cpu")
    image = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded.network.encode_image(image), again.network.encode_image(image))


def test_a_model_of_another_task_or_with_broken_weights_is_refused(tmp_path):
    folder = tiny_model_folder(tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    config["task"] = "segmentation"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="not a report model") as error:
        load_report_model(folder, device="cpu")
    assert "config.json" in str(error.value)
    folder = tiny_model_folder(tmp_path / "model2")
    (folder / "model.safetensors").write_bytes(b"\0" * 64)
    with pytest.raises(InputError, match=r"model\.safetensors"):
        load_report_model(folder, device="cpu")


def test_model_info_reads_a_report_model_folder(tmp_path, capsys):
    from freetumor_core.cli import main

    folder = tiny_model_folder(tmp_path / "model")
    assert main(["model", "info", str(folder), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["task"] == "reports" and info["architecture"]["name"] == "ReportModel"
    network = ReportModel(**info["architecture"]["args"])
    assert info["parameter_count"] == sum(p.numel() for p in network.parameters())
    assert info["preprocessing"]["patch_size_voxels"] == [32, 32, 32]
    assert info["provenance"]["text_encoder"] == "default"
    assert main(["model", "info", str(folder)]) == 0
    text = capsys.readouterr().out
    assert "task:                reports" in text and "ReportModel" in text and "text_encoder:" in text


@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
def test_model_info_on_a_truncated_report_model_exits_2_naming_the_file(tmp_path, capsys, name):
    from freetumor_core.cli import main

    folder = tiny_model_folder(tmp_path / "model")
    path = folder / name
    path.write_bytes(path.read_bytes()[:100])
    assert main(["model", "info", str(folder)]) == 2
    error = capsys.readouterr().err
    assert str(path) in error and "Traceback" not in error


@pytest.mark.slow
def test_the_shipped_demo_report_model_loads_by_name_and_separates_cts():
    """``reports_demo`` ships inside the package: its card states the held-out R@1 and chance, and
    its (centred) CT vectors of two different phantoms are unit length and not the same vector."""
    from freetumor_core.cli.reports import DEFAULT_MODEL
    from freetumor_core.phantom import make_phantom

    model = load_report_model(DEFAULT_MODEL, device="cpu")
    metrics = model.config.metrics
    assert metrics["held_out/match_r1"] > metrics["held_out/chance_r1"] > 0
    assert "synthetic" in (model.folder / "README.md").read_text(encoding="utf-8")
    first, second = (model.embed_ct(make_phantom(seed=seed)[0]) for seed in (0, 1))
    assert np.linalg.norm(first) == pytest.approx(1.0, abs=1e-4)
    assert float(first @ second) < 0.999
