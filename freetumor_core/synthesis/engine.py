"""The handcrafted engine: tumors painted from an organ's appearance table (``appearance.py``).

Placement, shapes and the call's flow are shared (``flow.py``); this module adds how a placed tumor
is painted and recorded. Callers use :func:`freetumor_core.synthesis.synthesize` with
``TumorSpec(engine="handcrafted")`` (the default), never this module.
"""

from __future__ import annotations

import math

import numpy as np

from ..records import TumorRecord
from ..volume import Volume
from .appearance import (
    RING_MM,
    Look,
    appearance_for,
    draw_look,
    edge_width_mm,
    mass_effect,
    reached_difference,
)
from .flow import Canvas, PlacingEngine
from .placement import ORGAN, SMALL_VESSEL_MM, VESSEL
from .shapes import TumorShape, _outside_distance_mm, mean_in
from .spec import TumorSpec

ENGINE = "handcrafted"
MASS_EFFECT_STRENGTH = 0.15  # tissue at the tumor's surface moves outwards by 15% of the radius
CALIBRATION_LIMITS = (0.25, 4.0)


class HandcraftedEngine(PlacingEngine):
    """The handcrafted engine: an organ-specific look added to the host CT (see ``appearance.py``)."""

    name = ENGINE

    def reach_mm(self, spec: TumorSpec) -> float:
        # The surrounding-organ shell outside the soft edge (at most 1.5 mm) that contrast is
        # measured against.
        return 1.5 + RING_MM

    def paint(
        self, canvas: Canvas, shape: TumorShape, centre: np.ndarray, requested_mm: float
    ) -> tuple[TumorShape, np.ndarray, Look, float]:
        spec = canvas.spec
        look = draw_look(
            appearance_for(canvas.organ),
            canvas.rng,
            spec.contrast_hu,
            spec.necrosis,
            spec.rim,
            spec.well_defined,
        )
        ct_out, labels_out, table, rng = canvas.ct_out, canvas.labels_out, canvas.table, canvas.rng
        _paint(ct_out, labels_out, table, shape, centre, look, canvas.tumor_id, spec, rng)
        return shape, centre, look, requested_mm

    def record(self, canvas: Canvas, painted: tuple[TumorShape, np.ndarray, Look, float]) -> TumorRecord:
        shape, centre, look, requested_mm = painted
        return _record(
            canvas.ct,
            canvas.ct_out,
            canvas.labels_out,
            canvas.table,
            shape,
            centre,
            look,
            canvas.tumor_id,
            canvas.spec,
            canvas.organ,
            requested_mm,
            canvas.organs.names,
        )


def _box(shape: TumorShape, centre: np.ndarray) -> tuple[np.ndarray, tuple[slice, ...]]:
    start = centre - shape.centre_index
    return start, tuple(slice(a, a + n) for a, n in zip(start, shape.box_shape, strict=True))


def _ring(shape: TumorShape, organ: np.ndarray) -> np.ndarray:
    """Organ voxels in a shell just outside the soft edge: "the surrounding organ"."""
    return organ & shape.shell(edge_width_mm(shape.radius_mm) / 2.0, RING_MM)


def _paint(
    ct_out: np.ndarray,
    labels_out: np.ndarray,
    table: np.ndarray,
    shape: TumorShape,
    centre: np.ndarray,
    look: Look,
    tumor_id: int,
    spec: TumorSpec,
    rng: np.random.Generator,
) -> None:
    """Paint one placed tumor into ``ct_out`` and ``labels_out`` (in place)."""
    _, box = _box(shape, centre)
    if spec.mass_effect:
        _displace(ct_out, labels_out, centre, shape.radius_mm, shape.spacing_zyx_mm, tumor_id, rng)
    values = ct_out[box].astype(np.float32)
    classes = np.take(table, labels_out[box])  # take: faster than indexing
    organ = classes == ORGAN
    # Small vessel branches inside the tumor are encased: they keep their label and HU.
    vessel = classes == VESSEL
    tissue = shape.mask & ~vessel
    ring = _ring(shape, organ)
    host_tumor = mean_in(values, tissue)
    host_ring = mean_in(values, ring) if ring.any() else host_tumor
    look.resolve(host_ring)  # HU relative to this host
    # The difference map is zero beyond the soft edge's reach: all that follows works there.
    inner, difference = reached_difference(shape, look, rng)
    values, organ, tissue = values[inner], organ[inner], tissue[inner]
    difference *= organ | tissue

    # Calibrate so the measured contrast (tumor mean minus ring mean) equals the drawn contrast.
    added_tumor = mean_in(difference, tissue)
    gain = 1.0
    if abs(added_tumor) > 1e-3:
        gain = float(
            np.clip((look.contrast_hu - (host_tumor - host_ring)) / added_tumor, *CALIBRATION_LIMITS)
        )
    values += np.float32(gain) * difference
    if ct_out.dtype.kind in "iu":
        limits = np.iinfo(ct_out.dtype)
        values = np.clip(np.rint(values), limits.min, limits.max)
    painted = tuple(slice(b.start + i.start, b.start + i.stop) for b, i in zip(box, inner, strict=True))
    ct_out[painted] = values.astype(ct_out.dtype)
    np.copyto(labels_out[painted], tumor_id, where=tissue, casting="unsafe")


def _record(
    ct: Volume,
    ct_out: np.ndarray,
    labels_out: np.ndarray,
    table: np.ndarray,
    shape: TumorShape,
    centre: np.ndarray,
    look: Look,
    tumor_id: int,
    spec: TumorSpec,
    organ_name: str,
    requested_mm: float,
    names: dict[int, str] | None = None,
) -> TumorRecord:
    """The record of one painted tumor, measured on the final CT and labels."""
    start, box = _box(shape, centre)
    final = ct_out[box].astype(np.float32)
    labels = labels_out[box]
    classes = np.take(table, labels)
    mask = shape.mask & (labels == tumor_id)  # the painted tumor, without encased vessels
    ring = _ring(shape, classes == ORGAN)
    volume_ml = int(np.count_nonzero(mask)) * ct.voxel_volume_ml
    plane = mask.sum(axis=0, dtype=np.int64)
    counts = (mask.sum(axis=(1, 2), dtype=np.int64), plane.sum(axis=1), plane.sum(axis=0))
    centre_index = np.array([np.arange(len(c)) @ c / c.sum() for c in counts]) + start
    mean_hu = mean_in(final, mask)
    ring_hu = mean_in(final, ring) if ring.any() else float("nan")
    diameter_mm = float(np.cbrt(6.0 * volume_ml * 1000.0 / math.pi))
    return TumorRecord(
        organ=organ_name,
        centre_ras_mm=tuple(float(c) for c in ct.index_to_ras(centre_index)),
        diameter_mm=diameter_mm,
        volume_ml=float(volume_ml),
        mean_hu=mean_hu,
        contrast_hu=mean_hu - ring_hu,
        engine=ENGINE,
        label_id=int(tumor_id),
        extra={
            "requested_diameter_mm": round(requested_mm, 3),
            "shrunk": bool(2.0 * shape.radius_mm < requested_mm - 1e-9),
            "target_contrast_hu": round(look.contrast_hu, 3),
            "texture_sd_hu": round(look.texture_sd_hu, 3),
            "necrosis": look.necrosis_hu is not None,
            "rim": look.rim_hu is not None,
            "well_defined": bool(spec.well_defined),
            "mass_effect": bool(spec.mass_effect),
            "vessels_touched": _encased_vessels(
                shape, labels, classes == VESSEL, names or {}, ct.voxel_volume_ml
            ),
        },
    )


def _encased_vessels(
    shape: TumorShape, labels: np.ndarray, vessel: np.ndarray, names: dict[int, str], voxel_ml: float
) -> dict[str, dict[str, float]]:
    """Per vessel label inside the tumor's shape: encased voxels, their volume and the largest
    calibre among them (twice the distance from an encased voxel's centre to the nearest voxel
    centre outside the vessel, the measure placement uses against ``SMALL_VESSEL_MM``)."""
    encased = shape.mask & vessel
    if not encased.any():
        return {}
    wall_mm = _outside_distance_mm(~vessel, shape.spacing_zyx_mm, SMALL_VESSEL_MM)
    touched = {}
    for label in np.unique(labels[encased]):
        voxels = encased & (labels == label)
        touched[names.get(int(label), str(int(label)))] = {
            "voxels": int(np.count_nonzero(voxels)),
            "volume_ml": round(float(np.count_nonzero(voxels) * voxel_ml), 4),
            "max_calibre_mm": round(2.0 * float(wall_mm[voxels].max()), 2),
        }
    return touched


def _displace(
    ct_out: np.ndarray,
    labels_out: np.ndarray,
    centre: np.ndarray,
    radius_mm: float,
    spacing: np.ndarray,
    tumor_id: int,
    rng: np.random.Generator,
) -> None:
    """Mass effect on a box reaching two radii beyond the tumor centre (in place)."""
    reach = np.ceil(3.0 * radius_mm / spacing).astype(int)
    low = np.maximum(centre - reach, 0)
    high = np.minimum(centre + reach + 1, ct_out.shape)
    box = tuple(slice(a, b) for a, b in zip(low, high, strict=True))
    values = ct_out[box].astype(np.float32)
    labels = labels_out[box]
    moved_values, moved_labels = mass_effect(
        values, labels, labels == tumor_id, centre - low, radius_mm, spacing, MASS_EFFECT_STRENGTH, rng
    )
    if ct_out.dtype.kind in "iu":
        limits = np.iinfo(ct_out.dtype)
        moved_values = np.clip(np.rint(moved_values), limits.min, limits.max)
    ct_out[box] = moved_values.astype(ct_out.dtype)
    labels_out[box] = moved_labels
