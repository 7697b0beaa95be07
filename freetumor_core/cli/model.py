"""``freetumor model info DIR`` (what a model folder holds) and ``freetumor model import`` (a state dict
from elsewhere into a model folder)."""

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


def command_import(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..labels import parse_name_map, read_name_map
    from ..segmentation.importing import import_config, import_state_dict

    network_args = None
    if args.args is not None:
        try:
            network_args = json.loads(args.args)
        except json.JSONDecodeError as error:
            raise InputError(f"--args must be a JSON object: {error}") from None
        if not isinstance(network_args, dict):
            raise InputError(f"--args must be a JSON object, got {args.args!r}")
    names = None
    if args.label_names:
        text = args.label_names
        names = parse_name_map(text) if text.lstrip().startswith("{") else read_name_map(text)
    config = import_config(
        args.architecture,
        network_args,
        names,
        args.spacing_mm,
        args.hu_window,
        args.patch_size_voxels,
        args.description,
    )
    folder = import_state_dict(args.state_dict, args.output, config)
    print_result(args, {"model": str(folder), "architecture": config.architecture})
    if not json_mode(args):
        print(f"{config.network_name} imported into {folder}")
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
    imported = actions.add_parser(
        "import",
        parents=[common],
        help="a MONAI segmentation network's state dict (safetensors or torch) into a model folder",
        description="Torch files are read with torch.load(weights_only=True); the tensors must fit "
        "the architecture exactly.",
    )
    imported.add_argument("state_dict", metavar="STATE_DICT", help=".safetensors, .pt or .pth file")
    imported.add_argument("-o", "--output", required=True, metavar="DIR", help="model folder to write")
    imported.add_argument(
        "--architecture",
        default="SwinUNETR",
        help="a preset (default, swinunetr_v2_fs48) or a monai.networks.nets class; SwinUNETR "
        "without --args is swinunetr_v2_fs48: feature size 48, v2, FreeTumor's 7 classes (default)",
    )
    imported.add_argument("--args", help="the network's arguments as a JSON object")
    imported.add_argument("--label-names", help='output labels: a JSON file or the JSON ({"1": "liver"})')
    imported.add_argument("--spacing-mm", type=float, nargs=3, metavar=("X", "Y", "Z"), help="input spacing")
    imported.add_argument("--hu-window", type=float, nargs=2, metavar=("LOW", "HIGH"), help="HU window")
    imported.add_argument(
        "--patch-size-voxels", type=int, nargs=3, metavar=("X", "Y", "Z"), help="sliding-window size"
    )
    imported.add_argument("--description", help="text for the model card")
    imported.set_defaults(handler=command_import)
