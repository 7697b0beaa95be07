"""The FreeTumor panel's ``.ui`` file, loaded by PySide6's ``QUiLoader`` (offscreen).

Slicer's widget classes (``FreeTumorWidget``) run only inside Slicer: they need its PythonQt
bindings, CTK and the MRML widgets, which no package here provides. PySide6 stands in for Slicer's
Qt only to load the ``.ui`` file: CTK/MRML widgets become plain ``QWidget`` placeholders, but every
name and ``SlicerParameterName`` survives, so these tests check that the module code and the
parameter class agree with the file, and take a screenshot of the panel.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
from PySide6.QtCore import QLoggingCategory
from PySide6.QtUiTools import QUiLoader
from PySide6.QtWidgets import QApplication, QComboBox, QDoubleSpinBox, QSpinBox, QWidget

MODULE_DIR = Path(__file__).resolve().parents[1] / "FreeTumorSlicer"
MODULE_FILE = MODULE_DIR / "FreeTumor.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "FreeTumor.ui"


@pytest.fixture(scope="module")
def panel():
    # Placeholders for Slicer's classes are expected; keep the log quiet about them.
    QLoggingCategory.setFilterRules("qt.core.qobject.connect=false")
    app = QApplication.instance() or QApplication([])
    loader = QUiLoader()
    widget = loader.load(str(UI_FILE))
    assert widget is not None, loader.errorString()
    yield widget
    widget.deleteLater()
    app.processEvents()


@pytest.fixture(scope="module")
def module_tree() -> ast.Module:
    return ast.parse(MODULE_FILE.read_text())


def _named_children(panel: QWidget) -> dict[str, QWidget]:
    return {child.objectName(): child for child in panel.findChildren(QWidget) if child.objectName()}


def _parameter_fields(tree: ast.Module) -> dict[str, ast.expr]:
    """Field name -> annotation of the ``@parameterNodeWrapper`` class."""
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(
            getattr(decorator, "id", None) == "parameterNodeWrapper" for decorator in node.decorator_list
        ):
            return {
                item.target.id: item.annotation
                for item in node.body
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
            }
    raise AssertionError("no @parameterNodeWrapper class in FreeTumor.py")


def _module_constant(tree: ast.Module, name: str):
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"no constant {name} in FreeTumor.py")


def _within_range(annotation: ast.expr) -> tuple[float, float] | None:
    for call in ast.walk(annotation):
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "WithinRange":
            return tuple(ast.literal_eval(argument) for argument in call.args)  # type: ignore[return-value]
    return None


def test_every_ui_name_the_module_uses_exists(panel):
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE_FILE.read_text()))
    assert {"applyButton", "cancelButton", "progressBar", "statusLabel"} <= used
    missing = used - set(_named_children(panel))
    assert not missing, f"FreeTumor.py uses widgets that FreeTumor.ui lacks: {sorted(missing)}"
    assert panel.objectName() == "FreeTumor"


def test_parameter_names_match_parameter_fields(panel, module_tree):
    fields = _parameter_fields(module_tree)
    bound = {
        child.property("SlicerParameterName"): name
        for name, child in _named_children(panel).items()
        if child.property("SlicerParameterName")
    }
    unknown = set(bound) - set(fields)
    assert not unknown, f"SlicerParameterName values with no parameter field: {sorted(unknown)}"
    # Every field has a widget, except the organ, which the widget fills from the segmentation.
    assert set(fields) - set(bound) == {"organ"}
    assert "organComboBox" in re.findall(r"self\.ui\.(\w+)", MODULE_FILE.read_text())


def test_widget_ranges_and_choices_match_the_parameters(panel, module_tree):
    children = _named_children(panel)
    fields = _parameter_fields(module_tree)
    size = children["sizeComboBox"]
    assert isinstance(size, QComboBox)
    assert [size.itemText(i) for i in range(size.count())] == list(
        _module_constant(module_tree, "SIZE_CLASSES")
    )
    for widget_name, field in (
        ("countSpinBox", "count"),
        ("seedSpinBox", "seed"),
        ("marginSpinBox", "marginMm"),
    ):
        widget = children[widget_name]
        assert isinstance(widget, QSpinBox | QDoubleSpinBox)
        assert (widget.minimum(), widget.maximum()) == _within_range(fields[field]), widget_name
    organ = children["organComboBox"]
    assert organ.isEditable()
    assert [organ.itemText(i) for i in range(organ.count())] == list(
        _module_constant(module_tree, "DEFAULT_ORGANS")
    )


def test_panel_screenshot(panel, tmp_path):
    panel.resize(360, 460)
    pixmap = panel.grab()
    assert (pixmap.width(), pixmap.height()) == (360, 460)
    path = tmp_path / "freetumor_panel.png"
    assert pixmap.save(str(path), "PNG")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = pixmap.toImage()
    # Something was drawn: the panel is not one flat colour.
    colours = {image.pixel(x, y) for x in range(0, 360, 9) for y in range(0, 460, 9)}
    assert len(colours) > 3


def test_parameters_are_spec_fields_with_the_spec_ranges(module_tree):
    import sys

    from freetumor_core.synthesis import spec_fields

    sys.path.insert(0, str(MODULE_DIR))
    from FreeTumorLib.synthesis import parameter_name

    parameters = _parameter_fields(module_tree)
    spec = {parameter_name(spec_field.name): spec_field for spec_field in spec_fields()}
    # Everything but the nodes, the seed and the display choice is a TumorSpec field, by name.
    options = set(parameters) - {"inputVolume", "organSegmentation", "seed", "markCentres"}
    assert options and options <= set(spec), sorted(options - set(spec))
    for name in options:
        if spec[name].metadata["range"] is not None:
            assert _within_range(parameters[name]) == spec[name].metadata["range"], name
    assert _module_constant(module_tree, "SIZE_CLASSES") == spec["size"].metadata["choices"]
