"""Exporting a segmentation node as a LABELMAP SEG series: one use case for the module panel, the DICOM
plugin and the Export to DICOM dialog.

* :func:`examineForExport` decides whether a subject hierarchy item can be exported, why not, and the
  exportable's confidence, name and tags;
* :func:`referencePlan` decides what to do with a segmentation whose volume is not from DICOM
  (export the volume as a new DICOM series first) or that has no volume (say what to do);
* :func:`exportOptions` turns settings and (edited) tags into :class:`~..dicom.writer.ExportOptions`;
* :func:`exportSegmentation` writes the series; :func:`exportNode` also times it (:class:`ExportResult`).

``slicer``/``vtk`` objects are only received as arguments; MRML work goes through :mod:`..mrml`.
"""

from __future__ import annotations

import enum
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..dicom.options import DEFAULT_CONTENT_LABEL, DEFAULT_SERIES_DESCRIPTION, DEFAULT_SERIES_NUMBER
from ..errors import LabelmapSegError, SourceImageError
from .dependencies import environmentProblem
from .examine import PLUGIN_KEY
from .messages import humanSize, plural
from .settings import (
    SETTINGS_CONTENT_CREATOR_NAME,
    SETTINGS_PALETTE_COLOR,
    SETTINGS_TRANSFER_SYNTAX,
    syntaxFromSetting,
    toBool,
)

#: Confidence of Slicer's own SEG exporter (``DICOMSegmentationPlugin.examineForExport``: 1.0 for every
#: segmentation node; core 5.12+ and QuantitativeReporting).
CORE_SEG_EXPORT_CONFIDENCE = 1.0
#: Where ours can export the segmentation: above core's 1.0, so the Export dialog preselects LABELMAP
#: (it orders plugin groups by confidence and does not clamp it; ties go to the name that sorts last).
EXPORT_CONFIDENCE = 1.01
#: An exportable offered only so that the user learns why export is impossible (its export()
#: returns that reason). Low, so it is never preselected over an exporter that can work.
NOT_EXPORTABLE_CONFIDENCE = 0.01

INSTANCE_UIDS_ATTRIBUTE = "DICOM.instanceUIDs"

Progress = Callable[[float, str], None]


class OperationCancelled(LabelmapSegError):
    """The user cancelled a long operation; nothing was written."""


# ---------------------------------------------------------------------------------------------
# The reference volume
# ---------------------------------------------------------------------------------------------


def referenceVolumeNode(segmentationNode: Any) -> Any:
    """The segmentation's reference-geometry volume node, or None."""
    return segmentationNode.GetNodeReference(segmentationNode.GetReferenceImageGeometryReferenceRole())


def sourceInstanceUIDs(volumeNode: Any) -> list[str]:
    """SOP Instance UIDs a volume was loaded from (attribute set by DICOMScalarVolumePlugin)."""
    if volumeNode is None:
        return []
    return (volumeNode.GetAttribute(INSTANCE_UIDS_ATTRIBUTE) or "").split()


class ReferenceAction(enum.Enum):
    """What export does about the segmentation's reference volume."""

    READY = "ready"  # the volume's DICOM images are in the database
    EXPORT_VOLUME_FIRST = "export-volume-first"  # a volume not from DICOM (NRRD, NIfTI, resampled)
    NO_VOLUME = "no-volume"  # nothing to reference: the user must choose one


@dataclass(frozen=True)
class ReferencePlan:
    """The decision about the reference volume and the text shown for it."""

    action: ReferenceAction
    volumeNode: Any = None
    sourceFiles: tuple[str, ...] = ()
    problem: str = ""  # what is wrong, one sentence ('' when READY)
    message: str = ""  # what is wrong and what export offers or needs


def referencePlan(
    segmentationNode: Any, fileForInstance: Callable[[str], str], volumeNode: Any = None
) -> ReferencePlan:
    """Decide what export does with the reference volume (``volumeNode`` or the segmentation's own).

    ``fileForInstance`` is ``slicer.dicomDatabase.fileForInstance`` ('' for unknown UIDs).
    """
    name = segmentationNode.GetName()
    volume = volumeNode if volumeNode is not None else referenceVolumeNode(segmentationNode)
    if volume is None:
        problem = f"Segmentation '{name}' has no reference volume, so there are no images for the SEG to reference."
        return ReferencePlan(
            ReferenceAction.NO_VOLUME,
            problem=problem,
            message=(
                f"{problem} Load the image the segmentation was drawn on (from the DICOM database, or any "
                "file), select it as 'Reference volume' in the DICOM Labelmap Segmentation module (or as "
                "'Source volume' in Segment Editor), then export again."
            ),
        )
    uids = sourceInstanceUIDs(volume)
    files = tuple(fileForInstance(uid) for uid in uids)
    if uids and all(files):
        return ReferencePlan(ReferenceAction.READY, volume, files)
    if not uids:
        why = f"The reference volume '{volume.GetName()}' of segmentation '{name}' was not loaded from DICOM"
    else:
        absent = sum(1 for f in files if not f)
        why = (
            f"{absent} of the {len(uids)} images of reference volume '{volume.GetName()}' "
            "are not in the DICOM database"
        )
    return ReferencePlan(
        ReferenceAction.EXPORT_VOLUME_FIRST,
        volume,
        problem=f"{why}, so the SEG cannot reference its images.",
        message=(
            f"{why}, so the SEG cannot reference its images. Export the volume as a new DICOM series first "
            "(Slicer's scalar volume exporter; you enter patient and study), then the segmentation "
            "referencing it? Both are added to the DICOM database."
        ),
    )


def sourceFilesForSegmentation(
    segmentationNode: Any, fileForInstance: Callable[[str], str], volumeNode: Any = None
) -> tuple[Any, list[str]]:
    """The reference volume and its DICOM files; :class:`SourceImageError` saying what to do otherwise."""
    plan = referencePlan(segmentationNode, fileForInstance, volumeNode)
    if plan.action is not ReferenceAction.READY:
        raise SourceImageError(plan.message)
    return plan.volumeNode, list(plan.sourceFiles)


def adoptExportedSeries(volumeNode: Any, seriesInstanceUID: str, sopInstanceUIDs: Sequence[str]) -> None:
    """Make a volume that was just exported to DICOM look as if loaded from that series.

    Sets ``DICOM.instanceUIDs`` (what the SEG exporter reads) and the subject hierarchy item UIDs
    ``DICOM``/``DICOMInstanceUID`` (what loading a SEG uses to find its reference).
    """
    from ..mrml import set_series_uids

    volumeNode.SetAttribute(INSTANCE_UIDS_ATTRIBUTE, " ".join(sopInstanceUIDs))
    set_series_uids(volumeNode, seriesInstanceUID, sopInstanceUIDs)


def prepareVolumeExport(shNode: Any, volumeNode: Any, segmentationNode: Any, patientName: str, studyName: str) -> int:
    """Before the volume is exported with Slicer's Export to DICOM dialog: make sure it is in a study
    (the dialog's tag editor needs a patient and a study) and put the segmentation in the same study.

    Returns the study item.
    """
    from ..mrml import put_in_new_study

    volumeItem = shNode.GetItemByDataNode(volumeNode)
    studyItem = shNode.GetItemAncestorAtLevel(volumeItem, "Study") if volumeItem else shNode.GetInvalidItemID()
    if studyItem == shNode.GetInvalidItemID():
        return put_in_new_study([volumeNode, segmentationNode], patientName, studyName)
    segmentationItem = shNode.GetItemByDataNode(segmentationNode) or shNode.CreateItem(studyItem, segmentationNode)
    shNode.SetItemParent(segmentationItem, studyItem)
    return studyItem


def exportedVolumeSeries(before: Iterable[str], after: Iterable[str], modalityOfSeries: Callable[[str], str]) -> str:
    """The image series the volume export added to the database ('' if none was added, e.g. the user
    exported to a folder only or cancelled). SEG series added meanwhile are ignored."""
    known = set(before)
    added = [uid for uid in after if uid not in known and modalityOfSeries(uid) != "SEG"]
    return added[0] if len(added) == 1 else ""


# ---------------------------------------------------------------------------------------------
# Exportables
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
    pluginClass: str = PLUGIN_KEY


def exportTags(segmentationNode: Any, settings: Mapping[str, Any], seriesDescription: str = "") -> dict[str, str]:
    """The series-level tags the export dialog shows for editing, with their defaults."""
    return {
        "Modality": "SEG",
        "SeriesDescription": seriesDescription.strip() or segmentationNode.GetName(),
        "SeriesNumber": str(DEFAULT_SERIES_NUMBER),
        "ContentLabel": DEFAULT_CONTENT_LABEL,
        "ContentDescription": "",
        "ContentCreatorName": str(settings.get(SETTINGS_CONTENT_CREATOR_NAME) or ""),
    }


def examineForExport(
    shNode: Any,
    itemID: int,
    fileForInstance: Callable[[str], str],
    settings: Mapping[str, Any] | None = None,
    pythonVersion: Sequence[int] | None = None,
) -> ExportCheck | None:
    """Decide about exporting a subject hierarchy item; None if it is not a segmentation node.

    Exportable when the reference volume's DICOM images are in the database and the segmentation is
    in a study (the dialog's tag editor needs one). Otherwise :attr:`ExportCheck.reason` says what to
    do, and the confidence is low so that another exporter is preselected.
    """
    node = shNode.GetItemDataNode(itemID)
    if node is None or not node.IsA("vtkMRMLSegmentationNode"):
        return None
    settings = settings if settings is not None else {}
    syntax = syntaxFromSetting(settings.get(SETTINGS_TRANSFER_SYNTAX))
    tags = exportTags(node, settings)
    reason = environmentProblem(pythonVersion)
    plan = referencePlan(node, fileForInstance)
    if not reason and plan.action is ReferenceAction.EXPORT_VOLUME_FIRST:
        reason = plan.problem + (
            " Export it from the DICOM Labelmap Segmentation module, which offers to export the volume as a "
            "DICOM series first."
        )
    elif not reason and plan.action is ReferenceAction.NO_VOLUME:
        reason = plan.message
    if not reason and shNode.GetItemAncestorAtLevel(itemID, "Study") == shNode.GetInvalidItemID():
        reason = (
            f"Segmentation '{node.GetName()}' is not in a study. In the Data module, drag it under the study "
            f"of '{plan.volumeNode.GetName()}', then export again."
        )
    if reason:
        return ExportCheck(
            exportable=False,
            reason=reason,
            confidence=NOT_EXPORTABLE_CONFIDENCE,
            name="DICOM LABELMAP Segmentation (not possible, see tooltip)",
            tooltip=reason,
            tags=tags,
            segmentationNode=node,
            referenceVolumeNode=plan.volumeNode,
        )
    layers = node.GetSegmentation().GetNumberOfLayers()
    palette = ", palette color" if toBool(settings.get(SETTINGS_PALETTE_COLOR, False)) else ""
    return ExportCheck(
        exportable=True,
        reason="",
        confidence=EXPORT_CONFIDENCE,
        name=f"DICOM LABELMAP Segmentation ({syntax.label}{palette})",
        tooltip=(
            f"One LABELMAP SEG instance per layer ({plural(layers, 'layer')}) in one series, {syntax.label}. "
            "Compression and palette color: DICOM module settings (DICOM Labelmap Segmentation). "
            "For a BINARY SEG choose the DICOMSegmentationPlugin row instead."
        ),
        tags=tags,
        segmentationNode=node,
        referenceVolumeNode=plan.volumeNode,
        sourceFiles=list(plan.sourceFiles),
    )


def panelReferenceVolume(segmentationChanged: bool, chosenVolume: Any, segmentationReference: Any) -> Any:
    """The volume the module panel's reference selector shows; the segmentation node is never changed.

    A newly selected segmentation shows its own reference volume, and so does a cleared selector;
    otherwise the user's choice (also one saved in a scene) stays: it is what this export references.
    """
    if segmentationChanged or chosenVolume is None:
        return segmentationReference
    return chosenVolume


def preselectedExporter(confidenceByPlugin: Mapping[str, float]) -> str:
    """The plugin whose exportables the Export to DICOM dialog preselects (row 0).

    ``qSlicerDICOMExportDialog`` inserts plugin groups in alphabetical order of ``pluginClass`` into a
    ``QMultiMap`` keyed by ``1 - confidence``; row 0 is the smallest key and, among equal keys, the
    group inserted last (``QMultiMap::insert`` puts new values first).
    """
    best = ""
    for plugin in sorted(confidenceByPlugin):
        if not best or 1.0 - confidenceByPlugin[plugin] <= 1.0 - confidenceByPlugin[best]:
            best = plugin
    return best


# ---------------------------------------------------------------------------------------------
# Options and writing
# ---------------------------------------------------------------------------------------------


def exportOptions(settings: Mapping[str, Any], tags: Mapping[str, str] | None = None) -> Any:
    """:class:`~..dicom.writer.ExportOptions` from the settings and the exportable's (edited) tags.

    Raises ValueError with a user-readable message for a series number that is not a positive integer.
    """
    from ..dicom.options import ExportOptions

    tags = tags or {}
    seriesNumberText = str(tags.get("SeriesNumber") or DEFAULT_SERIES_NUMBER).strip()
    notPositive = f"Series number '{seriesNumberText}' is not a positive integer; enter a number such as 300."
    try:
        seriesNumber = int(seriesNumberText)
    except ValueError:
        raise ValueError(notPositive) from None
    description = str(tags.get("SeriesDescription") or "").strip() or DEFAULT_SERIES_DESCRIPTION
    creator = str(tags.get("ContentCreatorName") or settings.get(SETTINGS_CONTENT_CREATOR_NAME) or "").strip()
    try:  # ExportOptions owns the defaults and the validation (series number 1..2^31-1)
        return ExportOptions(
            transfer_syntax=syntaxFromSetting(settings.get(SETTINGS_TRANSFER_SYNTAX)),
            palette_color=toBool(settings.get(SETTINGS_PALETTE_COLOR, False)),
            series_description=description[:64],
            series_number=seriesNumber,
            content_label=str(tags.get("ContentLabel") or "").strip() or DEFAULT_CONTENT_LABEL,
            content_description=str(tags.get("ContentDescription") or "").strip() or None,
            content_creator_name=creator or None,
        )
    except ValueError as error:
        raise ValueError(f"{notPositive} ({error})" if "Series number" in str(error) else str(error)) from None


def exportSegmentation(
    segmentationNode: Any,
    referenceVolumeNode: Any,
    sourceFiles: Sequence[str],
    outputDirectory: str | os.PathLike,
    options: Any,
    progress: Progress | None = None,
) -> list[Path]:
    """Write the segmentation node, on the reference volume's grid, as a LABELMAP SEG series.

    One instance per layer. Raises a :class:`~..errors.LabelmapSegError` with a user-readable
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


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote and how long it took; :meth:`summary` is what the panel shows."""

    files: tuple[Path, ...]
    seconds: float
    #: One line per consumer that misreads the files (the writer's CompatibilityWarnings), each once.
    compatibility: tuple[str, ...] = ()

    @property
    def totalBytes(self) -> int:
        return sum(Path(f).stat().st_size for f in self.files)

    def summary(self) -> str:
        lines = [
            f"Wrote {plural(len(self.files), 'file')}, {humanSize(self.totalBytes)} in total, in {self.seconds:.1f} s:"
        ]
        lines += [f"  {Path(f).name}: {humanSize(Path(f).stat().st_size)}" for f in self.files]
        lines += [f"Note: {line}" for line in self.compatibility]
        return "\n".join(lines)


def exportNode(
    segmentationNode: Any,
    referenceVolumeNode: Any,
    sourceFiles: Sequence[str],
    outputDirectory: str | os.PathLike,
    options: Any,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> ExportResult:
    """:func:`exportSegmentation`, timed: the files written, the seconds it took and the compatibility notes."""
    import warnings

    from ..dicom.compat import CompatibilityWarning

    start = clock()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CompatibilityWarning)
        files = exportSegmentation(
            segmentationNode, referenceVolumeNode, sourceFiles, outputDirectory, options, progress
        )
    seconds = clock() - start
    notes: list[str] = []
    for warning in caught:
        if issubclass(warning.category, CompatibilityWarning):
            text = str(warning.message)
            line = text.split(": ", 1)[-1] if text.startswith("Instance ") else text  # once for the series
            if line not in notes:
                notes.append(line)
        else:  # not ours to summarize: pass it on unchanged
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return ExportResult(tuple(Path(f) for f in files), seconds, tuple(notes))


def dicomBrowserIsOpen(modules: Any) -> bool:
    """True if the DICOM module's browser widget exists (``DICOMUtils.refreshDICOMWidget`` logs an error
    otherwise); ``modules`` is ``slicer.modules``."""
    return getattr(getattr(modules, "DICOMInstance", None), "browserWidget", None) is not None


def progressValue(fraction: float) -> int:
    """Progress dialog value for a fraction: 0..99, never 100 before the dialog is closed.

    A ``QProgressDialog`` hides itself when it reaches its maximum and shows again on the next
    value; the shell closes it itself when the work is done.
    """
    return max(0, min(99, int(round(100 * fraction))))
