"""The panel's synthesis job on real MRML (``slicer-core``) and a real ``freetumor synthesize``
subprocess: nodes -> files -> subprocess -> nodes, the same path as the module's self-test."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import slicer
import vtk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "FreeTumorSlicer"))
from FreeTumorLib import nodes
from FreeTumorLib.runner import CoreProcessError
from FreeTumorLib.synthesis import SynthesisJob, SynthesisRequest

from freetumor_core.lesions import is_lesion_label


@pytest.fixture
def scene_with_phantom(phantom):
    ct, labels = phantom
    scene = slicer.vtkMRMLScene()
    ct_node = nodes.add_volume_node(scene, ct, "phantom")
    organs = nodes.add_segmentation_node(scene, labels, "phantom organs", reference=ct_node)
    yield scene, ct_node, organs
    scene.Clear(True)


def _data_nodes(scene) -> list[str]:
    """IDs of the scene's nodes, without the subject hierarchy (a singleton MRML adds on first use)."""
    found = (scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes()))
    return [node.GetID() for node in found if not isinstance(node, slicer.vtkMRMLSubjectHierarchyNode)]


def _run(job: SynthesisJob) -> SynthesisJob:
    job.start()
    assert job.folder is not None and job.folder.is_dir()
    assert job.wait(timeout_s=300)
    assert not job.folder.exists(), "the temporary folder is removed after the job"
    return job


def test_two_small_liver_tumors_come_back_as_nodes(scene_with_phantom, phantom):
    _scene, ct_node, organs = scene_with_phantom
    ct, labels = phantom
    progress, done = [], []
    request = SynthesisRequest(organ="liver", size="small", count=2, seed=3, margin_mm=3.0)
    job = _run(SynthesisJob(ct_node, organs, request, on_progress=progress.append, on_done=done.append))
    assert job.error is None and done == [job.outputs]
    assert progress[-1]["done"] == progress[-1]["total"] > 0
    outputs = job.outputs
    assert outputs.volume.GetName() == "phantom synthetic"
    synthetic = nodes.volume_from_node(outputs.volume)
    # The exact input grid (not the float32-rounded NIfTI one).
    assert synthetic.spacing == ct.spacing and synthetic.origin == ct.origin
    changed = synthetic.array != ct.array
    assert changed.any()
    assert not (changed & ~labels.mask("liver")).any(), "tumors change the CT only inside the liver"

    assert len(outputs.records) == 2
    assert all(10.0 <= record.diameter_mm < 20.0 and record.contrast_hu < 0 for record in outputs.records)
    rows = nodes.table_rows(outputs.table)
    assert [row["diameter_mm"] for row in rows] == pytest.approx([r.diameter_mm for r in outputs.records])

    result = nodes.labels_from_node(outputs.segmentation, reference=outputs.volume)
    tumor_ids = {record.label_id for record in outputs.records}
    assert all(is_lesion_label(result.names[i]) for i in tumor_ids)
    tumor_voxels = np.isin(result.array, list(tumor_ids))
    assert tumor_voxels.any()
    # Most of the change lies under the tumor labels (a soft edge may reach a little beyond).
    assert changed[tumor_voxels].sum() > 0.5 * changed.sum()

    # Each centre (RAS mm) maps through the node's RAS->IJK onto a tumor voxel of the segmentation.
    ras_to_ijk = vtk.vtkMatrix4x4()
    outputs.volume.GetRASToIJKMatrix(ras_to_ijk)
    matrix = slicer.util.arrayFromVTKMatrix(ras_to_ijk)
    for index, record in enumerate(outputs.records):
        i, j, k = np.rint(matrix @ np.r_[record.centre_ras_mm, 1.0])[:3].astype(int)
        assert tumor_voxels[k, j, i], record
        position = [0.0, 0.0, 0.0]
        outputs.markups.GetNthControlPointPosition(index, position)
        assert position == pytest.approx(record.centre_ras_mm)


def test_unknown_organ_fails_with_exit_code_2_and_adds_no_nodes(scene_with_phantom):
    scene, ct_node, organs = scene_with_phantom
    before = _data_nodes(scene)
    errors = []
    job = _run(SynthesisJob(ct_node, organs, SynthesisRequest(organ="thyroid_gland"), on_error=errors.append))
    [error] = errors
    assert isinstance(error, CoreProcessError) and error.exit_code == 2
    assert "thyroid_gland" in error.message
    assert job.outputs is None
    assert _data_nodes(scene) == before


def test_cancelled_job_adds_no_nodes(scene_with_phantom):
    scene, ct_node, organs = scene_with_phantom
    before = _data_nodes(scene)
    errors = []
    job = SynthesisJob(ct_node, organs, SynthesisRequest(count=3), on_error=errors.append).start()
    job.cancel()
    assert job.wait(timeout_s=60)
    assert [error.message for error in errors] == ["cancelled"]
    assert not job.folder.exists()
    assert _data_nodes(scene) == before


def test_request_from_parameters_maps_spec_fields_by_name(tmp_path):
    from types import SimpleNamespace

    from freetumor_core import TumorSpec

    parameters = SimpleNamespace(inputVolume=None, organSegmentation=None, organ=" kidney ", size="medium",
                                 count=2, seed=9, marginMm=4.5, markCentres=False)  # fmt: skip
    request = SynthesisRequest.from_parameters(parameters)
    assert request.spec == TumorSpec(organ="kidney", size="medium", count=2, margin_mm=4.5)
    assert request.seed == 9
    spec_path = request.spec.to_json(tmp_path / "spec.json")
    arguments = request.arguments(tmp_path / "ct.nrrd", tmp_path / "labels.nrrd", spec_path, tmp_path / "out")
    assert arguments[arguments.index("--spec") + 1] == str(spec_path)
    assert arguments[arguments.index("--seed") + 1] == "9"
    assert "--organ" not in arguments and "--size" not in arguments, "options travel in the spec file only"
    assert TumorSpec.from_json(spec_path) == request.spec
    with pytest.raises(ValueError, match="count must be an integer from 1 to 50"):
        SynthesisRequest(count=0)
    with pytest.raises(ValueError, match="no tumor spec field named 'colour'"):
        SynthesisRequest(colour="red")
