"""Are PyTorch and the core installed in Slicer's Python? If not, install them with the user's consent.

Both modules call :func:`missing` when they open and :func:`ensure_core` before any work. Nothing is
installed without a confirmation: PyTorch through Slicer's *PyTorch* extension when it is installed
(``PyTorchUtils``, which picks the CUDA build that fits the machine), else with pip; the core with
``slicer.pydeps.pip_ensure`` / ``slicer.packaging.pip_ensure`` where this Slicer has it, else
``slicer.util.pip_install``. Without a connection to the package index the user gets a message
saying so, with the command to run later.

This file imports neither ``freetumor_core`` nor ``torch`` (nor ``slicer`` at module level), so the
module panels load on a fresh Slicer and can explain what is missing.
"""

from __future__ import annotations

import importlib
import importlib.util
import socket
import sys

# What ``pip install`` receives; a local checkout works too (``pip install -e /path/to/FreeTumor``).
CORE_REQUIREMENT = "freetumor-core"
CORE_MODULE = "freetumor_core"
TORCH_MODULE = "torch"
PACKAGE_INDEX = ("pypi.org", 443)
TITLE = "FreeTumor: install dependencies"


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or half-removed installation
        return False


def core_available() -> bool:
    """True when ``freetumor_core`` can be imported by this Python (and so by ``PythonSlicer``)."""
    return _importable(CORE_MODULE)


def core_version() -> str | None:
    """The installed core's version, or None when it is not installed."""
    if not core_available():
        return None
    return str(getattr(importlib.import_module(CORE_MODULE), "__version__", "unknown"))


def missing() -> list[str]:
    """The missing Python packages, in installation order (``torch`` first, then the core)."""
    return [module for module in (TORCH_MODULE, CORE_MODULE) if not _importable(module)]


def missing_core_message(requirement: str = CORE_REQUIREMENT) -> str:
    """What to tell the user when the core is missing."""
    return (
        f"The FreeTumor core (Python package '{CORE_MODULE}') is not installed in this Python "
        f"({sys.executable}). Install it with: pip install {requirement} "
        "(PyTorch comes with it; for a GPU, install your CUDA build of torch first, for example "
        "with Slicer's PyTorch extension)."
    )


def offline_message(requirement: str = CORE_REQUIREMENT) -> str:
    host, port = PACKAGE_INDEX
    return (
        f"Cannot reach the Python package index ({host}:{port}): this computer seems to be offline. "
        f"Connect it and open the module again, or install offline with: "
        f"PythonSlicer -m pip install <downloaded {requirement} wheel> torch"
    )


def index_reachable(timeout_s: float = 3.0) -> bool:
    """True when a TCP connection to the package index opens within ``timeout_s``."""
    try:
        with socket.create_connection(PACKAGE_INDEX, timeout=timeout_s):
            return True
    except OSError:
        return False


def _slicer():
    slicer = sys.modules.get("slicer")
    if slicer is None or getattr(slicer, "app", None) is None:
        return None
    return slicer


def _install_torch(slicer) -> None:
    try:
        import PyTorchUtils  # Slicer's PyTorch extension
    except ImportError:
        slicer.util.pip_install(TORCH_MODULE)
        return
    logic = PyTorchUtils.PyTorchUtilsLogic()
    if not logic.torchInstalled():
        # The user has confirmed already; the extension picks the build for this machine's GPU.
        logic.installTorch(askConfirmation=False)


def _install_requirement(slicer, requirement: str) -> None:
    for name in ("pydeps", "packaging"):
        helper = getattr(slicer, name, None)
        if helper is not None and hasattr(helper, "pip_ensure"):
            from packaging.requirements import Requirement

            helper.pip_ensure([Requirement(requirement)], requester="FreeTumor")
            return
    slicer.util.pip_install(requirement)


def ensure_core(requirement: str = CORE_REQUIREMENT, ask: bool = True) -> bool:
    """Make sure torch and the core are importable; inside Slicer, offer to install what is missing.

    Args:
        requirement: the pip requirement of the core.
        ask: ask the user before installing (always true in the GUI; False only for scripted setups
            that have already asked).

    Returns:
        True when both are importable now, False when the user declined.

    Raises:
        RuntimeError: something is missing and this is not running inside Slicer (install it with
            pip), the package index cannot be reached (the message says so), or the installation
            finished but the package still cannot be imported.
    """
    absent = missing()
    if not absent:
        return True
    slicer = _slicer()
    if slicer is None:
        raise RuntimeError(missing_core_message(requirement))
    names = " and ".join(
        "PyTorch" if name == TORCH_MODULE else f"the FreeTumor core ({requirement})" for name in absent
    )
    if ask and not slicer.util.confirmOkCancelDisplay(
        f"FreeTumor needs {names}, which this Slicer does not have yet.\n\n"
        "Install now? This downloads about 1 GB and can take several minutes.",
        TITLE,
    ):
        return False
    if not index_reachable():
        raise RuntimeError(offline_message(requirement))
    with slicer.util.WaitCursor():
        if TORCH_MODULE in absent:
            _install_torch(slicer)
        if CORE_MODULE in absent:
            _install_requirement(slicer, requirement)
    importlib.invalidate_caches()
    still = missing()
    if still:
        raise RuntimeError(f"the installation finished but {', '.join(still)} still cannot be imported")
    return True
