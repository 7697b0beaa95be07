"""One tumor-segmentation job: input nodes -> files -> ``freetumor segment`` subprocess -> output nodes.

The CT (and, when given, its organ labels on the CT's grid) are written as NRRD to a temporary
folder; the core writes ``labels.nii.gz`` + ``labels.json`` and ``lesions.json`` there. The labels
are put back on the input node's exact grid (NIfTI would round the geometry to float32), so the
new segmentation overlays the CT exactly. Each found lesion becomes a row of a table node: organ,
diameter (mm), volume (mL), mean HU, score and centre (RAS mm).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import slicer

from freetumor_core.labels import LabelMap, align_to, read_labels
from freetumor_core.records import TumorRecord
from freetumor_core.volume import write_volume

from . import nodes
from .runner import NodeJob

# The core's ``--device`` choices the panel offers (``cuda:N`` works from the console).
DEVICES = ("auto", "cpu", "cuda")
# The model used when none is chosen: the demo segmenter that ships inside freetumor_core.
DEFAULT_MODEL = "segmenter_demo"
OVERLAP_RANGE = (0.0, 0.95)


@dataclass(frozen=True)
class SegmentationRequest:
    """How to segment: the model (a folder or a shipped model's name; empty: the shipped
    :data:`DEFAULT_MODEL`), the device, the sliding-window overlap and test-time augmentation (flips).

    Raises:
        ValueError: an unknown device or an overlap out of range.
    """

    model: str = DEFAULT_MODEL
    device: str = "auto"
    overlap: float = 0.25
    tta: bool = False

    def __post_init__(self) -> None:
        device = str(self.device).strip()
        if device not in DEVICES and not device.startswith("cuda:"):
            raise ValueError(f"device must be one of {', '.join(DEVICES)} or cuda:N, not '{device}'")
        low, high = OVERLAP_RANGE
        if not low <= float(self.overlap) <= high:
            raise ValueError(f"overlap must be from {low} to {high}, not {self.overlap}")
        object.__setattr__(self, "model", str(self.model or "").strip() or DEFAULT_MODEL)
        object.__setattr__(self, "device", device)
        object.__setattr__(self, "overlap", float(self.overlap))
        object.__setattr__(self, "tta", bool(self.tta))

    def arguments(self, ct_path: Path, labels_path: Path | None, output: Path) -> list[str]:
        """The ``freetumor`` command line (without the Python and ``--progress`` parts)."""
        arguments = ["segment", str(ct_path), "-o", str(output), "--model", self.model]
        if labels_path is not None:
            arguments += ["--organs", str(labels_path)]
        arguments += ["--device", self.device, "--overlap", repr(self.overlap)]
        if self.tta:
            arguments.append("--tta")
        # The panel shows the result in Slicer's own views; skip the offscreen snapshot.
        return [*arguments, "--no-snapshot"]


@dataclass(frozen=True)
class FoundLesion:
    """One lesion of ``lesions.json``: its record and its score (mean tumor probability)."""

    record: TumorRecord
    score: float | None


@dataclass
class SegmentationOutputs:
    """The nodes a finished job added to the scene, and the lesions it found."""

    segmentation: slicer.vtkMRMLSegmentationNode | None
    table: slicer.vtkMRMLTableNode
    lesions: list[FoundLesion] = field(default_factory=list)


def write_inputs(
    input_node: slicer.vtkMRMLScalarVolumeNode, organ_node: slicer.vtkMRMLNode | None, folder: Path
) -> tuple[Path, Path | None]:
    """Write the CT and, when given, the organ labels (on the CT's grid) to ``folder`` as NRRD.

    Returns:
        ``(ct_path, labels_path or None)``.
    """
    ct = nodes.volume_from_node(input_node)
    ct_path = write_volume(ct, folder / "input_ct.nrrd")
    if organ_node is None:
        return ct_path, None
    labels = nodes.labels_from_node(organ_node, reference=input_node)
    if not labels.volume.same_grid(ct):
        labels = align_to(labels, ct)
    return ct_path, labels.save(folder / "input_labels.nrrd")


def read_lesions(path: Path) -> list[FoundLesion]:
    """The lesions of ``lesions.json`` (``{"lesions": [TumorRecord dict with "score", ...]}``).

    Raises:
        ValueError: the file is missing or not in that shape.
    """
    try:
        payload = json.loads(path.read_text())
        found = []
        for item in payload["lesions"]:
            score = item.get("score")
            record = TumorRecord.from_dict({key: value for key, value in item.items() if key != "score"})
            found.append(FoundLesion(record, None if score is None else float(score)))
        return found
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{path}: cannot read the lesion list: {error}") from None


def load_outputs(
    scene: slicer.vtkMRMLScene, folder: Path, input_node: slicer.vtkMRMLScalarVolumeNode
) -> SegmentationOutputs:
    """Add the job's outputs to ``scene``: the ``<input> segmentation`` node (organ and tumor
    segments, tumors in the tumor colour, with a 3D surface) and the ``<input> lesions`` table.
    A segmentation that found nothing adds the (empty) table only.

    Raises:
        ValueError: an output is missing, unreadable, or not on the input's grid.
    """
    name = input_node.GetName()
    original = nodes.volume_from_node(input_node)
    lesions = read_lesions(folder / "lesions.json")
    labels = read_labels(folder / "labels.nii.gz")
    if not labels.volume.same_grid(original):
        raise ValueError(f"{folder / 'labels.nii.gz'}: the labels are not on the input's grid")
    labels = LabelMap(original.like(labels.array), labels.names)
    segmentation_node = None
    if labels.present():
        segmentation_node = nodes.add_segmentation_node(
            scene,
            labels,
            f"{name} segmentation",
            reference=input_node,
            tumor_ids=[lesion.record.label_id for lesion in lesions if lesion.record.label_id],
        )
        segmentation_node.CreateClosedSurfaceRepresentation()  # shown in 3D as well as in the slices
    table_node = nodes.add_lesion_table(
        scene, [(lesion.record, lesion.score) for lesion in lesions], f"{name} lesions"
    )
    return SegmentationOutputs(segmentation_node, table_node, lesions)


def centre_views_on(scene: slicer.vtkMRMLScene, ras_mm: Sequence[float]) -> None:
    """Centre every slice view of ``scene`` on a point (RAS mm), as a click in the lesion table does."""
    r, a, s = (float(value) for value in ras_mm)
    slicer.vtkMRMLSliceNode.JumpAllSlices(scene, r, a, s, slicer.vtkMRMLSliceNode.CenteredJumpSlice)


class SegmentationJob(NodeJob):
    """Segment tumors in the CT of ``input_node`` in a background process.

    Call :meth:`start`, then :meth:`poll` from a timer (or :meth:`wait` in a script). On success the
    output nodes are added to the input's scene and ``on_done(SegmentationOutputs)`` is called; on
    failure or cancellation ``on_error(exception)`` is called. The temporary folder is removed
    in both cases (unless ``keep_folder``). ``organ_node`` is optional: with it, tumors are kept
    inside its organs.
    """

    prefix = "freetumor-segment-"

    def __init__(
        self,
        input_node: slicer.vtkMRMLScalarVolumeNode,
        organ_node: slicer.vtkMRMLNode | None,
        request: SegmentationRequest,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        on_done: Callable[[SegmentationOutputs], None] | None = None,
        on_error: Callable[[Exception], None] | None = None,
        python: str | None = None,
        keep_folder: bool = False,
    ) -> None:
        if input_node is None:
            raise ValueError("choose an input CT volume")
        super().__init__(input_node, organ_node, request, on_progress, on_done, on_error, python, keep_folder)

    def _arguments(self, folder: Path) -> list[str]:
        ct_path, labels_path = write_inputs(self.input_node, self.organ_node, folder)
        return self.request.arguments(ct_path, labels_path, folder / "output")

    def _load(self, output: Path) -> SegmentationOutputs:
        return load_outputs(self.input_node.GetScene(), output, self.input_node)


__all__ = [
    "DEFAULT_MODEL",
    "DEVICES",
    "OVERLAP_RANGE",
    "FoundLesion",
    "SegmentationJob",
    "SegmentationOutputs",
    "SegmentationRequest",
    "centre_views_on",
    "load_outputs",
    "read_lesions",
    "write_inputs",
]
