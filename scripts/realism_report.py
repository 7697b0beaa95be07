"""Realism report: descriptors of real tumors against synthetic ones of matching organ and size.

Real tumors (all from ``../shared/data``):

- ``ircadb``: the two liver tumors of 3D-IRCADb-01 patient 17 (the lesions of label 2, as
  ``freetumor_core.lesions.split_lesions`` counts them; the liver around them is labels 1 and 3),
  the reference for liver;
- ``deeplesion_hu``: the DeepLesion abdominal mass stored in HU, with its lesion mask;
- ``deeplesion_npz``: the other DeepLesion lesions, stored as 8-bit windowed images mapped back to HU
  by ``freetumor_core.turing.realcases.read_windowed_npz`` (values outside about -184..266 HU are
  clipped, so HU descriptors are approximate);
- ``kits``: KiTS23 kidney tumor masks (label 2), shape descriptors only (no CT).

Synthetic tumors: ``freetumor_core.synthesis.synthesize`` puts one liver tumor per seed, with the
diameter of each real liver tumor, into each host CT (``ircadb``: the same IRCADb liver, its real
tumors kept out of the organ mask; ``totalseg``: the TotalSegmentator example CT; ``phantom``).

Outputs in ``--output``: ``realism_table.csv`` (one row per tumor), ``realism_distances.json`` (per
descriptor: real and synthetic summaries and distances) and ``realism.png`` (one panel per descriptor).

    python scripts/realism_report.py --output realism_out --seeds 4
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from freetumor_core.descriptors import (
    DESCRIPTORS,
    SHAPE_DESCRIPTORS,
    describe_shape,
    describe_tumor,
    distribution_distance,
)
from freetumor_core.errors import InputError
from freetumor_core.files import atomic_output, write_text
from freetumor_core.lesions import split_lesions
from freetumor_core.progress import Progress, make_progress
from freetumor_core.turing.realcases import read_windowed_npz
from freetumor_core.volume import Volume, read_ct, read_volume

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
REAL_SOURCES = ("ircadb", "deeplesion_hu", "deeplesion_npz", "kits")
HOSTS = ("ircadb", "totalseg", "phantom")
IRCADB_LIVER, IRCADB_TUMOR, IRCADB_VESSELS = 1, 2, 3
COLUMNS = (
    "kind",
    "source",
    "organ",
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
def _host(name: str, data: Path):
    """``(ct, organs)`` for a synthesis host; the IRCADb liver excludes its real tumors."""
    from freetumor_core.labels import LabelMap, read_labels

    if name == "phantom":
        from freetumor_core.phantom import make_phantom

        return make_phantom(seed=0)
    if name == "totalseg":
        folder = data / "totalseg_example"
        ct = read_ct(folder / "example_ct.nii.gz")
        return ct, read_labels(folder / "example_seg_fast_force_split.nii.gz")
    if name == "ircadb":
        folder = data / "ircadb_liver_tumor"
        ct = read_ct(folder / "ircadb1_17_ct.nii.gz")
        labels = read_volume(folder / "ircadb1_17_labels.nii.gz").array
        organs = np.select(
            [np.isin(labels, (IRCADB_LIVER, IRCADB_VESSELS)), labels == IRCADB_TUMOR], [1, 2], 0
        ).astype(np.uint8)
        return ct, LabelMap(ct.like(organs), {1: "liver", 2: "liver_tumor"})
    raise InputError(f"unknown host '{name}'; choose from {', '.join(HOSTS)}")


def _synthetic(
    data: Path,
    hosts: Sequence[str],
    seeds: Sequence[int],
    diameters_mm: Sequence[float],
    progress: Progress,
):
    # Each size gets its own seeds, so that two sizes do not repeat the same random shapes.
    jobs = [
        (host, diameter, seed + 100 * number)
        for host in hosts
        for number, diameter in enumerate(diameters_mm)
        for seed in seeds
    ]
    if not jobs:
        return
    from freetumor_core.synthesis import TumorSpec, synthesize

    loaded: dict[str, tuple] = {}
    for host, diameter, seed in progress.track(jobs, "realism: synthetic tumors"):
        if host not in loaded:
            loaded[host] = _host(host, data)
        ct, organs = loaded[host]
        # A small liver (the TotalSegmentator example) may not hold the largest real size: shrink then,
        # and keep the requested size in the table, rather than drop the host.
        spec = TumorSpec(organ="liver", diameter_mm=float(diameter), count=1, allow_shrink=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = synthesize(ct, organs, spec, seed=seed)
        tumor_all = result.labels.mask("liver_tumor")  # the new tumor and the host's real ones
        liver = np.isin(result.labels.array, result.labels.ids_for("liver")) & ~tumor_all
        for tumor in split_lesions(result.tumor_mask, result.ct.spacing_zyx)[:1]:
            yield Lesion(
                "synthetic",
                f"{host} d{diameter:.0f}mm seed {seed}",
                "liver",
                tumor,
                result.ct.spacing_zyx,
                result.ct,
                liver,
                host,
                seed,
                requested_diameter_mm=float(diameter),
            )


# -- report ------------------------------------------------------------------------------------
def describe(lesion: Lesion) -> dict:
    """One table row: identification and descriptors of ``lesion``."""
    if lesion.ct is None:
        values = describe_shape(lesion.mask, lesion.spacing_zyx_mm)
    else:
        values = describe_tumor(lesion.ct, lesion.mask, lesion.organ_mask)
    spacing = "x".join(f"{s:.2f}" for s in lesion.spacing_zyx_mm[::-1])
    row = {
        "kind": lesion.kind,
        "source": lesion.source,
        "organ": lesion.organ,
        "host": lesion.host,
        "seed": "" if lesion.seed is None else lesion.seed,
        "requested_diameter_mm": "" if lesion.requested_diameter_mm is None else lesion.requested_diameter_mm,
        "spacing_mm": spacing,
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


def compare(rows: Sequence[dict], real_filter: Callable[[dict], bool]) -> dict:
    """Per descriptor: summaries of the selected real rows and all synthetic rows, and their distance."""
    real = [row for row in rows if row["kind"] == "real" and real_filter(row)]
    synthetic = [row for row in rows if row["kind"] == "synthetic"]
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


def _csv_text(rows: Sequence[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def _printable_table(rows: Sequence[dict]) -> str:
    short = {
        "volume_ml": "mL",
        "diameter_mm": "diam",
        "sphericity": "spher",
        "elongation": "elong",
        "surface_irregularity": "irreg",
        "mean_hu": "HU",
        "internal_sd_hu": "sdHU",
        "contrast_hu": "contr",
        "edge_sharpness_hu_per_mm": "edge",
    }
    header = f"{'kind':9} {'source':40} " + " ".join(f"{label:>6}" for label in short.values())
    lines = [header, "-" * len(header)]
    for row in rows:
        cells = " ".join(f"{row[name]:6.3g}" if math.isfinite(row[name]) else f"{'-':>6}" for name in short)
        lines.append(f"{row['kind']:9} {row['source'][:40]:40} {cells}")
    return "\n".join(lines)


def plot(rows: Sequence[dict], path: Path) -> None:
    """One panel per descriptor: real tumors (by source) and synthetic ones as jittered points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(3, 3, figsize=(13, 10))
    groups = [
        ("real liver (IRCADb)", lambda r: r["kind"] == "real" and r["organ"] == "liver", "tab:red"),
        (
            "real other (DeepLesion, KiTS)",
            lambda r: r["kind"] == "real" and r["organ"] != "liver",
            "tab:orange",
        ),
        ("synthetic liver", lambda r: r["kind"] == "synthetic", "tab:blue"),
    ]
    rng = np.random.default_rng(0)
    for axis, name in zip(axes.ravel(), DESCRIPTORS, strict=True):
        for position, (label, keep, colour) in enumerate(groups):
            values = [row[name] for row in rows if keep(row) and math.isfinite(row[name])]
            if values:
                jitter = rng.uniform(-0.12, 0.12, len(values))
                axis.scatter(position + jitter, values, s=28, color=colour, alpha=0.8, label=label)
                axis.hlines(np.median(values), position - 0.25, position + 0.25, color=colour, linewidth=2)
        axis.set_title(name)
        axis.set_xticks(range(len(groups)), ["real liver", "real other", "synthetic"])
        axis.grid(alpha=0.3)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", linestyle="", color=colour) for _, _, colour in groups]
    figure.legend(handles, [label for label, _, _ in groups], loc="lower center", ncol=3)
    figure.suptitle("Tumor descriptors: real against synthetic (lines: medians)")
    figure.tight_layout(rect=(0, 0.04, 1, 0.97))
    with atomic_output(path) as temporary:
        figure.savefig(temporary, dpi=90, format="png")
    plt.close(figure)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("realism_out"), help="output folder")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared real data folder")
    parser.add_argument(
        "--seeds", type=int, default=4, help="synthetic tumors per host and size (seeds 0..N-1)"
    )
    parser.add_argument("--real", nargs="+", choices=REAL_SOURCES, default=list(REAL_SOURCES))
    parser.add_argument("--hosts", nargs="*", choices=HOSTS, default=["ircadb", "totalseg", "phantom"])
    parser.add_argument(
        "--diameters-mm",
        type=float,
        nargs="*",
        default=None,
        help="synthetic tumor diameters (default: those of the real liver tumors, else of all real ones)",
    )
    parser.add_argument("--progress", choices=("bar", "json", "none"), default="bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the report; returns the exit code (2 for bad input)."""
    args = build_parser().parse_args(argv)
    progress = make_progress(args.progress)
    try:
        if not args.data.is_dir():
            raise InputError("data folder not found", args.data)
        readers = [(name, REAL_READERS[name]) for name in args.real]
        real: list[dict] = []
        for _name, reader in progress.track(readers, "realism: real tumors"):
            real.extend(describe(lesion) for lesion in reader(args.data))
        liver_diameters = [row["diameter_mm"] for row in real if row["organ"] == "liver"]
        diameters = args.diameters_mm or liver_diameters or [row["diameter_mm"] for row in real]
        synthetic = [
            describe(lesion)
            for lesion in _synthetic(
                args.data, args.hosts, range(args.seeds), [round(d, 1) for d in diameters], progress
            )
        ]
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    rows = real + synthetic
    args.output.mkdir(parents=True, exist_ok=True)
    table = _csv_text(rows)
    write_text(args.output / "realism_table.csv", table)
    report = {
        "settings": {
            "real": args.real,
            "hosts": args.hosts,
            "seeds": args.seeds,
            "diameters_mm": diameters,
            "shell_mm": [3.0, 10.0],
        },
        "n_real": len(real),
        "n_synthetic": len(synthetic),
        "shape_descriptors": list(SHAPE_DESCRIPTORS),
        "comparisons": {
            "liver": compare(rows, lambda row: row["organ"] == "liver"),
            "all_real": compare(rows, lambda row: True),
        },
    }
    text = json.dumps(_json_ready(report), indent=1, allow_nan=False)
    write_text(args.output / "realism_distances.json", text)
    plot(rows, args.output / "realism.png")
    print(_printable_table(rows))
    if not synthetic:
        return 0
    for name, entry in report["comparisons"]["liver"]["descriptors"].items():
        distance = entry["distance"]
        print(
            f"{name:26} real median {distance['median_a']:9.3g}  synthetic median {distance['median_b']:9.3g}"
            f"  shift {distance['median_shift_iqr']:+6.2f} IQR  W1 {distance['wasserstein']:8.3g}"
        )
    return 0


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


if __name__ == "__main__":
    sys.exit(main())
