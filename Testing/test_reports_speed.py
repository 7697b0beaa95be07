"""``freetumor bench reports`` on tiny inputs: the result names, exactness and recall (never timings)."""

from __future__ import annotations

import json

import pytest

from freetumor_core.bench import run_suite
from freetumor_core.cli import main


def test_query_benchmarks_report_exact_recall_and_the_approximate_index():
    options = {"parts": "query", "bank": "3000", "large_bank": "12000", "queries": "8"}
    payload = run_suite("reports", options, repeat=1)
    results = {row["name"]: row for row in payload["results"]}
    assert {"query/top10_100k", "query/top10_100k_numpy", "query/top10_1m", "query/top10_1m_exact"} <= set(
        results
    )
    assert results["query/recall10_100k"]["median"] == 1.0  # the exact index is exact
    assert results["query/recall10_1m"]["median"] >= 0.9
    assert all(row["median"] > 0 for name, row in results.items() if name.startswith("query/top10"))
    assert any("3000 and 12000 rows" in note for note in payload["notes"]["remarks"])


@pytest.mark.slow
def test_encode_benchmarks_and_the_volume_hook_through_the_cli(shared_data, tmp_path):
    output = tmp_path / "reports.json"
    ct = shared_data / "totalseg_example" / "example_ct.nii.gz"
    options = ["--option", "parts=encode,volume", "--option", "sentences=8", "--option", f"ct={ct}"]
    assert main(["bench", "reports", "--repeat", "1", "--json", str(output), *options]) == 0
    payload = json.loads(output.read_text())
    results = {row["name"]: row["median"] for row in payload["results"]}
    assert results["encode/sentences_per_s"] > 0 and results["encode/sentences_per_s_fp32"] > 0
    assert results["encode/fidelity"] >= 0.999 and results["encode/fidelity_worst"] >= 0.998
    assert results["encode/fidelity"] >= results["encode/fidelity_worst"]
    # the volume hook: an untrained model of the default architecture, said so in the notes
    assert results["embed/volume"] > 0 and results["embed/volume_network"] > 0
    remarks = " ".join(payload["notes"]["remarks"])
    assert "untrained report model of the default architecture" in remarks and "122x101x112" in remarks
