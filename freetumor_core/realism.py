"""The realism report: real tumors against synthetic ones of matching organ and size, per engine.

Real tumors (all from the shared data folder):

- ``ircadb``: the two liver tumors of 3D-IRCADb-01 patient 17 (the lesions of label 2, as
  :func:`freetumor_core.lesions.split_lesions` counts them; the liver around them is labels 1 and 3),
  the reference for liver;
- ``deeplesion_hu``: the DeepLesion abdominal mass stored in HU, with its lesion mask;
- ``deeplesion_npz``: the other DeepLesion lesions, stored as 8-bit windowed images mapped back to HU
  by :func:`freetumor_core.turing.realcases.read_windowed_npz` (values outside about -184..266 HU are
  clipped, so HU descriptors are approximate);
- ``kits``: KiTS23 kidney tumor masks (label 2), shape descriptors only (no CT).

Synthetic tumors: for each engine, :func:`freetumor_core.synthesis.synthesize` puts one liver tumor
per seed, with the diameter of each real liver tumor, into each host CT (``ircadb``: the same IRCADb
liver, its real tumors kept out of the organ mask; ``ircadb_p07``: the healthy 0.78 mm liver of
IRCADb patient 7; ``totalseg``: the 3 mm TotalSegmentator example CT; ``phantom``).

The automated Turing test (:func:`two_sample_test`) is a classifier two-sample test: a leave-one-out
nearest-centroid classifier on the descriptor vectors tells the real tumors in HU from one engine's
synthetic ones; its balanced accuracy is 0.5 when it cannot tell them apart.

:func:`realism_report` writes ``realism_table.csv`` (one row per tumor), ``realism_distances.json``
(the report) and ``realism.png`` (one panel per descriptor) into the output folder.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from .descriptors import DESCRIPTORS, SHAPE_DESCRIPTORS, describe_shape, describe_tumor, distribution_distance
from .errors import InputError
from .files import atomic_output, write_json, write_text
from .lesions import split_lesions
from .progress import ProgressLike, make_progress
from .volume import Volume, read_ct, read_volume

REAL_SOURCES = ("ircadb", "deeplesion_hu", "deeplesion_npz", "kits")
# The real tumors of the Turing test: those stored in HU (the 8-bit ones carry a quantization leak).
TURING_REAL_SOURCES = ("ircadb", "deeplesion_hu")
HOSTS = ("ircadb", "ircadb_p07", "totalseg", "phantom")
# Both engines side by side by default (the adversarial one with its shipped demo model).
ENGINES = ("handcrafted", "adversarial")
# Volume and diameter match by construction, so the classifier sees shape and appearance only.
TURING_FEATURES = tuple(name for name in DESCRIPTORS if name not in ("volume_ml", "diameter_mm"))
# The paper's Visual Turing Test: 13 radiologists told synthetic from real tumors with this accuracy.
RADIOLOGIST_ACCURACY = 0.608
CONFIDENCE = 0.95
IRCADB_LIVER, IRCADB_TUMOR, IRCADB_VESSELS = 1, 2, 3
COLUMNS = (
    "kind",
    "source",
    "organ",
    "engine",
    "host",
    "seed",
    "requested_diameter_mm",
    "spacing_mm",
    "voxels",
    *DESCRIPTORS,
    "shell_hu",
)


@dataclass
class Lesion:
    """One tumor to describe: its mask, and the CT (``None`` for masks alone) and organ around it."""

    kind: str  # real | synthetic
    source: str
    organ: str
    mask: np.ndarray
    spacing_zyx_mm: np.ndarray
    ct: Volume | None = None
    organ_mask: np.ndarray | None = None
    host: str = ""
    seed: int | None = None
    requested_diameter_mm: float | None = None
    engine: str = ""
    real_source: str = ""  # the REAL_SOURCES name of a real tumor


# -- real tumors -------------------------------------------------------------------------------
def _ircadb(data: Path) -> Iterator[Lesion]:
    folder = data / "ircadb_liver_tumor"
    ct = read_ct(folder / "ircadb1_17_ct.nii.gz")
    labels = read_volume(folder / "ircadb1_17_labels.nii.gz").array
    liver = np.isin(labels, (IRCADB_LIVER, IRCADB_VESSELS))
    for number, tumor in enumerate(split_lesions(labels == IRCADB_TUMOR, ct.spacing_zyx), start=1):
        yield Lesion("real", f"ircadb1_17 tumor {number}", "liver", tumor, ct.spacing_zyx, ct, liver)


def _deeplesion_hu(data: Path) -> Iterator[Lesion]:
    folder = data / "deeplesion_medsam2"
    ct = read_ct(folder / "000015_01_01_103-115_ct_hu.nii.gz")
    mask = read_volume(folder / "000015_01_01_103-115_lesion_mask_DERIVED.nii.gz").array > 0
    if mask.shape != ct.shape:
        raise InputError(f"lesion mask shape {mask.shape} differs from the CT's {ct.shape}", folder)
    yield Lesion("real", "deeplesion 000015_01_01_103-115 (HU)", "abdomen", mask, ct.spacing_zyx, ct)


def _deeplesion_npz(data: Path) -> Iterator[Lesion]:
    from .turing.realcases import read_windowed_npz

    folder = data / "deeplesion_medsam2"
    for path in sorted(folder.glob("CT_Lesion_*.npz")):
        case = path.stem.removeprefix("CT_Lesion_")
        if (folder / f"{case}_ct_hu.nii.gz").is_file():
            continue  # the same lesion is read in HU by _deeplesion_hu
        ct, mask = read_windowed_npz(path)
        yield Lesion("real", f"deeplesion {case} (8-bit)", "abdomen", mask, ct.spacing_zyx, ct)


def _kits(data: Path) -> Iterator[Lesion]:
    for path in sorted((data / "kits23_masks").glob("case_*_segmentation.nii.gz")):
        labels = read_volume(path)
        case = path.name.removesuffix("_segmentation.nii.gz")
        for number, tumor in enumerate(split_lesions(labels.array == 2, labels.spacing_zyx), start=1):
            yield Lesion("real", f"kits23 {case} tumor {number}", "kidney", tumor, labels.spacing_zyx)


REAL_READERS: dict[str, Callable[[Path], Iterator[Lesion]]] = {
    "ircadb": _ircadb,
    "deeplesion_hu": _deeplesion_hu,
    "deeplesion_npz": _deeplesion_npz,
    "kits": _kits,
}


# -- synthetic tumors --------------------------------------------------------------------------
def read_host(name: str, data: Path):
    """``(ct, organs)`` of a synthesis host; the IRCADb-17 liver excludes its real tumors."""
    from .labels import LabelMap, read_labels

    if name == "phantom":
        from .phantom import make_phantom

        return make_phantom(seed=0)
    if name == "totalseg":
        folder = data / "totalseg_example"
        labels = read_labels(folder / "example_seg_fast_force_split.nii.gz")
        return read_ct(folder / "example_ct.nii.gz"), labels
    if name == "ircadb_p07":
        folder = data / "ircadb_p07"
        return read_ct(folder / "ircadb1_07_ct.nii.gz"), read_labels(folder / "ircadb1_07_labels.nii.gz")
    if name == "ircadb":
        folder = data / "ircadb_liver_tumor"
        ct = read_ct(folder / "ircadb1_17_ct.nii.gz")
        labels = read_volume(folder / "ircadb1_17_labels.nii.gz").array
        organs = np.select(
            [np.isin(labels, (IRCADB_LIVER, IRCADB_VESSELS)), labels == IRCADB_TUMOR], [1, 2], 0
        ).astype(np.uint8)
        return ct, LabelMap(ct.like(organs), {1: "liver", 2: "liver_tumor"})
    raise InputError(f"unknown host '{name}'; choose from {', '.join(HOSTS)}")


def engine_spec(engine: str, model: str | None, diameter_mm: float = 20.0):
    """The validated liver-tumor spec of ``engine`` (``model`` only for engines that take one).

    Raises:
        InputError: an unknown engine (the message lists the registered ones) or a missing model.
    """
    from .synthesis import TumorSpec
    from .synthesis.spec import MODEL_ENGINES

    return TumorSpec(
        organ="liver",
        diameter_mm=float(diameter_mm),
        count=1,
        allow_shrink=True,
        engine=engine,
        model=model if engine in MODEL_ENGINES else None,
    ).validated()


def _synthetic(
    data: Path,
    engines: Sequence[str],
    model: str | None,
    hosts: Sequence[str],
    seeds: Sequence[int],
    diameters_mm: Sequence[float],
    progress,
) -> Iterator[Lesion]:
    # Each size gets its own seeds, so that two sizes do not repeat the same random shapes; every
    # engine gets the same hosts, sizes and seeds.
    jobs = [
        (host, engine, diameter, seed + 100 * number)
        for host in hosts
        for engine in engines
        for number, diameter in enumerate(diameters_mm)
        for seed in seeds
    ]
    if not jobs:
        return
    from .synthesis import synthesize

    loaded: dict[str, tuple] = {}
    for host, engine, diameter, seed in progress.track(jobs, "realism: synthetic tumors"):
        if host not in loaded:
            loaded = {host: read_host(host, data)}  # hosts come in order: keep one in memory
        ct, organs = loaded[host]
        # A small liver (the TotalSegmentator example) may not hold the largest real size: shrink then,
        # and keep the requested size in the table, rather than drop the host.
        spec = engine_spec(engine, model, diameter)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = synthesize(ct, organs, spec, seed=seed)
        tumor_all = result.labels.mask("liver_tumor")  # the new tumor and the host's real ones
        liver = np.isin(result.labels.array, result.labels.ids_for("liver")) & ~tumor_all
        for tumor in split_lesions(result.tumor_mask, result.ct.spacing_zyx)[:1]:
            yield Lesion(
                "synthetic",
                f"{engine} {host} d{diameter:.0f}mm seed {seed}",
                "liver",
                tumor,
                result.ct.spacing_zyx,
                result.ct,
                liver,
                host,
                seed,
                requested_diameter_mm=float(diameter),
                engine=engine,
            )


# -- descriptors and comparisons ---------------------------------------------------------------
def describe(lesion: Lesion) -> dict:
    """One table row: identification and descriptors of ``lesion``."""
    if lesion.ct is None:
        values = describe_shape(lesion.mask, lesion.spacing_zyx_mm)
    else:
        values = describe_tumor(lesion.ct, lesion.mask, lesion.organ_mask)
    row = {
        "kind": lesion.kind,
        "source": lesion.source,
        "real_source": lesion.real_source,
        "organ": lesion.organ,
        "engine": lesion.engine,
        "host": lesion.host,
        "seed": "" if lesion.seed is None else lesion.seed,
        "requested_diameter_mm": "" if lesion.requested_diameter_mm is None else lesion.requested_diameter_mm,
        "spacing_mm": "x".join(f"{s:.2f}" for s in lesion.spacing_zyx_mm[::-1]),
    }
    return {**row, **values}


def _summary(values: Sequence[float]) -> dict:
    finite = np.asarray([v for v in values if isinstance(v, float | int) and math.isfinite(v)], dtype=float)
    if not len(finite):
        return {"n": 0}
    return {
        "n": len(finite),
        "median": float(np.median(finite)),
        "q1": float(np.percentile(finite, 25)),
        "q3": float(np.percentile(finite, 75)),
        "min": float(finite.min()),
        "max": float(finite.max()),
        "values": [float(v) for v in finite],
    }


def compare(real: Sequence[dict], synthetic: Sequence[dict]) -> dict:
    """Per descriptor: summaries of the real and the synthetic rows, and their distance."""
    out = {"real_sources": [row["source"] for row in real], "descriptors": {}}
    for name in DESCRIPTORS:
        real_values = [row[name] for row in real]
        synthetic_values = [row[name] for row in synthetic]
        out["descriptors"][name] = {
            "real": _summary(real_values),
            "synthetic": _summary(synthetic_values),
            "distance": distribution_distance(real_values, synthetic_values),
        }
    return out


def _interval(correct: int, total: int, confidence: float) -> list[float]:
    if total == 0:
        return [float("nan"), float("nan")]
    ci = stats.binomtest(correct, total).proportion_ci(confidence_level=confidence, method="exact")
    return [float(ci.low), float(ci.high)]


def two_sample_test(real: np.ndarray, synthetic: np.ndarray) -> dict:
    """Classifier two-sample test: can a classifier tell the rows of ``real`` from those of ``synthetic``?

    A leave-one-out nearest-centroid classifier (features standardised on the training rows of each
    fold; :func:`freetumor_core.turing.leakcheck.loo_predictions`) labels every row. Columns with a
    non-finite value in any row are left out.

    Returns:
        ``accuracy`` (balanced: the mean of the hit rates on real and on synthetic rows, so 0.5 means
        indistinguishable whatever the group sizes), ``interval_95`` for it (the means of the two
        hit rates' exact Clopper-Pearson 97.5% intervals: by Bonferroni both hold together with
        probability >= 95%, so the balanced accuracy lies between their means), ``real_hits`` and
        ``synthetic_hits`` (correct / n), ``plain_accuracy`` with its exact 95% interval, and
        ``n_real``, ``n_synthetic``, ``features_used`` (column indices). Leave-one-out folds are
        not independent trials, so the intervals are approximate.

    Raises:
        ValueError: fewer than two rows in a group, or no finite column.
    """
    real, synthetic = np.atleast_2d(np.asarray(real, float)), np.atleast_2d(np.asarray(synthetic, float))
    if len(real) < 2 or len(synthetic) < 2:
        raise ValueError(f"need two rows per group, got {len(real)} real and {len(synthetic)} synthetic")
    matrix = np.concatenate([real, synthetic])
    columns = np.flatnonzero(np.isfinite(matrix).all(axis=0))
    if not len(columns):
        raise ValueError("no feature is finite in every row")
    from .turing.leakcheck import loo_predictions

    is_synthetic = np.r_[np.zeros(len(real), bool), np.ones(len(synthetic), bool)]
    predictions = loo_predictions(matrix[:, columns], is_synthetic)
    real_hits = int(np.sum(~predictions[: len(real)]))
    synthetic_hits = int(np.sum(predictions[len(real) :]))
    each = 1.0 - (1.0 - CONFIDENCE) / 2.0
    real_ci = _interval(real_hits, len(real), each)
    synthetic_ci = _interval(synthetic_hits, len(synthetic), each)
    correct = real_hits + synthetic_hits
    return {
        "accuracy": 0.5 * (real_hits / len(real) + synthetic_hits / len(synthetic)),
        "interval_95": [0.5 * (real_ci[0] + synthetic_ci[0]), 0.5 * (real_ci[1] + synthetic_ci[1])],
        "real_hits": [real_hits, len(real)],
        "synthetic_hits": [synthetic_hits, len(synthetic)],
        "plain_accuracy": correct / len(matrix),
        "plain_interval_95": _interval(correct, len(matrix), CONFIDENCE),
        "n_real": len(real),
        "n_synthetic": len(synthetic),
        "features_used": [int(c) for c in columns],
    }


def turing_test(real: Sequence[dict], synthetic: Sequence[dict]) -> dict:
    """:func:`two_sample_test` on the :data:`TURING_FEATURES` of two sets of table rows, with the
    names of the tumors and features used (``{"checked": False, ...}`` with under two per group)."""
    out = {
        "classifier": "leave-one-out nearest centroid on standardised descriptors",
        "real_tumors": [row["source"] for row in real],
        "n_real": len(real),
        "n_synthetic": len(synthetic),
        "radiologists_accuracy": RADIOLOGIST_ACCURACY,
        "checked": False,
    }
    if len(real) < 2 or len(synthetic) < 2:
        return out
    matrix = [[float(row[name]) for name in TURING_FEATURES] for row in (*real, *synthetic)]
    matrix = np.asarray(matrix, dtype=float)
    result = two_sample_test(matrix[: len(real)], matrix[len(real) :])
    result["features"] = [TURING_FEATURES[c] for c in result.pop("features_used")]
    return {**out, **result, "checked": True}


# -- outputs -----------------------------------------------------------------------------------
def _csv_text(rows: Sequence[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def plot(rows: Sequence[dict], path: Path) -> None:
    """One panel per descriptor: real tumors (by source) and each engine's synthetic ones as jittered
    points, medians as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    engines = sorted({row["engine"] for row in rows if row["kind"] == "synthetic"})
    groups = [
        ("real liver (IRCADb)", lambda r: r["kind"] == "real" and r["organ"] == "liver", "tab:red"),
        ("real other", lambda r: r["kind"] == "real" and r["organ"] != "liver", "tab:orange"),
    ]
    colours = ("tab:blue", "tab:green", "tab:purple", "tab:brown")
    for number, engine in enumerate(engines):
        groups.append(
            (
                f"synthetic {engine}",
                lambda r, e=engine: r["kind"] == "synthetic" and r["engine"] == e,
                colours[number % len(colours)],
            )
        )
    figure, axes = plt.subplots(2, 5, figsize=(18, 8))
    rng = np.random.default_rng(0)
    for axis, name in zip(axes.ravel(), DESCRIPTORS, strict=True):
        for position, (_label, keep, colour) in enumerate(groups):
            values = [row[name] for row in rows if keep(row) and math.isfinite(row[name])]
            if values:
                jitter = rng.uniform(-0.12, 0.12, len(values))
                axis.scatter(position + jitter, values, s=24, color=colour, alpha=0.8)
                axis.hlines(np.median(values), position - 0.25, position + 0.25, color=colour, linewidth=2)
        axis.set_title(name)
        axis.set_xticks(range(len(groups)), [label.split(" (")[0] for label, _, _ in groups], fontsize=7)
        axis.grid(alpha=0.3)
    handles = [Line2D([], [], marker="o", linestyle="", color=colour) for _, _, colour in groups]
    figure.legend(handles, [label for label, _, _ in groups], loc="lower center", ncol=len(groups))
    figure.suptitle("Tumor descriptors: real against synthetic (lines: medians)")
    figure.tight_layout(rect=(0, 0.05, 1, 0.97))
    with atomic_output(path) as temporary:
        figure.savefig(temporary, dpi=80, format="png")
    plt.close(figure)


def _json_ready(value):
    """NaN and infinity become ``null`` (strict JSON); numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def realism_report(
    data: str | Path,
    output: str | Path,
    engines: Sequence[str] = ENGINES,
    model: str | None = None,
    seeds: int = 4,
    hosts: Sequence[str] = HOSTS,
    real: Sequence[str] = REAL_SOURCES,
    diameters_mm: Sequence[float] | None = None,
    progress: ProgressLike = None,
) -> dict:
    """Describe real and synthetic tumors, compare them per engine and run the automated Turing test.

    Args:
        data: the shared real data folder (see ``docs/realism.md``).
        output: folder for ``realism_table.csv``, ``realism_distances.json`` and ``realism.png``.
        engines: synthesis engines by name (each gets the same hosts, sizes and seeds).
        model: the model folder of the engines that need one.
        seeds: synthetic tumors per engine, host and size (seeds 0..N-1).
        hosts: synthesis hosts (:data:`HOSTS`).
        real: real tumor sources (:data:`REAL_SOURCES`).
        diameters_mm: synthetic diameters (default: those of the real liver tumors, else all real).
        progress: a reporter or ``"bar"``/``"json"``/``"none"``.

    Returns:
        The report written as ``realism_distances.json``, plus ``rows`` (every table row).

    Raises:
        InputError: a missing data folder, an unknown engine, host or real source, or unreadable data.
    """
    data, output = Path(data), Path(output)
    progress = make_progress(progress)
    if not data.is_dir():
        raise InputError("data folder not found", data)
    for name, allowed, what in ((real, REAL_SOURCES, "real source"), (hosts, HOSTS, "host")):
        unknown = [item for item in name if item not in allowed]
        if unknown:
            raise InputError(f"unknown {what} '{unknown[0]}'; choose from {', '.join(allowed)}")
    for engine in engines:
        engine_spec(engine, model)  # an unknown engine fails here, before any work
    rows: list[dict] = []
    for source in progress.track(list(real), "realism: real tumors"):
        for lesion in REAL_READERS[source](data):
            lesion.real_source = source
            rows.append(describe(lesion))
    liver_diameters = [row["diameter_mm"] for row in rows if row["organ"] == "liver"]
    diameters = list(diameters_mm or liver_diameters or [row["diameter_mm"] for row in rows])
    diameters = [round(float(d), 1) for d in diameters]
    lesions = _synthetic(data, engines, model, hosts, range(seeds), diameters, progress)
    rows.extend(describe(lesion) for lesion in lesions)
    real_rows = [row for row in rows if row["kind"] == "real"]
    turing_real = [row for row in real_rows if row["real_source"] in TURING_REAL_SOURCES]
    per_engine = {}
    for engine in engines:
        synthetic = [row for row in rows if row["kind"] == "synthetic" and row["engine"] == engine]
        per_engine[engine] = {
            "n_synthetic": len(synthetic),
            "hosts": {host: sum(row["host"] == host for row in synthetic) for host in hosts},
            "comparisons": {
                "liver": compare([row for row in real_rows if row["organ"] == "liver"], synthetic),
                "all_real": compare(real_rows, synthetic),
            },
            "turing": turing_test(turing_real, synthetic),
        }
    report = {
        "settings": {
            "real": list(real),
            "engines": list(engines),
            "model": model,
            "hosts": list(hosts),
            "seeds": seeds,
            "diameters_mm": diameters,
            "shell_mm": [3.0, 10.0],
            "turing_real_sources": list(TURING_REAL_SOURCES),
            "turing_features": list(TURING_FEATURES),
        },
        "n_real": len(real_rows),
        "n_synthetic": len(rows) - len(real_rows),
        "shape_descriptors": list(SHAPE_DESCRIPTORS),
        "engines": per_engine,
    }
    report = _json_ready(report)
    output.mkdir(parents=True, exist_ok=True)
    write_text(output / "realism_table.csv", _csv_text(rows))
    write_json(output / "realism_distances.json", report, indent=1)
    plot(rows, output / "realism.png")
    progress.event("realism", output=str(output), n_real=report["n_real"], n_synthetic=report["n_synthetic"])
    return {**report, "rows": rows}
