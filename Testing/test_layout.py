"""The package's shape: only ``freetumor_core/cli/`` (and ``python -m``'s ``__main__``) import the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _imports_cli(source: str, package: str) -> bool:
    """Whether module source code in ``package`` (dotted) imports ``freetumor_core.cli``."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        if any(name == "freetumor_core.cli" or name.startswith("freetumor_core.cli.") for name in names):
            return True
    return False


def test_nothing_outside_the_cli_package_imports_it():
    sources = [*REPO.glob("freetumor_core/**/*.py"), *REPO.glob("FreeTumorSlicer/**/*.py")]
    sources += list(REPO.glob("scripts/*.py"))
    offenders = [
        str(path.relative_to(REPO))
        for path in sources
        if "cli" not in path.relative_to(REPO).parts
        and path.name != "__main__.py"
        and _imports_cli(path.read_text(encoding="utf-8"), ".".join(path.relative_to(REPO).parts[:-1]))
    ]
    assert offenders == []


def test_the_check_sees_every_spelling_of_an_import():
    spellings = (
        "from ..cli import common",
        "from ..cli.common import print_json",
        "import freetumor_core.cli",
    )
    for text in spellings:
        assert _imports_cli(text, "freetumor_core.synthesis")
    assert _imports_cli("from .cli import main", "freetumor_core")
    assert not _imports_cli("from ..clinic import x", "freetumor_core.synthesis")
    assert not _imports_cli("from .client import x", "freetumor_core")
