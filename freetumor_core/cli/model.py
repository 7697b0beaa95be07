"""``freetumor model info DIR``: what a model folder holds."""

from __future__ import annotations

import argparse
import json

from .common import json_mode, print_result


def command_info(args: argparse.Namespace) -> int:
    from ..models import describe_model

    info = describe_model(args.folder)
    if json_mode(args):
        print_result(args, info)
        return 0
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    pre = info["preprocessing"]
    print(info["folder"])
    print(f"  task:                {info['task']}")
    print(f"  architecture:        {info['architecture']['name']} {json.dumps(info['architecture']['args'])}")
    print(f"  parameters:          {info['parameter_count']:,}")
    print(f"  size:                {info['size_mb']:.3f} MB")
    print(f"  spacing (mm):        {pre['spacing_mm'] or 'native'}")
    print(f"  HU window:           {pre['hu_window'] or 'none'}")
    print(f"  patch (voxels):      {pre['patch_size_voxels'] or 'any'}")
    labels = ", ".join(f"{key} {name}" for key, name in info["label_names"].items())
    print(f"  labels:              {labels or 'none'}")
    for key, value in info["provenance"].items():
        print(f"  {key + ':':<21}{json.dumps(value) if isinstance(value, (dict, list)) else value}")
    for key, value in info["metrics"].items():
        print(f"  {key + ':':<21}{json.dumps(value) if isinstance(value, (dict, list)) else value}")
    return 0


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``model`` and its sub-commands."""
    model = commands.add_parser("model", parents=[common], help="model folders (config.json + safetensors)")
    actions = model.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    info = actions.add_parser(
        "info", parents=[common], help="task, architecture, parameters, preprocessing, labels, provenance"
    )
    info.add_argument("folder", metavar="DIR", help="model folder")
    info.add_argument("--json", action="store_true", help="print the description as JSON")
    info.set_defaults(handler=command_info)
