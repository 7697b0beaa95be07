"""``freetumor vtt ...``: the Visual Turing Test on the command line (thin over the Python API)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import json_mode, print_json, print_result, seed_number


def command_create(args: argparse.Namespace) -> int:
    from ..turing.build import build_study

    study = build_study(
        args.output,
        args.key,
        args.real,
        args.synthetic_from,
        n_real=args.n_real,
        n_synthetic=args.n_synthetic,
        seed=args.seed,
        progress=args.reporter,
        allow_leaky=args.allow_leaky,
    )
    info = study.info()
    leaks = json.loads(Path(args.key).read_text())["leak_check"]
    if json_mode(args):
        print_result(
            args,
            {
                "outputs": {"study": str(study.folder), "key": args.key},
                "cases": info["cases"],
                "leak_check": {k: leaks[k] for k in ("checked", "leaky", "loo_accuracy", "allowed_leaky")},
            },
        )
    else:
        print(f"study with {info['cases']} cases written to {study.folder}/; key in {args.key}")
        print(leaks["summary"] + (" (built anyway: --allow-leaky)" if leaks["allowed_leaky"] else ""))
    return 0


def command_cases(args: argparse.Namespace) -> int:
    from ..turing.study import Study

    print_json(args, Study.open(args.study).cases(args.reader))
    return 0


def command_show(args: argparse.Namespace) -> int:
    from ..turing.study import Study

    view = Study.open(args.study).case_image(args.case, reader=args.reader)
    print_json(
        args,
        {
            "case": view.case_id,
            "file": str(view.path),
            "window": view.window,
            "box_mm": view.box_mm,
            "shown_at": view.shown_at,
        },
    )
    return 0


def command_answer(args: argparse.Namespace) -> int:
    from ..turing.study import Study

    answer = Study.open(args.study).answer(
        args.reader, args.case, args.call, args.confidence, args.comment, started_at=args.started_at
    )
    print_json(args, answer.to_dict())
    return 0


def command_score(args: argparse.Namespace) -> int:
    from ..turing.scoring import answer_rows, read_key, score, write_csv, write_figure, write_json
    from ..turing.study import Study

    study = Study.open(args.study)
    key = read_key(args.key, study)
    scores = score(study, key)
    outputs = {}
    if args.json:
        outputs["json"] = str(write_json(scores, args.json))
    if args.csv:
        outputs["csv"] = str(write_csv(answer_rows(study, key), args.csv))
    if args.png:
        outputs["png"] = str(write_figure(scores, args.png))
    if json_mode(args):
        print_result(
            args,
            {
                "outputs": outputs,
                "pooled": {k: scores["pooled"][k] for k in ("n", "sensitivity", "specificity", "accuracy")},
            },
        )
        return 0

    def percent(value: float | None) -> str:
        return "   -  " if value is None else f"{100 * value:5.1f}%"

    print(f"{'reader':<20}{'n':>5}  {'sensitivity':>12}{'specificity':>12}{'accuracy':>10}")
    for name, summary in [*scores["readers"].items(), ("pooled", scores["pooled"])]:
        print(
            f"{name:<20}{summary['n']:>5}  {percent(summary['sensitivity']):>12}"
            f"{percent(summary['specificity']):>12}{percent(summary['accuracy']):>10}"
        )
    kappa = scores["agreement"]["fleiss_kappa"]
    kappa_text = "-" if kappa is None else f"{kappa:.3f}"
    print(f"Fleiss' kappa: {kappa_text} over {scores['agreement']['n_cases']} cases")
    for kind, path in outputs.items():
        print(f"{kind}: {path}")
    return 0


def command_info(args: argparse.Namespace) -> int:
    from ..turing.study import Study

    info = Study.open(args.study).info()
    if args.json or json_mode(args):
        print_json(args, info)
        return 0
    print(f"{info['study']}: {info['cases']} cases, window {info['window']}")
    for reader, counts in info["readers"].items():
        print(f"  {reader:<24}{counts['answered']:>5} answered, {counts['remaining']:>5} remaining")
    return 0


def _confidence(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"confidence must be an integer from 1 to 5, got {text!r}") from None
    if not 1 <= value <= 5:
        raise argparse.ArgumentTypeError(f"confidence must be an integer from 1 to 5, got {value}")
    return value


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``vtt`` and its sub-commands."""
    vtt = commands.add_parser(
        "vtt", parents=[common], help="Visual Turing Test: blinded reader studies of real vs synthetic tumors"
    )
    actions = vtt.add_subparsers(dest="vtt_command", metavar="ACTION", required=True)

    create = actions.add_parser("create", parents=[common], help="build a blinded study and its key")
    create.add_argument(
        "--real", required=True, metavar="DATALIST", help="datalist of CTs with real tumor labels"
    )
    create.add_argument(
        "--synthetic-from", required=True, metavar="DATALIST", help="datalist of CTs with organ labels"
    )
    create.add_argument("-o", "--output", required=True, metavar="STUDY", help="study folder to create")
    create.add_argument("--key", required=True, metavar="KEYFILE", help="key file (JSON), outside the study")
    create.add_argument("--n-real", type=int, help="real cases (default: every real lesion)")
    create.add_argument("--n-synthetic", type=int, help="synthetic cases (default: as many as real)")
    create.add_argument(
        "--seed", type=seed_number, default=0, help="draws lesions and hosts (ids and order are secret)"
    )
    create.add_argument(
        "--allow-leaky",
        action="store_true",
        help="build even when image statistics tell real from synthetic (recorded in the key)",
    )
    create.set_defaults(handler=command_create)

    cases = actions.add_parser(
        "cases", parents=[common], help="a reader's remaining case ids, in order (JSON)"
    )
    cases.add_argument("study", metavar="STUDY")
    cases.add_argument("--reader", required=True, metavar="NAME")
    cases.set_defaults(handler=command_cases)

    show = actions.add_parser(
        "show", parents=[common], help="a case's file, window and box (JSON); starts the reader's clock"
    )
    show.add_argument("study", metavar="STUDY")
    show.add_argument("--reader", required=True, metavar="NAME")
    show.add_argument("--case", required=True, metavar="ID")
    show.set_defaults(handler=command_show)

    answer = actions.add_parser("answer", parents=[common], help="submit one answer (locked once submitted)")
    answer.add_argument("study", metavar="STUDY")
    answer.add_argument("--reader", required=True, metavar="NAME")
    answer.add_argument("--case", required=True, metavar="ID")
    answer.add_argument("--call", required=True, choices=("real", "synthetic"))
    answer.add_argument("--confidence", required=True, type=_confidence, metavar="1-5")
    answer.add_argument("--comment", default="", metavar="TEXT")
    answer.add_argument(
        "--started-at", metavar="ISO8601", help="when the reader started on the case (default: when shown)"
    )
    answer.set_defaults(handler=command_answer)

    score = actions.add_parser("score", parents=[common], help="sensitivity, specificity, accuracy, kappa")
    score.add_argument("study", metavar="STUDY")
    score.add_argument("--key", required=True, metavar="KEYFILE")
    score.add_argument("--json", metavar="FILE", help="write the scores as JSON")
    score.add_argument("--csv", metavar="FILE", help="write one row per answer as CSV")
    score.add_argument("--png", metavar="FILE", help="write a figure (PNG)")
    score.set_defaults(handler=command_score)

    info = actions.add_parser("info", parents=[common], help="cases and each reader's progress")
    info.add_argument("study", metavar="STUDY")
    info.add_argument("--json", action="store_true", help="print as JSON")
    info.set_defaults(handler=command_info)
