"""The demo: the project's main job on the built-in phantom, no data needed."""

from __future__ import annotations

from pathlib import Path

from .phantom import make_phantom
from .progress import ProgressLike, make_progress
from .volume import check_hu


def run_demo(output: Path, seed: int = 7, progress: ProgressLike = None) -> dict[str, Path]:
    """Build the phantom, synthesize two small liver tumors into it, and write the results.

    Writes the same outputs as ``freetumor synthesize``: ``ct.nii.gz``, ``labels.nii.gz`` (+
    ``labels.json``), ``tumors.json`` and ``snapshot.png``.

    Returns:
        output name -> path.
    """
    from .synthesis import TumorSpec, synthesize
    from .synthesis.outputs import write_result

    steps = ["phantom", "check", "synthesize", "write"]
    outputs: dict[str, Path] = {}
    for step in make_progress(progress).track(steps, "demo"):
        if step == "phantom":
            ct, labels = make_phantom(seed=seed)
        elif step == "check":
            check_hu(ct, "phantom")
            labels.mask("liver")
        elif step == "synthesize":
            result = synthesize(ct, labels, TumorSpec(organ="liver", size="small", count=2), seed=seed)
        else:
            outputs = write_result(result, output)
    return outputs
