"""Benchmark suite ``turing``: case preparation, and durable answers in the SQLite store.

Needs no data: one tumor is synthesized in the phantom and cropped into ``cases`` (option, default
40) study cases, which one reader then answers.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ..bench import Bench


def turing_suite(bench: Bench) -> None:
    """Per-case preparation (crop, resample, quantise) and per-answer latency (durable commit)."""
    from ..phantom import make_phantom
    from ..synthesis import TumorSpec, synthesize
    from .build import StudyCase, write_study
    from .cases import CaseFormat, prepare_case
    from .study import Study

    count = int(bench.options.get("cases", 40))
    ct, labels = make_phantom(seed=0)
    result = synthesize(ct, labels, TumorSpec(organ="liver", size="medium"), seed=1)
    tumor_ids = [i for i, name in result.labels.names.items() if name.endswith("_tumor")]
    mask = np.isin(result.labels.array, tumor_ids)
    rng = np.random.default_rng(0)
    bench.time("prepare_case", lambda: prepare_case(result.ct, mask, CaseFormat(), rng), repeat=bench.repeat)
    with tempfile.TemporaryDirectory() as folder:
        cases = [StudyCase("synthetic", "liver", result.ct, mask, result.tumors, "phantom")] * count
        study = Study.open(
            write_study(Path(folder) / "study", Path(folder) / "key.json", cases, seed=0).folder
        )
        remaining = iter(study.cases("bench"))
        bench.time(
            "answer",
            lambda: study.answer("bench", next(remaining), "real", 3),
            warmup=1,
            repeat=min(bench.repeat * 4, count - 1),
        )
        bench.time("remaining_cases", lambda: study.cases("bench"), repeat=bench.repeat)
