"""The trainer loop's settings: one dataclass with a JSON round trip (``--config FILE`` reads one)."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError

__all__ = ["OPTIMIZERS", "SCHEDULES", "TrainConfig"]

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("cosine", "linear", "constant")


@dataclass
class TrainConfig:
    """How long and how to train; the task decides what.

    Attributes:
        steps: optimizer steps to train; or give ``epochs`` instead (passes over the data).
        epochs: passes over the data, when ``steps`` is ``None``.
        batch_size: samples per process per micro-batch.
        accumulation: micro-batches whose gradients are summed into one optimizer step.
        lr: peak learning rate, reached after ``warmup_steps``.
        warmup_steps: linear warm-up from 0 to ``lr``.
        schedule: after warm-up: ``cosine`` (to ``min_lr_ratio * lr``), ``linear`` or ``constant``.
        min_lr_ratio: the learning rate at the end, as a fraction of ``lr``.
        optimizer: ``adamw`` (default), ``adam`` or ``sgd`` (momentum 0.9).
        weight_decay: decoupled weight decay (AdamW) or L2 (others).
        grad_clip_norm: clip the gradient norm of each optimizer's parameters; ``None``: no clipping.
        checkpoint_every: write a checkpoint every this many steps (and at the end).
        keep_checkpoints: keep the last this many checkpoints.
        log_every: write a metrics line every this many steps (and at the end).
        validate_every: call the task's ``validate`` every this many steps; ``None``: only at the end.
        seed: seeds the weights, the data order (per epoch) and each rank's random state.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        amp: bf16 autocast on CUDA (ignored on the CPU).
        workers: DataLoader worker processes.
        deterministic: ``torch.use_deterministic_algorithms(True)`` (bit-exact reruns and resumes).
    """

    steps: int | None = None
    epochs: int | None = None
    batch_size: int = 2
    accumulation: int = 1
    lr: float = 1e-3
    warmup_steps: int = 0
    schedule: str = "cosine"
    min_lr_ratio: float = 0.0
    optimizer: str = "adamw"
    weight_decay: float = 0.01
    grad_clip_norm: float | None = None
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 10
    validate_every: int | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    workers: int = 0
    deterministic: bool = False

    def __post_init__(self) -> None:
        self.check()

    def check(self, path: Any = None) -> None:
        """Raise :class:`InputError` (naming ``path``) for an impossible setting."""
        if (self.steps is None) == (self.epochs is None):
            raise InputError("give exactly one of steps and epochs", path)
        positive = ["batch_size", "accumulation", "checkpoint_every", "keep_checkpoints", "log_every"]
        positive += [
            name for name in ("steps", "epochs", "validate_every") if getattr(self, name) is not None
        ]
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}", path)
        if not self.lr > 0 or self.warmup_steps < 0 or self.workers < 0 or self.weight_decay < 0:
            raise InputError("lr must be positive; warmup_steps, workers and weight_decay non-negative", path)
        if self.optimizer not in OPTIMIZERS:
            raise InputError(
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}", path
            )
        if self.schedule not in SCHEDULES:
            raise InputError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}", path)
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise InputError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}", path)
        if self.grad_clip_norm is not None and not self.grad_clip_norm > 0:
            raise InputError(f"grad_clip_norm must be positive, got {self.grad_clip_norm!r}", path)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, path: Any = None) -> TrainConfig:
        """Read a dict written by :meth:`to_dict`; raises :class:`InputError` naming ``path``."""
        if not isinstance(data, dict):
            raise InputError("trainer config must be a JSON object", path)
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise InputError(f"unknown trainer setting(s): {', '.join(sorted(unknown))}", path)
        try:
            return cls(**data)
        except InputError as error:
            raise InputError(error.problem, path) from None
        except TypeError as error:
            raise InputError(str(error), path) from None

    @classmethod
    def read_settings(cls, path: str | os.PathLike[str]) -> dict[str, Any]:
        """The settings a JSON file sets (any subset of the fields), not yet combined into a config.

        Raises:
            InputError: naming the file: missing, not JSON, not an object, or an unknown setting.
        """
        path = Path(path)
        if not path.is_file():
            raise InputError("file not found", path)
        try:
            data = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise InputError(f"not valid JSON: {error}", path) from None
        if not isinstance(data, dict):
            raise InputError("trainer config must be a JSON object", path)
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise InputError(f"unknown trainer setting(s): {', '.join(sorted(unknown))}", path)
        return data

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> TrainConfig:
        """A config from a JSON file of settings (the fields it lacks keep their defaults)."""
        return cls.from_dict(cls.read_settings(path), path)
