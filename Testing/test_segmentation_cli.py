"""``freetumor segment``, ``evaluate`` and ``model import`` through the command line, on real files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from freetumor_core.cli import main
from freetumor_core.labels import LabelMap, read_labels
from freetumor_core.models import SHIPPED_MODELS_DIR, ModelConfig, build_network, load_model, save_model
from freetumor_core.segmentation import preset_config
from freetumor_core.volume import Volume, read_volume, write_volume


def tiny_model(folder: Path, task: str = "segmentation", spacing_mm=(1.5, 1.5, 1.5)) -> Path:
    torch.manual_seed(0)
    config = preset_config("default", task=task)
    config.architecture["args"].update(channels=[4, 8], strides=[2])
    config.preprocessing.patch_size_voxels = [64, 64, 32]
    config.preprocessing.spacing_mm = list(spacing_mm)
    return save_model(folder, build_network(config.architecture), config)


FLIPPED = np.diag([-1.0, 1.0, -1.0])


def write_ct(path: Path, direction=FLIPPED) -> Path:
    rng = np.random.default_rng(0)
    array = rng.normal(40, 30, (20, 36, 30)).astype(np.int16)
    array[:, :3] = -1000
    return write_volume(Volume(array, (0.8, 0.7, 2.5), (5.0, -12.0, 40.0), direction), path)


def test_segment_writes_the_output_set_in_the_cts_geometry(tmp_path, capsys):
    ct_path = write_ct(tmp_path / "ct.nii.gz")
    model = tiny_model(tmp_path / "model")
    out = tmp_path / "out"
    code = main(["segment", str(ct_path), "-o", str(out), "--model", str(model), "--device", "cpu"])
    assert code == 0
    ct = read_volume(ct_path)
    labels = read_labels(out / "labels.nii.gz")
    assert labels.volume.same_grid(ct, tolerance_mm=0) and labels.volume.spacing == ct.spacing
    assert np.array_equal(labels.volume.direction, ct.direction)
    lesions = json.loads((out / "lesions.json").read_text())
    assert isinstance(lesions["lesions"], list) and lesions["settings"]["device"] == "cpu"
    for lesion in lesions["lesions"]:
        assert 0.0 <= lesion["score"] <= 1.0 and lesion["engine"] == "segmenter"
    names = json.loads((out / "labels.json").read_text())["labels"]
    assert set(names.values()) <= {
        "liver",
        "liver_tumor",
        "pancreas",
        "pancreas_tumor",
        "kidney",
        "kidney_tumor",
    }
    assert "lesion(s)" in capsys.readouterr().out


def test_segment_without_a_model_uses_the_shipped_demo_model(tmp_path, capsys):
    ct_path = write_ct(tmp_path / "ct.nii.gz")
    argv = ["--progress", "json", "segment", str(ct_path), "-o", str(tmp_path / "out"), "--no-snapshot"]
    assert main(argv) == 0
    done = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert done["event"] == "done"
    assert Path(done["settings"]["model"]).name == "segmenter_demo"
    assert Path(done["settings"]["model"]).parent == SHIPPED_MODELS_DIR
    assert (tmp_path / "out" / "labels.nii.gz").is_file()


def test_segment_with_an_unknown_model_name_exits_2(tmp_path, capsys):
    ct_path = write_ct(tmp_path / "ct.nii.gz")
    assert main(["segment", str(ct_path), "-o", str(tmp_path / "out"), "--model", "no_such_model"]) == 2
    error = capsys.readouterr().err
    assert "no_such_model" in error and "nor the name of a shipped model (shipped: " in error
    assert "segmenter_demo" in error.split("shipped: ")[1]


def test_segment_refuses_bad_inputs_with_exit_2(tmp_path, capsys):
    ct_path = write_ct(tmp_path / "ct.nii.gz")
    other = tiny_model(tmp_path / "synth", task="synthesis")
    model = tiny_model(tmp_path / "model")
    out = str(tmp_path / "out")
    assert main(["segment", str(ct_path), "-o", out, "--model", str(other), "--device", "cpu"]) == 2
    assert "synth/config.json: this is a 'synthesis' model" in capsys.readouterr().err
    mr = write_volume(Volume(np.full((8, 8, 8), 300, np.int16)), tmp_path / "mr.nii.gz")
    assert main(["segment", str(mr), "-o", out, "--model", str(model)]) == 2
    assert "mr.nii.gz: values 300..300 hold no air or fat" in capsys.readouterr().err
    ct = read_volume(ct_path)
    organs = LabelMap(ct.like(np.ones(ct.shape, np.uint8)), {1: "spleen"})
    organs_path = organs.save(tmp_path / "organs.nii.gz")
    argv = ["segment", str(ct_path), "-o", out, "--model", str(model), "--organs", str(organs_path)]
    assert main(argv) == 2
    assert "organs.nii.gz: the organ labels hold none of the model's organs" in capsys.readouterr().err
    assert not (tmp_path / "out" / "labels.nii.gz").exists()


def save_labels(path: Path, array: np.ndarray, names: dict[int, str], spacing=(1.0, 1.0, 1.0)) -> Path:
    return LabelMap(Volume(array.astype(np.uint8), spacing), names).save(path)


NAMES = {1: "liver", 2: "liver_tumor"}


def cases(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    """Case a: liver + two tumors, one found exactly, one missed. Case b: liver only, one false tumor."""
    shape = (30, 30, 40)
    truth = np.zeros(shape, np.uint8)
    truth[2:28, 2:28, 2:38] = 1
    truth[5:15, 5:15, 5:15] = 2  # 1000 mm3: 12.4 mm, small
    truth[20:25, 20:25, 30:35] = 2  # 125 mm3: 6.2 mm, tiny
    pred = truth.copy()
    pred[20:25, 20:25, 30:35] = 1  # the tiny one missed
    pred[5:15, 5:15, 10:15] = 1  # the found one half found: 500 of 1000
    healthy = np.zeros(shape, np.uint8)
    healthy[2:28, 2:28, 2:38] = 1
    invented = healthy.copy()
    invented[10:16, 10:16, 20:26] = 2  # 216 mm3
    return (
        save_labels(tmp_path / "a_pred.nii.gz", pred, NAMES),
        save_labels(tmp_path / "a_gt.nii.gz", truth, NAMES),
        save_labels(tmp_path / "b_pred.nii.gz", invented, NAMES),
        save_labels(tmp_path / "b_gt.nii.gz", healthy, NAMES),
    )


def test_evaluate_equals_hand_computed_dice_and_counts(tmp_path, capsys):
    a_pred, a_gt, _, _ = cases(tmp_path)
    report_path, csv_path = tmp_path / "report.json", tmp_path / "report.csv"
    argv = ["evaluate", str(a_pred), str(a_gt), "--json", str(report_path), "--csv", str(csv_path)]
    assert main(argv) == 0
    report = json.loads(report_path.read_text())
    case = report["cases"][0]
    # tumor: truth 1125 voxels, prediction 500, all inside: Dice 1000 / 1625
    assert case["structures"]["tumor"]["dice"] == pytest.approx(1000 / 1625)
    liver_truth = 26 * 26 * 36 - 1125
    liver_pred = liver_truth + 125 + 500
    assert case["structures"]["liver"]["dice"] == pytest.approx(2 * liver_truth / (liver_truth + liver_pred))
    lesions = case["lesions"]
    assert (lesions["tp"], lesions["fp"], lesions["fn"]) == (1, 0, 1)
    assert lesions["mean_lesion_dice"] == pytest.approx(1000 / 1500)
    assert lesions["bins"]["tiny"]["sensitivity"] == 0.0 and lesions["bins"]["small"]["sensitivity"] == 1.0
    with csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["case"] for row in rows] == [str(a_pred), "all"]
    assert float(rows[0]["tumor_dice"]) == pytest.approx(1000 / 1625, abs=1e-4)
    assert rows[0]["precision"] == "1.0000" and rows[0]["sensitivity"] == "0.5000"
    table = capsys.readouterr().out
    assert "tumor_dice" in table and "0.6154" in table


def test_evaluate_over_a_datalist(tmp_path, capsys):
    a_pred, a_gt, b_pred, b_gt = cases(tmp_path)
    datalist = tmp_path / "list.json"
    entries = [
        {"pred": a_pred.name, "label": a_gt.name, "case": "a"},
        {"pred": str(b_pred), "label": str(b_gt)},
    ]
    datalist.write_text(json.dumps({"testing": entries}))
    assert main(["--progress", "json", "evaluate", "--datalist", str(datalist)]) == 0
    done = [json.loads(line) for line in capsys.readouterr().out.splitlines()][-1]
    summary = done["summary"]
    assert summary["cases"] == 2
    assert (summary["lesions"]["tp"], summary["lesions"]["fp"], summary["lesions"]["fn"]) == (1, 1, 1)
    assert summary["patient_level"] == {
        "positives": 1,
        "negatives": 1,
        "sensitivity": 1.0,
        "specificity": 0.0,
    }
    # case b: no tumor in the truth, one in the prediction: tumor Dice 0
    assert summary["dice"]["tumor"] == pytest.approx((1000 / 1625 + 0.0) / 2)


def test_evaluate_bad_inputs_exit_2_naming_the_file(tmp_path, capsys):
    a_pred, a_gt, _, _ = cases(tmp_path)
    assert main(["evaluate", str(a_pred), str(tmp_path / "missing.nii.gz")]) == 2
    assert "missing.nii.gz" in capsys.readouterr().err
    unnamed = tmp_path / "unnamed.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(a_gt)), str(unnamed))
    assert main(["evaluate", str(a_pred), str(unnamed)]) == 2
    assert "unnamed.nii.gz: label map has no label names" in capsys.readouterr().err
    names = '{"1": "liver", "2": "liver_tumor"}'
    assert main(["evaluate", str(a_pred), str(unnamed), "--gt-names", names]) == 0
    capsys.readouterr()
    datalist = tmp_path / "list.json"
    datalist.write_text(json.dumps([{"label": str(a_gt)}]))
    assert main(["evaluate", "--datalist", str(datalist)]) == 2
    assert "list.json: entry 0: 'pred' must be a file path" in capsys.readouterr().err
    assert main(["evaluate", str(a_pred)]) == 2
    assert "give PRED and GT" in capsys.readouterr().err


SMALL_SWIN = {"spatial_dims": 3, "in_channels": 1, "out_channels": 7, "feature_size": 12, "use_v2": True}


@pytest.mark.parametrize("kind", ["safetensors", "torch", "wrapped"])
def test_model_import_round_trip(tmp_path, kind):
    torch.manual_seed(1)
    network = build_network({"name": "SwinUNETR", "args": SMALL_SWIN})
    state = network.state_dict()
    if kind == "safetensors":
        from safetensors.torch import save_file

        source = tmp_path / "swin.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(source))
    elif kind == "torch":
        source = tmp_path / "swin.pt"
        torch.save(state, source)
    else:  # a training checkpoint of a DDP-wrapped network
        source = tmp_path / "checkpoint.pth"
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, source)
    out = tmp_path / "imported"
    argv = ["model", "import", str(source), "-o", str(out), "--args", json.dumps(SMALL_SWIN)]
    assert main([*argv, "--architecture", "SwinUNETR"]) == 0
    loaded = load_model(out, device="cpu", task="segmentation")
    assert (
        loaded.config.label_names[2] == "liver_tumor" and loaded.config.preprocessing.spacing_mm == [1.5] * 3
    )
    assert loaded.config.provenance["imported_from"] == source.name
    for key, value in loaded.network.state_dict().items():
        assert torch.equal(value, state[key])


def test_model_import_refuses_tensors_that_do_not_fit(tmp_path, capsys):
    network = build_network({"name": "SwinUNETR", "args": SMALL_SWIN})
    source = tmp_path / "fs12.pt"
    torch.save(network.state_dict(), source)
    # SwinUNETR without --args is the fs48 preset: these fs12 tensors do not fit it.
    assert main(["model", "import", str(source), "-o", str(tmp_path / "m")]) == 2
    error = capsys.readouterr().err
    assert "fs12.pt: tensors do not fit the SwinUNETR architecture" in error and "wrong shape" in error
    assert not (tmp_path / "m").exists()


def test_model_import_refuses_pickled_objects(tmp_path, capsys):
    source = tmp_path / "evil.pt"
    torch.save({"model": Path("/")}, source)  # not tensors: weights_only refuses the object
    assert main(["model", "import", str(source), "-o", str(tmp_path / "m")]) == 2
    assert "evil.pt: not a torch state dict readable with weights_only=True" in capsys.readouterr().err


def test_swinunetr_preset_is_freetumors_segmenter():
    config = preset_config("swinunetr_v2_fs48")
    network = build_network(config.architecture)
    assert sum(p.numel() for p in network.parameters()) == 72_762_313  # 72.8 M
    assert config.label_names == {
        0: "background", 1: "liver", 2: "liver_tumor", 3: "pancreas",
        4: "pancreas_tumor", 5: "kidney", 6: "kidney_tumor",
    }  # fmt: skip
    assert isinstance(ModelConfig.from_dict(config.to_dict()), ModelConfig)


def test_segment_a_real_ct_keeps_tumors_inside_the_given_organs(shared_data, tmp_path, capsys):
    folder = shared_data / "totalseg_example"
    model = tiny_model(tmp_path / "model", spacing_mm=(2.5, 2.5, 2.5))
    out = tmp_path / "out"
    argv = ["--progress", "json", "segment", str(folder / "example_ct_sm.nii.gz"), "-o", str(out)]
    argv += ["--model", str(model), "--organs", str(folder / "example_seg.nii.gz"), "--min-tumor-ml", "0"]
    assert main([*argv, "--no-snapshot"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    windows = [e for e in events if e["event"] == "progress" and e["task"] == "segment"]
    assert windows[-1]["done"] == windows[-1]["total"] > 0
    assert events[-1]["event"] == "done" and set(events[-1]["outputs"]) == {"labels", "lesions"}
    ct = read_volume(folder / "example_ct_sm.nii.gz")
    labels = read_labels(out / "labels.nii.gz")
    assert labels.volume.same_grid(ct, tolerance_mm=0)
    organs = read_labels(folder / "example_seg.nii.gz")
    for tumor_id, host in ((2, "liver"), (4, "pancreas"), (6, "kidney")):
        tumor = labels.array == tumor_id
        assert not (tumor & ~np.isin(organs.array, organs.ids_for(host))).any()
    assert sorted(p.name for p in out.iterdir()) == ["labels.json", "labels.nii.gz", "lesions.json"]


def test_model_import_refuses_corrupt_and_missing_files(tmp_path, capsys):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    assert main(["model", "import", str(broken), "-o", str(tmp_path / "m")]) == 2
    assert "broken.safetensors: corrupt or truncated safetensors file" in capsys.readouterr().err
    assert main(["model", "import", str(tmp_path / "absent.pt"), "-o", str(tmp_path / "m")]) == 2
    assert "absent.pt: state dict not found" in capsys.readouterr().err
    assert main(["model", "import", str(broken), "-o", str(tmp_path / "m"), "--architecture", "Nope"]) == 2
    assert "no preset for the network 'Nope'" in capsys.readouterr().err
