"""The demo report model, end to end: corpus, pre-training for a time budget, held-out retrieval.

1. ``freetumor reports make-corpus`` into ``OUT/corpus`` (phantoms and the real CTs of the shared
   data folder, when it is there; kept when it already exists);
2. one timed training step sets the number of steps that fit ``--minutes``; ``freetumor train
   reports`` on the shared trainer into ``OUT/run`` (model folder ``OUT/run/model``);
3. the held-out reports are indexed (``OUT/index``) and every held-out CT is matched against them
   (``reports match``): R@1 is the share of CTs whose own report ranks first; written, with the
   trainer's validation metrics and the timings, to ``OUT/demo_result.json``;
4. with ``--ship DIR``, the model is written there once more with those numbers and what it saw in
   its config and card (the shipped demo model is made so). ``--steps N`` replaces the timed step
   (rerunning with the steps of a finished run only evaluates and ships it).

    python scripts/train_demo_reports.py --minutes 45 -o runs/demo_reports \
        --ship freetumor_core/data/models/reports_demo
    python scripts/train_demo_reports.py --minutes 2 -o /tmp/demo --phantoms 6 --input-voxels 32 \
        --spacing-mm 8
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from freetumor_core.files import write_json
from freetumor_core.models import save_model
from freetumor_core.reports.corpus import default_real_hosts, make_corpus
from freetumor_core.reports.index import build_report_index, match_ct
from freetumor_core.reports.model import default_preprocessing, load_report_model
from freetumor_core.reports.training import ReportTask
from freetumor_core.reports.vision import default_architecture
from freetumor_core.training import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, required=True, help="training time budget")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--data", type=Path, default=REPO.parent / "shared" / "data", help="shared data folder"
    )
    parser.add_argument("--phantoms", type=int, default=40)
    parser.add_argument("--cases-per-host", type=int, default=3)
    parser.add_argument("--real-cases-per-host", type=int, default=8)
    parser.add_argument("--input-voxels", type=int, default=64)
    parser.add_argument("--spacing-mm", type=float, default=4.0)
    parser.add_argument("--feature-size", type=int, default=12)
    parser.add_argument("--window", type=int, default=4, help="Swin attention window (tokens)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, help="optimizer steps (default: as many as fit --minutes)")
    parser.add_argument("--ship", type=Path, help="also write the evaluated model folder here")
    args = parser.parse_args()

    started = time.perf_counter()
    preprocessing = default_preprocessing(args.input_voxels, args.spacing_mm)
    corpus = args.output / "corpus"
    datalist = corpus / "datalist.json"
    if not datalist.is_file():
        real = default_real_hosts(args.data) if args.data.is_dir() else []
        summary = make_corpus(
            corpus, phantoms=args.phantoms, cases_per_host=args.cases_per_host, real_hosts=real,
            real_cases_per_host=args.real_cases_per_host, preprocessing=preprocessing, progress="bar",
        )  # fmt: skip
        print(f"corpus: {summary}")
    corpus_s = time.perf_counter() - started

    architecture = default_architecture(
        feature_size=args.feature_size, input_voxels=args.input_voxels, window=args.window
    )
    task = ReportTask(datalist, architecture, preprocessing, device=args.device)
    model = task.build_model()
    items = [task.dataset()[i % len(task.dataset())] for i in range(args.batch_size)]
    batch = {key: torch.stack([item[key] for item in items]) for key in items[0]}
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    timed = []
    for _ in range(2):  # the first step warms up; the second is timed
        begin = time.perf_counter()
        task.step(model, batch)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
        timed.append(time.perf_counter() - begin)
    step_s = timed[-1]
    steps = args.steps or max(2, int(args.minutes * 60 / (step_s * 1.1)))
    print(f"one step of batch {args.batch_size}: {step_s:.1f} s -> {steps} steps in {args.minutes} min")

    config = TrainConfig(
        steps=steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=min(20, steps // 10),
        checkpoint_every=max(10, steps // 4), log_every=max(1, steps // 50), device=args.device,
    )  # fmt: skip
    run = args.output / "run"
    train_started = time.perf_counter()
    result = train(task, config, run, resume=(run / "checkpoints").is_dir(), progress="bar")
    train_s = time.perf_counter() - train_started

    loaded = load_report_model(result.model_dir, device=args.device)
    validation = json.loads(datalist.read_text())["validation"]
    reports = [(entry["id"], entry["report"]) for entry in validation]
    index = build_report_index(loaded, reports, args.output / "index")
    hits, real_hits, real_total = 0, 0, 0
    for entry in validation:
        top = match_ct(loaded, corpus / entry["image"], index, k=1)[0]
        hit = top["id"] == entry["id"]
        hits += hit
        if entry.get("real_host"):
            real_hits, real_total = real_hits + hit, real_total + 1
    outcome = {
        "held_out_cases": len(validation),
        "match_r1": round(hits / len(validation), 4),
        "chance_r1": round(1 / len(validation), 4),
        "real_host_cases": real_total,
        "real_host_match_r1": round(real_hits / real_total, 4) if real_total else None,
        "validation_metrics": result.metrics,
        "steps": result.steps,
        "step_s": round(step_s, 2),
        "corpus_s": round(corpus_s, 1),
        "train_s": round(train_s, 1),
        "total_s": round(time.perf_counter() - started, 1),
        "model": str(result.model_dir),
    }
    write_json(args.output / "demo_result.json", outcome)
    if args.ship:
        ship(loaded, outcome, json.loads(datalist.read_text()), args)
    print(json.dumps(outcome, indent=1))


def ship(loaded, outcome: dict, datalist: dict, args) -> None:
    """Write the evaluated model to ``args.ship``: its held-out retrieval and what it saw."""
    config = loaded.config
    training = datalist["training"]
    real = sorted({entry["host"] for entry in training if entry.get("real_host")})
    tumors = sum(len(entry.get("tumors", [])) for entry in training)
    config.description = (
        "DEMO report model: a small Swin ViT CT encoder aligned with frozen all-MiniLM-L6-v2 sentence "
        "features (MG-3D objectives), pre-trained on this machine's CPU in minutes on a synthetic "
        "corpus: CTs with synthetic tumors and reports written from their tumor records. It shows "
        "report matching working end to end; it has never seen a real radiology report."
    )
    config.provenance.update(
        {
            "training_data": (
                f"{len(training)} CT-report pairs of `freetumor reports make-corpus` ({tumors} synthetic "
                f"tumors, handcrafted engine): phantoms and the real CTs {', '.join(real)} of the "
                "shared data folder, each with synthesized tumors and a report written from the records; "
                f"{outcome['held_out_cases']} further pairs held out for the numbers below"
            ),
            "script": "scripts/train_demo_reports.py",
            "steps": outcome["steps"],
            "train_minutes_cpu": round(outcome["train_s"] / 60, 1),
        }
    )
    config.metrics = {
        "held_out/match_r1": outcome["match_r1"],
        "held_out/chance_r1": outcome["chance_r1"],
        "held_out/cases": outcome["held_out_cases"],
        "held_out/real_host_match_r1": outcome["real_host_match_r1"],
        "held_out/real_host_cases": outcome["real_host_cases"],
        **{f"validation/{key}": value for key, value in outcome["validation_metrics"].items()},
    }
    save_model(args.ship, loaded.network, config)


if __name__ == "__main__":
    main()
