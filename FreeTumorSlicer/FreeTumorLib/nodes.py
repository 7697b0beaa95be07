"""MRML nodes <-> core objects, using only MRML and ``slicer.util`` array helpers.

Slicer volume nodes hold an IJK->RAS geometry: ``origin`` and the direction columns are RAS, and
``arrayFromVolume`` gives the voxels as ``(k, j, i)`` = ``(z, y, x)``. The core's ``Volume`` keeps
the same ``(z, y, x)`` array with LPS origin and direction (as ITK and the files do), so the
conversion only negates the first two physical rows: ``LPS = diag(-1, -1, 1) @ RAS``. Spacing,
origin and direction are read from the node's own fields (not from the combined 4x4 matrix), so a
round trip keeps them bit for bit.

Geometry is the node's local frame; a parent transform is not applied. Output nodes are placed under
the same parent transform as the input, so they overlay it wherever the input is shown.

Every function takes the scene explicitly (or reads it from a node) so that it works both inside
Slicer and with PyPI's ``slicer-core``, which has MRML but no ``slicer.mrmlScene``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import slicer
import vtk

from freetumor_core.labels import LabelMap, totalsegmentator_names
from freetumor_core.lesions import is_lesion_label
from freetumor_core.records import TumorRecord
from freetumor_core.volume import LPS_TO_RAS, Volume

# Tumor segments get this colour (RGB 0..1) so they stand out from every organ colour below.
TUMOR_COLOR = (1.0, 0.9, 0.0)
# Organ segments cycle through muted colours (none of them yellow).
ORGAN_COLORS = (
    (0.85, 0.45, 0.35),
    (0.35, 0.55, 0.85),
    (0.45, 0.75, 0.45),
    (0.75, 0.45, 0.75),
    (0.40, 0.75, 0.80),
    (0.80, 0.60, 0.40),
    (0.55, 0.55, 0.85),
    (0.85, 0.55, 0.60),
)


# -- volumes ------------------------------------------------------------------------------------
def _direction_ras(node: slicer.vtkMRMLVolumeNode) -> np.ndarray:
    directions = [[0.0] * 3 for _ in range(3)]
    node.GetIJKToRASDirections(directions)
    return np.asarray(directions, dtype=np.float64)


def volume_from_node(node: slicer.vtkMRMLVolumeNode) -> Volume:
    """A core ``Volume`` (copy of the voxels, ``(z, y, x)``; LPS geometry) from a scalar volume node.

    Raises:
        ValueError: the node has no image data, or it is not a single-component 3D image.
    """
    if node is None or node.GetImageData() is None:
        raise ValueError(f"volume node '{node.GetName() if node else None}' has no image data")
    if node.GetImageData().GetNumberOfScalarComponents() != 1:
        raise ValueError(f"volume node '{node.GetName()}' is not a scalar volume")
    array = np.array(slicer.util.arrayFromVolume(node), copy=True)
    if array.ndim != 3:
        raise ValueError(f"volume node '{node.GetName()}' is not a 3D scalar volume (shape {array.shape})")
    origin_lps = LPS_TO_RAS @ np.asarray(node.GetOrigin(), dtype=np.float64)
    direction_lps = LPS_TO_RAS @ _direction_ras(node)
    metadata = {"freetumor:source": f"MRML node '{node.GetName()}'"}
    return Volume(array, node.GetSpacing(), tuple(origin_lps), direction_lps, metadata)


def ijk_to_ras_matrix(volume: Volume) -> np.ndarray:
    """The 4x4 IJK->RAS matrix of a core volume (what a Slicer volume node holds)."""
    matrix = np.eye(4)
    matrix[:3, :3] = LPS_TO_RAS @ volume.direction @ np.diag(volume.spacing)
    matrix[:3, 3] = LPS_TO_RAS @ np.asarray(volume.origin)
    return matrix


def update_node_from_volume(node: slicer.vtkMRMLVolumeNode, volume: Volume) -> slicer.vtkMRMLVolumeNode:
    """Set a volume node's voxels and geometry from a core ``Volume`` (voxels are copied)."""
    array = volume.array
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if array.dtype == np.int64:
        # VTK volumes of type long long are not displayed by Slicer.
        array = array.astype(np.int32)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array))
    direction_ras = LPS_TO_RAS @ volume.direction
    node.SetIJKToRASDirections(*direction_ras.flatten().tolist())
    node.SetSpacing(*volume.spacing)
    node.SetOrigin(*(LPS_TO_RAS @ np.asarray(volume.origin)).tolist())
    node.Modified()
    return node


def add_volume_node(
    scene: slicer.vtkMRMLScene,
    volume: Volume,
    name: str,
    node_class: str = "vtkMRMLScalarVolumeNode",
    like: slicer.vtkMRMLNode | None = None,
) -> slicer.vtkMRMLVolumeNode:
    """A new volume node in ``scene`` with the voxels and geometry of ``volume``.

    ``like``: a node whose parent transform the new node shares.
    """
    node = scene.AddNewNodeByClass(node_class, name)
    update_node_from_volume(node, volume)
    node.CreateDefaultDisplayNodes()
    _copy_parent_transform(like, node)
    return node


def _copy_parent_transform(source: slicer.vtkMRMLNode | None, target: slicer.vtkMRMLNode) -> None:
    if source is not None and source.GetTransformNodeID():
        target.SetAndObserveTransformNodeID(source.GetTransformNodeID())


# -- labels -------------------------------------------------------------------------------------
def _clean_name(name: str) -> str:
    return "_".join(name.strip().lower().split())


def _labelmap_node_names(node: slicer.vtkMRMLLabelMapVolumeNode, ids: Iterable[int]) -> dict[int, str]:
    """Names from a label map's own colour table; Slicer's generic tables name no organs, so their
    names are replaced by the TotalSegmentator names (the same fallback as the core's reader)."""
    display = node.GetDisplayNode()
    colors = display.GetColorNode() if display is not None else None
    user_table = isinstance(colors, slicer.vtkMRMLColorTableNode) and colors.GetType() in (
        slicer.vtkMRMLColorTableNode.User,
        slicer.vtkMRMLColorTableNode.File,
    )
    if not user_table:
        return dict(totalsegmentator_names())
    names = {}
    for label in ids:
        if 0 < label < colors.GetNumberOfColors() and colors.GetColorName(label):
            names[label] = _clean_name(colors.GetColorName(label))
    return names


def labels_from_node(
    node: slicer.vtkMRMLLabelMapVolumeNode | slicer.vtkMRMLSegmentationNode,
    reference: slicer.vtkMRMLVolumeNode | None = None,
) -> LabelMap:
    """A core ``LabelMap`` from a label map volume node or a segmentation node.

    A segmentation is exported onto ``reference``'s grid (default: the segmentation's own reference
    geometry); each segment keeps its label value when the values are distinct and positive
    (segments imported from a label map keep them), else segments are numbered 1..N in order.
    Names come from the segment names, lower case with ``_`` for spaces.

    Raises:
        ValueError: an unsupported node type, an empty segmentation, or a failed export.
    """
    # A label map loaded as a plain scalar volume is accepted too (its values are the labels).
    if isinstance(node, slicer.vtkMRMLScalarVolumeNode):
        volume = volume_from_node(node)
        if volume.array.dtype.kind == "f":
            volume.array = volume.array.astype(np.int32)
        ids = [int(i) for i in np.unique(volume.array) if i != 0]
        return LabelMap(volume, _labelmap_node_names(node, ids))
    if not isinstance(node, slicer.vtkMRMLSegmentationNode):
        raise ValueError(f"node '{node.GetName()}' is neither a label map volume nor a segmentation")
    return _labels_from_segmentation(node, reference)


def _labels_from_segmentation(
    node: slicer.vtkMRMLSegmentationNode, reference: slicer.vtkMRMLVolumeNode | None
) -> LabelMap:
    segmentation = node.GetSegmentation()
    segment_ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    if not segment_ids:
        raise ValueError(f"segmentation '{node.GetName()}' has no segments")
    label_values = [segmentation.GetSegment(sid).GetLabelValue() for sid in segment_ids]
    if min(label_values) <= 0 or len(set(label_values)) != len(label_values):
        label_values = list(range(1, len(segment_ids) + 1))
    scene = node.GetScene()
    before = _node_ids(scene)
    exported = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__freetumor_export__")
    try:
        id_array = vtk.vtkStringArray()
        for sid in segment_ids:
            id_array.InsertNextValue(sid)
        logic = slicer.vtkSlicerSegmentationsModuleLogic
        if reference is None:
            reference = node.GetNodeReference(node.GetReferenceImageGeometryReferenceRole())
        if reference is not None:
            ok = logic.ExportSegmentsToLabelmapNode(node, id_array, exported, reference)
        else:
            ok = logic.ExportSegmentsToLabelmapNode(node, id_array, exported)
        if not ok or exported.GetImageData() is None:
            raise ValueError(f"could not export segmentation '{node.GetName()}' to a label map")
        volume = volume_from_node(exported)
    finally:
        # The export adds the label map, its display node and a colour table: remove them all.
        _remove_nodes_added_since(scene, before)
    # The export numbers segments 1..N in the order given; map them to the label values.
    lookup = np.zeros(len(segment_ids) + 1, dtype=np.int32)
    lookup[1:] = label_values
    dtype = np.uint8 if max(label_values) < 256 else np.uint16 if max(label_values) < 65536 else np.int32
    volume.array = lookup[volume.array.astype(np.int64)].astype(dtype)
    volume.metadata["freetumor:source"] = f"MRML node '{node.GetName()}'"
    names = {
        value: _clean_name(segmentation.GetSegment(sid).GetName())
        for sid, value in zip(segment_ids, label_values, strict=True)
    }
    return LabelMap(volume, names)


def _node_ids(scene: slicer.vtkMRMLScene) -> set[str]:
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def _remove_nodes_added_since(scene: slicer.vtkMRMLScene, before: set[str]) -> None:
    for node_id in _node_ids(scene) - before:
        node = scene.GetNodeByID(node_id)
        # The subject hierarchy is the scene's own singleton, created on first use.
        if node is not None and not isinstance(node, slicer.vtkMRMLSubjectHierarchyNode):
            scene.RemoveNode(node)


def add_segmentation_node(
    scene: slicer.vtkMRMLScene,
    labels: LabelMap,
    name: str,
    reference: slicer.vtkMRMLVolumeNode | None = None,
    tumor_ids: Sequence[int] = (),
) -> slicer.vtkMRMLSegmentationNode:
    """A new segmentation node with one named segment per present label.

    Segments keep their label ids as label values, so ``labels_from_node`` gives the same ids back.
    Tumor segments (ids in ``tumor_ids`` or names such as ``liver_tumor``) get ``TUMOR_COLOR``.
    ``reference``: the volume whose grid becomes the segmentation's reference geometry and whose
    parent transform the segmentation shares (default: the label map's own grid).

    Raises:
        ValueError: the label map has no labelled voxel, or the import failed.
    """
    present = labels.present()
    if not present:
        raise ValueError("label map has no labelled voxel: nothing to show as segments")
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    before = _node_ids(scene)
    try:
        temporary = add_volume_node(scene, labels.volume, "__freetumor_import__", "vtkMRMLLabelMapVolumeNode")
        node.SetReferenceImageGeometryParameterFromVolumeNode(reference or temporary)
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(temporary, node):
            raise ValueError(f"could not import the label map into segmentation '{name}'")
    except BaseException:
        _remove_nodes_added_since(scene, before)
        scene.RemoveNode(node.GetDisplayNode())
        scene.RemoveNode(node)
        raise
    # The temporary label map, its display node and colour table.
    _remove_nodes_added_since(scene, before)
    segmentation = node.GetSegmentation()
    organ_index = 0
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        label = int(segment.GetLabelValue())
        segment_name = labels.names.get(label, present.get(label, f"label_{label}"))
        segment.SetName(segment_name)
        if label in tumor_ids or is_lesion_label(segment_name):
            segment.SetColor(*TUMOR_COLOR)
        else:
            segment.SetColor(*ORGAN_COLORS[organ_index % len(ORGAN_COLORS)])
            organ_index += 1
    _copy_parent_transform(reference, node)
    return node


def segment_names(node: slicer.vtkMRMLNode | None) -> list[str]:
    """Names of a segmentation's segments, or of the labels present in a label map node."""
    if node is None:
        return []
    if isinstance(node, slicer.vtkMRMLSegmentationNode):
        segmentation = node.GetSegmentation()
        return [
            _clean_name(segmentation.GetNthSegment(i).GetName())
            for i in range(segmentation.GetNumberOfSegments())
        ]
    if isinstance(node, slicer.vtkMRMLVolumeNode) and node.GetImageData() is not None:
        ids = [int(i) for i in np.unique(slicer.util.arrayFromVolume(node)) if i != 0]
        names = _labelmap_node_names(node, ids)
        return [names.get(i, f"label_{i}") for i in ids]
    return []


# -- tumor records ------------------------------------------------------------------------------
TABLE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    # (column name, unit, description)
    ("organ", "", "host organ"),
    ("size_class", "", "tiny 5-10, small 10-20, medium 20-40, large 40-80 mm"),
    ("diameter_mm", "mm", "equivalent-sphere diameter"),
    ("volume_ml", "mL", "tumor volume"),
    ("contrast_hu", "HU", "mean HU inside minus mean HU of the surrounding organ"),
    ("qc_score", "", "fraction of the tumor's voxels the QC segmenter found, 0..1 (nan: not checked)"),
    ("R_mm", "mm", "centre of mass, Right"),
    ("A_mm", "mm", "centre of mass, Anterior"),
    ("S_mm", "mm", "centre of mass, Superior"),
)


def add_tumor_table(
    scene: slicer.vtkMRMLScene, records: Sequence[TumorRecord], name: str
) -> slicer.vtkMRMLTableNode:
    """A table node with one row per tumor: organ, size class, diameter (mm), volume (mL),
    contrast (HU), QC score and centre (RAS mm)."""
    rows = [
        (
            record.organ,
            record.size_class,
            record.diameter_mm,
            record.volume_ml,
            record.contrast_hu,
            float("nan") if record.qc_score is None else record.qc_score,
            *record.centre_ras_mm,
        )
        for record in records
    ]
    return _add_table(scene, name, TABLE_COLUMNS, rows)


TEXT_COLUMNS = ("organ", "size_class")
LESION_TABLE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    # (column name, unit, description)
    ("organ", "", "host organ"),
    ("diameter_mm", "mm", "equivalent-sphere diameter"),
    ("volume_ml", "mL", "lesion volume"),
    ("mean_hu", "HU", "mean HU inside the lesion"),
    ("score", "", "mean tumor probability over the lesion, 0..1 (nan: none)"),
    ("R_mm", "mm", "centre of mass, Right"),
    ("A_mm", "mm", "centre of mass, Anterior"),
    ("S_mm", "mm", "centre of mass, Superior"),
)


def add_lesion_table(
    scene: slicer.vtkMRMLScene, lesions: Sequence[tuple[TumorRecord, float | None]], name: str
) -> slicer.vtkMRMLTableNode:
    """A table node with one row per found lesion ``(record, score)``: organ, diameter (mm),
    volume (mL), mean HU, score and centre (RAS mm)."""
    rows = [
        (
            record.organ,
            record.diameter_mm,
            record.volume_ml,
            record.mean_hu,
            float("nan") if score is None else score,
            *record.centre_ras_mm,
        )
        for record, score in lesions
    ]
    return _add_table(scene, name, LESION_TABLE_COLUMNS, rows)


def _add_table(
    scene: slicer.vtkMRMLScene,
    name: str,
    columns: Sequence[tuple[str, str, str]],
    rows: Sequence[Sequence[str | float]],
) -> slicer.vtkMRMLTableNode:
    """A table node of ``rows``: ``TEXT_COLUMNS`` hold strings, the others numbers."""
    node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table = node.GetTable()
    for column, _unit, _description in columns:
        array = vtk.vtkStringArray() if column in TEXT_COLUMNS else vtk.vtkDoubleArray()
        array.SetName(column)
        array.SetNumberOfValues(len(rows))
        table.AddColumn(array)
    for row, values in enumerate(rows):
        for column_index, value in enumerate(values):
            array = table.GetColumn(column_index)
            if isinstance(array, vtk.vtkStringArray):
                array.SetValue(row, str(value))
            else:
                array.SetValue(row, float(value))
    for column, unit, description in columns:
        if unit:
            node.SetColumnUnitLabel(column, unit)
        node.SetColumnDescription(column, description)
    table.Modified()
    node.Modified()
    return node


def table_rows(node: slicer.vtkMRMLTableNode) -> list[dict[str, str | float]]:
    """The rows of a tumor table as dicts (column name -> value)."""
    table = node.GetTable()
    rows = []
    for row in range(table.GetNumberOfRows()):
        values: dict[str, str | float] = {}
        for column in range(table.GetNumberOfColumns()):
            array = table.GetColumn(column)
            value = array.GetValue(row)
            values[array.GetName()] = value if isinstance(array, vtk.vtkStringArray) else float(value)
        rows.append(values)
    return rows


def add_tumor_markups(
    scene: slicer.vtkMRMLScene,
    records: Sequence[TumorRecord],
    name: str,
    like: slicer.vtkMRMLNode | None = None,
) -> slicer.vtkMRMLMarkupsFiducialNode:
    """A point list with one locked control point per tumor centre (RAS mm), labelled
    ``T1 liver 14 mm`` and so on."""
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
    node.CreateDefaultDisplayNodes()
    for index, record in enumerate(records, start=1):
        label = f"T{index} {record.organ} {record.diameter_mm:.0f} mm"
        node.AddControlPoint(vtk.vtkVector3d(*map(float, record.centre_ras_mm)), label)
    node.SetLocked(True)
    _copy_parent_transform(like, node)
    return node
