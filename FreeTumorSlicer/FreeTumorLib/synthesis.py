"""One tumor-synthesis job: input nodes -> files -> ``freetumor synthesize`` subprocess -> output nodes.

Inputs are written as NRRD (which keeps geometry in double precision) to a temporary folder, and
the tumor settings as a ``TumorSpec`` JSON file passed with ``--spec`` (the panel's parameters map
to spec fields by name: ``marginMm`` is ``margin_mm``). The core writes ``ct.nii.gz``,
``labels.nii.gz`` + ``labels.json`` and ``tumors.json`` there. The synthetic CT is put back on the
input node's exact grid (synthesis never changes the grid; NIfTI would round the geometry to
float32), so the new nodes overlay the input exactly.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import slicer

from freetumor_core.labels import LabelMap, align_to, read_labels
from freetumor_core.records import TumorRecord
from freetumor_core.synthesis import TumorSpec, spec_fields
from freetumor_core.synthesis.spec import DEFAULT_ENGINE, MODEL_ENGINES
from freetumor_core.volume import read_volume, write_volume

from . import nodes
from .runner import CoreProcessError, NodeJob


class SynthesisRequest:
    """What to synthesize: a ``TumorSpec`` (the panel's tumor settings) and the random seed.

    ``SynthesisRequest(organ="liver", size="small", count=2, seed=3)``: keyword arguments other
    than ``spec`` and ``seed`` are ``TumorSpec`` fields by name, applied over ``spec`` (default: one
    small liver tumor).

    Raises:
        ValueError: a field value is invalid (``InputError`` naming the field), or no such field.
    """

    def __init__(self, spec: TumorSpec | None = None, seed: int = 0, **fields: Any) -> None:
        known = {spec_field.name for spec_field in spec_fields()}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"no tumor spec field named '{unknown[0]}'; fields: {', '.join(sorted(known))}")
        self.spec = dataclasses.replace(spec or TumorSpec(size="small"), **fields).validated()
        self.seed = int(seed)

    @classmethod
    def from_parameters(cls, parameters: Any) -> SynthesisRequest:
        """The request of a parameter node (or any object) whose attributes are named like spec
        fields in camelCase (``marginMm`` -> ``margin_mm``), plus ``seed``."""
        fields = {}
        for spec_field in spec_fields():
            name = parameter_name(spec_field.name)
            if hasattr(parameters, name):
                value = getattr(parameters, name)
                if isinstance(value, PurePath):  # a folder setting; an empty one reads as "."
                    value = None if str(value) in ("", ".") else str(value)
                fields[spec_field.name] = value.strip() if isinstance(value, str) else value
        if fields.get("engine", DEFAULT_ENGINE) not in MODEL_ENGINES:
            fields["model"] = None  # a folder left in the model box belongs to the other engine
        return cls(seed=getattr(parameters, "seed", 0), **fields)

    def arguments(self, ct_path: Path, labels_path: Path, spec_path: Path, output: Path) -> list[str]:
        """The ``freetumor`` command line (without the Python and ``--progress`` parts)."""
        return [
            "synthesize",
            str(ct_path),
            "--organs",
            str(labels_path),
            "--spec",
            str(spec_path),
            "--seed",
            str(self.seed),
            # The panel shows the result in Slicer's own views; skip the offscreen snapshot.
            "--no-snapshot",
            "-o",
            str(output),
        ]

    def __repr__(self) -> str:
        return f"SynthesisRequest(spec={self.spec!r}, seed={self.seed})"


def parameter_name(field_name: str) -> str:
    """The panel's parameter name of a spec field: ``margin_mm`` -> ``marginMm``."""
    first, *rest = field_name.split("_")
    return first + "".join(word.capitalize() for word in rest)


@dataclass
class SynthesisOutputs:
    """The nodes a finished job added to the scene, and the tumors it made."""

    volume: slicer.vtkMRMLScalarVolumeNode
    segmentation: slicer.vtkMRMLSegmentationNode
    table: slicer.vtkMRMLTableNode
    markups: slicer.vtkMRMLMarkupsFiducialNode | None
    records: list[TumorRecord] = field(default_factory=list)


def write_inputs(
    input_node: slicer.vtkMRMLScalarVolumeNode, organ_node: slicer.vtkMRMLNode, folder: Path
) -> tuple[Path, Path]:
    """Write the CT and the organ labels (on the CT's grid) to ``folder`` as NRRD.

    Returns:
        ``(ct_path, labels_path)``; the labels come with their ``labels.json`` name sidecar.
    """
    ct = nodes.volume_from_node(input_node)
    labels = nodes.labels_from_node(organ_node, reference=input_node)
    if not labels.volume.same_grid(ct):
        labels = align_to(labels, ct)
    ct_path = write_volume(ct, folder / "input_ct.nrrd")
    labels_path = labels.save(folder / "input_labels.nrrd")
    return ct_path, labels_path


def read_records(path: Path) -> list[TumorRecord]:
    """The tumors of ``tumors.json`` (``{"tumors": [TumorRecord dict, ...]}``).

    Raises:
        ValueError: the file is missing or not in that shape.
    """
    try:
        payload = json.loads(path.read_text())
        return [TumorRecord.from_dict(item) for item in payload["tumors"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: cannot read the tumor list: {error}") from None


def load_outputs(
    scene: slicer.vtkMRMLScene,
    folder: Path,
    input_node: slicer.vtkMRMLScalarVolumeNode,
    add_markups: bool = True,
) -> SynthesisOutputs:
    """Add the job's outputs to ``scene``: ``<input> synthetic`` volume, ``<input> synthetic labels``
    segmentation (organ and tumor segments), ``<input> synthetic tumors`` table and, optionally,
    ``<input> tumor centres`` points.

    Raises:
        ValueError: an output is missing, unreadable, or not on the input's grid.
    """
    name = input_node.GetName()
    original = nodes.volume_from_node(input_node)
    synthetic = read_volume(folder / "ct.nii.gz")
    if not synthetic.same_grid(original):
        raise ValueError(f"{folder / 'ct.nii.gz'}: the synthetic CT is not on the input's grid")
    records = read_records(folder / "tumors.json")
    labels = read_labels(folder / "labels.nii.gz")
    if not labels.volume.same_grid(original):
        raise ValueError(f"{folder / 'labels.nii.gz'}: the synthetic labels are not on the input's grid")
    labels = LabelMap(original.like(labels.array), labels.names)
    volume_node = nodes.add_volume_node(
        scene, original.like(synthetic.array), f"{name} synthetic", like=input_node
    )
    _copy_window_level(input_node, volume_node)
    segmentation_node = nodes.add_segmentation_node(
        scene,
        labels,
        f"{name} synthetic labels",
        reference=volume_node,
        tumor_ids=[record.label_id for record in records if record.label_id],
    )
    table_node = nodes.add_tumor_table(scene, records, f"{name} synthetic tumors")
    markups_node = None
    if add_markups and records:
        markups_node = nodes.add_tumor_markups(scene, records, f"{name} tumor centres", like=input_node)
    return SynthesisOutputs(volume_node, segmentation_node, table_node, markups_node, records)


def _copy_window_level(source: slicer.vtkMRMLVolumeNode, target: slicer.vtkMRMLVolumeNode) -> None:
    # Same window/level as the input, so real and synthetic look alike when compared.
    source_display, target_display = source.GetDisplayNode(), target.GetDisplayNode()
    if source_display is None or target_display is None:
        return
    if hasattr(source_display, "GetWindow") and not source_display.GetAutoWindowLevel():
        target_display.SetAutoWindowLevel(False)
        target_display.SetWindowLevel(source_display.GetWindow(), source_display.GetLevel())


class SynthesisJob(NodeJob):
    """Synthesize tumors into the CT of ``input_node`` in a background process.

    Call :meth:`start`, then :meth:`poll` from a timer (or :meth:`wait` in a script). On success the
    output nodes are added to the input's scene and ``on_done(SynthesisOutputs)`` is called; on
    failure or cancellation ``on_error(exception)`` is called. The temporary folder is removed
    in both cases (unless ``keep_folder``). Starting takes about a second for a typical CT.
    """

    def __init__(
        self,
        input_node: slicer.vtkMRMLScalarVolumeNode,
        organ_node: slicer.vtkMRMLNode,
        request: SynthesisRequest,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        on_done: Callable[[SynthesisOutputs], None] | None = None,
        on_error: Callable[[Exception], None] | None = None,
        add_markups: bool = True,
        python: str | None = None,
        keep_folder: bool = False,
    ) -> None:
        if input_node is None or organ_node is None:
            raise ValueError("choose an input CT volume and its organ segmentation")
        super().__init__(input_node, organ_node, request, on_progress, on_done, on_error, python, keep_folder)
        self.add_markups = add_markups

    def _arguments(self, folder: Path) -> list[str]:
        ct_path, labels_path = write_inputs(self.input_node, self.organ_node, folder)
        spec_path = self.request.spec.to_json(folder / "spec.json")
        return self.request.arguments(ct_path, labels_path, spec_path, folder / "output")

    def _load(self, output: Path) -> SynthesisOutputs:
        return load_outputs(self.input_node.GetScene(), output, self.input_node, self.add_markups)


__all__ = [
    "CoreProcessError",
    "SynthesisJob",
    "SynthesisOutputs",
    "SynthesisRequest",
    "load_outputs",
    "parameter_name",
    "read_records",
    "write_inputs",
]
