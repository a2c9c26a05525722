"""DICOM plugin: LABELMAP (and BINARY) DICOM Segmentation import and LABELMAP SEG export.

Thin shell over :mod:`DICOMLabelmapSegLib.app.slicerlogic`, where every decision is made and tested.
The hidden module class at the end registers the plugin in ``slicer.modules.dicomPlugins`` under
``PLUGIN_KEY``, like Slicer's own DICOM plugins (``DICOMScalarVolumePlugin.py``).
"""

import importlib
import logging
import sys

import qt
import slicer
from DICOMLabelmapSegLib.app import slicerlogic
from DICOMLib import DICOMLoadable, DICOMPlugin, DICOMUtils
from slicer.i18n import tr as _


def currentSettings():
    """The module's QSettings values (keys ``DICOMLabelmapSeg/...``), with defaults."""
    settings = qt.QSettings()
    return {key: settings.value(key, default) for key, default in slicerlogic.SETTINGS_DEFAULTS.items()}


def ensurePythonPackages(transferSyntaxUIDs=(), forWriting=False):
    """Install missing packages after asking the user; True if everything needed is importable now.

    Slicer 5.10 bundles pydicom 2.4.4; highdicom needs pydicom 3, so pydicom is upgraded (the question
    says so). Slicer 5.8 has Python 3.9, where pydicom 3 cannot be installed: the user is told to use
    Slicer 5.10+. If a package replaced a module already imported in this session, the user is asked
    to restart Slicer and False is returned.
    """
    problem = slicerlogic.environmentProblem()
    if problem:
        slicer.util.errorDisplay(problem, windowTitle=_("DICOM Labelmap Segmentation"))
        return False
    missing = slicerlogic.missingPackages(transferSyntaxUIDs, forWriting=forWriting)
    if not missing:
        return True
    if slicer.app.commandOptions().testingEnabled:
        logging.error("Python packages missing (not installed while testing): " + ", ".join(missing))
        return False
    if not slicer.util.confirmOkCancelDisplay(
        slicerlogic.installPrompt(missing), windowTitle=_("Install Python packages")
    ):
        return False
    needsRestart = slicerlogic.restartNeededAfterInstall(missing, sys.modules)
    with slicer.util.tryWithErrorDisplay(_("Failed to install Python packages."), waitCursor=True):
        try:
            packaging = importlib.import_module("slicer.packaging")  # Slicer 5.12+
        except ImportError:  # Slicer 5.8 / 5.10
            slicer.util.pip_install(missing)
        else:
            packaging.pip_ensure(
                missing, prompt_install=False, prompt_restart=False, requester="DICOM Labelmap Segmentation"
            )
    if needsRestart:
        slicer.util.infoDisplay(
            _("The Python packages were installed. Restart Slicer to use them: an older version of one of them "
              "was already loaded in this session."),
            windowTitle=_("Restart Slicer"),
        )
        return False
    importlib.invalidate_caches()  # let find_spec see the packages just installed
    return not slicerlogic.missingPackages(transferSyntaxUIDs, forWriting=forWriting)


class ProgressDialog:
    """A cancellable progress dialog usable as the library's ``progress(fraction, message)`` callback."""

    def __init__(self, title):
        self.dialog = slicer.util.createProgressDialog(windowTitle=title, labelText=title, maximum=100)

    def __call__(self, fraction, message):
        self.dialog.value = int(round(100 * fraction))
        self.dialog.labelText = message
        slicer.app.processEvents()
        if self.dialog.wasCanceled:
            raise slicerlogic.OperationCancelled(_("Cancelled by the user; nothing was written."))

    def close(self):
        self.dialog.close()


class DICOMLabelmapSegPluginClass(DICOMPlugin):
    """Loads LABELMAP/BINARY/FRACTIONAL SEG series; exports segmentations as LABELMAP SEG."""

    def __init__(self):
        super().__init__()
        self.loadType = _("DICOM Labelmap Segmentation")
        self.tags.update(slicerlogic.PLUGIN_TAGS)

    # ----------------------------------------------------------------------------------------
    # Import

    def examineForImport(self, fileLists):
        """Loadables for a list of file lists (cached per file list, as Slicer 5.12+ does)."""
        loadables = []
        for files in fileLists:
            cached = self.getCachedLoadables(files)
            if cached is None:
                cached = self.examineFiles(files)
                self.cacheLoadables(files, cached)
            loadables += cached
        return loadables

    def examineFiles(self, files):
        """One loadable per SEG series in ``files`` (cheap database lookups, then a header read)."""
        loadables = []
        for spec in slicerlogic.loadableSpecsForFiles(files, slicer.dicomDatabase.fileValue):
            loadable = DICOMLoadable()
            loadable.files = spec.files
            loadable.name = spec.name
            loadable.tooltip = spec.tooltip
            loadable.warning = spec.warning
            loadable.selected = spec.selected
            loadable.confidence = spec.confidence
            loadable.spec = spec
            self.addReferences(loadable)
            loadables.append(loadable)
        return loadables

    def addReferences(self, loadable):
        """Fill ``referencedInstanceUIDs``/``referencedSeriesUID`` (the base class has this only in 5.12+)."""
        spec = loadable.spec
        loadable.referencedInstanceUIDs = slicerlogic.referencedInstanceUIDsOfSeries(
            spec, slicer.dicomDatabase.instancesForSeries
        )
        if spec.referencedSeriesUID:
            loadable.referencedSeriesUID = spec.referencedSeriesUID

    def load(self, loadable):
        """Load the series into a segmentation node; False (with a clear message) on failure."""
        spec = getattr(loadable, "spec", None)
        if spec is None:
            specs = slicerlogic.loadableSpecsForFiles(loadable.files)
            if not specs:
                logging.error(f"No DICOM Segmentation among the files of '{loadable.name}'.")
                return False
            spec = specs[0]
        if not ensurePythonPackages(spec.transferSyntaxUIDs):
            logging.error(f"Not loaded '{loadable.name}': required Python packages are missing.")
            return False
        referencedSeriesUID = slicerlogic.referencedSeriesToLoad(
            slicer.mrmlScene, spec, lambda uid: bool(slicer.dicomDatabase.filesForSeries(uid, 1))
        )
        if referencedSeriesUID:
            DICOMUtils.loadSeriesByUID([referencedSeriesUID])
        volumeNode = slicerlogic.findVolumeForSeries(slicer.mrmlScene, spec.referencedSeriesUID)
        try:
            segmentation = slicerlogic.segmentationFromFiles(loadable.files)
            segmentationNode = slicerlogic.nodeFromSegmentation(
                segmentation, slicer.mrmlScene, spec.nodeName, volumeNode, placeInSubjectHierarchy=False
            )
        except Exception as error:
            message = _("Could not load '{name}': {reason}").format(
                name=loadable.name, reason=slicerlogic.userMessage(error)
            )
            logging.error(message)
            slicer.util.errorDisplay(message, windowTitle=_("DICOM Labelmap Segmentation"))
            return False
        self.addSeriesInSubjectHierarchy(loadable, segmentationNode)
        return True

    # ----------------------------------------------------------------------------------------
    # Export

    def examineForExport(self, subjectHierarchyItemID):
        """One exportable for a segmentation node; a low-confidence one that explains if impossible."""
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        check = slicerlogic.examineForExport(
            shNode, subjectHierarchyItemID, slicer.dicomDatabase.fileForInstance, currentSettings()
        )
        if check is None:
            return []
        exportable = slicer.qSlicerDICOMExportable()
        exportable.name = check.name
        exportable.tooltip = check.tooltip
        exportable.confidence = check.confidence
        exportable.subjectHierarchyItemID = subjectHierarchyItemID
        exportable.pluginClass = slicerlogic.PLUGIN_KEY
        for tagName, value in check.tags.items():
            exportable.setTag(tagName, value)
        return [exportable]

    def export(self, exportables):
        """Write each exportable as one LABELMAP SEG series into its directory; '' or the error message."""
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        settings = currentSettings()
        for exportable in exportables:
            check = slicerlogic.examineForExport(
                shNode, exportable.subjectHierarchyItemID, slicer.dicomDatabase.fileForInstance, settings
            )
            if check is None:
                return _("Only segmentation nodes can be exported as DICOM LABELMAP Segmentation.")
            if not check.exportable:
                return check.reason
            progress = None
            try:
                tags = {name: exportable.tag(name) or "" for name in check.tags}
                options = slicerlogic.exportOptions(settings, tags)
                if not ensurePythonPackages([options.transfer_syntax.uid], forWriting=True):
                    return _("Export needs Python packages that are not installed: {packages}").format(
                        packages=", ".join(slicerlogic.missingPackages([options.transfer_syntax.uid], True))
                    )
                progress = ProgressDialog(_("Exporting DICOM LABELMAP Segmentation"))
                paths = slicerlogic.exportSegmentation(
                    check.segmentationNode,
                    check.referenceVolumeNode,
                    check.sourceFiles,
                    exportable.directory,
                    options,
                    progress,
                )
                logging.info(slicerlogic.formatFileSizes(paths))
            except Exception as error:
                logging.error(f"DICOM LABELMAP Segmentation export failed: {error}")
                return slicerlogic.userMessage(error)
            finally:
                if progress is not None:
                    progress.close()
        return ""


class DICOMLabelmapSegPlugin:
    """Hidden module that registers the plugin when Slicer discovers modules (before the DICOM
    database pre-caches the plugins' tags)."""

    def __init__(self, parent):
        parent.title = "DICOM Labelmap Segmentation Plugin"
        parent.categories = ["Developer Tools.DICOM Plugins"]
        parent.contributors = ["DICOMLabelmapSeg contributors"]
        parent.helpText = (
            "DICOM plugin that loads LABELMAP (and BINARY) DICOM Segmentations and exports segmentations "
            "as LABELMAP SEG. Settings are in the DICOM Labelmap Segmentation module."
        )
        parent.acknowledgementText = ""
        parent.dependencies = ["DICOM"]
        parent.hidden = True
        # The DICOM module may be discovered after this one: create the dict if it does not exist yet.
        if not hasattr(slicer.modules, "dicomPlugins"):
            slicer.modules.dicomPlugins = {}
        slicer.modules.dicomPlugins[slicerlogic.PLUGIN_KEY] = DICOMLabelmapSegPluginClass
