"""Offscreen VTK snapshots: real rendering of the phantom with a tumor painted into its labels."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest

from freetumor_core.errors import InputError
from freetumor_core.labels import LabelMap
from freetumor_core.records import TumorRecord
from freetumor_core.render import PANEL_PX, TUMOR_RGB, snapshot, surface_snapshot
from freetumor_core.volume import Volume

TUMOR_ID = 200
RADIUS_MM = 12.0


def _paint_sphere(ct: Volume, labels: LabelMap, centre_zyx: np.ndarray, radius_mm: float, step_hu: float):
    """A real tumor label and a hypodense sphere in the CT, and the record describing them."""
    offsets_mm = [
        (np.arange(n) - c) * s for n, c, s in zip(ct.shape, centre_zyx, ct.spacing_zyx, strict=True)
    ]
    z, y, x = np.meshgrid(*offsets_mm, indexing="ij")
    sphere = z**2 + y**2 + x**2 <= radius_mm**2
    label_array = labels.array.copy()
    label_array[sphere] = TUMOR_ID
    names = {**labels.names, TUMOR_ID: "liver_tumor"}
    ct_array = np.where(sphere, ct.array + step_hu, ct.array).astype(ct.array.dtype)
    record = TumorRecord(
        organ="liver",
        centre_ras_mm=tuple(float(v) for v in ct.index_to_ras(centre_zyx)),
        diameter_mm=2 * radius_mm,
        volume_ml=float(sphere.sum() * ct.voxel_volume_ml),
        mean_hu=float(ct_array[sphere].mean()),
        contrast_hu=step_hu,
        engine="painted",
        label_id=TUMOR_ID,
    )
    return ct.like(ct_array), LabelMap(labels.volume.like(label_array), names), record


def _tumor_pixels(image: np.ndarray) -> np.ndarray:
    """(row, column) of pixels drawn in the exact tumor outline colour."""
    rgb = np.round(image[..., :3] * 255).astype(int)
    return np.argwhere(np.all(rgb == np.asarray(TUMOR_RGB), axis=-1))


@pytest.fixture(scope="module")
def painted(phantom):
    ct, labels = phantom
    liver = labels.mask("liver")
    centre = np.round(np.argwhere(liver).mean(axis=0))
    return _paint_sphere(ct, labels, centre, RADIUS_MM, step_hu=-40.0)


def test_snapshot_shows_tumor_on_patient_right(painted, tmp_path):
    ct, labels, record = painted
    path = snapshot(ct, labels, [record], tmp_path / "shot.png")
    assert path.is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["shot.png"]  # no temporary file left behind
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (PANEL_PX, PANEL_PX)
    tumor = _tumor_pixels(image)
    assert len(tumor) > 20
    # Where the sphere centre must land: the slice fills the panel's larger side / 1.12, centred,
    # viewed radiologically (RAS x flipped: patient right on the left, anterior up).
    centre_index = ct.lps_to_index(np.asarray(record.centre_ras_mm) * [-1, -1, 1])
    height_mm, width_mm = ct.shape[1] * ct.spacing[1], ct.shape[2] * ct.spacing[0]
    pixels_per_mm = PANEL_PX / (max(width_mm, height_mm) * 1.12)
    # The phantom's direction is the LPS identity: array x runs right->left and y anterior->posterior,
    # which is already the radiological image order (columns right->left, rows top=anterior).
    assert np.allclose(ct.direction, np.eye(3))
    column_mm = centre_index[2] * ct.spacing[0] - (ct.shape[2] - 1) * ct.spacing[0] / 2
    row_mm = centre_index[1] * ct.spacing[1] - (ct.shape[1] - 1) * ct.spacing[1] / 2
    expected = np.array([PANEL_PX / 2 + row_mm * pixels_per_mm, PANEL_PX / 2 + column_mm * pixels_per_mm])
    found = tumor.mean(axis=0)
    assert np.linalg.norm(found - expected) < 6, (found, expected)
    assert found[1] < PANEL_PX / 2  # the liver and its tumor are on the image left
    extent_px = tumor.max(axis=0) - tumor.min(axis=0)
    assert np.allclose(extent_px, 2 * RADIUS_MM * pixels_per_mm, atol=4)
    grey = image[..., 0][np.isclose(image[..., 0], image[..., 1]) & np.isclose(image[..., 1], image[..., 2])]
    assert grey.std() > 0.1  # a real CT picture, not a flat fill


def test_snapshot_keeps_pixel_aspect_of_anisotropic_voxels(tmp_path):
    # Rows 2 mm apart, columns 1 mm: a sphere must still look round, i.e. as wide as tall.
    array = np.full((9, 60, 120), 60.0, dtype=np.float32)
    ct = Volume(array, spacing=(1.0, 2.0, 3.0))
    labels = LabelMap(ct.like(np.ones(array.shape, dtype=np.uint8)), {1: "liver"})
    ct, labels, record = _paint_sphere(ct, labels, np.array([4.0, 30.0, 60.0]), 20.0, step_hu=-50.0)
    image = matplotlib.image.imread(snapshot(ct, labels, [record], tmp_path / "aniso.png"))
    tumor = _tumor_pixels(image)
    height, width = tumor.max(axis=0) - tumor.min(axis=0)
    assert abs(height - width) <= 3, (height, width)


def test_snapshot_tiles_panels_and_handles_no_records(painted, tmp_path):
    ct, labels, record = painted
    four = matplotlib.image.imread(snapshot(ct, labels, [record] * 4, tmp_path / "four.png", panel_px=200))
    assert four.shape[:2] == (400, 600)
    # Panels 1 and 4 (top-left and bottom-left) both show the tumor.
    tumor = _tumor_pixels(four)
    assert (tumor[:, 0] < 200).any() and (tumor[:, 0] >= 200).any()
    middle = matplotlib.image.imread(snapshot(ct, labels, [], tmp_path / "middle.png", panel_px=256))
    assert middle.shape[:2] == (256, 256)
    assert middle[..., :3].std() > 0.05


def test_surface_snapshot_draws_tumor_inside_translucent_liver(painted, tmp_path):
    _, labels, _ = painted
    path = surface_snapshot(
        labels, tmp_path / "surface.png", names=["liver", "liver_tumor"], size_px=(320, 300)
    )
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (300, 320)
    rgb = image[..., :3]
    yellow = (rgb[..., 0] > 0.5) & (rgb[..., 1] > 0.5) & (rgb[..., 2] < 0.25)
    assert yellow.sum() > 50
    assert np.argwhere(yellow)[:, 1].mean() < 160  # the liver (patient right) is on the image left
    with pytest.raises(InputError, match="no label named"):
        surface_snapshot(labels, tmp_path / "bad.png", names=["no_such_organ"])
    assert not (tmp_path / "bad.png").exists()
