"""``freetumor synthesize``: tumors into a CT from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..records import SIZE_CLASSES_MM
from .common import json_mode, print_result, seed_number


def register(commands, common) -> None:
    """Add the ``synthesize`` sub-command."""
    parser = commands.add_parser(
        "synthesize",
        parents=[common],
        help="put synthetic tumors into an organ of a CT",
        description="Writes ct.nii.gz, labels.nii.gz (+ labels.json), tumors.json and snapshot.png.",
    )
    parser.add_argument("ct", help="CT in HU (NIfTI, NRRD, MetaImage or a DICOM folder)")
    parser.add_argument("--organs", required=True, help="organ label map on (or overlapping) the CT")
    parser.add_argument("--label-names", help='JSON name map for the label map ({"1": "liver"})')
    parser.add_argument("--organ", default="liver", help="host organ name, group or id (default liver)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--size", choices=list(SIZE_CLASSES_MM), help="size class (default small)")
    size.add_argument("--diameter-mm", type=float, help="equivalent-sphere diameter instead of a class")
    parser.add_argument("--count", type=int, default=1, help="number of tumors (default 1)")
    parser.add_argument("--margin-mm", type=float, default=3.0, help="distance from the organ surface")
    parser.add_argument("--avoid-margin-mm", type=float, default=3.0, help="distance from vessels, lesions")
    parser.add_argument("--irregularity", type=float, default=0.9, help="surface deformation, 0..1")
    parser.add_argument("--lobulation", type=float, default=0.0, help="lobes, 0..1")
    parser.add_argument("--necrosis", action="store_true", help="add a necrotic core")
    parser.add_argument("--rim", action="store_true", help="add an enhancing rim")
    parser.add_argument("--mass-effect", action="store_true", help="displace the surrounding tissue")
    parser.add_argument("--allow-shrink", action="store_true", help="shrink tumors that do not fit")
    parser.add_argument("--contrast-hu", type=float, help="fixed mean contrast against the organ (HU)")
    parser.add_argument("--seed", type=seed_number, default=0, help="random seed (same seed, same output)")
    parser.add_argument(
        "--allow-non-hu",
        action="store_true",
        help="accept a CT whose values do not look like Hounsfield units (warns instead of refusing)",
    )
    parser.add_argument("--no-snapshot", action="store_true", help="skip snapshot.png")
    parser.add_argument("-o", "--output", required=True, help="output folder")
    parser.set_defaults(handler=command_synthesize)


def command_synthesize(args: argparse.Namespace) -> int:
    from ..files import refuse_input_folder
    from ..labels import align_to, read_labels
    from ..synthesis import TumorSpec, synthesize
    from ..synthesis.outputs import write_result
    from ..volume import read_ct

    spec = TumorSpec(
        organ=args.organ,
        size=args.size,
        diameter_mm=args.diameter_mm,
        count=args.count,
        margin_mm=args.margin_mm,
        avoid_margin_mm=args.avoid_margin_mm,
        irregularity=args.irregularity,
        lobulation=args.lobulation,
        necrosis=args.necrosis,
        rim=args.rim,
        mass_effect=args.mass_effect,
        allow_shrink=args.allow_shrink,
        contrast_hu=args.contrast_hu,
    ).validated()
    refuse_input_folder(args.output, [args.ct, args.organs, args.label_names])
    outputs: dict[str, Path] = {}
    for step in args.reporter.track(["read", "synthesize", "write"], "synthesize"):
        if step == "read":
            ct = read_ct(args.ct, allow_non_hu=args.allow_non_hu)
            organs = align_to(read_labels(args.organs, args.label_names), ct)
        elif step == "synthesize":
            result = synthesize(ct, organs, spec, seed=args.seed)
        else:
            outputs = write_result(result, args.output, snapshot=not args.no_snapshot)
    print_result(
        args,
        {
            "outputs": {key: str(value) for key, value in outputs.items()},
            "tumors": [record.to_dict() for record in result.tumors],
        },
    )
    if not json_mode(args):
        for record in result.tumors:
            x, y, z = record.centre_ras_mm
            print(
                f"{record.organ} tumor: {record.diameter_mm:.1f} mm, {record.volume_ml:.2f} mL, "
                f"{record.contrast_hu:+.0f} HU at RAS ({x:.1f}, {y:.1f}, {z:.1f}) mm"
            )
        print(f"written to {args.output}/ ({', '.join(p.name for p in outputs.values())})")
    return 0
