"""``freetumor synthesize``: tumors into a CT from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import json_mode, print_result, seed_number


def register(commands, common) -> None:
    """Add the ``synthesize`` sub-command; its tumor options are the fields of ``TumorSpec``."""
    parser = commands.add_parser(
        "synthesize",
        parents=[common],
        help="put synthetic tumors into an organ of a CT",
        description=(
            "Writes ct.nii.gz, labels.nii.gz (+ labels.json), tumors.json and snapshot.png. Tumor "
            "options come from --spec FILE (a TumorSpec JSON file), and flags given explicitly "
            "override the file's values."
        ),
    )
    parser.add_argument("ct", help="CT in HU (NIfTI, NRRD, MetaImage or a DICOM folder)")
    parser.add_argument("--organs", required=True, help="organ label map on (or overlapping) the CT")
    parser.add_argument("--label-names", help='name map: a JSON file, or the JSON itself ({"1": "liver"})')
    parser.add_argument("--spec", help="tumor spec JSON file (TumorSpec fields); flags override it")
    add_spec_flags(parser)
    parser.add_argument("--seed", type=seed_number, default=0, help="random seed (same seed, same output)")
    parser.add_argument(
        "--allow-non-hu",
        action="store_true",
        help="accept a CT whose values do not look like Hounsfield units (warns instead of refusing)",
    )
    parser.add_argument("--no-snapshot", action="store_true", help="skip snapshot.png")
    parser.add_argument("-o", "--output", required=True, help="output folder")
    parser.set_defaults(handler=command_synthesize)


def add_spec_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per ``TumorSpec`` field, from its definition; a flag not given leaves no value in
    the namespace, so the spec file's value (or the field's default) stands."""
    from ..synthesis.spec import flag_name, spec_fields

    groups: dict[str, argparse._MutuallyExclusiveGroup] = {}
    for spec_field in spec_fields():
        metadata = spec_field.metadata
        target = parser
        if metadata["exclusive"]:
            if metadata["exclusive"] not in groups:
                groups[metadata["exclusive"]] = parser.add_mutually_exclusive_group()
            target = groups[metadata["exclusive"]]
        options: dict = {"dest": spec_field.name, "default": argparse.SUPPRESS, "help": _help(spec_field)}
        if metadata["kind"] is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["type"] = metadata["kind"]
            if metadata["choices"]:
                options["choices"] = list(metadata["choices"])
        target.add_argument(flag_name(spec_field), **options)


def _help(spec_field) -> str:
    metadata = spec_field.metadata
    details = []
    if metadata["range"] is not None:
        low, high = metadata["range"]
        details.append(f"{'>' if metadata['low_open'] else ''}{low:g}..{high:g}")
    if metadata["unit"]:
        details.append(metadata["unit"])
    if spec_field.default is not None and metadata["kind"] is not bool:
        details.append(f"default {spec_field.default}")
    # argparse expands % in help texts.
    text = metadata["help"].replace("%", "%%")
    return f"{text} ({', '.join(details)})" if details else text


def spec_from_arguments(args: argparse.Namespace):
    """The ``TumorSpec`` of a command line: the ``--spec`` file (or the defaults), then every flag
    given explicitly; choosing one of a set of alternatives (``--size`` / ``--diameter-mm``) clears
    the file's value of the others.

    Raises:
        InputError: a bad spec file or value (naming the file and the field).
    """
    import dataclasses

    from ..synthesis import TumorSpec
    from ..synthesis.spec import spec_fields

    spec = TumorSpec.from_json(args.spec) if args.spec else TumorSpec()
    fields = {spec_field.name: spec_field for spec_field in spec_fields()}
    given = {name: getattr(args, name) for name in fields if hasattr(args, name)}
    cleared = {}
    for name in given:
        group = fields[name].metadata["exclusive"]
        if group:
            cleared.update({other: None for other in fields if fields[other].metadata["exclusive"] == group})
    return dataclasses.replace(spec, **{**cleared, **given}).validated()


def command_synthesize(args: argparse.Namespace) -> int:
    from ..files import refuse_input_folder
    from ..labels import align_to, read_labels
    from ..synthesis import synthesize
    from ..synthesis.outputs import write_result
    from ..volume import read_ct

    spec = spec_from_arguments(args)
    names_file = None if (args.label_names or "").lstrip().startswith("{") else args.label_names
    refuse_input_folder(args.output, [args.ct, args.organs, names_file])
    outputs: dict[str, Path] = {}
    for step in args.reporter.track(["read", "synthesize", "write"], "synthesize"):
        if step == "read":
            ct = read_ct(args.ct, allow_non_hu=args.allow_non_hu)
            organs = align_to(read_labels(args.organs, args.label_names), ct)
        elif step == "synthesize":
            result = synthesize(ct, organs, spec, seed=args.seed, progress=args.reporter)
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
