"""A model on disk is a folder: ``config.json``, ``model.safetensors`` and a ``README.md`` card.

Saving builds the folder in a hidden temporary folder beside the target and renames it into place,
so a model folder is complete or absent. Loading never unpickles anything: the weights are
safetensors, checked against the SHA-256 in the config and against the architecture's own tensor
names and shapes. Every problem is an :class:`InputError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from .card import model_card
from .config import ModelConfig

__all__ = [
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "LoadedModel",
    "build_network",
    "describe_model",
    "load_model",
    "read_model_config",
    "save_model",
]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"


@dataclass
class LoadedModel:
    """A network ready to run (in eval mode, on its device) and the config it came with.

    Unpacks as ``network, config = load_model(...)``.
    """

    network: nn.Module
    config: ModelConfig
    folder: Path

    def __iter__(self):
        return iter((self.network, self.config))


# FreeTumor's own architectures (name -> "module:class"); every other name is a monai.networks.nets class.
OWN_ARCHITECTURES = {"ReportModel": "freetumor_core.reports.vision:ReportModel"}


def build_network(architecture: dict[str, Any], path: Any = None) -> nn.Module:
    """``monai.networks.nets.<name>(**args)`` from ``{"name": ..., "args": {...}}``, or one of
    :data:`OWN_ARCHITECTURES` (the report model).

    Raises:
        InputError: naming ``path``: an unknown network name, or arguments it does not accept.
    """
    name = architecture.get("name")
    if str(name) in OWN_ARCHITECTURES:
        import importlib

        module, _, attribute = OWN_ARCHITECTURES[str(name)].partition(":")
        factory = getattr(importlib.import_module(module), attribute)
    else:
        from monai.networks import nets

        factory = getattr(nets, str(name), None)
    if not (isinstance(factory, type) and issubclass(factory, nn.Module)):
        raise InputError(f"unknown network {name!r}: not a class in monai.networks.nets", path)
    try:
        return factory(**architecture.get("args", {}))
    except (TypeError, ValueError, AssertionError) as error:
        raise InputError(f"cannot build {name} from its args: {error}", path) from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _state_tensors(network: nn.Module) -> dict[str, torch.Tensor]:
    # Own copies: safetensors refuses tensors that share storage, and wants them contiguous on the CPU.
    return {key: value.detach().to("cpu").clone().contiguous() for key, value in network.state_dict().items()}


def save_model(folder: str | os.PathLike[str], network: nn.Module, config: ModelConfig) -> Path:
    """Write ``network`` and ``config`` as a model folder, replacing any folder already there.

    The network should be the one ``build_network(config.architecture)`` builds (unwrap DDP first);
    the written config gets the weights' SHA-256. Returns the folder.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    building = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        weights = building / WEIGHTS_FILE
        save_file(_state_tensors(network), str(weights), metadata={"format": "pt"})
        config = replace(config, weights_sha256=_sha256(weights))
        (building / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=1) + "\n")
        parameters = sum(parameter.numel() for parameter in network.parameters())
        (building / CARD_FILE).write_text(model_card(config, parameters))
        os.chmod(building, 0o777 & ~_umask())
        old = None
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=folder.parent))
            os.replace(folder, old / "model")
        os.replace(building, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return folder


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def read_model_config(folder: str | os.PathLike[str]) -> ModelConfig:
    """The :class:`ModelConfig` of a model folder.

    Raises:
        InputError: the folder or its ``config.json`` is missing, not JSON, or not a valid config.
    """
    from .shipped import resolve_model

    folder = resolve_model(folder)
    if not folder.is_dir():
        raise InputError("model folder not found", folder)
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise InputError("file not found (a model folder needs config.json)", path)
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"not valid JSON: {error}", path) from None
    return ModelConfig.from_dict(data, path)


def _read_weights(path: Path, expected_sha256: str | None) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise InputError("file not found (a model folder needs model.safetensors)", path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise InputError(f"corrupt or truncated safetensors file ({error})", path) from None
    if expected_sha256 is not None and _sha256(path) != expected_sha256:
        raise InputError("corrupt weights: the SHA-256 differs from the one in config.json", path)
    return tensors


def _check_fits(network: nn.Module, tensors: dict[str, torch.Tensor], path: Path, name: str) -> None:
    expected = network.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [
        f"{key} {tuple(tensors[key].shape)} (needs {tuple(expected[key].shape)})"
        for key in sorted(set(expected) & set(tensors))
        if tensors[key].shape != expected[key].shape
    ]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if keys:
            shown = ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        problem = f"tensors do not fit the {name} architecture in config.json ({'; '.join(problems)})"
        raise InputError(problem, path)


def load_model(
    folder: str | os.PathLike[str], device: str | torch.device = "auto", task: str | None = None
) -> LoadedModel:
    """Build the network of a model folder and load its weights, in eval mode on ``device``.

    Args:
        folder: the model folder, or the name of a shipped model (``segmenter_demo``).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (see :mod:`freetumor_core.device`).
        task: when given, refuse a folder made for another task.

    Raises:
        InputError: naming the file: a missing file, a wrong schema version, another task, an unknown
            network, corrupt or truncated weights, or tensors that do not fit the architecture.
    """
    from ..device import resolve_device
    from .shipped import resolve_model

    folder = resolve_model(folder)
    config = read_model_config(folder)
    if task is not None and config.task != task:
        raise InputError(f"this is a {config.task!r} model, not a {task!r} model", folder / CONFIG_FILE)
    network = build_network(config.architecture, folder / CONFIG_FILE)
    weights = folder / WEIGHTS_FILE
    tensors = _read_weights(weights, config.weights_sha256)
    _check_fits(network, tensors, weights, config.network_name)
    network.load_state_dict(tensors, strict=True)
    network.to(resolve_device(device)).eval()
    return LoadedModel(network=network, config=config, folder=folder)


def describe_model(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """What ``freetumor model info`` shows: task, architecture, parameter count, preprocessing,
    labels, provenance, metrics and size on disk (MB). Loads the folder fully (on the CPU), so a
    broken folder raises the same :class:`InputError` as :func:`load_model`."""
    network, config = load_model(folder, device="cpu")
    from .shipped import resolve_model

    folder = resolve_model(folder)
    size_bytes = sum(path.stat().st_size for path in folder.iterdir() if path.is_file())
    return {
        "folder": str(folder),
        "task": config.task,
        "description": config.description,
        "architecture": config.architecture,
        "parameter_count": sum(parameter.numel() for parameter in network.parameters()),
        "preprocessing": config.preprocessing.to_dict(),
        "label_names": {str(key): value for key, value in sorted(config.label_names.items())},
        "provenance": config.provenance,
        "metrics": config.metrics,
        "size_mb": round(size_bytes / 1e6, 3),
        "schema_version": config.schema_version,
    }
