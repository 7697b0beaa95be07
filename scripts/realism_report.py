"""Realism report: ``freetumor realism`` under its script name (see ``docs/realism.md``).

python scripts/realism_report.py --output realism_out --seeds 4
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m freetumor_core realism`` with ``argv``; returns its exit code (2 for bad input)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    command = [sys.executable, "-m", "freetumor_core", "realism", *arguments]
    return subprocess.run(command, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
