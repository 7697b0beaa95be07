"""The demo: the project's main job on the built-in phantom, no data needed."""

from __future__ import annotations

from pathlib import Path

from .phantom import make_phantom
from .progress import track
from .volume import check_hu, write_volume


def run_demo(output: Path, seed: int = 7) -> dict[str, Path]:
    """Build the phantom, check it, and write its CT and labels to ``output``.

    Returns:
        output name -> path.
    """
    steps = ["phantom", "check", "write"]
    outputs: dict[str, Path] = {}
    for step in track(steps, "demo"):
        if step == "phantom":
            ct, labels = make_phantom(seed=seed)
        elif step == "check":
            check_hu(ct, "phantom")
            labels.mask("liver")
        else:
            outputs["ct"] = write_volume(ct, output / "ct.nii.gz")
            outputs["labels"] = labels.save(output / "labels.nii.gz")
    return outputs
