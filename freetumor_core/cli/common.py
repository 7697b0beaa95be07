"""Plumbing every command group shares: the common options and the final result."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..progress import MODES


def default_mode() -> str:
    """A bar on a terminal, nothing otherwise."""
    return "bar" if sys.stderr.isatty() else "none"


def common_parser() -> argparse.ArgumentParser:
    """Options every sub-command accepts."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--progress",
        choices=MODES,
        # SUPPRESS: a sub-command's default must not hide a value given before the sub-command.
        default=argparse.SUPPRESS,
        help="progress display: bar (default on a terminal), json (one JSON object per line), none",
    )
    return common


def seed_number(text: str) -> int:
    """An argparse type: a seed is a whole number from 0 to 2^63-1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seed must be a whole number, got {text!r}") from None
    if not 0 <= value < 1 << 63:
        raise argparse.ArgumentTypeError(f"seed must be from 0 to 2^63-1, got {value}")
    return value


def bounded(kind: type, low: float, high: float, what: str):
    """An argparse type: a number of ``kind`` from ``low`` to ``high``."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number, got {text!r}") from None
        if not low <= value <= high:  # also refuses NaN
            raise argparse.ArgumentTypeError(f"{what} must be from {low:g} to {high:g}, got {text}")
        return value

    return parse


def json_mode(args: argparse.Namespace) -> bool:
    """Whether the command runs for a program (``--progress json``)."""
    return args.progress == "json"


def print_result(args: argparse.Namespace, payload: dict[str, Any]) -> None:
    """Final result: a JSON ``done`` event in json mode, else nothing (commands print their own)."""
    if json_mode(args):
        args.reporter.event("done", **payload)


def print_json(args: argparse.Namespace, payload: Any) -> None:
    """A JSON result: the ``done`` event in json mode, else one JSON line on standard output."""
    if json_mode(args):
        print_result(args, payload if isinstance(payload, dict) else {"result": payload})
    else:
        print(json.dumps(payload))
