"""Building reader studies from real lesions and synthetic tumors; the leak check; a whole study.

Real lesions: the two IRCADb liver tumours, the DeepLesion HU mass and three DeepLesion 8-bit cases
mapped back to HU. Synthetic sources: the 3 mm TotalSegmentator CT with its organ labels and the
phantom.
"""

from __future__ import annotations

import hashlib
import json
import math
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import real_lesion_entries

from freetumor_core.cli import main as cli_main
from freetumor_core.errors import InputError
from freetumor_core.phantom import make_phantom
from freetumor_core.turing.build import build_study
from freetumor_core.turing.datalist import read_datalist
from freetumor_core.turing.realcases import read_real_lesions, windowed_npz_to_nifti
from freetumor_core.turing.study import Study
from freetumor_core.volume import read_volume, write_volume

NPZ_CASES = (
    "CT_Lesion_000002_03_01_035-047",
    "CT_Lesion_000010_01_01_078-090",
    "CT_Lesion_000015_01_01_081-093",
)

# A scripted reader: answers its remaining cases through the command line's own entry point,
# printing each case after the answer command returned.
READER_SCRIPT = """
import contextlib, io, json, sys, time
from freetumor_core.cli import main
folder, reader, plan_path, pause_s = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
plan = json.load(open(plan_path))
def run(*arguments):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["vtt", *arguments])
    if code:
        sys.exit(code)
    return json.loads(out.getvalue())
remaining = run("cases", folder, "--reader", reader)
print(json.dumps({"start": remaining}), flush=True)
for case_id in remaining:
    run("show", folder, "--reader", reader, "--case", case_id)
    call, confidence = plan[case_id]
    run("answer", folder, "--reader", reader, "--case", case_id, "--call", call,
        "--confidence", str(confidence), "--comment", f"scripted {reader}")
    print(json.dumps({"committed": case_id}), flush=True)
    time.sleep(pause_s)
print(json.dumps({"finished": True}), flush=True)
"""


@pytest.fixture(scope="module")
def datalists(shared_data: Path, tmp_path_factory) -> Path:
    """``real.json`` and ``synthetic.json`` in a temporary folder (8-bit cases converted there)."""
    folder = tmp_path_factory.mktemp("datalists")
    deeplesion = shared_data / "deeplesion_medsam2"
    real = real_lesion_entries(shared_data)
    for name in NPZ_CASES:
        ct_path, mask_path = windowed_npz_to_nifti(deeplesion / f"{name}.npz", folder / "deeplesion_hu")
        real.append(
            {
                "image": str(ct_path.relative_to(folder)),
                "label": str(mask_path.relative_to(folder)),
                "organ": "abdomen",
            }
        )
    (folder / "real.json").write_text(json.dumps({"training": real}))
    ct, labels = make_phantom(seed=0)
    write_volume(ct, folder / "phantom" / "ct.nii.gz")
    labels.save(folder / "phantom" / "labels.nii.gz")
    totalseg = shared_data / "totalseg_example"
    synthetic = [
        {
            "image": str(totalseg / "example_ct.nii.gz"),
            "label": str(totalseg / "example_seg_fast_force_split.nii.gz"),
        },
        {"image": "phantom/ct.nii.gz", "label": "phantom/labels.nii.gz"},
    ]
    (folder / "synthetic.json").write_text(json.dumps({"training": synthetic}))
    return folder


@pytest.fixture(scope="module")
def mixed_study(datalists: Path, tmp_path_factory) -> tuple[Path, Path]:
    """4 real + 4 synthetic cases, built through the command line. Tests copy it before writing."""
    folder = tmp_path_factory.mktemp("mixed")
    code = cli_main(
        [
            "vtt",
            "create",
            "--real",
            str(datalists / "real.json"),
            "--synthetic-from",
            str(datalists / "synthetic.json"),
            "-o",
            str(folder / "study"),
            "--key",
            str(folder / "key.json"),
            "--n-real",
            "4",
            "--n-synthetic",
            "4",
            "--seed",
            "5",
            "--allow-leaky",
        ]
    )
    assert code == 0
    return folder / "study", folder / "key.json"


# -- datalists and real lesions ----------------------------------------------------------------
def test_datalist_errors_name_file_and_entry(tmp_path: Path) -> None:
    path = tmp_path / "list.json"
    with pytest.raises(InputError, match="datalist not found"):
        read_datalist(path)
    cases = [
        ("{not json", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ('{"other": []}', "no 'training"),
        ('{"training": []}', "non-empty list"),
        ('{"training": [{"image": "a.nii.gz"}]}', r"entry training\[0\] has no 'label'"),
        (
            '{"training": [{"image": "a.nii.gz", "label": "b.nii.gz"}]}',
            r"training\[0\]: image file not found",
        ),
    ]
    for text, message in cases:
        path.write_text(text)
        with pytest.raises(InputError, match=message) as error:
            read_datalist(path)
        assert str(path) in str(error.value)
    (tmp_path / "a.nii.gz").write_bytes(b"x")
    (tmp_path / "b.nii.gz").write_bytes(b"x")
    path.write_text('{"training": [{"image": "a.nii.gz", "label": "b.nii.gz", "tumor_label": "2"}]}')
    with pytest.raises(InputError, match="tumor_label"):
        read_datalist(path)
    path.write_text('{"training": [{"image": "a.nii.gz", "label": "b.nii.gz", "organ": "Liver"}]}')
    (entry,) = read_datalist(path)
    assert entry.image == tmp_path / "a.nii.gz" and entry.organ == "liver" and entry.tumor_label is None


def test_real_lesions(datalists: Path, shared_data: Path) -> None:
    entries = read_datalist(datalists / "real.json")
    ircadb = read_real_lesions(entries[0])
    # The README's two IRCADb tumours: 78.6 mL (63 HU, -39 HU against the liver) and 85.6 mL (88 HU).
    by_volume = sorted(ircadb, key=lambda lesion: lesion.record.volume_ml)
    assert [lesion.record.volume_ml for lesion in by_volume] == pytest.approx([78.6, 85.6], abs=0.1)
    assert [lesion.record.mean_hu for lesion in by_volume] == pytest.approx([63, 88], abs=1.0)
    assert by_volume[0].record.contrast_hu < -25
    assert all(lesion.record.engine == "real" and lesion.record.organ == "liver" for lesion in ircadb)
    # The 8-bit copy of the HU subvolume, mapped back, agrees with the HU file within the 8-bit step.
    folder = datalists / "check"
    ct_path, _ = windowed_npz_to_nifti(
        shared_data / "deeplesion_medsam2" / "CT_Lesion_000015_01_01_103-115.npz", folder
    )
    mapped = read_volume(ct_path)
    reference = read_volume(shared_data / "deeplesion_medsam2" / "000015_01_01_103-115_ct_hu.nii.gz")
    assert mapped.same_grid(reference)
    inside_window = (reference.array > -150) & (reference.array < 230)
    difference = mapped.array[inside_window].astype(float) - reference.array[inside_window]
    assert np.sqrt(np.mean(difference**2)) < 1.5
    (lesion,) = read_real_lesions(entries[1])
    assert lesion.record.volume_ml == pytest.approx(63.7, abs=0.1)
    # A label map with several labels needs to say which one is the tumor.
    listing = datalists / "ambiguous.json"
    listing.write_text(
        json.dumps(
            {"training": [{"image": entries[0].image.as_posix(), "label": entries[0].label.as_posix()}]}
        )
    )
    with pytest.raises(InputError, match="tumor_label"):
        read_real_lesions(read_datalist(listing)[0])


def test_outputs_are_checked_before_work(datalists: Path, tmp_path: Path) -> None:
    real = datalists / "real.json"
    with pytest.raises(InputError, match="must not be inside the study folder"):
        build_study(tmp_path / "study", tmp_path / "study" / "key.json", real, n_synthetic=0)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(InputError, match="not empty"):
        build_study(tmp_path / "full", tmp_path / "key.json", real, n_synthetic=0)
    (tmp_path / "key.json").write_text("{}")
    with pytest.raises(InputError, match="refusing to overwrite"):
        build_study(tmp_path / "study", tmp_path / "key.json", real, n_synthetic=0)
    with pytest.raises(InputError, match="holds 6 lesions"):
        build_study(tmp_path / "study", tmp_path / "key2.json", real, n_real=7, n_synthetic=0)
    assert not (tmp_path / "study").exists()


# -- the leak check ----------------------------------------------------------------------------
def _file_features(path: Path) -> dict[str, object]:
    """Everything a reader could see without looking at the image: file, header, metadata, format."""
    raw = path.read_bytes()
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    values = np.unique(array).astype(np.int64)
    step = int(np.gcd.reduce(np.diff(values))) if len(values) > 1 else 0
    features: dict[str, object] = {
        "file_size": len(raw),
        "header_sha256": hashlib.sha256(raw[:352]).hexdigest(),
        "mode": path.stat().st_mode,
        "mtime": path.stat().st_mtime,
        "suffix": "".join(path.suffixes),
        "dtype": str(array.dtype),
        "shape": array.shape,
        "spacing": image.GetSpacing(),
        "origin": image.GetOrigin(),
        "direction": image.GetDirection(),
        "value_step": step,
        "residues_mod_4": tuple(sorted(set((values % 4).tolist()))),
    }
    for key in image.GetMetaDataKeys():
        features[f"meta:{key}"] = image.GetMetaData(key)
    return features


def _separates(real: list, synthetic: list) -> bool:
    """True when a feature tells the two groups apart perfectly (by value sets or a threshold)."""
    if not set(map(repr, real)) & set(map(repr, synthetic)):
        return True
    if all(isinstance(v, int | float) for v in real + synthetic):
        return max(real) < min(synthetic) or max(synthetic) < min(real)
    return False


def test_leak_check(mixed_study: tuple[Path, Path]) -> None:
    study_folder, key_path = mixed_study
    key = json.loads(key_path.read_text())["cases"]
    study = Study.open(study_folder)
    origins = {case_id: key[case_id]["origin"] for case_id in study.case_ids}
    assert sorted(origins.values()) == ["real"] * 4 + ["synthetic"] * 4
    features = {
        case_id: _file_features(study_folder / study.manifest["cases"][case_id]["file"])
        for case_id in study.case_ids
    }
    names = sorted(set().union(*features.values()))
    for name in names:
        real = [features[c].get(name) for c in study.case_ids if origins[c] == "real"]
        synthetic = [features[c].get(name) for c in study.case_ids if origins[c] == "synthetic"]
        assert not _separates(real, synthetic), f"{name} tells real from synthetic: {real} vs {synthetic}"
    # Leave-one-out nearest neighbour on all these features does no better than chance.
    encoded = np.array([[hash(repr(features[c].get(name))) % 1000 for name in names] for c in study.case_ids])
    labels = [origins[c] for c in study.case_ids]
    right = 0
    for i in range(len(labels)):
        distance = np.array(
            [np.count_nonzero(encoded[i] != encoded[j]) if j != i else np.inf for j in range(len(labels))]
        )
        nearest = [labels[j] for j in np.flatnonzero(distance == distance.min())]
        votes = nearest.count("synthetic") / len(nearest)
        right += (votes > 0.5 and labels[i] == "synthetic") or (votes < 0.5 and labels[i] == "real")
    assert right / len(labels) <= 0.5
    # Every case has the same header and size; values are whole HU inside the study's range.
    assert len({f["header_sha256"] for f in features.values()}) == 1
    assert len({f["file_size"] for f in features.values()}) == 1
    low, high = study.case_format.hu_range
    for case_id in study.case_ids:
        array = study.case_image(case_id).volume.array
        assert array.dtype == np.int16 and low <= array.min() and array.max() <= high
    # What readers receive names no origin, source or tumor record.
    manifest = (study_folder / "study.json").read_text().lower()
    database = sqlite3.connect(study_folder / "study.db")
    rows = " ".join(
        str(row)
        for table in ("meta", "cases", "readers", "views", "answers")
        for row in database.execute(f"SELECT * FROM {table}")
    ).lower()
    database.close()
    files = " ".join(p.name for p in study_folder.rglob("*")).lower()
    for text in (manifest, rows, files):
        for word in (
            "real",
            "synthetic",
            "ircadb",
            "deeplesion",
            "phantom",
            "example_ct",
            "_tumor",
            "diameter",
            "engine",
        ):
            assert word not in text
    # The key has every case with its tumor records; synthetic tumors copy real organs and sizes.
    real_diameters = {round(e["tumors"][0]["diameter_mm"], 3) for e in key.values() if e["origin"] == "real"}
    for entry in key.values():
        assert entry["tumors"] and entry["organ"]
        if entry["origin"] == "synthetic":
            assert entry["organ"] == "liver" and entry["tumors"][0]["engine"] != "real"
            assert entry["target_diameter_mm"] in real_diameters


# -- a whole study ------------------------------------------------------------------------------
def _reader(folder: Path, reader: str, plan: Path, pause_s: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", READER_SCRIPT, str(folder), reader, str(plan), str(pause_s)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wilson_by_hand(right: int, n: int) -> tuple[float, float]:
    z = 1.959963984540054
    p = right / n
    root = z * math.sqrt(z * z + 4 * n * p * (1 - p))
    return (2 * n * p + z * z - root) / (2 * (n + z * z)), (2 * n * p + z * z + root) / (2 * (n + z * z))


def test_two_readers_one_killed_scores_by_hand(mixed_study: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    study_folder = tmp_path / "study"
    shutil.copytree(mixed_study[0], study_folder)
    key = json.loads(mixed_study[1].read_text())["cases"]
    case_ids = sorted(key)
    rng = np.random.default_rng(21)
    plans = {}
    for reader in ("radiologist_a", "radiologist_b"):
        plans[reader] = {
            c: [str(rng.choice(["real", "synthetic"])), int(rng.integers(1, 6))] for c in case_ids
        }
        (tmp_path / f"{reader}.json").write_text(json.dumps(plans[reader]))

    # Both readers at once, in separate processes; reader b is killed after its second answer.
    process_a = _reader(study_folder, "radiologist_a", tmp_path / "radiologist_a.json", 0.0)
    process_b = _reader(study_folder, "radiologist_b", tmp_path / "radiologist_b.json", 0.05)
    lines_b = iter(process_b.stdout.readline, "")
    first_b = json.loads(next(lines_b))["start"]
    reported_b = [json.loads(next(lines_b))["committed"] for _ in range(2)]
    time.sleep(0.03)
    process_b.send_signal(signal.SIGKILL)
    process_b.wait(timeout=30)
    reported_b += [
        json.loads(x)["committed"] for x in process_b.stdout.read().splitlines() if "committed" in x
    ]
    process_b.stdout.close()
    process_b.stderr.close()
    assert process_b.returncode == -signal.SIGKILL
    study = Study.open(study_folder)
    assert study.store.integrity() == "ok"
    stored_b = [a.case_id for a in study.answers("radiologist_b")]
    assert set(reported_b) <= set(stored_b) and len(stored_b) < len(case_ids)
    # Reader b resumes where the killed session stopped.
    assert study.cases("radiologist_b") == [c for c in first_b if c not in stored_b]
    process_b = _reader(study_folder, "radiologist_b", tmp_path / "radiologist_b.json", 0.0)
    for process in (process_a, process_b):
        _, err = process.communicate(timeout=180)
        assert process.returncode == 0, err
    assert study.cases("radiologist_a") == [] and study.cases("radiologist_b") == []
    for reader, plan in plans.items():
        answers = study.answers(reader)
        assert {a.case_id: [a.call, a.confidence] for a in answers} == plan
        assert all(a.seconds_spent is not None and a.seconds_spent >= 0 for a in answers)

    assert (
        cli_main(
            [
                "vtt",
                "score",
                str(study_folder),
                "--key",
                str(mixed_study[1]),
                "--json",
                str(tmp_path / "s.json"),
            ]
        )
        == 0
    )
    scores = json.loads((tmp_path / "s.json").read_text())
    # By hand: count the calls against the key.
    expected = {}
    for group, readers in [*[(r, [r]) for r in plans], ("pooled", list(plans))]:
        pairs = [(key[c]["origin"], plans[r][c][0]) for r in readers for c in case_ids]
        synthetic_right = sum(origin == call == "synthetic" for origin, call in pairs)
        real_right = sum(origin == call == "real" for origin, call in pairs)
        n_synthetic = sum(origin == "synthetic" for origin, _ in pairs)
        n_real = len(pairs) - n_synthetic
        expected[group] = {
            "n": len(pairs),
            "sensitivity": synthetic_right / n_synthetic,
            "specificity": real_right / n_real,
            "accuracy": (synthetic_right + real_right) / len(pairs),
            "accuracy_ci95": _wilson_by_hand(synthetic_right + real_right, len(pairs)),
        }
    for group, values in expected.items():
        summary = scores["pooled"] if group == "pooled" else scores["readers"][group]
        for name, value in values.items():
            assert summary[name] == pytest.approx(value), (group, name)
