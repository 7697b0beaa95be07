"""Report pre-training on the shared trainer: a few steps on a tiny corpus write a report model
folder that loads, with held-out recall in its metrics; the CLI runs the same; switches work."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from freetumor_core.reports.corpus import make_corpus
from freetumor_core.reports.model import default_preprocessing, load_report_model
from freetumor_core.reports.objectives import Objectives
from freetumor_core.reports.training import ReportTask, recall_at
from freetumor_core.reports.vision import default_architecture
from freetumor_core.training import TrainConfig, train


def test_recall_at_counts_the_right_column():
    similarity = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.1], [0.0, 0.1, 0.3]])
    recall = recall_at(similarity, (1, 2))
    assert recall[1] == pytest.approx(2 / 3) and recall[2] == pytest.approx(1.0)


def _tiny_architecture():
    architecture = default_architecture(feature_size=6, embed_dim=16, input_voxels=32)
    architecture["args"]["depths"] = [1, 1, 1, 1]
    return architecture


@pytest.fixture(scope="module")
def datalist(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    make_corpus(folder, phantoms=3, cases_per_host=2, preprocessing=default_preprocessing(32, 8.0), seed=1)
    return folder / "datalist.json"


@pytest.mark.slow
def test_a_few_steps_write_a_loadable_report_model(tmp_path, datalist):
    task = ReportTask(datalist, _tiny_architecture(), default_preprocessing(32, 8.0), device="cpu")
    config = TrainConfig(steps=4, batch_size=2, lr=1e-3, checkpoint_every=2, log_every=1, device="cpu")
    result = train(task, config, tmp_path / "run")
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [line["losses"] for line in lines if "losses" in line]
    assert {"contrastive_loss", "correlation_loss", "volume_loss", "sentence_loss", "loss"} <= set(losses[0])
    assert all(np.isfinite(value) for line in losses for value in line.values())
    assert result.metrics["validation_cases"] >= 1 and 0.0 <= result.metrics["ct_to_report_r1"] <= 1.0
    loaded = load_report_model(result.model_dir, device="cpu")
    assert loaded.config.task == "reports" and loaded.config.provenance["text_encoder"] == "default"
    assert loaded.config.preprocessing.patch_size_voxels == [32, 32, 32]
    # resuming the finished run continues from its last checkpoint
    again = train(task, TrainConfig(**{**config.to_dict(), "steps": 5}), tmp_path / "run", resume=True)
    assert again.resumed_from == 4 and again.steps == 5


def test_switched_off_objectives_leave_their_losses_and_heads_out(datalist):
    objectives = Objectives(volume=0.0, sentences=0.0, correlation=0.0)
    task = ReportTask(
        datalist, _tiny_architecture(), default_preprocessing(32, 8.0), objectives, device="cpu"
    )
    model = task.build_model()
    assert model.volume_decoder is None and model.sentence_decoder is None
    items = [task.dataset()[0], task.dataset()[1]]
    batch = {key: torch.stack([item[key] for item in items]) for key in items[0]}
    losses = task.step(model, batch)
    assert set(losses) == {"contrastive_loss", "loss"}
    assert torch.equal(losses["loss"], losses["contrastive_loss"])
