"""Write a synthesis result: ``ct.nii.gz``, ``labels.nii.gz`` (+ ``labels.json``), ``tumors.json``,
``snapshot.png``. The files are one output set (:func:`freetumor_core.files.output_set`): they take
their final names together, or not at all."""

from __future__ import annotations

import warnings
from pathlib import Path

from ..files import output_set, write_json
from ..render import VTK_MISSING, vtk_available
from ..render import snapshot as render_snapshot
from ..volume import write_volume
from .spec import SynthesisResult

OUTPUT_NAMES = ("ct.nii.gz", "labels.nii.gz", "labels.json", "tumors.json", "snapshot.png")


def write_result(result: SynthesisResult, folder: str | Path, snapshot: bool = True) -> dict[str, Path]:
    """Write the outputs of one synthesis into ``folder``, as a whole.

    Files of an earlier result in ``folder`` that this one does not write (a snapshot) are removed.
    Without VTK (the ``render`` extra) the snapshot is skipped with one warning.

    Returns:
        output name (``ct``, ``labels``, ``tumors``, ``snapshot``) -> path.

    Raises:
        InputError: ``folder`` is not a writable folder, or writing failed (a full disk); then the
            folder holds what it held before.
    """
    with output_set(folder, replaces=OUTPUT_NAMES) as staged:
        written = {
            "ct": write_volume(result.ct, staged.path("ct.nii.gz")),
            "labels": result.labels.save(staged.path("labels.nii.gz")),
            "tumors": write_json(
                staged.path("tumors.json"), {"tumors": [r.to_dict() for r in result.tumors]}
            ),
        }
        if snapshot and not vtk_available():
            warnings.warn(f"snapshot.png skipped: {VTK_MISSING}", stacklevel=2)
        elif snapshot:
            written["snapshot"] = render_snapshot(
                result.ct, result.labels, result.tumors, staged.path("snapshot.png")
            )
    return {key: staged.final(path) for key, path in written.items()}
