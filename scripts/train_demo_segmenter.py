"""Train, evaluate and write the demo segmenter that ships inside the package.

    python scripts/train_demo_segmenter.py [--data ../shared/data] [-o OUTPUT] [--work RUN]

``OUTPUT`` defaults to the shipped place, ``freetumor_core/data/models/segmenter_demo``.
``--evaluate MODEL`` skips training and re-evaluates an existing model folder (step 3), writing it
with the new metrics to ``OUTPUT``.

What it does, all on the CPU by default (about 40 minutes on 2 cores):

1. Hosts. Healthy organs only: phantoms (seeds 0 to ``--phantoms`` - 1), the TotalSegmentator example
   CT (3 mm, model labels), the TotalSegmentator DICOM slab (1 x 1 x 2 mm) and IRCADb patient 7
   (0.78 mm, expert labels; its real 669 mL mass beside the kidney is in none of the model's
   organs and stays background). IRCADb 17 is never read for training: its two expert-labelled
   liver tumors are the real test.
2. Training. The ``default`` preset (a small MONAI UNet) on the shared trainer, with synthetic
   tumors painted online into the crops' organs and into copies of the hosts beforehand, all by
   one engine (``--engine``: handcrafted by default; adversarial uses the shipped
   ``synthesizer_demo``). ``scripts/compare_synthesis_engines.py`` trains it once per engine.
3. Held-out evaluation (nothing here was seen in training):
   - synthetic: phantoms with seeds from 100 (hosts never seen) and the two real hosts with
     synthesis seeds never used in training (hosts seen, tumors not), one to three tumors each,
     segmented whole with ``segment`` and scored with the project's metrics;
   - real: IRCADb 17, segmented whole; each of its two tumors found or not, with its lesion Dice.
   Each is done twice: without organ labels, and with them (``*_organs``: the hosts' own organ
   labels; for IRCADb 17 its expert liver outline as one ``liver`` label).
4. The model folder: ``config.json`` (with the measured metrics), ``model.safetensors`` and a card
   (``README.md``) that says what the model saw and what it measured; ``evaluation.json`` beside it.

The run folder (``--work``, default a temporary folder) keeps the trainer's checkpoints and logs;
a rerun with the same ``--work`` resumes.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from freetumor_core.errors import InputError  # noqa: E402
from freetumor_core.labels import LabelMap, align_to, read_labels  # noqa: E402
from freetumor_core.models import load_model, save_model  # noqa: E402
from freetumor_core.phantom import make_phantom  # noqa: E402
from freetumor_core.progress import Progress, make_progress  # noqa: E402
from freetumor_core.segmentation import preset_config, segment  # noqa: E402
from freetumor_core.segmentation.evaluation import evaluate_labels  # noqa: E402
from freetumor_core.segmentation.training import SegmenterTask  # noqa: E402
from freetumor_core.synthesis import TumorSpec, synthesize  # noqa: E402
from freetumor_core.training import TrainConfig, train  # noqa: E402
from freetumor_core.volume import Volume, read_ct, write_volume  # noqa: E402

SHIPPED = ROOT / "freetumor_core" / "data" / "models" / "segmenter_demo"
SPLIT_SEG = "example_seg_fast_force_split.nii.gz"
IRCADB17_NAMES = {1: "liver", 2: "liver_tumor", 3: "hepatic_vessels"}
HELD_OUT_PHANTOM_SEEDS = (100, 101, 102, 103)
ONLINE_SIZES = ("tiny", "small", "medium")  # painted into training crops as they are drawn
VARIANT_SEED = 5000  # the painted-beforehand variants; the held-out cases use seeds from 7000
# (organ, size class, margin from the organ's surface in mm): real tumors often reach the surface
# and bulge beyond it, so half the variants' tumors may touch the surface (margin 0).
VARIANT_PLANS = (
    (("liver", "large", 0.0), ("kidney", "medium", 3.0), ("pancreas", "small", 0.0)),
    (("liver", "medium", 3.0), ("liver", "large", 0.0), ("kidney", "small", 0.0)),
    (("liver", "large", 3.0), ("kidney", "large", 0.0), ("pancreas", "medium", 3.0)),
    (("liver", "large", 0.0), ("liver", "medium", 0.0), ("kidney", "medium", 3.0)),
)


def real_hosts(data: Path) -> list[tuple[str, Path, Path]]:
    """``(name, ct, labels)`` of the real healthy hosts used for training (IRCADb 17 is not one)."""
    totalseg, p07 = data / "totalseg_example", data / "ircadb_p07"
    return [
        ("totalseg_example", totalseg / "example_ct.nii.gz", totalseg / SPLIT_SEG),
        ("totalseg_dicom_slab", totalseg / "example_ct_dicom", totalseg / "example_seg_dicom.nii.gz"),
        ("ircadb_p07", p07 / "ircadb1_07_ct.nii.gz", p07 / "ircadb1_07_labels.nii.gz"),
    ]


def write_variants(
    ct_path: Path, labels_path: Path, folder: Path, count: int, seed: int, engine: str = "handcrafted"
) -> list[dict]:
    """``count`` copies of a healthy host with medium and large tumors painted into the whole CT
    (a crop rarely has room for a large one) by ``engine``, written as labelled cases."""
    entries = []
    ct = read_ct(ct_path)
    labels = align_to(read_labels(labels_path), ct)
    for index in range(count):
        target = folder / f"variant_{index}"
        if not (target / "labels.nii.gz").is_file():
            painted_ct, painted = ct, labels
            for number, (organ, size, margin) in enumerate(VARIANT_PLANS[index % len(VARIANT_PLANS)]):
                spec = TumorSpec(organ=organ, size=size, margin_mm=margin, allow_shrink=True, engine=engine)
                try:
                    result = synthesize(painted_ct, painted, spec, seed=seed + 100 * index + number)
                except InputError:  # this host has no room (or no such organ): leave it out
                    continue
                painted_ct, painted = result.ct, result.labels
            if painted is labels:
                continue
            target.mkdir(parents=True, exist_ok=True)
            write_volume(painted_ct, target / "ct.nii.gz")
            painted.save(target / "labels.nii.gz")
        entries.append({"image": str(target / "ct.nii.gz"), "label": str(target / "labels.nii.gz")})
    return entries


def write_datalist(work: Path, data: Path, phantoms: int, variants: int, engine: str = "handcrafted") -> Path:
    """The training datalist: the healthy hosts (phantoms written into ``work``, real hosts by
    path), which get small tumors online, and ``variants`` copies of each with medium and large
    tumors painted beforehand by ``engine``."""
    hosts = work / "hosts"
    hosts.mkdir(parents=True, exist_ok=True)
    sources = []
    for seed in range(phantoms):
        folder = hosts / f"phantom_{seed}"
        if not (folder / "labels.nii.gz").is_file():
            folder.mkdir(exist_ok=True)
            ct, labels = make_phantom(seed=seed)
            write_volume(ct, folder / "ct.nii.gz")
            labels.save(folder / "labels.nii.gz")
        sources.append((f"phantom_{seed}", folder / "ct.nii.gz", folder / "labels.nii.gz"))
    sources += real_hosts(data)
    training = [{"image": str(ct), "label": str(labels)} for _, ct, labels in sources]
    for number, (name, ct, labels) in enumerate(sources):
        seed = VARIANT_SEED + 1000 * number
        training += write_variants(ct, labels, work / "variants" / engine / name, variants, seed, engine)
    datalist = work / "datalist.json"
    datalist.write_text(json.dumps({"training": training}, indent=1), encoding="utf-8")
    return datalist


EVALUATION = (
    "scripts/train_demo_segmenter.py: held_out_synthetic = 4 phantoms never seen (seeds 100-103) and "
    "2 training hosts with synthesis seeds never used in training, 12 tumors; ircadb17_real = the 2 "
    "expert-labelled real liver tumors of IRCADb 17, never seen. Whole CTs. Plain names: no organ "
    "labels given; *_organs: organ labels given to segment (--organs), for IRCADb 17 its expert liver "
    "outline as one liver label (liver, tumors and vessels, as IRCADb draws it)."
)


def wilson(successes: int, total: int, z: float = 1.96) -> list[float] | None:
    """The Wilson 95% interval of a proportion (``None`` without trials)."""
    if total == 0:
        return None
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return [round(max(0.0, centre - half), 3), round(min(1.0, centre + half), 3)]


def synthetic_cases(data: Path) -> list[tuple[str, Volume, LabelMap, list[TumorSpec], int]]:
    """Held-out synthetic cases: ``(name, ct, labels, specs, seed)``."""
    cases = []
    plans = [
        [
            TumorSpec(organ="liver", size="medium", allow_shrink=True),
            TumorSpec(organ="kidney", size="small", allow_shrink=True),
        ],
        [TumorSpec(organ="liver", size="large", allow_shrink=True)],
        [
            TumorSpec(organ="liver", size="small", count=2, allow_shrink=True),
            TumorSpec(organ="pancreas", size="small", allow_shrink=True),
        ],
        [
            TumorSpec(organ="liver", size="tiny", allow_shrink=True),
            TumorSpec(organ="kidney", size="medium", allow_shrink=True),
        ],
    ]
    for seed, plan in zip(HELD_OUT_PHANTOM_SEEDS, plans, strict=True):
        ct, labels = make_phantom(seed=seed)
        cases.append((f"phantom_{seed} (unseen host)", ct, labels, plan, 7000 + seed))
    totalseg = data / "totalseg_example"
    ct = read_ct(totalseg / "example_ct.nii.gz")
    labels = align_to(read_labels(totalseg / "example_seg_fast_force_split.nii.gz"), ct)
    plan = [
        TumorSpec(organ="liver", size="medium", allow_shrink=True),
        TumorSpec(organ="kidney", size="small", allow_shrink=True),
    ]
    cases.append(("totalseg_example (seen host, unseen tumors)", ct, labels, plan, 9001))
    p07 = data / "ircadb_p07"
    ct = read_ct(p07 / "ircadb1_07_ct.nii.gz")
    labels = align_to(read_labels(p07 / "ircadb1_07_labels.nii.gz"), ct)
    mass = labels.ids_for("tumor")  # the real mass is in none of the model's organs: not scored here
    array = labels.array.copy()
    array[np.isin(array, mass)] = 0
    labels = LabelMap(labels.volume.like(array), {k: v for k, v in labels.names.items() if k not in mass})
    plan = [
        TumorSpec(organ="liver", size="large", allow_shrink=True),
        TumorSpec(organ="liver", size="small", allow_shrink=True),
    ]
    cases.append(("ircadb_p07 (seen host, unseen tumors)", ct, labels, plan, 9002))
    return cases


def paint(
    ct: Volume, labels: LabelMap, specs: list[TumorSpec], seed: int, engine: str = "handcrafted"
) -> tuple[Volume, LabelMap]:
    """The case's tumors painted one spec after the other by ``engine``."""
    for index, spec in enumerate(specs):
        result = synthesize(ct, labels, replace(spec, engine=engine), seed=seed + index)
        ct, labels = result.ct, result.labels
    return ct, labels


def case_summary(report: dict) -> dict:
    counts = report["lesions"]
    return {
        "tumor_dice": round(report["structures"]["tumor"]["dice"], 4),
        "organ_dice": {
            name: round(value["dice"], 4) for name, value in report["structures"].items() if name != "tumor"
        },
        "lesions_true": counts["tp"] + counts["fn"],
        "tp": counts["tp"],
        "fn": counts["fn"],
        "fp": counts["fp"],
        "truth_lesions": [
            {key: lesion[key] for key in ("diameter_mm", "size_class", "dice")}
            for lesion in report["truth_lesions"]
        ],
    }


def evaluate(model_dir: Path, data: Path, device: str, progress) -> dict:
    """The held-out synthetic and the real IRCADb 17 evaluation (see the module docstring), once
    without organ labels and once with them (``*_organs``)."""
    results: dict = {}
    cases = synthetic_cases(data)
    for suffix, with_organs in (("", False), ("_organs", True)):
        results.update(evaluate_synthetic(model_dir, cases, device, progress, with_organs, suffix))
        results[f"ircadb17{suffix}"] = evaluate_ircadb17(model_dir, data, device, with_organs)
    return results


def evaluate_synthetic(model_dir: Path, cases, device: str, progress, with_organs: bool, suffix: str) -> dict:
    """The held-out synthetic cases, segmented whole; with ``with_organs`` the hosts' own organ
    labels (no tumor in them: the tumors are painted after) are given to ``segment``."""
    results: dict = {f"synthetic{suffix}": []}
    tp = fn = fp = 0
    dices, lesion_dices = [], []
    title = "held-out synthetic cases" + (" (organ labels given)" if with_organs else "")
    for name, host_ct, labels, specs, seed in progress.track(cases, title):
        ct, truth = paint(host_ct, labels, specs, seed)
        predicted = segment(ct, model_dir, organs=labels if with_organs else None, device=device)
        report = evaluate_labels(predicted.labels, truth, case=name)
        summary = case_summary(report)
        summary["case"] = name
        summary["tumors"] = [f"{spec.organ} {spec.size} x{spec.count}" for spec in specs]
        summary["seconds"] = predicted.settings.get("seconds")
        results[f"synthetic{suffix}"].append(summary)
        tp, fn, fp = tp + summary["tp"], fn + summary["fn"], fp + summary["fp"]
        dices.append(summary["tumor_dice"])
        lesion_dices += [lesion["dice"] for lesion in summary["truth_lesions"] if lesion["dice"] is not None]
    f1 = 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else None
    results[f"synthetic{suffix}_summary"] = {
        "cases": len(dices),
        "lesions": tp + fn,
        "tp": tp,
        "fn": fn,
        "fp": fp,
        "sensitivity": round(tp / (tp + fn), 3) if tp + fn else None,
        "sensitivity_95ci": wilson(tp, tp + fn),
        "precision": round(tp / (tp + fp), 3) if tp + fp else None,
        "lesion_f1": round(f1, 3) if f1 is not None else None,
        "mean_tumor_dice": round(float(np.mean(dices)), 4),
        "mean_matched_lesion_dice": round(float(np.mean(lesion_dices)), 4) if lesion_dices else None,
    }
    return results


def evaluate_ircadb17(model_dir: Path, data: Path, device: str, with_organs: bool) -> dict:
    """IRCADb 17 segmented whole; with ``with_organs`` its expert liver outline is given as the
    organ labels: one ``liver`` label over the liver mask (liver, tumors and intrahepatic vessels,
    as IRCADb draws it), which tells where the liver ends, not where its tumors are."""
    ircadb = data / "ircadb_liver_tumor"
    ct = read_ct(ircadb / "ircadb1_17_ct.nii.gz")
    truth = align_to(read_labels(ircadb / "ircadb1_17_labels.nii.gz", IRCADB17_NAMES), ct)
    organs = None
    if with_organs:
        organs = LabelMap(truth.volume.like((truth.array > 0).astype(np.uint8)), {1: "liver"})
    predicted = segment(ct, model_dir, organs=organs, device=device)
    report = evaluate_labels(predicted.labels, truth, case="ircadb17")
    summary = case_summary(report)
    summary["found"] = sum(1 for lesion in summary["truth_lesions"] if lesion["dice"] is not None)
    summary["found_95ci"] = wilson(summary["found"], len(summary["truth_lesions"]))
    summary["seconds"] = predicted.settings.get("seconds")
    summary["predicted_lesions"] = [
        {
            "diameter_mm": round(lesion.record.diameter_mm, 1),
            "volume_ml": round(lesion.record.volume_ml, 2),
            "score": round(lesion.score, 3),
        }
        for lesion in predicted.lesions
    ]
    return summary


def card_metrics(results: dict) -> dict:
    """The card's numbers: ``held_out_synthetic`` and ``ircadb17_real`` without organ labels, the
    same with ``_organs`` when the organ labels were given."""
    metrics = {}
    for suffix in ("", "_organs"):
        synthetic, real = results[f"synthetic{suffix}_summary"], results[f"ircadb17{suffix}"]
        held, ircadb = f"held_out_synthetic{suffix}", f"ircadb17_real{suffix}"
        metrics.update(
            {
                f"{held}/cases": synthetic["cases"],
                f"{held}/lesions": synthetic["lesions"],
                f"{held}/sensitivity": synthetic["sensitivity"],
                f"{held}/sensitivity_95ci": synthetic["sensitivity_95ci"],
                f"{held}/precision": synthetic["precision"],
                f"{held}/lesion_f1": synthetic["lesion_f1"],
                f"{held}/mean_tumor_dice": synthetic["mean_tumor_dice"],
                f"{ircadb}/tumors_found": f"{real['found']} of {len(real['truth_lesions'])}",
                f"{ircadb}/found_95ci": real["found_95ci"],
                f"{ircadb}/tumor_dice": real["tumor_dice"],
                f"{ircadb}/false_positive_lesions": real["fp"],
            }
        )
        for index, lesion in enumerate(real["truth_lesions"], 1):
            metrics[f"{ircadb}/tumor{index}_{lesion['diameter_mm']:.0f}mm_lesion_dice"] = lesion["dice"]
        metrics[f"{ircadb}/liver_dice"] = real["organ_dice"].get("liver")
    return metrics


class _Stopped(Exception):
    pass


class _StopAt(Progress):
    """A progress reporter that stops training once the checkpoint of ``step`` is written."""

    def __init__(self, step: int, inner) -> None:
        self.step, self.inner = step, make_progress(inner)

    def track(self, *args, **kwargs):
        return self.inner.track(*args, **kwargs)

    def update(self, *args, **kwargs):
        return self.inner.update(*args, **kwargs)

    def event(self, event: str, **fields) -> None:
        self.inner.event(event, **fields)
        if event == "checkpoint" and int(fields.get("step", 0)) >= self.step:
            raise _Stopped

    def close(self) -> None:
        self.inner.close()


def _checkpoint_steps(run: Path) -> list[int]:
    return sorted(int(path.name.split("-")[1]) for path in (run / "checkpoints").glob("step-*"))


def _latest_step(run: Path) -> int:
    return (_checkpoint_steps(run) or [0])[-1]


def _keep_up_to(run: Path, step: int) -> None:
    """Set aside the checkpoints after ``step`` (kept as ``checkpoints_after/``)."""
    later = [found for found in _checkpoint_steps(run) if found > step]
    if step not in _checkpoint_steps(run):
        raise SystemExit(f"{run}: no checkpoint of step {step}")
    (run / "checkpoints_after").mkdir(exist_ok=True)
    for found in later:
        name = f"step-{found:08d}"
        shutil.move(str(run / "checkpoints" / name), str(run / "checkpoints_after" / name))


def train_segmenter(
    work: Path,
    data: Path,
    engine: str = "handcrafted",
    steps: int = 900,
    batch_size: int = 2,
    crop_voxels: int = 80,
    phantoms: int = 6,
    variants: int = 4,
    lr: float = 2e-3,
    seed: int = 0,
    device: str = "auto",
    progress=None,
    schedule_steps: int | None = None,
):
    """Train the demo segmenter in ``work`` (resumes) on ``engine``'s synthetic tumors.

    ``schedule_steps`` (default ``steps``) sets the run's schedule (warm-up, cosine decay,
    validation): with more than ``steps``, training stops at the checkpoint of step ``steps`` of
    that longer schedule (``steps`` a multiple of 100, the checkpoint interval).

    Returns:
        ``(network, config, minutes)``: the trained network, its model config with the card's
        provenance filled in, and the minutes spent (datalist and training).
    """
    started = time.perf_counter()
    datalist = write_datalist(work, data, phantoms, variants, engine)
    model = preset_config("default")
    task = SegmenterTask(
        datalist,
        model,
        crop_voxels=crop_voxels,
        samples=64,
        synthetic_ratio=0.85,
        positive_ratio=0.8,
        seed=seed,
        sizes=ONLINE_SIZES,
        augment=True,
        engine=engine,
    )
    schedule = max(schedule_steps or steps, steps)
    config = TrainConfig(
        steps=schedule,
        batch_size=batch_size,
        lr=lr,
        warmup_steps=min(50, schedule // 10),
        min_lr_ratio=0.05,
        checkpoint_every=100,
        log_every=10,
        validate_every=max(schedule // 3, 1),
        seed=seed,
        device=device,
    )
    if schedule > steps:
        if _latest_step(work / "run") < steps:
            try:
                train(task, config, work / "run", resume=True, progress=_StopAt(steps, progress))
            except _Stopped:
                pass
        _keep_up_to(work / "run", steps)
        config = replace(config, steps=steps)  # no step is taken: the checkpoint becomes the model
    result = train(task, config, work / "run", resume=True, progress=progress)
    minutes = (time.perf_counter() - started) / 60
    network, trained = load_model(result.model_dir, device="cpu", task="segmentation")
    trained.preprocessing.patch_size_voxels = [96, 96, 96]  # inference windows; the network is convolutional
    hosts = [f"phantoms (seeds 0-{phantoms - 1})"] + [name for name, _, _ in real_hosts(data)]
    trained.description = (
        "DEMO segmenter: a small MONAI UNet trained on this machine's CPU in minutes, on healthy "
        f"hosts with synthetic ({engine}) tumors only. For trying the tools, not for diagnosis."
    )
    trained.provenance.update(
        {
            "training_data": (
                f"healthy hosts {', '.join(hosts)}; every tumor it saw was synthetic ({engine} engine): "
                f"{', '.join(ONLINE_SIZES)} tumors painted online into "
                f"{task.data.synthetic_ratio:.0%} of the healthy crops, and {variants} copies of "
                "each host with medium and large liver, "
                "kidney and pancreas tumors painted beforehand, half of them reaching the organ's surface "
                "(synthesis seeds from 5000); it saw no "
                "real tumor. IRCADb 17 was kept out entirely."
            ),
            "script": "scripts/train_demo_segmenter.py",
            "engine": engine,
            "steps": result.steps,
            "batch_size": batch_size,
            "crop_voxels": crop_voxels,
            "train_minutes_cpu": round(minutes, 1),
            "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            "validation": result.metrics,
        }
    )
    return network, trained, minutes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("-o", "--output", type=Path, default=SHIPPED, help="the model folder to write")
    parser.add_argument("--work", type=Path, help="run folder (checkpoints, logs; kept; resumes)")
    parser.add_argument("--steps", type=int, default=2400, help="optimizer steps (default 2400)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--crop-voxels", type=int, default=80, help="training crop edge (default 80)")
    parser.add_argument("--phantoms", type=int, default=6, help="phantom hosts (default 6)")
    parser.add_argument(
        "--variants", type=int, default=4, help="copies of each host with medium and large tumors (default 3)"
    )
    parser.add_argument(
        "--engine",
        default="handcrafted",
        help="synthesis engine of the training tumors, online and painted beforehand (default handcrafted; "
        "adversarial uses the shipped synthesizer_demo)",
    )
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--skip-eval", action="store_true", help="train and write the model, no evaluation")
    parser.add_argument(
        "--evaluate",
        type=Path,
        metavar="MODEL",
        help="no training: evaluate this model folder and write it, with the new metrics, to -o",
    )
    parser.add_argument("--progress", choices=("bar", "json", "none"), default="bar")
    args = parser.parse_args()
    progress = make_progress(args.progress)
    started = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="segmenter_demo_"))
    if args.evaluate is not None:
        network, trained = load_model(args.evaluate, device="cpu", task="segmentation")
    else:
        network, trained, _ = train_segmenter(
            work,
            args.data,
            engine=args.engine,
            steps=args.steps,
            batch_size=args.batch_size,
            crop_voxels=args.crop_voxels,
            phantoms=args.phantoms,
            variants=args.variants,
            lr=args.lr,
            seed=args.seed,
            device=args.device,
            progress=progress,
        )
    evaluation = None
    if not args.skip_eval:
        staging = work / "model_unevaluated"
        save_model(staging, network, trained)
        evaluation = evaluate(staging, args.data, args.device, progress)
        trained.metrics = card_metrics(evaluation)
        trained.provenance["evaluation"] = EVALUATION
        evaluation["minutes_total"] = round((time.perf_counter() - started) / 60, 1)
    if args.output.exists():
        shutil.rmtree(args.output)
    save_model(args.output, network, trained)
    if evaluation is not None:
        text = json.dumps(evaluation, indent=1) + "\n"
        (args.output / "evaluation.json").write_text(text, encoding="utf-8")
    progress.close()
    print(json.dumps({"model": str(args.output), "metrics": trained.metrics}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
