"""The ``freetumor`` command line: thin over the Python API.

Exit codes: 0 success, 2 bad input (a clear message names the file and the problem), 1 internal
error. ``--progress json`` prints one JSON object per line for programs (3D Slicer among them).

Each capability registers its own sub-commands from its own module (see ``COMMAND_MODULES``), so
this file only holds the shared plumbing and the foundation commands.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__, progress
from .errors import InputError

# Modules that add sub-commands: each has ``register(subparsers, common)``.
COMMAND_MODULES: list[str] = [
    "freetumor_core.synthesis.commands",
    "freetumor_core.turing.commands",
]


def common_parser() -> argparse.ArgumentParser:
    """Options every sub-command accepts."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--progress",
        choices=progress.MODES,
        # SUPPRESS: a sub-command's default must not hide a value given before the sub-command.
        default=argparse.SUPPRESS,
        help="progress display: bar (default on a terminal), json (one JSON object per line), none",
    )
    return common


def print_result(payload: dict[str, Any]) -> None:
    """Final result: a JSON ``done`` event in json mode, else nothing (commands print their own)."""
    progress.emit("done", **payload)


# -- info ---------------------------------------------------------------------------------------
def looks_like_labels(array: np.ndarray) -> bool:
    """Integer, non-negative, and few distinct values: a label map rather than an image."""
    if array.dtype.kind not in "iu" or array.min() < 0 or array.max() > 1000:
        return False
    return len(np.unique(array[:: max(1, array.shape[0] // 16)])) <= 256


def describe(path: str, names: str | None = None) -> dict[str, Any]:
    """Geometry, value statistics and (for label maps) label names with volumes in mL."""
    from .labels import read_labels
    from .volume import read_volume

    volume = read_volume(path)
    info: dict[str, Any] = {
        "file": str(path),
        "size_xyz": list(volume.shape[::-1]),
        "spacing_mm": [round(s, 6) for s in volume.spacing],
        "origin_mm": [round(o, 4) for o in volume.origin],
        "direction": [round(float(d), 6) for d in volume.direction.flatten()],
        "dtype": str(volume.array.dtype),
        "extent_mm": [round(n * s, 2) for n, s in zip(volume.shape[::-1], volume.spacing, strict=True)],
    }
    if names or looks_like_labels(volume.array):
        labels = read_labels(path, names)
        info["kind"] = "labels"
        info["labels_ml"] = {name: round(ml, 2) for name, ml in labels.volumes_ml().items()}
    else:
        values = volume.array
        p1, p50, p99 = np.percentile(values, [1, 50, 99])
        info["kind"] = "image"
        info["hu"] = {
            "min": float(values.min()),
            "max": float(values.max()),
            "mean": round(float(values.mean()), 2),
            "p1": float(p1),
            "p50": float(p50),
            "p99": float(p99),
        }
    return info


def command_info(args: argparse.Namespace) -> int:
    info = describe(args.file, args.label_names)
    if args.json or progress.get_mode() == "json":
        print(json.dumps(info, indent=None if progress.get_mode() == "json" else 1))
        return 0
    print(f"{info['file']}")
    print(f"  size (x, y, z):      {' x '.join(map(str, info['size_xyz']))} voxels, {info['dtype']}")
    print(f"  spacing (mm):        {', '.join(f'{s:g}' for s in info['spacing_mm'])}")
    print(f"  extent (mm):         {', '.join(f'{s:g}' for s in info['extent_mm'])}")
    print(f"  origin (mm, LPS):    {', '.join(f'{s:g}' for s in info['origin_mm'])}")
    print(f"  direction:           {' '.join(f'{s:g}' for s in info['direction'])}")
    if info["kind"] == "image":
        hu = info["hu"]
        print(
            f"  values (HU):         min {hu['min']:g}, p1 {hu['p1']:g}, median {hu['p50']:g}, "
            f"p99 {hu['p99']:g}, max {hu['max']:g}"
        )
    else:
        print(f"  labels ({len(info['labels_ml'])}):")
        for name, ml in info["labels_ml"].items():
            print(f"    {name:<34}{ml:>10.2f} mL")
    return 0


# -- phantom and demo ---------------------------------------------------------------------------
def command_phantom(args: argparse.Namespace) -> int:
    from .phantom import make_phantom
    from .volume import write_volume

    output = Path(args.output)
    ct, labels = make_phantom(seed=args.seed, spacing_mm=args.spacing_mm)
    write_volume(ct, output / "ct.nii.gz")
    labels.save(output / "labels.nii.gz")
    outputs = {"ct": str(output / "ct.nii.gz"), "labels": str(output / "labels.nii.gz")}
    print_result({"outputs": outputs})
    if progress.get_mode() != "json":
        print(f"phantom written to {output}/ (ct.nii.gz, labels.nii.gz, labels.json)")
    return 0


def command_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    outputs = run_demo(Path(args.output), seed=args.seed)
    print_result({"outputs": {key: str(value) for key, value in outputs.items()}})
    if progress.get_mode() != "json":
        print(f"demo outputs in {args.output}/:")
        for key, value in outputs.items():
            print(f"  {key:<10}{value}")
    return 0


# -- bench --------------------------------------------------------------------------------------
def command_bench(args: argparse.Namespace) -> int:
    from .bench import format_table, run_suite
    from .files import write_json

    options = dict(option.split("=", 1) for option in args.option)
    payload = run_suite(args.suite, options, repeat=args.repeat)
    if args.json:
        write_json(args.json, payload, indent=2)
    if progress.get_mode() == "json":
        print_result({"outputs": {"json": args.json}} if args.json else payload)
    else:
        print(format_table(payload))
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = common_parser()
    parser = argparse.ArgumentParser(
        prog="freetumor",
        description="FreeTumor: tumor synthesis in CT and reader studies of synthetic tumors.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"freetumor {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    info = commands.add_parser(
        "info", parents=[common], help="geometry, HU statistics, label names and volumes (mL)"
    )
    info.add_argument("file", help="image or label map (NIfTI, NRRD, MetaImage, DICOM folder)")
    info.add_argument("--label-names", help='JSON name map for a label map ({"1": "liver"})')
    info.add_argument("--json", action="store_true", help="print the description as JSON")
    info.set_defaults(handler=command_info)

    phantom = commands.add_parser(
        "phantom", parents=[common], help="write the procedural abdominal CT phantom and its labels"
    )
    phantom.add_argument("-o", "--output", required=True, help="output folder")
    phantom.add_argument("--seed", type=int, default=0)
    phantom.add_argument("--spacing-mm", type=float, default=1.5, help="voxel size (mm)")
    phantom.set_defaults(handler=command_phantom)

    demo = commands.add_parser("demo", parents=[common], help="run the main job on the built-in phantom")
    demo.add_argument("-o", "--output", required=True, help="output folder")
    demo.add_argument("--seed", type=int, default=7)
    demo.set_defaults(handler=command_demo)

    bench = commands.add_parser("bench", parents=[common], help="run a benchmark suite")
    bench.add_argument("suite", help="suite name (io, synthesis, ...)")
    bench.add_argument("--json", help="write results to this JSON file")
    bench.add_argument("--repeat", type=int, default=5, help="timed runs per measurement")
    bench.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="suite option")
    bench.set_defaults(handler=command_bench)

    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(commands, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    mode = getattr(args, "progress", None)
    progress.set_mode(mode or ("bar" if sys.stderr.isatty() else "none"))
    warnings.simplefilter("default")
    warnings.formatwarning = lambda message, *_, **__: f"freetumor: warning: {message}\n"
    try:
        return int(args.handler(args) or 0)
    except InputError as error:
        progress.emit("error", message=str(error), exit_code=2)
        print(f"freetumor: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("freetumor: cancelled", file=sys.stderr)
        return 130
    except Exception as error:  # a bug: say so plainly, with the exception type
        progress.emit("error", message=f"{type(error).__name__}: {error}", exit_code=1)
        print(f"freetumor: internal error: {type(error).__name__}: {error}", file=sys.stderr)
        if "--debug" in sys.argv or __import__("os").environ.get("FREETUMOR_DEBUG"):
            raise
        return 1
