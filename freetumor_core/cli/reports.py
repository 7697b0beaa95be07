"""``freetumor reports ...``: MG-3D report matching (``zero-shot-text``, ``sentences``)."""

from __future__ import annotations

import argparse
import json

from .common import bounded, json_mode, print_result


def command_zero_shot_text(args: argparse.Namespace) -> int:
    from ..files import write_json
    from ..reports import zero_shot_text

    result = zero_shot_text(
        args.table, model=args.encoder, device=args.device, batch_size=args.batch_size, progress=args.reporter
    )
    if args.json:
        write_json(args.json, result)
    if json_mode(args):
        print_result(args, result)
        return 0
    print(f"{'abnormality':<36} {'n_pos':>5} {'AUC plain':>10} {'AUC negation':>13}")
    for name, entry in result["abnormalities"].items():
        plain, negation = entry["auc_plain"], entry["auc_negation"]
        shown = [f"{value:.3f}" if value is not None else "-" for value in (plain, negation)]
        print(f"{name:<36} {entry['n_pos']:>5} {shown[0]:>10} {shown[1]:>13}")
    if result["mean_auc_plain"] is not None:
        print(f"{'mean':<36} {'':>5} {result['mean_auc_plain']:>10.3f} {result['mean_auc_negation']:>13.3f}")
    return 0


def command_sentences(args: argparse.Namespace) -> int:
    from ..files import read_small_text
    from ..reports import split_report

    text = args.text if args.text is not None else read_small_text(args.file, "report")
    sentences = [
        {
            "section": s.section,
            "text": s.text,
            "phrases": [{"text": p.text, "polarity": p.polarity} for p in s.phrases],
        }
        for s in split_report(text)
    ]
    if json_mode(args):
        print_result(args, {"sentences": sentences})
    elif args.json:
        print(json.dumps(sentences, indent=1))
    else:
        for s in sentences:
            phrases = " | ".join(f"[{p['polarity']}] {p['text']}" for p in s["phrases"])
            print(f"{s['section']:<10} {phrases}")
    return 0


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``reports`` and its sub-commands."""
    reports = commands.add_parser("reports", parents=[common], help="CT-report matching (MG-3D): report text")
    actions = reports.add_subparsers(dest="reports_command", metavar="ACTION", required=True)

    zero = actions.add_parser(
        "zero-shot-text",
        parents=[common],
        help="AUC per abnormality column of a CT-RATE-style CSV from the report text alone",
    )
    zero.add_argument("table", metavar="CSV", help="AccessionNo, report_text, one 0/1 column per abnormality")
    zero.add_argument("--json", metavar="FILE", help="write the result as JSON")
    zero.add_argument("--encoder", metavar="DIR", help="a local Hugging Face model folder (default MiniLM)")
    zero.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    zero.add_argument(
        "--batch-size", type=bounded(int, 1, 4096, "batch size"), default=64, help="sentences per batch"
    )
    zero.set_defaults(handler=command_zero_shot_text)

    sentences = actions.add_parser(
        "sentences",
        parents=[common],
        help="a report's sentences with their affirmed/negated/uncertain phrases",
    )
    source = sentences.add_mutually_exclusive_group(required=True)
    source.add_argument("file", metavar="FILE", nargs="?", help="a report as a text file")
    source.add_argument("--text", help="the report text itself")
    sentences.add_argument("--json", action="store_true", help="print JSON")
    sentences.set_defaults(handler=command_sentences)
