"""DICOM Labelmap Segmentation: export segmentations as DICOM LABELMAP SEG and load them back.

The module panel, its logic and its self-test. Every decision lives in
``DICOMLabelmapSegLib/slicerlogic.py`` (tested on slicer-core); this file wires it to Qt.
The DICOM browser/export-dialog plugin is in ``DICOMLabelmapSegPlugin.py``.
"""

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Optional

import qt
import slicer
import vtk
from DICOMLabelmapSegLib.app import slicerlogic
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
            "instance per layer, lossless, with a choice of compression, and load LABELMAP SEG series. "
            "Settings chosen here are also used by the 'Export to DICOM' dialog."
        )
        self.parent.acknowledgementText = _("Uses highdicom and pydicom.")


#
# DICOMLabelmapSegParameterNode
#


@parameterNodeWrapper
class DICOMLabelmapSegParameterNode:
    """State of the module panel.

    segmentationNode - The segmentation to export.
    referenceVolumeNode - The DICOM volume the SEG references (the segmentation's reference geometry).
    transferSyntax - Label of the chosen transfer syntax.
    paletteColor - Also store a palette color lookup table in the files.
    seriesDescription - Series Description of the SEG series (empty: the segmentation's name).
    contentCreatorName - Content Creator's Name of the SEG (optional).
    exportToDatabase - Add the SEG series to the DICOM database.
    exportToFolder - Write the files into outputFolder.
    outputFolder - Folder for the files.
    """

    segmentationNode: vtkMRMLSegmentationNode
    referenceVolumeNode: vtkMRMLScalarVolumeNode
    transferSyntax: Annotated[str, Choice(slicerlogic.syntaxChoices())] = slicerlogic.syntaxChoices()[0]
    paletteColor: bool = False
    seriesDescription: str = ""
    contentCreatorName: str = ""
    exportToDatabase: bool = True
    exportToFolder: bool = False
    outputFolder: Path = Path()


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

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DICOMLabelmapSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = DICOMLabelmapSegLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

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
        """Create or reuse the parameter node; choices come from the persistent settings."""
        parameterNode = self.logic.getParameterNode()
        self.logic.applySettingsToParameterNode(parameterNode, currentSettings())
        if not parameterNode.segmentationNode:
            parameterNode.segmentationNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLSegmentationNode")
        self.setParameterNode(parameterNode)

    def setParameterNode(self, inputParameterNode: Optional[DICOMLabelmapSegParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
            self.onParameterNodeModified()

    def onParameterNodeModified(self, caller=None, event=None) -> None:
        """Keep the reference volume in step with the segmentation, save settings, update hints."""
        parameterNode = self._parameterNode
        if parameterNode is None:
            return
        self.logic.syncReferenceVolume(parameterNode)
        self.logic.saveSettings(parameterNode)
        self.ui.syntaxExplanationLabel.text = slicerlogic.syntaxExplanation(parameterNode.transferSyntax)
        canExport = bool(parameterNode.segmentationNode) and (
            parameterNode.exportToDatabase
            or (parameterNode.exportToFolder and slicerlogic.outputFolderChosen(parameterNode.outputFolder))
        )
        self.ui.exportButton.enabled = canExport
        self.ui.exportButton.toolTip = (
            _("Export the segmentation as a DICOM LABELMAP Segmentation series")
            if canExport
            else _("Select a segmentation and an output (DICOM database or a folder)")
        )

    def onExportButton(self) -> None:
        parameterNode = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Export failed."), waitCursor=True):
            self.ui.statusText.plainText = ""
            status = self.logic.exportToDicom(parameterNode, currentSettings())
            self.ui.statusText.plainText = status

    def onImportButton(self) -> None:
        paths = qt.QFileDialog.getOpenFileNames(
            slicer.util.mainWindow(), _("Load DICOM Segmentation files"), "", _("DICOM files (*.dcm *);;All files (*)")
        )
        if not paths:
            return
        with slicer.util.tryWithErrorDisplay(_("Loading failed."), waitCursor=True):
            nodes = self.logic.loadSegFiles(paths)
            self.ui.statusText.plainText = _("Loaded: {names}").format(names=", ".join(n.GetName() for n in nodes))


#
# DICOMLabelmapSegLogic
#


class DICOMLabelmapSegLogic(ScriptedLoadableModuleLogic):
    """Slicer-side actions of the module panel (no widgets); decisions are in slicerlogic."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return DICOMLabelmapSegParameterNode(super().getParameterNode())

    @staticmethod
    def applySettingsToParameterNode(parameterNode, settings) -> None:
        """Initialize the panel's choices from QSettings (they persist across sessions)."""
        parameterNode.transferSyntax = slicerlogic.syntaxFromSetting(
            settings[slicerlogic.SETTINGS_TRANSFER_SYNTAX]
        ).label
        parameterNode.paletteColor = slicerlogic.toBool(settings[slicerlogic.SETTINGS_PALETTE_COLOR])
        parameterNode.seriesDescription = str(settings[slicerlogic.SETTINGS_SERIES_DESCRIPTION] or "")
        parameterNode.contentCreatorName = str(settings[slicerlogic.SETTINGS_CONTENT_CREATOR_NAME] or "")
        parameterNode.exportToDatabase = slicerlogic.toBool(settings[slicerlogic.SETTINGS_EXPORT_TO_DATABASE])
        parameterNode.exportToFolder = slicerlogic.toBool(settings[slicerlogic.SETTINGS_EXPORT_TO_FOLDER])
        parameterNode.outputFolder = Path(str(settings[slicerlogic.SETTINGS_OUTPUT_FOLDER] or ""))

    @staticmethod
    def saveSettings(parameterNode) -> None:
        """Store the panel's choices in QSettings, where the export plugin reads them too."""
        settings = qt.QSettings()
        settings.setValue(
            slicerlogic.SETTINGS_TRANSFER_SYNTAX, slicerlogic.syntaxFromSetting(parameterNode.transferSyntax).value
        )
        settings.setValue(slicerlogic.SETTINGS_PALETTE_COLOR, str(parameterNode.paletteColor).lower())
        settings.setValue(slicerlogic.SETTINGS_SERIES_DESCRIPTION, parameterNode.seriesDescription)
        settings.setValue(slicerlogic.SETTINGS_CONTENT_CREATOR_NAME, parameterNode.contentCreatorName)
        settings.setValue(slicerlogic.SETTINGS_EXPORT_TO_DATABASE, str(parameterNode.exportToDatabase).lower())
        settings.setValue(slicerlogic.SETTINGS_EXPORT_TO_FOLDER, str(parameterNode.exportToFolder).lower())
        settings.setValue(slicerlogic.SETTINGS_OUTPUT_FOLDER, str(parameterNode.outputFolder))

    def syncReferenceVolume(self, parameterNode) -> None:
        """Show the segmentation's reference volume; a volume the user picks becomes its reference."""
        segmentationNode = parameterNode.segmentationNode
        segmentationID = segmentationNode.GetID() if segmentationNode else None
        segmentationChanged = segmentationID != getattr(self, "_lastSegmentationID", None)
        self._lastSegmentationID = segmentationID
        if not segmentationNode:
            return
        action, volumeNode = slicerlogic.referenceVolumeUpdate(
            segmentationChanged, parameterNode.referenceVolumeNode, slicerlogic.referenceVolumeNode(segmentationNode)
        )
        if action == "show":
            parameterNode.referenceVolumeNode = volumeNode
        elif action == "apply":
            segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)

    def exportToDicom(self, parameterNode, settings) -> str:
        """Export the panel's segmentation; returns the status text (files and sizes).

        Raises the library's errors (clear messages) for the caller to display.
        """
        segmentationNode = parameterNode.segmentationNode
        if not segmentationNode:
            raise ValueError(_("Select a segmentation to export."))
        volumeNode, sourceFiles = slicerlogic.sourceFilesForSegmentation(
            segmentationNode, slicer.dicomDatabase.fileForInstance, parameterNode.referenceVolumeNode
        )
        options = slicerlogic.exportOptions(settings, slicerlogic.exportTags(segmentationNode, settings))
        if not ensurePythonPackages([options.transfer_syntax.uid], forWriting=True):
            raise ValueError(_("Export needs Python packages that are not installed."))
        temporaryDirectory = tempfile.mkdtemp(prefix="DICOMLabelmapSeg-", dir=slicer.app.temporaryPath)
        progress = ProgressDialog(_("Exporting DICOM LABELMAP Segmentation"))
        try:
            paths = slicerlogic.exportSegmentation(
                segmentationNode, volumeNode, sourceFiles, temporaryDirectory, options, progress
            )
            status = slicerlogic.formatFileSizes(paths)
            if parameterNode.exportToFolder and slicerlogic.outputFolderChosen(parameterNode.outputFolder):
                folder = Path(parameterNode.outputFolder)
                folder.mkdir(parents=True, exist_ok=True)
                copied = []
                try:
                    for path in paths:
                        copied.append(folder / Path(path).name)
                        shutil.copy2(path, copied[-1])
                except BaseException:
                    for path in copied:  # all files of the series or none
                        path.unlink(missing_ok=True)
                    raise
                status += "\n" + _("Saved in folder {folder}").format(folder=folder)
            if parameterNode.exportToDatabase:
                DICOMUtils.importDicom(temporaryDirectory, copyFiles=True)
                DICOMUtils.refreshDICOMWidget()
                status += "\n" + _("Added to the DICOM database.")
        finally:
            progress.close()
            shutil.rmtree(temporaryDirectory, ignore_errors=True)
        logging.info(status)
        return status

    @staticmethod
    def loadSegFiles(paths):
        """Load SEG files or folders from disk without the DICOM database; returns the nodes."""
        specs = slicerlogic.loadableSpecsForFiles(slicerlogic.expandPaths(paths))
        syntaxes = sorted({uid for spec in specs for uid in spec.transferSyntaxUIDs})
        if not ensurePythonPackages(syntaxes):
            raise ValueError(_("Loading needs Python packages that are not installed."))
        return slicerlogic.loadSegFilesWithoutDatabase(paths, slicer.mrmlScene)


#
# DICOMLabelmapSegTest
#


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

    Test data is generated here (a synthetic CT series written with pydicom); nothing is downloaded.
    """

    def setUp(self):
        slicer.mrmlScene.Clear(0)
        self.tempDir = tempfile.mkdtemp(prefix="DICOMLabelmapSegTest-", dir=slicer.app.temporaryPath)
        self.settings = qt.QSettings()
        self.savedSettings = {key: self.settings.value(key) for key in slicerlogic.SETTINGS_DEFAULTS}
        problem = slicerlogic.environmentProblem()
        if problem:
            self.skipTest(problem)
        missing = slicerlogic.missingPackages()
        if missing:
            slicer.util.pip_install(missing)
            if slicerlogic.restartNeededAfterInstall(missing, __import__("sys").modules):
                self.skipTest("Python packages were upgraded (pydicom); run the test again after restarting Slicer")

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

        seriesUID = pydicom.dcmread(ctPaths[0], stop_before_pixels=True).SeriesInstanceUID
        nodeIDs = DICOMUtils.loadSeriesByUID([seriesUID])
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
        from DICOMLabelmapSegLib.mrml import node_from_segmentation

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
        node = node_from_segmentation(segmentation, slicer.mrmlScene, name=name)
        node.CreateDefaultDisplayNodes()
        node.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        studyItem = shNode.GetItemParent(shNode.GetItemByDataNode(volumeNode))
        shNode.SetItemParent(shNode.GetItemByDataNode(node), studyItem)
        return node

    def exportWithPlugin(self, segmentationNode, directory):
        """What the Export to DICOM dialog does: examineForExport on every plugin, then export()."""
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        itemID = shNode.GetItemByDataNode(segmentationNode)
        plugin = slicer.modules.dicomPlugins[slicerlogic.PLUGIN_KEY]()
        exportables = plugin.examineForExport(itemID)
        self.assertEqual(len(exportables), 1, "one exportable per segmentation")
        os.makedirs(directory, exist_ok=True)
        for exportable in exportables:
            exportable.directory = directory
        return exportables, plugin.export(exportables)



class DICOMLabelmapSegTest(DICOMLabelmapSegTestMixin, ScriptedLoadableModuleTest):
    """Inside Slicer: a DICOM volume in a temporary database, overlapping segments with terminology,
    export through the plugin in every transfer syntax, re-import through the DICOMUtils loadables
    path (as the DICOM browser does), node-to-node comparison. Failure paths are tested in
    Testing/Python/DICOMLabelmapSegFailureTest.py."""

    def runTest(self):
        self.setUp()
        try:
            self.test_RoundTripEveryTransferSyntax()
        finally:
            self.tearDown()

    def test_RoundTripEveryTransferSyntax(self):
        from DICOMLabelmapSegLib.dicom.syntax import TransferSyntax
        from DICOMLabelmapSegLib.model import differences
        from DICOMLabelmapSegLib.mrml import segmentation_from_node

        self.assertIn(slicerlogic.PLUGIN_KEY, slicer.modules.dicomPlugins, "plugin is not registered")
        with DICOMUtils.TemporaryDICOMDatabase(os.path.join(self.tempDir, "db")):
            ctPaths = writeSyntheticCtSeries(os.path.join(self.tempDir, "ct"))
            volumeNode = self.loadDicomVolume(ctPaths)
            original = self.makeSegmentationNode(volumeNode, ctPaths)
            self.assertEqual(original.GetSegmentation().GetNumberOfLayers(), 2, "overlap needs two layers")
            expected = segmentation_from_node(original)
            for index, syntax in enumerate(TransferSyntax):
                palette = index % 2 == 1  # palette color LUT on every other syntax
                self.delayDisplay(f"Export and re-import as {syntax.label}, palette color {palette}", 10)
                self.settings.setValue(slicerlogic.SETTINGS_TRANSFER_SYNTAX, syntax.value)
                self.settings.setValue(slicerlogic.SETTINGS_PALETTE_COLOR, str(palette).lower())
                directory = os.path.join(self.tempDir, syntax.value)
                exportables, error = self.exportWithPlugin(original, directory)
                self.assertEqual(exportables[0].confidence, slicerlogic.EXPORT_CONFIDENCE, exportables[0].tooltip)
                self.assertEqual(error, "", f"export in {syntax.label} failed: {error}")
                written = sorted(os.listdir(directory))
                self.assertEqual(len(written), 2, f"one LABELMAP instance per layer expected, got {written}")
                self.assertTrue(DICOMUtils.importDicom(directory), "SEG import into the database failed")

                import pydicom

                first = pydicom.dcmread(os.path.join(directory, written[0]), stop_before_pixels=True)
                self.assertEqual(first.file_meta.TransferSyntaxUID, syntax.uid, "wrong transfer syntax written")
                self.assertEqual(first.PhotometricInterpretation == "PALETTE COLOR", palette, "palette setting ignored")
                files = slicer.dicomDatabase.filesForSeries(first.SeriesInstanceUID)
                self.assertEqual(len(files), 2, "both instances of the SEG series are in the database")
                loadablesByPlugin, loadEnabled = DICOMUtils.getLoadablesFromFileLists([files])
                DICOMUtils.selectHighestConfidenceLoadables(loadablesByPlugin)
                ours = [
                    loadable for plugin, loadables in loadablesByPlugin.items() for loadable in loadables
                    if isinstance(plugin, slicer.modules.dicomPlugins[slicerlogic.PLUGIN_KEY])
                ]
                self.assertEqual(len(ours), 1, "one loadable for the whole LABELMAP series")
                self.assertTrue(ours[0].selected, "our LABELMAP loadable must be preselected")
                self.assertIn("2 layers", ours[0].name)
                for plugin in loadablesByPlugin:  # load only ours
                    for loadable in loadablesByPlugin[plugin]:
                        loadable.selected = loadable in ours
                nodeIDs = DICOMUtils.loadLoadables(loadablesByPlugin)
                loaded = [slicer.mrmlScene.GetNodeByID(i) for i in nodeIDs]
                loaded = [n for n in loaded if n and n.IsA("vtkMRMLSegmentationNode")]
                self.assertEqual(len(loaded), 1, "one segmentation node loaded")
                self.assertIs(slicerlogic.referenceVolumeNode(loaded[0]), volumeNode, "reference volume not set")
                found = differences(expected, segmentation_from_node(loaded[0]))
                self.assertEqual(found, [], f"{syntax.label}: round trip differs: {found}")
                slicer.mrmlScene.RemoveNode(loaded[0])
        self.delayDisplay("Round trip in every transfer syntax passed")
