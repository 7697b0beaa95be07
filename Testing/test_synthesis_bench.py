"""The synthesis benchmark's input: the same 1.5 mm liver patch that the SyntheticTumors harness times."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from freetumor_core.labels import read_labels
from freetumor_core.synthesis.bench import _whole_ct, liver_patch
from freetumor_core.volume import read_ct

PEER = Path(__file__).resolve().parents[1].parent / "shared" / "bench" / "peer_synthtumors.py"


def test_bench_patch_is_the_peer_harness_patch(shared_data, tmp_path):
    if not PEER.is_file():
        pytest.skip(f"the SyntheticTumors harness is not at {PEER}")
    folder = shared_data / "totalseg_example"
    ct_path, seg_path = folder / "example_ct.nii.gz", folder / "example_seg_fast_force_split.nii.gz"
    spec = importlib.util.spec_from_file_location("peer_synthtumors", PEER)
    peer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peer)  # defines functions only; nothing runs on import
    volume, mask, info = peer.liver_patch(str(ct_path), str(seg_path), 5, 1.5, "hu")

    options = {"ct": str(ct_path), "labels": str(seg_path), "resample_mm": "1.5"}
    ct, labels = _whole_ct(options)
    assert ct.spacing == (1.5, 1.5, 1.5) and ct.shape == tuple(info["resampled_shape_xyz"][::-1])
    patch_ct, patch_labels = liver_patch(ct, labels)
    # The peer's arrays are (x, y, z); the project's are (z, y, x).
    np.testing.assert_array_equal(patch_ct.array.transpose(2, 1, 0), volume)
    np.testing.assert_array_equal(patch_labels.mask("liver").transpose(2, 1, 0), mask > 0)

    # write_patch: the same patch as files, which read back identically.
    from freetumor_core.bench import Bench
    from freetumor_core.synthesis import bench as synthesis_bench

    bench = Bench("synthesis", {**options, "write_patch": str(tmp_path)}, repeat=1)
    synthesis_bench.write_patch(bench.options, patch_ct, patch_labels)
    np.testing.assert_array_equal(read_ct(tmp_path / "patch_ct.nii.gz").array, patch_ct.array)
    np.testing.assert_array_equal(read_labels(tmp_path / "patch_labels.nii.gz").array, patch_labels.array)
