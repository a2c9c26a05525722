"""Decisions of the Slicer DICOM plugin and module panel, free of Qt and of the Slicer application.

Everything the Slicer shell (``DICOMLabelmapSeg.py``, ``DICOMLabelmapSegPlugin.py``) decides lives
here so that it can be tested on the ``slicer-core`` wheel (real MRML and subject hierarchy):

* which DICOM files are SEG series we load, and the loadables' names, tooltips and confidence;
* which Python packages are missing and what to tell the user before installing them;
* which segmentation node can be exported, why not, and the exportable's tags;
* how module settings and exportable tags become :class:`~.writer.ExportOptions`;
* loading a SEG series into a segmentation node and exporting a node to a LABELMAP SEG series.

Module-level imports are limited to the standard library, :mod:`.syntax`, :mod:`.errors` and
:mod:`.model`, so that examining files works with the pydicom 2.4 that Slicer 5.8/5.10 bundle,
before the user has agreed to install this library's dependencies (pydicom 3, highdicom).
``slicer``/``vtk`` objects are only received as arguments or imported inside functions.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..dicom.syntax import TransferSyntax
from ..errors import LabelmapSegError, SourceImageError

logger = logging.getLogger(__name__)

#: Key of our class in ``slicer.modules.dicomPlugins`` (also the exportables' ``pluginClass``).
PLUGIN_KEY = "DICOMLabelmapSegPlugin"

LABELMAP_SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
SEG_SOP_CLASS_UIDS = (LABELMAP_SEGMENTATION_STORAGE, SEGMENTATION_STORAGE)

#: LABELMAP: above the 0.95 that Slicer's dcmqi-based DICOMSegmentationPlugin gives every SEG file,
#: so ``DICOMUtils.selectHighestConfidenceLoadables`` preselects only us for the series.
LABELMAP_CONFIDENCE = 0.99
#: BINARY: below 0.95, so where dcmqi's plugin exists (Slicer 5.12+, or QuantitativeReporting) its
#: established import stays the preselected one and ours is offered next to it; on Slicer 5.8/5.10
#: without QuantitativeReporting nothing else reads SEG, and 0.9 beats the scalar-volume plugin's 0.5.
BINARY_CONFIDENCE = 0.9
#: FRACTIONAL loads thresholded at 0.5 (lossy), so it ranks below BINARY.
FRACTIONAL_CONFIDENCE = 0.85
#: Where this library cannot run (Python < 3.10: Slicer 5.8): offered, never preselected.
UNSUPPORTED_CONFIDENCE = 0.1
#: pydicom 3 and highdicom need Python 3.10+: Slicer 5.10 (Python 3.12) and later; Slicer 5.8 has Python 3.9.
MINIMUM_PYTHON = (3, 10)
#: An exportable that can be exported; equal to dcmqi's SEG exporter (the export dialog cannot rank
#: anything above 100 %). Both rows are shown; ours says "LABELMAP" in its name.
EXPORT_CONFIDENCE = 1.0
#: An exportable offered only so that the user learns why export is impossible (its export()
#: returns that reason). Low, so it is never preselected over an exporter that can work.
NOT_EXPORTABLE_CONFIDENCE = 0.01

# DICOM tags as "gggg,eeee" for slicer.dicomDatabase.fileValue (cached, no file parse).
TAG_SOP_CLASS_UID = "0008,0016"
TAG_MODALITY = "0008,0060"
TAG_SERIES_INSTANCE_UID = "0020,000E"
TAG_SEGMENTATION_TYPE = "0062,0001"

#: Tags the plugin registers in ``plugin.tags`` so the DICOM database pre-caches them.
PLUGIN_TAGS = {
    "sopClassUID": TAG_SOP_CLASS_UID,
    "modality": TAG_MODALITY,
    "seriesInstanceUID": TAG_SERIES_INSTANCE_UID,
    "segmentationType": TAG_SEGMENTATION_TYPE,
}

# QSettings keys shared by the module panel and the export plugin.
SETTINGS_TRANSFER_SYNTAX = "DICOMLabelmapSeg/TransferSyntax"
SETTINGS_PALETTE_COLOR = "DICOMLabelmapSeg/PaletteColor"
SETTINGS_SERIES_DESCRIPTION = "DICOMLabelmapSeg/SeriesDescription"
SETTINGS_CONTENT_CREATOR_NAME = "DICOMLabelmapSeg/ContentCreatorName"
SETTINGS_EXPORT_TO_DATABASE = "DICOMLabelmapSeg/ExportToDatabase"
SETTINGS_EXPORT_TO_FOLDER = "DICOMLabelmapSeg/ExportToFolder"
SETTINGS_OUTPUT_FOLDER = "DICOMLabelmapSeg/OutputFolder"

SETTINGS_DEFAULTS: dict[str, str] = {
    SETTINGS_TRANSFER_SYNTAX: TransferSyntax.JPEG_LS.value,
    SETTINGS_PALETTE_COLOR: "false",
    SETTINGS_SERIES_DESCRIPTION: "",
    SETTINGS_CONTENT_CREATOR_NAME: "",
    SETTINGS_EXPORT_TO_DATABASE: "true",
    SETTINGS_EXPORT_TO_FOLDER: "false",
    SETTINGS_OUTPUT_FOLDER: "",
}

# Node attributes and subject hierarchy names used by Slicer's DICOM plugins.
INSTANCE_UIDS_ATTRIBUTE = "DICOM.instanceUIDs"

#: Python packages the library needs beyond what every Slicer bundles (Resources/requirements.txt).
REQUIREMENTS = ("pydicom>=3.0.1", "highdicom>=0.27.0")

# Series description used when the exportable has none (the writer's default).
DEFAULT_SERIES_DESCRIPTION = "Segmentation"
DEFAULT_SERIES_NUMBER = 300

FileValue = Callable[[str, str], str]
Progress = Callable[[float, str], None]


def environmentProblem(pythonVersion: Sequence[int] | None = None) -> str:
    """Why loading/exporting cannot work in this Slicer at all ('' if it can).

    Slicer 5.8 ships Python 3.9; pydicom 3 and highdicom require Python 3.10, so they cannot be
    installed there. Slicer 5.10 (Python 3.12, pydicom 2.4.4) gets pydicom upgraded; 5.12+ has pydicom 3.
    """
    version = tuple(pythonVersion if pythonVersion is not None else sys.version_info[:3])
    if version[:2] < MINIMUM_PYTHON:
        shown = ".".join(str(v) for v in version[:3])
        return (
            f"DICOM Labelmap Segmentation needs Python {MINIMUM_PYTHON[0]}.{MINIMUM_PYTHON[1]} or later "
            f"(pydicom 3 and highdicom require it) but this Slicer has Python {shown}. "
            "Use Slicer 5.10 or later."
        )
    return ""


# ---------------------------------------------------------------------------------------------
# Examining files (import)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegHeader:
    """What one SEG file's header says, read without pixel data."""

    path: str
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    segmentation_type: str
    segment_count: int
    transfer_syntax_uid: str
    series_description: str = ""
    series_number: str = ""
    study_instance_uid: str = ""
    frame_of_reference_uid: str = ""
    referenced_series_uid: str = ""
    referenced_instance_uids: tuple[str, ...] = ()


@dataclass
class LoadableSpec:
    """Everything the plugin puts into one ``DICOMLoadable``.

    ``nodeName`` is the segmentation node's name (the series description); ``name`` is what the
    DICOM browser shows and says what the user gets.
    """

    files: list[str]
    name: str
    tooltip: str
    confidence: float
    nodeName: str
    seriesInstanceUID: str
    segmentationType: str
    selected: bool = True
    warning: str = ""
    referencedSeriesUID: str = ""
    referencedInstanceUIDs: list[str] = field(default_factory=list)
    transferSyntaxUIDs: list[str] = field(default_factory=list)


def isSegFile(path: str, fileValue: FileValue) -> bool:
    """Cheap test with cached database values: is this a Segmentation (BINARY/FRACTIONAL/LABELMAP)?"""
    sopClassUID = fileValue(path, TAG_SOP_CLASS_UID)
    if sopClassUID:
        return sopClassUID in SEG_SOP_CLASS_UIDS
    return fileValue(path, TAG_MODALITY) == "SEG"


def readSegHeader(path: str) -> SegHeader | None:
    """Read the header of a SEG file (no pixel data); None if it is not a readable SEG file.

    Uses only pydicom API that exists in both pydicom 2.4 (bundled with Slicer 5.8/5.10) and 3.x.
    """
    import pydicom

    keywords = [
        "SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "SeriesDescription", "SeriesNumber",
        "StudyInstanceUID", "FrameOfReferenceUID", "SegmentationType", "SegmentSequence",
        "ReferencedSeriesSequence", "Modality",
    ]
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=keywords)
    except Exception as error:  # any unreadable file is simply not ours to load
        logger.debug("Not a readable DICOM file %s: %s", path, error)
        return None
    sopClassUID = str(ds.get("SOPClassUID", ""))
    if sopClassUID not in SEG_SOP_CLASS_UIDS:
        return None
    referencedSeriesUID = ""
    referencedInstanceUIDs: list[str] = []
    for item in ds.get("ReferencedSeriesSequence", None) or []:
        if not referencedSeriesUID:
            referencedSeriesUID = str(item.get("SeriesInstanceUID", ""))
        for instance in item.get("ReferencedInstanceSequence", None) or []:
            uid = str(instance.get("ReferencedSOPInstanceUID", ""))
            if uid:
                referencedInstanceUIDs.append(uid)
    fileMeta = getattr(ds, "file_meta", None)
    transferSyntaxUID = str(fileMeta.get("TransferSyntaxUID", "")) if fileMeta is not None else ""
    return SegHeader(
        path=str(path),
        sop_class_uid=sopClassUID,
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
        segmentation_type=str(ds.get("SegmentationType", "")).upper(),
        # Segment number 0 is the background of LABELMAP SEGs (highdicom, dcmqi); not a segment for the user.
        segment_count=sum(1 for item in ds.get("SegmentSequence", None) or [] if item.get("SegmentNumber", 1) != 0),
        transfer_syntax_uid=transferSyntaxUID,
        series_description=str(ds.get("SeriesDescription", "") or ""),
        series_number=str(ds.get("SeriesNumber", "") or ""),
        study_instance_uid=str(ds.get("StudyInstanceUID", "")),
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "")),
        referenced_series_uid=referencedSeriesUID,
        referenced_instance_uids=tuple(referencedInstanceUIDs),
    )


def syntaxLabel(transferSyntaxUID: str) -> str:
    """Short human name of a transfer syntax UID (our label if we know it, else the UID)."""
    try:
        return TransferSyntax.from_uid(transferSyntaxUID).label
    except ValueError:
        names = {
            "1.2.840.10008.1.2": "Implicit VR little endian",
            "1.2.840.10008.1.2.4.70": "JPEG lossless",
            "1.2.840.10008.1.2.4.57": "JPEG lossless",
            "1.2.840.10008.1.2.4.81": "JPEG-LS near-lossless",
            "1.2.840.10008.1.2.4.91": "JPEG 2000",
            "1.2.840.10008.1.2.4.201": "HTJ2K lossless",
        }
        return names.get(transferSyntaxUID, transferSyntaxUID or "unknown transfer syntax")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def loadableSpecForSeries(headers: Sequence[SegHeader], pythonVersion: Sequence[int] | None = None) -> LoadableSpec:
    """Name, tooltip, confidence and references of one loadable for the SEG files of one series.

    A LABELMAP series loads as one loadable: every instance is one layer. A BINARY or FRACTIONAL
    series loads as one loadable too (segments packed into as few non-overlapping layers as possible).
    """
    headers = sorted(headers, key=lambda h: h.path)
    first = headers[0]
    segmentationType = first.segmentation_type or "BINARY"
    segmentCount = sum(h.segment_count for h in headers)
    syntaxes = sorted({h.transfer_syntax_uid for h in headers})
    syntaxText = ", ".join(syntaxLabel(uid) for uid in syntaxes)
    description = first.series_description or "Segmentation"
    nodeName = description
    if segmentationType == "LABELMAP":
        confidence = LABELMAP_CONFIDENCE
        layout = _plural(len(headers), "layer")
        detail = f"LABELMAP, {_plural(segmentCount, 'segment')} in {layout}"
        how = "Each LABELMAP instance of the series becomes one layer of one segmentation node."
    elif segmentationType == "FRACTIONAL":
        confidence = FRACTIONAL_CONFIDENCE
        detail = f"FRACTIONAL, {_plural(segmentCount, 'segment')}"
        how = "Fractional values are thresholded at 0.5; non-overlapping segments share layers."
    else:
        confidence = BINARY_CONFIDENCE
        detail = f"BINARY, {_plural(segmentCount, 'segment')}"
        how = "Segments are packed into as few non-overlapping layers as possible."
    name = f"{description} ({detail}, {syntaxText})"
    seriesNumber = f"series {first.series_number}: " if first.series_number else ""
    tooltip = (
        f"{seriesNumber}{description} - DICOM Segmentation ({detail}; {syntaxText}), "
        f"{_plural(len(headers), 'file')}. {how}"
    )
    referencedInstanceUIDs: list[str] = []
    for header in headers:
        for uid in header.referenced_instance_uids:
            if uid not in referencedInstanceUIDs:
                referencedInstanceUIDs.append(uid)
    missing = missingPackages(syntaxes)
    warning = ""
    if missing:
        warning = (
            f"Loading needs the Python package(s) {', '.join(missing)}; "
            "you will be asked to install them when loading."
        )
    selected = True
    problem = environmentProblem(pythonVersion)
    if problem:
        confidence, selected, warning = UNSUPPORTED_CONFIDENCE, False, problem
    return LoadableSpec(
        files=[h.path for h in headers],
        name=name,
        tooltip=tooltip,
        confidence=confidence,
        nodeName=nodeName,
        seriesInstanceUID=first.series_instance_uid,
        segmentationType=segmentationType,
        selected=selected,
        warning=warning,
        referencedSeriesUID=first.referenced_series_uid,
        referencedInstanceUIDs=referencedInstanceUIDs,
        transferSyntaxUIDs=syntaxes,
    )


def loadableSpecsForFiles(
    files: Iterable[str], fileValue: FileValue | None = None, pythonVersion: Sequence[int] | None = None
) -> list[LoadableSpec]:
    """One :class:`LoadableSpec` per SEG series among ``files`` (other files are ignored).

    ``fileValue(path, "gggg,eeee")`` is ``slicer.dicomDatabase.fileValue``: a cached lookup that
    skips non-SEG files without opening them. Without it every file's header is read.
    """
    candidates = [str(f) for f in files if fileValue is None or isSegFile(str(f), fileValue)]
    bySeries: dict[str, list[SegHeader]] = {}
    for path in candidates:
        header = readSegHeader(path)
        if header is None:
            continue
        bySeries.setdefault(header.series_instance_uid, []).append(header)
    return [loadableSpecForSeries(headers, pythonVersion) for headers in bySeries.values()]


def referencedInstanceUIDsOfSeries(
    spec: LoadableSpec, instancesForSeries: Callable[[str], Sequence[str]] | None = None
) -> list[str]:
    """The instance UIDs a SEG loadable references (what ``DICOMPlugin.addReferences`` fills in 5.12+).

    The SEG's own Referenced Instance Sequence is used; when it lists none, the referenced series'
    instances from the database (``slicer.dicomDatabase.instancesForSeries``) are used instead.
    """
    if spec.referencedInstanceUIDs:
        return list(spec.referencedInstanceUIDs)
    if spec.referencedSeriesUID and instancesForSeries is not None:
        return list(instancesForSeries(spec.referencedSeriesUID))
    return []


# ---------------------------------------------------------------------------------------------
# Dependencies
# ---------------------------------------------------------------------------------------------


def _installedVersion(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _versionTuple(version: str) -> tuple[int, ...]:
    parts = []
    for part in version.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def missingRequirements(requirements: Sequence[str] = REQUIREMENTS) -> list[str]:
    """Requirements (``name>=version``) that are not installed or installed too old."""
    missing = []
    for requirement in requirements:
        name, _, minimum = requirement.partition(">=")
        installed = _installedVersion(name)
        if installed is None or (minimum and _versionTuple(installed) < _versionTuple(minimum)):
            missing.append(requirement)
    return missing


def missingPackages(transferSyntaxUIDs: Iterable[str] = (), forWriting: bool = False) -> list[str]:
    """pip packages to install: library requirements plus codecs for these transfer syntaxes."""
    missing = missingRequirements()
    for uid in transferSyntaxUIDs:
        try:
            syntax = TransferSyntax.from_uid(uid)
        except ValueError:
            continue
        packages = syntax.missing_encoder_packages() if forWriting else syntax.missing_decoder_packages()
        missing += [p for p in packages if p not in missing]
    return missing


def installPrompt(packages: Sequence[str]) -> str:
    """The question asked before installing ``packages`` (mentions the pydicom upgrade)."""
    text = (
        "DICOM Labelmap Segmentation needs these Python packages, which are not installed: "
        f"{', '.join(packages)}.\n\nInstall them now?"
    )
    pydicomVersion = _installedVersion("pydicom")
    if any(p.startswith("pydicom") for p in packages) and pydicomVersion:
        text += (
            f"\n\nThis upgrades pydicom from {pydicomVersion} (bundled with this Slicer) to version 3. "
            "Other extensions that rely on pydicom 2 may need an update; restart Slicer after installation."
        )
    return text


def restartNeededAfterInstall(packages: Sequence[str], importedModules: Mapping[str, Any]) -> bool:
    """True if an installed package replaces a module already imported in this session (pydicom)."""
    names = {p.split(">=")[0].split("==")[0].replace("-", "_") for p in packages}
    return any(name in importedModules for name in names)


# ---------------------------------------------------------------------------------------------
# Export: which node, why not, tags, options
# ---------------------------------------------------------------------------------------------


@dataclass
class ExportCheck:
    """Whether a subject hierarchy item can be exported as LABELMAP SEG, and how."""

    exportable: bool
    reason: str
    confidence: float
    name: str
    tooltip: str
    tags: dict[str, str]
    segmentationNode: Any = None
    referenceVolumeNode: Any = None
    sourceFiles: list[str] = field(default_factory=list)


def referenceVolumeNode(segmentationNode: Any) -> Any:
    """The segmentation's reference-geometry volume node, or None."""
    return segmentationNode.GetNodeReference(segmentationNode.GetReferenceImageGeometryReferenceRole())


def sourceInstanceUIDs(volumeNode: Any) -> list[str]:
    """SOP Instance UIDs a volume was loaded from (attribute set by DICOMScalarVolumePlugin)."""
    if volumeNode is None:
        return []
    return (volumeNode.GetAttribute(INSTANCE_UIDS_ATTRIBUTE) or "").split()


def exportTags(segmentationNode: Any, settings: Mapping[str, Any]) -> dict[str, str]:
    """The series-level tags the export dialog shows for editing, with their defaults."""
    description = str(settings.get(SETTINGS_SERIES_DESCRIPTION) or "").strip() or segmentationNode.GetName()
    return {
        "Modality": "SEG",
        "SeriesDescription": description,
        "SeriesNumber": str(DEFAULT_SERIES_NUMBER),
        "ContentLabel": "SEGMENTATION",
        "ContentDescription": "",
        "ContentCreatorName": str(settings.get(SETTINGS_CONTENT_CREATOR_NAME) or ""),
    }


class OperationCancelled(LabelmapSegError):
    """The user cancelled a long operation; nothing was written."""


def sourceFilesForSegmentation(
    segmentationNode: Any, fileForInstance: Callable[[str], str], volumeNode: Any = None
) -> tuple[Any, list[str]]:
    """The reference volume and its DICOM files, which the SEG will reference.

    ``volumeNode`` defaults to the segmentation's reference-geometry volume. ``fileForInstance`` is
    ``slicer.dicomDatabase.fileForInstance`` (returns '' for unknown UIDs).

    Raises
    ------
    SourceImageError
        Saying what to do, if there is no reference volume, it was not loaded from DICOM, or some
        of its images are not in the DICOM database.
    """
    name = segmentationNode.GetName()
    volume = volumeNode if volumeNode is not None else referenceVolumeNode(segmentationNode)
    if volume is None:
        raise SourceImageError(
            f"Segmentation '{name}' has no reference volume. Select the DICOM volume it was drawn on as "
            "'Source volume' in Segment Editor (or as reference volume in the DICOM Labelmap Segmentation "
            "module), then export again."
        )
    uids = sourceInstanceUIDs(volume)
    if not uids:
        raise SourceImageError(
            f"The reference volume '{volume.GetName()}' of segmentation '{name}' was not loaded from DICOM, "
            "so the SEG cannot reference its images. Export the volume to DICOM first (or load it from the "
            "DICOM database) and use it as the segmentation's reference volume."
        )
    files = [fileForInstance(uid) for uid in uids]
    absent = sum(1 for f in files if not f)
    if absent:
        raise SourceImageError(
            f"{absent} of the {len(uids)} images of reference volume '{volume.GetName()}' are not in the "
            "DICOM database. Import its DICOM series into the database, then export again."
        )
    return volume, files


def examineForExport(
    shNode: Any,
    itemID: int,
    fileForInstance: Callable[[str], str],
    settings: Mapping[str, Any] | None = None,
    pythonVersion: Sequence[int] | None = None,
) -> ExportCheck | None:
    """Decide about exporting a subject hierarchy item; None if it is not a segmentation node.

    A segmentation is exportable when its reference volume was loaded from DICOM, all its images
    are in the database (:func:`sourceFilesForSegmentation`) and the segmentation is in a study
    (the export dialog needs that). Otherwise :attr:`ExportCheck.reason` says what to do.
    """
    node = shNode.GetItemDataNode(itemID)
    if node is None or not node.IsA("vtkMRMLSegmentationNode"):
        return None
    settings = settings if settings is not None else {}
    syntax = syntaxFromSetting(settings.get(SETTINGS_TRANSFER_SYNTAX))
    reason = environmentProblem(pythonVersion)
    volume, files = None, []
    try:
        volume, files = sourceFilesForSegmentation(node, fileForInstance)
    except SourceImageError as error:
        reason = reason or str(error)
    if not reason and shNode.GetItemAncestorAtLevel(itemID, "Study") == shNode.GetInvalidItemID():
        reason = (
            f"Segmentation '{node.GetName()}' is not in a study. In the Data module, drag it under the study "
            f"of '{volume.GetName()}', then export again."
        )
    if reason:
        return ExportCheck(
            exportable=False,
            reason=reason,
            confidence=NOT_EXPORTABLE_CONFIDENCE,
            name="DICOM LABELMAP Segmentation (not possible, see tooltip)",
            tooltip=reason,
            tags=exportTags(node, settings),
            segmentationNode=node,
            referenceVolumeNode=volume,
        )
    layers = node.GetSegmentation().GetNumberOfLayers()
    return ExportCheck(
        exportable=True,
        reason="",
        confidence=EXPORT_CONFIDENCE,
        name=f"DICOM LABELMAP Segmentation ({syntax.label})",
        tooltip=(
            f"One LABELMAP SEG instance per layer ({_plural(layers, 'layer')}) in one series, {syntax.label}. "
            "Transfer syntax and palette color are chosen in the DICOM Labelmap Segmentation module."
        ),
        tags=exportTags(node, settings),
        segmentationNode=node,
        referenceVolumeNode=volume,
        sourceFiles=files,
    )


def _nodeID(node: Any) -> str | None:
    return node.GetID() if node is not None else None


def referenceVolumeUpdate(segmentationChanged: bool, chosenVolume: Any, currentReference: Any) -> tuple[str, Any]:
    """What the module panel does when its segmentation or its reference volume selection changes.

    Returns ``("show", node)`` to show the segmentation's reference volume in the selector (after the
    segmentation changed, or when the selector was cleared), ``("apply", node)`` to make the volume
    the user chose the segmentation's reference geometry, or ``("none", None)``.
    """
    if _nodeID(chosenVolume) == _nodeID(currentReference):
        return ("none", None)
    if segmentationChanged or chosenVolume is None:
        return ("show", currentReference)
    return ("apply", chosenVolume)


def outputFolderChosen(folder: Any) -> bool:
    """True if a folder was chosen (the parameter node stores an unset path as '.' or '')."""
    return str(folder or "").strip() not in ("", ".")


def toBool(value: Any) -> bool:
    """QSettings values come back as bool, int or strings such as 'true'/'false'."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


def syntaxFromSetting(value: Any) -> TransferSyntax:
    """The transfer syntax stored in settings or chosen in the panel (short name, label or UID).

    Unknown or empty values give the default (JPEG-LS lossless) with a warning in the log.
    """
    if isinstance(value, TransferSyntax):
        return value
    text = str(value or "").strip()
    for syntax in TransferSyntax:
        if text == syntax.label:
            return syntax
    try:
        return TransferSyntax.parse(text) if text else TransferSyntax.JPEG_LS
    except ValueError:
        logger.warning("Unknown transfer syntax setting %r; using JPEG-LS lossless.", value)
        return TransferSyntax.JPEG_LS


def syntaxChoices() -> list[str]:
    """Labels shown in the module panel's transfer syntax chooser (default first)."""
    return [syntax.label for syntax in TransferSyntax]


def syntaxExplanation(value: Any) -> str:
    """One line shown under the transfer syntax chooser."""
    syntax = syntaxFromSetting(value)
    missing = syntax.missing_encoder_packages()
    text = syntax.explanation
    if missing:
        text += f" Needs the Python package {', '.join(missing)} (offered for installation on export)."
    return text


def exportOptions(settings: Mapping[str, Any], tags: Mapping[str, str] | None = None) -> Any:
    """:class:`~.writer.ExportOptions` from the module settings and the exportable's (edited) tags.

    Raises ValueError with a user-readable message for a series number that is not a positive integer.
    """
    from ..dicom.writer import ExportOptions

    tags = tags or {}
    seriesNumberText = str(tags.get("SeriesNumber") or DEFAULT_SERIES_NUMBER).strip()
    try:
        seriesNumber = int(seriesNumberText)
    except ValueError:
        seriesNumber = -1
    if not 0 < seriesNumber < 2**31:
        raise ValueError(f"Series number '{seriesNumberText}' is not a positive integer; enter a number such as 300.")
    description = (
        str(tags.get("SeriesDescription") or "").strip()
        or str(settings.get(SETTINGS_SERIES_DESCRIPTION) or "").strip()
        or DEFAULT_SERIES_DESCRIPTION
    )
    creator = str(tags.get("ContentCreatorName") or settings.get(SETTINGS_CONTENT_CREATOR_NAME) or "").strip()
    return ExportOptions(
        transfer_syntax=syntaxFromSetting(settings.get(SETTINGS_TRANSFER_SYNTAX)),
        palette_color=toBool(settings.get(SETTINGS_PALETTE_COLOR, False)),
        series_description=description[:64],
        series_number=seriesNumber,
        content_label=str(tags.get("ContentLabel") or "").strip() or "SEGMENTATION",
        content_description=str(tags.get("ContentDescription") or "").strip() or None,
        content_creator_name=creator or None,
    )


# ---------------------------------------------------------------------------------------------
# Export and import work (thin over the tested core and MRML bridge)
# ---------------------------------------------------------------------------------------------


def exportSegmentation(
    segmentationNode: Any,
    referenceVolumeNode: Any,
    sourceFiles: Sequence[str],
    outputDirectory: str | os.PathLike,
    options: Any,
    progress: Progress | None = None,
) -> list[Path]:
    """Write the segmentation node, on the reference volume's grid, as a LABELMAP SEG series.

    One instance per layer. Raises a :class:`~.errors.LabelmapSegError` with a user-readable
    message on failure; nothing is left in ``outputDirectory`` then (the writer is atomic).
    """
    from ..dicom.writer import write_labelmap_seg
    from ..mrml import segmentation_from_node

    options.transfer_syntax.require_encoder()
    if not sourceFiles:
        raise SourceImageError("No source images: the segmentation's reference volume has no DICOM files.")
    if progress:
        progress(0.0, "Reading the segmentation")
    segmentation = segmentation_from_node(segmentationNode, referenceVolumeNode)
    return write_labelmap_seg(segmentation, list(sourceFiles), Path(outputDirectory), options, progress=progress)


def findVolumeForSeries(scene: Any, seriesInstanceUID: str) -> Any:
    """A volume node already in the scene that was loaded from this DICOM series, or None."""
    from ..mrml import find_series_node

    node = find_series_node(scene, seriesInstanceUID) if seriesInstanceUID else None
    if node is None or not node.IsA("vtkMRMLScalarVolumeNode") or node.GetScene() is None:
        return None  # (an item may briefly outlive its removed node)
    return node


def referencedSeriesToLoad(scene: Any, spec: LoadableSpec, seriesInDatabase: Callable[[str], bool]) -> str:
    """The referenced series UID to load before the SEG, or '' (not referenced, loaded, or not in the DB)."""
    uid = spec.referencedSeriesUID
    if not uid or findVolumeForSeries(scene, uid) is not None:
        return ""
    return uid if seriesInDatabase(uid) else ""


def segmentationFromFiles(files: Sequence[str]) -> Any:
    """Read one SEG series (all its files) into the model; typed errors with clear messages."""
    from ..dicom.reader import read_segmentation

    return read_segmentation([str(f) for f in files])


def nodeFromSegmentation(
    segmentation: Any, scene: Any, name: str, referenceVolume: Any = None, placeInSubjectHierarchy: bool = True
) -> Any:
    """Create the segmentation node (MRML bridge) with reference geometry and ``DICOM.instanceUIDs``.

    ``placeInSubjectHierarchy=False`` when the DICOM plugin places it (``addSeriesInSubjectHierarchy``).
    """
    from ..mrml import node_from_segmentation

    node = node_from_segmentation(
        segmentation, scene, name=name, referenceVolumeNode=referenceVolume,
        placeInSubjectHierarchy=placeInSubjectHierarchy,
    )
    info = segmentation.series_info
    if info is not None:
        node.SetAttribute(INSTANCE_UIDS_ATTRIBUTE, " ".join(info.sop_instance_uids))
    return node


def ensurePatientAndStudy(shNode: Any, itemID: int, segmentation: Any) -> None:
    """Put a series item that is not under a study (its source series is not loaded) under its own
    patient and study items, created from the SEG's identifiers as Slicer's DICOM module does."""
    import slicer

    info = segmentation.series_info
    if info is None or not info.study_instance_uid:
        return
    if shNode.GetItemAncestorAtLevel(itemID, "Study") != shNode.GetInvalidItemID():
        return
    patientID = info.patient_id or f"Patient-{info.study_instance_uid}"
    slicer.vtkSlicerSubjectHierarchyModuleLogic.InsertDicomSeriesInHierarchy(
        shNode, patientID, info.study_instance_uid, info.series_instance_uid
    )
    patientItem = shNode.GetItemAncestorAtLevel(itemID, "Patient")
    if patientItem and info.patient_name:
        shNode.SetItemAttribute(patientItem, "DICOM.PatientName", info.patient_name)
        shNode.SetItemName(patientItem, info.patient_name)


def loadSegFilesWithoutDatabase(paths: Sequence[str], scene: Any) -> list[Any]:
    """Load SEG files or folders from disk (no DICOM database): one segmentation node per series.

    The reference volume is looked up in the scene by the referenced Series Instance UID; the node
    goes under that volume's study, else under a patient/study made from the SEG's identifiers.
    """
    import slicer

    from ..dicom.reader import read_segmentations

    files = expandPaths(paths)
    segmentations = read_segmentations(files) if files else []
    if not segmentations:
        raise LabelmapSegError("No DICOM Segmentation files were found in the selected files or folders.")
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    nodes = []
    for segmentation in segmentations:
        referenced = segmentation.referenced_series
        volume = findVolumeForSeries(scene, referenced.series_instance_uid) if referenced else None
        info = segmentation.series_info
        name = (info.series_description if info else None) or "Segmentation"
        node = nodeFromSegmentation(segmentation, scene, name, volume)
        ensurePatientAndStudy(shNode, shNode.GetItemByDataNode(node), segmentation)
        nodes.append(node)
    return nodes


def expandPaths(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Files given directly plus every file inside given folders (recursively), sorted."""
    files: list[str] = []
    for path in paths:
        p = Path(path)
        if p.is_dir():
            files += sorted(str(f) for f in p.rglob("*") if f.is_file())
        elif p.is_file():
            files.append(str(p))
    return files


def formatFileSizes(paths: Sequence[str | os.PathLike]) -> str:
    """Status text: how many files were written, their total size and each file's size."""
    sizes = [(Path(p).name, Path(p).stat().st_size) for p in paths]
    total = sum(size for _, size in sizes)
    lines = [f"Wrote {_plural(len(sizes), 'file')}, {_humanSize(total)} in total:"]
    lines += [f"  {name}: {_humanSize(size)}" for name, size in sizes]
    return "\n".join(lines)


def _humanSize(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} bytes"


def userMessage(error: BaseException) -> str:
    """The message shown to the user for an error raised while loading or exporting."""
    if isinstance(error, (LabelmapSegError, ValueError)):
        return str(error)
    return f"Unexpected error ({type(error).__name__}): {error}"
