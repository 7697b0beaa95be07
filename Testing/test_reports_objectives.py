"""MG-3D's objectives: what each one rewards, its off switch, and a few steps lowering each loss."""

from __future__ import annotations

import pytest
import torch

from freetumor_core.errors import InputError
from freetumor_core.reports.objectives import (
    Objectives,
    contrastive_loss,
    correlation_loss,
    mask_sentences,
    mask_volume,
    report_similarity,
    sentence_loss,
    volume_loss,
)
from freetumor_core.reports.vision import ReportModel

TINY = dict(feature_size=6, embed_dim=16, text_dim=24, input_voxels=32, depths=[1, 1, 1, 1])


def _unit(tensor: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(tensor, dim=-1)


def test_contrastive_loss_is_low_for_matching_pairs_and_high_for_swapped_ones():
    vectors = torch.eye(4)
    assert contrastive_loss(vectors, vectors) < 0.01
    assert contrastive_loss(vectors, vectors.flip(0)) > 5.0


def test_report_similarity_is_one_for_identical_reports_and_ignores_padding():
    sentences = _unit(torch.randn(2, 3, 8))
    sentences[1] = sentences[0]
    mask = torch.tensor([[True, True, False], [True, True, False]])
    sentences[1, 2] = -sentences[0, 0]  # a padded row that would lower the score if it counted
    similarity = report_similarity(sentences, mask)
    assert similarity[0, 1] == pytest.approx(1.0, abs=1e-5)
    assert torch.allclose(similarity, similarity.T)


def test_correlation_ignores_pairs_between_the_thresholds():
    image = _unit(torch.randn(3, 8))
    between = torch.full((3, 3), 0.75)
    assert correlation_loss(image, between) == 0.0  # every pair in the ignored band
    different = torch.full((3, 3), 0.5)
    expected = (image @ image.T).abs()[~torch.eye(3, dtype=torch.bool)].mean()
    assert correlation_loss(image, different) == pytest.approx(float(expected), abs=1e-6)
    similar = torch.full((3, 3), 0.95)
    target = ((image @ image.T) - 0.95).abs()[~torch.eye(3, dtype=torch.bool)].mean()
    assert correlation_loss(image, similar) == pytest.approx(float(target), abs=1e-6)


def test_masks_cover_the_asked_share():
    image = torch.rand(2, 1, 32, 32, 32)
    masked, voxels = mask_volume(image, 8, 0.5, torch.Generator().manual_seed(0))
    assert voxels.float().mean() == pytest.approx(0.5)
    assert (masked[voxels] == 0).all() and torch.equal(masked[~voxels], image[~voxels])
    mask = torch.tensor([[True] * 5 + [False] * 3, [True, False] + [False] * 6])
    chosen = mask_sentences(mask, 0.15, torch.Generator().manual_seed(0))
    assert chosen[0].any() and not chosen[~mask].any()
    assert not chosen[1].any()  # a one-sentence report keeps its only sentence


def test_weights_are_checked():
    with pytest.raises(InputError, match="at least one objective"):
        Objectives(contrastive=0, correlation=0, volume=0, sentences=0)
    with pytest.raises(InputError, match="low"):
        Objectives(low=0.95, high=0.9)


def test_switched_off_heads_are_not_built():
    model = ReportModel(**{**TINY, "masked_volume": False, "masked_sentences": False})
    assert model.volume_decoder is None and model.sentence_decoder is None
    out = model(torch.rand(2, 1, 32, 32, 32), torch.randn(2, 3, 24), torch.ones(2, 3, dtype=torch.bool))
    assert set(out) == {"image", "report"}


@pytest.mark.parametrize("objective", ["contrastive", "correlation", "volume", "sentences"])
def test_a_few_steps_lower_each_loss(objective):
    torch.manual_seed(0)
    model = ReportModel(**TINY)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(1)
    # four distinguishable volumes: a bright block in a different quarter of each
    image = 0.1 * torch.rand(4, 1, 32, 32, 32, generator=generator)
    for index in range(4):
        z, y = divmod(index, 2)
        image[index, 0, 16 * z : 16 * z + 16, 16 * y : 16 * y + 16, :] += 1.0
    sentences = _unit(torch.randn(4, 3, 24, generator=generator))
    sentences[1] = _unit(sentences[0] + 0.05 * torch.randn(3, 24, generator=generator))  # a similar pair
    mask = torch.ones(4, 3, dtype=torch.bool)
    masked_image, voxels = mask_volume(image, 8, 0.5, generator)
    chosen = mask_sentences(mask, 0.3, generator)

    def loss() -> torch.Tensor:
        out = model(image, sentences, mask, masked_image=masked_image, masked_sentences=chosen)
        if objective == "contrastive":
            return contrastive_loss(out["image"], out["report"])
        if objective == "correlation":
            return correlation_loss(out["image"], report_similarity(sentences, mask))
        if objective == "volume":
            return volume_loss(out["volume"], image, voxels)
        return sentence_loss(out["sentences"], sentences, chosen)

    with torch.no_grad():
        first = float(loss())
    for _ in range(10):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    with torch.no_grad():
        last = float(loss())
    assert last < 0.97 * first, (first, last)
