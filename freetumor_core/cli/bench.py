"""``freetumor bench SUITE``: benchmark suites to JSON."""

from __future__ import annotations

import argparse

from .common import json_mode, print_result


def command_bench(args: argparse.Namespace) -> int:
    from ..bench import format_table, run_suite
    from ..files import write_json

    options = dict(option.split("=", 1) for option in args.option)
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
    bench.add_argument("--repeat", type=int, default=5, help="timed runs per measurement")
    bench.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="suite option")
    bench.set_defaults(handler=command_bench)
