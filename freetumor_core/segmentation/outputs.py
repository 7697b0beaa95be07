"""Write a segmentation: ``labels.nii.gz`` (+ ``labels.json``), ``lesions.json``, ``snapshot.png``,
as one output set (:func:`freetumor_core.files.output_set`): all take their final names, or none."""

from __future__ import annotations

import warnings
from pathlib import Path

from ..files import output_set, write_json
from ..render import VTK_MISSING, vtk_available
from ..render import snapshot as render_snapshot
from ..volume import Volume
from .inference import SegmentationResult

__all__ = ["OUTPUT_NAMES", "write_segmentation"]

OUTPUT_NAMES = ("labels.nii.gz", "labels.json", "lesions.json", "snapshot.png")


def write_segmentation(
    result: SegmentationResult, ct: Volume, folder: str | Path, snapshot: bool = True
) -> dict[str, Path]:
    """Write the outputs of one segmentation of ``ct`` into ``folder``, as a whole.

    ``lesions.json`` is ``{"lesions": [record, ...], "settings": {...}}``, each record a
    :meth:`TumorRecord.to_dict` with ``score`` (the mean tumor probability over the lesion). Without
    VTK (the ``render`` extra) the snapshot is skipped with one warning.

    Returns:
        output name (``labels``, ``lesions``, ``snapshot``) -> path.

    Raises:
        InputError: ``folder`` is not a writable folder, or writing failed; then the folder holds
            what it held before.
    """
    with output_set(folder, replaces=OUTPUT_NAMES) as staged:
        written = {
            "labels": result.labels.save(staged.path("labels.nii.gz")),
            "lesions": write_json(
                staged.path("lesions.json"),
                {"lesions": [lesion.to_dict() for lesion in result.lesions], "settings": result.settings},
            ),
        }
        if snapshot and not vtk_available():
            warnings.warn(f"snapshot.png skipped: {VTK_MISSING}", stacklevel=2)
        elif snapshot:
            records = [lesion.record for lesion in result.lesions]
            written["snapshot"] = render_snapshot(ct, result.labels, records, staged.path("snapshot.png"))
    return {key: staged.final(path) for key, path in written.items()}
