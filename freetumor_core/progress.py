"""Progress reporters: passed into long operations as ``progress=``, never held globally.

Long operations take ``progress: ProgressLike = None`` and turn it into a reporter with
:func:`make_progress`: ``None`` or ``"none"`` reports nothing, ``"bar"`` draws a tqdm bar on standard
error, ``"json"`` writes one JSON object per line (to standard output unless a stream is given)::

    {"event": "progress", "task": "synthesize", "done": 3, "total": 10}

Only the command line (or another program's entry point) chooses the kind; library code calls
:meth:`Progress.track`, :meth:`Progress.update` or :meth:`Progress.event` on what it was given and never
prints. Under ``torch.distributed`` (or ``torchrun``'s ``RANK``/``WORLD_SIZE``) only rank 0 draws a
bar, and JSON lines carry ``"rank"`` when more than one process runs. 3D Slicer reads the JSON lines
of its background process to drive its progress bar.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator
from typing import IO, Any, TypeVar, Union

Item = TypeVar("Item")
MODES = ("bar", "json", "none")


def distributed_rank() -> tuple[int, int]:
    """``(rank, world_size)`` of this process: from ``torch.distributed`` when it is initialised,
    else from ``torchrun``'s environment variables, else ``(0, 1)``."""
    torch = sys.modules.get("torch")  # only if something already imported it: no torch import here
    if torch is not None:
        distributed = getattr(torch, "distributed", None)
        if distributed is not None and distributed.is_available() and distributed.is_initialized():
            return int(distributed.get_rank()), int(distributed.get_world_size())
    try:
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError:
        return 0, 1


class Progress:
    """The reporter that reports nothing; the base of the others.

    Methods:
        track: iterate over items, reporting one step per item under a task name.
        update: report ``done`` of ``total`` for a task (for loops that are not iterations).
        event: report any other named event with fields (a training step's metrics, a result).
    """

    def track(self, items: Iterable[Item], task: str, total: int | None = None) -> Iterator[Item]:
        if total is None and hasattr(items, "__len__"):
            total = len(items)  # type: ignore[arg-type]
        self.update(task, 0, total)
        done = 0
        for item in items:
            yield item
            done += 1
            self.update(task, done, total)

    def update(self, task: str, done: int, total: int | None = None, **fields: Any) -> None:
        """Report that ``done`` of ``total`` steps of ``task`` are complete."""

    def event(self, event: str, **fields: Any) -> None:
        """Report one named event."""

    def close(self) -> None:
        """Finish any display (a bar)."""


class BarProgress(Progress):
    """A tqdm bar per task on standard error, drawn by rank 0 only."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream
        self._bars: dict[str, Any] = {}

    def update(self, task: str, done: int, total: int | None = None, **fields: Any) -> None:
        if distributed_rank()[0] != 0:
            return
        from tqdm import tqdm

        bar = self._bars.get(task)
        if bar is None:
            bar = tqdm(desc=task, total=total, file=self.stream or sys.stderr, leave=False)
            self._bars[task] = bar
        if total is not None and bar.total != total:
            bar.total = total
        if fields:
            bar.set_postfix(fields, refresh=False)
        bar.update(done - bar.n)
        if total is not None and done >= total:
            bar.close()
            del self._bars[task]

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()


class JsonProgress(Progress):
    """One JSON object per line (to standard output by default), with ``rank`` when distributed."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream

    def event(self, event: str, **fields: Any) -> None:
        rank, world = distributed_rank()
        line = {"event": event, **fields}
        if world > 1:
            line["rank"] = rank
        stream = self.stream or sys.stdout
        stream.write(json.dumps(line) + "\n")
        stream.flush()

    def update(self, task: str, done: int, total: int | None = None, **fields: Any) -> None:
        self.event("progress", task=task, done=done, total=total, **fields)


ProgressLike = Union[Progress, str, None]  # noqa: UP007 (a runtime alias, Python 3.10 safe)


def make_progress(progress: ProgressLike = None, stream: IO[str] | None = None) -> Progress:
    """A reporter from ``None``/``"none"``, ``"bar"``, ``"json"`` or an existing reporter.

    Raises:
        ValueError: an unknown mode name.
    """
    if isinstance(progress, Progress):
        return progress
    if progress is None or progress == "none":
        return Progress()
    if progress == "bar":
        return BarProgress(stream)
    if progress == "json":
        return JsonProgress(stream)
    raise ValueError(f"progress must be one of {MODES} or a Progress, got {progress!r}")
