"""Screenshots of the Slicer module panels, from their ``.ui`` files (PySide6, offscreen).

Writes ``Resources/Screenshots/<Module>.png`` for each module. Slicer's CTK and MRML widgets are
not available outside Slicer: ``QUiLoader`` turns them into plain placeholders (node selectors and
path fields show as empty space, section headers lose their title), while every Qt widget (labels,
buttons, spin boxes, the score table) is drawn as Slicer draws it.

    python scripts/slicer_screenshots.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parents[1]
MODULES = {
    # module name: panel size in pixels (width, height)
    "FreeTumor": (380, 1240),
    "FreeTumorTuringTest": (380, 640),
}
SCREENSHOTS = REPO / "Resources" / "Screenshots"


def ui_file(module: str) -> Path:
    return REPO / "FreeTumorSlicer" / module / "Resources" / "UI" / f"{module}.ui"


def load_panel(module: str):
    """The module's panel loaded from its ``.ui`` file, at its screenshot size, with example input."""
    from PySide6.QtCore import QLoggingCategory
    from PySide6.QtUiTools import QUiLoader
    from PySide6.QtWidgets import QApplication, QLineEdit, QWidget

    QLoggingCategory.setFilterRules("qt.core.qobject.connect=false")
    QApplication.instance() or QApplication(sys.argv[:1])
    loader = QUiLoader()
    panel = loader.load(str(ui_file(module)))
    if panel is None:
        raise RuntimeError(f"{ui_file(module)}: {loader.errorString()}")
    reader = panel.findChild(QLineEdit, "readerNameLineEdit")
    if reader is not None:
        reader.setText("alice")
    finished = panel.findChild(QWidget, "finishedFrame")
    if finished is not None:
        finished.hide()  # the panel shows it only after the last case
    panel.resize(*MODULES[module])
    return panel


def grab(module: str):
    """The panel's pixels as a ``QImage``."""
    from PySide6.QtWidgets import QApplication

    panel = load_panel(module)
    panel.show()
    QApplication.processEvents()
    image = panel.grab().toImage()
    panel.close()
    panel.deleteLater()
    return image


def main() -> int:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for module in MODULES:
        path = SCREENSHOTS / f"{module}.png"
        temporary = path.with_name(f".{path.name}.tmp.png")
        if not grab(module).save(str(temporary), "PNG"):
            raise RuntimeError(f"could not write {temporary}")
        temporary.replace(path)
        print(f"{path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
