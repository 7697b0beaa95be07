"""The report model's networks: a 3D Swin ViT for the CT, a projection for the frozen sentence vectors.

:class:`ReportModel` holds

- the vision encoder: MONAI SwinUNETR's Swin ViT (``monai.networks.nets.swin_unetr.SwinTransformer``,
  as MG-3D), whose last stage is mean-pooled and projected into the shared embedding space;
- the text side: the frozen sentence vectors (all-MiniLM-L6-v2, :mod:`.encoder`) of a report's
  sentences, each projected into the same space, then attention-pooled into one report vector;
- the heads of MG-3D's local objectives, built only when their objective is on (so that DDP never
  sees an unused parameter): a text-guided volume decoder (image tokens attend to the sentences,
  then each token predicts its block of voxels) and an image-guided sentence decoder (masked
  sentences attend to the image tokens and predict their frozen sentence vectors).

Embeddings are unit length, so that a dot product is the cosine. The CT's preprocessing (spacing, HU
window, input size) lives in the model folder's config, see :mod:`.model`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ARCHITECTURE_NAME", "ReportModel", "default_architecture"]

ARCHITECTURE_NAME = "ReportModel"


def default_architecture(
    feature_size: int = 12,
    embed_dim: int = 128,
    text_dim: int = 384,
    input_voxels: int = 48,
    masked_volume: bool = True,
    masked_sentences: bool = True,
    window: int = 4,
) -> dict[str, Any]:
    """``{"name": "ReportModel", "args": {...}}`` for :class:`ReportModel` (small, CPU-sized).

    ``window``: the Swin attention window (tokens a side). 4 rather than Swin's usual 7: on the small
    token grids of a CPU-sized input (16-32 a side at the first stage) a window of 7 pads the grid
    and builds attention maps about 10 times larger, so a training step takes 10 times longer.
    """
    return {
        "name": ARCHITECTURE_NAME,
        "args": {
            "feature_size": feature_size,
            "embed_dim": embed_dim,
            "text_dim": text_dim,
            "input_voxels": input_voxels,
            "depths": [2, 2, 2, 2],
            "num_heads": [3, 6, 12, 24],
            "window": window,
            "masked_volume": masked_volume,
            "masked_sentences": masked_sentences,
        },
    }


class _CrossAttention(nn.Module):
    """Queries attend to a context (pre-norm, one multi-head attention and an MLP, residual)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm_q, self.norm_c = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim)
        )

    def forward(self, query: torch.Tensor, context: torch.Tensor, padding: torch.Tensor | None = None):
        context = self.norm_c(context)
        attended, _ = self.attention(self.norm_q(query), context, context, key_padding_mask=padding)
        query = query + attended
        return query + self.mlp(query)


class ReportModel(nn.Module):
    """CT and report encoders into one embedding space, with MG-3D's reconstruction heads.

    Args:
        feature_size: the Swin ViT's embedding width (MG-3D: 48; here 12-24 on a CPU).
        embed_dim: the shared embedding space's dimension.
        text_dim: the frozen sentence vectors' dimension (384 for MiniLM).
        input_voxels: the cubic input's edge (a multiple of 32).
        depths, num_heads, window: the Swin ViT's stages, heads per stage and window edge.
        masked_volume: build the text-guided volume decoder.
        masked_sentences: build the image-guided sentence decoder.

    Both embeddings are centred before they are made unit length (a batch norm over the batch,
    running statistics at inference; sentences and reports share the text side's): without it the
    component that every CT shares (and every report) dominates, all vectors start at a cosine of
    about 0.998 with each other and the contrastive loss stays at chance, ln(batch).
    """

    block_voxels = 8  # the volume decoder's block: one token of the 1/8-scale stage

    def __init__(
        self,
        feature_size: int = 12,
        embed_dim: int = 128,
        text_dim: int = 384,
        input_voxels: int = 48,
        depths: list[int] | tuple[int, ...] = (2, 2, 2, 2),
        num_heads: list[int] | tuple[int, ...] = (3, 6, 12, 24),
        window: int = 7,
        masked_volume: bool = True,
        masked_sentences: bool = True,
    ) -> None:
        super().__init__()
        from monai.networks.nets.swin_unetr import SwinTransformer

        if input_voxels % 32:
            raise ValueError(f"input_voxels must be a multiple of 32, got {input_voxels}")
        self.input_voxels, self.embed_dim, self.text_dim = input_voxels, embed_dim, text_dim
        self.swin = SwinTransformer(
            in_chans=1,
            embed_dim=feature_size,
            window_size=(window,) * 3,
            patch_size=(2,) * 3,
            depths=tuple(depths),
            num_heads=tuple(num_heads),
            spatial_dims=3,
        )
        deepest = feature_size * 16
        self.image_projection = nn.Sequential(nn.LayerNorm(deepest), nn.Linear(deepest, embed_dim))
        self.text_projection = nn.Sequential(
            nn.Linear(text_dim, embed_dim), nn.GELU(), nn.Linear(embed_dim, embed_dim)
        )
        self.text_pool = nn.Linear(embed_dim, 1)  # attention pooling of the sentences
        self.image_centre = nn.BatchNorm1d(embed_dim)
        self.text_centre = nn.BatchNorm1d(embed_dim)
        heads = 4 if embed_dim % 4 == 0 else 1
        self.volume_decoder = self.sentence_decoder = None
        if masked_volume:
            self.volume_tokens = nn.Linear(feature_size * 4, embed_dim)
            self.volume_fusion = _CrossAttention(embed_dim, heads)
            self.volume_decoder = nn.Linear(embed_dim, self.block_voxels**3)
        if masked_sentences:
            self.image_tokens = nn.Linear(feature_size * 8, embed_dim)
            self.sentence_mask_token = nn.Parameter(torch.zeros(embed_dim))
            self.sentence_fusion = _CrossAttention(embed_dim, heads)
            self.sentence_decoder = nn.Linear(embed_dim, text_dim)

    # -- the two encoders --------------------------------------------------------------------------
    def image_features(self, image: torch.Tensor) -> list[torch.Tensor]:
        """The Swin ViT's five hidden states of a ``(B, 1, N, N, N)`` input (N = input_voxels)."""
        return self.swin(image, normalize=True)

    def image_embedding(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Unit-length ``(B, embed_dim)`` CT vectors from the deepest stage, mean-pooled."""
        pooled = features[-1].flatten(2).mean(2)
        return F.normalize(self.image_centre(self.image_projection(pooled)), dim=-1)

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        return self.image_embedding(self.image_features(image))

    def sentence_embeddings(self, sentences: torch.Tensor) -> torch.Tensor:
        """Unit-length ``(..., embed_dim)`` vectors of frozen sentence vectors ``(..., text_dim)``
        (centred by the reports' running statistics, so sentences and reports share one space)."""
        projected = self.text_projection(sentences)
        centre = self.text_centre
        flat = F.batch_norm(
            projected.reshape(-1, projected.shape[-1]),
            centre.running_mean,
            centre.running_var,
            centre.weight,
            centre.bias,
            training=False,
            eps=centre.eps,
        )
        return F.normalize(flat.reshape(projected.shape), dim=-1)

    def report_embedding(self, sentences: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Unit-length ``(B, embed_dim)`` report vectors from ``(B, S, text_dim)`` sentence vectors
        and their ``(B, S)`` mask (True: a real sentence), by attention pooling."""
        projected = self.text_projection(sentences)
        logits = self.text_pool(torch.tanh(projected)).squeeze(-1).masked_fill(~mask, float("-inf"))
        weights = torch.softmax(logits, dim=1).nan_to_num(0.0)
        return F.normalize(self.text_centre((weights.unsqueeze(-1) * projected).sum(1)), dim=-1)

    # -- the local reconstruction heads ------------------------------------------------------------
    def reconstruct_volume(self, features: list[torch.Tensor], sentences: torch.Tensor, mask: torch.Tensor):
        """Text-guided: the 1/8-scale tokens of a masked volume attend to the report's sentences, then
        each predicts its 8^3 voxels. Returns ``(B, 1, N, N, N)``."""
        tokens = features[2]  # (B, 4F, N/8, N/8, N/8)
        batch, _, depth, height, width = tokens.shape
        query = self.volume_tokens(tokens.flatten(2).transpose(1, 2))
        fused = self.volume_fusion(query, self.text_projection(sentences), padding=~mask)
        blocks = self.volume_decoder(fused)  # (B, tokens, 8^3)
        b = self.block_voxels
        blocks = blocks.view(batch, depth, height, width, b, b, b).permute(0, 1, 4, 2, 5, 3, 6)
        return blocks.reshape(batch, 1, depth * b, height * b, width * b)

    def reconstruct_sentences(
        self, features: list[torch.Tensor], sentences: torch.Tensor, mask: torch.Tensor, masked: torch.Tensor
    ) -> torch.Tensor:
        """Image-guided: the sentences, with the ``masked`` ones ``(B, S)`` replaced by a mask token,
        attend to the 1/16-scale image tokens and predict the frozen sentence vectors ``(B, S, text_dim)``."""
        image = self.image_tokens(features[3].flatten(2).transpose(1, 2))
        query = self.text_projection(sentences)
        query = torch.where(masked.unsqueeze(-1), self.sentence_mask_token.to(query.dtype), query)
        context = torch.cat([image, query], dim=1)
        visible = torch.zeros(mask.shape[0], image.shape[1], dtype=torch.bool, device=mask.device)
        padding = torch.cat([visible, ~mask], dim=1)
        return self.sentence_decoder(self.sentence_fusion(query, context, padding=padding))

    def forward(
        self,
        image: torch.Tensor,
        sentences: torch.Tensor,
        mask: torch.Tensor,
        masked_image: torch.Tensor | None = None,
        masked_sentences: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Everything the objectives need in one call (one call per step keeps DDP simple).

        Returns ``image`` and ``report`` embeddings; with ``masked_image`` the reconstructed
        ``volume``; with ``masked_sentences`` the predicted ``sentences``.
        """
        features = self.image_features(image)
        out = {"image": self.image_embedding(features), "report": self.report_embedding(sentences, mask)}
        if masked_image is not None and self.volume_decoder is not None:
            out["volume"] = self.reconstruct_volume(self.image_features(masked_image), sentences, mask)
        if masked_sentences is not None and self.sentence_decoder is not None:
            out["sentences"] = self.reconstruct_sentences(features, sentences, mask, masked_sentences)
        return out
