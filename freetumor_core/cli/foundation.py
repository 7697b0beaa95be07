"""``freetumor info``, ``phantom`` and ``demo``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import bounded, json_mode, print_result, seed_number


def command_info(args: argparse.Namespace) -> int:
    from ..info import describe

    info = describe(args.file, args.label_names)
    if args.json or json_mode(args):
        print(json.dumps(info, indent=None if json_mode(args) else 1))
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


def command_phantom(args: argparse.Namespace) -> int:
    from ..files import output_set
    from ..phantom import make_phantom
    from ..volume import write_volume

    output = Path(args.output)
    ct, labels = make_phantom(seed=args.seed, spacing_mm=args.spacing_mm)
    with output_set(output) as staged:
        write_volume(ct, staged.path("ct.nii.gz"))
        labels.save(staged.path("labels.nii.gz"))
    outputs = {"ct": str(output / "ct.nii.gz"), "labels": str(output / "labels.nii.gz")}
    print_result(args, {"outputs": outputs})
    if not json_mode(args):
        print(f"phantom written to {output}/ (ct.nii.gz, labels.nii.gz, labels.json)")
    return 0


def command_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    outputs = run_demo(Path(args.output), seed=args.seed, progress=args.reporter)
    print_result(args, {"outputs": {key: str(value) for key, value in outputs.items()}})
    if not json_mode(args):
        print(f"demo outputs in {args.output}/:")
        for key, value in outputs.items():
            print(f"  {key:<10}{value}")
    return 0


def register(commands, common) -> None:
    """Add ``info``, ``phantom`` and ``demo``."""
    info = commands.add_parser(
        "info", parents=[common], help="geometry, HU statistics, label names and volumes (mL)"
    )
    info.add_argument("file", help="image or label map (NIfTI, NRRD, MetaImage, DICOM folder)")
    info.add_argument("--label-names", help='name map: a JSON file, or the JSON itself ({"1": "liver"})')
    info.add_argument("--json", action="store_true", help="print the description as JSON")
    info.set_defaults(handler=command_info)

    phantom = commands.add_parser(
        "phantom", parents=[common], help="write the procedural abdominal CT phantom and its labels"
    )
    phantom.add_argument("-o", "--output", required=True, help="output folder")
    phantom.add_argument("--seed", type=seed_number, default=0)
    phantom.add_argument(
        "--spacing-mm", type=bounded(float, 1.0, 10.0, "--spacing-mm"), default=1.5, help="voxel size (mm)"
    )
    phantom.set_defaults(handler=command_phantom)

    demo = commands.add_parser("demo", parents=[common], help="run the main job on the built-in phantom")
    demo.add_argument("-o", "--output", required=True, help="output folder")
    demo.add_argument("--seed", type=seed_number, default=7)
    demo.set_defaults(handler=command_demo)
