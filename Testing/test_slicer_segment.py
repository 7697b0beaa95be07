"""The panel's segmentation job on real MRML (``slicer-core``) and a real ``freetumor segment``
subprocess: nodes -> files -> subprocess -> segmentation and table nodes, and a lesion-table click
centring real slice nodes.

The model is a real model folder whose MONAI ``UNet`` (1x1x1 convolutions, no normalisation or
activation) is set by hand to a known voxel classifier: in the CT's [-175, 250] HU window, a voxel
goes to the class whose reference intensity is nearest (background 0, liver 0.65, liver tumor
0.98), so a bright ball painted in a liver slab is the one tumor to find.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import slicer
import torch
import vtk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "FreeTumorSlicer"))
from FreeTumorLib import nodes
from FreeTumorLib.runner import CoreProcessError
from FreeTumorLib.segmentation import (
    DEFAULT_MODEL,
    SegmentationJob,
    SegmentationRequest,
    centre_views_on,
    read_lesions,
)

from freetumor_core.labels import LabelMap
from freetumor_core.lesions import is_lesion_label
from freetumor_core.models import build_network, save_model
from freetumor_core.segmentation import preset_config
from freetumor_core.volume import Volume

TUMOR_HU = 240.0
TUMOR_RADIUS_MM = 9.0
# Reference intensities (windowed HU, 0..1) of the 7 classes; the unused ones are never nearest.
CLASS_INTENSITY = (0.0, 0.65, 0.98, 10.0, 10.0, 10.0, 10.0)
FLIPPED = np.diag([-1.0, 1.0, -1.0])


def intensity_model(folder: Path) -> Path:
    """A model folder classifying each voxel by nearest reference intensity. The logits
    ``-100 (x - c)^2`` differ between classes only by ``200 c x - 100 c^2``, a 1x1x1 convolution."""
    config = preset_config("default")
    config.architecture["args"].update(
        channels=[1, 1], strides=[1], num_res_units=0, kernel_size=1, up_kernel_size=1, norm=None, act=None
    )
    config.preprocessing.patch_size_voxels = [32, 32, 32]
    network = build_network(config.architecture)
    centres = torch.tensor(CLASS_INTENSITY)
    state = network.state_dict()
    state["model.0.conv.weight"].fill_(1.0)
    state["model.0.conv.bias"].zero_()
    state["model.1.submodule.conv.weight"].zero_()
    state["model.1.submodule.conv.bias"].zero_()
    state["model.2.conv.weight"].zero_()
    state["model.2.conv.weight"][0, :, 0, 0, 0] = 200.0 * centres
    state["model.2.conv.bias"].copy_(-100.0 * centres**2)
    network.load_state_dict(state)
    return save_model(folder, network, config)


@pytest.fixture(scope="module", autouse=True)
def surface_rules():
    """The conversion rules Slicer's Segmentations module registers when the application starts
    (``slicer-core`` has the rule classes but registers none): label map <-> closed surface."""
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    if not factory.GetConverterRules():
        factory.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
        factory.RegisterConverterRule(slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule())


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return intensity_model(tmp_path_factory.mktemp("models") / "intensity")


def painted_liver():
    """A small CT on a flipped, anisotropic grid: air, a liver slab at 100 HU and a bright ball (the
    tumor) inside it; returns the CT, the organ labels and the ball's centre (RAS mm)."""
    shape = (30, 60, 56)
    ct = Volume(np.full(shape, -1000, np.int16), (0.9, 0.8, 2.0), (-20.0, 35.0, 110.0), FLIPPED)
    liver = np.zeros(shape, bool)
    liver[2:-2, 4:-4, 4:-4] = True
    ct.array[liver] = 100
    centre_index = np.array(shape, float) / 2 + np.array([0.3, -0.4, 0.2])
    index = np.stack(np.indices(shape), axis=-1).astype(float)
    ball = np.linalg.norm(ct.index_to_lps(index) - ct.index_to_lps(centre_index), axis=-1) <= TUMOR_RADIUS_MM
    assert (ball <= liver).all(), "the ball lies inside the liver"
    ct.array[ball] = TUMOR_HU
    labels = LabelMap(ct.like(liver.astype(np.uint8)), {1: "liver"})
    return ct, labels, ct.index_to_ras(centre_index)


@pytest.fixture(scope="module")
def case():
    return painted_liver()


@pytest.fixture
def scene_with_case(case):
    ct, labels, _centre = case
    scene = slicer.vtkMRMLScene()
    ct_node = nodes.add_volume_node(scene, ct, "case")
    organs = nodes.add_segmentation_node(scene, labels, "case organs", reference=ct_node)
    yield scene, ct_node, organs
    scene.Clear(True)


def _data_nodes(scene) -> list[str]:
    found = (scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes()))
    return [node.GetID() for node in found if not isinstance(node, slicer.vtkMRMLSubjectHierarchyNode)]


def _run(job: SegmentationJob) -> SegmentationJob:
    job.start()
    assert job.folder is not None and job.folder.is_dir()
    assert job.wait(timeout_s=300)
    assert not job.folder.exists(), "the temporary folder is removed after the job"
    return job


def _ijk_to_ras(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


@pytest.mark.slow
@pytest.mark.parametrize("with_organs", [True, False], ids=["organs", "ct-only"])
def test_the_tumor_comes_back_as_a_segment_and_a_table_row(scene_with_case, case, model, with_organs):
    _scene, ct_node, organs = scene_with_case
    ct, _labels, centre_ras = case
    progress, done = [], []
    request = SegmentationRequest(model=str(model), device="cpu", overlap=0.25)
    job = SegmentationJob(
        ct_node, organs if with_organs else None, request, on_progress=progress.append, on_done=done.append
    )
    _run(job)
    assert job.error is None and done == [job.outputs]
    assert any(event["task"] == "segment CT" for event in progress)
    outputs = job.outputs

    # The segmentation: on the CT's exact grid, a liver segment and a tumor segment in the tumor colour.
    segmentation = outputs.segmentation
    assert segmentation.GetName() == "case segmentation"
    result = nodes.labels_from_node(segmentation, reference=ct_node)
    assert result.volume.spacing == ct.spacing and result.volume.origin == ct.origin
    assert np.array_equal(result.volume.direction, ct.direction)
    names = nodes.segment_names(segmentation)
    assert "liver" in names and "liver_tumor" in names
    for index in range(segmentation.GetSegmentation().GetNumberOfSegments()):
        segment = segmentation.GetSegmentation().GetNthSegment(index)
        colour = tuple(segment.GetColor())
        assert (colour == pytest.approx(nodes.TUMOR_COLOR)) == is_lesion_label(segment.GetName())
    assert segmentation.GetSegmentation().ContainsRepresentation("Closed surface"), "shown in 3D"
    tumor = result.mask("liver_tumor")
    expected_ml = 4.0 / 3.0 * np.pi * TUMOR_RADIUS_MM**3 / 1000.0
    voxel_ml = float(np.prod(ct.spacing)) / 1000.0
    assert tumor.sum() * voxel_ml == pytest.approx(expected_ml, rel=0.25)

    # The table: one lesion, in the liver, at the ball's centre, with the ball's HU and a high score.
    [lesion] = outputs.lesions
    [row] = nodes.table_rows(outputs.table)
    assert outputs.table.GetName() == "case lesions"
    assert row["organ"] == lesion.record.organ == "liver"
    assert row["diameter_mm"] == pytest.approx(2 * TUMOR_RADIUS_MM, rel=0.1)
    assert row["volume_ml"] == pytest.approx(lesion.record.volume_ml)
    assert row["mean_hu"] == pytest.approx(TUMOR_HU, abs=10.0)  # edges resampled at 1.5 mm
    assert 0.5 < row["score"] <= 1.0 and row["score"] == pytest.approx(lesion.score)
    ras = np.array([row["R_mm"], row["A_mm"], row["S_mm"]])
    assert np.allclose(ras, centre_ras, atol=1.0)
    assert outputs.table.GetColumnUnitLabel("volume_ml") == "mL"
    # The centre (RAS mm) maps through the CT node's RAS->IJK onto a tumor voxel.
    ijk = np.rint(np.linalg.inv(_ijk_to_ras(ct_node)) @ np.r_[ras, 1.0])[:3].astype(int)
    assert tumor[ijk[2], ijk[1], ijk[0]]


def test_a_table_click_centres_the_slice_views_on_the_lesion(scene_with_case):
    scene, _ct_node, _organs = scene_with_case
    views = []
    for name in ("Red", "Yellow", "Green"):
        view = scene.AddNewNodeByClass("vtkMRMLSliceNode")
        view.SetLayoutName(name)
        views.append(view)
    centre = (12.5, -30.25, 101.0)
    centre_views_on(scene, centre)
    for view in views:
        slice_to_ras = view.GetSliceToRAS()
        assert [slice_to_ras.GetElement(i, 3) for i in range(3)] == pytest.approx(centre)


@pytest.mark.slow
def test_a_synthesis_model_fails_with_exit_code_2_and_adds_no_nodes(scene_with_case, tmp_path):
    scene, ct_node, organs = scene_with_case
    config = preset_config("default", task="synthesis")
    config.architecture["args"].update(channels=[4, 8], strides=[2])
    other = save_model(tmp_path / "synth", build_network(config.architecture), config)
    before = _data_nodes(scene)
    errors = []
    job = _run(SegmentationJob(ct_node, organs, SegmentationRequest(str(other)), on_error=errors.append))
    [error] = errors
    assert isinstance(error, CoreProcessError) and error.exit_code == 2
    assert "this is a 'synthesis' model" in error.message
    assert job.outputs is None and _data_nodes(scene) == before


def test_cancelled_job_adds_no_nodes(scene_with_case, model):
    scene, ct_node, organs = scene_with_case
    before = _data_nodes(scene)
    errors = []
    request = SegmentationRequest(str(model), device="cpu", tta=True)
    job = SegmentationJob(ct_node, organs, request, on_error=errors.append).start()
    job.cancel()
    assert job.wait(timeout_s=60)
    assert [error.message for error in errors] == ["cancelled"]
    assert not job.folder.exists() and _data_nodes(scene) == before


def test_request_arguments_and_refusals(tmp_path):
    request = SegmentationRequest(" models/liver ", device="cuda", overlap=0.5, tta=True)
    arguments = request.arguments(tmp_path / "ct.nrrd", tmp_path / "organs.nrrd", tmp_path / "out")
    assert arguments[:2] == ["segment", str(tmp_path / "ct.nrrd")]
    assert arguments[arguments.index("--model") + 1] == "models/liver"
    assert arguments[arguments.index("--organs") + 1] == str(tmp_path / "organs.nrrd")
    assert arguments[arguments.index("--device") + 1] == "cuda"
    assert float(arguments[arguments.index("--overlap") + 1]) == 0.5
    assert "--tta" in arguments and "--no-snapshot" in arguments
    plain = SegmentationRequest("m").arguments(tmp_path / "ct.nrrd", None, tmp_path / "out")
    assert "--organs" not in plain and "--tta" not in plain
    assert plain[plain.index("--device") + 1] == "auto"
    assert SegmentationRequest("m", device="cuda:1").device == "cuda:1"
    # No model chosen (the panel's empty field): the shipped demo segmenter.
    for default in (SegmentationRequest(), SegmentationRequest("  ")):
        assert default.model == DEFAULT_MODEL == "segmenter_demo"
        shipped = default.arguments(tmp_path / "ct.nrrd", None, tmp_path / "out")
        assert shipped[shipped.index("--model") + 1] == "segmenter_demo"
    with pytest.raises(ValueError, match="device must be one of auto, cpu, cuda"):
        SegmentationRequest("m", device="tpu")
    with pytest.raises(ValueError, match=r"overlap must be from 0\.0 to 0\.95"):
        SegmentationRequest("m", overlap=0.99)
    broken = tmp_path / "lesions.json"
    broken.write_text('{"tumors": []}')
    with pytest.raises(ValueError, match=r"lesions\.json: cannot read the lesion list"):
        read_lesions(broken)
