"""Hostile inputs: each is refused with exit code 2, a message naming the file or option, and a
bounded peak memory (every probe runs in its own process; its peak RSS must stay under 2 GB).

The corpus is generated here into a temporary folder: no binary is committed.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from freetumor_core.errors import InputError
from freetumor_core.labels import read_name_map
from freetumor_core.phantom import make_phantom
from freetumor_core.volume import check_geometry, write_volume

REPO = Path(__file__).resolve().parents[1]
PEAK_RSS_LIMIT_BYTES = 2 * 10**9
CHUNK = 16 << 20


def _nifti_header(size_xyz: tuple[int, int, int], pixel: int = sitk.sitkInt16) -> bytes:
    """The 352-byte NIfTI-1 header of a ``size_xyz`` image (written for a tiny one, then patched)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tiny.nii"
        sitk.WriteImage(sitk.Image([2, 2, 2], pixel), str(path))
        header = bytearray(path.read_bytes()[:352])
    struct.pack_into("<3h", header, 42, *size_xyz)
    return bytes(header)


def _metaimage(path: Path, spacing: str = "1 1 1", matrix: str = "1 0 0 0 1 0 0 0 1") -> Path:
    text = (
        "ObjectType = Image\nNDims = 3\nDimSize = 8 8 8\nElementType = MET_SHORT\n"
        f"ElementSpacing = {spacing}\nTransformMatrix = {matrix}\nOffset = 0 0 0\nElementDataFile = LOCAL\n"
    )
    path.write_bytes(text.encode() + np.full(512, -500, np.int16).tobytes())
    return path


def _dicom_series(folder: Path, positions_mm: list[float]) -> Path:
    """A CT series of 16 x 16 slices at the given positions along z (mm)."""
    folder.mkdir(parents=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    root = "1.2.826.0.1.3680043.8.498"
    for index, z in enumerate(positions_mm):
        image = sitk.GetImageFromArray(np.full((16, 16), -500 + 10 * index, np.int16))
        image.SetSpacing((0.8, 0.8))
        tags = {
            "0008|0060": "CT",
            "0020|000d": f"{root}.2",
            "0020|000e": f"{root}.1",
            "0008|0018": f"{root}.3.{index + 1}",
            "0020|0013": str(index + 1),
            "0020|0032": f"0\\0\\{z}",
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": "0.8\\0.8",
            "0028|1052": "0",
            "0028|1053": "1",
        }
        for tag, value in tags.items():
            image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{index:03d}.dcm"))
        writer.Execute(image)
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("hostile")
    files: dict[str, Path] = {}
    ct, labels = make_phantom(seed=0, spacing_mm=4.0)
    files["ct"] = write_volume(ct, folder / "ct.nii.gz")
    files["labels"] = labels.save(folder / "labels.nii.gz")

    # A 2 MB .nii.gz that expands to 2 GiB: gzip members of zeros, the first one behind a header
    # that announces the whole 1024 x 1024 x 2048 uint8 volume.
    zeros = gzip.compress(bytes(CHUNK), 9)
    with open(folder / "bomb.nii.gz", "wb") as handle:
        handle.write(gzip.compress(_nifti_header((1024, 1024, 2048), sitk.sitkUInt8) + bytes(CHUNK - 352), 9))
        for _ in range((2 << 30) // CHUNK - 1):
            handle.write(zeros)
    files["bomb"] = folder / "bomb.nii.gz"
    # The same stream behind a header of a small 64^3 image: the data run on far past it.
    with open(folder / "bomb_small_header.nii.gz", "wb") as handle:
        handle.write(gzip.compress(_nifti_header((64, 64, 64), sitk.sitkUInt8) + bytes(CHUNK - 352), 9))
        for _ in range((2 << 30) // CHUNK - 1):
            handle.write(zeros)
    files["bomb_small_header"] = folder / "bomb_small_header.nii.gz"
    # 64 KB files whose headers claim huge or merely large volumes.
    for name, size in (("claims_1200", (1200, 1200, 1200)), ("claims_30000", (30000, 30000, 30000))):
        files[name] = folder / f"{name}.nii"
        files[name].write_bytes(_nifti_header(size) + bytes(64 * 1024))
    files["claims_400"] = folder / "claims_400.nii"
    files["claims_400"].write_bytes(_nifti_header((400, 400, 400)) + bytes(64 * 1024))

    # Geometry.
    for name, spacing in (
        ("spacing_zero", "0 1 1"),
        ("spacing_negative", "-1 1 1"),
        ("spacing_nan", "nan 1 1"),
        ("spacing_inf", "inf 1 1"),
        ("spacing_tiny", "0.001 1 1"),
        ("spacing_huge", "1000 1 1"),
    ):
        files[name] = _metaimage(folder / f"{name}.mha", spacing=spacing)
    files["direction_nan"] = _metaimage(folder / "direction_nan.mha", matrix="nan 0 0 0 1 0 0 0 1")
    files["direction_skew"] = _metaimage(folder / "direction_skew.mha", matrix="1 0 0 0.5 1 0 0 0 1")
    files["dicom_missing"] = _dicom_series(folder / "dicom_missing", [0, 2, 4, 8, 10, 12])
    files["dicom_uneven"] = _dicom_series(folder / "dicom_uneven", [0, 2, 4.5, 6, 8, 10])

    # Voxel types.
    complex_image = sitk.GetImageFromArray(np.zeros((8, 8, 8), np.complex64))
    files["complex"] = folder / "complex.nii.gz"
    sitk.WriteImage(complex_image, str(files["complex"]))
    files["int8_ct"] = folder / "int8_ct.nii.gz"
    sitk.WriteImage(sitk.Cast(ct.to_sitk() / 16, sitk.sitkInt8), str(files["int8_ct"]))
    wrapping = labels.array.astype(np.uint64)
    wrapping[wrapping == 5] = (1 << 32) + 5  # 5 is the liver: 2^32 + 5 must not wrap onto it
    files["labels_u64"] = folder / "labels_u64.nii.gz"
    sitk.WriteImage(labels.volume.like(wrapping).to_sitk(), str(files["labels_u64"]))

    # Name maps.
    files["names_utf8"] = folder / "names_utf8.json"
    files["names_utf8"].write_bytes(b'{"5": "liver\xff\xfe"}')
    files["names_deep"] = folder / "names_deep.json"
    files["names_deep"].write_text("[" * 100_000 + "]" * 100_000)
    files["names_wide_id"] = folder / "names_wide_id.json"
    files["names_wide_id"].write_text(json.dumps({str((1 << 32) + 5): "liver"}))
    files["names_fifo"] = folder / "names_fifo.json"
    os.mkfifo(files["names_fifo"])
    files["loop"] = folder / "loop.nii.gz"
    os.symlink(folder / "loop.nii.gz", files["loop"])
    files["image_fifo"] = folder / "image_fifo.nii.gz"
    os.mkfifo(files["image_fifo"])
    files["datalist_fifo"] = folder / "datalist_fifo.json"
    os.mkfifo(files["datalist_fifo"])

    # A study's datalists: one real lesion in HU, one host.
    deep = folder / "deep"
    write_volume(ct, deep / "ct.nii.gz")
    mask = labels.volume.like((labels.array == 5).astype(np.uint8))
    write_volume(mask, deep / "lesion.nii.gz")
    entry = {"image": str(deep / "ct.nii.gz"), "label": str(deep / "lesion.nii.gz"), "organ": "liver"}
    files["real_list"] = folder / "real.json"
    files["real_list"].write_text(json.dumps({"training": [entry]}))
    files["host_list"] = folder / "hosts.json"
    files["host_list"].write_text(
        json.dumps({"training": [{"image": str(files["ct"]), "label": str(files["labels"])}]})
    )
    files["out"] = folder / "out"
    files["out"].mkdir()
    return files


def _synthesize(corpus: dict[str, Path], ct: str = "ct", organs: str = "labels", *extra: str) -> list[str]:
    return ["synthesize", str(corpus[ct]), "--organs", str(corpus[organs]), "-o", str(corpus["out"]), *extra]


def _vtt(corpus: dict[str, Path], *extra: str) -> list[str]:
    return [
        "vtt",
        "create",
        "--real",
        str(corpus["real_list"]),
        "--synthetic-from",
        str(corpus["host_list"]),
        "-o",
        str(corpus["out"] / "study"),
        "--key",
        str(corpus["out"] / "key.json"),
        *extra,
    ]


# probe name -> (arguments, words the message must hold; "{file}" stands for the probe's file).
PROBES = {
    "bomb": (lambda c: ["info", str(c["bomb"])], ["{bomb}", "1024 x 1024 x 2048", "FREETUMOR_MAX_IMAGE_MB"]),
    "bomb_small_header": (lambda c: ["info", str(c["bomb_small_header"])], ["{bomb_small_header}", "expand"]),
    "claims_1200": (lambda c: ["info", str(c["claims_1200"])], ["{claims_1200}", "1200 x 1200 x 1200"]),
    "claims_30000": (lambda c: ["info", str(c["claims_30000"])], ["{claims_30000}", "30000 x 30000"]),
    "claims_400": (lambda c: ["info", str(c["claims_400"])], ["{claims_400}", "truncated"]),
    "spacing_zero": (lambda c: ["info", str(c["spacing_zero"])], ["{spacing_zero}", "spacing"]),
    "spacing_negative": (lambda c: ["info", str(c["spacing_negative"])], ["{spacing_negative}", "positive"]),
    "spacing_nan": (lambda c: ["info", str(c["spacing_nan"])], ["{spacing_nan}", "spacing"]),
    "spacing_inf": (lambda c: ["info", str(c["spacing_inf"])], ["{spacing_inf}", "spacing"]),
    "spacing_tiny": (lambda c: ["info", str(c["spacing_tiny"])], ["{spacing_tiny}", "0.01-100 mm"]),
    "spacing_huge": (lambda c: ["info", str(c["spacing_huge"])], ["{spacing_huge}", "0.01-100 mm"]),
    "direction_nan": (lambda c: ["info", str(c["direction_nan"])], ["{direction_nan}", "direction"]),
    "direction_skew": (lambda c: ["info", str(c["direction_skew"])], ["{direction_skew}", "orthonormal"]),
    "dicom_missing": (
        lambda c: ["info", str(c["dicom_missing"])],
        ["{dicom_missing}", "missing or unevenly"],
    ),
    "dicom_uneven": (lambda c: ["info", str(c["dicom_uneven"])], ["{dicom_uneven}", "missing or unevenly"]),
    "complex": (lambda c: ["info", str(c["complex"])], ["{complex}", "complex"]),
    "int8_ct": (lambda c: _synthesize(c, "int8_ct"), ["{int8_ct}", "int8"]),
    "labels_u64": (
        lambda c: _synthesize(c, "ct", "labels_u64"),
        ["{labels_u64}", "4294967301", "does not fit"],
    ),
    "names_utf8": (
        lambda c: _synthesize(c, "ct", "labels", "--label-names", str(c["names_utf8"])),
        ["{names_utf8}", "UTF-8"],
    ),
    "names_deep": (
        lambda c: _synthesize(c, "ct", "labels", "--label-names", str(c["names_deep"])),
        ["{names_deep}", "nested"],
    ),
    "names_wide_id": (
        lambda c: _synthesize(c, "ct", "labels", "--label-names", str(c["names_wide_id"])),
        ["{names_wide_id}", "4294967301"],
    ),
    "names_fifo": (
        lambda c: _synthesize(c, "ct", "labels", "--label-names", str(c["names_fifo"])),
        ["{names_fifo}", "FIFO"],
    ),
    "image_fifo": (lambda c: ["info", str(c["image_fifo"])], ["{image_fifo}", "FIFO"]),
    "datalist_fifo": (
        lambda c: _vtt(c)[:2] + ["--real", str(c["datalist_fifo"])] + _vtt(c)[4:],
        ["{datalist_fifo}", "FIFO"],
    ),
    "loop": (lambda c: ["info", str(c["loop"])], ["{loop}", "symlink loop"]),
    "organ_id_unknown": (lambda c: _synthesize(c, "ct", "labels", "--organ", "999"), ["{labels}", "999"]),
    "seed_negative_synthesize": (lambda c: _synthesize(c, "ct", "labels", "--seed", "-1"), ["--seed", "-1"]),
    "seed_negative_vtt": (lambda c: _vtt(c, "--seed", "-3"), ["--seed", "-3"]),
    "n_synthetic_huge": (
        lambda c: _vtt(c, "--n-synthetic", "1000000"),
        ["1000000", "synthetic cases must be from 0 to 2000"],
    ),
    "n_synthetic_beyond_sources": (
        lambda c: _vtt(c, "--n-synthetic", "5"),
        ["{host_list}", "at most 1 distinct"],
    ),
    "phantom_spacing": (
        lambda c: ["phantom", "-o", str(c["out"]), "--spacing-mm", "0"],
        ["--spacing-mm", "1 to 10"],
    ),
    "phantom_spacing_nan": (
        lambda c: ["phantom", "-o", str(c["out"]), "--spacing-mm", "nan"],
        ["--spacing-mm"],
    ),
    "phantom_seed": (lambda c: ["phantom", "-o", str(c["out"]), "--seed", "-1"], ["--seed"]),
    "bench_repeat": (lambda c: ["bench", "io", "--repeat", "0"], ["--repeat", "1 to 1000"]),
    "bench_option": (lambda c: ["bench", "io", "--option", "x"], ["--option", "KEY=VALUE"]),
    "bench_suite": (lambda c: ["bench", "nosuch"], ["nosuch", "unknown benchmark suite"]),
}

# The probe writes its own peak RSS (VmHWM, which starts afresh at exec): the parent's rusage would
# also count the memory of the test process it was forked from.
RUNNER = """
import os, sys
from freetumor_core.cli import main
try:
    code = main(sys.argv[1:])
finally:
    with open("/proc/self/status") as status:
        peak = next(line for line in status if line.startswith("VmHWM")).split()[1]
    with open(os.environ["FREETUMOR_PEAK_FILE"], "w") as out:
        out.write(peak)
sys.exit(code)
"""


def _probe(arguments: list[str]) -> tuple[int, str, int]:
    """Run the command line in a fresh process: exit code, standard error, peak RSS (bytes)."""
    peak_file = tempfile.NamedTemporaryFile(suffix=".peak", delete=False).name
    env = {**os.environ, "PYTHONPATH": str(REPO), "FREETUMOR_MAX_IMAGE_MB": "1024"}
    env["FREETUMOR_PEAK_FILE"] = peak_file
    process = subprocess.Popen(
        [sys.executable, "-c", RUNNER, "--progress", "none", *arguments],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    stderr = process.stderr.read().decode(errors="replace")
    process.stderr.close()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    text = Path(peak_file).read_text()
    Path(peak_file).unlink()
    return process.returncode, stderr, int(text) * 1024 if text else usage.ru_maxrss * 1024


@pytest.mark.parametrize("name", sorted(PROBES))
def test_hostile_input_exits_2_with_bounded_memory(corpus: dict[str, Path], name: str) -> None:
    make_arguments, words = PROBES[name]
    code, stderr, peak_bytes = _probe(make_arguments(corpus))
    assert code == 2, stderr
    assert "internal error" not in stderr and "Traceback" not in stderr
    for word in words:
        expected = str(corpus[word[1:-1]]) if word.startswith("{") else word
        assert expected in stderr, (word, stderr)
    assert peak_bytes < PEAK_RSS_LIMIT_BYTES, f"{name}: peak RSS {peak_bytes / 1e9:.2f} GB"


def test_good_inputs_still_read(corpus: dict[str, Path], tmp_path: Path) -> None:
    """The checks refuse the hostile files only: an even DICOM series and the phantom pass."""
    even = _dicom_series(tmp_path / "even", [0, 2, 4, 6, 8, 10])
    code, stderr, _ = _probe(["info", str(even)])
    assert code == 0, stderr
    code, stderr, _ = _probe(["info", str(corpus["ct"])])
    assert code == 0, stderr


def test_library_checks_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="orthonormal"):
        check_geometry((1, 1, 1), (1, 0, 0, 0, 2, 0, 0, 0, 1), "x.nii")
    with pytest.raises(InputError, match=r"outside 0\.01-100 mm"):
        check_geometry((1, 1, 0.005), np.eye(3).ravel(), "x.nii")
    check_geometry((0.7, 0.7, 5.0), np.diag([1.0, -1.0, 1.0]).ravel(), "x.nii")
    path = tmp_path / "names.json"
    path.write_text('{"1": "liver", "x": "spleen"}')
    with pytest.raises(InputError, match="integer label ids") as error:
        read_name_map(path)
    assert str(path) in str(error.value)
    path.write_text('{"labels": {"1": "liver", "0": "background"}}')
    assert read_name_map(path) == {1: "liver"}
