"""``freetumor reports ...``: MG-3D report matching (``zero-shot-text``, ``sentences``, ``make-corpus``,
``index``, ``match``, ``search``, ``findings``)."""

from __future__ import annotations

import argparse
import json

from .common import bounded, json_mode, print_result

DEFAULT_MODEL = "reports_demo"  # the shipped demo model (freetumor_core/data/models)


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


def command_make_corpus(args: argparse.Namespace) -> int:
    from ..reports.corpus import default_real_hosts, make_corpus
    from ..reports.model import default_preprocessing

    real = default_real_hosts(args.data) if args.data else []
    summary = make_corpus(
        args.output,
        phantoms=args.phantoms,
        cases_per_host=args.cases_per_host,
        real_hosts=real,
        real_cases_per_host=args.real_cases_per_host,
        preprocessing=default_preprocessing(args.input_voxels, args.spacing_mm),
        validation_fraction=args.validation_fraction,
        seed=args.seed,
        progress=args.reporter,
    )
    if json_mode(args):
        print_result(args, summary)
    else:
        print(
            f"{summary['cases']} cases ({summary['training']} training, {summary['validation']} held out, "
            f"{summary['tumors']} tumors) from {summary['hosts']} hosts; datalist {summary['datalist']}"
        )
    return 0


def command_index(args: argparse.Namespace) -> int:
    from ..reports.index import build_ct_index, build_report_index, read_report_bank
    from ..reports.model import load_report_model

    model = load_report_model(args.model, device=args.device)
    if args.cts:
        index = build_ct_index(model, args.cts, args.output, progress=args.reporter)
    else:
        index = build_report_index(model, read_report_bank(args.reports), args.output, progress=args.reporter)
    payload = {
        "index": str(index.folder),
        "kind": index.kind,
        "count": len(index),
        "dimension": index.meta["dimension"],
    }
    if json_mode(args):
        print_result(args, payload)
    else:
        print(f"indexed {len(index)} {index.kind} into {index.folder}")
    return 0


def _model_for_index(args: argparse.Namespace, kind: str):
    from ..reports.index import read_index
    from ..reports.model import load_report_model

    index = read_index(args.index, kind=kind)
    model = load_report_model(args.model or index.meta.get("model_folder", ""), device=args.device)
    return model, index


def _emit(args: argparse.Namespace, payload: dict) -> bool:
    """Write/print JSON when asked; True when the plain-text listing should follow."""
    from ..files import write_json

    if args.json_file:
        write_json(args.json_file, payload)
    if json_mode(args):
        print_result(args, payload)
        return False
    if args.json:
        print(json.dumps(payload, indent=1))
        return False
    return True


def command_match(args: argparse.Namespace) -> int:
    from ..reports.index import match_ct, zero_shot_findings

    model, index = _model_for_index(args, "reports")
    results = match_ct(model, args.ct, index, k=args.k, sentences=args.sentences)
    payload = {"ct": args.ct, "index": args.index, "results": results}
    if args.findings:
        payload["findings"] = zero_shot_findings(model, args.ct)
    if _emit(args, payload):
        for result in results:
            print(f"{result['rank']:>3}  {result['score']:.3f}  {result['id']}")
            for sentence in result["matched_sentences"]:
                print(f"       {sentence['score']:.3f}  {sentence['text']}")
        for name, finding in payload.get("findings", {}).items():
            print(f"finding {name:<20} p={finding['probability']:.3f}")
    return 0


def command_search(args: argparse.Namespace) -> int:
    from ..reports.index import search_text

    model, index = _model_for_index(args, "cts")
    results = search_text(model, args.text, index, k=args.k)
    payload = {"query": args.text, "index": args.index, "results": results}
    if _emit(args, payload):
        for result in results:
            print(f"{result['rank']:>3}  {result['score']:.3f}  {result['id']}  {result['path']}")
    return 0


def command_findings(args: argparse.Namespace) -> int:
    from ..reports.index import zero_shot_findings
    from ..reports.model import load_report_model

    model = load_report_model(args.model, device=args.device)
    payload = {"ct": args.ct, "findings": zero_shot_findings(model, args.ct)}
    if _emit(args, payload):
        for name, finding in payload["findings"].items():
            print(f"{name:<20} p={finding['probability']:.3f}")
    return 0


def _json_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--json-file", metavar="FILE", help="also write the result as JSON to FILE")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")


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

    from .common import seed_number

    corpus = actions.add_parser(
        "make-corpus",
        parents=[common],
        help="synthetic tumors in phantoms and real CTs, with a report per case (a training datalist)",
    )
    corpus.add_argument("-o", "--output", required=True, metavar="DIR", help="corpus folder")
    corpus.add_argument("--data", metavar="DIR", help="shared data folder with real host CTs (optional)")
    corpus.add_argument(
        "--phantoms", type=bounded(int, 0, 10000, "phantoms"), default=40, help="phantom hosts"
    )
    corpus.add_argument(
        "--cases-per-host", type=bounded(int, 1, 100, "cases per host"), default=3, help="cases per phantom"
    )
    corpus.add_argument(
        "--real-cases-per-host", type=bounded(int, 1, 1000, "real cases per host"), default=8,
        help="cases per real CT (default 8)",
    )  # fmt: skip
    corpus.add_argument(
        "--input-voxels", type=bounded(int, 32, 256, "input voxels"), default=64, help="model input edge"
    )
    corpus.add_argument(
        "--spacing-mm", type=bounded(float, 0.5, 20.0, "spacing"), default=4.0, help="model input spacing"
    )
    corpus.add_argument(
        "--validation-fraction", type=bounded(float, 0.01, 0.99, "validation fraction"), default=0.2,
        help="share of cases held out (default 0.2)",
    )  # fmt: skip
    corpus.add_argument("--seed", type=seed_number, default=0, help="random seed (default 0)")
    corpus.set_defaults(handler=command_make_corpus)

    index = actions.add_parser(
        "index", parents=[common], help="embed a report bank or a set of CTs into an index folder"
    )
    index.add_argument("-o", "--output", required=True, metavar="DIR", help="index folder")
    index.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        metavar="DIR",
        help=f"report model folder or name (default {DEFAULT_MODEL})",
    )
    bank = index.add_mutually_exclusive_group(required=True)
    bank.add_argument(
        "--reports", metavar="BANK", help="reports: CSV, JSONL, datalist JSON or a folder of .txt"
    )
    bank.add_argument("--cts", nargs="+", metavar="CT", help="CT files")
    index.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    index.set_defaults(handler=command_index)

    match = actions.add_parser("match", parents=[common], help="the reports of an index that best match a CT")
    match.add_argument("ct", metavar="CT", help="a CT file")
    match.add_argument("--index", required=True, metavar="DIR", help="an index of reports")
    match.add_argument("--model", metavar="DIR", help="report model (default: the one the index names)")
    match.add_argument("-k", type=bounded(int, 1, 10000, "k"), default=5, help="results (default 5)")
    match.add_argument(
        "--sentences", type=bounded(int, 0, 32, "sentences"), default=3, help="matched sentences shown"
    )
    match.add_argument("--findings", action="store_true", help="also give zero-shot findings")
    _json_flags(match)
    match.set_defaults(handler=command_match)

    search = actions.add_parser("search", parents=[common], help="the CTs of an index that best match a text")
    search.add_argument("text", metavar="TEXT", help='a finding, e.g. "hypodense liver lesion"')
    search.add_argument("--index", required=True, metavar="DIR", help="an index of CTs")
    search.add_argument("--model", metavar="DIR", help="report model (default: the one the index names)")
    search.add_argument("-k", type=bounded(int, 1, 10000, "k"), default=5, help="results (default 5)")
    _json_flags(search)
    search.set_defaults(handler=command_search)

    findings = actions.add_parser(
        "findings", parents=[common], help="zero-shot findings of a CT from positive/negative prompt pairs"
    )
    findings.add_argument("ct", metavar="CT", help="a CT file")
    findings.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        metavar="DIR",
        help=f"report model folder or name (default {DEFAULT_MODEL})",
    )
    _json_flags(findings)
    findings.set_defaults(handler=command_findings)
