"""Engines behind one entry point, and ``TumorSpec`` as the one definition of every option: the
registry and dispatch, spec files, and the ``synthesize`` flags derived from the fields."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from freetumor_core import InputError, LabelMap, TumorSpec, read_labels, read_volume, synthesize
from freetumor_core.cli import build_parser, main
from freetumor_core.records import TumorRecord
from freetumor_core.synthesis import available_engines, engines, get_engine, register_engine, spec_fields
from freetumor_core.synthesis.flow import PlacingEngine

REPO = Path(__file__).resolve().parents[1]
LIVER_ID = 5
# Arguments of `freetumor synthesize` that are not tumor options.
NOT_SPEC = {
    "help",
    "progress",
    "ct",
    "organs",
    "label_names",
    "spec",
    "seed",
    "allow_non_hu",
    "no_snapshot",
    "output",
}


class FlatEngine(PlacingEngine):
    """A second engine: the shared placement, and a flat -60 HU tumor as its only painting."""

    name = "flat"

    def paint(self, canvas, shape, centre, requested_mm):
        start = centre - shape.centre_index
        box = tuple(slice(a, a + n) for a, n in zip(start, shape.box_shape, strict=True))
        canvas.ct_out[box][shape.mask] -= 60
        canvas.labels_out[box][shape.mask] = canvas.tumor_id
        return shape, start

    def record(self, canvas, painted):
        shape, start = painted
        voxels = np.argwhere(shape.mask) + start
        volume_ml = len(voxels) * canvas.ct.voxel_volume_ml
        centre = tuple(float(c) for c in canvas.ct.index_to_ras(voxels.mean(axis=0)))
        diameter_mm = float(np.cbrt(6.0 * volume_ml * 1000.0 / np.pi))
        mean_hu = float(canvas.ct_out[tuple(voxels.T)].mean())
        return TumorRecord(
            canvas.organ, centre, diameter_mm, volume_ml, mean_hu, -60.0, self.name, canvas.tumor_id
        )


@pytest.fixture
def registry(monkeypatch):
    """The engine registry, restored after the test."""
    monkeypatch.setattr(engines, "_FACTORIES", dict(engines._FACTORIES))
    monkeypatch.setattr(engines, "_ENGINES", dict(engines._ENGINES))


def test_registry_lists_and_makes_engines_once(registry):
    assert "handcrafted" in available_engines()
    handcrafted = get_engine("handcrafted")
    assert handcrafted.name == "handcrafted" and get_engine("handcrafted") is handcrafted
    made = []
    register_engine("flat", lambda: made.append(1) or FlatEngine())
    assert available_engines() == tuple(sorted({"adversarial", "flat", "handcrafted"}))
    assert get_engine("flat") is get_engine("flat") and made == [1]


def test_dispatch_by_spec_engine_shares_placement(registry, phantom):
    ct, labels = phantom
    register_engine("flat", FlatEngine)
    result = synthesize(ct, labels, TumorSpec(engine="flat", size="small", count=2, margin_mm=4.0), seed=2)
    assert [record.engine for record in result.tumors] == ["flat", "flat"]
    tumor_id = result.tumors[0].label_id
    assert result.labels.names[tumor_id] == "liver_tumor"
    assert (result.labels.array == tumor_id).sum() == result.tumor_mask.sum() > 0
    assert (labels.array[result.tumor_mask] == LIVER_ID).all(), "tumors only in the liver"
    changed = result.ct.array != ct.array
    assert (changed == result.tumor_mask).all() and (
        result.ct.array[changed] - ct.array[changed] == -60
    ).all()
    # The shared flow places the same tumors whatever the painting: the first tumor of the
    # handcrafted engine with the same seed lies where the flat engine's first tumor lies.
    handcrafted = synthesize(ct, labels, TumorSpec(size="small", count=1, margin_mm=4.0), seed=2)
    flat = synthesize(ct, labels, TumorSpec(engine="flat", size="small", count=1, margin_mm=4.0), seed=2)
    assert (handcrafted.tumor_mask == flat.tumor_mask).all()


def test_default_engine_is_handcrafted_and_reproducible(phantom):
    ct, labels = phantom
    default = synthesize(ct, labels, TumorSpec(size="tiny"), seed=4)
    named = synthesize(ct, labels, TumorSpec(size="tiny", engine="handcrafted"), seed=4)
    assert np.array_equal(default.ct.array, named.ct.array)
    assert np.array_equal(default.labels.array, named.labels.array)
    assert default.tumors == named.tumors and default.tumors[0].engine == "handcrafted"


def _copies(ct, labels):
    copy = ct.like(ct.array.copy())
    return copy, LabelMap(copy.like(labels.array.copy()), dict(labels.names))


@pytest.mark.parametrize("engine", ["handcrafted", "adversarial"])
def test_in_place_paints_the_inputs_with_the_same_voxels(phantom, engine):
    ct, labels = phantom
    spec = TumorSpec(engine=engine, size="small", count=2, allow_shrink=True)
    copied = synthesize(ct, labels, spec, seed=11)
    own_ct, own_labels = _copies(ct, labels)
    painted = synthesize(own_ct, own_labels, spec, seed=11, in_place=True)
    assert painted.ct.array is own_ct.array and painted.labels.array is own_labels.array
    assert np.array_equal(own_ct.array, copied.ct.array) and np.array_equal(
        own_labels.array, copied.labels.array
    )
    assert [t.to_dict() for t in painted.tumors] == [t.to_dict() for t in copied.tumors]
    assert np.array_equal(painted.tumor_mask, copied.tumor_mask)
    assert not np.array_equal(own_ct.array, ct.array)  # the inputs were painted, the originals were not


def test_in_place_refusals(phantom):
    ct, labels = phantom
    own_ct, own_labels = _copies(ct, labels)
    with pytest.raises(InputError, match="quality control"):
        synthesize(own_ct, own_labels, TumorSpec(qc="segmenter_demo"), seed=1, in_place=True)
    shifted = LabelMap(own_labels.volume.like(own_labels.array), dict(labels.names))
    shifted.volume.origin = tuple(o + 0.5 for o in ct.origin)
    with pytest.raises(InputError, match="on the CT's grid exactly"):
        synthesize(own_ct, shifted, TumorSpec(), seed=1, in_place=True)
    floats = LabelMap(own_ct.like(own_labels.array.astype(np.float32)), dict(labels.names))
    with pytest.raises(InputError, match="cannot hold the tumor label"):
        synthesize(own_ct, floats, TumorSpec(), seed=1, in_place=True)
    own_ct.array.flags.writeable = False
    with pytest.raises(InputError, match="writable"):
        synthesize(own_ct, own_labels, TumorSpec(), seed=1, in_place=True)
    assert np.array_equal(own_ct.array, ct.array) and np.array_equal(own_labels.array, labels.array)


def test_unknown_engine_lists_the_available_ones(phantom, tmp_path, monkeypatch):
    ct, labels = phantom
    with pytest.raises(
        InputError, match=r"unknown synthesis engine 'gan'; available: adversarial, handcrafted"
    ):
        synthesize(ct, labels, TumorSpec(engine="gan"))
    # Without a shipped default model, the adversarial engine needs one named.
    monkeypatch.setattr("freetumor_core.models.shipped.SHIPPED_MODELS_DIR", tmp_path)
    with pytest.raises(InputError, match=r"engine 'adversarial' needs a model folder"):
        TumorSpec(engine="adversarial").validated()
    with pytest.raises(InputError, match=r"engine 'handcrafted' takes no model"):
        TumorSpec(model="models/freetumor").validated()
    with pytest.raises(InputError, match="unknown synthesis engine"):
        get_engine("gan")


def test_nothing_outside_synthesis_imports_an_engine_module():
    offenders = []
    for path in [*(REPO / "freetumor_core").rglob("*.py"), *(REPO / "FreeTumorSlicer").rglob("*.py"),
                 *(REPO / "scripts").rglob("*.py")]:  # fmt: skip
        if path.parent.name == "synthesis" and path.parent.parent.name == "freetumor_core":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("synthesis.engine"):
                offenders.append(str(path.relative_to(REPO)))
            if (
                isinstance(node, ast.ImportFrom)
                and node.module == "synthesis"
                and "engine" in {alias.name for alias in node.names}
            ):
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


# -- the spec and its file ----------------------------------------------------------------------
def test_every_field_is_defined_and_documented():
    docs = (REPO / "docs" / "synthesis.md").read_text()
    for spec_field in spec_fields():
        metadata = spec_field.metadata
        assert metadata["kind"] in (bool, int, float, str) and metadata["help"], spec_field.name
        assert f"`{spec_field.name}`" in docs, f"docs/synthesis.md does not describe {spec_field.name}"
        if spec_field.name.endswith(("_mm", "_hu")):
            assert metadata["unit"] == {"mm": "mm", "hu": "HU"}[spec_field.name.rsplit("_", 1)[1]]
    assert "seed" not in {spec_field.name for spec_field in spec_fields()}


def test_spec_json_round_trip(tmp_path):
    spec = TumorSpec(organ="kidney", diameter_mm=22.5, count=3, margin_mm=2.0, avoid_margin_mm=4.0,
                     irregularity=0.4, lobulation=0.3, necrosis=True, rim=True, mass_effect=True,
                     allow_shrink=True, contrast_hu=-35.0)  # fmt: skip
    path = spec.to_json(tmp_path / "spec.json")
    data = json.loads(path.read_text())
    assert list(data) == [spec_field.name for spec_field in spec_fields()]
    assert TumorSpec.from_json(path) == spec
    assert TumorSpec.from_dict(spec.to_dict()) == spec
    # A hand-written file may give any subset; whole numbers are fine where numbers go.
    assert TumorSpec.from_dict({"organ": "liver", "margin_mm": 5}) == TumorSpec(margin_mm=5.0)
    assert isinstance(TumorSpec.from_dict({"margin_mm": 5}).margin_mm, float)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"organ": "liver", "colour": "red"}, "unknown field 'colour' in the tumor spec"),
        ({"count": "2"}, "count must be an integer, got '2'"),
        ({"count": 2.5}, "count must be an integer, got 2.5"),
        ({"necrosis": 1}, "necrosis must be true or false, got 1"),
        ({"margin_mm": 80}, "margin_mm must be between 0 and 50 mm, got 80"),
        ({"diameter_mm": 0}, r"diameter_mm must be in \(0, 150\] mm, got 0"),
        ({"contrast_hu": -900}, "contrast_hu must be between -400 and 400 HU"),
        ({"size": "huge"}, "unknown size class 'huge'"),
        ({"organ": None}, "organ must be given"),
        ({"size": "small", "diameter_mm": 12}, "either a size class or diameter_mm"),
        ({"engine": "adversarial", "model": 3}, "model must be a string"),
        (["liver"], "must be a JSON object"),
    ],
)
def test_bad_spec_values_name_the_file_and_field(tmp_path, content, message):
    path = tmp_path / "bad_spec.json"
    path.write_text(json.dumps(content))
    with pytest.raises(InputError, match=message) as raised:
        TumorSpec.from_json(path)
    assert raised.value.path == str(path)


def test_spec_file_not_json_or_missing(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text('{"organ": "liver",')
    with pytest.raises(InputError, match="not valid JSON") as raised:
        TumorSpec.from_json(path)
    assert raised.value.path == str(path)
    with pytest.raises(InputError, match="tumor spec file not found"):
        TumorSpec.from_json(tmp_path / "missing.json")


# -- flags and fields ---------------------------------------------------------------------------
def _synthesize_parser():
    commands = next(action for action in build_parser()._actions if action.dest == "command")
    return commands.choices["synthesize"]


def test_every_field_has_a_flag_and_every_flag_a_field():
    actions = {action.dest: action for action in _synthesize_parser()._actions}
    fields = {spec_field.name: spec_field for spec_field in spec_fields()}
    assert set(actions) - NOT_SPEC == set(fields), "flags without fields, or fields without flags"
    for name, spec_field in fields.items():
        assert "--" + name.replace("_", "-") in actions[name].option_strings
        if spec_field.metadata["choices"]:
            assert list(actions[name].choices) == list(spec_field.metadata["choices"])
        if spec_field.metadata["kind"] is bool:
            assert "--no-" + name.replace("_", "-") in actions[name].option_strings


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory, phantom):
    from freetumor_core import write_volume

    ct, labels = phantom
    folder = tmp_path_factory.mktemp("phantom")
    return write_volume(ct, folder / "ct.nii.gz"), labels.save(folder / "labels.nii.gz")


def _run(phantom_files, output: Path, *options: str) -> int:
    ct_path, labels_path = phantom_files
    return main(["synthesize", str(ct_path), "--organs", str(labels_path), "--no-snapshot", "--progress",
                 "none", "-o", str(output), *options])  # fmt: skip


def _outputs(folder: Path):
    ct = read_volume(folder / "ct.nii.gz").array
    labels = read_labels(folder / "labels.nii.gz")
    return ct, labels.array, labels.names, json.loads((folder / "tumors.json").read_text())


def test_spec_file_gives_the_same_outputs_as_flags(phantom_files, tmp_path):
    spec = TumorSpec(organ="liver", size="medium", count=2, margin_mm=4.0, lobulation=0.5, necrosis=True,
                     rim=True, contrast_hu=-45.0)  # fmt: skip
    spec_path = spec.to_json(tmp_path / "spec.json")
    flags = ["--organ", "liver", "--size", "medium", "--count", "2", "--margin-mm", "4",
             "--lobulation", "0.5", "--necrosis", "--rim", "--contrast-hu", "-45"]  # fmt: skip
    assert _run(phantom_files, tmp_path / "flags", *flags, "--seed", "5") == 0
    assert _run(phantom_files, tmp_path / "file", "--spec", str(spec_path), "--seed", "5") == 0
    by_flags, by_file = _outputs(tmp_path / "flags"), _outputs(tmp_path / "file")
    assert np.array_equal(by_flags[0], by_file[0]) and np.array_equal(by_flags[1], by_file[1])
    assert by_flags[2:] == by_file[2:]
    assert len(by_file[3]["tumors"]) == 2 and all(t["extra"]["necrosis"] for t in by_file[3]["tumors"])


def test_flags_override_the_spec_file(phantom_files, tmp_path):
    spec_path = TumorSpec(size="medium", count=3, necrosis=True).to_json(tmp_path / "spec.json")
    options = ["--spec", str(spec_path), "--count", "1", "--diameter-mm", "12", "--no-necrosis"]
    assert _run(phantom_files, tmp_path / "out", *options) == 0
    (record,) = _outputs(tmp_path / "out")[3]["tumors"]
    # --diameter-mm replaces the file's size class (they are alternatives).
    assert record["extra"]["requested_diameter_mm"] == 12.0 and not record["extra"]["necrosis"]


def test_bad_spec_file_exits_2_naming_file_and_field(phantom_files, tmp_path):
    ct_path, labels_path = phantom_files
    spec_path = tmp_path / "bad_spec.json"
    spec_path.write_text(json.dumps({"organ": "liver", "margin_mm": -2}))
    process = subprocess.run(
        [sys.executable, "-m", "freetumor_core", "synthesize", str(ct_path), "--organs", str(labels_path),
         "--spec", str(spec_path), "-o", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert process.returncode == 2
    assert f"{spec_path}: margin_mm must be between 0 and 50 mm, got -2.0" in process.stderr
    assert not (tmp_path / "out").exists()
