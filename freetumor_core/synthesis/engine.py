"""``synthesize``: put tumors into an organ of a CT (the handcrafted engine)."""

from __future__ import annotations

import math
import warnings

import numpy as np

from ..errors import InputError
from ..labels import LabelMap, align_to
from ..records import TumorRecord
from ..volume import Volume
from .appearance import (
    RING_MM,
    Look,
    appearance_for,
    base_organ,
    difference_map,
    draw_look,
    edge_width_mm,
    mass_effect,
)
from .placement import ORGAN, SMALL_VESSEL_MM, VESSEL, Placer, class_table
from .shapes import TumorShape, _outside_distance_mm, make_shape, mean_in
from .spec import SynthesisResult, TumorSpec

ENGINE = "handcrafted"
SHRINK_FACTOR = 0.8
MASS_EFFECT_STRENGTH = 0.15  # tissue at the tumor's surface moves outwards by 15% of the radius
CALIBRATION_LIMITS = (0.25, 4.0)


def tumor_label(labels: LabelMap, organ: str) -> tuple[int, str]:
    """Id and name of the ``<organ>_tumor`` label: the existing one, else the next unused id."""
    name = f"{base_organ(organ)}_tumor"
    for label, existing in sorted(labels.names.items()):
        if existing.lower() == name:
            return label, name
    # Above every id in use and every named id, so no built-in name is reused.
    return max(int(labels.array.max()), max(labels.names, default=0)) + 1, name


def _output_labels(array: np.ndarray, tumor_id: int) -> np.ndarray:
    """A copy of the label array in a dtype that can hold ``tumor_id``."""
    if array.dtype.kind in "iu" and tumor_id <= np.iinfo(array.dtype).max:
        return array.copy()
    return array.astype(np.int32)


def _organ_name(labels: LabelMap, organ: str, organ_ids: list[int]) -> str:
    organ = organ.strip().lower().replace(" ", "_")
    return labels.names.get(organ_ids[0], organ) if organ.isdigit() else organ


def synthesize(
    ct: Volume, organs: LabelMap, spec: TumorSpec | None = None, seed: int | None = None
) -> SynthesisResult:
    """Synthesize ``spec.count`` tumors inside ``spec.organ``.

    Args:
        ct: CT in HU, any spacing (anisotropic is fine); not modified.
        organs: organ labels with names; put on the CT grid (with a warning) if not already there.
        spec: what to make (default: one small liver tumor).
        seed: random seed; the same inputs and seed give bit-identical outputs.

    Returns:
        The new CT (same grid and dtype), the label map with the original labels plus an
        ``<organ>_tumor`` label, and one :class:`TumorRecord` per tumor.

    Raises:
        InputError: bad spec, unknown or empty organ, or an organ that cannot hold the tumors
            (unless ``spec.allow_shrink``, which shrinks them with a warning).
    """
    spec = (spec or TumorSpec()).validated()
    organs = align_to(organs, ct)
    source = organs.volume.metadata.get("freetumor:source")
    organ_ids = organs.ids_for(spec.organ)
    if not organ_ids:
        known = ", ".join(sorted(set(organs.present().values()))) or "none"
        raise InputError(f"no label named '{spec.organ}' (labels present: {known})", source)
    organ = _organ_name(organs, spec.organ, organ_ids)
    rng = np.random.default_rng(seed)
    tumor_id, tumor_name = tumor_label(organs, organ)
    labels_out = _output_labels(organs.array, tumor_id)
    table_size = max(int(labels_out.max()), max(organs.names, default=0), tumor_id) + 1
    table = class_table(organs.names, organ_ids, [tumor_id], table_size)
    ct_out = ct.array.copy()
    spacing = ct.spacing_zyx
    placer = Placer(labels_out, table, spacing, rng)
    if len(placer.organ_voxels(1)) == 0:
        raise InputError(f"organ mask '{spec.organ}' is empty (labels {organ_ids} have no voxels)", source)
    appearance = appearance_for(organ)
    # The farthest any zone reaches from a tumor: the margins, and the surrounding-organ shell
    # outside the soft edge (at most 1.5 mm) that contrast is measured against.
    pad_mm = max(spec.margin_mm, spec.avoid_margin_mm, 1.5 + RING_MM)
    smallest_mm = max(3.0, 1.2 * float(spacing.max()))

    painted: list[tuple[TumorShape, np.ndarray, Look, float]] = []
    for number in range(1, spec.count + 1):
        requested = diameter = spec.draw_diameter_mm(rng)
        while True:
            shape = make_shape(diameter, spacing, rng, spec.irregularity, spec.lobulation, pad_mm)
            centre = placer.place(shape, spec.margin_mm, spec.avoid_margin_mm)
            if centre is not None:
                break
            problem = (
                f"organ '{organ}' cannot hold tumor {number} of {spec.count} ({diameter:.1f} mm, "
                f"{spec.margin_mm:g} mm from its surface and other tumors, {spec.avoid_margin_mm:g} mm "
                "from vessels and lesions)"
            )
            if not spec.allow_shrink or diameter * SHRINK_FACTOR < smallest_mm:
                hint = "" if spec.allow_shrink else "; allow shrinking, or "
                raise InputError(
                    f"{problem}{hint or '; '}ask for smaller or fewer tumors or smaller margins", source
                )
            warnings.warn(f"{problem}; trying {diameter * SHRINK_FACTOR:.1f} mm instead", stacklevel=2)
            diameter *= SHRINK_FACTOR
        look = draw_look(appearance, rng, spec.contrast_hu, spec.necrosis, spec.rim)
        _paint(ct_out, labels_out, table, shape, centre, look, tumor_id, spec, rng)
        painted.append((shape, centre, look, requested))

    # Records come from the final images, so they agree with what is written even where a later
    # tumor's soft edge reaches an earlier tumor's surroundings.
    records = [
        _record(
            ct, ct_out, labels_out, table, shape, centre, look, tumor_id, spec, organ, requested, organs.names
        )
        for shape, centre, look, requested in painted
    ]

    names = dict(organs.names)
    names[tumor_id] = tumor_name
    labels_volume = organs.volume.like(labels_out, organs.volume.metadata)
    return SynthesisResult(ct.like(ct_out, ct.metadata), LabelMap(labels_volume, names), records)


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
    classes = table[labels_out[box]]
    organ = classes == ORGAN
    # Small vessel branches inside the tumor are encased: they keep their label and HU.
    vessel = classes == VESSEL
    tissue = shape.mask & ~vessel
    ring = _ring(shape, organ)
    look.resolve(mean_in(values, ring if ring.any() else tissue))  # HU relative to this host
    difference = difference_map(shape, look, rng)
    difference *= organ | tissue

    # Calibrate so the measured contrast (tumor mean minus ring mean) equals the drawn contrast.
    host_tumor = mean_in(values, tissue)
    host_ring = mean_in(values, ring) if ring.any() else host_tumor
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
    ct_out[box] = values.astype(ct_out.dtype)
    np.copyto(labels_out[box], tumor_id, where=tissue, casting="unsafe")


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
    classes = table[labels]
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
