"""Training the adversarial synthesizer on the real data: losses fall, checkpoints round-trip and
resume continues the step count, two gloo ranks stay identical, and the bench's rows."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from freetumor_core.adversarial import SynthesisSettings
from freetumor_core.adversarial.engine import load_synthesizer
from freetumor_core.adversarial.training import VALIDATION_EPOCH, SynthesizerTask
from freetumor_core.training import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
# 3 mm crops keep the real cases small enough for tests; the default is 1.5 mm.
SETTINGS = SynthesisSettings(grid=24, min_spacing_mm=3.0)


@pytest.fixture(scope="module")
def datalist(shared_data, tmp_path_factory) -> Path:
    """Labelled: the DeepLesion mass in HU; unlabelled: the TotalSegmentator example's organs."""
    deeplesion = shared_data / "deeplesion_medsam2"
    example = shared_data / "totalseg_example"
    path = tmp_path_factory.mktemp("datalist") / "datalist.json"
    entries = [
        {"image": str(deeplesion / "000015_01_01_103-115_ct_hu.nii.gz"),
         "label": str(deeplesion / "000015_01_01_103-115_lesion_mask_DERIVED.nii.gz"),
         "tumor_label": 1, "organ": "abdomen", "label_names": {"1": "lesion"}},
        {"image": str(example / "example_ct.nii.gz"),
         "label": str(example / "example_seg_fast_force_split.nii.gz")},
    ]  # fmt: skip
    path.write_text(json.dumps({"training": entries}))
    return path


def _losses(task: SynthesizerTask, modules) -> dict[str, float]:
    items = [task.data.sample(index, VALIDATION_EPOCH) for index in range(4)]
    batch = {key: torch.stack([item[key] for item in items]) for key in items[0]}
    with torch.no_grad():
        d = task.stage_step("discriminator", modules, batch)
        g = task.stage_step("generator", modules, batch)
    return {"discriminator": float(d["loss"]), "segmentation": float(g["segmentation"])}


@pytest.mark.slow
def test_a_few_steps_on_real_data_lower_the_losses(datalist, tiny_segmenter, tmp_path):
    task = SynthesizerTask(datalist, segmenter=tiny_segmenter, settings=SETTINGS, samples=8)
    config = TrainConfig(steps=16, batch_size=2, lr=2e-3, device="cpu", checkpoint_every=16, log_every=4)
    torch.manual_seed(config.seed)  # the loop's initial weights
    before = _losses(task, task.build_modules())
    result = train(task, config, tmp_path / "run")
    after = _losses(task, result.modules)
    assert after["discriminator"] < before["discriminator"], (before, after)
    assert after["segmentation"] < before["segmentation"], (before, after)
    card = (result.model_dir / "README.md").read_text()
    assert "000015_01_01_103-115_ct_hu.nii.gz" in card and "example_ct.nii.gz" in card
    synthesizer = load_synthesizer(result.model_dir, device="cpu")
    assert synthesizer.settings == SETTINGS


@pytest.mark.slow
def test_checkpoints_round_trip_and_resume_continues_the_step_count(datalist, tmp_path):
    run = tmp_path / "run"
    task = SynthesizerTask(datalist, settings=SETTINGS, samples=4)
    first = train(task, TrainConfig(steps=2, batch_size=2, device="cpu", checkpoint_every=2), run)
    assert first.steps == 2 and first.resumed_from is None
    saved = load_file(str(run / "checkpoints" / "step-00000002" / "modules.safetensors"))
    for name, value in first.modules["generator"].state_dict().items():
        assert torch.equal(saved[f"generator.{name}"], value), name
    resumed = train(
        task, TrainConfig(steps=4, batch_size=2, device="cpu", checkpoint_every=2), run, resume=True
    )
    assert resumed.resumed_from == 2 and resumed.steps == 4
    steps = [json.loads(line).get("step") for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 4
    load_synthesizer(resumed.model_dir, device="cpu")


WORKER = """
import sys
from pathlib import Path
import torch
from safetensors.torch import save_file
from freetumor_core.adversarial import SynthesisSettings
from freetumor_core.adversarial.training import SynthesizerTask
from freetumor_core.training import TrainConfig, train

run, datalist = Path(sys.argv[1]), sys.argv[2]
task = SynthesizerTask(datalist, settings=SynthesisSettings(grid=24, min_spacing_mm=3.0), samples=8)
result = train(task, TrainConfig(steps=2, batch_size=2, device="cpu", checkpoint_every=2), run)
rank = torch.distributed.get_rank()
tensors = {f"{name}.{key}": value.detach().clone() for name, module in result.modules.items()
           for key, value in module.state_dict().items()}
save_file(tensors, str(run / f"rank{rank}.safetensors"))
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_ranks_keep_both_networks_identical(datalist, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER))
    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
         str(script), str(run), str(datalist)],
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (load_file(str(run / f"rank{rank}.safetensors")) for rank in (0, 1))
    assert {name.split(".")[0] for name in rank0} == {"generator", "discriminator"}
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["provenance"]["training"]["world_size"] == 2 and config["task"] == "synthesis"


@pytest.mark.slow
def test_bench_rows(tiny_segmenter):
    from freetumor_core.bench import run_suite

    payload = run_suite("adversarial", {"qc": str(tiny_segmenter), "qc_samples": "2"}, repeat=1)
    rows = {row["name"]: row for row in payload["results"]}
    for size in ("tiny", "small", "medium", "large"):
        assert rows[f"cpu_per_tumor/{size}"]["unit"] == "s" and rows[f"cpu_per_tumor/{size}"]["median"] > 0
    assert 0.0 <= rows["qc_acceptance"]["median"] <= 1.0 and rows["qc_acceptance"]["unit"] == "ratio"
    assert rows["train_step"]["median"] > 0
