"""A paired CT-report corpus that runs here: synthetic tumors in real CTs and phantoms, and a report
for each case written from its ``TumorRecord``s.

Hosts: the phantom (:func:`~freetumor_core.phantom.make_phantom`, one host per seed) and, when given,
real CTs with organ labels (the TotalSegmentator example and IRCADb patient 7 in ``shared/data``).
Every host is resampled to ``host_spacing_mm`` (3 mm) first, so a case's CT stays small. A case gets
tumors in 0-2 of the liver, kidneys, spleen and pancreas (through
:func:`~freetumor_core.synthesis.synthesize`), 1-3 tumors each, of every size class; the report
names the organ, the location (lobe, pole, head/body/tail), the size in cm, the count and the
attenuation, in wordings drawn at random, then normal statements and explicit negatives ("No focal
splenic lesion.") for the other organs, then an impression. A real lesion that a host already holds
(IRCADb 7's mass) is reported too.

The corpus folder::

    DIR/cases/<id>.nii.gz       the case's CT (host spacing)
    DIR/crops/<id>.npy          the model's input grid of it in HU (int16, see .model.ct_input)
    DIR/datalist.json           {"training": [...], "validation": [...], "preprocessing": {...}}
                                entry: id, image, crop, report, host, tumors (records)
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..files import write_json
from ..labels import LabelMap, align_to, read_labels
from ..lesions import is_lesion_label
from ..models import Preprocessing
from ..progress import ProgressLike, make_progress
from ..records import TumorRecord
from ..volume import Volume, read_ct, write_volume
from .model import ct_input, default_preprocessing

__all__ = ["ORGANS", "Host", "default_real_hosts", "describe_case", "make_corpus", "read_corpus"]

ORGANS = ("liver", "kidney", "spleen", "pancreas")
_ORGAN_LABELS = {
    "liver": ("liver",),
    "kidney": ("kidney_left", "kidney_right"),
    "spleen": ("spleen",),
    "pancreas": ("pancreas",),
}
_SIZES = ("tiny", "small", "medium", "large")


@dataclass
class Host:
    """A healthy(-ish) CT with organ labels that cases are made from."""

    name: str
    ct: Volume
    labels: LabelMap


def _resample(volume: Volume, spacing_mm: float, interpolator, default: float) -> Volume:
    image = volume.to_sitk()
    extent = zip(image.GetSize(), image.GetSpacing(), strict=True)
    size = [max(1, round(n * s / spacing_mm)) for n, s in extent]
    out = sitk.Resample(
        image, size, sitk.Transform(), interpolator, image.GetOrigin(), [spacing_mm] * 3,
        image.GetDirection(), default,
    )  # fmt: skip
    return Volume(sitk.GetArrayFromImage(out), (spacing_mm,) * 3, volume.origin, volume.direction.copy())


def _host_from_files(name: str, ct_path: Path, labels_path: Path, spacing_mm: float) -> Host:
    ct = read_ct(ct_path)
    labels = align_to(read_labels(labels_path), ct)
    ct = _resample(ct.like(ct.array.astype(np.float32)), spacing_mm, sitk.sitkLinear, -1024.0)
    ct = ct.like(np.round(ct.array).astype(np.int16))
    resampled = _resample(labels.volume, spacing_mm, sitk.sitkNearestNeighbor, 0)
    return Host(name, ct, LabelMap(ct.like(resampled.array.astype(labels.array.dtype)), dict(labels.names)))


def default_real_hosts(data_dir: str | os.PathLike[str]) -> list[tuple[str, Path, Path]]:
    """``(name, CT, labels)`` of the real hosts in a ``shared/data`` folder that exist there."""
    data = Path(data_dir)
    candidates = [
        ("totalseg", data / "totalseg_example/example_ct.nii.gz",
         data / "totalseg_example/example_seg_fast_force_split.nii.gz"),
        ("ircadb07", data / "ircadb_p07/ircadb1_07_ct.nii.gz", data / "ircadb_p07/ircadb1_07_labels.nii.gz"),
    ]  # fmt: skip
    return [(name, ct, labels) for name, ct, labels in candidates if ct.is_file() and labels.is_file()]


# -- report wording ---------------------------------------------------------------------------------
_LESION_WORDS = ("lesion", "mass", "nodule", "focal lesion", "space-occupying lesion")
_ORGAN_ADJECTIVE = {"liver": "hepatic", "kidney": "renal", "spleen": "splenic", "pancreas": "pancreatic"}
_NORMAL = {
    "liver": (
        "The liver is normal in size and attenuation.",
        "Liver parenchyma is homogeneous.",
        "The liver shows no focal abnormality.",
    ),
    "kidney": ("Both kidneys are normal in size and enhancement.", "The kidneys appear unremarkable."),
    "spleen": ("The spleen is normal in size.", "Spleen is unremarkable."),
    "pancreas": ("The pancreas is normal.", "Pancreatic parenchyma appears unremarkable."),
}
_NEGATIVE = {
    "liver": ("No focal liver lesion.", "No hepatic mass is seen.", "No liver lesion was detected."),
    "kidney": ("No renal mass.", "No focal kidney lesion is seen.", "No renal lesion was observed."),
    "spleen": ("No focal splenic lesion.", "No splenic mass is seen.", "No lesion in the spleen."),
    "pancreas": ("No pancreatic mass.", "No focal pancreatic lesion is seen.",
                 "No mass in the pancreas was detected."),
}  # fmt: skip
_EXTRA_NORMAL = (
    "No free fluid in the abdomen.", "No ascites.", "The aorta is normal in calibre.",
    "No enlarged abdominal lymph nodes.", "Visualised bowel loops are unremarkable.",
)  # fmt: skip
_COUNT_WORDS = {1: "a", 2: "two", 3: "three"}


def _attenuation(contrast_hu: float, rng: np.random.Generator) -> str:
    if contrast_hu < -10:
        return str(rng.choice(["hypodense", "hypoattenuating", "low-attenuation"]))
    if contrast_hu > 10:
        return str(rng.choice(["hyperdense", "hyperattenuating"]))
    return "isodense"


def _location(record: TumorRecord, labels: LabelMap, ct: Volume) -> str:
    """Where in its organ a tumor lies: liver lobe, kidney side and pole, pancreas head/body/tail,
    splenic pole (from the tumor's RAS centre against the organ's extent)."""
    centre = np.asarray(record.centre_ras_mm)
    names = [n for n in _ORGAN_LABELS[record.organ] if labels.ids_for(n)]
    extents = {}
    for name in names:
        voxels = np.argwhere(np.isin(labels.array, labels.ids_for(name)))
        if len(voxels):
            ras = ct.index_to_ras(voxels[:: max(1, len(voxels) // 4000)])
            extents[name] = (ras.min(0), ras.max(0), ras.mean(0))
    if not extents:
        return ""
    name = min(extents, key=lambda n: float(np.linalg.norm(extents[n][2] - centre)))
    low, high, _ = extents[name]
    fraction = (centre - low) / np.maximum(high - low, 1e-6)  # RAS: x toward the right, z up
    if record.organ == "liver":
        return "the right hepatic lobe" if fraction[0] > 0.4 else "the left hepatic lobe"
    if record.organ == "kidney":
        side = "right" if name.endswith("right") else "left"
        pole = (
            "upper pole" if fraction[2] > 0.6 else "lower pole" if fraction[2] < 0.4 else "interpolar region"
        )
        return f"the {pole} of the {side} kidney"
    if record.organ == "pancreas":
        part = "head" if fraction[0] > 0.6 else "tail" if fraction[0] < 0.3 else "body"
        return f"the pancreatic {part}"
    if record.organ == "spleen":
        return "the upper pole of the spleen" if fraction[2] > 0.5 else "the lower pole of the spleen"
    return f"the {record.organ}"


def _organ_sentences(records: list[TumorRecord], labels: LabelMap, ct: Volume, rng) -> list[str]:
    organ = records[0].organ
    largest = max(records, key=lambda r: r.diameter_mm)
    size_cm = f"{largest.diameter_mm / 10:.1f} cm"
    attenuation = _attenuation(float(np.mean([r.contrast_hu for r in records])), rng)
    word = str(rng.choice(_LESION_WORDS))
    where = _location(largest, labels, ct) or f"the {organ}"
    count = len(records)
    if count == 1:
        templates = [
            f"A {size_cm} {attenuation} {word} is seen in {where}.",
            f"There is a {attenuation} {word} measuring {size_cm} in {where}.",
            f"{where[0].upper()}{where[1:]} contains a {attenuation} {word} of {size_cm}.",
        ]
    else:
        plural = "lesions" if word.endswith("lesion") else word + ("es" if word.endswith("s") else "s")
        templates = [
            f"{_COUNT_WORDS[count].capitalize()} {attenuation} {_ORGAN_ADJECTIVE[organ]} {plural}, "
            f"the largest {size_cm} in {where}.",
            f"There are {_COUNT_WORDS[count]} {attenuation} {plural} in the {organ}, up to {size_cm}.",
            f"Multiple ({count}) {attenuation} {_ORGAN_ADJECTIVE[organ]} {plural} measuring up to {size_cm}.",
        ]
    sentence = str(rng.choice(templates))
    return [sentence.replace(" a isodense", " an isodense").replace("A isodense", "An isodense")]


def _real_lesion_sentences(labels: LabelMap, ct: Volume) -> list[str]:
    sentences = []
    for label_id, name in sorted(labels.names.items()):
        if not is_lesion_label(name):
            continue
        voxels = np.argwhere(labels.array == label_id)
        if len(voxels) < 10:
            continue
        volume_ml = len(voxels) * ct.voxel_volume_ml
        diameter_cm = (6.0 * volume_ml * 1000 / np.pi) ** (1 / 3) / 10
        body = ct.index_to_ras(np.argwhere(ct.array > -500)[::97].mean(0))
        side = "right" if ct.index_to_ras(voxels.mean(0))[0] > body[0] else "left"  # RAS: x to the right
        sentences.append(
            f"A large {diameter_cm:.1f} cm soft-tissue mass is seen in the {side} upper abdomen."
        )
    return sentences


def describe_case(
    tumors: list[TumorRecord],
    labels: LabelMap,
    ct: Volume,
    rng: np.random.Generator,
    organs: list[str],
    host_labels: LabelMap | None = None,
) -> str:
    """A report for a case: findings (the host's own lesions in ``host_labels``, the synthetic
    tumors, normal organs, negatives), then an impression."""
    findings: list[str] = _real_lesion_sentences(host_labels, ct) if host_labels is not None else []
    impression: list[str] = []
    by_organ: dict[str, list[TumorRecord]] = {}
    for record in tumors:
        by_organ.setdefault(record.organ, []).append(record)
    for organ in organs:
        if organ in by_organ:
            findings += _organ_sentences(by_organ[organ], labels, ct, rng)
            count = len(by_organ[organ])
            impression.append(
                f"{'Solitary' if count == 1 else 'Multiple'} {_ORGAN_ADJECTIVE[organ]} "
                f"{'lesion' if count == 1 else 'lesions'}, suspicious for neoplasm."
            )
        else:
            findings.append(str(rng.choice(_NORMAL[organ] if rng.random() < 0.5 else _NEGATIVE[organ])))
    findings.append(str(rng.choice(_EXTRA_NORMAL)))
    if not impression:
        impression.append(str(rng.choice(["No focal abdominal lesion.", "Unremarkable abdominal CT."])))
    return "FINDINGS: " + " ".join(findings) + "\nIMPRESSION: " + " ".join(impression)


# -- the corpus -------------------------------------------------------------------------------------
def _hosts(phantoms: int, real: list[tuple[str, Path, Path]], spacing_mm: float, seed: int):
    from ..phantom import make_phantom

    for name, ct_path, labels_path in real:
        yield lambda n=name, c=ct_path, lab=labels_path: _host_from_files(n, c, lab, spacing_mm)
    for index in range(phantoms):

        def phantom(index=index) -> Host:
            ct, labels = make_phantom(seed * 1000 + index, spacing_mm=spacing_mm)
            return Host(f"phantom{index:03d}", ct, labels)

        yield phantom


def _make_case(host: Host, rng: np.random.Generator) -> tuple[Volume, list[TumorRecord], LabelMap, list[str]]:
    from ..synthesis import TumorSpec, synthesize

    organs = [o for o in ORGANS if any(host.labels.ids_for(n) for n in _ORGAN_LABELS[o])]
    chosen = (
        []
        if rng.random() < 0.2
        else list(rng.choice(organs, size=min(len(organs), 1 + int(rng.random() < 0.25)), replace=False))
    )
    ct, labels, tumors = host.ct, host.labels, []
    for organ in chosen:
        spec = TumorSpec(
            organ=str(organ), size=str(rng.choice(_SIZES[1:] if organ != "liver" else _SIZES)),
            count=int(rng.integers(1, 4 if organ == "liver" else 3)), allow_shrink=True,
        )  # fmt: skip
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = synthesize(ct, labels, spec, seed=int(rng.integers(2**31)))
        except InputError:  # this organ cannot hold that tumor here: leave it healthy
            continue
        ct, labels, tumors = result.ct, result.labels, tumors + list(result.tumors)
    return ct, tumors, labels, organs


def make_corpus(
    output: str | os.PathLike[str],
    phantoms: int = 40,
    cases_per_host: int = 3,
    real_hosts: list[tuple[str, Path, Path]] | None = None,
    real_cases_per_host: int = 6,
    preprocessing: Preprocessing | None = None,
    host_spacing_mm: float = 3.0,
    validation_fraction: float = 0.2,
    seed: int = 0,
    progress: ProgressLike = None,
) -> dict[str, Any]:
    """Write a corpus (see the module docstring) and return its summary.

    The held-out ``validation`` split is ``validation_fraction`` of the cases, drawn at random, with
    at least one case of each real host.
    """
    if phantoms < 0 or cases_per_host < 1 or real_cases_per_host < 1:
        raise InputError("phantoms must be >= 0 and cases per host >= 1")
    if not 0.0 < validation_fraction < 1.0:
        raise InputError(f"validation fraction must be between 0 and 1, got {validation_fraction}")
    real_hosts = list(real_hosts or [])
    if phantoms == 0 and not real_hosts:
        raise InputError("a corpus needs phantoms or real hosts")
    preprocessing = preprocessing or default_preprocessing()
    output = Path(output)
    (output / "cases").mkdir(parents=True, exist_ok=True)
    (output / "crops").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    entries: list[dict[str, Any]] = []
    reporter = make_progress(progress)
    hosts = list(_hosts(phantoms, real_hosts, host_spacing_mm, seed))
    for number, load in enumerate(reporter.track(hosts, "corpus hosts")):
        host = load()
        real = number < len(real_hosts)
        for case in range(real_cases_per_host if real else cases_per_host):
            ct, tumors, labels, organs = _make_case(host, rng)
            case_id = f"{host.name}_{case:02d}"
            report = describe_case(tumors, labels, ct, rng, organs, host.labels)
            image = write_volume(ct, output / "cases" / f"{case_id}.nii.gz")
            crop = np.clip(np.round(ct_input(ct, preprocessing)), -32768, 32767).astype(np.int16)
            np.save(output / "crops" / f"{case_id}.npy", crop, allow_pickle=False)
            entries.append({
                "id": case_id, "image": f"cases/{image.name}", "crop": f"crops/{case_id}.npy",
                "report": report, "host": host.name, "real_host": real,
                "tumors": [record.to_dict() for record in tumors],
            })  # fmt: skip
    order = rng.permutation(len(entries))
    held = set(order[: max(1, round(validation_fraction * len(entries)))].tolist())
    for host_name in {e["host"] for e in entries if e["real_host"]}:
        indices = [i for i, e in enumerate(entries) if e["host"] == host_name]
        if not held & set(indices):
            held.add(indices[0])
    datalist = {
        "training": [e for i, e in enumerate(entries) if i not in held],
        "validation": [e for i, e in enumerate(entries) if i in held],
        "preprocessing": preprocessing.to_dict(),
        "host_spacing_mm": host_spacing_mm,
        "seed": seed,
    }
    write_json(output / "datalist.json", datalist)
    return {
        "corpus": str(output),
        "datalist": str(output / "datalist.json"),
        "cases": len(entries),
        "training": len(datalist["training"]),
        "validation": len(datalist["validation"]),
        "tumors": sum(len(e["tumors"]) for e in entries),
        "hosts": len(hosts),
    }


def read_corpus(path: str | os.PathLike[str], section: str = "training") -> tuple[list[dict[str, Any]], dict]:
    """The entries of one section of a report datalist (paths resolved) and the whole datalist.

    An entry needs ``image`` (a CT) or ``crop`` (a cached input grid, ``.npy``), and ``report``.

    Raises:
        InputError: naming the file: missing, not JSON, no such section, or a bad entry.
    """
    from ..files import parse_json, read_small_text

    path = Path(path)
    data = parse_json(read_small_text(path, "report datalist", max_bytes=256 << 20), path, "report datalist")
    if not isinstance(data, dict) or not isinstance(data.get(section), list) or not data[section]:
        raise InputError(f"report datalist has no non-empty {section!r} list", path)
    base = path.resolve().parent
    entries = []
    for index, item in enumerate(data[section]):
        if not isinstance(item, dict) or not isinstance(item.get("report"), str):
            raise InputError(f"{section}[{index}] needs a 'report' text", path)
        if not item.get("image") and not item.get("crop"):
            raise InputError(f"{section}[{index}] needs an 'image' or a 'crop'", path)
        entry = dict(item)
        entry.setdefault("id", f"{section}{index:05d}")
        for key in ("image", "crop"):
            if entry.get(key):
                resolved = Path(entry[key]) if os.path.isabs(entry[key]) else base / entry[key]
                if not resolved.exists():
                    raise InputError(f"{section}[{index}] {key} not found: {resolved}", path)
                entry[key] = str(resolved)
        entries.append(entry)
    return entries, data
