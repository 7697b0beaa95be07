"""The shared trainer loop on real processes: loss falls, SIGKILL + resume equals an uninterrupted run,
two gloo ranks stay identical, a two-optimizer (GAN-shaped) task fits, and the device rules."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from freetumor_core.cli import build_parser
from freetumor_core.cli.train import train_config_from_args
from freetumor_core.device import autocast, resolve_device
from freetumor_core.errors import InputError
from freetumor_core.models import ModelConfig, build_network, load_model
from freetumor_core.training import TrainConfig, TrainTask, lr_factor, train
from freetumor_core.training.checkpoint import list_checkpoints
from freetumor_core.training.distributed import ResumableSampler
from freetumor_core.training.toy import ToyLiverTask

REPO = Path(__file__).resolve().parents[1]


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# -- device -------------------------------------------------------------------------------------


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InputError, match="unknown device 'gpu'"):
        resolve_device("gpu")
    with pytest.raises(InputError, match="CUDA"):
        resolve_device("cuda:99")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            resolve_device("cuda")


def test_autocast_is_a_no_op_on_the_cpu():
    layer = torch.nn.Linear(4, 4)
    with autocast(torch.device("cpu")):
        assert layer(torch.ones(1, 4)).dtype == torch.float32


# -- settings, schedule, sharding ---------------------------------------------------------------


def test_train_config_round_trip_and_errors(tmp_path):
    config = TrainConfig(steps=5, lr=3e-4, grad_clip_norm=1.0, device="cpu")
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"epochs": 2, "colour": "red"}))
    with pytest.raises(InputError) as caught:
        TrainConfig.read(path)
    assert caught.value.path == str(path) and "unknown trainer setting(s): colour" in str(caught.value)
    with pytest.raises(InputError, match="exactly one of steps and epochs"):
        TrainConfig(steps=5, epochs=2)
    with pytest.raises(InputError, match="accumulation must be a positive integer"):
        TrainConfig(steps=5, accumulation=0)


def test_cli_flags_override_the_config_file(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"epochs": 3, "lr": 0.5, "batch_size": 8}))
    args = build_parser().parse_args(["train", "toy", "-o", "run", "--config", str(path), "--lr", "0.25"])
    config = train_config_from_args(args)
    # epochs from the file replace the trainer's default steps; the flag beats the file's lr
    assert (config.steps, config.epochs, config.lr, config.batch_size) == (None, 3, 0.25, 8)
    args = build_parser().parse_args(["train", "toy", "-o", "run", "--no-amp", "--grad-clip-norm", "2"])
    config = train_config_from_args(args)
    assert (config.steps, config.amp, config.grad_clip_norm) == (40, False, 2.0)


def test_lr_warmup_then_cosine():
    factors = [lr_factor(step, 4, 20, "cosine", 0.1) for step in range(20)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in itertools.pairwise(factors[3:]))
    assert lr_factor(20, 4, 20, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(10, 0, 20, "constant", 0.0) == 1.0


def test_sampler_shards_by_rank_and_resumes_mid_epoch():
    data = list(range(10))
    shards = [ResumableSampler(data, num_replicas=2, rank=rank, seed=3) for rank in (0, 1)]
    for shard in shards:
        shard.set_epoch(1)
    first, second = (list(shard) for shard in shards)
    assert len(first) == len(second) == 5 and not set(first) & set(second)
    assert sorted(first + second) == data
    shards[0].start = 2
    assert list(shards[0]) == first[2:] and len(shards[0]) == 3
    shards[1].set_epoch(2)
    assert list(shards[1]) != second


# -- the toy task -------------------------------------------------------------------------------


@pytest.mark.slow
def test_toy_loss_falls_and_the_run_folder_is_complete(tmp_path):
    run = tmp_path / "run"
    config = TrainConfig(steps=40, lr=1e-2, batch_size=4, log_every=1, checkpoint_every=15, device="cpu")
    result = train(ToyLiverTask(samples=32), config, run)
    losses = [line["losses"]["loss"] for line in read_metrics(run) if "losses" in line]
    assert len(losses) == 40
    first, last = sum(losses[:5]) / 5, sum(losses[-10:]) / 10
    assert last < 0.85 * first, (first, last)
    lines = read_metrics(run)
    assert [line["step"] for line in lines[:40]] == list(range(1, 41))
    assert {"step", "epoch", "losses", "lr", "time"} <= set(lines[0])
    assert lines[0]["lr"] == pytest.approx(1e-2 * lr_factor(0, 0, 40, "cosine", 0.0))
    assert [step for step, _ in list_checkpoints(run / "checkpoints")] == [30, 40]  # keep the last 2
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    _, model_config = load_model(result.model_dir, task="segmentation", device="cpu")
    assert model_config.metrics["liver_dice"] == result.metrics["liver_dice"] > 0.5
    assert model_config.provenance["training"]["steps"] == 40
    assert "phantom" in model_config.provenance["training_data"]
    with pytest.raises(InputError, match="already has checkpoints"):
        train(ToyLiverTask(samples=32), config, run)


def toy_command(run: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "freetumor_core",
        "train",
        "toy",
        "-o",
        str(run),
        "--samples",
        "16",
        "--steps",
        "24",
        "--checkpoint-every",
        "4",
        "--device",
        "cpu",
        "--deterministic",
        *extra,
    ]


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    reference = subprocess.run(toy_command(whole), env=environment(), capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr

    process = subprocess.Popen(
        toy_command(broken, "--progress", "json"), env=environment(), stdout=subprocess.PIPE, text=True
    )
    for line in process.stdout:
        if json.loads(line).get("event") == "checkpoint":
            process.send_signal(signal.SIGKILL)
            break
    assert process.wait(timeout=60) == -signal.SIGKILL
    process.stdout.close()
    assert not (broken / "model").exists()
    done_before = [step for step, _ in list_checkpoints(broken / "checkpoints")]
    assert done_before and done_before[-1] < 24

    resumed = subprocess.run(
        toy_command(broken, "--resume", "--progress", "json"),
        env=environment(),
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    done = [json.loads(line) for line in resumed.stdout.splitlines() if '"done"' in line][-1]
    assert done["resumed_from"] == done_before[-1] and done["steps"] == 24

    ours = load_file(str(broken / "model" / "model.safetensors"))
    theirs = load_file(str(whole / "model" / "model.safetensors"))
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name
    assert not list((broken / "checkpoints").glob(".*"))  # nothing half-written left behind
    steps = [line["step"] for line in read_metrics(broken) if "losses" in line]
    assert steps == list(range(1, 25))  # each step logged once, none lost or repeated by the kill
    assert [line.get("losses") for line in read_metrics(broken)] == [
        line.get("losses") for line in read_metrics(whole)
    ]


WORKER = """
import json, os, sys
import torch
from safetensors.torch import save_file
from freetumor_core.training import TrainConfig, train
from freetumor_core.training.toy import ToyLiverTask

sys.path.insert(0, sys.argv[2])
from test_training import TinyGan

run = sys.argv[1]
config = TrainConfig(steps=6, batch_size=2, checkpoint_every=3, log_every=1, device="cpu")
result = train(ToyLiverTask(channels=(4, 8), samples=16), config, run, progress="json")
gan = train(TinyGan(), TrainConfig(steps=4, batch_size=2, device="cpu"), run + "_gan")
for folder, modules in ((run, result.modules), (run + "_gan", gan.modules)):
    state = {
        f"{name}.{key}": value.contiguous()
        for name, module in modules.items()
        for key, value in module.state_dict().items()
    }
    save_file(state, f"{folder}/rank{os.environ['RANK']}.safetensors")
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_ranks_stay_identical_and_write_the_model_once(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER))
    run = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            "1",
            "--nproc_per_node",
            "2",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(free_port()),
            str(script),
            str(run),
            str(Path(__file__).parent),
        ],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert {event.get("rank") for event in events if event["event"] == "progress"} == {0, 1}
    model_events = [event for event in events if event["event"] == "model"]
    assert len(model_events) == 1 and model_events[0]["rank"] == 0
    rank0, rank1 = (load_file(str(run / f"rank{rank}.safetensors")) for rank in (0, 1))
    saved = load_file(str(run / "model" / "model.safetensors"))
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
        assert torch.equal(rank0[name], saved[name.removeprefix("model.")]), name
    # The two-optimizer task under DDP, trained next in the same processes (the process group is
    # joined once): both networks identical across ranks too.
    gan0, gan1 = (load_file(str(tmp_path / "run_gan" / f"rank{rank}.safetensors")) for rank in (0, 1))
    assert {name.split(".")[0] for name in gan0} == {"generator", "discriminator"}
    for name in gan0:
        assert torch.equal(gan0[name], gan1[name]), name
    _, config = load_model(run / "model", device="cpu")
    assert config.provenance["training"]["world_size"] == 2
    assert not [path for path in run.iterdir() if path.name.startswith(".")]


# -- a task with two networks and two optimizers ------------------------------------------------


class Pairs(torch.utils.data.Dataset):
    """8-vectors from a fixed distribution; an item depends only on its index."""

    def __len__(self) -> int:
        return 16

    def __getitem__(self, index: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(index)
        return torch.randn(8, generator=generator) * 0.5 + 2.0


class TinyGan(TrainTask):
    """Generator and discriminator, each with its own optimizer; the generator is exported."""

    export = "generator"

    def __init__(self, fail_at_call: int | None = None) -> None:
        self.generator_args = {"in_channels": 4, "out_channels": 8, "hidden_channels": [16]}
        self.frozen_seen: dict[str, bool] = {}
        self.calls, self.fail_at_call = 0, fail_at_call

    def build_modules(self):
        return {
            "generator": build_network({"name": "FullyConnectedNet", "args": self.generator_args}),
            "discriminator": build_network(
                {
                    "name": "FullyConnectedNet",
                    "args": {"in_channels": 8, "out_channels": 1, "hidden_channels": [16]},
                }
            ),
        }

    def stages(self):
        return {"discriminator": ["discriminator"], "generator": ["generator"]}

    def dataset(self):
        return Pairs()

    def stage_step(self, stage, modules, batch):
        self.calls += 1
        if self.calls == self.fail_at_call:
            raise RuntimeError("the machine went away")
        other = "generator" if stage == "discriminator" else "discriminator"
        self.frozen_seen[stage] = not any(p.requires_grad for p in modules[other].parameters())
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        noise = torch.randn(batch.shape[0], 4)
        fake = modules["generator"](noise)
        if stage == "discriminator":
            real_logit, fake_logit = modules["discriminator"](batch), modules["discriminator"](fake.detach())
            loss = bce(real_logit, torch.ones_like(real_logit)) + bce(
                fake_logit, torch.zeros_like(fake_logit)
            )
            return {"loss": loss}
        fake_logit = modules["discriminator"](fake)
        return {"loss": bce(fake_logit, torch.ones_like(fake_logit))}

    def model_config(self):
        return ModelConfig(
            task="synthesis", architecture={"name": "FullyConnectedNet", "args": self.generator_args}
        )


def test_two_optimizer_task_trains_both_and_resumes_exactly(tmp_path):
    config = TrainConfig(steps=6, batch_size=4, checkpoint_every=2, log_every=1, lr=1e-2, device="cpu")
    task = TinyGan()
    torch.manual_seed(config.seed)
    initial = {name: module.state_dict() for name, module in task.build_modules().items()}
    whole = train(task, config, tmp_path / "whole")
    assert task.frozen_seen == {"discriminator": True, "generator": True}
    for name, module in whole.modules.items():
        changed = [not torch.equal(value, initial[name][key]) for key, value in module.state_dict().items()]
        assert all(changed), name
    assert set(read_metrics(tmp_path / "whole")[-1]["losses"]) == {"discriminator/loss", "generator/loss"}
    assert set(read_metrics(tmp_path / "whole")[-1]["lr"]) == {"discriminator", "generator"}
    # The exported folder holds the generator only.
    _, model_config = load_model(whole.model_dir, task="synthesis", device="cpu")
    assert model_config.architecture["args"]["in_channels"] == 4

    # A run that fails in step 5 (two stage calls per step), resumed from its step-4 checkpoint,
    # ends with the same weights as the uninterrupted run.
    part = tmp_path / "part"
    with pytest.raises(RuntimeError, match="went away"):
        train(TinyGan(fail_at_call=9), config, part)
    assert [step for step, _ in list_checkpoints(part / "checkpoints")] == [2, 4]
    resumed = train(TinyGan(), config, part, resume=True)
    assert resumed.resumed_from == 4
    for name, module in resumed.modules.items():
        theirs = whole.modules[name].state_dict()
        for key, value in module.state_dict().items():
            assert torch.equal(value, theirs[key]), (name, key)


# -- CUDA ---------------------------------------------------------------------------------------


class RecordsDtype(ToyLiverTask):
    def step(self, model, batch):
        logits = model(batch["image"])
        self.dtype = logits.dtype
        return {"loss": self.loss(logits.float(), batch["label"])}


@pytest.mark.gpu
def test_bf16_autocast_step_on_cuda(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    task = RecordsDtype(channels=(4, 8), samples=8)
    result = train(task, TrainConfig(steps=3, batch_size=2, device="cuda", amp=True), tmp_path / "run")
    assert task.dtype == torch.bfloat16
    assert next(result.modules["model"].parameters()).is_cuda
    assert torch.isfinite(torch.tensor(result.losses["loss"]))
    network, _ = load_model(result.model_dir, device="cuda")
    assert next(network.parameters()).is_cuda
