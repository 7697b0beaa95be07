"""The module files (``FreeTumor.py``, ``FreeTumorTuringTest.py``) import and their console logic
runs, outside Slicer; the extension's CMake files and index entry name both modules.

What is real here and what stands in: MRML, VTK and ``slicer.util`` are the real ones from PyPI's
``slicer-core``; ``FreeTumorLib`` and the core are real. Stand-ins replace only what exists only in
the Slicer application: **Qt** (``qt``), **CTK** (``ctk``) and **``slicer.app``** (with
``slicer.mrmlScene``, a plain MRML scene), and, because ``slicer-core`` does not ship them, the
application's Python helpers the module files import: ``slicer.ScriptedLoadableModule`` (bare base
classes), ``slicer.parameterNodeWrapper`` (a decorator that leaves the class as written) and
``slicer.i18n`` (``tr`` returns its text). ``vtkSlicerSegmentationsModuleMRMLPython`` is the real
segmentation node class of ``slicer-core`` under the module name Slicer gives it. The stand-in
logic base class refuses ``getParameterNode()``, so these tests also show that the console methods
leave the panel's parameter node alone.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import types
from pathlib import Path

import pytest
import slicer

REPO = Path(__file__).resolve().parents[1]
SLICER_DIR = REPO / "FreeTumorSlicer"
MODULES = ("FreeTumor", "FreeTumorTuringTest")
sys.path.insert(0, str(SLICER_DIR))


class _ParameterNodeTouched(AssertionError):
    pass


def _stand_ins() -> dict[str, types.ModuleType]:
    qt = types.ModuleType("qt")
    qt.__doc__ = "stand-in for Slicer's PythonQt bindings"
    ctk = types.ModuleType("ctk")
    ctk.__doc__ = "stand-in for CTK"

    base = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent):
            self.parent = parent

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            self.parent = parent

    class ScriptedLoadableModuleLogic:
        def getParameterNode(self):
            raise _ParameterNodeTouched("the console logic touched the panel's parameter node")

    class ScriptedLoadableModuleTest:
        def delayDisplay(self, message, msec=0):
            pass

    for cls in (
        ScriptedLoadableModule,
        ScriptedLoadableModuleWidget,
        ScriptedLoadableModuleLogic,
        ScriptedLoadableModuleTest,
    ):
        setattr(base, cls.__name__, cls)

    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    wrapper.parameterNodeWrapper = lambda cls: cls
    for name in ("Choice", "Default", "WithinRange"):
        setattr(wrapper, name, type(name, (), {"__init__": lambda self, *args: setattr(self, "args", args)}))

    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text

    segmentations = types.ModuleType("vtkSlicerSegmentationsModuleMRMLPython")
    segmentations.vtkMRMLSegmentationNode = slicer.vtkMRMLSegmentationNode  # the real class
    return {
        "qt": qt,
        "ctk": ctk,
        "slicer.ScriptedLoadableModule": base,
        "slicer.parameterNodeWrapper": wrapper,
        "slicer.i18n": i18n,
        "vtkSlicerSegmentationsModuleMRMLPython": segmentations,
    }


@pytest.fixture(scope="module")
def modules():
    """Both module files, imported as Slicer imports them (each as a top-level module)."""
    saved = {name: sys.modules.get(name) for name in _stand_ins()}
    sys.modules.update(_stand_ins())
    had_app = hasattr(slicer, "app")
    slicer.app = types.SimpleNamespace(stand_in="slicer.app")  # what the application object would be
    slicer.mrmlScene = slicer.vtkMRMLScene()
    loaded = {}
    try:
        for module in MODULES:
            spec = importlib.util.spec_from_file_location(module, SLICER_DIR / module / f"{module}.py")
            loaded[module] = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(loaded[module])
        yield loaded
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous
        if not had_app:
            del slicer.app
        del slicer.mrmlScene


def test_module_files_import_with_stand_ins_only_for_qt_ctk_and_the_app(modules):
    for name, module in modules.items():
        for suffix in ("", "Widget", "Logic", "Test", "ParameterNode"):
            assert hasattr(module, f"{name}{suffix}"), f"{name}.py has no class {name}{suffix}"
        # Slicer's self-test entry point exists for runs inside Slicer.
        assert callable(getattr(module, f"{name}Test").runTest)
        info = types.SimpleNamespace()
        getattr(module, name)(info)
        assert info.title and info.helpText and info.categories == ["Segmentation"]
    # The shared library is one package for both modules.
    assert modules["FreeTumor"].dependencies is modules["FreeTumorTuringTest"].dependencies
    # The real MRML classes, not stand-ins, are what the parameters refer to.
    annotations = modules["FreeTumor"].FreeTumorParameterNode.__annotations__
    assert annotations["inputVolume"] is slicer.vtkMRMLScalarVolumeNode


BLOCKED_IMPORT = """
import importlib.abc, importlib.util, json, sys
sys.path.insert(0, {testing!r})


class Blocked(importlib.abc.MetaPathFinder):
    # As on a fresh Slicer: neither torch nor the core is installed.
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "freetumor_core"):
            raise ModuleNotFoundError(name)
        return None


sys.meta_path.insert(0, Blocked())
import test_slicer_modules as t
import slicer

sys.modules.update(t._stand_ins())
slicer.app = object()
for module in t.MODULES:
    spec = importlib.util.spec_from_file_location(module, t.SLICER_DIR / module / (module + ".py"))
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
from FreeTumorLib import dependencies

loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("torch", "freetumor_core"))
print(json.dumps({{"missing": dependencies.missing(), "loaded": loaded}}))
"""


def test_module_files_load_before_the_core_is_installed(tmp_path):
    import subprocess

    script = tmp_path / "fresh_slicer.py"
    script.write_text(BLOCKED_IMPORT.format(testing=str(Path(__file__).resolve().parent)))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"missing": ["torch", "freetumor_core"], "loaded": []}


@pytest.mark.slow
def test_console_synthesis_on_nodes_and_a_datalist_leaves_the_parameter_node_alone(
    modules, phantom, tmp_path
):
    from FreeTumorLib import nodes

    from freetumor_core.volume import read_volume, write_volume

    logic = modules["FreeTumor"].FreeTumorLogic()
    with pytest.raises(_ParameterNodeTouched):
        logic.getParameterNode()  # what the panel uses; the methods below must not
    ct, labels = phantom
    scene = slicer.vtkMRMLScene()
    ct_node = nodes.add_volume_node(scene, ct, "phantom")
    organs = nodes.add_segmentation_node(scene, labels, "phantom organs", reference=ct_node)
    outputs = logic.run(ct_node, organs, organ="liver", size="small", count=1, seed=2, timeoutS=300)
    assert outputs.volume.GetName() == "phantom synthetic" and len(outputs.records) == 1

    write_volume(ct, tmp_path / "hosts" / "ct.nii.gz")
    labels.save(tmp_path / "hosts" / "labels.nii.gz")
    entry = {"image": "hosts/ct.nii.gz", "label": "hosts/labels.nii.gz"}
    (tmp_path / "hosts.json").write_text(json.dumps({"training": [entry, entry]}))
    results = logic.synthesizeDatalist(
        tmp_path / "hosts.json", tmp_path / "out", organ="liver", size="small", count=1, seed=2, timeoutS=300
    )
    assert [Path(r["output"]).name for r in results] == ["000_ct", "001_ct"]
    assert [r["seed"] for r in results] == [2, 3]
    # Seed 2 through the datalist is the same tumor as seed 2 on the nodes.
    assert results[0]["tumors"][0].diameter_mm == pytest.approx(outputs.records[0].diameter_mm)
    first = read_volume(Path(results[0]["output"]) / "ct.nii.gz").array
    second = read_volume(Path(results[1]["output"]) / "ct.nii.gz").array
    assert (first != ct.array).any() and (first != second).any()


@pytest.mark.slow
def test_console_segmentation_on_nodes_leaves_the_parameter_node_alone(modules, tmp_path):
    from FreeTumorLib import nodes
    from test_slicer_segment import intensity_model, painted_liver

    logic = modules["FreeTumor"].FreeTumorLogic()
    ct, labels, centre_ras = painted_liver()
    scene = slicer.vtkMRMLScene()
    ct_node = nodes.add_volume_node(scene, ct, "ct")
    organs = nodes.add_segmentation_node(scene, labels, "ct organs", reference=ct_node)
    model = intensity_model(tmp_path / "model")
    found = logic.segment(ct_node, model, organSegmentation=organs, device="cpu", timeoutS=300)
    assert found.segmentation.GetName() == "ct segmentation" and found.table.GetName() == "ct lesions"
    [lesion] = found.lesions
    assert lesion.record.organ == "liver" and found.table.GetNumberOfRows() == 1
    # What a click in the lesion table does: every slice view of the scene centres on the lesion.
    view = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSliceNode")
    view.SetLayoutName("Red")
    logic.centreViewsOn(lesion.record.centre_ras_mm)
    position = [view.GetSliceToRAS().GetElement(i, 3) for i in range(3)]
    assert position == pytest.approx(list(centre_ras), abs=1.0)
    # No model: the shipped demo segmenter, from the console too.
    default = logic.segment(ct_node, device="cpu", timeoutS=300)
    assert default.table.GetName() == "ct lesions" and default.table.GetNumberOfRows() == len(default.lesions)
    assert all(lesion.record.engine == "segmenter" for lesion in default.lesions)


def test_console_study_build_reading_and_scoring(modules, shared_data, tmp_path):
    from conftest import real_lesion_entries

    from freetumor_core.cli import main as cli_main
    from freetumor_core.phantom import make_phantom
    from freetumor_core.volume import write_volume

    (tmp_path / "real.json").write_text(json.dumps({"training": real_lesion_entries(shared_data)[:1]}))
    ct, labels = make_phantom(seed=0)
    write_volume(ct, tmp_path / "phantom" / "ct.nii.gz")
    labels.save(tmp_path / "phantom" / "labels.nii.gz")
    hosts = {"training": [{"image": "phantom/ct.nii.gz", "label": "phantom/labels.nii.gz"}]}
    (tmp_path / "hosts.json").write_text(json.dumps(hosts))
    logic = modules["FreeTumorTuringTest"].FreeTumorTuringTestLogic()
    study = logic.buildStudy(
        tmp_path / "real.json",
        tmp_path / "hosts.json",
        tmp_path / "study",
        tmp_path / "key.json",
        nReal=2,
        nSynthetic=2,
        seed=4,
        allowLeaky=True,
    )
    assert len(study.case_ids) == 4
    session = logic.startReading(slicer.vtkMRMLScene(), tmp_path / "study", "console")
    while session.show_next() is not None:
        session.answer("synthetic", 2)
    scores = logic.scoreStudy(tmp_path / "study", tmp_path / "key.json")
    arguments = ["vtt", "score", str(tmp_path / "study"), "--key", str(tmp_path / "key.json")]
    assert cli_main([*arguments, "--json", str(tmp_path / "cli.json")]) == 0
    assert json.loads(json.dumps(scores)) == json.loads((tmp_path / "cli.json").read_text())
    assert scores["pooled"]["sensitivity"] == 1.0 and scores["pooled"]["specificity"] == 0.0


def test_dependencies_ask_first_and_say_when_offline(monkeypatch):
    from FreeTumorLib import dependencies

    assert dependencies.missing() == []
    assert dependencies.ensure_core() is True
    asked, installed = [], []
    util = types.SimpleNamespace(
        confirmOkCancelDisplay=lambda text, title: asked.append(text) or answer[0],
        pip_install=installed.append,
        WaitCursor=lambda: __import__("contextlib").nullcontext(),
    )
    answer = [False]
    monkeypatch.setitem(sys.modules, "slicer", types.SimpleNamespace(app=object(), util=util))
    monkeypatch.setattr(dependencies, "missing", lambda: ["freetumor_core"])
    assert dependencies.ensure_core() is False
    assert "the FreeTumor core" in asked[0] and installed == []
    answer[0] = True
    # A port where nothing listens: the package index is "unreachable".
    monkeypatch.setattr(dependencies, "PACKAGE_INDEX", ("127.0.0.1", 9))
    with pytest.raises(RuntimeError, match="offline"):
        dependencies.ensure_core()
    assert installed == []


def _cmake(path: Path) -> str:
    return re.sub(r"#.*", "", path.read_text())


def test_extension_cmake_and_index_entry_name_both_modules():
    top = _cmake(REPO / "CMakeLists.txt")
    assert re.findall(r"add_subdirectory\((FreeTumorSlicer/\w+)\)", top) == [
        "FreeTumorSlicer/FreeTumorLib",
        "FreeTumorSlicer/FreeTumor",
        "FreeTumorSlicer/FreeTumorTuringTest",
    ]
    depends = re.search(r'set\(EXTENSION_DEPENDS "([^"]*)"\)', top).group(1).split()
    screenshots = re.search(r'set\(EXTENSION_SCREENSHOTURLS "([^"]*)"\)', top).group(1).split()
    assert [url.rsplit("/main/", 1)[1] for url in screenshots] == [
        f"Resources/Screenshots/{module}.png" for module in MODULES
    ]
    assert all((REPO / url.rsplit("/main/", 1)[1]).is_file() for url in screenshots)
    icon = re.search(r'set\(EXTENSION_ICONURL "([^"]*)"\)', top).group(1)
    assert (REPO / icon.rsplit("/main/", 1)[1]).is_file()
    for module in MODULES:
        folder = SLICER_DIR / module
        text = _cmake(folder / "CMakeLists.txt")
        assert re.search(rf"set\(MODULE_NAME {module}\)", text)
        assert "slicerMacroBuildScriptedModule(" in text and "slicer_add_python_unittest(" in text
        for resource in ("Resources/Icons", "Resources/UI"):
            assert list((folder / resource).iterdir()), f"{folder / resource} is empty"
        assert (folder / "Resources" / "Icons" / f"{module}.png").is_file()
        assert (folder / "Resources" / "UI" / f"{module}.ui").is_file()
    library = _cmake(SLICER_DIR / "FreeTumorLib" / "CMakeLists.txt")
    listed = set(re.findall(r"(\w+\.py)", library))
    assert listed == {path.name for path in (SLICER_DIR / "FreeTumorLib").glob("*.py")}

    entry = json.loads((REPO / "FreeTumor.json").read_text())
    # The catalog entry schema (v1.0.1) allows no other keys, so modules are named by the CMake
    # files of build_subdirectory, not in the entry.
    allowed = {"$schema", "build_dependencies", "build_subdirectory", "category", "enabled", "scm_revision"}
    allowed |= {"scm_type", "scm_url", "tier"}
    assert set(entry) <= allowed and {"$schema", "category", "scm_url"} <= set(entry)
    assert "catalog-entry-schema-v1.0.1" in entry["$schema"]
    assert entry["category"] == "Segmentation"
    assert entry["build_dependencies"] == depends == ["PyTorch"]
    built = _cmake(REPO / entry["build_subdirectory"] / "CMakeLists.txt")
    assert all(f"add_subdirectory(FreeTumorSlicer/{module})" in built for module in MODULES)
    assert entry["scm_url"].endswith(".git")
