"""Build a blinded study: real lesions and synthetic tumors, indistinguishable by anything but the image.

Real cases come from a datalist whose labels hold real tumors (each connected lesion can be a case).
Synthetic cases come from a datalist of CTs with organ labels: the synthesis engine makes one tumor
per case, with organ and diameter drawn from the real cases, so both groups share the same organ and
size distribution. Every case is written the same way (see :mod:`freetumor_core.turing.cases`),
harmonized (blurred to the coarsest source grid of the study, noise matched) and checked for leaks
(:mod:`freetumor_core.turing.leakcheck`).

Blinding: the seed draws only which lesions and hosts are used and how tumors are made. The study
id, the case ids, the case order, the crops and the added noise come from the operating system's
secret random source (:mod:`secrets`), so nothing in the study folder can be replayed. The key (which
case is which, the seed, the leak check) goes only to the key file (mode 0600), which may not lie
inside the study folder.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..files import STAGING_PREFIX, check_output_folder, clean_folder, write_json
from ..labels import LabelMap, align_to, read_labels
from ..progress import ProgressLike, make_progress
from ..records import TumorRecord
from ..volume import Volume, read_ct, write_volume
from .cases import CaseFormat, PreparedCase, crop_around, physical_spacing_mm, prepare_case
from .datalist import DatalistEntry, read_datalist
from .leakcheck import case_features, check_leaks, describe_leaks, noise_level_hu
from .realcases import read_real_lesions
from .store import Store, utc_now
from .study import CASES_FOLDER, DATABASE, FORMAT_NAME, FORMAT_VERSION, MANIFEST, Study

KEY_FORMAT = "freetumor-visual-turing-test-key"
KEY_MODE = 0o600
# A study is read by people: more cases than this would take readers weeks.
MAX_CASES = 2000


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


def _neutral_ids(count: int) -> list[str]:
    """``count`` distinct ids ``case-xxxxxx`` from the secret random source, sorted."""
    ids: set[str] = set()
    while len(ids) < count:
        ids.add(f"case-{secrets.randbits(24):06x}")
    return sorted(ids)


def _secret_rng() -> np.random.Generator:
    return np.random.default_rng(secrets.randbits(128))


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


def harmonize_noise(
    prepared: list[PreparedCase], case_format: CaseFormat, resolution_mm: np.ndarray, rng: np.random.Generator
) -> list[float]:
    """Add noise to every case whose noise level is below the study's highest, so that all cases
    show the same noise SD (:func:`~freetumor_core.turing.leakcheck.noise_level_hu`).

    The added noise is smoothed to the study's coarsest source grid (``resolution_mm``, x y z), like
    the blurred scans. Returns the noise added per case (SD, HU).
    """
    spacing = np.asarray(case_format.spacing_mm)
    sigma_voxels = (np.sqrt(np.maximum(resolution_mm**2 - spacing**2, 0.0)) / 2.355 / spacing)[::-1]
    levels = [noise_level_hu(case.array) for case in prepared]
    target = max(levels)
    low_hu, high_hu = case_format.hu_range
    added = []
    for case, level in zip(prepared, levels, strict=True):
        amount = float(np.sqrt(max(target**2 - level**2, 0.0)))
        if amount < 0.5:
            added.append(0.0)
            continue
        field = rng.standard_normal(case.array.shape).astype(np.float32)
        if np.any(sigma_voxels > 0):
            from scipy import ndimage

            field = ndimage.gaussian_filter(field, sigma_voxels, mode="wrap")
        # Scale by the same measure the leak check uses, on a flat field of soft-tissue HU.
        measured = noise_level_hu(field * 10.0 + 40.0) / 10.0
        field *= amount / max(measured, 1e-6)
        values = case.array.astype(np.float32) + field
        case.array = np.clip(np.rint(values), low_hu, high_hu).astype(np.int16)
        added.append(round(amount, 2))
    return added


def write_study(
    output: str | os.PathLike[str],
    key_path: str | os.PathLike[str],
    cases: list[StudyCase],
    seed: int,
    case_format: CaseFormat | None = None,
    progress: ProgressLike = None,
    allow_leaky: bool = False,
) -> Study:
    """Write a study folder and its key from prepared cases.

    Ids, order, crops and added noise come from the secret random source; ``seed`` is only recorded
    in the key (it drew the cases). Cases are harmonized (blurred to the coarsest source grid, noise
    matched) and then checked for leaks; the check's report goes into the key. The folder is
    assembled under a temporary name and renamed at the end, so a study appears complete or not at
    all.

    Raises:
        InputError: no cases, a key path inside the study folder, a non-empty study folder, an
            existing key file, or a leak (a feature separating real from synthetic cases) without
            ``allow_leaky``.
    """
    output, key_path = Path(output), Path(key_path)
    case_format = case_format or CaseFormat()
    _check_outputs(output, key_path)
    if not cases:
        raise InputError("a study needs at least one case")
    if len(cases) > MAX_CASES:
        raise InputError(f"a study holds at most {MAX_CASES} cases, got {len(cases)}")
    rng = _secret_rng()
    study_id = str(uuid.uuid4())
    shuffled = list(cases)
    secrets.SystemRandom().shuffle(shuffled)
    ids = _neutral_ids(len(cases))
    resolution_mm = np.max([physical_spacing_mm(case.ct) for case in cases], axis=0)
    progress = make_progress(progress)
    prepared = [
        prepare_case(case.ct, case.mask, case_format, rng, resolution_mm)
        for case in progress.track(shuffled, "prepare cases")
    ]
    added_noise = harmonize_noise(prepared, case_format, resolution_mm, rng)
    features = [
        case_features(ready.array, case.ct.spacing) for ready, case in zip(prepared, shuffled, strict=True)
    ]
    leaks = check_leaks(features, [case.origin for case in shuffled])
    leaks["allowed_leaky"] = bool(allow_leaky and leaks["leaky"])
    leaks["summary"] = describe_leaks(leaks)
    progress.event("leak_check", **{k: leaks[k] for k in ("checked", "leaky", "loo_accuracy", "summary")})
    if leaks["leaky"] and not allow_leaky:
        raise InputError(
            f"leak check failed: image statistics tell real from synthetic cases ({leaks['summary']}); "
            "readers could tell them apart without judging the tumors. Use hosts closer to the real "
            "scans, or pass --allow-leaky (allow_leaky=True) to build it anyway (the key records it)"
        )
    check_output_folder(output.parent)
    # A hidden staging folder that the next writer into this folder removes if this process dies.
    clean_folder(output.parent)
    staging = output.parent / f"{STAGING_PREFIX}{os.getpid()}.{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        (staging / CASES_FOLDER).mkdir()
        created = time.time()
        manifest_cases = {}
        for case_id, ready in zip(ids, prepared, strict=True):
            relative = f"{CASES_FOLDER}/{case_id}.nii"
            path = write_volume(ready.volume(case_format), staging / relative, compress=False)
            # The same time stamp on every file: write order must not hint at anything.
            os.utime(path, (created, created))
            manifest_cases[case_id] = {"file": relative, "box_mm": ready.box_mm}
        manifest = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "study_id": study_id,
            "created_at": utc_now(),
            "case_format": case_format.to_dict(),
            "cases": manifest_cases,
        }
        write_json(staging / MANIFEST, manifest)
        Store.create(staging / DATABASE, ids, study_id)
        key = {
            "format": KEY_FORMAT,
            "study_id": study_id,
            "seed": seed,
            "harmonization": {
                "resolution_mm": [round(float(v), 4) for v in resolution_mm],
                "noise_target_hu": round(max(noise_level_hu(ready.array) for ready in prepared), 3),
            },
            "leak_check": leaks,
            "cases": {
                case_id: {
                    "origin": case.origin,
                    "organ": case.organ,
                    "tumors": [record.to_dict() for record in case.tumors],
                    "source": case.source,
                    "features": case_features_row,
                    "added_noise_hu": noise,
                    **case.extra,
                }
                for case_id, case, case_features_row, noise in zip(
                    ids, shuffled, features, added_noise, strict=True
                )
            },
        }
        write_json(key_path, key, mode=KEY_MODE)
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
    allow_leaky: bool = False,
) -> Study:
    """Build a study from a datalist of real tumors and one of CTs with organ labels.

    Args:
        output: the study folder to create (must not exist or be empty).
        key_path: the key file (JSON) to write, outside ``output``.
        real_datalist: datalist whose labels hold real tumors (``organ`` / ``tumor_label`` per entry).
        synthetic_datalist: datalist of CTs with organ labels; ``None`` only with ``n_synthetic=0``.
        n_real: real cases (default: every lesion in the real datalist).
        n_synthetic: synthetic cases (default: as many as real cases).
        seed: seeds which lesions are drawn and how tumors are made (recorded only in the key); ids,
            orders, crops and added noise come from a secret random source.
        case_format: case conventions (default :class:`CaseFormat`).
        progress: a reporter or ``"bar"``/``"json"``/``"none"`` (see :mod:`freetumor_core.progress`).
        allow_leaky: write the study even when the leak check finds a separating feature (the key
            records it).

    Returns:
        The open study.

    Raises:
        InputError: bad datalists, impossible counts (more synthetic cases than real cases times
            synthetic sources), a negative seed, bad output paths, or a leak.
    """
    study_folder, key_file = Path(output), Path(key_path)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 1 << 63:
        raise InputError(f"seed must be a whole number from 0 to 2^63-1, got {seed!r}")
    for name, value in (("real", n_real), ("synthetic", n_synthetic)):
        if value is not None and not 0 <= value <= MAX_CASES:
            raise InputError(f"number of {name} cases must be from 0 to {MAX_CASES}, got {value}")
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
        sources = read_datalist(synthetic_datalist)
        # Each real case paired once with each source: beyond that, cases would only repeat.
        if n_synthetic > len(real) * len(sources):
            raise InputError(
                f"asked for {n_synthetic} synthetic cases, but {len(real)} real cases and {len(sources)} "
                f"synthetic sources make at most {len(real) * len(sources)} distinct ones",
                synthetic_datalist,
            )
        synthetic = synthetic_cases(sources, n_synthetic, real, seed, rng, case_format, progress)
    return write_study(study_folder, key_file, real + synthetic, seed, case_format, progress, allow_leaky)
