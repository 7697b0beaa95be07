"""Shared fixtures: the real CT data beside the repository, the phantom, and temporary outputs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FREETUMOR_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``: fails under CI (``CI=true``) when missing, skips elsewhere."""
    if not SHARED_DATA.is_dir():
        message = f"real test data not found at {SHARED_DATA}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return SHARED_DATA


@pytest.fixture(scope="session")
def phantom():
    """The default phantom ``(ct, labels)``; built once per test session (treat as read-only)."""
    from freetumor_core.phantom import make_phantom

    return make_phantom(seed=0)
