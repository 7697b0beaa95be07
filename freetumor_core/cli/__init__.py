"""The ``freetumor`` command line: the only place that parses arguments, prints and picks exit codes.

Exit codes: 0 success, 2 bad input (a clear message names the file and the problem), 1 internal
error. ``--progress json`` prints one JSON object per line for programs (3D Slicer among them).

Each command group is one module here with ``register(commands, common)``; the library packages
never import this package.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence

from .. import __version__
from ..errors import InputError
from ..progress import make_progress
from .common import common_parser, default_mode

# One module per command group, each with ``register(commands, common)``.
GROUPS: list[str] = [
    "foundation",
    "synthesis",
    "turing",
    "bench",
    "model",
    "train",
    "segmentation",
    "reports",
    "realism",
]


def build_parser() -> argparse.ArgumentParser:
    common = common_parser()
    parser = argparse.ArgumentParser(
        prog="freetumor",
        description="FreeTumor: tumor synthesis in CT and reader studies of synthetic tumors.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"freetumor {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in GROUPS:
        importlib.import_module(f"{__name__}.{group}").register(commands, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.progress = getattr(args, "progress", None) or default_mode()
    reporter = make_progress(args.progress)
    args.reporter = reporter
    warnings.simplefilter("default")
    warnings.formatwarning = lambda message, *_, **__: f"freetumor: warning: {message}\n"
    try:
        return int(args.handler(args) or 0)
    except InputError as error:
        reporter.event("error", message=str(error), exit_code=2)
        print(f"freetumor: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        sys.stderr.close()
        return 0
    except OSError as error:  # the file system refused: a full disk, a read-only or missing folder
        where = f"{error.filename}: " if error.filename else ""
        message = f"{where}{error.strerror or error}"
        reporter.event("error", message=message, exit_code=2)
        print(f"freetumor: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("freetumor: cancelled", file=sys.stderr)
        return 130
    except Exception as error:  # a bug: say so plainly, with the exception type
        reporter.event("error", message=f"{type(error).__name__}: {error}", exit_code=1)
        print(f"freetumor: internal error: {type(error).__name__}: {error}", file=sys.stderr)
        if "--debug" in sys.argv or os.environ.get("FREETUMOR_DEBUG"):
            raise
        return 1
    finally:
        reporter.close()
