"""What a trainer supplies to the shared loop: its networks, its data and its step.

A one-network task (segmentation, report encoder) subclasses :class:`TrainTask` and writes
``build_model``, ``dataset``, ``step`` and ``model_config`` (``validate`` is optional). A task with
several networks and optimizers (a GAN: generator and discriminator) also overrides
``build_modules``, ``stages`` and ``stage_step``: each stage names the modules its optimizer trains,
the loop runs the stages in order on every batch, and during a stage the other modules are frozen
(and, under DDP, passed unwrapped), so a stage's loss only moves its own parameters.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ..models import ModelConfig
from .config import TrainConfig

__all__ = ["TrainTask", "default_optimizer"]


def default_optimizer(parameters: Iterable[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer ``config.optimizer`` names, at ``config.lr`` with ``config.weight_decay``."""
    parameters = list(parameters)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(parameters, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)


class TrainTask:
    """The base of every trainer's task. Override what your task needs.

    Attributes:
        export: the module written as ``RUN/model/`` at the end (``"model"``; a GAN: ``"generator"``).
    """

    export: str = "model"

    # -- networks ---------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        """The network of a one-network task (build it from ``model_config().architecture``)."""
        raise NotImplementedError(f"{type(self).__name__} must define build_model or build_modules")

    def build_modules(self) -> dict[str, nn.Module]:
        """All networks by name; the default is ``{"model": build_model()}``."""
        return {"model": self.build_model()}

    def stages(self) -> dict[str, list[str]]:
        """Optimizer (stage) name -> the modules it trains, in the order they run on each batch.

        The default is one optimizer for the one network: ``{"model": ["model"]}``.
        """
        return {"model": [self.export]}

    def build_optimizer(
        self, stage: str, parameters: Iterable[nn.Parameter], config: TrainConfig
    ) -> torch.optim.Optimizer:
        """The optimizer of ``stage``; the default is :func:`default_optimizer`."""
        return default_optimizer(parameters, config)

    # -- data and step ----------------------------------------------------------------------------
    def dataset(self) -> torch.utils.data.Dataset:
        """A map-style dataset; the loop shards it by rank. For a resume that equals an uninterrupted
        run, an item should depend only on its index and the epoch (``set_epoch(epoch)`` is called on
        the dataset when it has one), not on a random state carried between items."""
        raise NotImplementedError

    def step(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        """Forward a batch (already on the device, under autocast) and return the losses.

        Returns:
            losses by name; ``"loss"`` is the one the loop back-propagates, the others are logged.
        """
        raise NotImplementedError

    def stage_step(self, stage: str, modules: dict[str, nn.Module], batch: Any) -> dict[str, torch.Tensor]:
        """The losses of one stage; the default calls :meth:`step` with the exported module."""
        return self.step(modules[self.export], batch)

    # -- results ----------------------------------------------------------------------------------
    def validate(self, model: nn.Module) -> dict[str, float] | None:
        """Measured metrics of the exported module (in eval mode, no grad) on rank 0; ``None``: none."""
        return None

    def model_config(self) -> ModelConfig:
        """The config written with the exported module (architecture, preprocessing, labels,
        ``provenance["training_data"]``); the loop adds code version, date, run settings and metrics."""
        raise NotImplementedError
