"""Where networks run: one device name for every entry point that runs a network.

``resolve_device("auto")`` picks CUDA when present, else the CPU; ``"cpu"``, ``"cuda"`` and
``"cuda:N"`` ask for one explicitly, and a CUDA device that is not there is an :class:`InputError`
(not a silent fall back to the CPU). Under ``torchrun`` a bare ``"cuda"`` or ``"auto"`` means this
process's GPU, ``cuda:$LOCAL_RANK``. :func:`autocast` gives bf16 mixed precision on CUDA and does
nothing elsewhere.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from .errors import InputError

__all__ = ["DEVICE_NAMES", "autocast", "resolve_device"]

DEVICE_NAMES = ("auto", "cpu", "cuda", "cuda:N")


def _local_rank() -> int | None:
    value = os.environ.get("LOCAL_RANK")
    return int(value) if value is not None and value.isdigit() else None


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """The ``torch.device`` for ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Raises:
        InputError: an unknown name, or a CUDA device that this machine does not have.
    """
    text = str(name).strip().lower()
    if text == "cpu":
        return torch.device("cpu")
    if text not in ("auto", "cuda") and not (text.startswith("cuda:") and text[5:].isdigit()):
        raise InputError(f"unknown device {name!r}: use one of {', '.join(DEVICE_NAMES)}")
    available = torch.cuda.is_available()
    if text == "auto" and not available:
        return torch.device("cpu")
    count = torch.cuda.device_count() if available else 0
    if not available or count == 0:
        raise InputError(f"device {name!r} asked for, but CUDA is not available on this machine")
    index = int(text[5:]) if text.startswith("cuda:") else (_local_rank() or 0)
    if index >= count:
        raise InputError(f"device {name!r} asked for, but this machine has {count} CUDA device(s)")
    return torch.device("cuda", index)


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool = True) -> Iterator[None]:
    """bf16 autocast on a CUDA device when ``enabled``; a no-op on the CPU."""
    if enabled and device.type == "cuda":
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            yield
    else:
        yield
