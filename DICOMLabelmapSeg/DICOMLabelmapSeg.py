"""DICOM Labelmap Segmentation: export segmentations as DICOM LABELMAP SEG and load them back.

The module panel, its logic and its self-tests. Every decision lives in the Qt-free use cases of
``DICOMLabelmapSegLib/app/`` (tested on slicer-core); this file wires them to widgets and dialogs.
The DICOM browser/Export dialog plugin is in ``DICOMLabelmapSegPlugin.py``.
"""

import logging
import os
import shutil
import tempfile
from typing import Annotated, Optional

import qt
import slicer
import vtk
from DICOMLabelmapSegLib.app import dependencies, examine, export, load, settings
from DICOMLabelmapSegLib.app.messages import userMessage
from DICOMLabelmapSegLib.errors import LabelmapSegError
from DICOMLabelmapSegPlugin import ProgressDialog, currentSettings, ensurePythonPackages
from DICOMLib import DICOMUtils
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

#
# DICOMLabelmapSeg
#


class DICOMLabelmapSeg(ScriptedLoadableModule):
    """Module metadata. The DICOM plugin registers itself from DICOMLabelmapSegPlugin.py."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("DICOM Labelmap Segmentation")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Informatics")]
        self.parent.dependencies = ["DICOM", "Segmentations"]
        self.parent.contributors = ["DICOMLabelmapSeg contributors"]
        self.parent.helpText = _(
            "Export segmentations as DICOM LABELMAP Segmentation (Label Map Segmentation Storage): one "
            "instance per layer, lossless, with a choice of compression, and load LABELMAP SEG series.\n\n"
            "In the 'Export to DICOM' dialog, 'DICOM LABELMAP Segmentation' is preselected for segmentations "
            "it can export. For a BINARY SEG (one bit plane per segment) click the 'DICOMSegmentationPlugin' "
            "row instead. The dialog's compression and palette color are set in Edit > Application Settings > "
            "DICOM (DICOMLabelmapSegPlugin) and by this module's Export button.\n\n"
            "A segmentation whose volume was not loaded from DICOM (NRRD, NIfTI, resampled): this module's "
            "Export button offers to export the volume as a new DICOM series first."
        )
        self.parent.acknowledgementText = _("Uses highdicom and pydicom.")


#
# DICOMLabelmapSegParameterNode
#


@parameterNodeWrapper
class DICOMLabelmapSegParameterNode:
    """State of the module panel (saved with the scene).

    segmentationNode - The segmentation to export.
    referenceVolumeNode - The volume whose images the SEG references (the segmentation itself is not changed).
    transferSyntax - Label of the chosen transfer syntax.
    paletteColor - Also store a palette color lookup table in the files.
    seriesDescription - Series Description of the SEG series (empty: the segmentation's name).
    contentCreatorName - Content Creator's Name of the SEG (optional).
    exportToDatabase - Add the SEG series to the DICOM database.
    exportToFolder - Write the files into outputFolder.
    outputFolder - Folder for the files ('' until the user chooses one; shown in a path line edit).
    initialized - The values were set (from the settings or by the user); a scene's values are kept.
    """

    segmentationNode: vtkMRMLSegmentationNode
    referenceVolumeNode: vtkMRMLScalarVolumeNode
    transferSyntax: Annotated[str, Choice(settings.syntaxChoices())] = settings.syntaxChoices()[0]
    paletteColor: bool = False
    seriesDescription: str = ""
    contentCreatorName: str = ""
    exportToDatabase: bool = True
    exportToFolder: bool = False
    outputFolder: str = ""
    initialized: bool = False


#
# DICOMLabelmapSegWidget
#


class DICOMLabelmapSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: thin wiring between the .ui file, the parameter node, settings and the logic."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._shownSegmentationID = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DICOMLabelmapSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = DICOMLabelmapSegLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.outputFolderPathLineEdit.connect("currentPathChanged(QString)", self.onOutputFolderChanged)
        self.ui.exportButton.connect("clicked(bool)", self.onExportButton)
        self.ui.importButton.connect("clicked(bool)", self.onImportButton)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        """Create or reuse the parameter node; a new one starts from the settings, a scene's keeps its values."""
        parameterNode = self.logic.getParameterNode()
        self.logic.applyPanelValues(
            parameterNode,
            settings.panelValuesOnEntry(
                parameterNode.initialized, self.logic.panelValues(parameterNode), currentSettings()
            ),
        )
        parameterNode.initialized = True
        if not parameterNode.segmentationNode:
            parameterNode.segmentationNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLSegmentationNode")
        self.setParameterNode(parameterNode)

    def setParameterNode(self, inputParameterNode: Optional[DICOMLabelmapSegParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self._parameterNode = inputParameterNode
        self._shownSegmentationID = None
        if self._parameterNode and self._parameterNode.referenceVolumeNode and self._parameterNode.segmentationNode:
            self._shownSegmentationID = self._parameterNode.segmentationNode.GetID()  # keep a scene's choice
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.ui.outputFolderPathLineEdit.currentPath = self._parameterNode.outputFolder
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
            self.onParameterNodeModified()

    def onOutputFolderChanged(self, path) -> None:
        if self._parameterNode and self._parameterNode.outputFolder != path:
            self._parameterNode.outputFolder = path

    def onParameterNodeModified(self, caller=None, event=None) -> None:
        """Show the segmentation's reference volume when the segmentation changes; update hints and buttons."""
        parameterNode = self._parameterNode
        if parameterNode is None:
            return
        segmentationNode = parameterNode.segmentationNode
        segmentationID = segmentationNode.GetID() if segmentationNode else None
        segmentationChanged = segmentationID != self._shownSegmentationID
        self._shownSegmentationID = segmentationID
        if segmentationNode:
            shown = export.panelReferenceVolume(
                segmentationChanged, parameterNode.referenceVolumeNode, export.referenceVolumeNode(segmentationNode)
            )
            if shown is not parameterNode.referenceVolumeNode:
                parameterNode.referenceVolumeNode = shown
        self.ui.syntaxExplanationLabel.text = settings.syntaxExplanation(parameterNode.transferSyntax)
        canExport = bool(segmentationNode) and (
            parameterNode.exportToDatabase
            or (parameterNode.exportToFolder and settings.outputFolderChosen(parameterNode.outputFolder))
        )
        self.ui.exportButton.enabled = canExport
        self.ui.exportButton.toolTip = (
            _("Export the segmentation as a DICOM LABELMAP Segmentation series")
            if canExport
            else _("Select a segmentation and an output (DICOM database or a folder)")
        )

    def onExportButton(self) -> None:
        parameterNode = self._parameterNode
        self.ui.statusText.plainText = ""
        try:
            status = self.logic.exportToDicom(parameterNode)
        except Exception as error:
            logging.error(f"Export failed: {error}")
            slicer.util.errorDisplay(userMessage(error), windowTitle=_("Export failed"))
            return
        self.ui.statusText.plainText = status

    def onImportButton(self) -> None:
        paths = qt.QFileDialog.getOpenFileNames(
            slicer.util.mainWindow(), _("Load DICOM Segmentation files"), "", _("DICOM files (*.dcm *);;All files (*)")
        )
        if not paths:
            return
        try:
            nodes = self.logic.loadSegFiles(paths)
        except Exception as error:
            logging.error(f"Loading failed: {error}")
            slicer.util.errorDisplay(userMessage(error), windowTitle=_("Loading failed"))
            return
        self.ui.statusText.plainText = _("Loaded: {names}").format(names=", ".join(n.GetName() for n in nodes))


#
# DICOMLabelmapSegLogic
#


class DICOMLabelmapSegLogic(ScriptedLoadableModuleLogic):
    """Slicer-side actions of the module panel (no widgets); decisions are in DICOMLabelmapSegLib.app."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return DICOMLabelmapSegParameterNode(super().getParameterNode())

    @staticmethod
    def panelValues(parameterNode):
        return settings.PanelValues(
            transferSyntax=parameterNode.transferSyntax,
            paletteColor=parameterNode.paletteColor,
            contentCreatorName=parameterNode.contentCreatorName,
            exportToDatabase=parameterNode.exportToDatabase,
            exportToFolder=parameterNode.exportToFolder,
            outputFolder=parameterNode.outputFolder,
        )

    @staticmethod
    def applyPanelValues(parameterNode, values) -> None:
        parameterNode.transferSyntax = values.transferSyntax
        parameterNode.paletteColor = values.paletteColor
        parameterNode.contentCreatorName = values.contentCreatorName
        parameterNode.exportToDatabase = values.exportToDatabase
        parameterNode.exportToFolder = values.exportToFolder
        parameterNode.outputFolder = values.outputFolder

    @staticmethod
    def saveSettings(values) -> dict:
        """Store the choices the user applied (the Export button) in the settings; returns them."""
        stored = qt.QSettings()
        applied = settings.settingsFromPanelValues(values)
        for key, value in applied.items():
            stored.setValue(key, value)
        return applied

    def exportVolumeFirst(self, volumeNode, segmentationNode) -> None:
        """Export a volume not from DICOM as a new DICOM series with Slicer's own scalar volume exporter
        (its dialog asks for patient and study), then let the SEG reference it."""
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        export.prepareVolumeExport(shNode, volumeNode, segmentationNode, _("Anonymous"), _("New study"))
        before = DICOMUtils.allSeriesUIDsInDatabase()
        dialog = slicer.qSlicerDICOMExportDialog()
        dialog.setMRMLScene(slicer.mrmlScene)
        dialog.execDialog(shNode.GetItemByDataNode(volumeNode))
        self.adoptNewVolumeSeries(volumeNode, before)

    @staticmethod
    def adoptNewVolumeSeries(volumeNode, seriesBefore) -> None:
        """After the volume was exported into the database: let it reference the new series' images."""
        seriesUID = export.exportedVolumeSeries(
            seriesBefore, DICOMUtils.allSeriesUIDsInDatabase(),
            lambda uid: slicer.dicomDatabase.fileValue(slicer.dicomDatabase.filesForSeries(uid, 1)[0], "0008,0060"),
        )
        if not seriesUID:
            raise LabelmapSegError(_(
                "The volume was not added to the DICOM database, so the SEG has no images to reference. "
                "Export it to the database (not only to a folder), then export the segmentation again."
            ))
        export.adoptExportedSeries(volumeNode, seriesUID, slicer.dicomDatabase.instancesForSeries(seriesUID))

    def exportToDicom(self, parameterNode) -> str:
        """Export the panel's segmentation; returns the status text (files, total size, time).

        Raises the library's errors (clear messages) for the caller to display once.
        """
        segmentationNode = parameterNode.segmentationNode
        if not segmentationNode:
            raise ValueError(_("Select a segmentation to export."))
        fileForInstance = slicer.dicomDatabase.fileForInstance
        plan = export.referencePlan(segmentationNode, fileForInstance, parameterNode.referenceVolumeNode)
        if plan.action is export.ReferenceAction.NO_VOLUME:
            raise ValueError(plan.message)
        if plan.action is export.ReferenceAction.EXPORT_VOLUME_FIRST:
            if not slicer.util.confirmYesNoDisplay(plan.message, windowTitle=_("Export the volume first?")):
                return _("Not exported: the reference volume is not in the DICOM database.")
            self.exportVolumeFirst(plan.volumeNode, segmentationNode)
            plan = export.referencePlan(segmentationNode, fileForInstance, plan.volumeNode)
            if plan.action is not export.ReferenceAction.READY:
                raise ValueError(plan.message)
        values = dict(currentSettings())
        values.update(self.saveSettings(self.panelValues(parameterNode)))
        options = export.exportOptions(
            values, export.exportTags(segmentationNode, values, parameterNode.seriesDescription)
        )
        problem = ensurePythonPackages([options.transfer_syntax.uid], forWriting=True)
        if problem:
            raise ValueError(problem)
        toFolder = parameterNode.exportToFolder and settings.outputFolderChosen(parameterNode.outputFolder)
        directory = parameterNode.outputFolder if toFolder else tempfile.mkdtemp(
            prefix="DICOMLabelmapSeg-", dir=slicer.app.temporaryPath
        )
        keepFiles = toFolder
        progress = ProgressDialog(_("Exporting DICOM LABELMAP Segmentation"))
        try:
            os.makedirs(directory, exist_ok=True)
            result = export.exportNode(
                segmentationNode, plan.volumeNode, plan.sourceFiles, directory, options, progress
            )
            status = result.summary()
            if toFolder:
                status += "\n" + _("Saved in folder {folder}").format(folder=directory)
            if parameterNode.exportToDatabase:
                if not DICOMUtils.importDicom(directory, copyFiles=True):
                    keepFiles = True  # the message points to them
                    raise LabelmapSegError(_(
                        "The files were written to {folder} but adding them to the DICOM database failed "
                        "(see the log); import that folder in the DICOM module."
                    ).format(folder=directory))
                if export.dicomBrowserIsOpen(slicer.modules):
                    DICOMUtils.refreshDICOMWidget()
                status += "\n" + _("Added to the DICOM database.")
        finally:
            progress.close()
            if not keepFiles:
                shutil.rmtree(directory, ignore_errors=True)
        logging.info(status)
        return status

    @staticmethod
    def loadSegFiles(paths):
        """Load SEG files or folders from disk without the DICOM database; returns the nodes."""
        specs = examine.loadableSpecsForFiles(load.expandPaths(paths))
        problem = ensurePythonPackages(sorted({uid for spec in specs for uid in spec.transferSyntaxUIDs}))
        if problem:
            raise ValueError(problem)
        return load.loadSegFilesWithoutDatabase(paths, slicer.mrmlScene)


#
# DICOMLabelmapSegTest
#

#: Public test data: TotalSegmentator's own test files (github.com/wasserth/TotalSegmentator, Apache-2.0) at
#: fixed commits: a CT (122 x 101 x 112 voxels, 3 mm) and its TotalSegmentator "total" label map.
#: (url, file name in Slicer's cache, checksum) as SampleDataLogic.downloadFileIntoCache takes them.
TOTALSEGMENTATOR_CT = (
    "https://raw.githubusercontent.com/wasserth/TotalSegmentator/0effae9d718aab0c118ce1f8982dcd16b9e32a50/"
    "tests/reference_files/example_ct.nii.gz",
    "DICOMLabelmapSeg-TotalSegmentator-example_ct.nii.gz",
    "SHA256:dbd3ae6d614d1d7ef3a46925c30c70038ed52da6b37fdd6afdc7b9b71387e3e1",
)
TOTALSEGMENTATOR_LABELMAP = (
    "https://raw.githubusercontent.com/wasserth/TotalSegmentator/853cd2fea2e8870e473dba2f911b989a54b6e274/"
    "tests/reference_files/example_seg_fast_force_split.nii.gz",
    "DICOMLabelmapSeg-TotalSegmentator-example_seg_fast_force_split.nii.gz",
    "SHA256:e8097758e56e73099075b6caaebce23ef11bc6fad66a4ec3753b9406846558c7",
)
LIVER_TERMINOLOGY = (
    "Segmentation category and type - DICOM master list~SCT^85756007^Tissue~SCT^10200004^Liver~^^~"
    "Anatomic codes - DICOM master list~^^~^^"
)


def writeSyntheticCtSeries(directory, shape=(6, 20, 24), spacing=(2.5, 0.9, 0.8), origin=(-20.0, -15.0, 40.0)):
    """Write an axial CT series (one file per slice, uncompressed) with pydicom; returns the paths.

    Ramp-valued pixels; real UIDs; position/orientation/spacing set so Slicer loads a known geometry.
    """
    import numpy as np
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    os.makedirs(directory, exist_ok=True)
    studyUID, seriesUID, frameUID = generate_uid(), generate_uid(), generate_uid()
    slices, rows, columns = shape
    paths = []
    for k in range(slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Labelmap^Test", "DLS-TEST", "", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = studyUID, seriesUID, frameUID
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", ""
        ds.ReferringPhysicianName = ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.Manufacturer = "CT", 1, k + 1, "Synthetic"
        ds.SeriesDescription, ds.PatientPosition, ds.Laterality, ds.AcquisitionNumber = "Synthetic CT", "HFS", "", 1
        ds.PositionReferenceIndicator = ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + k * spacing[0]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [spacing[1], spacing[2]]
        ds.SliceThickness = spacing[0]
        ds.Rows, ds.Columns = rows, columns
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.KVP = 0, 1, 120
        pixels = (np.add.outer(np.arange(rows), np.arange(columns)) * 10 + k * 100).astype(np.int16)
        ds.PixelData = pixels.tobytes()
        path = os.path.join(directory, f"ct{k:03d}.dcm")
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


class DICOMLabelmapSegTestMixin:
    """setUp/tearDown and helpers shared by the self-tests (also Testing/Python/DICOMLabelmapSegFailureTest.py).

    Nothing is installed: what the running Slicer lacks is skipped with the names of the packages.
    """

    def setUp(self):
        slicer.mrmlScene.Clear(0)
        self.tempDir = tempfile.mkdtemp(prefix="DICOMLabelmapSegTest-", dir=slicer.app.temporaryPath)
        self.settings = qt.QSettings()
        self.savedSettings = {key: self.settings.value(key) for key in settings.SETTINGS_DEFAULTS}
        problem = dependencies.environmentProblem()
        if problem:
            self.skipTest(problem)
        missing = dependencies.missingRequirements()
        if missing:
            self.skipTest("This Slicer lacks the Python package(s) " + ", ".join(missing) + " (not installed by tests)")
        self.syntaxes, skipped = dependencies.syntaxesUsableHere()
        for line in skipped:
            logging.warning(line)
        if not self.syntaxes:
            self.skipTest("No transfer syntax can be written and read here: " + "; ".join(skipped))

    def tearDown(self):
        for key, value in self.savedSettings.items():  # the user's own choices stay as they were
            if value is None:
                self.settings.remove(key)
            else:
                self.settings.setValue(key, value)
        shutil.rmtree(self.tempDir, ignore_errors=True)

    # Helpers -----------------------------------------------------------------------------------

    def loadDicomVolume(self, ctPaths):
        """Import the CT files into the current (temporary) database and load them as a volume."""
        self.assertTrue(DICOMUtils.importDicom(os.path.dirname(ctPaths[0])), "CT import into the database failed")
        import pydicom

        return self.loadSeriesAsVolume(pydicom.dcmread(ctPaths[0], stop_before_pixels=True).SeriesInstanceUID)

    def loadSeriesAsVolume(self, seriesUID):
        nodeIDs = DICOMUtils.loadSeriesByUID([seriesUID])  # test set-up only: the CT, by core's plugin
        volumes = [slicer.mrmlScene.GetNodeByID(i) for i in nodeIDs]
        volumes = [v for v in volumes if v and v.IsA("vtkMRMLScalarVolumeNode")]
        self.assertEqual(len(volumes), 1, "the CT series should load as one scalar volume")
        self.assertTrue(volumes[0].GetAttribute("DICOM.instanceUIDs"), "volume lacks DICOM.instanceUIDs")
        return volumes[0]

    def makeSegmentationNode(self, volumeNode, ctPaths, name="Overlapping segments"):
        """Two layers: 'Liver' and 'Tumor' in layer 0, overlapping 'Region' in layer 1, with terminology."""
        import numpy as np
        from DICOMLabelmapSegLib.dicom.source import geometry_from_source, read_source_series
        from DICOMLabelmapSegLib.model import Code, Layer, Segment, Segmentation, Terminology

        geometry = geometry_from_source(read_source_series(ctPaths))
        layer0 = np.zeros(geometry.shape, np.uint8)
        layer0[1:4, 3:12, 4:14] = 1
        layer0[2:5, 12:16, 14:20] = 2
        layer1 = np.zeros(geometry.shape, np.uint8)
        layer1[0:3, 5:15, 8:18] = 1  # overlaps both segments of layer 0
        tissue = Code("85756007", "SCT", "Tissue")
        liver = Terminology(tissue, Code("10200004", "SCT", "Liver"))
        tumor = Terminology(
            Code("49755003", "SCT", "Morphologically Altered Structure"),
            Code("108369006", "SCT", "Neoplasm"),
            region=Code("10200004", "SCT", "Liver"),
            region_modifier=Code("24028007", "SCT", "Right"),
        )
        segmentation = Segmentation(
            geometry,
            [
                Layer(layer0, [Segment(1, "Liver", (221, 130, 101), liver), Segment(2, "Tumor", (144, 238, 4), tumor)]),
                Layer(layer1, [Segment(1, "Region", (30, 144, 255)), Segment(2, "Empty", (250, 250, 0))]),
            ],
        )
        return self.nodeInStudyOf(segmentation, volumeNode, name)

    def nodeInStudyOf(self, segmentation, volumeNode, name):
        from DICOMLabelmapSegLib.mrml import node_from_segmentation

        node = node_from_segmentation(segmentation, slicer.mrmlScene, name=name, referenceVolumeNode=volumeNode)
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        studyItem = shNode.GetItemParent(shNode.GetItemByDataNode(volumeNode))
        shNode.SetItemParent(shNode.GetItemByDataNode(node), studyItem)
        return node

    def exportWithPlugin(self, segmentationNode, directory):
        """What the Export to DICOM dialog does: examineForExport on every plugin, then export()."""
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        itemID = shNode.GetItemByDataNode(segmentationNode)
        plugin = slicer.modules.dicomPlugins[examine.PLUGIN_KEY]()
        exportables = plugin.examineForExport(itemID)
        self.assertEqual(len(exportables), 1, "one exportable per segmentation")
        os.makedirs(directory, exist_ok=True)
        for exportable in exportables:
            exportable.directory = directory
        return exportables, plugin.export(exportables)

    def assertPreselectedInExportDialog(self, segmentationNode):
        """Every plugin's exportables as the dialog collects them; ours must be the preselected group."""
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        itemID = shNode.GetItemByDataNode(segmentationNode)
        confidences = {}
        for key, pluginClass in slicer.modules.dicomPlugins.items():
            try:  # as the dialog does: a failing plugin is logged, not fatal
                found = pluginClass().examineForExport(itemID)
            except Exception as error:
                logging.warning(f"{key}.examineForExport failed: {error}")
                continue
            if found:
                confidences[key] = sum(e.confidence for e in found) / len(found)
        self.assertEqual(export.preselectedExporter(confidences), examine.PLUGIN_KEY, f"preselected: {confidences}")

    def exportAndCheckFiles(self, segmentationNode, syntax, palette, layers):
        """Export through the plugin in ``syntax``; the files are checked and indexed; returns them."""
        import pydicom

        self.settings.setValue(settings.SETTINGS_TRANSFER_SYNTAX, syntax.value)
        self.settings.setValue(settings.SETTINGS_PALETTE_COLOR, str(palette).lower())
        directory = os.path.join(self.tempDir, f"{segmentationNode.GetID()}-{syntax.value}")
        exportables, error = self.exportWithPlugin(segmentationNode, directory)
        self.assertEqual(exportables[0].confidence, export.EXPORT_CONFIDENCE, exportables[0].tooltip)
        self.assertEqual(error, "", f"export in {syntax.label} failed: {error}")
        written = sorted(os.listdir(directory))
        self.assertEqual(len(written), layers, f"one LABELMAP instance per layer expected, got {written}")
        first = pydicom.dcmread(os.path.join(directory, written[0]), stop_before_pixels=True)
        self.assertEqual(first.file_meta.TransferSyntaxUID, syntax.uid, "wrong transfer syntax written")
        self.assertEqual(first.PhotometricInterpretation == "PALETTE COLOR", palette, "palette setting ignored")
        self.assertTrue(DICOMUtils.importDicom(directory), "SEG import into the database failed")
        files = slicer.dicomDatabase.filesForSeries(first.SeriesInstanceUID)
        self.assertEqual(len(files), layers, "every instance of the SEG series is in the database")
        return files

    def loadThroughBrowser(self, files, layers):
        """What the DICOM browser does: examine with every plugin, preselect, load the selection (ours)."""
        loadablesByPlugin, loadEnabled = DICOMUtils.getLoadablesFromFileLists([files])
        DICOMUtils.selectHighestConfidenceLoadables(loadablesByPlugin)
        ours = [
            loadable for plugin, loadables in loadablesByPlugin.items() for loadable in loadables
            if isinstance(plugin, slicer.modules.dicomPlugins[examine.PLUGIN_KEY])
        ]
        self.assertEqual(len(ours), 1, "one loadable for the whole LABELMAP series")
        self.assertTrue(ours[0].selected, "our LABELMAP loadable must be preselected")
        self.assertIn(f"{layers} layer", ours[0].name)
        for plugin in loadablesByPlugin:  # load only ours
            for loadable in loadablesByPlugin[plugin]:
                loadable.selected = loadable in ours
        volumesBefore = slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
        nodeIDs = DICOMUtils.loadLoadables(loadablesByPlugin)
        loaded = [slicer.mrmlScene.GetNodeByID(i) for i in nodeIDs]
        loaded = [n for n in loaded if n and n.IsA("vtkMRMLSegmentationNode")]
        self.assertEqual(len(loaded), 1, "one segmentation node loaded")
        self.assertEqual(
            slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"), volumesBefore,
            "loading the SEG must not load its referenced series (the browser asks the user about it)",
        )
        return loaded[0]

    def assertSameSegmentation(self, expected, node, volumeNode, what):
        from DICOMLabelmapSegLib.model import differences
        from DICOMLabelmapSegLib.mrml import segmentation_from_node

        found = differences(expected, segmentation_from_node(node, volumeNode))
        self.assertEqual(found, [], f"{what}: round trip differs: {found}")


class DICOMLabelmapSegTest(DICOMLabelmapSegTestMixin, ScriptedLoadableModuleTest):
    """Inside Slicer: export through the plugin in every transfer syntax this Slicer can write and read,
    re-import through the DICOM browser's path (examine -> select -> load), node-to-node comparison.
    A synthetic case and real data (TotalSegmentator's CT and label map, downloaded with pinned SHA-256).
    Failure paths are tested in Testing/Python/DICOMLabelmapSegFailureTest.py."""

    def runTest(self):
        for name in ("test_RoundTripEveryTransferSyntax", "test_VolumeNotFromDicomIsExportedFirst",
                     "test_TotalSegmentatorRoundTrip"):
            self.setUp()
            try:
                getattr(self, name)()
            finally:
                self.tearDown()

    def test_RoundTripEveryTransferSyntax(self):
        from DICOMLabelmapSegLib.mrml import segmentation_from_node

        self.assertIn(examine.PLUGIN_KEY, slicer.modules.dicomPlugins, "plugin is not registered")
        with DICOMUtils.TemporaryDICOMDatabase(os.path.join(self.tempDir, "db")):
            ctPaths = writeSyntheticCtSeries(os.path.join(self.tempDir, "ct"))
            volumeNode = self.loadDicomVolume(ctPaths)
            original = self.makeSegmentationNode(volumeNode, ctPaths)
            self.assertEqual(original.GetSegmentation().GetNumberOfLayers(), 2, "overlap needs two layers")
            self.assertPreselectedInExportDialog(original)
            expected = segmentation_from_node(original, volumeNode)
            for index, syntax in enumerate(self.syntaxes):
                palette = index % 2 == 1  # palette color LUT on every other syntax
                self.delayDisplay(f"Export and re-import as {syntax.label}, palette color {palette}", 10)
                files = self.exportAndCheckFiles(original, syntax, palette, layers=2)
                loaded = self.loadThroughBrowser(files, layers=2)
                self.assertIs(export.referenceVolumeNode(loaded), volumeNode, "reference volume not set")
                self.assertSameSegmentation(expected, loaded, volumeNode, syntax.label)
                slicer.mrmlScene.RemoveNode(loaded)
        self.delayDisplay("Round trip in every usable transfer syntax passed")

    def exportVolumeAsDicom(self, volumeNode, directory, newStudy=True):
        """Write a volume as a DICOM CT series with Slicer's own scalar volume exporter."""
        from DICOMLabelmapSegLib.mrml import put_in_new_study

        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        if newStudy:
            itemID = put_in_new_study([volumeNode], "TotalSegmentator^Example", "Example study")
            self.assertEqual(shNode.GetItemParent(shNode.GetItemByDataNode(volumeNode)), itemID)
        volumeItem = shNode.GetItemByDataNode(volumeNode)
        exporter = slicer.modules.dicomPlugins["DICOMScalarVolumePlugin"]()
        exportables = exporter.examineForExport(volumeItem)
        os.makedirs(directory, exist_ok=True)
        for exportable in exportables:
            exportable.directory = directory
            exportable.setTag("PatientName", "TotalSegmentator^Example")
            exportable.setTag("PatientID", "TS-EXAMPLE")
            exportable.setTag("StudyID", "1")
            exportable.setTag("SeriesDescription", "TotalSegmentator example CT")
        self.assertEqual(exporter.export(exportables), "", "Slicer's scalar volume export failed")

    def test_VolumeNotFromDicomIsExportedFirst(self):
        """A segmentation on a volume that is not from DICOM: the volume goes to the database as a new series
        (Slicer's scalar volume exporter), then the SEG references it and loads back onto it."""
        from DICOMLabelmapSegLib.mrml import segmentation_from_node

        with DICOMUtils.TemporaryDICOMDatabase(os.path.join(self.tempDir, "db")):
            ctPaths = writeSyntheticCtSeries(os.path.join(self.tempDir, "ct"))
            dicomVolume = self.loadDicomVolume(ctPaths)
            original = self.makeSegmentationNode(dicomVolume, ctPaths)
            volumeNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "Not from DICOM")
            volumeNode.CopyOrientation(dicomVolume)
            volumeNode.SetAndObserveImageData(dicomVolume.GetImageData())
            original.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
            slicer.mrmlScene.RemoveNode(dicomVolume)
            plan = export.referencePlan(original, slicer.dicomDatabase.fileForInstance)
            self.assertIs(plan.action, export.ReferenceAction.EXPORT_VOLUME_FIRST, plan.message)
            exportables, error = self.exportWithPlugin(original, os.path.join(self.tempDir, "refused"))
            self.assertIn("DICOM Labelmap Segmentation module", error, "the dialog says where to go")

            shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
            export.prepareVolumeExport(shNode, volumeNode, original, "Anonymous", "New study")
            before = DICOMUtils.allSeriesUIDsInDatabase()
            directory = os.path.join(self.tempDir, "volume")
            self.exportVolumeAsDicom(volumeNode, directory, newStudy=False)  # what the dialog runs
            self.assertTrue(DICOMUtils.importDicom(directory), "volume import into the database failed")
            DICOMLabelmapSegLogic.adoptNewVolumeSeries(volumeNode, before)
            plan = export.referencePlan(original, slicer.dicomDatabase.fileForInstance)
            self.assertIs(plan.action, export.ReferenceAction.READY, plan.message)
            expected = segmentation_from_node(original, volumeNode)
            files = self.exportAndCheckFiles(original, self.syntaxes[0], False, layers=2)
            loaded = self.loadThroughBrowser(files, layers=2)
            self.assertIs(export.referenceVolumeNode(loaded), volumeNode, "the SEG references the exported volume")
            self.assertSameSegmentation(expected, loaded, volumeNode, "volume exported first")

    def test_TotalSegmentatorRoundTrip(self):
        """Real CT and TotalSegmentator label map: CT through the DICOM database, LABELMAP export in every
        usable syntax, browser load with the CT in the scene and without it."""
        import numpy as np
        import pydicom
        import SampleData
        from DICOMLabelmapSegLib.model import Layer, Segment
        from DICOMLabelmapSegLib.mrml import segmentation_from_node, set_terminology_entry

        sampleData = SampleData.SampleDataLogic()
        ctPath = sampleData.downloadFileIntoCache(*TOTALSEGMENTATOR_CT)
        labelmapPath = sampleData.downloadFileIntoCache(*TOTALSEGMENTATOR_LABELMAP)
        self.assertTrue(ctPath and labelmapPath, "download failed (checksum mismatch or no network)")
        with DICOMUtils.TemporaryDICOMDatabase(os.path.join(self.tempDir, "db")):
            niftiVolume = slicer.util.loadVolume(ctPath)
            ctDirectory = os.path.join(self.tempDir, "ct-dicom")
            self.exportVolumeAsDicom(niftiVolume, ctDirectory)
            self.assertTrue(DICOMUtils.importDicom(ctDirectory), "CT import into the database failed")
            ctFiles = [os.path.join(d, f) for d, _, names in os.walk(ctDirectory) for f in names]
            seriesUID = pydicom.dcmread(ctFiles[0], stop_before_pixels=True).SeriesInstanceUID
            slicer.mrmlScene.RemoveNode(niftiVolume)
            ctVolume = self.loadSeriesAsVolume(seriesUID)

            labelmapNode = slicer.util.loadLabelVolume(labelmapPath)
            imported = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "TotalSegmentator import")
            imported.SetReferenceImageGeometryParameterFromVolumeNode(ctVolume)
            self.assertTrue(
                slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelmapNode, imported)
            )
            firstSegment = imported.GetSegmentation().GetNthSegment(0)
            set_terminology_entry(firstSegment, LIVER_TERMINOLOGY)
            model = segmentation_from_node(imported, ctVolume)
            self.assertGreater(len(model.layers[0].segments), 20, "TotalSegmentator's label map has many organs")
            overlap = (model.layers[0].labels > 0).astype(np.uint8)  # overlaps every organ: a second layer
            model.layers.append(Layer(overlap, [Segment(1, "Body region", (200, 180, 40))]))
            original = self.nodeInStudyOf(model, ctVolume, "TotalSegmentator")
            for node in (imported, labelmapNode):
                slicer.mrmlScene.RemoveNode(node)
            self.assertEqual(original.GetSegmentation().GetNumberOfLayers(), 2)
            self.assertPreselectedInExportDialog(original)
            expected = segmentation_from_node(original, ctVolume)

            exported = []
            for index, syntax in enumerate(self.syntaxes):
                self.delayDisplay(f"TotalSegmentator: {syntax.label}", 10)
                files = self.exportAndCheckFiles(original, syntax, index % 2 == 1, layers=2)
                loaded = self.loadThroughBrowser(files, layers=2)
                self.assertIs(export.referenceVolumeNode(loaded), ctVolume, "the CT in the scene is the reference")
                self.assertSameSegmentation(expected, loaded, ctVolume, f"TotalSegmentator {syntax.label}")
                slicer.mrmlScene.RemoveNode(loaded)
                exported.append((syntax, files))

            ctGeometryVolume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT grid copy")
            ctGeometryVolume.CopyOrientation(ctVolume)
            ctGeometryVolume.SetAndObserveImageData(ctVolume.GetImageData())
            slicer.mrmlScene.RemoveNode(original)
            slicer.mrmlScene.RemoveNode(ctVolume)  # now the referenced CT is not in the scene
            for syntax, files in exported[:2]:
                loaded = self.loadThroughBrowser(files, layers=2)
                self.assertIsNone(export.referenceVolumeNode(loaded), "no reference volume in the scene")
                self.assertSameSegmentation(expected, loaded, ctGeometryVolume, f"without CT, {syntax.label}")
                slicer.mrmlScene.RemoveNode(loaded)
        self.delayDisplay("TotalSegmentator round trip passed")
