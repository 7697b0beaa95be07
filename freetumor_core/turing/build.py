"""Build a blinded study: real lesions and synthetic tumors, indistinguishable by anything but the image.

Real cases come from a datalist whose labels hold real tumors (each connected lesion can be a case).
Synthetic cases come from a datalist of CTs with organ labels: the synthesis engine makes one tumor
per case, with organ and diameter drawn from the real cases, so both groups share the same organ and
size distribution. Every case is written the same way (see :mod:`freetumor_core.turing.cases`),
named by a seeded random id, and the key (which case is which) goes only to the key file, which may
not lie inside the study folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..files import write_json
from ..labels import LabelMap, align_to, read_labels
from ..progress import ProgressLike, make_progress
from ..records import TumorRecord
from ..volume import Volume, read_ct, write_volume
from .cases import CaseFormat, crop_around, prepare_case
from .datalist import DatalistEntry, read_datalist
from .realcases import read_real_lesions
from .store import Store, utc_now
from .study import CASES_FOLDER, DATABASE, FORMAT_NAME, FORMAT_VERSION, MANIFEST, Study

KEY_FORMAT = "freetumor-visual-turing-test-key"


@dataclass
class StudyCase:
    """A case before it is written: its origin, host organ, scan, tumor mask and records."""

    origin: str  # "real" or "synthetic"
    organ: str
    ct: Volume
    mask: np.ndarray
    tumors: list[TumorRecord]
    source: str
    extra: dict[str, Any] = field(default_factory=dict)


def _neutral_ids(count: int, rng: np.random.Generator) -> list[str]:
    ids: set[str] = set()
    while len(ids) < count:
        ids.add(f"case-{int(rng.integers(0, 1 << 24)):06x}")
    return sorted(ids)


def real_cases(
    entries: list[DatalistEntry],
    count: int | None,
    rng: np.random.Generator,
    case_format: CaseFormat,
    progress: ProgressLike = None,
) -> list[StudyCase]:
    """``count`` real lesions (all by default), drawn at random from the datalist's lesions.

    Raises:
        InputError: fewer lesions than asked for, or a bad entry.
    """
    lesions = [
        lesion
        for entry in make_progress(progress).track(entries, "read real cases")
        for lesion in read_real_lesions(entry, case_format)
    ]
    if count is None:
        count = len(lesions)
    if not 0 <= count <= len(lesions):
        raise InputError(f"asked for {count} real cases but the real datalist holds {len(lesions)} lesions")
    chosen = sorted(rng.choice(len(lesions), size=count, replace=False).tolist())
    return [
        StudyCase(
            "real",
            lesions[i].record.organ,
            lesions[i].ct,
            lesions[i].mask,
            [lesions[i].record],
            lesions[i].source,
        )
        for i in chosen
    ]


def _read_source(entry: DatalistEntry) -> tuple[Volume, LabelMap]:
    ct = read_ct(entry.image)
    return ct, align_to(read_labels(entry.label), ct)


def synthetic_cases(
    entries: list[DatalistEntry],
    count: int,
    targets: list[StudyCase],
    seed: int,
    rng: np.random.Generator,
    case_format: CaseFormat,
    progress: ProgressLike = None,
) -> list[StudyCase]:
    """``count`` synthetic tumors, one per case, matching the organ and diameter of real cases.

    Real cases are used as targets in a shuffled cycle; each target's organ must be labelled in at
    least one synthetic source, which is then used (sources with that organ in turn).

    Raises:
        InputError: no real case has an organ that a synthetic source labels.
    """
    from ..synthesis import TumorSpec, synthesize

    if count == 0:
        return []
    progress = make_progress(progress)
    sources = [(entry, *_read_source(entry)) for entry in progress.track(entries, "read synthetic sources")]
    hosts: dict[str, list[int]] = {}
    for target in targets:
        hosts[target.organ] = [
            i
            for i, (_, _, labels) in enumerate(sources)
            if labels.ids_for(target.organ) and labels.mask(target.organ).any()
        ]
    usable = [target for target in targets if hosts[target.organ]]
    if not usable:
        organs = sorted({target.organ for target in targets}) or ["none"]
        raise InputError(
            f"no synthetic source labels an organ of the real cases ({', '.join(organs)}); give each real "
            "datalist entry an 'organ' that the synthetic sources' label maps name"
        )
    order = rng.permutation(len(usable)).tolist()
    used: dict[str, int] = {}
    cases = []
    for index in progress.track(range(count), "synthesize tumors"):
        target = usable[order[index % len(usable)]]
        organ = target.organ
        diameter_mm = target.tumors[0].diameter_mm
        candidates = hosts[organ]
        first = used.get(organ, 0)
        used[organ] = first + 1
        # Hosts in turn; a host whose organ cannot hold this size passes to the next one, and only
        # when none can is the tumor shrunk (the key records the size made and the size asked).
        attempts = [(candidates[(first + k) % len(candidates)], False) for k in range(len(candidates))]
        attempts.append((candidates[first % len(candidates)], True))
        for attempt, (host_index, shrink) in enumerate(attempts):
            entry, ct, labels = sources[host_index]
            spec = TumorSpec(organ=organ, diameter_mm=diameter_mm, count=1, allow_shrink=shrink)
            try:
                result = synthesize(ct, labels, spec, seed=seed * 1000 + index)
                break
            except InputError:
                if attempt == len(attempts) - 1:
                    raise
        # Only the tumor made here: a host's own real tumor shares the ``<organ>_tumor`` label but is
        # not this case's tumor. It stays in the image, as any real host would show it (see
        # docs/turing.md: the crop may include it, as real cases' crops include their neighbours).
        mask = result.tumor_mask
        if not mask.any():
            raise InputError(f"synthesis made no tumor voxels for {organ} in {entry.image}", entry.image)
        # Keep only the reachable part of the new CT: a study of many cases must not hold whole scans.
        sub_ct, sub_mask = crop_around(result.ct, mask, case_format)
        cases.append(
            StudyCase(
                "synthetic",
                organ,
                sub_ct,
                sub_mask,
                list(result.tumors),
                entry.source,
                {"target_diameter_mm": round(diameter_mm, 3)},
            )
        )
    return cases


def _check_outputs(output: Path, key_path: Path) -> None:
    output_resolved = output.resolve()
    key_resolved = key_path.resolve()
    if key_resolved == output_resolved or output_resolved in key_resolved.parents:
        raise InputError(
            "the key file must not be inside the study folder (readers receive that folder); "
            "write it elsewhere",
            key_path,
        )
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise InputError("study folder already exists and is not empty; choose a new folder", output)
    if key_path.exists():
        raise InputError("key file already exists; refusing to overwrite another study's key", key_path)
    if not key_path.parent.is_dir():
        raise InputError("folder of the key file does not exist", key_path.parent)


def write_study(
    output: str | os.PathLike[str],
    key_path: str | os.PathLike[str],
    cases: list[StudyCase],
    seed: int,
    case_format: CaseFormat | None = None,
    progress: ProgressLike = None,
) -> Study:
    """Write a study folder and its key from prepared cases.

    The folder is assembled under a temporary name and renamed at the end, so a study appears
    complete or not at all.

    Raises:
        InputError: no cases, a key path inside the study folder, a non-empty study folder or an
            existing key file.
    """
    output, key_path = Path(output), Path(key_path)
    case_format = case_format or CaseFormat()
    _check_outputs(output, key_path)
    if not cases:
        raise InputError("a study needs at least one case")
    rng = np.random.default_rng(seed)
    study_id = str(uuid.UUID(bytes=rng.bytes(16), version=4))
    shuffled = [cases[i] for i in rng.permutation(len(cases))]
    ids = _neutral_ids(len(cases), rng)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        (staging / CASES_FOLDER).mkdir()
        prepared = {}
        for index, (case_id, case) in enumerate(
            make_progress(progress).track(list(zip(ids, shuffled, strict=True)), "prepare cases")
        ):
            prepared[case_id] = prepare_case(
                case.ct, case.mask, case_format, np.random.default_rng([seed, index])
            )
        created = time.time()
        manifest_cases = {}
        for case_id in ids:
            relative = f"{CASES_FOLDER}/{case_id}.nii"
            path = write_volume(prepared[case_id].volume(case_format), staging / relative, compress=False)
            # The same time stamp on every file: write order must not hint at anything.
            os.utime(path, (created, created))
            manifest_cases[case_id] = {"file": relative, "box_mm": prepared[case_id].box_mm}
        manifest = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "study_id": study_id,
            "seed": seed,
            "created_at": utc_now(),
            "case_format": case_format.to_dict(),
            "cases": manifest_cases,
        }
        write_json(staging / MANIFEST, manifest)
        Store.create(staging / DATABASE, ids, seed, study_id)
        key = {
            "format": KEY_FORMAT,
            "study_id": study_id,
            "cases": {
                case_id: {
                    "origin": case.origin,
                    "organ": case.organ,
                    "tumors": [record.to_dict() for record in case.tumors],
                    "source": case.source,
                    **case.extra,
                }
                for case_id, case in zip(ids, shuffled, strict=True)
            },
        }
        write_json(key_path, key)
        if output.exists():
            output.rmdir()
        os.replace(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Study.open(output)


def build_study(
    output: str | os.PathLike[str],
    key_path: str | os.PathLike[str],
    real_datalist: str | os.PathLike[str],
    synthetic_datalist: str | os.PathLike[str] | None = None,
    n_real: int | None = None,
    n_synthetic: int | None = None,
    seed: int = 0,
    case_format: CaseFormat | None = None,
    progress: ProgressLike = None,
) -> Study:
    """Build a study from a datalist of real tumors and one of CTs with organ labels.

    Args:
        output: the study folder to create (must not exist or be empty).
        key_path: the key file (JSON) to write, outside ``output``.
        real_datalist: datalist whose labels hold real tumors (``organ`` / ``tumor_label`` per entry).
        synthetic_datalist: datalist of CTs with organ labels; ``None`` only with ``n_synthetic=0``.
        n_real: real cases (default: every lesion in the real datalist).
        n_synthetic: synthetic cases (default: as many as real cases).
        seed: seeds case choice, synthesis, crops, ids and reader orders.
        case_format: case conventions (default :class:`CaseFormat`).
        progress: a reporter or ``"bar"``/``"json"``/``"none"`` (see :mod:`freetumor_core.progress`).

    Returns:
        The open study.

    Raises:
        InputError: bad datalists, impossible counts, or bad output paths.
    """
    study_folder, key_file = Path(output), Path(key_path)
    _check_outputs(study_folder, key_file)
    rng = np.random.default_rng(seed)
    case_format = case_format or CaseFormat()
    progress = make_progress(progress)
    real = real_cases(read_datalist(real_datalist), n_real, rng, case_format, progress)
    n_synthetic = len(real) if n_synthetic is None else n_synthetic
    if n_synthetic < 0:
        raise InputError(f"number of synthetic cases must be 0 or more, got {n_synthetic}")
    synthetic: list[StudyCase] = []
    if n_synthetic:
        if synthetic_datalist is None:
            raise InputError("synthetic cases need a datalist of CTs with organ labels")
        if not real:
            raise InputError(
                "synthetic cases copy the real cases' organs and sizes: give at least one real case"
            )
        synthetic = synthetic_cases(
            read_datalist(synthetic_datalist), n_synthetic, real, seed, rng, case_format, progress
        )
    return write_study(study_folder, key_file, real + synthetic, seed, case_format, progress)
