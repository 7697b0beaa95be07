"""One progress mechanism for everything long: a tqdm bar for people, JSON lines for programs.

The command line sets the mode once (``--progress bar|json|none``); library code only calls
:func:`track` or :func:`report`. In ``json`` mode each update is one line on standard output::

    {"event": "progress", "task": "synthesize", "done": 3, "total": 10}

3D Slicer reads these lines from the subprocess to drive its progress bar.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm import tqdm

Item = TypeVar("Item")
MODES = ("bar", "json", "none")
_mode = "none"


def set_mode(mode: str) -> None:
    """Choose how progress is shown: ``bar`` (tqdm on stderr), ``json`` (stdout lines) or ``none``."""
    global _mode
    if mode not in MODES:
        raise ValueError(f"progress mode must be one of {MODES}, got {mode!r}")
    _mode = mode


def get_mode() -> str:
    return _mode


def emit(event: str, **fields: Any) -> None:
    """Print one JSON event line (only in ``json`` mode)."""
    if _mode == "json":
        sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
        sys.stdout.flush()


def track(items: Iterable[Item], task: str, total: int | None = None) -> Iterator[Item]:
    """Iterate over ``items`` while reporting progress under the name ``task``."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if _mode == "bar":
        yield from tqdm(items, desc=task, total=total, file=sys.stderr, leave=False)
        return
    emit("progress", task=task, done=0, total=total)
    done = 0
    for item in items:
        yield item
        done += 1
        emit("progress", task=task, done=done, total=total)
