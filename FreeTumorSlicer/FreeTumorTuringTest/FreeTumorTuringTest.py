"""FreeTumor Turing Test: a blinded reader viewer for Visual Turing Tests of real vs synthetic tumors.

A reader gives a name and a study folder and is shown one case at a time (the CT crop in the slice
views, the study's soft-tissue window, centred on the region to judge; no label, file name or
anything else that hints at its origin). Real / Synthetic and a confidence of 1-5, with keyboard
shortcuts, then Next. Each answer is committed to the study's SQLite store (and locked) at once, so
the reader can stop at any time and resume later. The organiser's section (collapsed) takes the key
file and shows the scores: per reader and pooled sensitivity, specificity and accuracy with Wilson
95% intervals, Fleiss' kappa, and the figure.

The panel calls the study API in this process (``FreeTumorLib.reading`` for the reader, which never
sees the key; ``FreeTumorLib.organiser`` for the organiser). ``FreeTumorLib`` and the core are
imported only once the core is known to be installed, so the panel loads on a fresh Slicer and can
offer the installation. (No ``from __future__ import annotations``: the parameter node wrapper reads
the class annotations as types.)
"""

import importlib.util
import logging
import os
import pathlib
import sys
from typing import Annotated

import qt
import slicer

# A built extension installs FreeTumorLib beside the modules; run from a checkout (Additional module
# paths = FreeTumorSlicer/FreeTumorTuringTest), it is the folder one level up.
if importlib.util.find_spec("FreeTumorLib") is None:
    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from FreeTumorLib import dependencies
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Default, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

# Keyboard shortcuts: the call, the confidence and Next (Return or Enter).
CALL_SHORTCUTS = {"R": "real", "S": "synthetic"}
CONFIDENCE_SHORTCUTS = ("1", "2", "3", "4", "5")
NEXT_SHORTCUTS = ("Return", "Enter")


#
# Module
#
class FreeTumorTuringTest(ScriptedLoadableModule):
    """Module metadata."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("FreeTumor Turing Test")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["FreeTumor developers"]
        self.parent.helpText = _(
            "Blinded reader study: is the tumor in each case real or synthetic? Enter your name and "
            "the study folder, press Start, then for each case choose Real (R) or Synthetic (S) and a "
            "confidence from 1 (guess) to 5 (certain), and press Next (Enter). Answers are saved at "
            "once and cannot be changed; you can stop at any time and resume later. The organiser "
            "scores the study with the key file in the Organiser section."
        )
        self.parent.acknowledgementText = _(
            "The Visual Turing Test of 'FreeTumor: Large-Scale Generative Tumor Synthesis in Computed "
            "Tomography Images for Improving Tumor Segmentation'."
        )


#
# Parameters
#
@parameterNodeWrapper
class FreeTumorTuringTestParameterNode:
    """The panel's settings, saved with the scene.

    readerName: the reader's name. studyFolder: the study folder (cases only).
    keyFile: the organiser's key file (never given to the reader's session).
    scoresFolder: where the organiser's scores.json, answers.csv and scores.png go.
    """

    readerName: Annotated[str, Default("")]
    studyFolder: pathlib.Path
    keyFile: pathlib.Path
    scoresFolder: pathlib.Path


#
# Widget
#
class FreeTumorTuringTestWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: the reader's case loop and the organiser's scoring."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.session = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._call = None
        self._shortcuts = []

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/FreeTumorTuringTest.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = FreeTumorTuringTestLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.startButton.connect("clicked(bool)", self.onStart)
        self.ui.realButton.connect("clicked(bool)", lambda checked: self.setCall("real"))
        self.ui.syntheticButton.connect("clicked(bool)", lambda checked: self.setCall("synthetic"))
        self._confidenceButtons = [getattr(self.ui, f"confidence{level}RadioButton") for level in range(1, 6)]
        for button in self._confidenceButtons:
            button.connect("toggled(bool)", self._updateButtons)
        self.ui.nextButton.connect("clicked(bool)", self.onNext)
        self.ui.scoreButton.connect("clicked(bool)", self.onScore)

        self.initializeParameterNode()
        self._showReading(False)
        qt.QTimer.singleShot(0, self.checkDependencies)

    def checkDependencies(self) -> None:
        if not dependencies.missing():
            return
        try:
            if not dependencies.ensure_core():
                self.ui.statusLabel.text = _("Not installed: ") + ", ".join(dependencies.missing())
        except RuntimeError as error:
            self.ui.statusLabel.text = str(error)
            slicer.util.errorDisplay(str(error), windowTitle=dependencies.TITLE)

    def cleanup(self) -> None:
        self._removeShortcuts()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()
        self._addShortcuts()

    def exit(self) -> None:
        self._removeShortcuts()
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)
        self.session = None
        self._showReading(False)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)

    # -- keyboard -------------------------------------------------------------------------------
    def _addShortcuts(self) -> None:
        """R / S, 1-5 and Enter, active while the focus is in the slice views or in this panel (not
        in the Python console or another module's panel)."""
        if self._shortcuts:
            return
        bindings = [(key, lambda call=call: self.setCall(call)) for key, call in CALL_SHORTCUTS.items()]
        bindings += [
            (key, lambda level=level: self.setConfidence(level))
            for level, key in enumerate(CONFIDENCE_SHORTCUTS, start=1)
        ]
        bindings += [(key, self.onNext) for key in NEXT_SHORTCUTS]
        for area in (slicer.app.layoutManager().viewport(), self.parent):
            for key, handler in bindings:
                shortcut = qt.QShortcut(qt.QKeySequence(key), area)
                shortcut.setContext(qt.Qt.WidgetWithChildrenShortcut)
                shortcut.connect("activated()", handler)
                self._shortcuts.append(shortcut)

    def _removeShortcuts(self) -> None:
        for shortcut in self._shortcuts:
            shortcut.setParent(None)
        self._shortcuts = []

    # -- reading --------------------------------------------------------------------------------
    def _showReading(self, reading: bool) -> None:
        self.ui.caseFrame.visible = reading
        self.ui.finishedFrame.visible = False
        self._updateButtons()

    def setCall(self, call: str) -> None:
        if self.session is None or self.session.shown is None:
            return
        self._call = call
        self.ui.realButton.checked = call == "real"
        self.ui.syntheticButton.checked = call == "synthetic"
        self._updateButtons()

    def setConfidence(self, level: int) -> None:
        if self.session is None or self.session.shown is None:
            return
        self._confidenceButtons[level - 1].checked = True

    def _confidence(self):
        for level, button in enumerate(self._confidenceButtons, start=1):
            if button.checked:
                return level
        return None

    def _updateButtons(self, *args) -> None:
        showing = self.session is not None and self.session.shown is not None
        self.ui.nextButton.enabled = showing and self._call is not None and self._confidence() is not None

    def onStart(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not open the study."), waitCursor=True):
            if not dependencies.ensure_core():
                return
            folder = self._parameterNode.studyFolder
            if self.session is not None:
                self.session.clear()
            self.session = self.logic.startReading(
                slicer.mrmlScene, folder, self._parameterNode.readerName.strip()
            )
            self._showReading(True)
            self._showNext()

    def onNext(self) -> None:
        if not self.ui.nextButton.enabled:
            return
        from freetumor_core.turing import AnswerLocked

        with slicer.util.tryWithErrorDisplay(_("Could not save the answer."), waitCursor=True):
            try:
                self.session.answer(self._call, self._confidence(), self.ui.commentLineEdit.text)
                self.ui.statusLabel.text = ""
            except AnswerLocked:
                # Answered meanwhile from another Slicer with the same name: that answer stands.
                self.ui.statusLabel.text = _("This case was already answered; the first answer is kept.")
            self._showNext()

    def _showNext(self) -> None:
        self._call = None
        self.ui.realButton.checked = self.ui.syntheticButton.checked = False
        # Radio buttons in one group cannot all be unchecked unless exclusivity is lifted briefly.
        self.ui.confidenceButtonGroup.exclusive = False
        for button in self._confidenceButtons:
            button.checked = False
        self.ui.confidenceButtonGroup.exclusive = True
        self.ui.commentLineEdit.text = ""
        shown = self.session.show_next()
        if shown is None:
            self.ui.caseFrame.visible = False
            self.ui.finishedFrame.visible = True
            self.ui.finishedLabel.text = _("All {total} cases answered. Thank you, {reader}!").format(
                total=self.session.total, reader=self.session.reader
            )
            self.ui.progressLabel.text = self.session.progress_text()
            slicer.util.setSliceViewerLayers(background=None, foreground=None, label=None)
            self._updateButtons()
            return
        self.ui.progressLabel.text = shown.label
        self.logic.showInViews(shown)
        self._updateButtons()
        logging.info("FreeTumor Turing Test: %s", shown.label)

    # -- organiser ------------------------------------------------------------------------------
    def onScore(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not score the study."), waitCursor=True):
            if not dependencies.ensure_core():
                return
            from FreeTumorLib.organiser import SCORE_COLUMNS, score_rows

            parameters = self._parameterNode
            scores = self.logic.scoreStudy(
                parameters.studyFolder, parameters.keyFile, parameters.scoresFolder
            )
            rows = score_rows(scores)
            table = self.ui.scoreTableWidget
            table.clear()
            table.setColumnCount(len(SCORE_COLUMNS))
            table.setHorizontalHeaderLabels(list(SCORE_COLUMNS))
            table.setRowCount(len(rows))
            for r, row in enumerate(rows):
                for c, column in enumerate(SCORE_COLUMNS):
                    table.setItem(r, c, qt.QTableWidgetItem(row[column]))
            table.resizeColumnsToContents()
            figure = scores.get("outputs", {}).get("png")
            if figure:
                pixmap = qt.QPixmap(figure)
                self.ui.figureLabel.setPixmap(pixmap.scaledToWidth(max(200, self.ui.figureLabel.width)))


#
# Logic
#
class FreeTumorTuringTestLogic(ScriptedLoadableModuleLogic):
    """The study's work without the GUI; each method takes its settings as arguments (the panel's
    parameter node is left alone). From Slicer's Python console::

        logic = slicer.util.getModuleLogic("FreeTumorTuringTest")
        study = logic.buildStudy("real.json", "hosts.json", "/data/study", "/secure/key.json",
                                 nReal=30, nSynthetic=30, seed=1)
        session = logic.startReading(slicer.mrmlScene, "/data/study", "alice")
        shown = session.show_next(); session.answer("synthetic", 4)
        scores = logic.scoreStudy("/data/study", "/secure/key.json", "/data/scores")
    """

    def getParameterNode(self):
        return FreeTumorTuringTestParameterNode(super().getParameterNode())

    def startReading(self, scene, studyFolder, reader):
        """A reader's session over ``studyFolder`` in ``scene`` (resumes where the reader stopped).

        Takes no key: the reader's side never reads it.

        Returns:
            ``FreeTumorLib.reading.ReaderSession``: ``show_next()``, ``answer(call, confidence)``,
            ``progress_text()``, ``finished``.
        """
        from FreeTumorLib.reading import ReaderSession

        return ReaderSession(scene, studyFolder, reader)

    @staticmethod
    def showInViews(shown) -> None:
        """Show a case in the slice views: background only, no label, centred on the region."""
        slicer.util.setSliceViewerLayers(background=shown.volume_node, foreground=None, label=None, fit=True)
        for name in slicer.app.layoutManager().sliceViewNames():
            sliceNode = slicer.app.layoutManager().sliceWidget(name).mrmlSliceNode()
            sliceNode.JumpSliceByCentering(*shown.centre_ras_mm)

    def buildStudy(
        self,
        realDatalist,
        syntheticDatalist,
        studyFolder,
        keyFile,
        nReal=None,
        nSynthetic=None,
        seed=0,
        allowLeaky=False,
    ):
        """Build a blinded study folder and its key file (``freetumor vtt create``); blocks.

        Returns:
            the open ``freetumor_core.turing.Study``.
        """
        from FreeTumorLib.organiser import create_study

        return create_study(
            studyFolder,
            keyFile,
            realDatalist,
            syntheticDatalist,
            n_real=nReal,
            n_synthetic=nSynthetic,
            seed=seed,
            allow_leaky=allowLeaky,
        )

    def scoreStudy(self, studyFolder, keyFile, outputFolder=None):
        """Score the study with its key (the numbers of ``freetumor vtt score``); with
        ``outputFolder``, also write ``scores.json``, ``answers.csv`` and ``scores.png`` there.

        Returns:
            ``{"pooled", "readers", "agreement", ...}`` (see ``freetumor_core.turing.score``).
        """
        from FreeTumorLib.organiser import score_study

        return score_study(studyFolder, keyFile, outputFolder)


#
# Self-test
#
class FreeTumorTuringTestTest(ScriptedLoadableModuleTest):
    """A scripted reader on a small study built from the phantom: answer, quit, resume, score."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_read_resume_and_score()

    def test_read_resume_and_score(self):
        import json
        import tempfile

        from freetumor_core.lesions import is_lesion_label
        from freetumor_core.phantom import make_phantom
        from freetumor_core.synthesis import TumorSpec, synthesize
        from freetumor_core.volume import write_volume

        folder = pathlib.Path(tempfile.mkdtemp(prefix="freetumor-vtt-"))
        self.delayDisplay("Building a 2 + 2 case study from the phantom")
        ct, labels = make_phantom(seed=0)
        # A "real" tumor for the test: one synthesized with another seed, saved as a label.
        result = synthesize(ct, labels, TumorSpec(organ="liver", size="medium", count=1), seed=11)
        write_volume(result.ct, folder / "real_ct.nii.gz")
        result.labels.save(folder / "real_labels.nii.gz")
        write_volume(ct, folder / "host_ct.nii.gz")
        labels.save(folder / "host_labels.nii.gz")
        tumor_id = next(i for i, name in result.labels.present().items() if is_lesion_label(name))
        entry = {"image": "real_ct.nii.gz", "label": "real_labels.nii.gz", "organ": "liver"}
        real = {"training": [{**entry, "tumor_label": tumor_id}]}
        (folder / "real.json").write_text(json.dumps(real))
        hosts = {"training": [{"image": "host_ct.nii.gz", "label": "host_labels.nii.gz"}]}
        (folder / "hosts.json").write_text(json.dumps(hosts))
        logic = FreeTumorTuringTestLogic()
        study = logic.buildStudy(
            folder / "real.json",
            folder / "hosts.json",
            folder / "study",
            folder / "key.json",
            nReal=1,
            nSynthetic=1,
            seed=3,
            allowLeaky=True,
        )
        self.assertEqual(len(study.case_ids), 2)

        self.delayDisplay("Reading the first case, then quitting")
        session = logic.startReading(slicer.mrmlScene, folder / "study", "selftest")
        shown = session.show_next()
        self.assertEqual(shown.label, "case 1 of 2")
        self.assertEqual(shown.volume_node.GetName(), "Case 1")
        session.answer("real", 3)
        self.delayDisplay("Resuming")
        session = logic.startReading(slicer.mrmlScene, folder / "study", "selftest")
        shown = session.show_next()
        self.assertEqual(shown.label, "case 2 of 2")
        session.answer("synthetic", 5)
        self.assertIsNone(session.show_next())
        self.assertTrue(session.finished)

        scores = logic.scoreStudy(folder / "study", folder / "key.json", folder / "scores")
        self.assertEqual(scores["pooled"]["n"], 2)
        self.assertTrue(pathlib.Path(scores["outputs"]["png"]).is_file())
        self.delayDisplay("Test passed")
