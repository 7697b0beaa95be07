"""SyntheticTumors and the handcrafted engine timed side by side on the same 96^3 liver patch.

Runs, in turns and never at the same time, ``../shared/bench/peer_synthtumors.py`` (SyntheticTumors'
own code, one lesion per call) and ``freetumor bench synthesis`` on the TotalSegmentator example CT
resampled to 1.5 mm (the same patch), and writes per size class the medians of both, their ratio,
and the ratio of every turn. The peer works in place on a fresh copy of the patch made outside its
clock; the ratio compares it with the engine's in-place calls timed the same way
(``patch96/<size>/in_place``), and ``copying`` gives the ratio against the calls that copy the
patch inside the clock (``patch96/<size>``):

    python scripts/synthesis_side_by_side.py --turns 4 --json docs/bench/synthesis_side_by_side.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = ("tiny", "small", "medium", "large")
# This engine's calls are about ten times shorter than the peer's: 200 of them (the peer: 25) spread
# its timing over seconds too, so that a passing slowdown of the machine moves neither median much.
REPEAT = 200


def _results(path: Path) -> dict[str, float]:
    return {row["name"]: float(row["median"]) for row in json.loads(path.read_text())["results"]}


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _load() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared", help="the shared folder")
    parser.add_argument("--turns", type=int, default=4, help="turns of each, alternating (default 4)")
    parser.add_argument("--json", type=Path, required=True, help="result file")
    parser.add_argument(
        "--repeat",
        type=int,
        default=REPEAT,
        help=f"timed calls per size for this engine (default {REPEAT}; the peer times its default 25)",
    )
    args = parser.parse_args()
    data = args.shared / "data" / "totalseg_example"
    peer_command = [sys.executable, str(args.shared / "bench" / "peer_synthtumors.py"), "--json"]
    ours_command = [sys.executable, "-m", "freetumor_core", "bench", "synthesis", "--progress", "none"]
    ours_command += ["--repeat", str(args.repeat)]
    for option in (
        f"ct={data / 'example_ct.nii.gz'}",
        f"labels={data / 'example_seg_fast_force_split.nii.gz'}",
        "resample_mm=1.5",
    ):
        ours_command += ["--option", option]
    turns = []
    with tempfile.TemporaryDirectory() as scratch:
        for turn in range(1, args.turns + 1):
            peer_json, ours_json = Path(scratch) / f"peer{turn}.json", Path(scratch) / f"ours{turn}.json"
            load_peer = _load()
            subprocess.run([*peer_command, str(peer_json)], check=True, stdout=subprocess.DEVNULL)
            load_ours = _load()
            subprocess.run(
                [*ours_command, "--json", str(ours_json)], check=True, stdout=subprocess.DEVNULL, cwd=ROOT
            )
            peer, ours = _results(peer_json), _results(ours_json)
            turns.append(
                {
                    "turn": turn,
                    "load_average_1_5_15_min": {"synthtumors": load_peer, "freetumor": load_ours},
                    "synthtumors_one_lesion_ms": {s: peer[f"patch96/{s}/one_lesion"] for s in SIZES},
                    "freetumor_in_place_ms": {s: ours[f"patch96/{s}/in_place"] for s in SIZES},
                    "freetumor_copying_ms": {s: ours[f"patch96/{s}"] for s in SIZES},
                }
            )
            last = turns[-1]
            ratios = [last["synthtumors_one_lesion_ms"][s] / last["freetumor_in_place_ms"][s] for s in SIZES]
            print(
                f"turn {turn}: " + ", ".join(f"{s} {r:.1f}x" for s, r in zip(SIZES, ratios, strict=True)),
                flush=True,
            )
    summary = []
    for size in SIZES:
        peer = [t["synthtumors_one_lesion_ms"][size] for t in turns]
        ours = [t["freetumor_in_place_ms"][size] for t in turns]
        copying = [t["freetumor_copying_ms"][size] for t in turns]
        per_turn = [p / o for p, o in zip(peer, ours, strict=True)]
        summary.append(
            {
                "size": size,
                "synthtumors_one_lesion_ms": _spread(peer),
                "freetumor_in_place_ms": _spread(ours),
                "freetumor_copying_ms": _spread(copying),
                "ratio_of_medians": round(statistics.median(peer) / statistics.median(ours), 2),
                "per_turn_ratio": {"min": round(min(per_turn), 2), "max": round(max(per_turn), 2)},
                "copying_ratio_of_medians": round(statistics.median(peer) / statistics.median(copying), 2),
            }
        )
    report = {
        "suite": "synthesis side by side with SyntheticTumors",
        "input": "shared/data/totalseg_example example_ct.nii.gz + example_seg_fast_force_split.nii.gz "
        "resampled to 1.5 mm, 96^3 crop centred on the liver (identical for both)",
        "comparison": "SyntheticTumors patch96/<size>/one_lesion (one SynthesisTumor call in place, lesion "
        "count forced to 1, the patch copied outside the clock) against FreeTumor patch96/<size>/in_place "
        "(one synthesize call in place, count=1, allow_shrink, the patch copied outside the clock); "
        "copying: against patch96/<size> (the call copies the patch inside the clock); each a median of "
        "its own repeats within a turn",
        "order": f"SyntheticTumors then FreeTumor, {args.turns} turns, never at the same time",
        "repeats": {"synthtumors": 25, "freetumor": args.repeat},
        "command": "python scripts/synthesis_side_by_side.py --turns " + str(args.turns),
        "summary": summary,
        "turns": turns,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    for row in summary:
        spread = row["per_turn_ratio"]
        print(
            f"{row['size']}: {row['ratio_of_medians']}x (turns {spread['min']}-{spread['max']}x; "
            f"copying {row['copying_ratio_of_medians']}x)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
