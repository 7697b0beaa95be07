"""Train the demo adversarial synthesizer that ships in ``freetumor_core/data/models/synthesizer_demo/``.

Data (all from ``../shared/data``, read in place, never copied into the repository):

- labelled (real tumors): the two liver tumors of 3D-IRCADb-01 patient 17 (labels 1 liver, 2 tumor,
  3 vessels) and the DeepLesion abdominal mass stored in HU (organ ``other``);
- unlabelled (healthy organs hosting synthetic geometry): ircadb_p07's liver and kidneys (its real
  mass is left unnamed, so it is neither a real example nor a host), the TotalSegmentator example
  CT's liver, pancreas and kidneys, and two procedural phantoms (written to the work folder).

The frozen segmenter of the segmentation-guided loss is ``--segmenter`` (default: the shipped
``segmenter_demo`` when this install has one); without one, a small segmenter is first trained here
on the unlabelled cases with handcrafted tumors (a third of the time budget) and named in the card.

Training runs in chunks of ``--chunk`` steps (each a resume of the same run, constant learning
rate) until ``--minutes`` are spent; then the generator is written to ``--output`` with a card that
says it is a demo and what it saw.

    python scripts/train_demo_synthesizer.py --minutes 25
    python scripts/train_demo_synthesizer.py --minutes 2 --output /tmp/synth_demo --work /tmp/synth_work
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
DEFAULT_OUTPUT = REPO / "freetumor_core" / "data" / "models" / "synthesizer_demo"
MAX_MB = 20.0


def write_datalists(data: Path, work: Path) -> tuple[Path, Path]:
    """The synthesizer's datalist (labelled + unlabelled) and the fallback segmenter's (unlabelled)."""
    from freetumor_core import write_volume
    from freetumor_core.phantom import make_phantom

    ircadb = data / "ircadb_liver_tumor"
    deeplesion = data / "deeplesion_medsam2"
    p07 = data / "ircadb_p07"
    example = data / "totalseg_example"
    p07_names = json.loads((p07 / "ircadb1_07_labels.json").read_text())["labels"]
    p07_names = {key: name for key, name in p07_names.items() if name != "tumor"}
    unlabelled = [
        {"image": str(p07 / "ircadb1_07_ct.nii.gz"), "label": str(p07 / "ircadb1_07_labels.nii.gz"),
         "label_names": p07_names},
        {"image": str(example / "example_ct.nii.gz"),
         "label": str(example / "example_seg_fast_force_split.nii.gz")},
    ]  # fmt: skip
    for seed in (0, 1):
        ct, labels = make_phantom(seed)
        ct_path = write_volume(ct, work / f"phantom{seed}_ct.nii.gz")
        labels_path = labels.save(work / f"phantom{seed}_labels.nii.gz")
        unlabelled.append({"image": str(ct_path), "label": str(labels_path)})
    labelled = [
        {"image": str(ircadb / "ircadb1_17_ct.nii.gz"), "label": str(ircadb / "ircadb1_17_labels.nii.gz"),
         "label_names": {"1": "liver", "2": "liver_tumor", "3": "portal_vein_and_splenic_vein"}},
        {"image": str(deeplesion / "000015_01_01_103-115_ct_hu.nii.gz"),
         "label": str(deeplesion / "000015_01_01_103-115_lesion_mask_DERIVED.nii.gz"),
         "tumor_label": 1, "organ": "abdomen", "label_names": {"1": "lesion"}},
    ]  # fmt: skip
    synthesizer = work / "synthesizer_datalist.json"
    synthesizer.write_text(json.dumps({"training": labelled + unlabelled}, indent=1))
    # The segmenter reads label names from sidecars or TotalSegmentator's: only the named hosts.
    segmenter = work / "segmenter_datalist.json"
    segmenter.write_text(json.dumps({"training": unlabelled[1:]}, indent=1))
    return synthesizer, segmenter


def train_segmenter(datalist: Path, run: Path, seconds: float) -> Path:
    """A small segmenter on handcrafted tumors, in about ``seconds``."""
    from freetumor_core.segmentation import preset_config
    from freetumor_core.segmentation.training import SegmenterTask

    task = SegmenterTask(datalist, preset_config("default"), crop_voxels=64, samples=64, synthetic_ratio=1.0)
    return _train_in_chunks(task, run, seconds, lr=1e-3, chunk=10)


def _train_in_chunks(task, run: Path, seconds: float, lr: float, chunk: int) -> Path:
    from freetumor_core.training import TrainConfig, train

    started = time.perf_counter()
    steps = 0
    while True:
        steps += chunk
        config = TrainConfig(steps=steps, batch_size=2, lr=lr, schedule="constant", weight_decay=0.0,
                             checkpoint_every=chunk, log_every=chunk, keep_checkpoints=1)  # fmt: skip
        result = train(task, config, run, resume=steps > chunk)
        elapsed = time.perf_counter() - started
        print(f"{run.name}: {result.steps} steps in {elapsed:.0f} s, losses {result.losses}", file=sys.stderr)
        per_chunk = elapsed / (steps // chunk)
        if elapsed + per_chunk > seconds:
            return result.model_dir


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=25.0, help="time budget (default 25)")
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT, help="model folder to write")
    parser.add_argument("--work", type=Path, help="work folder (runs, phantoms); default a temporary one")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--segmenter", help="frozen segmentation model (default: shipped segmenter_demo)")
    parser.add_argument("--chunk", type=int, default=20, help="steps between time checks (default 20)")
    args = parser.parse_args(argv)

    from freetumor_core.adversarial.training import SynthesizerTask
    from freetumor_core.models import load_model, save_model, shipped_models

    budget = args.minutes * 60.0
    started = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="synthesizer_demo."))
    work.mkdir(parents=True, exist_ok=True)
    synthesizer_list, segmenter_list = write_datalists(args.data, work)
    segmenter = args.segmenter or ("segmenter_demo" if "segmenter_demo" in shipped_models() else None)
    segmenter_note = f"the segmenter {segmenter}"
    if segmenter is None:
        segmenter = str(train_segmenter(segmenter_list, work / "segmenter_run", budget / 3.0))
        segmenter_note = (
            "a small segmenter trained by this script on handcrafted tumors in the unlabelled cases"
        )
    task = SynthesizerTask(synthesizer_list, segmenter=segmenter, samples=64)
    remaining = budget - (time.perf_counter() - started)
    model_dir = _train_in_chunks(task, work / "synthesizer_run", remaining, lr=1e-4, chunk=args.chunk)

    network, config = load_model(model_dir, device="cpu", task="synthesis")
    summary = config.provenance["data_summary"]
    provenance = dict(config.provenance)
    provenance["training_data"] = (
        "DEMO (trained in minutes on a CPU; not for research conclusions). Real tumors: "
        f"{summary['real_tumors']} ({', '.join(summary['labelled_cases'])}: the 3D-IRCADb-01 patient 17 "
        "liver tumors and the DeepLesion abdominal mass in HU). Healthy hosts: "
        f"{', '.join(summary['host_organs'])} of {', '.join(summary['host_cases'])} (ircadb_p07, the "
        f"TotalSegmentator example CT, two phantoms). Segmentation guidance: {segmenter_note}."
    )
    provenance["segmenter"] = segmenter_note
    demo = replace(
        config,
        provenance=provenance,
        description="Demo generator of the adversarial engine, trained by scripts/train_demo_synthesizer.py "
        f"in {args.minutes:g} minutes on a CPU from the few real tumors of the test data. It shows the "
        "engine working; its tumors are not validated for research.",
        weights_sha256=None,
    )
    building = args.output.parent / f".{args.output.name}.building"
    shutil.rmtree(building, ignore_errors=True)
    save_model(building, network, demo)
    size_mb = sum(path.stat().st_size for path in building.iterdir()) / 1e6
    if size_mb > MAX_MB:
        shutil.rmtree(building)
        raise SystemExit(
            f"the model folder is {size_mb:.1f} MB, over the {MAX_MB:g} MB a shipped model may take"
        )
    if args.output.exists():
        shutil.rmtree(args.output)
    building.rename(args.output)
    print(f"wrote {args.output} ({size_mb:.2f} MB) in {(time.perf_counter() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
