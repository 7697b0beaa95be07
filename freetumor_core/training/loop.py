"""The one trainer loop: any :class:`TrainTask` under one process or ``torchrun``.

The loop owns devices, DDP, data sharding, AMP, gradient accumulation and clipping, optimizers and
learning-rate schedules, checkpoints and resume, metrics (``RUN/metrics.jsonl``, TensorBoard in
``RUN/tensorboard/``), progress, and the final model folder ``RUN/model/``. See ``docs/training.md``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ..device import autocast, resolve_device
from ..errors import InputError
from ..files import write_json, write_text
from ..models import save_model
from ..progress import ProgressLike, make_progress
from .checkpoint import latest_checkpoint, load_checkpoint, random_state, save_checkpoint, set_random_state
from .config import TrainConfig
from .distributed import ResumableSampler, all_mean, barrier, setup_distributed
from .task import TrainTask

__all__ = ["TrainResult", "lr_factor", "train"]


@dataclass
class TrainResult:
    """What a run left: its folder, the model folder, steps done, last logged losses, the validation
    metrics, the step it resumed from, and the trained modules themselves (unwrapped, on the device)."""

    run_dir: Path
    model_dir: Path
    steps: int
    losses: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    resumed_from: int | None = None
    modules: dict[str, nn.Module] = field(default_factory=dict)


def lr_factor(step: int, warmup_steps: int, total_steps: int, schedule: str, min_ratio: float) -> float:
    """The learning rate at ``step`` (0-based) as a fraction of the peak: linear warm-up, then
    ``cosine`` or ``linear`` decay to ``min_ratio``, or ``constant``."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress
    return min_ratio + (1.0 - min_ratio) * shape


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {key: _to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(value, device) for value in batch)
    return batch


@contextlib.contextmanager
def _frozen(modules: list[nn.Module]):
    """Modules that the running stage does not train: no gradients into their parameters."""
    saved = [(parameter, parameter.requires_grad) for module in modules for parameter in module.parameters()]
    for parameter, _ in saved:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in saved:
            parameter.requires_grad_(flag)


def _set_deterministic(device: torch.device) -> None:
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True)


def _read_metrics(path: Path, up_to_step: int) -> list[str]:
    """The complete metrics lines up to ``up_to_step``: a killed run may have logged past its last
    checkpoint, or died mid-line."""
    if not path.is_file():
        return []
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("step", math.inf) <= up_to_step:
            kept.append(line)
    return kept


def train(
    task: TrainTask,
    config: TrainConfig,
    run_dir: str | os.PathLike[str],
    resume: bool = False,
    progress: ProgressLike = None,
) -> TrainResult:
    """Train ``task`` into ``run_dir``; write checkpoints, metrics and finally ``run_dir/model/``.

    Run it as a plain process, or under ``torchrun`` (every rank calls ``train`` with the same
    arguments; rank 0 writes the files).

    Args:
        task: networks, data and step (see :class:`TrainTask`).
        config: steps, batch size, optimizer, schedule, device, ... (see :class:`TrainConfig`).
        run_dir: the run folder (created).
        resume: continue from the last checkpoint in ``run_dir/checkpoints/`` when there is one.
        progress: reporter: ``"train"`` updates with the loss, ``checkpoint`` and ``model`` events.

    Raises:
        InputError: an impossible device or setting, a dataset too small for one step, or a run
            folder that already has checkpoints while ``resume`` is false.
    """
    reporter = make_progress(progress)
    run_dir = Path(run_dir)
    checkpoints = run_dir / "checkpoints"
    device = resolve_device(config.device)
    if config.deterministic:
        _set_deterministic(device)
    rank, world = setup_distributed(device)
    return _train(task, config, run_dir, checkpoints, resume, reporter, device, rank, world)


def _train(task, config, run_dir, checkpoints, resume, reporter, device, rank, world) -> TrainResult:
    last = latest_checkpoint(checkpoints)
    if last is not None and not resume:
        raise InputError("run folder already has checkpoints: resume it or choose a new folder", checkpoints)

    torch.manual_seed(config.seed)  # same initial weights on every rank
    modules = {name: module.to(device) for name, module in task.build_modules().items()}
    stages = task.stages()
    for stage, names in stages.items():
        unknown = [name for name in names if name not in modules]
        if unknown:
            raise ValueError(f"stage {stage!r} trains unknown module(s) {unknown}")
    if task.export not in modules:
        raise ValueError(f"export module {task.export!r} is not among {sorted(modules)}")

    trained = sorted({name for names in stages.values() for name in names})
    wrapped: dict[str, nn.Module] = dict(modules)
    if world > 1:
        for name in trained:
            wrapped[name] = DistributedDataParallel(
                modules[name], device_ids=[device.index] if device.type == "cuda" else None
            )

    dataset = task.dataset()
    sampler = ResumableSampler(dataset, num_replicas=world, rank=rank, seed=config.seed)
    steps_per_epoch = (sampler.num_samples // config.batch_size) // config.accumulation
    if steps_per_epoch < 1:
        raise InputError(
            f"the dataset has {len(dataset)} samples: too few for one step of {world} process(es) x "
            f"batch {config.batch_size} x accumulation {config.accumulation}"
        )
    total_steps = config.steps if config.steps is not None else config.epochs * steps_per_epoch

    optimizers, schedulers = {}, {}
    for stage, names in stages.items():
        parameters = [p for name in names for p in modules[name].parameters() if p.requires_grad]
        optimizers[stage] = task.build_optimizer(stage, parameters, config)
        factor = partial(
            lr_factor,
            warmup_steps=config.warmup_steps,
            total_steps=total_steps,
            schedule=config.schedule,
            min_ratio=config.min_lr_ratio,
        )
        schedulers[stage] = torch.optim.lr_scheduler.LambdaLR(optimizers[stage], factor)

    step = 0
    resumed_from = None
    if last is not None:
        state = load_checkpoint(last, modules)
        step = resumed_from = int(state["step"])
        for stage in stages:
            optimizers[stage].load_state_dict(state["optimizers"][stage])
            schedulers[stage].load_state_dict(state["schedulers"][stage])
        ranks = state.get("random", [])
        if len(ranks) == world:
            set_random_state(ranks[rank])
    else:
        torch.manual_seed(config.seed + 1000003 * rank)  # each rank its own dropout / noise

    metrics_path = run_dir / "metrics.jsonl"
    writer = None
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        # What a killed run left half-built: hidden folders that were never renamed into place.
        for stale in [*checkpoints.glob(".step-*.tmp"), *run_dir.glob(".model.*.tmp")]:
            shutil.rmtree(stale, ignore_errors=True)
        lines = _read_metrics(metrics_path, step)
        write_text(metrics_path, "".join(line + "\n" for line in lines))
        write_json(run_dir / "train_config.json", config.to_dict())
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=step + 1 if step else None)

    def checkpoint(at_step: int) -> None:
        states = [random_state()]
        if world > 1:
            states = [None] * world
            torch.distributed.all_gather_object(states, random_state())
        if rank == 0:
            path = save_checkpoint(
                checkpoints,
                at_step,
                modules,
                {
                    "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
                    "schedulers": {name: sched.state_dict() for name, sched in schedulers.items()},
                    "random": states,
                    "world_size": world,
                },
                keep=config.keep_checkpoints,
            )
            reporter.event("checkpoint", step=at_step, path=str(path))
        barrier()

    def validate() -> dict[str, Any]:
        export = modules[task.export]
        export.eval()
        with torch.no_grad(), autocast(device, config.amp):
            measured = task.validate(export)
        export.train()
        return dict(measured or {})

    for module in modules.values():
        module.train()
    window: dict[str, list[float]] = {}
    window_start = time.perf_counter()
    logged: dict[str, float] = {}
    validated: dict[str, Any] = {}
    use_amp = config.amp and device.type == "cuda"
    used_lr: dict[str, float] = {}
    while step < total_steps:
        epoch = step // steps_per_epoch
        sampler.set_epoch(epoch)
        sampler.start = (step % steps_per_epoch) * config.accumulation * config.batch_size
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        loader = DataLoader(
            dataset,
            batch_size=config.batch_size,
            sampler=sampler,
            num_workers=config.workers,
            drop_last=True,
            pin_memory=device.type == "cuda",
            # Its own generator: creating a loader must not draw from the global random state.
            generator=torch.Generator().manual_seed(config.seed * 7919 + epoch),
        )
        batches = iter(loader)
        for _ in range(steps_per_epoch - step % steps_per_epoch):
            micro = [_to_device(next(batches), device) for _ in range(config.accumulation)]
            for stage, names in stages.items():
                optimizer = optimizers[stage]
                optimizer.zero_grad(set_to_none=True)
                others = [modules[name] for name in modules if name not in names]
                view = {name: (wrapped[name] if name in names else modules[name]) for name in modules}
                with _frozen(others):
                    for index, batch in enumerate(micro):
                        syncing = contextlib.ExitStack()
                        if world > 1 and index < len(micro) - 1:
                            for name in names:
                                syncing.enter_context(wrapped[name].no_sync())
                        with syncing:
                            with autocast(device, use_amp):
                                losses = task.stage_step(stage, view, batch)
                            if "loss" not in losses:
                                raise ValueError(f"{type(task).__name__} step returned no 'loss'")
                            (losses["loss"] / config.accumulation).backward()
                        prefix = "" if len(stages) == 1 else f"{stage}/"
                        for key, value in losses.items():
                            window.setdefault(prefix + key, []).append(float(value.detach()))
                if config.grad_clip_norm is not None:
                    parameters = [p for name in names for p in modules[name].parameters()]
                    torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip_norm)
                used_lr[stage] = optimizer.param_groups[0]["lr"]  # the rate of this step, logged
                optimizer.step()
                schedulers[stage].step()
            step += 1
            done = step >= total_steps
            if step % config.log_every == 0 or done:
                means = all_mean({key: sum(v) / len(v) for key, v in window.items()}, device)
                elapsed = time.perf_counter() - window_start
                steps_in_window = len(next(iter(window.values()))) // config.accumulation if window else 0
                lr = dict(used_lr)
                record = {
                    "step": step,
                    "epoch": epoch,
                    "losses": {key: round(value, 6) for key, value in means.items()},
                    "lr": lr["model"] if list(lr) == ["model"] else lr,
                    "time": round(time.time(), 3),
                    "step_time_s": round(elapsed / max(steps_in_window, 1), 4),
                }
                if rank == 0:
                    with open(metrics_path, "a") as handle:
                        handle.write(json.dumps(record) + "\n")
                    for key, value in means.items():
                        writer.add_scalar(f"loss/{key}", value, step)
                    for stage, value in lr.items():
                        writer.add_scalar(f"lr/{stage}", value, step)
                    writer.flush()
                logged = means
                window, window_start = {}, time.perf_counter()
            shown = {key: round(value, 4) for key, value in logged.items() if key.endswith("loss")}
            reporter.update("train", step, total_steps, **shown)
            if config.validate_every and step % config.validate_every == 0 and not done:
                if rank == 0:
                    validated = validate()
                    reporter.event("validate", step=step, **validated)
                    with open(metrics_path, "a") as handle:
                        line = {"step": step, "epoch": epoch, "validation": validated}
                        handle.write(json.dumps(line) + "\n")
                    for key, value in validated.items():
                        if isinstance(value, (int, float)):
                            writer.add_scalar(f"validation/{key}", value, step)
                barrier()
            if step % config.checkpoint_every == 0 or done:
                checkpoint(step)
            if done:
                break

    model_dir = run_dir / "model"
    if rank == 0:
        validated = validate()
        if validated:
            with open(metrics_path, "a") as handle:
                handle.write(json.dumps({"step": step, "validation": validated}) + "\n")
        model_config = task.model_config()
        from .. import __version__

        provenance = {
            "code_version": f"freetumor-core {__version__}",
            "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "training": {
                "steps": step,
                "epochs": round(step / steps_per_epoch, 3),
                "batch_size": config.batch_size,
                "accumulation": config.accumulation,
                "world_size": world,
                "device": device.type,
                "seed": config.seed,
                "lr": config.lr,
                "optimizer": config.optimizer,
                "schedule": config.schedule,
            },
            **model_config.provenance,
        }
        metrics = {**model_config.metrics, **validated}
        if logged:
            metrics["final_losses"] = {key: round(value, 6) for key, value in logged.items()}
        model_config = replace(model_config, provenance=provenance, metrics=metrics)
        save_model(model_dir, modules[task.export], model_config)
        reporter.event("model", path=str(model_dir), step=step)
        writer.close()
    barrier()
    return TrainResult(
        run_dir=run_dir,
        model_dir=model_dir,
        steps=step,
        losses=logged,
        metrics=validated,
        resumed_from=resumed_from,
        modules=modules,
    )
