"""Realism report: ``freetumor realism`` under its script name (see ``docs/realism.md``).

python scripts/realism_report.py --output realism_out --seeds 4
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from freetumor_core.cli import main as freetumor


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``freetumor realism`` with ``argv``; returns the exit code (2 for bad input)."""
    return freetumor(["realism", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
