"""DICOM plugin: LABELMAP (and BINARY) DICOM Segmentation import and LABELMAP SEG export.

Thin shell over the Qt-free use cases in :mod:`DICOMLabelmapSegLib.app` (examine, load, export,
dependencies, settings), where every decision is made and tested on slicer-core. The hidden module
class at the end registers the plugin in ``slicer.modules.dicomPlugins`` under ``PLUGIN_KEY``, like
Slicer's own DICOM plugins (``DICOMScalarVolumePlugin.py``).
"""

import importlib
import logging

import ctk
import qt
import slicer
from DICOMLabelmapSegLib.app import dependencies, examine, export, load, settings
from DICOMLabelmapSegLib.app.messages import userMessage
from DICOMLib import DICOMLoadable, DICOMPlugin
from slicer.i18n import tr as _

WINDOW_TITLE = "DICOM Labelmap Segmentation"


def currentSettings():
    """The export settings (keys ``DICOMLabelmapSeg/...``), with defaults for what was never saved."""
    stored = qt.QSettings()
    return settings.withDefaults({key: stored.value(key) for key in settings.SETTINGS_DEFAULTS})


def installPackages(packages):
    """pip-install ``packages`` without further questions (the caller asked)."""
    try:
        packaging = importlib.import_module("slicer.packaging")  # Slicer 5.12+
    except ImportError:  # Slicer 5.10
        slicer.util.pip_install(list(packages))
    else:
        packaging.pip_ensure(list(packages), prompt_install=False, prompt_restart=False, requester=WINDOW_TITLE)


def ensurePythonPackages(transferSyntaxUIDs=(), forWriting=False):
    """'' if everything needed is importable (installing after one question), else why not.

    The returned text is not shown here: each caller shows it once in its own way (the browser's
    "Could not load", the Export dialog's error, the panel's error display).
    """
    plan = dependencies.installPlan(
        transferSyntaxUIDs, forWriting, testing=bool(slicer.app.commandOptions().testingEnabled)
    )
    if plan.action is dependencies.InstallAction.NONE:
        return ""
    if plan.action is not dependencies.InstallAction.ASK:
        return plan.message
    if not slicer.util.confirmOkCancelDisplay(plan.message, windowTitle=_("Install Python packages")):
        return _("Not installed: {packages} (declined).").format(packages=", ".join(plan.packages))
    try:
        installPackages(plan.packages)
    except Exception as error:
        return _("Installing {packages} failed: {error}").format(packages=", ".join(plan.packages), error=error)
    if plan.restartAfterInstall:
        slicer.util.restart()
        return _("Restart Slicer to use the packages just installed.")
    importlib.invalidate_caches()  # let find_spec see the packages just installed
    still = dependencies.missingPackages(transferSyntaxUIDs, forWriting=forWriting)
    return _("Still missing after installation: {packages}").format(packages=", ".join(still)) if still else ""


class ProgressDialog:
    """A cancellable progress dialog usable as the library's ``progress(fraction, message)`` callback.

    Parented to the active modal window (the Export to DICOM dialog when it is open), and kept open
    until :meth:`close` (no auto-hide at 100 %).
    """

    def __init__(self, title):
        parent = qt.QApplication.activeModalWidget() or slicer.util.mainWindow()
        self.dialog = slicer.util.createProgressDialog(
            parent=parent, windowTitle=title, labelText=title, maximum=100, autoClose=False, autoReset=False
        )

    def __call__(self, fraction, message):
        self.dialog.value = export.progressValue(fraction)
        self.dialog.labelText = message
        slicer.app.processEvents()
        if self.dialog.wasCanceled:
            raise export.OperationCancelled(_("Cancelled by the user; nothing was written."))

    def close(self):
        self.dialog.close()


class DICOMLabelmapSegPluginClass(DICOMPlugin):
    """Loads LABELMAP/BINARY/FRACTIONAL SEG series; exports segmentations as LABELMAP SEG."""

    def __init__(self):
        super().__init__()
        self.loadType = _("DICOM Labelmap Segmentation")
        self.tags.update(examine.PLUGIN_TAGS)

    @staticmethod
    def settingsPanelEntry(panel, parent):
        """Export to DICOM dialog defaults in the DICOM settings panel (the same settings as the module)."""
        formLayout = qt.QFormLayout(parent)
        syntaxComboBox = ctk.ctkComboBox()
        for label in settings.syntaxChoices():
            syntaxComboBox.addItem(label, settings.syntaxFromSetting(label).value)
        syntaxComboBox.toolTip = _("Transfer syntax of exported LABELMAP SEG files (all lossless).")
        formLayout.addRow(_("Compression:"), syntaxComboBox)
        panel.registerProperty(
            settings.SETTINGS_TRANSFER_SYNTAX, syntaxComboBox, "currentUserDataAsString",
            str(qt.SIGNAL("currentIndexChanged(int)")),
        )
        paletteCheckBox = qt.QCheckBox()
        paletteCheckBox.toolTip = _("Also store the segment colors as a palette color lookup table.")
        formLayout.addRow(_("Palette color:"), paletteCheckBox)
        panel.registerProperty(
            settings.SETTINGS_PALETTE_COLOR, paletteCheckBox, "checked", str(qt.SIGNAL("toggled(bool)"))
        )

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
        for spec in examine.loadableSpecsForFiles(files, slicer.dicomDatabase.fileValue):
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
        """Fill ``referencedInstanceUIDs``/``referencedSeriesUID`` (the base class has this only in 5.12+).

        The browser uses them to offer loading the referenced series ("Referenced datasets found").
        """
        spec = loadable.spec
        loadable.referencedInstanceUIDs = examine.referencedInstanceUIDsOfSeries(
            spec, slicer.dicomDatabase.instancesForSeries
        )
        if spec.referencedSeriesUID:
            loadable.referencedSeriesUID = spec.referencedSeriesUID

    def load(self, loadable):
        """Load the series into a segmentation node; False with the cause logged on failure.

        The browser shows "Could not load" itself. The referenced series is never loaded here: the
        browser asked the user about it; it is used if it is in the scene.
        """
        spec = getattr(loadable, "spec", None)
        if spec is None:
            specs = examine.loadableSpecsForFiles(loadable.files)
            if not specs:
                logging.error(f"No DICOM Segmentation among the files of '{loadable.name}'.")
                return False
            spec = specs[0]
        problem = ensurePythonPackages(spec.transferSyntaxUIDs)
        if problem:
            logging.error(f"Not loaded '{loadable.name}': {problem}")
            return False
        try:
            segmentationNode = load.loadSeries(
                loadable.files, slicer.mrmlScene, spec.nodeName, spec.referencedSeriesUID,
                getattr(loadable, "referencedInstanceUIDs", None) or spec.referencedInstanceUIDs,
                placeInSubjectHierarchy=False,
            )
        except Exception as error:
            logging.error(f"Could not load '{loadable.name}': {userMessage(error)}")
            return False
        self.addSeriesInSubjectHierarchy(loadable, segmentationNode)
        return True

    # ----------------------------------------------------------------------------------------
    # Export

    def examineForExport(self, subjectHierarchyItemID):
        """One exportable for a segmentation node; a low-confidence one that explains if impossible."""
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        check = export.examineForExport(
            shNode, subjectHierarchyItemID, slicer.dicomDatabase.fileForInstance, currentSettings()
        )
        if check is None:
            return []
        exportable = slicer.qSlicerDICOMExportable()
        exportable.name = check.name
        exportable.tooltip = check.tooltip
        exportable.confidence = check.confidence
        exportable.subjectHierarchyItemID = subjectHierarchyItemID
        exportable.pluginClass = examine.PLUGIN_KEY
        for tagName, value in check.tags.items():
            exportable.setTag(tagName, value)
        return [exportable]

    def export(self, exportables):
        """Write each exportable as one LABELMAP SEG series into its directory; '' or the error message."""
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        values = currentSettings()
        for exportable in exportables:
            check = export.examineForExport(
                shNode, exportable.subjectHierarchyItemID, slicer.dicomDatabase.fileForInstance, values
            )
            if check is None:
                return _("Only segmentation nodes can be exported as DICOM LABELMAP Segmentation.")
            if not check.exportable:
                return check.reason
            try:
                options = export.exportOptions(values, {name: exportable.tag(name) or "" for name in check.tags})
            except ValueError as error:
                return str(error)
            problem = ensurePythonPackages([options.transfer_syntax.uid], forWriting=True)
            if problem:
                return problem
            progress = ProgressDialog(_("Exporting DICOM LABELMAP Segmentation"))
            try:
                result = export.exportNode(
                    check.segmentationNode, check.referenceVolumeNode, check.sourceFiles,
                    exportable.directory, options, progress,
                )
                logging.info(result.summary())
            except Exception as error:
                logging.error(f"DICOM LABELMAP Segmentation export failed: {error}")
                return userMessage(error)
            finally:
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
            "as LABELMAP SEG. Its export defaults are in the DICOM module settings and the DICOM Labelmap "
            "Segmentation module."
        )
        parent.acknowledgementText = ""
        parent.dependencies = ["DICOM"]
        parent.hidden = True
        # The DICOM module may be discovered after this one: create the dict if it does not exist yet.
        if not hasattr(slicer.modules, "dicomPlugins"):
            slicer.modules.dicomPlugins = {}
        slicer.modules.dicomPlugins[examine.PLUGIN_KEY] = DICOMLabelmapSegPluginClass
