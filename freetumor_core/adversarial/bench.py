"""``freetumor bench adversarial``: time per tumor by size, QC acceptance, one training step.

Results: ``cpu_per_tumor/<size>`` (s, a whole ``synthesize`` call of one tumor: placement, the
generator on the tumor's crop, painting, the record), ``qc_acceptance`` (ratio of tumors a frozen
segmenter finds at the 0.7 threshold, over ``qc_samples`` draws), ``train_step`` (s, one
discriminator and one generator step on a batch of 2 crops, segmenter-guided when one is given)
and, on a machine with CUDA, ``cuda_per_tumor/<size>``.

Options (``--option KEY=VALUE``): ``model`` (a synthesis model folder or shipped name; default the
shipped ``synthesizer_demo``, else an untrained generator of the same architecture, which times
the same work and is marked in the result's ``note``), ``qc`` (a segmentation model folder; default
the shipped ``segmenter_demo``; without one there is no ``qc_acceptance`` row), ``qc_samples``
(default 20), ``ct`` / ``labels`` / ``label_names`` (a host CT; default the phantom), ``organ``
(default liver).
"""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ..bench import Bench
from ..records import SIZE_CLASSES_MM


def _untrained_generator(folder: Path) -> Path:
    from ..models import ModelConfig, build_network, save_model
    from .generator import ORGANS, SynthesisSettings, generator_architecture

    torch.manual_seed(0)
    architecture = generator_architecture()
    config = ModelConfig(
        task="synthesis",
        architecture=architecture,
        label_names=dict(enumerate(ORGANS)),
        provenance={"synthesis": SynthesisSettings().to_dict(), "training_data": "untrained (benchmark)"},
    )
    return save_model(folder / "generator", build_network(architecture), config)


def _host(options):
    from ..labels import align_to, read_labels
    from ..phantom import make_phantom
    from ..volume import read_ct

    if options.get("ct"):
        ct = read_ct(options["ct"])
        return ct, align_to(read_labels(options["labels"], options.get("label_names")), ct)
    return make_phantom(0)


def _model(options, scratch: Path) -> tuple[str, str | None]:
    from ..models import shipped_models

    if options.get("model"):
        return options["model"], None
    if "synthesizer_demo" in shipped_models():
        return "synthesizer_demo", None
    return str(_untrained_generator(scratch)), "untrained generator (no shipped synthesizer_demo): same work"


def _qc_model(options) -> str | None:
    from ..models import shipped_models

    if options.get("qc"):
        return options["qc"]
    return "segmenter_demo" if "segmenter_demo" in shipped_models() else None


def _per_tumor(bench: Bench, prefix: str, engine, ct, labels, organ: str, model: str, note) -> None:
    from ..synthesis import TumorSpec

    for size in SIZE_CLASSES_MM:
        spec = TumorSpec(organ=organ, size=size, engine="adversarial", model=model, allow_shrink=True)
        spec = spec.validated()
        seeds = iter(range(10**6))

        def run(spec=spec, seeds=seeds):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                engine.synthesize(ct, labels, spec, seed=next(seeds))

        row = bench.time(f"{prefix}/{size}", run, unit="s")
        if note:
            row["note"] = note


def _train_step(bench: Bench, segmenter: str | None, device: str, name: str) -> None:
    from ..training import TrainConfig
    from ..training.task import default_optimizer
    from .generator import GRID, noise_field
    from .training import SynthesizerTask

    task = SynthesizerTask(None, segmenter=segmenter)
    torch.manual_seed(0)
    modules = {name: module.to(device) for name, module in task.build_modules().items()}
    config = TrainConfig(steps=1, lr=1e-4)
    optimizers = {stage: default_optimizer(modules[stage].parameters(), config) for stage in modules}
    rng = np.random.default_rng(0)
    shape = (2, 1, GRID, GRID, GRID)
    mask = torch.zeros(shape)
    mask[:, :, 10:22, 10:22, 10:22] = 1.0
    batch = {
        "real_hu": torch.from_numpy(rng.normal(40, 30, shape).astype(np.float32)),
        "real_mask": mask,
        "real_organ": torch.tensor([0, 0]),
        "fake_hu": torch.from_numpy(rng.normal(80, 20, shape).astype(np.float32)),
        "fake_mask": mask,
        "fake_organ_mask": torch.ones(shape),
        "fake_organ": torch.tensor([0, 2]),
        "noise": noise_field(2, GRID, rng, 1.0),
    }
    batch = {key: value.to(device) for key, value in batch.items()}

    def step():
        for stage in ("discriminator", "generator"):
            optimizers[stage].zero_grad(set_to_none=True)
            losses = task.stage_step(stage, modules, batch)
            losses["loss"].backward()
            optimizers[stage].step()
        if device != "cpu":
            torch.cuda.synchronize()

    row = bench.time(name, step, unit="s")
    row["note"] = "batch of 2 crops of 32^3; " + ("segmenter-guided" if segmenter else "no segmenter")


def adversarial_suite(bench: Bench) -> None:
    from ..synthesis import TumorSpec
    from ..synthesis.qc import qc_scores
    from .engine import AdversarialEngine

    options = bench.options
    organ = options.get("organ", "liver")
    ct, labels = _host(options)
    with tempfile.TemporaryDirectory() as scratch:
        model, note = _model(options, Path(scratch))
        _per_tumor(bench, "cpu_per_tumor", AdversarialEngine(device="cpu"), ct, labels, organ, model, note)
        segmenter = _qc_model(options)
        if segmenter:
            engine = AdversarialEngine(device="auto")
            samples = int(options.get("qc_samples", 20))
            accepted = 0
            started = time.perf_counter()
            for seed in range(samples):
                size = list(SIZE_CLASSES_MM)[seed % 3]  # tiny, small, medium
                spec = TumorSpec(organ=organ, size=size, engine="adversarial", model=model, allow_shrink=True)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    result = engine.synthesize(ct, labels, spec.validated(), seed=seed)
                accepted += qc_scores(result, segmenter)[0] >= spec.qc_threshold
            row = bench.record("qc_acceptance", accepted / samples, "ratio")
            row["note"] = f"{samples} tumors (tiny/small/medium), segmenter {segmenter}"
            bench.record("qc_seconds_per_tumor", (time.perf_counter() - started) / samples, "s")
        _train_step(bench, segmenter, "cpu", "train_step")
        if torch.cuda.is_available():
            _per_tumor(
                bench, "cuda_per_tumor", AdversarialEngine(device="cuda"), ct, labels, organ, model, note
            )
            _train_step(bench, segmenter, "cuda", "cuda_train_step")
