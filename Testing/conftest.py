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


def real_lesion_entries(shared_data: Path) -> list[dict]:
    """Datalist entries of the real tumors in HU: the two IRCADb liver tumors (one label map) and
    the DeepLesion abdominal mass."""
    ircadb = shared_data / "ircadb_liver_tumor"
    deeplesion = shared_data / "deeplesion_medsam2"
    return [
        {
            "image": str(ircadb / "ircadb1_17_ct.nii.gz"),
            "label": str(ircadb / "ircadb1_17_labels.nii.gz"),
            "organ": "liver",
            "tumor_label": 2,
        },
        {
            "image": str(deeplesion / "000015_01_01_103-115_ct_hu.nii.gz"),
            "label": str(deeplesion / "000015_01_01_103-115_lesion_mask_DERIVED.nii.gz"),
            "organ": "abdomen",
        },
    ]


@pytest.fixture(scope="session")
def tiny_segmenter(tmp_path_factory, phantom) -> Path:
    """A real, tiny liver-tumor segmentation model folder, trained here in seconds on phantom crops
    with clearly visible (hypo- and hyperdense) synthetic tumors: it finds visible tumors and misses
    invisible ones, because it learned from what it saw."""
    from segmenter_fixture import train_tiny_segmenter

    return train_tiny_segmenter(tmp_path_factory.mktemp("tiny_segmenter"), phantom)
