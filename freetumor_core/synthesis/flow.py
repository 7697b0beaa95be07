"""The steps every placing engine shares; an engine adds only how a tumor looks (``paint``) and
what is recorded about it (``record``).

:meth:`PlacingEngine.synthesize` checks the spec, puts the labels on the CT grid, finds the organ's
label ids and the ``<organ>_tumor`` label, and places each tumor: a shape of the drawn diameter
(:func:`~freetumor_core.synthesis.shapes.make_shape`) at a centre the
:class:`~freetumor_core.synthesis.placement.Placer` finds, shrunk by 20% steps when allowed and
needed. Then it hands the placed shape to the engine's ``paint`` and, once every tumor is painted,
asks the engine for one record per tumor.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ..labels import NAMES_ASSUMED, LabelMap, align_to
from ..progress import ProgressLike, make_progress
from ..records import TumorRecord
from ..volume import Volume
from .appearance import base_organ
from .placement import Placer, class_table
from .shapes import TumorShape, make_shape
from .spec import SynthesisResult, TumorSpec

SHRINK_FACTOR = 0.8


def tumor_label(labels: LabelMap, organ: str, highest: int | None = None) -> tuple[int, str]:
    """Id and name of the ``<organ>_tumor`` label: the existing one, else the next unused id.

    ``highest``: the largest id in the label array, when the caller already knows it.
    """
    name = f"{base_organ(organ)}_tumor"
    existing = [label for label, known in labels.names.items() if known.lower() == name]
    if existing:
        return min(existing), name
    if highest is None:
        highest = int(labels.array.max())
    # Above every id in use and every named id, so no built-in name is reused.
    return max(highest, max(labels.names, default=0)) + 1, name


def _output_labels(array: np.ndarray, tumor_id: int) -> np.ndarray:
    """A C-contiguous copy of the label array in a dtype that can hold ``tumor_id``."""
    if array.dtype.kind in "iu" and tumor_id <= np.iinfo(array.dtype).max:
        return array.copy(order="C")
    return array.astype(np.int32, order="C")


def _organ_name(labels: LabelMap, organ: str, organ_ids: list[int]) -> str:
    organ = organ.strip().lower().replace(" ", "_")
    return labels.names.get(organ_ids[0], organ) if organ.isdigit() else organ


@dataclass
class Canvas:
    """One call's state: the inputs, the arrays being painted and the call's random generator.

    Attributes:
        ct: the input CT (not modified, unless the call is in place: then ``ct_out`` is its array).
        organs: the input labels on the CT grid (likewise; ``labels_out`` is their array in place).
        spec: the validated request.
        organ: the host organ's name (``liver``; a label id is replaced by its name).
        organ_ids: label ids that make up the organ.
        tumor_id, tumor_name: the ``<organ>_tumor`` label.
        ct_out: the new CT's voxels, ``(z, y, x)``, the input's dtype; painted in place.
        labels_out: the new label voxels; painted in place.
        table: label id -> OTHER / ORGAN / AVOID (see :func:`~.placement.class_table`).
        rng: the call's random generator (seeded once; the order of draws makes the output).
        source: the label map's file, for messages.
    """

    ct: Volume
    organs: LabelMap
    spec: TumorSpec
    organ: str
    organ_ids: list[int]
    tumor_id: int
    tumor_name: str
    ct_out: np.ndarray
    labels_out: np.ndarray
    table: np.ndarray
    rng: np.random.Generator
    source: str | None


def _names_hint(organs: LabelMap) -> str:
    """How to name the labels, when a label map came without names and TotalSegmentator's were assumed."""
    if not organs.volume.metadata.get(NAMES_ASSUMED):
        return ""
    return (
        "; the label map came without names, so the TotalSegmentator names were assumed: pass "
        '--label-names with a JSON name map ({"1": "liver", ...}) or put a labels.json beside it'
    )


def _same_grid_exactly(volume: Volume, ct: Volume) -> bool:
    """The common case, in a few microseconds: labels read with their CT share its geometry bit
    for bit (:func:`~freetumor_core.labels.align_to` checks the general case within tolerances)."""
    return (
        volume.array.shape == ct.array.shape
        and volume.spacing == ct.spacing
        and volume.origin == ct.origin
        and (volume.direction is ct.direction or bool((volume.direction == ct.direction).all()))
    )


def prepare_canvas(
    ct: Volume, organs: LabelMap, spec: TumorSpec, seed: int | None, in_place: bool = False
) -> Canvas:
    """Align the labels, find the organ and the tumor label, and copy the arrays to paint (with
    ``in_place``, paint the input arrays themselves).

    Raises:
        InputError: no label of that organ name; with ``in_place``, labels off the CT's grid, of a
            type that cannot hold the tumor label, or arrays that cannot be written.
    """
    if not _same_grid_exactly(organs.volume, ct):
        if in_place:
            raise InputError(
                "in-place synthesis needs the labels on the CT's grid exactly",
                organs.volume.metadata.get("freetumor:source"),
            )
        organs = align_to(organs, ct)
    source = organs.volume.metadata.get("freetumor:source")
    organ_ids = organs.ids_for(spec.organ)
    if not organ_ids:
        known = ", ".join(sorted(set(organs.present().values()))) or "none"
        problem = f"no label named '{spec.organ}' (labels present: {known})"
        raise InputError(problem + _names_hint(organs), source)
    organ = _organ_name(organs, spec.organ, organ_ids)
    rng = np.random.default_rng(seed)
    highest = int(organs.array.max())  # one pass over the labels serves both uses
    tumor_id, tumor_name = tumor_label(organs, organ, highest)
    if in_place:
        ct_out, labels_out = ct.array, organs.array
        _check_paintable(ct_out, labels_out, tumor_id, source)
    else:
        ct_out, labels_out = ct.array.copy(), _output_labels(organs.array, tumor_id)
    table_size = max(highest, max(organs.names, default=0), tumor_id) + 1
    table = class_table(organs.names, organ_ids, [tumor_id], table_size)
    return Canvas(
        ct, organs, spec, organ, organ_ids, tumor_id, tumor_name, ct_out, labels_out, table, rng, source
    )


def _check_paintable(ct: np.ndarray, labels: np.ndarray, tumor_id: int, source: str | None) -> None:
    """In-place painting: both arrays writable, the labels C-contiguous and of an integer type
    that holds ``tumor_id``."""
    if not (ct.flags.writeable and labels.flags.writeable):
        raise InputError("in-place synthesis needs writable CT and label arrays", source)
    if not labels.flags.c_contiguous:
        raise InputError("in-place synthesis needs a C-contiguous label array", source)
    if labels.dtype.kind not in "iu" or tumor_id > np.iinfo(labels.dtype).max:
        problem = f"in-place synthesis: a {labels.dtype} label array cannot hold the tumor label {tumor_id}"
        raise InputError(problem, source)


class PlacingEngine:
    """Base of the engines that place tumors inside an organ; subclasses supply
    :meth:`paint` and :meth:`record` (and :meth:`reach_mm` when painting looks beyond the tumor)."""

    name = "placing"

    def reach_mm(self, spec: TumorSpec) -> float:
        """How far (mm) outside a tumor's surface painting reads or writes; shapes are padded so far."""
        return 0.0

    def paint(self, canvas: Canvas, shape: TumorShape, centre: np.ndarray, requested_mm: float) -> Any:
        """Paint one placed tumor into ``canvas.ct_out`` and ``canvas.labels_out`` (in place; the
        shape's ``mask`` voxels get ``canvas.tumor_id``), drawing randomness from ``canvas.rng``.
        Read voxels from those two arrays only, never from ``canvas.ct``: an in-place call paints
        the input arrays themselves, and must give the same voxels as a call on copies.

        Returns:
            whatever :meth:`record` needs to describe this tumor later.
        """
        raise NotImplementedError

    def record(self, canvas: Canvas, painted: Any) -> TumorRecord:
        """The record of one painted tumor, measured once every tumor of the call is painted."""
        raise NotImplementedError

    def synthesize(
        self,
        ct: Volume,
        organs: LabelMap,
        spec: TumorSpec,
        seed: int | None = None,
        progress: ProgressLike = None,
        in_place: bool = False,
    ) -> SynthesisResult:
        """See :func:`freetumor_core.synthesis.synthesize` (``spec`` is already validated)."""
        canvas = prepare_canvas(ct, organs, spec, seed, in_place)
        placer = Placer(canvas.labels_out, canvas.table, ct.spacing_zyx, canvas.rng)
        if len(placer.organ_voxels(1)) == 0:
            problem = f"organ mask '{spec.organ}' is empty (labels {canvas.organ_ids} have no voxels)"
            problem += _names_hint(organs)
            raise InputError(problem, canvas.source)
        # The farthest any zone reaches from a tumor: the margins, and what the painting looks at.
        pad_mm = max(spec.margin_mm, spec.avoid_margin_mm, self.reach_mm(spec))
        painted: list[tuple[TumorShape, np.ndarray, Any]] = []
        for number in make_progress(progress).track(range(1, spec.count + 1), "tumors"):
            shape, centre, requested_mm = place_tumor(canvas, placer, number, pad_mm)
            painted.append((shape, centre, self.paint(canvas, shape, centre, requested_mm)))
        # Records come from the final images, so they agree with what is written even where a later
        # tumor's soft edge reaches an earlier tumor's surroundings.
        records = [self.record(canvas, item) for _, _, item in painted]
        parts = []
        for shape, centre, _ in painted:
            start = centre - shape.centre_index
            box = tuple(slice(a, a + n) for a, n in zip(start, shape.box_shape, strict=True))
            # The tumor's own voxels: not the small vessel branches it encases (they keep their label).
            parts.append((box, shape.mask & (canvas.labels_out[box] == canvas.tumor_id)))
        names = dict(canvas.organs.names)
        names[canvas.tumor_id] = canvas.tumor_name
        labels_volume = canvas.organs.volume.like(canvas.labels_out, canvas.organs.volume.metadata)
        return SynthesisResult(
            ct.like(canvas.ct_out, ct.metadata), LabelMap(labels_volume, names), records, parts
        )


def place_tumor(
    canvas: Canvas, placer: Placer, number: int, pad_mm: float
) -> tuple[TumorShape, np.ndarray, float]:
    """Shape and centre of tumor ``number``, and the diameter asked for (mm).

    Raises:
        InputError: the organ cannot hold it (after shrinking to the smallest size, when allowed).
    """
    spec, rng, spacing = canvas.spec, canvas.rng, canvas.ct.spacing_zyx
    smallest_mm = max(3.0, 1.2 * float(spacing.max()))
    requested = diameter = spec.draw_diameter_mm(rng)
    while True:
        shape = make_shape(diameter, spacing, rng, spec.irregularity, spec.lobulation, pad_mm)
        centre = placer.place(shape, spec.margin_mm, spec.avoid_margin_mm)
        if centre is not None:
            return shape, centre, requested
        problem = (
            f"organ '{canvas.organ}' cannot hold tumor {number} of {spec.count} ({diameter:.1f} mm, "
            f"{spec.margin_mm:g} mm from its surface and other tumors, {spec.avoid_margin_mm:g} mm "
            "from vessels and lesions)"
        )
        if not spec.allow_shrink or diameter * SHRINK_FACTOR < smallest_mm:
            hint = "" if spec.allow_shrink else "; allow shrinking, or "
            raise InputError(
                f"{problem}{hint or '; '}ask for smaller or fewer tumors or smaller margins", canvas.source
            )
        warnings.warn(f"{problem}; trying {diameter * SHRINK_FACTOR:.1f} mm instead", stacklevel=4)
        diameter *= SHRINK_FACTOR
