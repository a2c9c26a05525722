"""Examining files for the DICOM browser: which files are SEG series we load, and each loadable's
name, tooltip, confidence and references.

Module-level imports are limited to the standard library and light library modules, so that
examining works with the pydicom 2.4 that Slicer 5.10 bundles, before the user has agreed to install
this library's dependencies (pydicom 3, highdicom).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ..dicom.syntax import TransferSyntax
from ..enums import SEG_SOP_CLASSES, SegmentationType
from .dependencies import environmentProblem, missingPackages
from .messages import plural

logger = logging.getLogger(__name__)

#: Key of our class in ``slicer.modules.dicomPlugins`` (also the exportables' ``pluginClass``).
PLUGIN_KEY = "DICOMLabelmapSegPlugin"

#: Confidence of Slicer's own DICOMSegmentationPlugin (dcmqi; core 5.12+ and QuantitativeReporting)
#: for every SEG file (``DICOMPlugins/DICOMSegmentationPlugin.py``).
CORE_SEG_LOADABLE_CONFIDENCE = 0.95
#: LABELMAP: above core's 0.95, so ``DICOMUtils.selectHighestConfidenceLoadables`` preselects only us.
LABELMAP_CONFIDENCE = 0.99
#: BINARY: below 0.95, so where dcmqi's plugin exists its established import stays preselected and ours
#: is offered next to it; on 5.10 without QuantitativeReporting 0.9 beats the scalar-volume plugin's 0.5.
BINARY_CONFIDENCE = 0.9
#: FRACTIONAL loads thresholded at 0.5 (lossy), so it ranks below BINARY.
FRACTIONAL_CONFIDENCE = 0.85
#: Where this library cannot run (Python < 3.10: Slicer 5.8): offered, never preselected.
UNSUPPORTED_CONFIDENCE = 0.1

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

FileValue = Callable[[str, str], str]


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
    problem: str = ""  # why the header parser refuses the file ('' if it reads it)


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
        return sopClassUID in SEG_SOP_CLASSES
    return fileValue(path, TAG_MODALITY) == "SEG"


def readSegHeader(path: str) -> SegHeader | None:
    """Read the header of a SEG file (no pixel data); None if it is not a SEG file.

    The segment and type facts come from the library's one header parser (:func:`..dicom.header.parse_header`),
    which needs neither highdicom nor pydicom 3, so this works in Slicer 5.10 before the user agreed to
    install them. A SEG whose header the parser refuses is still returned, with :attr:`SegHeader.problem`.
    """
    import pydicom

    from ..dicom.header import Instance, parse_header, sop_class
    from ..errors import LabelmapSegError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as error:  # any unreadable file is simply not ours to load
        logger.debug("Not a readable DICOM file %s: %s", path, error)
        return None
    sopClassUID = sop_class(ds)
    if sopClassUID not in SEG_SOP_CLASSES:
        return None
    fileMeta = getattr(ds, "file_meta", None)
    transferSyntaxUID = str(fileMeta.get("TransferSyntaxUID", "")) if fileMeta is not None else ""
    segmentationType, segmentCount, problem = str(ds.get("SegmentationType", "")).upper(), 0, ""
    try:
        parsed = parse_header(Instance(ds, str(path)))
    except LabelmapSegError as error:
        problem = str(error)
    else:
        segmentationType, segmentCount = parsed.segmentation_type.value, len(parsed.segments)
        transferSyntaxUID = parsed.transfer_syntax_uid
    referencedSeriesUID = ""
    referencedInstanceUIDs: list[str] = []
    for item in ds.get("ReferencedSeriesSequence", None) or []:
        if not referencedSeriesUID:
            referencedSeriesUID = str(item.get("SeriesInstanceUID", ""))
        for instance in item.get("ReferencedInstanceSequence", None) or []:
            uid = str(instance.get("ReferencedSOPInstanceUID", ""))
            if uid:
                referencedInstanceUIDs.append(uid)
    return SegHeader(
        path=str(path),
        sop_class_uid=sopClassUID,
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
        segmentation_type=segmentationType,
        segment_count=segmentCount,
        transfer_syntax_uid=transferSyntaxUID,
        series_description=str(ds.get("SeriesDescription", "") or ""),
        series_number=str(ds.get("SeriesNumber", "") or ""),
        study_instance_uid=str(ds.get("StudyInstanceUID", "")),
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "")),
        referenced_series_uid=referencedSeriesUID,
        referenced_instance_uids=tuple(referencedInstanceUIDs),
        problem=problem,
    )


def syntaxLabel(transferSyntaxUID: str) -> str:
    """Short human name of a transfer syntax UID: the registry's label, else pydicom's name, else the UID."""
    try:
        return TransferSyntax.from_uid(transferSyntaxUID).label
    except ValueError:
        pass
    if not transferSyntaxUID:
        return "unknown transfer syntax"
    import pydicom.uid

    return pydicom.uid.UID(transferSyntaxUID).name or transferSyntaxUID


def loadableSpecForSeries(headers: Sequence[SegHeader], pythonVersion: Sequence[int] | None = None) -> LoadableSpec:
    """Name, tooltip, confidence and references of one loadable for the SEG files of one series.

    A LABELMAP series loads as one loadable: every instance is one layer. A BINARY or FRACTIONAL
    series loads as one loadable too (segments packed into as few non-overlapping layers as possible).
    """
    headers = sorted(headers, key=lambda h: h.path)
    first = headers[0]
    segmentationType = first.segmentation_type or SegmentationType.BINARY.value
    segmentCount = sum(h.segment_count for h in headers)
    syntaxes = sorted({h.transfer_syntax_uid for h in headers})
    syntaxText = ", ".join(syntaxLabel(uid) for uid in syntaxes)
    description = first.series_description or "Segmentation"
    nodeName = description
    if segmentationType == SegmentationType.LABELMAP.value:
        confidence = LABELMAP_CONFIDENCE
        layout = plural(len(headers), "layer")
        detail = f"LABELMAP, {plural(segmentCount, 'segment')} in {layout}"
        how = "Each LABELMAP instance of the series becomes one layer of one segmentation node."
    elif segmentationType == SegmentationType.FRACTIONAL.value:
        confidence = FRACTIONAL_CONFIDENCE
        detail = f"FRACTIONAL, {plural(segmentCount, 'segment')}"
        how = "Fractional values are thresholded at 0.5; non-overlapping segments share layers."
    else:
        confidence = BINARY_CONFIDENCE
        detail = f"BINARY, {plural(segmentCount, 'segment')}"
        how = "Segments are packed into as few non-overlapping layers as possible."
    name = f"{description} ({detail}, {syntaxText})"
    seriesNumber = f"series {first.series_number}: " if first.series_number else ""
    tooltip = (
        f"{seriesNumber}{description} - DICOM Segmentation ({detail}; {syntaxText}), "
        f"{plural(len(headers), 'file')}. {how}"
    )
    referencedInstanceUIDs: list[str] = []
    for header in headers:
        for uid in header.referenced_instance_uids:
            if uid not in referencedInstanceUIDs:
                referencedInstanceUIDs.append(uid)
    # Missing packages are not a loadable warning: the browser would ask "Load anyway?" before our own
    # single install question (dependencies.installPlan). The tooltip says it instead.
    missing = missingPackages(syntaxes)
    if missing:
        tooltip += f" Loading first installs the Python package(s) {', '.join(missing)} (you are asked)."
    warning = ""
    selected = True
    refused = next((h.problem for h in headers if h.problem), "")
    problem = environmentProblem(pythonVersion) or refused
    if problem:  # offered so that the user sees why, never preselected
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
