"""FreeTumor: paint synthetic tumors into an organ of a CT, and segment tumors in a CT, from 3D Slicer.

The panel is thin: it turns the chosen nodes into files, runs ``freetumor synthesize`` (or
``freetumor segment``) in a background process (``PythonSlicer -m freetumor_core ... --progress
json``), shows its progress, and loads the results as nodes. All the work lives in the
``freetumor_core`` package; the MRML conversion, the process runner and the jobs live in
``FreeTumorLib`` (usable without the GUI), the package this extension's modules share.

This file needs Slicer's application (``qt``, ``ctk``, ``slicer.ScriptedLoadableModule``). Code
that needs ``freetumor_core`` is imported only once the core is known to be installed, so the
panel can offer to install it. (No ``from __future__ import annotations`` here: the parameter node
wrapper reads the class annotations as types.)
"""

import importlib.util
import logging
import os
import pathlib
import sys
from typing import Annotated, Union

import qt
import slicer
import vtk

# A built extension installs FreeTumorLib beside the modules; run from a checkout (Additional module
# paths = FreeTumorSlicer/FreeTumor), it is the folder one level up.
if importlib.util.find_spec("FreeTumorLib") is None:
    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from FreeTumorLib import dependencies
from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, Default, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

# From its own package: module-level classes of non-core MRML are not yet in the slicer namespace.
from vtkSlicerSegmentationsModuleMRMLPython import vtkMRMLSegmentationNode

# The core's size classes (freetumor_core.records.SIZE_CLASSES_MM), listed here because the panel
# must load before the core is installed; Testing/test_slicer_ui.py checks that they agree.
SIZE_CLASSES = ("tiny", "small", "medium", "large")
DEFAULT_ORGANS = ("liver", "pancreas", "kidney")
ENGINES = ("handcrafted", "adversarial")
# The segmentation devices the panel offers (FreeTumorLib.segmentation.DEVICES; checked by the tests).
SEGMENT_DEVICES = ("auto", "cpu", "cuda")
POLL_INTERVAL_MS = 200


#
# Module
#
class FreeTumor(ScriptedLoadableModule):
    """Module metadata."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("FreeTumor")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["FreeTumor developers"]
        self.parent.helpText = _(
            "Synthesize realistic tumors inside an organ of a CT (liver, pancreas, kidney, ...). "
            "Choose the CT and its organ segmentation (for example from TotalSegmentator), the organ, "
            "the size class and the number of tumors, then Apply. The result is a new volume "
            "'&lt;CT&gt; synthetic', a segmentation with organ and tumor segments, a table of the "
            "tumors (diameter, volume, contrast, centre) and, optionally, points at the tumor centres. "
            "Segment tumors: choose a CT, optionally its organ segmentation and a segmentation model "
            "folder (empty: the shipped demo model), then Apply: the result is a segmentation "
            "'&lt;CT&gt; segmentation' with organ and tumor segments and a table of the lesions found "
            "(organ, diameter, volume, mean HU, score); "
            "click a row to centre the views on that lesion. "
            "The work runs in a background process; Cancel stops it."
        )
        self.parent.acknowledgementText = _(
            "FreeTumor implements the method of 'FreeTumor: Large-Scale Generative Tumor Synthesis in "
            "Computed Tomography Images for Improving Tumor Segmentation'."
        )


#
# Parameters
#
@parameterNodeWrapper
class FreeTumorParameterNode:
    """The panel's settings, saved with the scene.

    inputVolume: CT in HU. organSegmentation: its organ segmentation or label map.
    organ: host organ name. size: size class. count: number of tumors. seed: random seed.
    marginMm: smallest tumor-to-organ-surface distance (mm). engine: handcrafted or adversarial.
    model: the adversarial engine's model folder (empty: the shipped demo). qc: optional segmentation
    model folder for quality control (each tumor's QC score goes into the tumor table).
    markCentres: add centre points.
    A parameter named like a TumorSpec field in camelCase (marginMm: margin_mm) is that field.

    Segment tumors (parameters named segment*): segmentVolume: CT in HU. segmentOrgans: optional organ
    segmentation or label map (tumors are kept inside its organs). segmentModel: segmentation model
    folder (empty: the shipped demo segmenter). segmentDevice: auto, cpu or cuda. segmentOverlap:
    sliding-window overlap (0 to 0.95).
    segmentTta: average over flips (test-time augmentation; 4x slower).

    Reports (parameters named reports*): reportsVolume: CT to match. reportsIndex: index folder of
    reports. reportsCtIndex: index folder of CTs. reportsK: how many results. reportsQuery: a finding
    to search the CT index for.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    organSegmentation: Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode]  # noqa: UP007
    organ: Annotated[str, Default("liver")]
    size: Annotated[str, Choice(list(SIZE_CLASSES)), Default("small")]
    count: Annotated[int, WithinRange(1, 50), Default(1)]
    seed: Annotated[int, WithinRange(0, 99999999), Default(0)]
    marginMm: Annotated[float, WithinRange(0.0, 50.0), Default(3.0)]
    engine: Annotated[str, Choice(list(ENGINES)), Default("handcrafted")]
    model: pathlib.Path
    qc: pathlib.Path
    markCentres: Annotated[bool, Default(True)]
    segmentVolume: vtkMRMLScalarVolumeNode
    segmentOrgans: Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode]  # noqa: UP007
    segmentModel: pathlib.Path
    segmentDevice: Annotated[str, Choice(list(SEGMENT_DEVICES)), Default("auto")]
    segmentOverlap: Annotated[float, WithinRange(0.0, 0.95), Default(0.25)]
    segmentTta: Annotated[bool, Default(False)]
    reportsVolume: vtkMRMLScalarVolumeNode
    reportsIndex: pathlib.Path
    reportsCtIndex: pathlib.Path
    reportsK: Annotated[int, WithinRange(1, 100), Default(5)]
    reportsQuery: Annotated[str, Default("")]


#
# Widget
#
class FreeTumorWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: connects the GUI to the parameter node, starts the logic, shows progress."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._segmentJob = None
        self._reportsJob = None
        self._lesions = []
        self._hits = []
        self._timer = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/FreeTumor.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = FreeTumorLogic()
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self.onTimer)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.segmentApplyButton.connect("clicked(bool)", self.onSegmentApplyButton)
        self.ui.segmentCancelButton.connect("clicked(bool)", self.onSegmentCancelButton)
        self.ui.lesionTableWidget.connect("cellClicked(int,int)", self.onLesionClicked)
        self.ui.reportsMatchButton.connect("clicked(bool)", self.onReportsMatchButton)
        self.ui.reportsSearchButton.connect("clicked(bool)", self.onReportsSearchButton)
        self.ui.reportsCancelButton.connect("clicked(bool)", self.onReportsCancelButton)
        self.ui.reportsSearchTableWidget.connect("cellClicked(int,int)", self.onHitClicked)
        # The organ list depends on the chosen segmentation, so it is kept in step by hand.
        self.ui.organSegmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onOrgansChanged)
        self.ui.organComboBox.connect("currentTextChanged(QString)", self.onOrganChanged)

        self.initializeParameterNode()
        # Checked when the module opens; nothing is installed without the user's confirmation.
        qt.QTimer.singleShot(0, self.checkDependencies)

    def checkDependencies(self) -> None:
        if not dependencies.missing():
            return
        try:
            if dependencies.ensure_core():
                self._setStatus(_("Ready."))
                self.onOrgansChanged(self._parameterNode.organSegmentation if self._parameterNode else None)
                return
            self._setStatus(_("Not installed: ") + ", ".join(dependencies.missing()))
        except RuntimeError as error:
            self._setStatus(str(error))
            slicer.util.errorDisplay(str(error), windowTitle=dependencies.TITLE)

    def cleanup(self) -> None:
        for job in (self._job, self._segmentJob, self._reportsJob):
            if job is not None and job.running:
                job.cancel()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
        if not self._parameterNode.organSegmentation:
            self._parameterNode.organSegmentation = slicer.mrmlScene.GetFirstNodeByClass(
                "vtkMRMLSegmentationNode"
            )
        if not self._parameterNode.segmentVolume:
            self._parameterNode.segmentVolume = self._parameterNode.inputVolume
        if not self._parameterNode.reportsVolume:
            self._parameterNode.reportsVolume = self._parameterNode.inputVolume

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
            self.onOrgansChanged(self._parameterNode.organSegmentation)
            self._updateButtons()

    # -- GUI state ------------------------------------------------------------------------------
    def _updateButtons(self, caller=None, event=None) -> None:
        running = self._job is not None and self._job.running
        ready = bool(
            self._parameterNode
            and self._parameterNode.inputVolume
            and self._parameterNode.organSegmentation
            and self._parameterNode.organ.strip()
        )
        self.ui.applyButton.enabled = ready and not running
        self.ui.cancelButton.enabled = running
        self.ui.applyButton.toolTip = (
            _("Synthesize tumors in a background process.")
            if ready
            else _("Choose a CT, its organs and an organ.")
        )
        segmenting = self._segmentJob is not None and self._segmentJob.running
        segmentReady = bool(self._parameterNode and self._parameterNode.segmentVolume)
        self.ui.segmentApplyButton.enabled = segmentReady and not segmenting
        self.ui.segmentCancelButton.enabled = segmenting
        self.ui.segmentApplyButton.toolTip = (
            _("Segment tumors in a background process.") if segmentReady else _("Choose a CT.")
        )
        reporting = self._reportsJob is not None and self._reportsJob.running
        parameters = self._parameterNode
        matchReady = bool(parameters and parameters.reportsVolume and _folder(parameters.reportsIndex))
        searchReady = bool(
            parameters and parameters.reportsQuery.strip() and _folder(parameters.reportsCtIndex)
        )
        self.ui.reportsMatchButton.enabled = matchReady and not reporting
        self.ui.reportsSearchButton.enabled = searchReady and not reporting
        self.ui.reportsCancelButton.enabled = reporting

    def onOrgansChanged(self, node) -> None:
        """Offer the organs of the chosen segmentation (keeping the current choice when present)."""
        current = self._parameterNode.organ if self._parameterNode else self.ui.organComboBox.currentText
        names = []
        if dependencies.core_available():  # FreeTumorLib.nodes needs the core
            from FreeTumorLib.nodes import segment_names

            names = segment_names(node)
        choices = (
            list(DEFAULT_ORGANS) + sorted(set(names) - set(DEFAULT_ORGANS)) if names else list(DEFAULT_ORGANS)
        )
        wasBlocked = self.ui.organComboBox.blockSignals(True)
        self.ui.organComboBox.clear()
        self.ui.organComboBox.addItems(choices)
        self.ui.organComboBox.setCurrentText(current or DEFAULT_ORGANS[0])
        self.ui.organComboBox.blockSignals(wasBlocked)

    def onOrganChanged(self, text: str) -> None:
        if self._parameterNode and self._parameterNode.organ != text:
            self._parameterNode.organ = text

    # -- running --------------------------------------------------------------------------------
    def onApplyButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not start the tumor synthesis."), waitCursor=True):
            if not dependencies.ensure_core():
                return
            self.ui.progressBar.setRange(0, 0)  # busy until the first progress event gives a total
            self._setStatus(_("Starting..."))
            self._job = self.logic.start(
                self._parameterNode,
                onProgress=self.onProgress,
                onDone=self.onDone,
                onError=self.onError,
            )
            self._timer.start()
        self._updateButtons()

    def onCancelButton(self) -> None:
        if self._job is not None:
            self._setStatus(_("Cancelling..."))
            self._job.cancel()

    def onTimer(self) -> None:
        # One timer polls both jobs; it stops when neither runs.
        jobs = (self._job, self._segmentJob, self._reportsJob)
        running = [job.poll() for job in jobs if job is not None and job.running]
        if not any(running):
            self._timer.stop()
        self._updateButtons()

    def onProgress(self, event: dict) -> None:
        total, done = event.get("total"), event.get("done", 0)
        if total:
            self.ui.progressBar.setRange(0, int(total))
            self.ui.progressBar.setValue(int(done))
        self._setStatus(f"{event.get('task', '')}: {done}/{total or '?'}")

    def onDone(self, outputs) -> None:
        self.ui.progressBar.setRange(0, 100)
        self.ui.progressBar.setValue(100)
        sizes = ", ".join(f"{record.diameter_mm:.0f} mm" for record in outputs.records)
        self._setStatus(
            _("Done: {count} tumor(s) in {organ} ({sizes}).").format(
                count=len(outputs.records), organ=self._parameterNode.organ, sizes=sizes
            )
        )
        slicer.util.setSliceViewerLayers(background=outputs.volume, fit=False)

    def onError(self, error: Exception) -> None:
        self.ui.progressBar.setRange(0, 100)
        self.ui.progressBar.setValue(0)
        if getattr(error, "message", None) == "cancelled":
            self._setStatus(_("Cancelled."))
            return
        self._setStatus(_("Failed: {error}").format(error=error))
        slicer.util.errorDisplay(str(error), windowTitle=_("FreeTumor"))

    def _setStatus(self, text: str) -> None:
        self.ui.statusLabel.text = text
        logging.info("FreeTumor: %s", text)

    # -- segmenting -----------------------------------------------------------------------------
    def onSegmentApplyButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not start the tumor segmentation."), waitCursor=True):
            if not dependencies.ensure_core():
                return
            self._showLesions([])
            self.ui.segmentProgressBar.setRange(0, 0)
            self._setSegmentStatus(_("Starting..."))
            self._segmentJob = self.logic.startSegmentation(
                self._parameterNode,
                onProgress=self.onSegmentProgress,
                onDone=self.onSegmentDone,
                onError=self.onSegmentError,
            )
            self._timer.start()
        self._updateButtons()

    def onSegmentCancelButton(self) -> None:
        if self._segmentJob is not None:
            self._setSegmentStatus(_("Cancelling..."))
            self._segmentJob.cancel()

    def onSegmentProgress(self, event: dict) -> None:
        total, done = event.get("total"), event.get("done", 0)
        if total:
            self.ui.segmentProgressBar.setRange(0, int(total))
            self.ui.segmentProgressBar.setValue(int(done))
        self._setSegmentStatus(f"{event.get('task', '')}: {done}/{total or '?'}")

    def onSegmentDone(self, outputs) -> None:
        self.ui.segmentProgressBar.setRange(0, 100)
        self.ui.segmentProgressBar.setValue(100)
        self._showLesions(outputs.lesions)
        self._setSegmentStatus(_("Done: {count} lesion(s) found.").format(count=len(outputs.lesions)))
        slicer.util.setSliceViewerLayers(background=self._segmentJob.input_node, fit=False)

    def onSegmentError(self, error: Exception) -> None:
        self.ui.segmentProgressBar.setRange(0, 100)
        self.ui.segmentProgressBar.setValue(0)
        if getattr(error, "message", None) == "cancelled":
            self._setSegmentStatus(_("Cancelled."))
            return
        self._setSegmentStatus(_("Failed: {error}").format(error=error))
        slicer.util.errorDisplay(str(error), windowTitle=_("FreeTumor"))

    def _showLesions(self, lesions) -> None:
        """One row per lesion: organ, diameter (mm), volume (mL), mean HU, score."""
        self._lesions = list(lesions)
        table = self.ui.lesionTableWidget
        table.setRowCount(len(self._lesions))
        for row, lesion in enumerate(self._lesions):
            record = lesion.record
            score = "-" if lesion.score is None else f"{lesion.score:.2f}"
            values = (
                record.organ,
                f"{record.diameter_mm:.1f}",
                f"{record.volume_ml:.2f}",
                f"{record.mean_hu:.0f}",
                score,
            )
            for column, value in enumerate(values):
                table.setItem(row, column, qt.QTableWidgetItem(value))
        table.resizeColumnsToContents()

    def onLesionClicked(self, row: int, column: int) -> None:
        if 0 <= row < len(self._lesions):
            self.logic.centreViewsOn(self._lesions[row].record.centre_ras_mm)

    def _setSegmentStatus(self, text: str) -> None:
        self.ui.segmentStatusLabel.text = text
        logging.info("FreeTumor segment: %s", text)

    # -- reports --------------------------------------------------------------------------------
    def onReportsMatchButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not start the report match."), waitCursor=True):
            if not dependencies.ensure_core():
                return
            self._startReports(_("Matching..."))
            self._reportsJob = self.logic.startMatch(
                self._parameterNode,
                onProgress=self.onReportsProgress,
                onDone=self.onMatchDone,
                onError=self.onReportsError,
            )
            self._timer.start()
        self._updateButtons()

    def onReportsSearchButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not start the CT search."), waitCursor=True):
            if not dependencies.ensure_core():
                return
            self._startReports(_("Searching..."))
            self._reportsJob = self.logic.startSearch(
                self._parameterNode,
                onProgress=self.onReportsProgress,
                onDone=self.onSearchDone,
                onError=self.onReportsError,
            )
            self._timer.start()
        self._updateButtons()

    def onReportsCancelButton(self) -> None:
        if self._reportsJob is not None:
            self._setReportsStatus(_("Cancelling..."))
            self._reportsJob.cancel()

    def _startReports(self, text: str) -> None:
        self.ui.reportsProgressBar.setRange(0, 0)
        self._setReportsStatus(text)

    def onReportsProgress(self, event: dict) -> None:
        total, done = event.get("total"), event.get("done", 0)
        if total:
            self.ui.reportsProgressBar.setRange(0, int(total))
            self.ui.reportsProgressBar.setValue(int(done))
        self._setReportsStatus(f"{event.get('task', '')}: {done}/{total or '?'}")

    def _reportsFinished(self) -> None:
        self.ui.reportsProgressBar.setRange(0, 100)
        self.ui.reportsProgressBar.setValue(100)

    def onMatchDone(self, outputs) -> None:
        self._reportsFinished()
        table = self.ui.reportsMatchTableWidget
        table.setRowCount(len(outputs.matches))
        for row, match in enumerate(outputs.matches):
            sentences = " | ".join(text for text, _score in match.sentences)
            for column, value in enumerate((str(match.rank), f"{match.score:.3f}", match.id, sentences)):
                table.setItem(row, column, qt.QTableWidgetItem(value))
            table.item(row, 2).setToolTip(match.text)
        table.resizeColumnsToContents()
        self._setReportsStatus(_("Done: {count} report(s).").format(count=len(outputs.matches)))

    def onSearchDone(self, hits) -> None:
        self._reportsFinished()
        self._hits = list(hits)
        table = self.ui.reportsSearchTableWidget
        table.setRowCount(len(self._hits))
        for row, hit in enumerate(self._hits):
            for column, value in enumerate((str(hit.rank), f"{hit.score:.3f}", hit.id)):
                table.setItem(row, column, qt.QTableWidgetItem(value))
            table.item(row, 2).setToolTip(hit.path)
        table.resizeColumnsToContents()
        self._setReportsStatus(_("Done: {count} CT(s); click one to load it.").format(count=len(self._hits)))

    def onHitClicked(self, row: int, column: int) -> None:
        if 0 <= row < len(self._hits):
            with slicer.util.tryWithErrorDisplay(_("Could not load the CT."), waitCursor=True):
                node = self.logic.loadHit(self._hits[row])
                slicer.util.setSliceViewerLayers(background=node, fit=True)

    def onReportsError(self, error: Exception) -> None:
        self.ui.reportsProgressBar.setRange(0, 100)
        self.ui.reportsProgressBar.setValue(0)
        if getattr(error, "message", None) == "cancelled":
            self._setReportsStatus(_("Cancelled."))
            return
        self._setReportsStatus(_("Failed: {error}").format(error=error))
        slicer.util.errorDisplay(str(error), windowTitle=_("FreeTumor"))

    def _setReportsStatus(self, text: str) -> None:
        self.ui.reportsStatusLabel.text = text
        logging.info("FreeTumor reports: %s", text)


def _folder(path) -> str:
    """A path parameter as text; empty when unset (a ``pathlib.Path`` parameter defaults to ".")."""
    text = str(path or "").strip()
    return "" if text == "." else text


#
# Logic
#
class FreeTumorLogic(ScriptedLoadableModuleLogic):
    """The module's work without the GUI; every method takes its settings as arguments (the panel's
    parameter node is left alone). From Slicer's Python console::

        logic = slicer.util.getModuleLogic("FreeTumor")
        outputs = logic.run(ctNode, segmentationNode, organ="liver", size="small", count=2, seed=1)
        results = logic.synthesizeDatalist("hosts.json", "/tmp/synthetic", organ="liver", count=1)
        found = logic.segment(ctNode, model="/path/to/model", organSegmentation=None, device="auto")
        logic.centreViewsOn(found.lesions[0].record.centre_ras_mm)
    """

    def getParameterNode(self):
        return FreeTumorParameterNode(super().getParameterNode())

    def start(self, parameters, onProgress=None, onDone=None, onError=None):
        """Start a synthesis job in a background process from the panel's parameters.

        Returns:
            a running ``FreeTumorLib.synthesis.SynthesisJob``; poll it from a timer.

        Raises:
            ValueError: a node is missing or a setting is invalid.
        """
        from FreeTumorLib.synthesis import SynthesisRequest

        # Parameters named like TumorSpec fields (marginMm: margin_mm) become the spec, plus the seed.
        request = SynthesisRequest.from_parameters(parameters)
        volume, organs = parameters.inputVolume, parameters.organSegmentation
        return self._start(volume, organs, request, parameters.markCentres, onProgress, onDone, onError)

    @staticmethod
    def _start(inputVolume, organSegmentation, request, markCentres, onProgress, onDone, onError):
        from FreeTumorLib.synthesis import SynthesisJob

        job = SynthesisJob(
            inputVolume,
            organSegmentation,
            request,
            on_progress=onProgress,
            on_done=onDone,
            on_error=onError,
            add_markups=markCentres,
        )
        return job.start()

    def run(
        self,
        inputVolume,
        organSegmentation,
        organ="liver",
        size="small",
        count=1,
        seed=0,
        marginMm=3.0,
        markCentres=True,
        timeoutS=None,
    ):
        """Synthesize tumors into the CT of a node and wait (blocks; for the console and tests).

        Args:
            inputVolume: CT volume node (HU).
            organSegmentation: its organ segmentation or label map node.
            organ, size, count, marginMm: the ``TumorSpec`` fields (``marginMm`` = ``margin_mm``).
            seed: random seed.
            markCentres: also add a point list at the tumor centres.
            timeoutS: give up (and stop the process) after this many seconds.

        Returns:
            ``SynthesisOutputs`` (volume, segmentation, table, markups nodes and the tumor records).

        Raises:
            the job's error (``CoreProcessError`` for a failed run, ``ValueError`` for bad outputs),
            or ``TimeoutError`` after ``timeoutS`` seconds.
        """
        if not dependencies.ensure_core():
            raise RuntimeError(dependencies.missing_core_message())
        from FreeTumorLib.synthesis import SynthesisRequest

        request = SynthesisRequest(organ=organ, size=size, count=count, seed=seed, margin_mm=marginMm)
        job = self._start(inputVolume, organSegmentation, request, markCentres, None, None, None)
        if not job.wait(timeoutS):
            job.cancel()
            job.wait()
            raise TimeoutError(f"tumor synthesis did not finish within {timeoutS} s")
        if job.error is not None:
            raise job.error
        return job.outputs

    def startSegmentation(self, parameters, onProgress=None, onDone=None, onError=None):
        """Start a segmentation job in a background process from the panel's ``segment*`` parameters.

        Returns:
            a running ``FreeTumorLib.segmentation.SegmentationJob``; poll it from a timer.

        Raises:
            ValueError: no CT or no model folder, or a setting is invalid.
        """
        from FreeTumorLib.segmentation import SegmentationJob, SegmentationRequest

        # An empty model field (a path parameter reads as ".") is the shipped demo segmenter.
        request = SegmentationRequest(
            model=str(parameters.segmentModel) if str(parameters.segmentModel) != "." else "",
            device=parameters.segmentDevice,
            overlap=parameters.segmentOverlap,
            tta=parameters.segmentTta,
        )
        job = SegmentationJob(
            parameters.segmentVolume,
            parameters.segmentOrgans,
            request,
            on_progress=onProgress,
            on_done=onDone,
            on_error=onError,
        )
        return job.start()

    def segment(
        self,
        inputVolume,
        model="",
        organSegmentation=None,
        device="auto",
        overlap=0.25,
        tta=False,
        timeoutS=None,
    ):
        """Segment tumors in the CT of a node and wait (blocks; for the console and tests).

        Args:
            inputVolume: CT volume node (HU).
            model: segmentation model folder or a shipped model's name (empty: the shipped demo
                segmenter, ``segmenter_demo``).
            organSegmentation: optional organ segmentation or label map node; tumors are kept
                inside its organs.
            device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
            overlap: sliding-window overlap, 0 to 0.95.
            tta: average over flips of each axis (4x slower).
            timeoutS: give up (and stop the process) after this many seconds.

        Returns:
            ``SegmentationOutputs``: the ``<CT> segmentation`` node (``None`` when nothing was
            found), the ``<CT> lesions`` table node and the lesions (record and score).

        Raises:
            the job's error (``CoreProcessError`` for a failed run, ``ValueError`` for bad settings or
            outputs), or ``TimeoutError`` after ``timeoutS`` seconds.
        """
        if not dependencies.ensure_core():
            raise RuntimeError(dependencies.missing_core_message())
        from FreeTumorLib.segmentation import SegmentationJob, SegmentationRequest

        request = SegmentationRequest(model=str(model), device=device, overlap=overlap, tta=tta)
        job = SegmentationJob(inputVolume, organSegmentation, request).start()
        if not job.wait(timeoutS):
            job.cancel()
            job.wait()
            raise TimeoutError(f"tumor segmentation did not finish within {timeoutS} s")
        if job.error is not None:
            raise job.error
        return job.outputs

    def startMatch(self, parameters, onProgress=None, onDone=None, onError=None):
        """Start matching ``reportsVolume`` against the ``reportsIndex`` folder (background process).

        Returns:
            a running ``FreeTumorLib.reports.MatchJob``; poll it from a timer.
        """
        from FreeTumorLib.reports import MatchJob, ReportsRequest

        request = ReportsRequest(index=_folder(parameters.reportsIndex), k=parameters.reportsK)
        job = MatchJob(
            parameters.reportsVolume, request, on_progress=onProgress, on_done=onDone, on_error=onError
        )
        return job.start()

    def startSearch(self, parameters, onProgress=None, onDone=None, onError=None):
        """Start searching the ``reportsCtIndex`` folder for ``reportsQuery`` (background process).

        Returns:
            a running ``FreeTumorLib.reports.SearchJob``; poll it from a timer.
        """
        from FreeTumorLib.reports import ReportsRequest, SearchJob

        request = ReportsRequest(index=_folder(parameters.reportsCtIndex), k=parameters.reportsK)
        job = SearchJob(
            parameters.reportsQuery, request, on_progress=onProgress, on_done=onDone, on_error=onError
        )
        return job.start()

    def matchReports(self, inputVolume, index, k=5, model="", device="auto", timeoutS=None):
        """Match a CT node against an index of reports and wait (blocks; for the console and tests).

        Returns:
            ``MatchOutputs``: the ``<CT> report matches`` table node and the matches (rank, score,
            report id and text, matched sentences).
        """
        from FreeTumorLib.reports import MatchJob, ReportsRequest

        job = MatchJob(
            inputVolume, ReportsRequest(index=str(index), k=k, model=str(model or ""), device=device)
        )
        return self._wait(job.start(), timeoutS, "report match")

    def searchCts(self, text, index, k=5, model="", device="auto", timeoutS=None):
        """Search an index of CTs for a finding and wait; returns the hits (rank, score, id, path)."""
        from FreeTumorLib.reports import ReportsRequest, SearchJob

        job = SearchJob(text, ReportsRequest(index=str(index), k=k, model=str(model or ""), device=device))
        return self._wait(job.start(), timeoutS, "CT search")

    @staticmethod
    def loadHit(hit, scene=None):
        """Load a search hit's CT as a volume node."""
        from FreeTumorLib.reports import load_hit

        return load_hit(scene or slicer.mrmlScene, hit)

    @staticmethod
    def _wait(job, timeoutS, what):
        if not job.wait(timeoutS):
            job.cancel()
            job.wait()
            raise TimeoutError(f"{what} did not finish within {timeoutS} s")
        if job.error is not None:
            raise job.error
        return job.outputs

    @staticmethod
    def centreViewsOn(rasMm, scene=None):
        """Centre every slice view on a point (RAS mm), e.g. a lesion's ``centre_ras_mm``."""
        from FreeTumorLib.segmentation import centre_views_on

        centre_views_on(scene or slicer.mrmlScene, rasMm)

    def synthesizeDatalist(
        self,
        datalist,
        outputFolder,
        organ="liver",
        size="small",
        count=1,
        seed=0,
        marginMm=3.0,
        timeoutS=None,
    ):
        """Synthesize tumors into every CT of a datalist (``{"training": [{"image", "label"}, ...]}``),
        one ``freetumor synthesize`` process per case, and wait (blocks).

        Each case is written to ``outputFolder/<NNN>_<image name>/`` (``ct.nii.gz``,
        ``labels.nii.gz`` + ``labels.json``, ``tumors.json``); case ``i`` uses seed ``seed + i``.

        Returns:
            one dict per case: ``image``, ``label``, ``output``, ``seed``, ``tumors`` (records).
        """
        if not dependencies.ensure_core():
            raise RuntimeError(dependencies.missing_core_message())
        from FreeTumorLib.batch import synthesize_datalist
        from FreeTumorLib.synthesis import SynthesisRequest

        request = SynthesisRequest(organ=organ, size=size, count=count, seed=seed, margin_mm=marginMm)
        return synthesize_datalist(datalist, outputFolder, request, timeout_s=timeoutS)


#
# Self-test
#
class FreeTumorTest(ScriptedLoadableModuleTest):
    """Runs the whole module path on the built-in phantom: nodes -> subprocess -> nodes."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_synthesis_on_phantom()

    def test_synthesis_on_phantom(self):
        import numpy as np
        from FreeTumorLib import nodes

        from freetumor_core.lesions import is_lesion_label
        from freetumor_core.phantom import make_phantom

        self.delayDisplay("Building the phantom")
        ct, labels = make_phantom(seed=0)
        ctNode = nodes.add_volume_node(slicer.mrmlScene, ct, "phantom")
        organs = nodes.add_segmentation_node(slicer.mrmlScene, labels, "phantom organs", reference=ctNode)

        self.delayDisplay("Synthesizing two small liver tumors")
        outputs = FreeTumorLogic().run(
            ctNode, organs, organ="liver", size="small", count=2, seed=3, timeoutS=600
        )

        self.assertEqual(outputs.volume.GetName(), "phantom synthetic")
        self.assertEqual(len(outputs.records), 2)
        self.assertEqual(outputs.table.GetNumberOfRows(), 2)
        synthetic = nodes.volume_from_node(outputs.volume)
        self.assertTrue(synthetic.same_grid(ct))
        changed = synthetic.array != ct.array
        self.assertTrue(changed.any())
        # Tumors change the CT only inside the liver.
        self.assertFalse((changed & ~labels.mask("liver")).any())
        for record in outputs.records:
            self.assertTrue(10.0 <= record.diameter_mm < 20.0, record)
        names = nodes.segment_names(outputs.segmentation)
        self.assertIn("liver", names)
        self.assertTrue(any(is_lesion_label(name) for name in names), names)
        self.assertEqual(outputs.markups.GetNumberOfControlPoints(), 2)
        self.assertTrue(np.isfinite(nodes.volume_from_node(outputs.volume).array).all())
        self.delayDisplay("Test passed")
