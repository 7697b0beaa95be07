"""``freetumor train ...``: trainers on the shared loop, and the trainer flags they all accept.

A trainer's command calls :func:`add_trainer_arguments` on its parser and
:func:`train_config_from_args` in its handler: every :class:`TrainConfig` field becomes a flag
(``--batch-size``, ``--checkpoint-every``, ``--no-amp``, ...), ``--config FILE`` reads a JSON file of
settings that flags given on the command line override, and ``--resume`` continues a run.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import typing
from typing import Any

from .common import json_mode, print_result


def _field_help() -> dict[str, str]:
    from ..training import TrainConfig

    text = (TrainConfig.__doc__ or "").split("Attributes:", 1)[-1]
    found, name = {}, None
    for line in text.splitlines():
        match = re.match(r"\s{8}(\w+): (.*)", line)
        if match:
            name = match.group(1)
            found[name] = match.group(2)
        elif name and line.strip():
            found[name] += " " + line.strip()
    return {key: value.replace("``", "").replace("%", "%%") for key, value in found.items()}


def add_trainer_arguments(parser: argparse.ArgumentParser, **defaults: Any) -> None:
    """Add ``--config FILE``, ``--resume`` and one flag per :class:`TrainConfig` field.

    ``defaults`` are the trainer's own defaults (``steps=2000``), used where neither a flag nor
    ``--config`` sets a field.
    """
    from ..training import TrainConfig
    from ..training.config import OPTIMIZERS, SCHEDULES

    group = parser.add_argument_group("training")
    group.add_argument("--config", metavar="FILE", help="JSON file of trainer settings (flags override it)")
    group.add_argument(
        "--resume", action="store_true", help="continue from the last checkpoint in the run folder"
    )
    hints = typing.get_type_hints(TrainConfig)
    helps = _field_help()
    choices = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES}
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        kind = hints[field.name]
        base = next((t for t in typing.get_args(kind) if t is not type(None)), kind)
        default = defaults.get(field.name, field.default)
        text = f"{helps.get(field.name, '')} (default {default})"
        if base is bool:
            group.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=text
            )
        else:
            group.add_argument(
                flag, type=base, choices=choices.get(field.name), default=argparse.SUPPRESS, help=text
            )
    parser.set_defaults(trainer_defaults=defaults)


def train_config_from_args(args: argparse.Namespace):
    """The :class:`TrainConfig`: the trainer's defaults, then ``--config FILE``, then the flags.

    Giving ``epochs`` (in the file or as a flag) without ``steps`` drops a default ``steps``, and
    the other way round.

    Raises:
        InputError: a bad settings file or an impossible combination (named in the message).
    """
    from ..training import TrainConfig

    settings = dict(getattr(args, "trainer_defaults", {}))
    given = TrainConfig.read_settings(args.config) if args.config else {}
    names = [field.name for field in dataclasses.fields(TrainConfig)]
    given.update({name: getattr(args, name) for name in names if hasattr(args, name)})
    for chosen, other in (("epochs", "steps"), ("steps", "epochs")):
        if chosen in given and other not in given:
            settings.pop(other, None)
    settings.update(given)
    return TrainConfig.from_dict(settings, args.config)


def report_training(args: argparse.Namespace, result, *lines: str) -> int:
    """Print a finished run (on rank 0 only): the result, then ``lines`` for people."""
    from ..progress import distributed_rank

    if distributed_rank()[0] == 0:
        payload = {
            "run": str(result.run_dir),
            "model": str(result.model_dir),
            "steps": result.steps,
            "losses": result.losses,
            "metrics": result.metrics,
            "resumed_from": result.resumed_from,
        }
        print_result(args, payload)
        if not json_mode(args):
            print(f"trained {result.steps} steps; model written to {result.model_dir}")
            for line in lines:
                print(line)
    return 0


def command_toy(args: argparse.Namespace) -> int:
    from ..training import train
    from ..training.toy import ToyLiverTask

    config = train_config_from_args(args)
    task = ToyLiverTask(samples=args.samples, crop_voxels=args.crop_voxels)
    result = train(task, config, args.output, resume=args.resume, progress=args.reporter)
    return report_training(args, result)


def command_segmenter(args: argparse.Namespace) -> int:
    from ..segmentation import preset_config
    from ..segmentation.training import SegmenterTask
    from ..training import train

    config = train_config_from_args(args)
    model = preset_config(args.preset)
    if args.spacing_mm:
        model.preprocessing.spacing_mm = list(args.spacing_mm)
    task = SegmenterTask(
        args.datalist,
        model,
        crop_voxels=args.crop_voxels,
        samples=args.samples,
        synthetic_ratio=args.synthetic_ratio,
        positive_ratio=args.positive_ratio,
        engine=args.engine,
        seed=config.seed,
        sizes=tuple(args.sizes),
        augment=args.augment,
        spatial=args.spatial_augment,
        synthesizer=args.synthesizer,
        qc_model=args.qc_model,
        qc_threshold=args.qc_threshold,
        qc_tries=args.qc_tries,
    )
    result = train(task, config, args.output, resume=args.resume, progress=args.reporter)
    return report_training(args, result)


def command_reports(args: argparse.Namespace) -> int:
    from ..reports.model import default_preprocessing
    from ..reports.objectives import Objectives
    from ..reports.training import ReportTask
    from ..reports.vision import default_architecture
    from ..training import train

    config = train_config_from_args(args)
    objectives = Objectives(
        contrastive=args.contrastive_weight, correlation=args.correlation_weight,
        volume=args.volume_weight, sentences=args.sentence_weight, temperature=args.temperature,
    )  # fmt: skip
    preprocessing = default_preprocessing(args.input_voxels, args.spacing_mm)
    if args.hu_window:
        preprocessing.hu_window = list(args.hu_window)
    architecture = default_architecture(
        feature_size=args.feature_size, embed_dim=args.embed_dim, input_voxels=args.input_voxels
    )
    task = ReportTask(
        args.datalist, architecture, preprocessing, objectives, text_encoder=args.text_encoder,
        device=config.device, progress=args.reporter,
    )  # fmt: skip
    result = train(task, config, args.output, resume=args.resume, progress=args.reporter)
    recall = result.metrics.get("ct_to_report_r1")
    if recall is None:
        return report_training(args, result)
    chance = result.metrics["chance_r1"]
    return report_training(args, result, f"held-out CT -> report R@1 {recall:.3f} (chance {chance:.3f})")


def command_synthesizer(args: argparse.Namespace) -> int:
    from ..adversarial import SynthesisSettings
    from ..adversarial.training import SynthesizerTask
    from ..training import train

    config = train_config_from_args(args)
    settings = SynthesisSettings(
        grid=args.grid,
        min_spacing_mm=args.spacing_mm,
        hu_window=tuple(args.hu_window),
        scale_hu=args.scale_hu,
    )
    task = SynthesizerTask(
        args.datalist,
        segmenter=args.segmenter,
        settings=settings,
        samples=args.samples,
        adversarial_weight=args.adversarial_weight,
        segmentation_weight=args.segmentation_weight,
        seed=config.seed,
    )
    result = train(task, config, args.output, resume=args.resume, progress=args.reporter)
    return report_training(args, result)


def _register_synthesizer(trainers, common) -> None:
    from .common import bounded

    parser = trainers.add_parser(
        "synthesizer",
        parents=[common],
        help="the adversarial tumor generator on a datalist of labelled and unlabelled CTs",
        description=(
            "Trains the generator and the discriminator (voxel-wise background / real / synthetic "
            "tumor) with a frozen segmenter's guidance. Labelled entries (tumor labels) give the real "
            "tumors; every entry with liver, pancreas or kidney labels hosts synthetic geometry."
        ),
    )
    parser.add_argument("--datalist", required=True, metavar="FILE", help="MONAI/MSD datalist (training)")
    parser.add_argument("-o", "--output", required=True, metavar="RUN", help="run folder")
    parser.add_argument(
        "--segmenter",
        metavar="MODEL",
        help="frozen segmentation model folder or shipped name (guides the loss)",
    )
    parser.add_argument(
        "--grid", type=bounded(int, 16, 96, "grid"), default=32, help="crop grid edge in voxels (default 32)"
    )
    parser.add_argument(
        "--spacing-mm", type=bounded(float, 0.3, 5.0, "spacing-mm"), default=1.5,
        help="training spacing and the crop's finest spacing (default 1.5 mm)",
    )  # fmt: skip
    parser.add_argument(
        "--hu-window", type=float, nargs=2, default=[-175.0, 250.0], metavar=("LOW", "HIGH"),
        help="HU window of the networks' input (default -175 250)",
    )  # fmt: skip
    parser.add_argument(
        "--scale-hu", type=bounded(float, 1.0, 1000.0, "scale-hu"), default=150.0,
        help="HU of a difference-map value of 1 (default 150)",
    )  # fmt: skip
    parser.add_argument(
        "--samples", type=bounded(int, 1, 10**7, "samples"), default=64, help="items per epoch (default 64)"
    )
    parser.add_argument(
        "--adversarial-weight", type=bounded(float, 0.0, 100.0, "adversarial-weight"), default=0.1,
        help="generator loss weight of fooling the discriminator (default 0.1)",
    )  # fmt: skip
    parser.add_argument(
        "--segmentation-weight", type=bounded(float, 0.0, 100.0, "segmentation-weight"), default=1.0,
        help="generator loss weight of the segmenter finding the tumor (default 1)",
    )  # fmt: skip
    add_trainer_arguments(
        parser, steps=2000, lr=1e-4, batch_size=2, weight_decay=0.0, checkpoint_every=200, validate_every=200
    )
    parser.set_defaults(handler=command_synthesizer)


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``train`` and its trainers."""
    train = commands.add_parser("train", parents=[common], help="train a model (one process or torchrun)")
    trainers = train.add_subparsers(dest="train_command", metavar="TRAINER", required=True)
    toy = trainers.add_parser(
        "toy", parents=[common], help="a small UNet segmenting the liver on phantom crops (proves the loop)"
    )
    toy.add_argument("-o", "--output", required=True, metavar="RUN", help="run folder")
    toy.add_argument("--samples", type=int, default=32, help="crops per epoch (default 32)")
    toy.add_argument("--crop-voxels", type=int, default=32, help="crop edge in voxels (default 32)")
    add_trainer_arguments(toy, steps=40, lr=1e-2, batch_size=4, checkpoint_every=10, log_every=1)
    toy.set_defaults(handler=command_toy)
    from ..segmentation import PRESETS
    from .common import bounded

    segmenter = trainers.add_parser(
        "segmenter",
        parents=[common],
        help="a tumor segmenter on a datalist; unlabelled cases get synthetic tumors online",
    )
    segmenter.add_argument(
        "--datalist", required=True, metavar="FILE", help="MONAI/MSD datalist (training, validation)"
    )
    segmenter.add_argument("-o", "--output", required=True, metavar="RUN", help="run folder")
    segmenter.add_argument(
        "--preset", choices=sorted(PRESETS), default="default", help="network preset (default: default)"
    )
    segmenter.add_argument(
        "--spacing-mm", type=float, nargs=3, metavar=("X", "Y", "Z"), help="training spacing (default 1.5 mm)"
    )
    segmenter.add_argument(
        "--crop-voxels", type=bounded(int, 16, 512, "crop-voxels"), default=96, help="crop edge (default 96)"
    )
    segmenter.add_argument(
        "--samples", type=bounded(int, 1, 10**7, "samples"), default=64, help="crops per epoch (default 64)"
    )
    segmenter.add_argument(
        "--synthetic-ratio",
        type=bounded(float, 0.0, 1.0, "synthetic-ratio"),
        default=0.5,
        help="share of unlabelled crops that get a synthetic tumor (default 0.5)",
    )
    segmenter.add_argument(
        "--positive-ratio",
        type=bounded(float, 0.0, 1.0, "positive-ratio"),
        default=2 / 3,
        help="share of crops centred on a tumor or organ voxel (default 0.67)",
    )
    segmenter.add_argument("--engine", default="handcrafted", help="synthesis engine (default handcrafted)")
    segmenter.add_argument(
        "--synthesizer",
        metavar="MODEL",
        help="model folder (or shipped name) of a model engine (adversarial; default: its shipped "
        "synthesizer_demo)",
    )
    segmenter.add_argument(
        "--qc-model",
        metavar="MODEL",
        help="quality control of the synthetic tumors: a segmentation model folder or shipped name "
        "(e.g. segmenter_demo); a tumor it does not find is drawn again, and a crop whose tumor never "
        "passes stays healthy",
    )
    segmenter.add_argument(
        "--qc-threshold",
        type=bounded(float, 0.0, 1.0, "qc-threshold"),
        help="share of a tumor's voxels the QC model must find (default: TumorSpec's, 0.7)",
    )
    segmenter.add_argument(
        "--qc-tries",
        type=bounded(int, 1, 100, "qc-tries"),
        help="draws of new geometry before a crop stays healthy (default: TumorSpec's, 10)",
    )
    segmenter.add_argument(
        "--sizes",
        nargs="+",
        choices=("tiny", "small", "medium", "large"),
        default=["tiny", "small"],
        help="size classes of the synthetic tumors, drawn uniformly (default tiny small)",
    )
    segmenter.add_argument(
        "--augment",
        action="store_true",
        help="vary each training crop's HU (offset up to 25 HU, contrast +-10%%)",
    )
    segmenter.add_argument(
        "--spatial-augment",
        action="store_true",
        help="flip each training crop's axes (p 0.2 each) and zoom it (p 0.5, x0.8 to x1.25), labels alike",
    )
    add_trainer_arguments(segmenter, steps=2000, lr=1e-3, batch_size=2, warmup_steps=100, validate_every=200)
    segmenter.set_defaults(handler=command_segmenter)

    reports = trainers.add_parser(
        "reports", parents=[common], help="an MG-3D CT-report matching model on CT-report pairs"
    )
    reports.add_argument(
        "--datalist",
        required=True,
        metavar="FILE",
        help="report datalist (training, validation), see make-corpus",
    )
    reports.add_argument("-o", "--output", required=True, metavar="RUN", help="run folder")
    reports.add_argument(
        "--input-voxels", type=bounded(int, 32, 256, "input voxels"), default=64,
        help="input cube edge, a multiple of 32 (default 64)",
    )  # fmt: skip
    reports.add_argument(
        "--spacing-mm",
        type=bounded(float, 0.5, 20.0, "spacing"),
        default=4.0,
        help="input spacing (default 4)",
    )
    reports.add_argument("--hu-window", type=float, nargs=2, metavar=("LOW", "HIGH"), help="default -150 250")
    reports.add_argument(
        "--feature-size", type=bounded(int, 6, 96, "feature size"), default=12, help="Swin width (default 12)"
    )
    reports.add_argument(
        "--embed-dim",
        type=bounded(int, 8, 1024, "embed dim"),
        default=128,
        help="embedding size (default 128)",
    )
    reports.add_argument("--text-encoder", metavar="DIR", help="local Hugging Face folder (default MiniLM)")
    for name, default, what in (
        ("contrastive", 1.0, "global contrastive"), ("correlation", 0.5, "inter-patient correlation"),
        ("volume", 0.5, "text-guided masked volume"), ("sentence", 0.5, "image-guided sentence"),
    ):  # fmt: skip
        reports.add_argument(
            f"--{name}-weight", type=bounded(float, 0.0, 100.0, f"{name} weight"), default=default,
            help=f"weight of the {what} objective; 0 switches it off (default {default})",
        )  # fmt: skip
    reports.add_argument(
        "--temperature", type=bounded(float, 1e-3, 10.0, "temperature"), default=0.1, help="InfoNCE (0.1)"
    )
    add_trainer_arguments(
        reports, steps=400, lr=3e-4, batch_size=8, warmup_steps=20, validate_every=100, checkpoint_every=50,
        log_every=5,
    )  # fmt: skip
    reports.set_defaults(handler=command_reports)
    _register_synthesizer(trainers, common)
