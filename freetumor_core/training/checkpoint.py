"""Checkpoints in ``RUN/checkpoints/step-NNNNNNNN/``: weights as safetensors, the rest without pickle.

A checkpoint folder holds ``modules.safetensors`` (every module's tensors, keys ``<module>.<name>``)
and ``state.pt`` (step, optimizer and scheduler states, every rank's random states), written with
``torch.save`` and read only with ``torch.load(..., weights_only=True)``. A folder is built hidden
beside its final name and renamed into place, so a killed run leaves complete checkpoints only.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError

__all__ = ["latest_checkpoint", "list_checkpoints", "load_checkpoint", "random_state", "save_checkpoint"]

WEIGHTS = "modules.safetensors"
STATE = "state.pt"
_NAME = re.compile(r"^step-(\d{8})$")


def random_state() -> dict[str, Any]:
    """This process's Python, NumPy, torch (and CUDA) random states, as tensors and plain values."""
    # The legacy global NumPy state is what third-party augmentations draw from: save it too.
    _, keys, position, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    return {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_random_state(state: dict[str, Any]) -> None:
    """Restore what :func:`random_state` returned."""
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    numpy = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            "MT19937",
            numpy["keys"].numpy().astype(np.uint32),
            numpy["position"],
            numpy["has_gauss"],
            numpy["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(folder: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """``(step, path)`` of the complete checkpoints in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _NAME.match(path.name)
        if match and (path / STATE).is_file() and (path / WEIGHTS).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(folder: str | os.PathLike[str]) -> Path | None:
    found = list_checkpoints(folder)
    return found[-1][1] if found else None


def save_checkpoint(
    folder: str | os.PathLike[str],
    step: int,
    modules: dict[str, nn.Module],
    state: dict[str, Any],
    keep: int,
) -> Path:
    """Write the checkpoint of ``step`` and delete all but the last ``keep``. Returns its folder."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"step-{step:08d}"
    building = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder))
    try:
        tensors = {
            f"{name}.{key}": value.detach().to("cpu").clone().contiguous()
            for name, module in modules.items()
            for key, value in module.state_dict().items()
        }
        save_file(tensors, str(building / WEIGHTS))
        torch.save({**state, "step": step}, building / STATE)
        if target.exists():
            shutil.rmtree(target)
        os.replace(building, target)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    for _, old in list_checkpoints(folder)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def load_checkpoint(path: str | os.PathLike[str], modules: dict[str, nn.Module]) -> dict[str, Any]:
    """Load the weights of ``path`` into ``modules`` and return its state (without unpickling).

    Raises:
        InputError: naming the file: unreadable, or tensors that do not fit the modules.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    try:
        tensors = load_file(str(path / WEIGHTS))
    except (SafetensorError, OSError) as error:
        raise InputError(f"cannot read checkpoint weights ({error})", path / WEIGHTS) from None
    for name, module in modules.items():
        prefix = f"{name}."
        own = {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}
        try:
            module.load_state_dict(own, strict=True)
        except RuntimeError as error:
            raise InputError(f"checkpoint does not fit module {name!r}: {error}", path / WEIGHTS) from None
    try:
        return torch.load(path / STATE, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a corrupt or foreign file
        raise InputError(f"cannot read checkpoint state ({error})", path / STATE) from None
