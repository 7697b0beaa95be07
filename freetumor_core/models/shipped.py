"""Models that ship inside the package: ``freetumor_core/data/models/<name>/`` model folders.

A command's ``--model`` takes a folder path or the name of a shipped model; :func:`resolve_model`
turns either into a folder. Each shipped model is trained by a script in ``scripts/`` that anyone
can rerun; its ``README.md`` card says what it saw and what it measured.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError
from .folder import CONFIG_FILE

__all__ = ["SHIPPED_MODELS_DIR", "resolve_model", "shipped_model", "shipped_models"]

SHIPPED_MODELS_DIR = Path(__file__).resolve().parent.parent / "data" / "models"


def shipped_models() -> list[str]:
    """The names of the model folders inside the package."""
    if not SHIPPED_MODELS_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_MODELS_DIR.iterdir() if (p / CONFIG_FILE).is_file())


def shipped_model(name: str) -> Path:
    """The folder of the shipped model ``name``.

    Raises:
        InputError: no shipped model has that name (the message lists the ones that do).
    """
    folder = SHIPPED_MODELS_DIR / name
    if not (folder / CONFIG_FILE).is_file():
        names = ", ".join(shipped_models()) or "none"
        raise InputError(f"no shipped model named {name!r} (shipped: {names})")
    return folder


def resolve_model(value: str | os.PathLike[str]) -> Path:
    """A model folder from ``value``: an existing path, else the name of a shipped model.

    Raises:
        InputError: neither a folder nor a shipped model's name.
    """
    path = Path(value)
    if path.exists() or os.sep in str(value) or str(value).startswith("."):
        return path
    if (SHIPPED_MODELS_DIR / str(value) / CONFIG_FILE).is_file():
        return SHIPPED_MODELS_DIR / str(value)
    names = ", ".join(shipped_models()) or "none"
    raise InputError(f"not a model folder, nor the name of a shipped model (shipped: {names})", path)
