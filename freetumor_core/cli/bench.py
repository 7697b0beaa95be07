"""``freetumor bench SUITE``: benchmark suites to JSON."""

from __future__ import annotations

import argparse

from .common import bounded, json_mode, print_result


def _option(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not equals or not key.strip():
        raise argparse.ArgumentTypeError(f"suite option must look like KEY=VALUE, got {text!r}")
    return key.strip(), value


def command_bench(args: argparse.Namespace) -> int:
    from ..bench import format_table, run_suite
    from ..files import write_json

    options = dict(args.option)
    payload = run_suite(args.suite, options, repeat=args.repeat, progress=args.reporter)
    if args.json:
        write_json(args.json, payload, indent=2)
    if json_mode(args):
        print_result(args, {"outputs": {"json": args.json}} if args.json else payload)
    else:
        print(format_table(payload))
    return 0


def register(commands, common) -> None:
    """Add ``bench``."""
    bench = commands.add_parser("bench", parents=[common], help="run a benchmark suite")
    bench.add_argument("suite", help="suite name (io, synthesis, ...)")
    bench.add_argument("--json", help="write results to this JSON file")
    bench.add_argument(
        "--repeat", type=bounded(int, 1, 1000, "--repeat"), default=5, help="timed runs per measurement"
    )
    bench.add_argument(
        "--option", action="append", default=[], type=_option, metavar="KEY=VALUE", help="suite option"
    )
    bench.set_defaults(handler=command_bench)
