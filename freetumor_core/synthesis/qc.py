"""Quality control of synthetic tumors by a frozen segmenter, for every engine (``TumorSpec.qc``).

Each tumor's ``qc_score`` is the fraction of its voxels that the segmentation model labels as a
tumor (the probability of its tumor classes is at least 0.5, before any post-processing: a tumor is
judged by what the network sees, not by rules about organs), measured on a crop of the new CT
centred on the tumor (its box grown by :data:`QC_MARGIN_MM`, and to at least one of the network's
windows, so that a tumor that fits one is seen whole; the CT's own geometry). A synthesis is kept
when every tumor scores at least ``spec.qc_threshold``; otherwise the whole call is drawn again
with a new seed (new geometry and look), up to ``spec.qc_tries`` times, and then an
:class:`~freetumor_core.errors.InputError` gives every try's scores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..labels import LabelMap
from ..models import LoadedModel, load_model, resolve_model
from ..progress import ProgressLike, make_progress
from ..volume import Volume
from .spec import SynthesisResult, TumorSpec

__all__ = ["QC_MARGIN_MM", "qc_scores", "synthesize_checked", "try_seed"]

QC_MARGIN_MM = 16.0
_SEGMENTERS: dict[str, LoadedModel] = {}


def _segmenter(model: str | Path | LoadedModel) -> LoadedModel:
    if isinstance(model, LoadedModel):
        return model
    folder = resolve_model(model)
    key = str(folder.resolve())
    if key not in _SEGMENTERS:
        _SEGMENTERS[key] = load_model(folder, device="auto", task="segmentation")
    return _SEGMENTERS[key]


def qc_scores(result: SynthesisResult, segmenter: str | Path | LoadedModel) -> list[float]:
    """Per tumor of ``result``: the fraction of its voxels the segmenter labels as tumor.

    Raises:
        InputError: the segmenter folder is missing, broken or not a segmentation model.
    """
    from ..segmentation import segment
    from ..segmentation.networks import takes_organ_channel

    loaded = _segmenter(segmenter)
    ct = result.ct
    spacing = ct.spacing_zyx
    pre = loaded.config.preprocessing
    patch_mm = (
        np.asarray(pre.patch_size_voxels or (96, 96, 96), float)[::-1]
        * np.asarray(pre.spacing_mm or ct.spacing, float)[::-1]
    )
    shape = np.asarray(ct.shape)
    scores = []
    for (box, part), record in zip(result.tumor_parts, result.tumors, strict=True):
        start = np.array([s.start for s in box])
        stop = np.array([s.stop for s in box])
        # Centred on the tumor, at least one network window: a tumor that fits is seen whole.
        size_mm = np.maximum(patch_mm, (stop - start) * spacing + 2 * QC_MARGIN_MM)
        voxels = np.ceil(size_mm / spacing).astype(int)
        low = np.clip(np.floor((start + stop - voxels) / 2.0).astype(int), 0, None)
        high = np.minimum(low + voxels, shape)
        low = np.clip(high - voxels, 0, None)
        region = tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))
        crop = Volume(
            np.ascontiguousarray(ct.array[region]), ct.spacing, tuple(ct.index_to_lps(low)), ct.direction
        )
        organs = None
        if takes_organ_channel(loaded.config):
            labels = result.labels.array[region].copy()
            organ_ids = result.labels.ids_for(record.organ)
            if organ_ids:
                labels[labels == record.label_id] = organ_ids[0]  # the organ with its tumor
            organs = LabelMap(crop.like(labels), dict(result.labels.names))
        found = segment(crop, loaded, organs=organs, min_tumor_ml=0.0, device=loaded_device(loaded))
        inside = np.zeros(crop.shape, bool)
        inner = tuple(slice(s.start - a, s.stop - a) for s, a in zip(box, low, strict=True))
        inside[inner] = part
        count = int(np.count_nonzero(inside))
        hit = (found.tumor_probability >= 0.5) & inside
        scores.append(float(np.count_nonzero(hit)) / count if count else 0.0)
    return scores


def loaded_device(loaded: LoadedModel):
    return next(loaded.network.parameters()).device


def try_seed(seed: int | None, attempt: int) -> int | None:
    """The seed of try ``attempt`` (0: ``seed`` itself; ``None`` stays random)."""
    if seed is None or attempt == 0:
        return seed
    return int(np.random.SeedSequence([int(seed), attempt]).generate_state(1, np.uint64)[0] >> 1)


def synthesize_checked(
    engine,
    ct: Volume,
    organs: LabelMap,
    spec: TumorSpec,
    seed: int | None = None,
    progress: ProgressLike = None,
) -> SynthesisResult:
    """``engine.synthesize`` under quality control (see the module docstring).

    Raises:
        InputError: no try within ``spec.qc_tries`` had every tumor at or above the threshold (the
            message gives each try's scores), or a bad segmenter folder.
    """
    reporter = make_progress(progress)
    segmenter = _segmenter(spec.qc)
    tried: list[list[float]] = []
    for attempt in range(spec.qc_tries):
        result = engine.synthesize(ct, organs, spec, seed=try_seed(seed, attempt), progress=progress)
        scores = qc_scores(result, segmenter)
        for record, score in zip(result.tumors, scores, strict=True):
            record.qc_score = round(score, 4)
            record.extra["qc_try"] = attempt + 1
        reporter.event("qc", attempt=attempt + 1, scores=[round(s, 4) for s in scores])
        if min(scores) >= spec.qc_threshold:
            return result
        tried.append(scores)
    shown = "; ".join(
        f"try {number}: " + ", ".join(f"{score:.2f}" for score in scores)
        for number, scores in enumerate(tried, 1)
    )
    worst = min(min(scores) for scores in tried)
    raise InputError(
        f"quality control failed: in {len(tried)} tries the segmenter {segmenter.folder} never found "
        f"at least {spec.qc_threshold:g} of every tumor's voxels (qc_score per tumor: {shown}; lowest "
        f"{worst:.2f}); the {spec.engine} tumors may be too faint for it, or lower qc_threshold"
    )
