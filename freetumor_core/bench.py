"""Benchmark harness: ``freetumor bench SUITE --json FILE``.

A suite is a function that takes a :class:`Bench` and calls :meth:`Bench.time` (warm-up plus
repeated timed runs) or :meth:`Bench.record` (a single measured value). Suites live next to the code
they measure and are named in :data:`SUITES`; the result file has the shape::

    {"suite": "io", "machine": {"cpu": ..., "cores": 2, "torch": "2.13.0", "device": "cpu"},
     "results": [{"name": "read/nifti", "unit": "ms", "median": ..., "min": ..., "max": ..., "n": 5}]}

A suite may add ``"notes"`` (:meth:`Bench.note`): what it ran on, such as which weights a network had.
"""

from __future__ import annotations

import importlib
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import InputError
from .progress import ProgressLike, make_progress

# Suite name -> "module:function"; modules are imported only when their suite runs.
SUITES: dict[str, str] = {
    "io": "freetumor_core.bench:io_suite",
    "segmentation": "freetumor_core.segmentation.bench:segmentation_suite",
    "synthesis": "freetumor_core.synthesis.bench:synthesis_suite",
    "turing": "freetumor_core.turing.bench:turing_suite",
    "reports": "freetumor_core.reports.bench:reports_suite",
    "adversarial": "freetumor_core.adversarial.bench:adversarial_suite",
}


def machine_info() -> dict[str, Any]:
    """CPU model, core count, torch version and compute device of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass  # not Linux: platform.processor() is the best there is
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        info["torch"], info["device"] = None, "cpu"
    return info


MAX_REPEAT = 1000


def peak_rss_mb() -> float:
    """This process's peak resident memory (MB) since it started its program.

    On Linux the high-water mark of the process's own memory (``VmHWM``): ``ru_maxrss`` of a
    process started by another carries over the parent's peak from before the ``exec`` (a probe
    started by a 500 MB benchmark would report 500 MB). Elsewhere ``ru_maxrss``.
    """
    import resource
    import sys

    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024.0  # bytes on macOS, KB elsewhere


class Bench:
    """Collects results for one suite. ``options`` carries suite options from the command line."""

    def __init__(
        self,
        suite: str,
        options: dict[str, Any] | None = None,
        repeat: int = 5,
        progress: ProgressLike = None,
    ) -> None:
        if isinstance(repeat, bool) or not isinstance(repeat, int) or not 1 <= repeat <= MAX_REPEAT:
            raise InputError(f"repeat must be a whole number from 1 to {MAX_REPEAT}, got {repeat!r}")
        self.suite = suite
        self.progress = make_progress(progress)
        self.options = options or {}
        self.repeat = repeat
        self.results: list[dict[str, Any]] = []
        self.notes: dict[str, Any] = {}

    def time(
        self,
        name: str,
        function: Callable[[], object],
        warmup: int = 1,
        repeat: int | None = None,
        unit: str = "ms",
        per_call: int = 1,
    ) -> dict[str, Any]:
        """Run ``function`` ``warmup`` times untimed, then ``repeat`` times timed.

        ``per_call`` divides each timing (for a function that does several units of work).
        """
        scale = {"ms": 1e3, "s": 1.0, "us": 1e6}[unit]
        for _ in range(warmup):
            function()
        samples = []
        for _ in range(repeat or self.repeat):
            start = time.perf_counter()
            function()
            samples.append((time.perf_counter() - start) * scale / per_call)
        return self._add(name, unit, samples)

    def time_interleaved(
        self,
        functions: dict[str, Callable[[], object]],
        warmup: int = 1,
        repeat: int | None = None,
        unit: str = "ms",
        per_call: int = 1,
        prepare: dict[str, Callable[[], Any]] | None = None,
    ) -> list[dict[str, Any]]:
        """Like :meth:`time` for several functions, taking turns: one call of each per round.

        A passing slowdown of the machine then spreads over every result instead of landing on
        whichever function happened to be running. ``prepare`` (by name) makes a function's
        argument before each call, outside the clock (fresh copies for a call that works in place).
        """
        scale = {"ms": 1e3, "s": 1.0, "us": 1e6}[unit]
        prepare = prepare or {}

        def call(name: str, function: Callable[..., object]) -> float:
            arguments = (prepare[name](),) if name in prepare else ()
            start = time.perf_counter()
            function(*arguments)
            return time.perf_counter() - start

        for _ in range(warmup):
            for name, function in functions.items():
                call(name, function)
        samples: dict[str, list[float]] = {name: [] for name in functions}
        for _ in range(repeat or self.repeat):
            for name, function in functions.items():
                samples[name].append(call(name, function) * scale / per_call)
        return [self._add(name, unit, values) for name, values in samples.items()]

    def record(self, name: str, value: float | list[float], unit: str) -> dict[str, Any]:
        """Add one measured value (start-up time, peak memory, ...), or several measured elsewhere."""
        values = value if isinstance(value, list | tuple) else [value]
        return self._add(name, unit, [float(v) for v in values])

    def note(self, key: str, value: Any = None) -> None:
        """Say in the result file (``"notes"``) what the results were measured on: ``key`` and a
        JSON-ready ``value``; or, without a value, add ``key`` as a remark (``notes["remarks"]``:
        a measurement left out and why, ...)."""
        if value is None:
            self.notes.setdefault("remarks", []).append(key)
        else:
            self.notes[key] = value

    def _add(self, name: str, unit: str, samples: list[float]) -> dict[str, Any]:
        result = {
            "name": name,
            "unit": unit,
            "median": statistics.median(samples),
            "min": min(samples),
            "max": max(samples),
            "n": len(samples),
        }
        self.results.append(result)
        self.progress.event("result", suite=self.suite, **result)
        return result

    def payload(self) -> dict[str, Any]:
        payload = {"suite": self.suite, "machine": machine_info(), "results": self.results}
        if self.notes:
            payload["notes"] = self.notes
        return payload


def run_suite(
    suite: str, options: dict[str, Any] | None = None, repeat: int = 5, progress: ProgressLike = None
) -> dict[str, Any]:
    """Run a named suite and return its result payload.

    Raises:
        InputError: unknown suite name.
    """
    if suite not in SUITES:
        raise InputError(f"unknown benchmark suite '{suite}'; choose from {', '.join(SUITES)}")
    module_name, function_name = SUITES[suite].split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    bench = Bench(suite, options, repeat, progress)
    function(bench)
    return bench.payload()


def format_table(payload: dict[str, Any]) -> str:
    """The results as a plain-text table."""
    lines = [f"suite: {payload['suite']}", f"{'name':<24}{'median':>12}{'min':>12}{'max':>12}  n"]
    for row in payload["results"]:
        lines.append(
            f"{row['name']:<24}{row['median']:>12.3f}{row['min']:>12.3f}{row['max']:>12.3f}"
            f"  {row['n']} {row['unit']}"
        )
    return "\n".join(lines)


def io_suite(bench: Bench) -> None:
    """Read and write a whole CT as NIfTI (default: the phantom; option ``ct``: a file)."""
    from .phantom import make_phantom
    from .volume import read_volume, write_volume

    with tempfile.TemporaryDirectory() as folder:
        source = bench.options.get("ct")
        if source:
            ct = read_volume(source)
        else:
            ct, _ = make_phantom(0)
        path = Path(folder) / "ct.nii.gz"
        write_volume(ct, path)
        bench.time("read/nifti", lambda: read_volume(path))
        bench.time("write/nifti", lambda: write_volume(ct, path))
