"""Write a synthesis result: ``ct.nii.gz``, ``labels.nii.gz`` (+ ``labels.json``), ``tumors.json``,
``snapshot.png``. Every file is written atomically."""

from __future__ import annotations

from pathlib import Path

from ..files import write_json
from ..volume import write_volume
from .spec import SynthesisResult


def write_result(result: SynthesisResult, folder: str | Path, snapshot: bool = True) -> dict[str, Path]:
    """Write the outputs of one synthesis into ``folder``.

    Returns:
        output name (``ct``, ``labels``, ``tumors``, ``snapshot``) -> path.
    """
    folder = Path(folder)
    outputs = {
        "ct": write_volume(result.ct, folder / "ct.nii.gz"),
        "labels": result.labels.save(folder / "labels.nii.gz"),
        "tumors": write_json(folder / "tumors.json", {"tumors": [r.to_dict() for r in result.tumors]}),
    }
    if snapshot:
        from ..render import snapshot as render_snapshot

        outputs["snapshot"] = render_snapshot(
            result.ct, result.labels, result.tumors, folder / "snapshot.png"
        )
    return outputs
