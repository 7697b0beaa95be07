"""Does the adversarial engine help segmentation? The demo segmenter trained twice, compared.

    python scripts/compare_synthesis_engines.py --work RUNS/compare --steps 300 --schedule-steps 700 \\
        --cases 5 --json docs/bench/engine_comparison.json

1. Training: ``scripts/train_demo_segmenter.py``'s recipe (the same hosts, crops, schedule, seed
   and ``--steps``) once per engine (``--engines``, default handcrafted and adversarial): the
   online tumors and the tumors painted beforehand come from that engine through the synthesis
   seam (the adversarial engine with the shipped ``synthesizer_demo``). Each run lives in
   ``WORK/<engine>/`` (resumes; the models are written to ``WORK/<engine>/model``, never into the
   package).
2. Evaluation of every model on:
   a. held-out synthetic cases (the demo script's: phantoms with unseen seeds, the two real hosts
      with synthesis seeds never used in training), painted once by each engine;
   b. IRCADb 17's two real liver tumors (no segmenter saw them; the synthesizer was trained on them);
   c. the DeepLesion lesions with masks (``freetumor_core.realism``'s readers): the mass stored in
      HU (the synthesizer saw it) and the three 8-bit lesions mapped back to HU (neither model saw
      them). These are abdominal, retroperitoneal or pelvic masses outside the model's organs, so
      besides the post-processed lesions (whose organ rules may remove them) the raw tumor
      probability is scored too: the fraction of the lesion's voxels at >= 0.5 and its lesions.

Lesion sensitivity (with the Wilson 95% interval), lesion Dice and false-positive lesions per
model, as JSON (``--json``). ``--phase train`` or ``--phase evaluate`` runs one half.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))

from train_demo_segmenter import (  # noqa: E402
    ROOT,
    case_summary,
    paint,
    synthetic_cases,
    train_segmenter,
    wilson,
)

from freetumor_core.errors import InputError  # noqa: E402
from freetumor_core.labels import align_to, read_labels  # noqa: E402
from freetumor_core.models import save_model  # noqa: E402
from freetumor_core.progress import make_progress  # noqa: E402
from freetumor_core.segmentation import segment  # noqa: E402
from freetumor_core.segmentation.evaluation import evaluate_labels, tumor_mask  # noqa: E402
from freetumor_core.segmentation.metrics import match_lesions  # noqa: E402
from freetumor_core.volume import read_ct  # noqa: E402

ENGINES = ("handcrafted", "adversarial")
IRCADB17_NAMES = {1: "liver", 2: "liver_tumor", 3: "hepatic_vessels"}
PROBABILITY = 0.5


def train_all(args, progress) -> dict:
    """Train one segmenter per engine (same settings); returns ``{engine: training info}``."""
    info = {}
    for engine in args.engines:
        folder = args.work / engine
        started = time.perf_counter()
        network, config, minutes = train_segmenter(
            folder,
            args.data,
            engine=engine,
            steps=args.steps,
            crop_voxels=args.crop_voxels,
            phantoms=args.phantoms,
            variants=args.variants,
            seed=args.seed,
            schedule_steps=args.schedule_steps,
            device=args.device,
            progress=progress,
        )
        save_model(folder / "model", network, config)
        info[engine] = {
            "model": str(folder / "model"),
            "steps": config.provenance["steps"],
            "minutes": round(minutes, 1),
            "wall_minutes_this_call": round((time.perf_counter() - started) / 60, 1),
            "validation": config.provenance.get("validation"),
        }
        (folder / "training.json").write_text(json.dumps(info[engine], indent=1), encoding="utf-8")
    return info


def _rate(hits: int, total: int) -> dict:
    rate = round(hits / total, 3) if total else None
    return {"hits": hits, "of": total, "rate": rate, "wilson_95": wilson(hits, total)}


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(float(np.mean(values)), 4) if values else None


def held_out_synthetic(
    models: dict, data: Path, engines, device: str, progress, cases: int | None = None
) -> dict:
    """Per tumor engine and model: the cases (the first ``cases`` of them) and their totals."""
    out: dict = {}
    skipped: list[dict] = []
    for tumor_engine in engines:
        per_model: dict = {name: [] for name in models}
        for name, ct, labels, specs, seed in progress.track(
            synthetic_cases(data)[:cases], f"held-out cases ({tumor_engine} tumors)"
        ):
            try:
                painted, truth = paint(ct, labels, specs, seed, engine=tumor_engine)
            except InputError as error:  # no room for this plan with this engine's margins
                skipped.append({"case": name, "engine": tumor_engine, "error": str(error)})
                continue
            for model_name, folder in models.items():
                predicted = segment(painted, folder, device=device)
                summary = case_summary(evaluate_labels(predicted.labels, truth, case=name))
                summary["case"] = name
                per_model[model_name].append(summary)
        out[tumor_engine] = {}
        for model_name, summaries in per_model.items():
            tp = sum(c["tp"] for c in summaries)
            fn = sum(c["fn"] for c in summaries)
            fp = sum(c["fp"] for c in summaries)
            lesion_dices = [lesion["dice"] for c in summaries for lesion in c["truth_lesions"]]
            out[tumor_engine][model_name] = {
                "sensitivity": _rate(tp, tp + fn),
                "false_positive_lesions": fp,
                "mean_tumor_dice": _mean([c["tumor_dice"] for c in summaries]),
                "mean_lesion_dice_all": _mean([d or 0.0 for d in lesion_dices]),
                "mean_lesion_dice_matched": _mean(lesion_dices),
                "cases": summaries,
            }
    out["skipped"] = skipped
    return out


def ircadb17(models: dict, data: Path, device: str) -> dict:
    folder = data / "ircadb_liver_tumor"
    ct = read_ct(folder / "ircadb1_17_ct.nii.gz")
    truth = align_to(read_labels(folder / "ircadb1_17_labels.nii.gz", IRCADB17_NAMES), ct)
    out = {}
    for model_name, model in models.items():
        predicted = segment(ct, model, device=device)
        summary = case_summary(evaluate_labels(predicted.labels, truth, case="ircadb17"))
        found = sum(lesion["dice"] is not None for lesion in summary["truth_lesions"])
        out[model_name] = {
            "found": _rate(found, len(summary["truth_lesions"])),
            "lesion_dice": [lesion["dice"] for lesion in summary["truth_lesions"]],
            "tumor_dice": summary["tumor_dice"],
            "false_positive_lesions": summary["fp"],
            "liver_dice": summary["organ_dice"].get("liver"),
        }
    return out


def _lesion_scores(predicted_mask: np.ndarray, truth: np.ndarray, spacing) -> dict:
    counts, truth_lesions, _ = match_lesions(predicted_mask, truth, spacing)
    return {
        "found": counts.tp > 0,
        "lesion_dice": truth_lesions[0].dice if truth_lesions else None,
        "false_positive_lesions": counts.fp,
    }


def deeplesion(models: dict, data: Path, device: str) -> dict:
    """The four DeepLesion lesions with masks, by what the synthesizer saw."""
    from freetumor_core.realism import REAL_READERS

    lesions = [(lesion, True) for lesion in REAL_READERS["deeplesion_hu"](data)]
    lesions += [(lesion, False) for lesion in REAL_READERS["deeplesion_npz"](data)]
    rows = []
    for lesion, synthesizer_saw in lesions:
        ct, mask = lesion.ct, lesion.mask
        row = {"lesion": lesion.source, "synthesizer_saw_it": synthesizer_saw, "models": {}}
        for model_name, model in models.items():
            predicted = segment(ct, model, device=device)
            probable = predicted.tumor_probability >= PROBABILITY
            covered = float(np.count_nonzero(probable & mask)) / max(int(mask.sum()), 1)
            row["models"][model_name] = {
                "postprocessed": _lesion_scores(tumor_mask(predicted.labels), mask, ct.spacing_zyx),
                "raw_probability": {
                    **_lesion_scores(probable, mask, ct.spacing_zyx),
                    "voxels_found": round(covered, 4),
                },
            }
        rows.append(row)
    summary = {}
    for model_name in models:
        entry = {}
        for group, keep in (("unseen_by_both", False), ("seen_by_synthesizer", True)):
            chosen = [row["models"][model_name] for row in rows if row["synthesizer_saw_it"] is keep]
            for kind in ("postprocessed", "raw_probability"):
                found = sum(item[kind]["found"] for item in chosen)
                entry[f"{group}/{kind}"] = {
                    "found": _rate(found, len(chosen)),
                    "false_positive_lesions": sum(item[kind]["false_positive_lesions"] for item in chosen),
                }
        summary[model_name] = entry
    return {"lesions": rows, "summary": summary}


def evaluate_all(args, progress, report: dict) -> dict:
    """The three evaluations, real tumors first; ``report`` with each part is written to
    ``WORK/comparison_partial.json`` as soon as it is done."""
    models = {engine: args.work / engine / "model" for engine in args.engines}
    started = time.perf_counter()
    parts = (
        ("ircadb17", lambda: ircadb17(models, args.data, args.device)),
        ("deeplesion", lambda: deeplesion(models, args.data, args.device)),
        (
            "held_out_synthetic",
            lambda: held_out_synthetic(models, args.data, args.engines, args.device, progress, args.cases),
        ),
    )
    for name, run in parts:
        report[name] = run()
        report["evaluation_minutes"] = round((time.perf_counter() - started) / 60, 1)
        text = json.dumps(report, indent=1) + "\n"
        (args.work / "comparison_partial.json").write_text(text, encoding="utf-8")
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, required=True, help="run folder outside the repository")
    parser.add_argument("--engines", nargs="+", default=list(ENGINES))
    parser.add_argument("--steps", type=int, default=800, help="optimizer steps per model (default 800)")
    parser.add_argument(
        "--schedule-steps",
        type=int,
        help="the schedule's length (default --steps); longer: stop at --steps of it (a multiple of 100)",
    )
    parser.add_argument("--crop-voxels", type=int, default=80)
    parser.add_argument("--cases", type=int, help="only the first N held-out synthetic cases (default all 6)")
    parser.add_argument("--phantoms", type=int, default=6, help="phantom hosts (default 6)")
    parser.add_argument("--variants", type=int, default=4, help="painted-beforehand copies per host")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--phase", choices=("all", "train", "evaluate"), default="all")
    parser.add_argument("--json", type=Path, help="write the comparison here too")
    parser.add_argument("--progress", choices=("bar", "json", "none"), default="bar")
    args = parser.parse_args(argv)
    progress = make_progress(args.progress)
    args.work.mkdir(parents=True, exist_ok=True)
    report = {
        "settings": {
            "engines": args.engines,
            "steps": args.steps,
            "schedule_steps": args.schedule_steps or args.steps,
            "held_out_cases": args.cases or 6,
            "crop_voxels": args.crop_voxels,
            "phantoms": args.phantoms,
            "variants": args.variants,
            "batch_size": 2,
            "seed": args.seed,
            "recipe": "scripts/train_demo_segmenter.py (hosts, schedule, sizes, variants), one engine each",
            "synthesizer": "synthesizer_demo (shipped)",
        },
        "seen_in_training": {
            "segmenters": "no real tumor (synthetic tumors of their engine only; IRCADb 17 never read)",
            "synthesizer_demo": "IRCADb 17's two liver tumors, the DeepLesion HU mass 000015_01_01_103-115",
        },
    }
    if args.phase in ("all", "train"):
        report["training"] = train_all(args, progress)
    else:
        report["training"] = {
            engine: json.loads((args.work / engine / "training.json").read_text()) for engine in args.engines
        }
    if args.phase in ("all", "evaluate"):
        evaluate_all(args, progress, report)
    progress.close()
    text = json.dumps(report, indent=1) + "\n"
    (args.work / f"comparison_{args.phase}.json").write_text(text, encoding="utf-8")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text, encoding="utf-8")
    print(text if args.phase != "train" else json.dumps(report["training"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
