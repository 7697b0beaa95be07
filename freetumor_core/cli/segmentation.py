"""``freetumor segment`` (whole-CT tumor segmentation) and ``freetumor evaluate`` (metrics)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import bounded, json_mode, print_result


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``segment`` and ``evaluate``."""
    segment = commands.add_parser(
        "segment",
        parents=[common],
        help="segment organs and tumors in a whole CT with a segmentation model folder",
        description="Writes labels.nii.gz (+ labels.json), lesions.json and snapshot.png in the CT's "
        "own geometry.",
    )
    segment.add_argument("ct", help="CT in HU (NIfTI, NRRD, MetaImage or a DICOM folder)")
    segment.add_argument("-o", "--output", required=True, help="output folder")
    segment.add_argument(
        "--model",
        metavar="DIR",
        default=None,
        help="segmentation model folder, or a shipped model's name (default: segmenter_demo, the "
        "shipped demo model: see its card with `freetumor model info segmenter_demo`)",
    )
    segment.add_argument(
        "--organs",
        help="organ label map: inside a given organ a voxel is that organ or its tumor, outside it neither",
    )
    segment.add_argument("--label-names", help="name map of --organs: a JSON file, or the JSON itself")
    segment.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    segment.add_argument(
        "--overlap",
        type=bounded(float, 0.0, 0.95, "overlap"),
        default=0.25,
        help="sliding-window overlap, 0 to 0.95 (default 0.25)",
    )
    segment.add_argument("--tta", action="store_true", help="average over flips of each axis (4x slower)")
    segment.add_argument(
        "--min-tumor-ml",
        type=bounded(float, 0.0, 1e6, "min-tumor-ml"),
        default=None,
        help="remove tumor pieces below this volume, mL (default: a 5 mm ball, 0.065 mL)",
    )
    segment.add_argument(
        "--batch-size", type=bounded(int, 1, 64, "batch-size"), default=1, help="windows per pass (default 1)"
    )
    segment.add_argument(
        "--allow-non-hu", action="store_true", help="accept a CT that does not look like HU (warns instead)"
    )
    segment.add_argument("--no-snapshot", action="store_true", help="skip snapshot.png")
    segment.set_defaults(handler=command_segment)

    evaluate = commands.add_parser(
        "evaluate",
        parents=[common],
        help="Dice, surface Dice and lesion detection of predicted label maps against ground truth",
        description='Compare PRED with GT, or every entry ({"pred": ..., "label": ...}) of '
        "--datalist. Prints a table; --json and --csv write the report.",
    )
    evaluate.add_argument("pred", nargs="?", help="predicted label map")
    evaluate.add_argument("gt", nargs="?", help="ground-truth label map")
    evaluate.add_argument("--datalist", metavar="FILE", help="JSON datalist of pred/label pairs")
    evaluate.add_argument("--pred-names", help="name map of the predictions: a JSON file or the JSON")
    evaluate.add_argument("--gt-names", help="name map of the ground truth: a JSON file or the JSON")
    evaluate.add_argument(
        "--nsd-tolerance-mm",
        type=bounded(float, 0.0, 100.0, "nsd-tolerance-mm"),
        default=2.0,
        help="surface Dice tolerance, mm (default 2)",
    )
    evaluate.add_argument("--json", metavar="FILE", help="write the report as JSON")
    evaluate.add_argument("--csv", metavar="FILE", help="write one row per case (and 'all') as CSV")
    evaluate.set_defaults(handler=command_evaluate)


def command_segment(args: argparse.Namespace) -> int:
    from ..files import refuse_input_folder
    from ..labels import align_to, read_labels
    from ..lesions import MIN_LESION_ML
    from ..models import resolve_model
    from ..segmentation import segment, write_segmentation
    from ..segmentation.networks import DEFAULT_MODEL
    from ..volume import read_ct

    args.model = str(resolve_model(args.model or DEFAULT_MODEL))
    names_file = None if (args.label_names or "").lstrip().startswith("{") else args.label_names
    refuse_input_folder(args.output, [args.ct, args.organs, names_file, args.model])
    organs = None
    for step in args.reporter.track(["read", "segment", "write"], "segment CT"):
        if step == "read":
            ct = read_ct(args.ct, allow_non_hu=args.allow_non_hu)
            if args.organs:
                organs = align_to(read_labels(args.organs, args.label_names), ct)
        elif step == "segment":
            result = segment(
                ct,
                args.model,
                organs=organs,
                device=args.device,
                overlap=args.overlap,
                tta=args.tta,
                min_tumor_ml=MIN_LESION_ML if args.min_tumor_ml is None else args.min_tumor_ml,
                batch_size=args.batch_size,
                progress=args.reporter,
            )
        else:
            outputs = write_segmentation(result, ct, args.output, snapshot=not args.no_snapshot)
    print_result(
        args,
        {
            "outputs": {key: str(value) for key, value in outputs.items()},
            "lesions": [lesion.to_dict() for lesion in result.lesions],
            "settings": result.settings,
        },
    )
    if not json_mode(args):
        for lesion in result.lesions:
            record = lesion.record
            x, y, z = record.centre_ras_mm
            print(
                f"{record.organ} lesion: {record.diameter_mm:.1f} mm, {record.volume_ml:.2f} mL, "
                f"score {lesion.score:.2f} at RAS ({x:.1f}, {y:.1f}, {z:.1f}) mm"
            )
        print(
            f"{len(result.lesions)} lesion(s) in {result.settings['seconds']:.1f} s on "
            f"{result.settings['device']}; written to {args.output}/ "
            f"({', '.join(p.name for p in outputs.values())})"
        )
    return 0


def command_evaluate(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..files import write_json, write_text
    from ..segmentation.evaluation import evaluate_datalist, evaluate_files, format_table, report_csv

    if args.datalist and (args.pred or args.gt):
        raise InputError("give either PRED GT or --datalist FILE, not both")
    if not args.datalist and not (args.pred and args.gt):
        raise InputError("give PRED and GT label maps, or --datalist FILE")
    if args.datalist:
        report = evaluate_datalist(
            args.datalist, args.pred_names, args.gt_names, args.nsd_tolerance_mm, progress=args.reporter
        )
    else:
        report = evaluate_files(args.pred, args.gt, args.pred_names, args.gt_names, args.nsd_tolerance_mm)
    written = {}
    if args.json:
        written["json"] = str(write_json(Path(args.json), report))
    if args.csv:
        written["csv"] = str(write_text(Path(args.csv), report_csv(report)))
    if json_mode(args):
        print_result(args, {"summary": report["summary"], "outputs": written})
    else:
        print(format_table(report))
        for kind, path in written.items():
            print(f"{kind} written to {path}")
    return 0
