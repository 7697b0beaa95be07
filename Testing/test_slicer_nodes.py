"""MRML <-> core conversion on real MRML (PyPI's ``slicer-core``): voxels, geometry, names, records."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import slicer  # real MRML from PyPI's slicer-core (the "slicer" extra)
import vtk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "FreeTumorSlicer"))
from FreeTumorLib import nodes

from freetumor_core.labels import LabelMap
from freetumor_core.records import TumorRecord
from freetumor_core.volume import read_volume

DEEPLESION_CT = "deeplesion_medsam2/000015_01_01_103-115_ct_hu.nii.gz"


@pytest.fixture
def scene():
    scene = slicer.vtkMRMLScene()
    yield scene
    scene.Clear(True)


def _ijk_to_ras(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def _assert_same_volume(actual, expected) -> None:
    assert actual.array.dtype == expected.array.dtype
    assert np.array_equal(actual.array, expected.array)
    assert actual.spacing == expected.spacing
    assert actual.origin == expected.origin
    assert np.array_equal(actual.direction, expected.direction)


def test_phantom_volume_round_trip_is_exact(scene, phantom):
    ct, _labels = phantom
    node = nodes.add_volume_node(scene, ct, "phantom")
    assert slicer.util.arrayFromVolume(node).shape == ct.shape
    # Slicer's RAS origin is the LPS origin with x and y negated.
    assert np.allclose(node.GetOrigin(), np.asarray(ct.origin) * [-1, -1, 1])
    _assert_same_volume(nodes.volume_from_node(node), ct)


def test_oblique_direction_round_trip_and_voxel_positions(scene, shared_data):
    """DeepLesion's subvolume has a transposed, flipped direction: x and y swapped, z pointing down."""
    ct = read_volume(shared_data / DEEPLESION_CT)
    assert not np.allclose(ct.direction, np.eye(3))
    node = nodes.add_volume_node(scene, ct, "deeplesion")
    back = nodes.volume_from_node(node)
    _assert_same_volume(back, ct)
    matrix = _ijk_to_ras(node)
    assert np.allclose(matrix, nodes.ijk_to_ras_matrix(ct), atol=1e-9)
    # Corners and an inner voxel: Slicer's IJK->RAS and the core's index_to_ras agree.
    shape = np.asarray(ct.shape)
    for index_zyx in ([0, 0, 0], shape - 1, [shape[0] - 1, 0, shape[2] - 1], [5, 123, 311]):
        ijk1 = np.r_[np.asarray(index_zyx, dtype=float)[::-1], 1.0]
        assert np.allclose((matrix @ ijk1)[:3], ct.index_to_ras(index_zyx), atol=1e-6)


def test_update_existing_node_replaces_voxels_and_geometry(scene, phantom, shared_data):
    ct, _labels = phantom
    node = nodes.add_volume_node(scene, ct, "reused")
    other = read_volume(shared_data / DEEPLESION_CT)
    nodes.update_node_from_volume(node, other)
    _assert_same_volume(nodes.volume_from_node(node), other)


def test_labels_to_segmentation_and_back_keep_names_and_voxels(scene, phantom):
    ct, labels = phantom
    reference = nodes.add_volume_node(scene, ct, "phantom")
    segmentation = nodes.add_segmentation_node(scene, labels, "organs", reference=reference)
    assert segmentation.GetSegmentation().GetNumberOfSegments() == len(labels.present())
    assert sorted(nodes.segment_names(segmentation)) == sorted(labels.present().values())
    back = nodes.labels_from_node(segmentation, reference=reference)
    assert back.names == labels.present()
    assert np.array_equal(back.array, labels.array)
    assert back.volume.same_grid(ct)
    # Without an explicit reference the segmentation's own reference geometry is used.
    assert np.array_equal(nodes.labels_from_node(segmentation).array, labels.array)


def test_tumor_segments_get_the_tumor_colour(scene, phantom):
    ct, labels = phantom
    array = labels.array.copy()
    liver = labels.mask("liver")
    centre = np.argwhere(liver).mean(axis=0).round().astype(int)
    array[tuple(slice(c - 3, c + 4) for c in centre)] = 200
    with_tumor = LabelMap(ct.like(array), {**labels.names, 200: "liver_tumor"})
    segmentation = nodes.add_segmentation_node(scene, with_tumor, "with tumor")
    colours = {}
    segments = segmentation.GetSegmentation()
    for index in range(segments.GetNumberOfSegments()):
        segment = segments.GetNthSegment(index)
        colours[segment.GetName()] = tuple(segment.GetColor())
    assert colours["liver_tumor"] == pytest.approx(nodes.TUMOR_COLOR)
    assert all(
        colour != pytest.approx(nodes.TUMOR_COLOR)
        for name, colour in colours.items()
        if name != "liver_tumor"
    )
    back = nodes.labels_from_node(segmentation)
    assert back.names[200] == "liver_tumor"
    assert np.count_nonzero(back.array == 200) == 7**3


def test_labelmap_node_names_from_its_colour_table(scene, phantom):
    ct, labels = phantom
    node = nodes.add_volume_node(scene, labels.volume, "organ labels", "vtkMRMLLabelMapVolumeNode")
    # No colour table of its own: TotalSegmentator names, as the core's reader does.
    assert nodes.labels_from_node(node).present() == labels.present()
    colours = scene.AddNewNodeByClass("vtkMRMLColorTableNode", "custom names")
    colours.SetTypeToUser()
    colours.SetNumberOfColors(6)
    colours.SetColor(5, "Liver Parenchyma", 0.8, 0.4, 0.3, 1.0)
    node.GetDisplayNode().SetAndObserveColorNodeID(colours.GetID())
    back = nodes.labels_from_node(node)
    assert back.names[5] == "liver_parenchyma"
    assert np.array_equal(back.array, labels.array)
    assert back.volume.same_grid(ct)


def test_tumor_table_and_centre_points(scene):
    records = [
        TumorRecord("liver", (-60.5, 20.25, 30.0), 14.2, 1.5, 70.0, -35.0, "handcrafted", label_id=101),
        TumorRecord("kidney", (80.0, -10.0, -5.5), 27.0, 10.3, 120.0, -45.5, "handcrafted", label_id=102),
    ]
    table = nodes.add_tumor_table(scene, records, "tumors")
    rows = nodes.table_rows(table)
    assert [row["organ"] for row in rows] == ["liver", "kidney"]
    assert [row["size_class"] for row in rows] == ["small", "medium"]
    assert rows[1]["volume_ml"] == pytest.approx(10.3)
    assert rows[0]["contrast_hu"] == pytest.approx(-35.0)
    assert (rows[0]["R_mm"], rows[0]["A_mm"], rows[0]["S_mm"]) == pytest.approx(records[0].centre_ras_mm)
    assert table.GetColumnUnitLabel("diameter_mm") == "mm"
    points = nodes.add_tumor_markups(scene, records, "centres")
    assert points.GetNumberOfControlPoints() == 2
    position = [0.0, 0.0, 0.0]
    points.GetNthControlPointPosition(1, position)
    assert position == pytest.approx(records[1].centre_ras_mm)
    assert points.GetNthControlPointLabel(0).startswith("T1 liver 14 mm")
