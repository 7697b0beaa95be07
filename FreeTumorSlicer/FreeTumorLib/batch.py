"""Synthesize tumors into every CT of a datalist, one ``freetumor synthesize`` process per case.

For Slicer's Python console (it blocks until done); the panel's own job works on nodes instead
(:mod:`FreeTumorLib.synthesis`). Each case gets its own output folder, ``<output>/<NNN>_<image
name>/`` with ``ct.nii.gz``, ``labels.nii.gz`` + ``labels.json`` and ``tumors.json``; the seed of
case ``i`` (from 0) is ``seed + i``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from freetumor_core.errors import InputError
from freetumor_core.turing.datalist import read_datalist

from .runner import CoreProcess
from .synthesis import SynthesisRequest, read_records


def _case_name(index: int, image: Path) -> str:
    stem = image.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return f"{index:03d}_{stem}"


def synthesize_datalist(
    datalist: str | os.PathLike[str],
    output_folder: str | os.PathLike[str],
    request: SynthesisRequest,
    on_case: Callable[[int, int, dict[str, Any]], None] | None = None,
    python: str | None = None,
    timeout_s: float | None = None,
) -> list[dict[str, Any]]:
    """Synthesize ``request``'s tumors into each entry of ``datalist`` (``image`` + ``label``).

    Args:
        datalist: a MONAI/MSD datalist JSON (paths relative to it).
        output_folder: where the per-case folders go (created).
        request: the tumor settings and the first seed.
        on_case: called after each case with ``(done, total, result)``.
        python: the interpreter that runs the core (default: ``PythonSlicer`` in Slicer).
        timeout_s: give up a case after this many seconds.

    Returns:
        one ``{"image", "label", "output", "seed", "tumors"}`` per entry (``tumors``: ``TumorRecord``s).

    Raises:
        InputError: a bad datalist; ``CoreProcessError`` when a case fails (earlier cases stay).
        TimeoutError: a case ran over ``timeout_s``.
    """
    entries = read_datalist(datalist)
    if not entries:
        raise InputError("datalist has no entries", Path(datalist))
    output = Path(output_folder)
    output.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="freetumor-batch-") as scratch:
        spec_path = request.spec.to_json(Path(scratch) / "spec.json")
        for index, entry in enumerate(entries):
            seed = request.seed + index
            case_output = output / _case_name(index, entry.image)
            arguments = SynthesisRequest(request.spec, seed=seed).arguments(
                entry.image, entry.label, spec_path, case_output
            )
            errors: list[Exception] = []
            process = CoreProcess(arguments, on_error=errors.append, python=python).start()
            if not process.wait(timeout_s):
                process.cancel()
                process.wait()
                raise TimeoutError(f"{entry.image}: synthesis did not finish within {timeout_s} s")
            if errors:
                raise errors[0]
            result = {
                "image": str(entry.image),
                "label": str(entry.label),
                "output": str(case_output),
                "seed": seed,
                "tumors": read_records(case_output / "tumors.json"),
            }
            results.append(result)
            if on_case:
                on_case(index + 1, len(entries), result)
    return results


__all__ = ["synthesize_datalist"]
