"""Whole-CT inference: output geometry equals the CT's (anisotropic, flipped and permuted directions),
a tumor at a known physical point comes back at the same place, post-processing rules, and refusals."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from freetumor_core.errors import InputError
from freetumor_core.labels import LabelMap
from freetumor_core.models import LoadedModel, ModelConfig, build_network, save_model
from freetumor_core.progress import Progress
from freetumor_core.segmentation import FREETUMOR_LABELS, postprocess, preset_config, segment
from freetumor_core.segmentation.postprocess import find_lesions
from freetumor_core.volume import Volume

LIVER_HU, TUMOR_HU = 100.0, 240.0


class NearestIntensity(nn.Module):
    """A voxel-wise classifier with known behaviour: each voxel (HU windowed to [0, 1]) goes to the
    class whose reference intensity is nearest: background 0, liver 0.65, liver tumor 0.98 (or
    ``tumor``)."""

    def __init__(self, tumor: float = 0.98) -> None:
        super().__init__()
        self.tumor = tumor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centres = torch.full((7,), 10.0)
        centres[0], centres[1], centres[2] = 0.0, 0.65, self.tumor
        return -100.0 * (x[:, :1] - centres.view(1, 7, 1, 1, 1)) ** 2


def intensity_model(tmp_path: Path, spacing_mm=(1.5, 1.5, 1.5), tumor: float = 0.98) -> LoadedModel:
    config = preset_config("default")
    config.preprocessing.spacing_mm = list(spacing_mm) if spacing_mm else None
    config.preprocessing.patch_size_voxels = [32, 32, 32]
    return LoadedModel(NearestIntensity(tumor), config, tmp_path)


def phantom_ct(spacing, direction, origin=(-20.0, 35.0, 110.0), shape=(28, 60, 52)):
    """Liver (a slab) with a 7 mm-radius tumor ball at a known physical point; returns the CT, the
    organ labels and the tumor centre (LPS mm)."""
    ct = Volume(np.full(shape, -1000, np.int16), spacing, origin, np.asarray(direction, float))
    index = np.stack(np.indices(shape), axis=-1).astype(float)
    lps = ct.index_to_lps(index)
    centre_index = np.array(shape, float) / 2 + np.array([0.3, -0.4, 0.2])
    centre = ct.index_to_lps(centre_index)
    liver = np.zeros(shape, bool)
    liver[2:-2, 4:-4, 4:-4] = True
    ct.array[liver] = LIVER_HU
    tumor = np.linalg.norm(lps - centre, axis=-1) <= 7.0
    ct.array[tumor] = TUMOR_HU
    organs = LabelMap(ct.like(liver.astype(np.uint8)), {1: "liver"})
    return ct, organs, centre, tumor


FLIPPED = np.diag([-1.0, 1.0, -1.0])
PERMUTED = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]])


@pytest.mark.parametrize(
    ("spacing", "direction"),
    [((0.8, 0.7, 2.5), np.eye(3)), ((0.8, 0.7, 2.5), FLIPPED), ((2.5, 0.9, 0.8), PERMUTED)],
    ids=["anisotropic", "flipped", "permuted"],
)
def test_output_in_the_ct_geometry_and_tumor_at_its_place(tmp_path, spacing, direction):
    ct, organs, centre_lps, tumor = phantom_ct(spacing, direction)
    result = segment(ct, intensity_model(tmp_path), organs=organs, device="cpu")
    volume = result.labels.volume
    assert volume.shape == ct.shape and volume.spacing == ct.spacing and volume.origin == ct.origin
    assert np.array_equal(volume.direction, ct.direction)
    assert result.tumor_probability.shape == ct.shape
    found = result.labels.array == 2
    assert len(result.lesions) == 1
    record = result.lesions[0].record
    # Centre of mass at the same physical point: a half-voxel shift would be 0.35 to 1.25 mm.
    expected_ras = centre_lps * np.array([-1.0, -1.0, 1.0])
    assert np.allclose(record.centre_ras_mm, expected_ras, atol=0.25)
    truth_centre = ct.index_to_ras(np.argwhere(tumor).mean(0))
    assert np.allclose(record.centre_ras_mm, truth_centre, atol=0.25)
    overlap = 2 * np.logical_and(found, tumor).sum() / (found.sum() + tumor.sum())
    assert overlap > 0.9
    assert record.organ == "liver" and record.label_id == 2
    assert record.mean_hu > 200 and record.contrast_hu > 100
    assert 0.5 < result.lesions[0].score <= 1.0
    # The voxel at the tumor centre is tumor; the liver around it is liver.
    z, y, x = np.round(ct.lps_to_index(centre_lps)).astype(int)
    assert result.labels.array[z, y, x] == 2
    assert result.labels.array[3, 5, 5] == 1


def test_native_spacing_and_tta_give_the_same_voxel_classifier_result(tmp_path):
    ct, organs, _, tumor = phantom_ct((1.0, 1.0, 1.0), np.eye(3))
    plain = segment(ct, intensity_model(tmp_path, spacing_mm=None), organs=organs, device="cpu")
    assert np.array_equal(plain.labels.array == 2, tumor)  # no resampling: voxel-exact
    flipped = segment(ct, intensity_model(tmp_path, None), organs=organs, device="cpu", tta=True)
    assert np.array_equal(flipped.labels.array, plain.labels.array)
    assert flipped.settings["windows"] == 4 * plain.settings["windows"]


def test_saved_model_folder_runs_and_keeps_geometry(tmp_path):
    torch.manual_seed(0)
    config = preset_config("default")
    config.architecture["args"].update(channels=[4, 8], strides=[2])
    config.preprocessing.patch_size_voxels = [16, 16, 16]
    folder = save_model(tmp_path / "unet", build_network(config.architecture), config)
    ct, _, _, _ = phantom_ct((0.8, 0.7, 2.5), FLIPPED)
    events = []

    class Reporter(Progress):
        def update(self, task, done, total=None, **fields):
            events.append((task, done, total))

    result = segment(ct, folder, device="cpu", overlap=0.5, progress=Reporter())
    assert result.labels.volume.same_grid(ct)
    assert set(np.unique(result.labels.array)) <= set(FREETUMOR_LABELS)
    assert events[-1][1] == events[-1][2] > 0


def test_model_for_another_task_is_refused(tmp_path):
    config = ModelConfig(
        task="synthesis", architecture={"name": "UNet", "args": preset_config("default").architecture["args"]}
    )
    folder = save_model(tmp_path / "gen", build_network(config.architecture), config)
    ct, _, _, _ = phantom_ct((1.0, 1.0, 1.0), np.eye(3))
    with pytest.raises(InputError, match="'synthesis' model, not a 'segmentation' model") as error:
        segment(ct, folder, device="cpu")
    assert "config.json" in str(error.value)


def test_organ_labels_without_the_models_organs_are_refused(tmp_path):
    ct, organs, _, _ = phantom_ct((1.0, 1.0, 1.0), np.eye(3))
    spleen = LabelMap(organs.volume, {1: "spleen"})
    spleen.volume.metadata["freetumor:source"] = "organs.nii.gz"
    with pytest.raises(
        InputError, match=r"organs\.nii\.gz: the organ labels hold none of the model's organs"
    ):
        segment(ct, intensity_model(tmp_path), organs=spleen, device="cpu")


def test_organ_channel_model_needs_organs(tmp_path):
    model = intensity_model(tmp_path)
    model.config.architecture["args"]["in_channels"] = 2
    ct, organs, _, _ = phantom_ct((1.0, 1.0, 1.0), np.eye(3))
    with pytest.raises(InputError, match="second input channel"):
        segment(ct, model, device="cpu")
    assert segment(ct, model, organs=organs, device="cpu").lesions


def test_given_organs_decide_organ_or_tumor_inside_and_neither_outside(tmp_path):
    # A dark tumor (tumor class centre 0.3): its voxels (0.14 after windowing) are nearest to
    # background, next to the tumor, far from the liver (0.65).
    shape = (24, 40, 40)
    ct = Volume(np.full(shape, -1000, np.int16), (1.5, 1.5, 1.5))
    liver = np.zeros(shape, bool)
    liver[2:-2, 4:-4, 4:24] = True
    z, y, x = np.indices(shape)
    ball = (z - 12) ** 2 + (y - 20) ** 2 + (x - 14) ** 2 <= 5**2
    ct.array[liver] = 100
    ct.array[ball] = round(0.14 * 425 - 175)
    ct.array[4:20, 10:30, 28:36] = 100  # liver-like tissue outside the given liver
    model = intensity_model(tmp_path, spacing_mm=None, tumor=0.3)

    alone = segment(ct, model, device="cpu").labels.array
    assert not (alone[ball] == 2).any() and (alone[ball] == 0).all()  # the network calls it background
    assert (alone[4:20, 10:30, 28:36] == 1).all()

    organs = LabelMap(ct.like(liver.astype(np.uint8)), {1: "liver"})
    given = segment(ct, model, organs=organs, device="cpu")
    labels = given.labels.array
    assert (labels[ball] == 2).all()  # inside the liver: liver or tumor, and the tumor is likelier
    assert (labels[liver & ~ball] == 1).all()
    assert not labels[~liver].any()  # outside the given liver: neither liver nor its tumor
    assert len(given.lesions) == 1

    # Organ labels that already hold the organ's tumor: the tumor label is part of the organ.
    with_tumor = LabelMap(
        ct.like((liver.astype(np.uint8) + ball).astype(np.uint8)), {1: "liver", 2: "liver_tumor"}
    )
    assert np.array_equal(segment(ct, model, organs=with_tumor, device="cpu").labels.array, labels)


NAMES = {1: "liver", 2: "liver_tumor", 5: "kidney", 6: "kidney_tumor"}


def test_postprocess_keeps_tumors_inside_given_organs():
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[2:18, 2:18, 2:10] = 1
    labels[5:12, 5:12, 6:14] = 2  # half inside the given liver (x < 10), half outside
    organ = labels == 1
    organ |= (labels == 2) & (np.indices(labels.shape)[2] < 10)
    out = postprocess(labels, NAMES, (1.0, 1.0, 1.0), {"liver": organ})
    tumor = out == 2
    assert tumor.any() and not (tumor & ~organ).any()
    assert not out[5:12, 5:12, 10:14].any()  # outside the organ: background


def test_postprocess_without_organs_drops_tumors_away_from_their_organ():
    labels = np.zeros((20, 20, 30), np.uint8)
    labels[2:18, 2:18, 2:12] = 1
    labels[6:11, 6:11, 9:14] = 2  # touches the liver: kept
    labels[6:11, 6:11, 20:25] = 2  # floats in the air: removed
    labels[6:11, 6:11, 26:30] = 6  # a kidney tumor without a kidney: removed
    out = postprocess(labels, NAMES, (1.0, 1.0, 1.0))
    assert (out[6:11, 6:11, 9:14] == 2).all()
    assert not out[:, :, 20:].any()


def test_postprocess_turns_small_tumor_pieces_into_organ():
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[2:18, 2:18, 2:18] = 1
    labels[4:6, 4:6, 4:6] = 2  # 8 mm3: below a 5 mm ball
    labels[10:15, 10:15, 10:15] = 2  # 125 mm3: a lesion
    out = postprocess(labels, NAMES, (1.0, 1.0, 1.0))
    assert (out[4:6, 4:6, 4:6] == 1).all() and (out[10:15, 10:15, 10:15] == 2).all()
    kept = postprocess(labels, NAMES, (1.0, 1.0, 1.0), min_tumor_ml=0.0)
    assert (kept[4:6, 4:6, 4:6] == 2).all()
    removed = postprocess(labels, NAMES, (1.0, 1.0, 1.0), min_tumor_ml=0.2)
    assert not (removed == 2).any()


def test_lesion_records_hand_computed():
    ct = Volume(np.full((20, 20, 20), 60, np.int16), (2.0, 1.0, 1.0), (10.0, 20.0, 30.0))
    labels = np.ones((20, 20, 20), np.uint8)
    labels[4:9, 6:10, 2:6] = 2  # 5 x 4 x 4 voxels of 2 mm3: 0.16 mL
    ct.array[labels == 2] = 20
    probability = np.where(labels == 2, 0.75, 0.0).astype(np.float32)
    (lesion,) = find_lesions(ct, LabelMap(ct.like(labels), NAMES), probability)
    record = lesion.record
    assert record.volume_ml == pytest.approx(0.16)
    assert record.diameter_mm == pytest.approx((6 * 160 / np.pi) ** (1 / 3))
    centre_lps = np.array([10.0 + 2 * 3.5, 20.0 + 7.5, 30.0 + 6.0])  # index (6, 7.5, 3.5) x y z
    assert np.allclose(record.centre_ras_mm, centre_lps * [-1, -1, 1])
    assert record.mean_hu == pytest.approx(20) and record.contrast_hu == pytest.approx(-40)
    assert lesion.to_dict()["score"] == pytest.approx(0.75)
    assert lesion.to_dict()["size_class"] == "tiny"


def test_swinunetr_folder_runs_and_names_its_package_when_missing(tmp_path, monkeypatch):
    config = preset_config("swinunetr_v2_fs48")
    config.architecture["args"]["feature_size"] = 12
    # 64: the deepest Swin stage sees 2 voxels a side (instance norm needs more than one).
    config.preprocessing.patch_size_voxels = [64, 64, 64]
    folder = save_model(tmp_path / "swin", build_network(config.architecture), config)
    ct, _, _, _ = phantom_ct((1.5, 1.5, 1.5), np.eye(3), shape=(20, 30, 30))
    assert segment(ct, folder, device="cpu").labels.volume.same_grid(ct)
    monkeypatch.setitem(sys.modules, "einops", None)  # as where einops is not installed
    with pytest.raises(InputError, match="needs the einops package to run: pip install einops"):
        segment(ct, folder, device="cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_agrees_with_the_cpu(tmp_path):
    ct, organs, _, _ = phantom_ct((0.8, 0.7, 2.5), FLIPPED)
    on_cpu = segment(ct, intensity_model(tmp_path), organs=organs, device="cpu")
    on_gpu = segment(ct, intensity_model(tmp_path), organs=organs, device="cuda")
    assert on_gpu.labels.volume.same_grid(ct)
    assert np.mean(on_gpu.labels.array == on_cpu.labels.array) >= 0.999
