"""Train SwinUNETR v2 (feature size 48) briefly, so the segmentation bench can measure agreement on
trained weights.

    python scripts/train_bench_swinunetr.py -o SWIN_DIR [--steps 60] [--data ../shared/data]
    freetumor bench segmentation --option swin_model=SWIN_DIR --json FILE

The bench's SwinUNETR comparison (plain MONAI against the project's fast path, same weights) needs
weights. No trained SwinUNETR weights can be downloaded here, and with seeded random weights every
voxel is a close call between seven near-uniform classes: the bf16 path then flips a percent or so
of voxels, which says nothing about a trained model. This script trains the ``swinunetr_v2_fs48``
preset on the demo segmenter's data (healthy hosts with online synthetic tumors, the same datalist
as ``scripts/train_demo_segmenter.py``; IRCADb 17 never read) for a few dozen steps on 64^3 crops:
an early model, confident on air and on most of the body, less so on organs and tumors. It is a
bench fixture (291 MB, not shipped, not for segmenting anything); its card says what it saw.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from train_demo_segmenter import ONLINE_SIZES, write_datalist  # noqa: E402

from freetumor_core.models import load_model, save_model  # noqa: E402
from freetumor_core.progress import make_progress  # noqa: E402
from freetumor_core.segmentation import preset_config  # noqa: E402
from freetumor_core.segmentation.training import SegmenterTask  # noqa: E402
from freetumor_core.training import TrainConfig, train  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, required=True, help="the model folder to write")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, help="run folder (checkpoints, logs; kept; resumes)")
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps (default 60)")
    parser.add_argument("--crop-voxels", type=int, default=64, help="training crop edge (default 64)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--progress", choices=("bar", "json", "none"), default="bar")
    args = parser.parse_args()
    progress = make_progress(args.progress)
    started = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_swinunetr_"))
    datalist = write_datalist(work, args.data, phantoms=4, variants=2)
    model = preset_config("swinunetr_v2_fs48")
    task = SegmenterTask(
        datalist,
        model,
        crop_voxels=args.crop_voxels,
        samples=32,
        synthetic_ratio=0.85,
        positive_ratio=0.8,
        seed=args.seed,
        sizes=ONLINE_SIZES,
        augment=True,
    )
    config = TrainConfig(
        steps=args.steps,
        batch_size=1,
        lr=args.lr,
        warmup_steps=max(1, args.steps // 10),
        min_lr_ratio=0.1,
        checkpoint_every=max(1, args.steps // 3),
        log_every=5,
        validate_every=args.steps,
        seed=args.seed,
        device=args.device,
    )
    result = train(task, config, work / "run", resume=True, progress=progress)
    network, trained = load_model(result.model_dir, device="cpu", task="segmentation")
    trained.preprocessing.patch_size_voxels = [96, 96, 96]
    trained.description = (
        "BENCH FIXTURE, not a segmenter: SwinUNETR v2 (feature size 48) trained for a few dozen steps "
        "on this machine's CPU, so that the segmentation bench can compare inference paths on "
        "trained weights. Do not use it to segment."
    )
    trained.provenance.update(
        {
            "training_data": "healthy hosts (4 phantoms and the real hosts of "
            "scripts/train_demo_segmenter.py; IRCADb 17 never read) with synthetic handcrafted tumors "
            "painted online and beforehand; no real tumor",
            "script": "scripts/train_bench_swinunetr.py",
            "steps": result.steps,
            "crop_voxels": args.crop_voxels,
            "train_minutes_cpu": round((time.perf_counter() - started) / 60, 1),
            "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            "validation": result.metrics,
        }
    )
    if args.output.exists():
        shutil.rmtree(args.output)
    save_model(args.output, network, trained)
    progress.close()
    print(json.dumps({"model": str(args.output), "validation": result.metrics}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
