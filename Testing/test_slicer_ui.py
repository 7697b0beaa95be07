"""The module panels' ``.ui`` files, loaded by PySide6's ``QUiLoader`` (offscreen).

Slicer's widget classes (``FreeTumorWidget``, ``FreeTumorTuringTestWidget``) run only inside
Slicer: they need its PythonQt bindings, CTK and the MRML widgets, which no package here provides.
PySide6 stands in for Slicer's Qt only to load the ``.ui`` files: CTK/MRML widgets become plain
``QWidget`` placeholders, but every name and ``SlicerParameterName`` survives, so these tests check
that each module's code and parameter class agree with its file, and that the committed panel
screenshots (``scripts/slicer_screenshots.py``) show the panels' labelled controls.
"""

from __future__ import annotations

import ast
import os
import re
import sys
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
from PySide6.QtCore import QLoggingCategory, QObject
from PySide6.QtGui import (
    QColor,
    QImage,
)
from PySide6.QtUiTools import QUiLoader
from PySide6.QtWidgets import (
    QAbstractButton,
    QApplication,
    QComboBox,
    QDoubleSpinBox,
    QLabel,
    QSpinBox,
    QWidget,
)

REPO = Path(__file__).resolve().parents[1]
SLICER_DIR = REPO / "FreeTumorSlicer"
MODULES = ("FreeTumor", "FreeTumorTuringTest")
MODULE_DIR = SLICER_DIR / "FreeTumor"
MODULE_FILE = MODULE_DIR / "FreeTumor.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "FreeTumor.ui"


def _module_file(module: str) -> Path:
    return SLICER_DIR / module / f"{module}.py"


def _load(ui_file: Path) -> QWidget:
    QLoggingCategory.setFilterRules("qt.core.qobject.connect=false")
    QApplication.instance() or QApplication([])
    loader = QUiLoader()
    widget = loader.load(str(ui_file))
    assert widget is not None, loader.errorString()
    return widget


@pytest.fixture(scope="module", params=MODULES)
def any_panel(request):
    module = request.param
    widget = _load(SLICER_DIR / module / "Resources" / "UI" / f"{module}.ui")
    yield module, widget
    widget.deleteLater()
    QApplication.processEvents()


@pytest.fixture(scope="module")
def panel():
    # Placeholders for Slicer's classes are expected (the loader logs them).
    widget = _load(UI_FILE)
    yield widget
    widget.deleteLater()
    QApplication.processEvents()


@pytest.fixture(scope="module")
def module_tree() -> ast.Module:
    return ast.parse(MODULE_FILE.read_text())


def _named_children(panel: QWidget) -> dict[str, QObject]:
    # QObject, not only QWidget: button groups are named children too (slicer.util finds them).
    return {child.objectName(): child for child in panel.findChildren(QObject) if child.objectName()}


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
    raise AssertionError("no @parameterNodeWrapper class in the module file")


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


def test_segment_widgets_match_the_parameters_and_the_job(panel, module_tree):
    sys.path.insert(0, str(SLICER_DIR))
    from FreeTumorLib.segmentation import DEFAULT_MODEL, DEVICES, OVERLAP_RANGE

    children = _named_children(panel)
    fields = _parameter_fields(module_tree)
    devices = children["segmentDeviceComboBox"]
    assert isinstance(devices, QComboBox)
    assert [devices.itemText(i) for i in range(devices.count())] == list(
        _module_constant(module_tree, "SEGMENT_DEVICES")
    )
    assert _module_constant(module_tree, "SEGMENT_DEVICES") == DEVICES
    overlap = children["segmentOverlapSpinBox"]
    assert isinstance(overlap, QDoubleSpinBox)
    assert (overlap.minimum(), overlap.maximum()) == _within_range(fields["segmentOverlap"]) == OVERLAP_RANGE
    # The lesion table's columns: what the brief of the panel promises, in this order.
    table = children["lesionTableWidget"]
    headers = [table.horizontalHeaderItem(i).text() for i in range(table.columnCount())]
    assert headers == ["organ", "diam. mm", "vol. mL", "mean HU", "score"]
    assert children["segmentOrgansSelector"].property("noneEnabled") is True, "the organs are optional"
    # The model is optional too: an empty field is the shipped demo segmenter, as the tooltip says.
    assert f"empty: the shipped demo model, {DEFAULT_MODEL}" in children["segmentModelPathLineEdit"].toolTip()
    segment_fields = {name for name in fields if name.startswith("segment")}
    assert segment_fields == {
        "segmentVolume", "segmentOrgans", "segmentModel", "segmentDevice", "segmentOverlap", "segmentTta"
    }  # fmt: skip


def test_reports_widgets_match_the_parameters(panel, module_tree):
    children = _named_children(panel)
    fields = _parameter_fields(module_tree)
    assert {name for name in fields if name.startswith("reports")} == {
        "reportsVolume", "reportsIndex", "reportsCtIndex", "reportsK", "reportsQuery"
    }  # fmt: skip
    k = children["reportsKSpinBox"]
    assert isinstance(k, QSpinBox)
    assert (k.minimum(), k.maximum()) == _within_range(fields["reportsK"])
    sys.path.insert(0, str(SLICER_DIR))
    from FreeTumorLib.reports import MAX_RESULTS

    assert k.maximum() == MAX_RESULTS
    for name, headers in (
        ("reportsMatchTableWidget", ["rank", "score", "report", "matched sentences"]),
        ("reportsSearchTableWidget", ["rank", "score", "CT"]),
    ):
        table = children[name]
        assert [table.horizontalHeaderItem(i).text() for i in range(table.columnCount())] == headers
    for button in ("reportsMatchButton", "reportsSearchButton", "reportsCancelButton"):
        assert isinstance(children[button], QAbstractButton) and not children[button].isEnabled()


def test_every_ui_name_each_module_uses_exists(any_panel):
    module, panel = any_panel
    source = _module_file(module).read_text()
    used = set(re.findall(r"self\.ui\.(\w+)", source))
    # Names built at run time (confidence1RadioButton ... 5) count too.
    if "confidence{level}RadioButton" in source:
        used |= {f"confidence{level}RadioButton" for level in range(1, 6)}
    missing = used - set(_named_children(panel))
    assert used and not missing, f"{module}.py uses widgets that {module}.ui lacks: {sorted(missing)}"
    assert panel.objectName() == module


def test_every_parameter_name_is_a_parameter_of_its_module(any_panel):
    module, panel = any_panel
    fields = _parameter_fields(ast.parse(_module_file(module).read_text()))
    bound = {
        child.property("SlicerParameterName")
        for child in _named_children(panel).values()
        if child.property("SlicerParameterName")
    }
    assert bound and bound <= set(fields), sorted(bound - set(fields))
    if module == "FreeTumorTuringTest":
        assert bound == set(fields), "every reader and organiser setting has its widget"


def _ink_regions(panel: QWidget) -> dict[str, tuple[int, int, int, int]]:
    """Panel-relative rectangles of the visible labelled controls (labels and buttons with text)."""
    regions = {}
    for child in panel.findChildren(QWidget):
        if isinstance(child, QLabel | QAbstractButton) and child.text().strip() and child.isVisibleTo(panel):
            top_left = child.mapTo(panel, child.rect().topLeft())
            name = child.objectName() or child.text()
            regions[name] = (top_left.x(), top_left.y(), child.width(), child.height())
    return regions


def _has_ink(image: QImage, region: tuple[int, int, int, int]) -> bool:
    """Text drawn in the region: at least 5 pixels whose lightness differs from the region's
    background (its most common lightness) by more than 40 of 255 (grey text of a disabled button
    counts; a flat fill does not)."""
    x0, y0, width, height = region
    lightness = [
        QColor(image.pixel(x, y)).lightness()
        for y in range(max(0, y0), min(image.height(), y0 + height))
        for x in range(max(0, x0), min(image.width(), x0 + width))
    ]
    if not lightness:
        return False
    background = max(set(lightness), key=lightness.count)
    return sum(abs(value - background) > 40 for value in lightness) >= 5


def test_screenshots_show_the_labelled_controls():
    sys.path.insert(0, str(REPO / "scripts"))
    import slicer_screenshots

    for module, size in slicer_screenshots.MODULES.items():
        path = slicer_screenshots.SCREENSHOTS / f"{module}.png"
        committed = QImage(str(path))
        assert not committed.isNull(), f"{path} is missing: run scripts/slicer_screenshots.py"
        assert (committed.width(), committed.height()) == size, path
        panel = slicer_screenshots.load_panel(module)
        panel.show()
        QApplication.processEvents()
        regions = _ink_regions(panel)
        fresh = panel.grab().toImage()
        panel.close()
        assert len(regions) >= 5, regions
        # The check itself: a fresh grab passes it, a blank image of the same size does not.
        blank = QImage(committed.size(), QImage.Format.Format_RGB32)
        blank.fill(QColor("white"))
        for name, region in regions.items():
            assert _has_ink(fresh, region), f"{module}: fresh grab shows no '{name}'"
            assert not _has_ink(blank, region)
            assert _has_ink(committed, region), f"{path}: '{name}' not shown (re-run the screenshot script)"
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for module in slicer_screenshots.MODULES:
        assert f"Resources/Screenshots/{module}.png" in readme


def test_parameters_are_spec_fields_with_the_spec_ranges(module_tree):
    from freetumor_core.synthesis import spec_fields

    sys.path.insert(0, str(SLICER_DIR))
    from FreeTumorLib.synthesis import parameter_name

    parameters = _parameter_fields(module_tree)
    spec = {parameter_name(spec_field.name): spec_field for spec_field in spec_fields()}
    # Everything but the nodes, the seed, the display choice and the segment* settings (the
    # segmentation's) and the reports* settings is a TumorSpec field, by name.
    synthesis = {name for name in parameters if not name.startswith(("segment", "reports"))}
    options = synthesis - {"inputVolume", "organSegmentation", "seed", "markCentres"}
    assert options and options <= set(spec), sorted(options - set(spec))
    for name in options:
        if spec[name].metadata["range"] is not None:
            assert _within_range(parameters[name]) == spec[name].metadata["range"], name
    assert _module_constant(module_tree, "SIZE_CLASSES") == spec["size"].metadata["choices"]
