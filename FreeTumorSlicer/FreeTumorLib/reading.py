"""A reader's pass through a Visual Turing Test study, shown as MRML nodes (no GUI, no key).

:class:`ReaderSession` is what the *FreeTumor Turing Test* panel drives, and what a script can
drive the same way::

    session = ReaderSession(scene, "study", "alice")
    while (case := session.show_next()) is not None:
        ...  # look at case.volume_node, centred on case.centre_ras_mm
        session.answer("synthetic", confidence=4)

It calls the study API (``freetumor_core.turing.Study``) in the same process: each answer is one
SQLite transaction, on disk and locked when :meth:`ReaderSession.answer` returns, so a reader can
quit at any time and a new session continues with the first case not yet answered.

Blinding: this module never reads a key file and takes no key argument. What a case puts into the
scene is made the same way for every case: a scalar volume named ``Case <n>`` (``n`` = the case's
place in the reader's order; never the case id or a file name) with no node attributes and no
storage node, the study's one window preset, a grey colour table, and a region box named
``Region to judge``. No label or segmentation is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import slicer

from freetumor_core.turing import Answer, Study
from freetumor_core.turing.study import check_reader
from freetumor_core.volume import LPS_TO_RAS

from . import nodes

REGION_NAME = "Region to judge"
GREY_COLORS = "vtkMRMLColorTableNodeGrey"
CALL_KEYS = {"R": "real", "S": "synthetic"}  # keyboard shortcuts of the panel (and 1-5 for confidence)


@dataclass
class ShownCase:
    """The case on screen.

    Attributes:
        number: 1-based place in the reader's order (what the reader sees: "case 12 of 60").
        total: number of cases in the study.
        volume_node: the CT crop (``Case <number>``).
        region_node: the box to judge (a markups ROI), or ``None`` where MRML has no ROI node.
        centre_ras_mm: centre of the box to judge (RAS, mm): where the views are centred.
        window: ``{"name", "level_hu", "width_hu"}``, the same for every case.
    """

    number: int
    total: int
    volume_node: slicer.vtkMRMLScalarVolumeNode
    region_node: slicer.vtkMRMLNode | None
    centre_ras_mm: tuple[float, float, float]
    window: dict

    @property
    def label(self) -> str:
        return f"case {self.number} of {self.total}"


class ReaderSession:
    """One reader working through a study in ``scene``.

    Args:
        scene: the MRML scene the cases are shown in.
        study_folder: the study folder (``study.json``, ``study.db``, ``cases/``); never the key.
        reader: the reader's name (1-64 letters, digits, spaces or ``_ . @ -``).

    Raises:
        InputError: not a study folder, or a bad reader name.
    """

    def __init__(self, scene: slicer.vtkMRMLScene, study_folder, reader: str) -> None:
        self.scene = scene
        self.reader = check_reader(reader)
        self.study = Study.open(study_folder)
        self._order = self.study.order(reader)  # registers the reader (and their secret order)
        self._case_id: str | None = None
        self.shown: ShownCase | None = None

    # -- where the reader is --------------------------------------------------------------------
    @property
    def total(self) -> int:
        return len(self._order)

    @property
    def answered_count(self) -> int:
        return len(self.study.store.answered(self.reader))

    @property
    def finished(self) -> bool:
        return not self.study.cases(self.reader)

    def progress_text(self) -> str:
        """``"case 12 of 60"`` for the case on screen (or the next one), ``"finished: 60 of 60"``."""
        if self.finished:
            return f"finished: {self.answered_count} of {self.total} answered"
        return f"case {self.answered_count + 1} of {self.total}"

    # -- showing --------------------------------------------------------------------------------
    def show_next(self) -> ShownCase | None:
        """Show the reader's first unanswered case (replacing the previous one); ``None`` when done.

        The first showing of a case starts the reader's clock for it (kept across sessions).
        """
        remaining = self.study.cases(self.reader)
        self.clear()
        if not remaining:
            return None
        case_id = remaining[0]
        view = self.study.case_image(case_id, reader=self.reader)
        number = self._order.index(case_id) + 1
        node = nodes.add_volume_node(self.scene, view.volume, f"Case {number}")
        _set_window(node, view.window)
        # Display nodes are named too: MRML's own names count up per scene (VolumeDisplay_3).
        node.GetDisplayNode().SetName(f"Case {number} display")
        low = np.asarray(view.box_mm["low"], dtype=float)
        high = np.asarray(view.box_mm["high"], dtype=float)
        # Box corners are physical LPS (the case file's frame); Slicer shows RAS.
        centre_ras = LPS_TO_RAS @ ((low + high) / 2.0)
        region = _add_region(self.scene, centre_ras, high - low)
        self._case_id = case_id
        self.shown = ShownCase(
            number, self.total, node, region, tuple(float(v) for v in centre_ras), dict(view.window)
        )
        return self.shown

    def clear(self) -> None:
        """Remove the shown case's nodes from the scene."""
        if self.shown is not None:
            for node in (self.shown.volume_node, self.shown.region_node):
                if node is not None and node.GetScene() is self.scene:
                    for display in [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]:
                        if display is not None:
                            self.scene.RemoveNode(display)
                    self.scene.RemoveNode(node)
        self.shown = None
        self._case_id = None

    # -- answering ------------------------------------------------------------------------------
    def answer(self, call: str, confidence: int, comment: str = "") -> Answer:
        """Commit the answer for the case on screen (locked once this returns).

        Raises:
            RuntimeError: no case is shown.
            InputError: a bad call or confidence; ``AnswerLocked`` if it was already answered.
        """
        if self._case_id is None:
            raise RuntimeError("no case is shown: call show_next() first")
        answer = self.study.answer(self.reader, self._case_id, call, confidence, comment)
        self.clear()
        return answer

    def answers(self) -> list[Answer]:
        """This reader's committed answers, in the order given."""
        return self.study.answers(self.reader)


def _set_window(node: slicer.vtkMRMLScalarVolumeNode, window: dict) -> None:
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(GREY_COLORS)
    display.SetAutoWindowLevel(False)
    display.SetWindowLevel(float(window["width_hu"]), float(window["level_hu"]))
    display.SetInterpolate(True)


def _add_region(scene: slicer.vtkMRMLScene, centre_ras: np.ndarray, size_mm: np.ndarray):
    if not hasattr(slicer, "vtkMRMLMarkupsROINode"):
        return None
    region = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", REGION_NAME)
    region.SetCenter(*map(float, centre_ras))
    region.SetSize(*map(float, np.abs(size_mm)))
    region.SetLocked(True)
    region.CreateDefaultDisplayNodes()
    region.GetDisplayNode().SetName(f"{REGION_NAME} display")
    return region


__all__ = ["CALL_KEYS", "REGION_NAME", "ReaderSession", "ShownCase"]
