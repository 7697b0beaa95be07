"""Is the core installed in Slicer's Python? If not, offer to install it (with the user's consent).

The module panel imports this before anything that needs ``freetumor_core``, so it loads and can
explain what is missing even on a fresh Slicer.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

# What ``pip install`` receives; a local checkout works too (``pip install -e /path/to/FreeTumor``).
CORE_REQUIREMENT = "freetumor-core"
CORE_MODULE = "freetumor_core"


def core_available() -> bool:
    """True when ``freetumor_core`` can be imported by this Python (and so by ``PythonSlicer``)."""
    return importlib.util.find_spec(CORE_MODULE) is not None


def core_version() -> str | None:
    """The installed core's version, or None when it is not installed."""
    if not core_available():
        return None
    return str(getattr(importlib.import_module(CORE_MODULE), "__version__", "unknown"))


def missing_core_message(requirement: str = CORE_REQUIREMENT) -> str:
    """What to tell the user when the core is missing."""
    return (
        f"The FreeTumor core (Python package '{CORE_MODULE}') is not installed in this Python "
        f"({sys.executable}). Install it with: pip install {requirement} "
        "(PyTorch comes with it; for a GPU, install your CUDA build of torch first, for example "
        "with Slicer's PyTorch extension)."
    )


def ensure_core(requirement: str = CORE_REQUIREMENT, ask: bool = True) -> bool:
    """Make sure the core is importable; inside Slicer, offer to ``pip install`` it.

    Args:
        requirement: the pip requirement to install.
        ask: ask the user before installing (always true in the GUI; False only for scripted setups
            that have already asked).

    Returns:
        True when the core is importable now, False when the user declined.

    Raises:
        RuntimeError: the core is missing and this is not running inside Slicer (install it with pip),
            or the installation finished but the package still cannot be imported.
    """
    if core_available():
        return True
    slicer = sys.modules.get("slicer")
    if slicer is None or getattr(slicer, "app", None) is None:
        raise RuntimeError(missing_core_message(requirement))
    if ask and not slicer.util.confirmOkCancelDisplay(
        missing_core_message(requirement) + "\n\nInstall it now? This can take several minutes.",
        "FreeTumor: install the core",
    ):
        return False
    with slicer.util.WaitCursor():
        slicer.util.pip_install(requirement)
    importlib.invalidate_caches()
    if not core_available():
        raise RuntimeError(
            f"'pip install {requirement}' finished but '{CORE_MODULE}' still cannot be imported"
        )
    return True
