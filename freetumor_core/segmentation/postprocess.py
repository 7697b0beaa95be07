"""Post-processing of a predicted label map, and the lesions it holds as :class:`TumorRecord` s.

Rules, applied to every tumor label (a lesion name, :func:`freetumor_core.lesions.is_lesion_label`)
whose host organ is its name without the lesion word (``liver_tumor`` -> ``liver``):

0. **Given organs decide where the organs are** (:func:`class_regions`, applied when each voxel
   takes its most probable class). Inside a given host organ's mask, a voxel is that organ or its
   tumor, whichever is more probable; outside it, it is neither. A tumor the network half calls
   background (real tumors often look unlike the tissue around them) is then still a tumor when
   the organ labels say it lies in the organ.
1. **Tumors only inside organs.** With organ labels given, tumor voxels outside the host organ's
   mask become background. Without them (or when they lack the host organ), a tumor piece
   (face-connected) that does not touch the predicted host organ is removed. A tumor label without
   a host (``tumor``) must lie inside (or touch) any organ.
2. **Minimum volume.** Tumor pieces smaller than ``min_tumor_ml`` (default
   :data:`freetumor_core.lesions.MIN_LESION_ML`, a 5 mm ball: the one definition of a lesion) become
   the host organ's label (background when the model has no such organ label).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..labels import LabelMap
from ..lesions import MIN_LESION_ML, is_lesion_label
from ..records import TumorRecord
from ..volume import Volume
from .networks import host_organ, tumor_labels

__all__ = ["ENGINE", "Lesion", "class_regions", "find_lesions", "label_lesions", "postprocess"]

ENGINE = "segmenter"
SHELL_MM = 10.0  # the organ tissue within this distance of a lesion gives its contrast


def _organ_ids(label_names: dict[int, str], organ: str | None) -> list[int]:
    if organ is None:
        return [key for key, name in label_names.items() if key != 0 and not is_lesion_label(name)]
    wanted = LabelMap(Volume(np.zeros((1, 1, 1), np.uint8)), label_names).ids_for(organ)
    return [key for key in wanted if not is_lesion_label(label_names[key])]


def class_regions(
    label_names: dict[int, str], organ_masks: dict[str | None, np.ndarray] | None
) -> dict[int, np.ndarray]:
    """Where each class may be chosen, given organ labels: label id -> boolean mask.

    For every host organ in ``organ_masks`` (rule 0 of the module), the host's organ and tumor
    labels may only be chosen inside its mask; every other label (background, and the organs and
    tumors of hosts not given) only outside all of the given masks. Without a given host the
    result is empty: every label may be chosen anywhere. Every voxel keeps at least one allowed
    label (inside a mask its host's organ label; outside, background).
    """
    given = {host: mask for host, mask in (organ_masks or {}).items() if host is not None}
    if not given:
        return {}
    host_of: dict[int, str] = {}
    for host in given:
        for key in _organ_ids(label_names, host):
            host_of[key] = host
        for key, name in tumor_labels(label_names).items():
            if host_organ(name) == host:
                host_of[key] = host
    outside = ~np.logical_or.reduce([np.asarray(mask, bool) for mask in given.values()])
    regions = {key: np.asarray(given[host], bool) for key, host in host_of.items()}
    for key in label_names:
        if key not in host_of:
            regions[key] = outside
    return regions


def postprocess(
    labels: np.ndarray,
    label_names: dict[int, str],
    spacing_zyx_mm,
    organ_masks: dict[str | None, np.ndarray] | None = None,
    min_tumor_ml: float = MIN_LESION_ML,
) -> np.ndarray:
    """Apply the module's rules to a predicted ``(z, y, x)`` label array; returns a new array.

    Args:
        labels: predicted label ids.
        label_names: the model's label id -> name.
        spacing_zyx_mm: voxel size in array order.
        organ_masks: host organ name (``None``: any organ) -> boolean mask from given organ labels;
            hosts missing here are checked against the predicted organs.
        min_tumor_ml: smallest tumor piece kept, mL.
    """
    out = labels.copy()
    voxel_ml = float(np.prod(np.asarray(spacing_zyx_mm, dtype=np.float64))) / 1000.0
    organ_masks = organ_masks or {}
    for tumor_id, name in sorted(tumor_labels(label_names).items()):
        host = host_organ(name)
        tumor = out == tumor_id
        if not tumor.any():
            continue
        host_ids = _organ_ids(label_names, host)
        fill = host_ids[0] if host_ids and host is not None else 0
        if host in organ_masks:
            outside = tumor & ~organ_masks[host]
            out[outside] = 0
            tumor &= ~outside
        pieces, count = ndimage.label(tumor)
        if count == 0:
            continue
        keep = np.ones(count + 1, bool)
        keep[0] = False
        if host not in organ_masks:
            organ = np.isin(out, host_ids)
            touching = np.unique(pieces[ndimage.binary_dilation(organ) & tumor])
            touches = np.zeros(count + 1, bool)
            touches[touching] = True
            out[(pieces > 0) & ~touches[pieces]] = 0
            keep &= touches
        sizes_ml = np.bincount(pieces.ravel(), minlength=count + 1) * voxel_ml
        small = keep & (sizes_ml < min_tumor_ml)
        out[small[pieces]] = fill
    return out


@dataclass
class Lesion:
    """A found lesion: its record (``label_id`` is its tumor label) and its score, the mean tumor
    probability over its voxels (``None`` without probabilities)."""

    record: TumorRecord
    score: float | None = None

    def to_dict(self) -> dict:
        data = self.record.to_dict()
        data["score"] = None if self.score is None else round(float(self.score), 4)
        return data


def label_lesions(
    mask: np.ndarray, spacing_zyx_mm, min_ml: float = MIN_LESION_ML
) -> tuple[np.ndarray, list[int], list[tuple[slice, ...]]]:
    """The lesions of a boolean mask in labelled form: the same pieces, in the same order, as
    :func:`freetumor_core.lesions.split_lesions` (face-connected, at least ``min_ml``, largest
    first), without a full-size mask per lesion.

    Returns:
        ``(components, ids, boxes)``: the component id of every voxel, the ids of the lesions
        (largest first) and each lesion's bounding box.
    """
    components, count = ndimage.label(mask)
    if count == 0:
        return components, [], []
    voxel_ml = float(np.prod(np.asarray(spacing_zyx_mm, dtype=np.float64))) / 1000.0
    sizes_ml = np.bincount(components.ravel())[1:] * voxel_ml
    order = np.argsort(-sizes_ml, kind="stable")
    boxes = ndimage.find_objects(components)
    ids = [int(index) + 1 for index in order if sizes_ml[index] >= min_ml]
    return components, ids, [boxes[i - 1] for i in ids]


def _grow(box: tuple[slice, ...], margin: int, shape) -> tuple[slice, ...]:
    return tuple(
        slice(max(b.start - margin, 0), min(b.stop + margin, n)) for b, n in zip(box, shape, strict=True)
    )


def find_lesions(
    ct: Volume, labels: LabelMap, tumor_probability: np.ndarray | None = None, engine: str = ENGINE
) -> list[Lesion]:
    """The lesions of every tumor label of ``labels`` (on ``ct``'s grid), largest first per label.

    Each record has the host organ, the centre of mass in RAS mm, the equivalent-sphere diameter,
    the volume, the mean HU, and the contrast against the host organ within 10 mm of the lesion
    (0 when no organ voxel is that close).
    """
    spacing = ct.spacing_zyx
    margin = math.ceil(SHELL_MM / float(spacing.min())) + 1
    found: list[Lesion] = []
    for tumor_id, name in sorted(tumor_labels(labels.names).items()):
        components, ids, boxes = label_lesions(labels.array == tumor_id, spacing)
        host_ids = _organ_ids(labels.names, host_organ(name))
        for index, tight in zip(ids, boxes, strict=True):
            box = _grow(tight, margin, ct.shape)
            piece = components[box] == index
            organ = np.isin(labels.array[box], host_ids)
            hu = ct.array[box]
            volume_ml = int(piece.sum()) * ct.voxel_volume_ml
            corner = np.array([part.start for part in box])
            centre = ct.index_to_ras(np.argwhere(piece).mean(axis=0) + corner)
            mean_hu = float(hu[piece].mean())
            near = ndimage.distance_transform_edt(~piece, sampling=spacing) <= SHELL_MM
            shell = near & organ & ~piece
            contrast = mean_hu - float(hu[shell].mean()) if shell.any() else 0.0
            record = TumorRecord(
                organ=host_organ(name) or "unknown",
                centre_ras_mm=tuple(float(c) for c in centre),
                diameter_mm=(6.0 * volume_ml * 1000.0 / math.pi) ** (1.0 / 3.0),
                volume_ml=volume_ml,
                mean_hu=mean_hu,
                contrast_hu=contrast,
                engine=engine,
                label_id=int(tumor_id),
            )
            score = None if tumor_probability is None else float(tumor_probability[box][piece].mean())
            found.append(Lesion(record, score))
    return found
