"""``freetumor realism``: real tumors against each engine's synthetic ones, and the automated Turing test."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from .common import bounded, json_mode, print_result

# The shared data folder beside a source checkout, unless FREETUMOR_SHARED_DATA names another.
DEFAULT_DATA = Path(
    os.environ.get("FREETUMOR_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")
)
SHORT = {
    "sphericity": "spher",
    "elongation": "elong",
    "surface_irregularity": "irreg",
    "mean_hu": "HU",
    "internal_sd_hu": "sdHU",
    "contrast_hu": "contr",
    "edge_sharpness_hu_per_mm": "edge",
    "noise_ratio": "noise",
}


def _median(values) -> str:
    finite = sorted(v for v in values if isinstance(v, float | int) and math.isfinite(v))
    if not finite:
        return f"{'-':>7}"
    middle = len(finite) // 2
    median = finite[middle] if len(finite) % 2 else 0.5 * (finite[middle - 1] + finite[middle])
    return f"{median:7.3g}"


def command_realism(args: argparse.Namespace) -> int:
    from ..realism import realism_report

    report = realism_report(
        args.data,
        args.output,
        engines=args.engines,
        model=args.model,
        seeds=args.seeds,
        hosts=args.hosts,
        real=args.real,
        diameters_mm=args.diameters_mm,
        progress=args.reporter,
    )
    rows = report.pop("rows")
    if args.json:
        from ..files import write_json

        write_json(args.json, report)
    if json_mode(args):
        print_result(args, report)
        return 0
    groups = [("real liver", [r for r in rows if r["kind"] == "real" and r["organ"] == "liver"])]
    groups.append(("real all", [r for r in rows if r["kind"] == "real"]))
    for engine in report["engines"]:
        groups.append((engine, [r for r in rows if r["kind"] == "synthetic" and r["engine"] == engine]))
    print(f"{'median of':<14} {'n':>3} " + " ".join(f"{label:>7}" for label in SHORT.values()))
    for label, members in groups:
        cells = " ".join(_median([row[name] for row in members]) for name in SHORT)
        print(f"{label[:14]:<14} {len(members):>3} {cells}")
    for engine, entry in report["engines"].items():
        turing = entry["turing"]
        if not turing["checked"]:
            counts = f"{turing['n_real']} real, {turing['n_synthetic']} synthetic"
            print(f"Turing test ({engine}): not run ({counts})")
            continue
        low, high = turing["interval_95"]
        print(
            f"Turing test ({engine}): balanced accuracy {turing['accuracy']:.2f} (95% interval "
            f"{low:.2f}-{high:.2f}; 0.5 = indistinguishable, "
            f"radiologists {turing['radiologists_accuracy']:.3f}); "
            f"{turing['n_real']} real ({', '.join(turing['real_tumors'])}) against "
            f"{turing['n_synthetic']} synthetic"
        )
    print(f"written to {args.output}")
    return 0


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``realism``."""
    from ..realism import ENGINES, HOSTS, REAL_SOURCES

    realism = commands.add_parser(
        "realism",
        parents=[common],
        help="descriptors of real tumors against synthetic ones per engine, and an automated Turing test",
    )
    realism.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared real data folder")
    realism.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    realism.add_argument(
        "--engines",
        nargs="+",
        default=list(ENGINES),
        metavar="ENGINE",
        help=f"synthesis engines to compare (default: {' '.join(ENGINES)})",
    )
    realism.add_argument("--model", metavar="DIR", help="model folder of the engines that need one")
    realism.add_argument(
        "--seeds",
        type=bounded(int, 0, 1000, "--seeds"),
        default=4,
        help="synthetic tumors per engine, host and size (seeds 0..N-1)",
    )
    realism.add_argument("--hosts", nargs="*", choices=HOSTS, default=list(HOSTS), help="synthesis hosts")
    realism.add_argument("--real", nargs="+", choices=REAL_SOURCES, default=list(REAL_SOURCES))
    realism.add_argument(
        "--diameters-mm",
        type=float,
        nargs="*",
        default=None,
        help="synthetic tumor diameters (default: those of the real liver tumors, else of all real ones)",
    )
    realism.add_argument("--json", metavar="FILE", help="write the report as JSON to this file too")
    realism.set_defaults(handler=command_realism)
