"""``freetumor bench synthesis``: time per tumor on a 96³ patch and on a whole CT, start-up, memory.

Options (``--option KEY=VALUE``): ``ct`` and ``labels`` (a whole CT and its organ labels instead of
the phantom), ``label_names`` (JSON name map), ``organ`` (default ``liver``), ``resample_mm`` (first
resample the CT and labels to this isotropic spacing: linear for the CT, in float32, nearest for the
labels, on the same origin and direction, as the SyntheticTumors harness in shared/bench does),
``write_patch`` (a folder: write the 96³ patch there as ``patch_ct.nii.gz`` and
``patch_labels.nii.gz``, so another tool can time the very same input).
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import warnings

import numpy as np

from ..bench import Bench, peak_rss_mb
from ..records import SIZE_CLASSES_MM

PATCH = 96
# Run in a fresh interpreter: the clock starts before the package is imported.
PROBE = """
import json, sys, time
start = time.perf_counter()
import freetumor_core.synthesis
from freetumor_core.synthesis.bench import probe
print(json.dumps(probe(json.loads(sys.argv[1]), time.perf_counter() - start)))
"""


def _whole_ct(options: dict[str, str]):
    from ..labels import align_to, read_labels
    from ..phantom import make_phantom
    from ..volume import read_ct

    if options.get("ct"):
        ct = read_ct(options["ct"])
        labels = align_to(read_labels(options["labels"], options.get("label_names")), ct)
    else:
        ct, labels = make_phantom(0)
    if options.get("resample_mm"):
        ct, labels = resample_isotropic(ct, labels, float(options["resample_mm"]))
    return ct, labels


def resample_isotropic(ct, labels, spacing_mm: float):
    """CT (linear, float32, -1024 HU outside) and labels (nearest) on a ``spacing_mm`` grid with
    the same origin and direction, ``round(size * spacing / spacing_mm)`` voxels per axis."""
    import SimpleITK as sitk

    from ..labels import LabelMap
    from ..volume import Volume

    def resample(image, interpolator, default):
        size = [round(n * s / spacing_mm) for n, s in zip(image.GetSize(), image.GetSpacing(), strict=True)]
        return sitk.Resample(
            image, size, sitk.Transform(), interpolator, image.GetOrigin(), (spacing_mm,) * 3,
            image.GetDirection(), default, image.GetPixelID(),
        )  # fmt: skip

    ct_image = resample(sitk.Cast(ct.to_sitk(), sitk.sitkFloat32), sitk.sitkLinear, -1024.0)
    label_image = resample(labels.volume.to_sitk(), sitk.sitkNearestNeighbor, 0)
    new_ct = Volume.from_sitk(ct_image)
    return new_ct, LabelMap(new_ct.like(sitk.GetArrayFromImage(label_image)), dict(labels.names))


def liver_patch(ct, labels, organ: str = "liver", size: int = PATCH):
    """A ``size``³ crop centred on the organ's centre of mass: a training patch."""
    from ..labels import LabelMap

    mask = labels.mask(organ)
    centre = np.round(np.argwhere(mask).mean(axis=0)).astype(int)
    start = np.clip(centre - size // 2, 0, np.maximum(np.asarray(ct.shape) - size, 0))
    box = tuple(slice(a, a + size) for a in start)
    origin = ct.index_to_lps(start)
    patch_ct = type(ct)(np.ascontiguousarray(ct.array[box]), ct.spacing, tuple(origin), ct.direction)
    patch_labels = LabelMap(patch_ct.like(np.ascontiguousarray(labels.array[box])), dict(labels.names))
    return patch_ct, patch_labels


def write_patch(options: dict[str, str], patch_ct, patch_labels) -> None:
    """With the ``write_patch`` option, write the patch as ``patch_ct.nii.gz`` and
    ``patch_labels.nii.gz`` (+ ``patch_labels.json``) in that folder."""
    if not options.get("write_patch"):
        return
    from pathlib import Path

    from ..volume import write_volume

    folder = Path(options["write_patch"])
    folder.mkdir(parents=True, exist_ok=True)
    write_volume(patch_ct, folder / "patch_ct.nii.gz")
    patch_labels.save(folder / "patch_labels.nii.gz")


def synthesis_suite(bench: Bench) -> None:
    """Per-tumor time by size class on a 96³ patch (also in place on fresh copies, and cold:
    nothing kept from earlier calls); whole-CT time; start-up; whole-CT peak memory.

    Large tumors often do not fit the patch's liver and are shrunk (``allow_shrink``); the warning
    each shrink gives is silenced here, where it is expected."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="organ .* cannot hold tumor")
        _synthesis_suite(bench)


def _synthesis_suite(bench: Bench) -> None:
    from . import TumorSpec, synthesize

    organ = bench.options.get("organ", "liver")
    ct, labels = _whole_ct(bench.options)
    patch_ct, patch_labels = liver_patch(ct, labels, organ)
    write_patch(bench.options, patch_ct, patch_labels)
    seeds = itertools.count()
    # Each size twice, in turns: a call that copies the patch (``synthesize``'s default), and a call
    # in place, as the published method works, on fresh copies made outside the clock (the same
    # voxels, without copying the patch).
    calls, fresh = {}, {}
    for size in SIZE_CLASSES_MM:
        spec = TumorSpec(organ=organ, size=size, count=1, allow_shrink=True)
        calls[f"patch{PATCH}/{size}"] = lambda spec=spec: synthesize(
            patch_ct, patch_labels, spec, seed=next(seeds)
        )
        name = f"patch{PATCH}/{size}/in_place"
        calls[name] = lambda copies, spec=spec: synthesize(*copies, spec, seed=next(seeds), in_place=True)
        fresh[name] = lambda: _copies(patch_ct, patch_labels)
    bench.time_interleaved(calls, warmup=2, repeat=max(bench.repeat, 25), prepare=fresh)
    # Cold: what calls on one host keep for the next (the organ's depth lattice, label name
    # classes) forgotten before every call, as on the first call on a new host.
    cold = {}
    for size in SIZE_CLASSES_MM:
        spec = TumorSpec(organ=organ, size=size, count=1, allow_shrink=True)
        cold[f"patch{PATCH}/{size}/cold"] = lambda spec=spec: _cold(patch_ct, patch_labels, spec, next(seeds))
    bench.time_interleaved(cold, warmup=1, repeat=max(bench.repeat, 25))
    whole = TumorSpec(organ=organ, size="small", count=1)
    bench.time("whole_ct/small", lambda: synthesize(ct, labels, whole, seed=next(seeds)), repeat=bench.repeat)

    # Start-up and peak memory are measured in fresh processes, as a user would see them.
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(bench.options)],
        capture_output=True,
        text=True,
        check=True,
    )
    measured = json.loads(probe.stdout.strip().splitlines()[-1])
    bench.record("startup", measured["startup_s"], "s")
    bench.record("peak_rss", measured["peak_rss_mb"], "MB")


def _copies(ct, labels):
    """Fresh copies of a CT and its labels (same geometry and names) for an in-place call."""
    from ..labels import LabelMap

    copy = ct.like(ct.array.copy())
    return copy, LabelMap(copy.like(labels.array.copy()), dict(labels.names))


def _cold(ct, labels, spec, seed: int):
    from . import synthesize
    from .placement import clear_caches

    clear_caches()
    return synthesize(ct, labels, spec, seed=seed)


def probe(options: dict[str, str], import_s: float) -> dict[str, float]:
    """Start-up (s): ``import_s`` plus the first patch tumor; then peak RSS (MB) of a whole-CT run.

    Reading or building the input CT is not start-up: the published method's start-up is the
    texture bank it precomputes before the first tumor.
    """
    import time

    from . import TumorSpec, synthesize

    organ = options.get("organ", "liver")
    ct, labels = _whole_ct(options)
    patch_ct, patch_labels = liver_patch(ct, labels, organ)
    first = time.perf_counter()
    synthesize(patch_ct, patch_labels, TumorSpec(organ=organ, size="small"), seed=0)
    startup = import_s + (time.perf_counter() - first)
    synthesize(ct, labels, TumorSpec(organ=organ, size="small", count=2), seed=0)
    peak_mb = peak_rss_mb()
    return {"startup_s": startup, "peak_rss_mb": peak_mb}
