"""Offscreen VTK snapshots for QA and docs: axial slices with label overlays, and 3D label surfaces.

Slices are shown the radiological way, as 3D Slicer's red view does: patient right on the image
left, anterior up. The picture is composed in numpy (grey window, semi-transparent organ colours,
tumor fill and outline) and drawn by VTK as a textured image with its physical pixel spacing, so
anisotropic voxels keep their true aspect. Text comes from ``vtkTextActor``; the window is read
back with ``vtkWindowToImageFilter`` and written by ``vtkPNGWriter``. Files are written atomically.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from .files import atomic_output
from .labels import LabelMap, align_to
from .lesions import is_lesion_label
from .records import TumorRecord
from .volume import LPS_TO_RAS, Volume, ras_view

TUMOR_RGB = (255, 235, 0)  # strong yellow: no organ colour comes near it
PANEL_PX = 384
MAX_PANELS = 6
ORGAN_ALPHA = 0.30
TUMOR_FILL_ALPHA = 0.45
# Muted organ colours (no yellow, so tumors stand out); picked by label id.
ORGAN_PALETTE = (
    (200, 90, 80),
    (80, 150, 220),
    (120, 200, 120),
    (190, 110, 200),
    (240, 150, 70),
    (90, 200, 200),
    (230, 120, 160),
    (150, 120, 90),
    (110, 110, 230),
    (170, 60, 60),
    (60, 130, 110),
    (200, 160, 220),
)


def vtk_available() -> bool:
    """Whether VTK can be imported (the optional ``render`` extra; inside 3D Slicer, Slicer's own)."""
    try:
        import vtkmodules  # noqa: F401
    except ImportError:
        return False
    return True


VTK_MISSING = "VTK is not installed (pip install 'freetumor-core[render]')"


def _vtk():
    """Import VTK lazily: it is an optional extra (``freetumor-core[render]``)."""
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        # No X server: go straight to EGL rather than try X first and print a warning.
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    # ``all`` also loads the OpenGL backend (EGL/OSMesa/X offscreen) and FreeType text rendering.
    from vtkmodules import all as vtk

    return vtk


def _organ_colour(label_id: int) -> tuple[int, int, int]:
    return ORGAN_PALETTE[label_id % len(ORGAN_PALETTE)]


def _write_png_atomically(vtk, image_producer, path: Path) -> Path:
    with atomic_output(path) as temporary:
        writer = vtk.vtkPNGWriter()
        writer.SetFileName(str(temporary))
        writer.SetInputConnection(image_producer.GetOutputPort())
        writer.Write()
        if writer.GetErrorCode() != 0 or temporary.stat().st_size == 0:
            raise OSError(f"could not write PNG {temporary} (VTK error code {writer.GetErrorCode()})")
    return path


def _offscreen_window(vtk, width_px: int, height_px: int):
    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetMultiSamples(0)  # keep overlay colours exact at pixel level
    window.SetSize(width_px, height_px)
    return window


def _capture(vtk, window, path: Path, keep: list) -> Path:
    window.Render()
    grabber = vtk.vtkWindowToImageFilter()
    grabber.SetInput(window)
    grabber.SetInputBufferTypeToRGB()
    grabber.ReadFrontBufferOff()
    grabber.Update()
    keep.append(grabber)
    result = _write_png_atomically(vtk, grabber, path)
    window.Finalize()
    return result


# -- slice snapshots ----------------------------------------------------------------------------
def compose_axial_rgb(
    ct_slice_hu: np.ndarray,
    label_slice: np.ndarray,
    names: dict[int, str],
    window_hu: tuple[float, float],
) -> np.ndarray:
    """Colour one axial slice: grey CT in the window, organ tints, tumor fill and outline.

    Args:
        ct_slice_hu: ``(rows, columns)`` HU.
        label_slice: ``(rows, columns)`` integer labels on the same pixels.
        names: label id -> name; lesion labels (:func:`~freetumor_core.lesions.is_lesion_label`)
            get the tumor colour.
        window_hu: ``(low, high)`` HU mapped to black..white.

    Returns:
        ``(rows, columns, 3)`` uint8 RGB.
    """
    low, high = window_hu
    grey = np.clip((ct_slice_hu.astype(np.float32) - low) / max(high - low, 1e-6), 0.0, 1.0) * 255.0
    rgb = np.repeat(grey[..., None], 3, axis=2)
    tumor = np.zeros(label_slice.shape, dtype=bool)
    for label_id in np.unique(label_slice):
        if label_id == 0:
            continue
        inside = label_slice == label_id
        if is_lesion_label(names.get(int(label_id), "")):
            tumor |= inside
            continue
        colour = np.asarray(_organ_colour(int(label_id)), dtype=np.float32)
        rgb[inside] = (1.0 - ORGAN_ALPHA) * rgb[inside] + ORGAN_ALPHA * colour
    if tumor.any():
        colour = np.asarray(TUMOR_RGB, dtype=np.float32)
        rgb[tumor] = (1.0 - TUMOR_FILL_ALPHA) * rgb[tumor] + TUMOR_FILL_ALPHA * colour
        outline = tumor & ~ndimage.binary_erosion(tumor, iterations=1, border_value=0)
        rgb[outline] = colour
    return np.round(rgb).astype(np.uint8)


def _rgb_image_data(vtk, rgb: np.ndarray, spacing_xy_mm: tuple[float, float]):
    """``(rows, columns, 3)`` uint8 with row 0 at the bottom -> vtkImageData with mm spacing."""
    from vtkmodules.util.numpy_support import numpy_to_vtk

    rows, columns, _ = rgb.shape
    image = vtk.vtkImageData()
    image.SetDimensions(columns, rows, 1)
    image.SetSpacing(spacing_xy_mm[0], spacing_xy_mm[1], 1.0)
    image.SetOrigin(0.0, 0.0, 0.0)
    flat = np.ascontiguousarray(rgb.reshape(-1, 3))
    scalars = numpy_to_vtk(flat, deep=True, array_type=vtk.VTK_UNSIGNED_CHAR)
    scalars.SetName("rgb")
    image.GetPointData().SetScalars(scalars)
    return image


def _axial_indices(ras_ct: Volume, records: Sequence[TumorRecord]) -> list[int]:
    """RAS-view slice index (along S) through each record's centre, or the middle slice."""
    depth = ras_ct.shape[0]
    if not records:
        return [depth // 2]
    indices = []
    for record in records:
        centre_lps = np.asarray(record.centre_ras_mm, dtype=np.float64) @ LPS_TO_RAS
        z_index = ras_ct.lps_to_index(centre_lps)[0]
        indices.append(int(np.clip(round(float(z_index)), 0, depth - 1)))
    return indices


def _caption(record: TumorRecord | None, slice_index: int, ras_ct: Volume) -> str:
    s_mm = float(ras_ct.index_to_ras((slice_index, 0, 0))[2])
    if record is None:
        return f"axial S {s_mm:.1f} mm"
    return (
        f"{record.organ}: {record.diameter_mm:.1f} mm, {record.contrast_hu:+.0f} HU\n"
        f"{record.engine}, axial S {s_mm:.1f} mm"
    )


def snapshot(
    ct: Volume,
    labels: LabelMap,
    records: Sequence[TumorRecord],
    path: str | os.PathLike[str],
    window_hu: tuple[float, float] = (-175.0, 250.0),
    panel_px: int = PANEL_PX,
) -> Path:
    """Write a PNG with one axial panel per tumor (the first :data:`MAX_PANELS`), tiled 3 per row.

    Each panel is the axial slice through ``record.centre_ras_mm`` in radiological display (patient
    right on the image left, anterior up): grey CT in ``window_hu``, organ labels tinted, lesion labels
    (``*_tumor``, ``kidney_cyst``, ...) filled and outlined in :data:`TUMOR_RGB`, and a caption
    (organ, diameter, contrast).
    Without records the middle axial slice is shown.

    Args:
        ct: CT in HU.
        labels: label map; put on the CT grid (nearest neighbour) if it is not already.
        records: tumors to show.
        path: output ``.png``; written atomically.
        window_hu: display window ``(low, high)`` in HU.
        panel_px: side of each square panel in pixels.

    Returns:
        ``path``. The image is ``(min(n, 3) * panel_px) x (ceil(n / 3) * panel_px)`` pixels,
        ``n`` = number of panels.

    Raises:
        InputError: the label map does not overlap the CT.
    """
    vtk = _vtk()
    path = Path(path)
    labels = align_to(labels, ct)
    ras_ct, reorientation = ras_view(ct)
    ras_labels = reorientation.apply(labels.array)
    shown: list[TumorRecord | None] = list(records[:MAX_PANELS]) or [None]
    slice_indices = _axial_indices(ras_ct, [r for r in shown if r is not None])
    columns = min(len(shown), 3)
    rows = math.ceil(len(shown) / 3)
    window = _offscreen_window(vtk, columns * panel_px, rows * panel_px)
    keep: list = [window]  # every VTK object stays referenced until the PNG is written
    spacing_xy = (ras_ct.spacing[0], ras_ct.spacing[1])
    for panel, (record, z_index) in enumerate(zip(shown, slice_indices, strict=True)):
        # RAS view: array (y, x) runs posterior->anterior, left->right. VTK puts row 0 at the bottom,
        # so anterior is already up; reversing x puts patient right on the image left.
        rgb = compose_axial_rgb(
            ras_ct.array[z_index, :, ::-1], ras_labels[z_index, :, ::-1], labels.names, window_hu
        )
        image = _rgb_image_data(vtk, rgb, spacing_xy)
        actor = vtk.vtkImageActor()
        actor.GetMapper().SetInputData(image)
        actor.InterpolateOff()
        renderer = vtk.vtkRenderer()
        renderer.SetBackground(0.0, 0.0, 0.0)
        column, row = panel % 3, panel // 3
        renderer.SetViewport(
            column / columns, 1.0 - (row + 1) / rows, (column + 1) / columns, 1.0 - row / rows
        )
        renderer.AddActor(actor)
        width_mm = rgb.shape[1] * spacing_xy[0]
        height_mm = rgb.shape[0] * spacing_xy[1]
        camera = renderer.GetActiveCamera()
        camera.ParallelProjectionOn()
        centre = ((rgb.shape[1] - 1) * spacing_xy[0] / 2.0, (rgb.shape[0] - 1) * spacing_xy[1] / 2.0)
        camera.SetFocalPoint(centre[0], centre[1], 0.0)
        camera.SetPosition(centre[0], centre[1], 1000.0)
        camera.SetViewUp(0.0, 1.0, 0.0)
        # Fit the whole slice in a square panel, with room at the top for the caption.
        camera.SetParallelScale(0.5 * max(width_mm, height_mm) * 1.12)
        renderer.ResetCameraClippingRange()
        text = vtk.vtkTextActor()
        text.SetInput(_caption(record, z_index, ras_ct))
        prop = text.GetTextProperty()
        prop.SetFontSize(max(10, panel_px // 28))
        prop.SetColor(1.0, 1.0, 1.0)
        prop.SetVerticalJustificationToTop()
        text.GetPositionCoordinate().SetCoordinateSystemToNormalizedViewport()
        text.GetPositionCoordinate().SetValue(0.02, 0.985)
        renderer.AddViewProp(text)
        side = vtk.vtkTextActor()
        side.SetInput("R")
        side.GetTextProperty().SetFontSize(max(10, panel_px // 28))
        side.GetTextProperty().SetColor(1.0, 0.6, 0.6)
        side.GetPositionCoordinate().SetCoordinateSystemToNormalizedViewport()
        side.GetPositionCoordinate().SetValue(0.01, 0.5)
        renderer.AddViewProp(side)
        window.AddRenderer(renderer)
        keep.extend([image, actor, renderer, text, side])
    return _capture(vtk, window, path, keep)


# -- 3D surfaces --------------------------------------------------------------------------------
def _label_surface_actor(vtk, image, label_ids: Sequence[int], table, keep: list):
    """Smoothed surfaces of ``label_ids`` in ``image``, coloured by label through ``table``."""
    contour = vtk.vtkDiscreteFlyingEdges3D()
    contour.SetInputData(image)
    for index, label_id in enumerate(label_ids):
        contour.SetValue(index, label_id)
    contour.ComputeScalarsOn()
    smoother = vtk.vtkWindowedSincPolyDataFilter()
    smoother.SetInputConnection(contour.GetOutputPort())
    smoother.SetNumberOfIterations(25)
    smoother.SetPassBand(0.02)
    smoother.NonManifoldSmoothingOn()
    smoother.NormalizeCoordinatesOn()
    smoother.BoundarySmoothingOff()
    normals = vtk.vtkPolyDataNormals()
    normals.SetInputConnection(smoother.GetOutputPort())
    normals.SetFeatureAngle(120.0)
    mapper = vtk.vtkPolyDataMapper()
    mapper.SetInputConnection(normals.GetOutputPort())
    mapper.SetLookupTable(table)
    mapper.SetScalarRange(table.GetTableRange())
    mapper.SetScalarModeToUsePointData()
    mapper.ScalarVisibilityOn()
    actor = vtk.vtkActor()
    actor.SetMapper(mapper)
    keep.extend([contour, smoother, normals, mapper, actor])
    return actor


def surface_snapshot(
    labels: LabelMap,
    path: str | os.PathLike[str],
    names: Sequence[str] | None = None,
    size_px: tuple[int, int] = (640, 640),
) -> Path:
    """Write a PNG of smoothed 3D surfaces of labels, seen from the front (patient right on the left).

    Args:
        labels: label map.
        path: output ``.png``; written atomically.
        names: label names (or groups such as ``kidney``) to show; ``None`` shows every present label.
        size_px: ``(width, height)`` of the image.

    Returns:
        ``path``.

    Raises:
        InputError: a requested name is unknown or empty, or nothing is labelled.
    """
    from vtkmodules.util.numpy_support import numpy_to_vtk

    from .errors import InputError

    vtk = _vtk()
    path = Path(path)
    source = labels.volume.metadata.get("freetumor:source")
    present = labels.present()
    if names is None:
        ids = sorted(present)
    else:
        for name in names:
            labels.mask(name)  # raises a clear error for an unknown or empty name
        ids = sorted({i for name in names for i in labels.ids_for(name) if i in present})
    if not ids:
        raise InputError("no labelled voxels to draw", source)
    ras_volume, reorientation = ras_view(labels.volume)
    array = reorientation.apply(labels.array)
    selected = np.where(np.isin(array, ids), array, 0)
    # Crop to the labelled box (plus one voxel so surfaces close) to keep contouring fast.
    box = ndimage.find_objects((selected > 0).astype(np.uint8))[0]
    box = tuple(slice(max(b.start - 1, 0), min(b.stop + 1, n)) for b, n in zip(box, array.shape, strict=True))
    cropped = np.ascontiguousarray(selected[box]).astype(np.int32)
    origin_ras = ras_volume.index_to_ras([b.start for b in box])
    image = vtk.vtkImageData()
    image.SetDimensions(cropped.shape[2], cropped.shape[1], cropped.shape[0])
    image.SetSpacing(*ras_volume.spacing)
    image.SetOrigin(*origin_ras)
    image.GetPointData().SetScalars(numpy_to_vtk(cropped.ravel(), deep=True, array_type=vtk.VTK_INT))
    table = vtk.vtkLookupTable()
    top = max(ids) + 1
    table.SetNumberOfTableValues(top)
    table.SetTableRange(0, top - 1)
    for label_id in range(top):
        rgb = TUMOR_RGB if is_lesion_label(labels.names.get(label_id, "")) else _organ_colour(label_id)
        table.SetTableValue(label_id, rgb[0] / 255.0, rgb[1] / 255.0, rgb[2] / 255.0, 1.0)
    table.Build()
    tumor_ids = [i for i in ids if is_lesion_label(labels.names.get(i, ""))]
    organ_ids = [i for i in ids if i not in tumor_ids]
    keep: list = [image, table]
    actors = []
    for group in (organ_ids, tumor_ids):
        if not group:
            continue
        actor = _label_surface_actor(vtk, image, group, table, keep)
        # Organs turn translucent when tumors are drawn, so the tumors inside them stay visible.
        if tumor_ids and group is organ_ids:
            actor.GetProperty().SetOpacity(0.3)
        actors.append(actor)
    renderer = vtk.vtkRenderer()
    renderer.SetBackground(0.08, 0.08, 0.1)
    for actor in actors:
        renderer.AddActor(actor)
    window = _offscreen_window(vtk, *size_px)
    window.AddRenderer(renderer)
    renderer.ResetCamera()
    camera = renderer.GetActiveCamera()
    focal = np.asarray(camera.GetFocalPoint())
    distance = camera.GetDistance()
    # Seen from the front (anterior, +A in RAS), superior up: patient right appears on the left.
    camera.SetPosition(*(focal + np.array([0.0, distance, 0.0])))
    camera.SetViewUp(0.0, 0.0, 1.0)
    renderer.ResetCamera()
    renderer.ResetCameraClippingRange()
    keep.extend([renderer, window])
    return _capture(vtk, window, path, keep)
