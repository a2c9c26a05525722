"""Use case: any DICOM SEG series (BINARY, FRACTIONAL, LABELMAP) -> one new LABELMAP SEG series.

The segments are read by :func:`~..dicom.reader.read_segmentation` (overlapping segments land in
separate layers, non-overlapping ones share a layer: as few layers as the overlaps allow) and
written by :func:`~..dicom.writer.create_labelmap_datasets`, one instance per layer, with their
numbers, names, colors, terminology and algorithm.

The input SEG is its own source of truth: no source image series is needed. The writer gets
header-only stand-ins for the source slices built from the SEG's geometry, patient and study;
after writing, every reference is replaced by the input's own ones (Referenced Series Sequence,
and per frame the Source Image items the input gives at the same position), so the new series
references exactly the images the input referenced. Provenance: the input SEG series is added to
the Referenced Series Sequence and named in the Content Description.

Deterministic by default: the new Series and SOP Instance UIDs are derived from the input's SOP
Instance UIDs and the options (:func:`derived_uid`), and dates and times are the input's, so
converting the same input twice gives byte-identical files (resumable, idempotent pipelines).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID, generate_uid

from ..atomic import AtomicFiles
from ..errors import LabelmapSegError
from ..model import Geometry, Segmentation

logger = logging.getLogger(__name__)

Progress = Callable[[float, str], None]

#: Patient and study attributes the stand-in sources carry over from the input SEG (highdicom copies them).
_PATIENT_STUDY = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge", "StudyInstanceUID", "StudyDate",
    "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName", "StudyDescription", "SpecificCharacterSet",
    "IssuerOfPatientID", "PatientIdentityRemoved", "DeidentificationMethod", "ClinicalTrialSponsorName",
    "ClinicalTrialProtocolID", "ClinicalTrialSubjectID", "ClinicalTrialSiteID",
)
#: Dates and times copied from the input when deterministic (the content is the input's content).
_DATES = ("SeriesDate", "SeriesTime", "ContentDate", "ContentTime", "InstanceCreationDate", "InstanceCreationTime")
_POSITION_DECIMALS = 2  # mm: frames of one slice share a position to far better than 0.01 mm


@dataclasses.dataclass(frozen=True)
class ConvertSettings:
    """How to convert: output syntax and series attributes (None = the input's), UID policy."""

    transfer_syntax: str = "jpeg-ls"
    fractional_threshold: float = 0.5
    series_description: str | None = None
    series_number: int | None = None
    palette_color: bool = False
    deterministic: bool = True
    algorithm_type: str | None = None
    algorithm_name: str | None = None

    def fingerprint(self) -> str:
        """A text that changes whenever an option that changes the output changes."""
        return repr(dataclasses.astuple(self))


@dataclasses.dataclass(frozen=True)
class InputSeries:
    """Header facts of the input SEG series that the output keeps."""

    headers: Sequence[Dataset]  # one per instance, no pixel data

    @property
    def first(self) -> Dataset:
        return self.headers[0]

    @property
    def sop_instance_uids(self) -> list[str]:
        return sorted(str(ds.SOPInstanceUID) for ds in self.headers)


def read_input_headers(files: Sequence[str | os.PathLike[str]]) -> InputSeries:
    """Headers of the input SEG instances (no pixel data)."""
    headers: list[Dataset] = []
    for file in files:
        try:
            headers.append(pydicom.dcmread(os.fspath(file), stop_before_pixels=True))
        except (OSError, pydicom.errors.InvalidDicomError) as error:
            raise LabelmapSegError(f"{file}: cannot read the DICOM header ({error}).") from None
    headers.sort(key=lambda ds: int(ds.get("InstanceNumber", 0) or 0))
    return InputSeries(headers)


def derived_uid(*parts: str) -> UID:
    """A UID determined by ``parts`` (same parts, same UID), under pydicom's UID root."""
    return generate_uid(entropy_srcs=["dicom-labelmap-seg convert", *parts])


def convert_datasets(
    files: Sequence[str | os.PathLike[str]],
    settings: ConvertSettings = ConvertSettings(),  # noqa: B008 - frozen
    progress: Progress | None = None,
) -> list[Dataset]:
    """The LABELMAP instances converted from the SEG ``files`` (one series)."""
    from ..dicom.reader import read_segmentation
    from ..dicom.writer import create_labelmap_datasets
    from .options import export_options  # the one route to ExportOptions

    if progress:
        progress(0.0, "reading")
    segmentation = read_segmentation([os.fspath(f) for f in files], fractional_threshold=settings.fractional_threshold)
    segmentation = _with_algorithm(segmentation, settings)
    source = read_input_headers(files)
    first = source.first
    input_uids = source.sop_instance_uids
    fingerprint = settings.fingerprint()
    series_uid = derived_uid(*input_uids, fingerprint) if settings.deterministic else None
    number = settings.series_number
    if number is None:
        try:
            number = int(first.get("SeriesNumber") or 0) or None
        except (TypeError, ValueError):
            number = None
    options = export_options(
        transfer_syntax=settings.transfer_syntax,
        palette_color=settings.palette_color,
        series_description=settings.series_description or str(first.get("SeriesDescription") or "") or None,
        series_number=number,
        series_instance_uid=series_uid,
        content_label=str(first.get("ContentLabel") or "") or None,
        content_description=provenance_text(first),
        content_creator_name=str(first.get("ContentCreatorName") or "") or None,
    )
    stand_ins = stand_in_sources(segmentation.geometry, first)
    if progress:
        progress(0.2, "encoding")
    datasets = create_labelmap_datasets(segmentation, stand_ins, options)
    frame_references = _frame_references(source.headers)
    for index, ds in enumerate(datasets):
        _restore_references(ds, source, frame_references)
        if settings.deterministic:
            uid = derived_uid(*input_uids, fingerprint, f"instance {index + 1}")
            ds.SOPInstanceUID = uid
            ds.file_meta.MediaStorageSOPInstanceUID = uid
            _make_deterministic(ds, first, derived_uid(*input_uids, fingerprint, "dimensions"))
            if "PaletteColorLookupTableUID" in ds:
                ds.PaletteColorLookupTableUID = derived_uid(*input_uids, fingerprint, "palette")
    return datasets


def convert_series(
    files: Sequence[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    settings: ConvertSettings = ConvertSettings(),  # noqa: B008 - frozen
    progress: Progress | None = None,
) -> list[Path]:
    """Convert one SEG series (``files``) to a LABELMAP series in ``output_dir``; all files or none."""
    datasets = convert_datasets(files, settings, progress)
    if progress:
        progress(0.9, "writing")
    output_dir = Path(output_dir)
    written = []
    with AtomicFiles() as atomic:
        for ds in datasets:
            final = output_dir / output_file_name(ds)
            ds.save_as(atomic.temporary(final), enforce_file_format=True)
            written.append(final)
    return written


def output_file_name(ds: Dataset) -> str:
    """``<SeriesNumber>_<InstanceNumber>_<SOPInstanceUID>.dcm``, as the writer names its files."""
    return f"{int(ds.get('SeriesNumber') or 0)}_{int(ds.InstanceNumber)}_{ds.SOPInstanceUID}.dcm"


def _make_deterministic(ds: Dataset, first: Dataset, dimension_uid: str) -> None:
    """Dates and times of the input, no creation timestamps, derived Dimension Organization UID."""
    for keyword in _DATES:
        if first.get(keyword):
            setattr(ds, keyword, first.get(keyword))
        elif keyword.startswith("InstanceCreation"):
            ds.pop(keyword, None)  # Type 3
    for item in ds.get("ContributingEquipmentSequence", []):
        item.pop("ContributionDateTime", None)  # Type 3
    for item in [*ds.get("DimensionOrganizationSequence", []), *ds.get("DimensionIndexSequence", [])]:
        if "DimensionOrganizationUID" in item:
            item.DimensionOrganizationUID = dimension_uid


def provenance_text(first: Dataset) -> str:
    """The Content Description of a converted series: what it was converted from (at most 64 characters)."""
    kind = str(first.get("SegmentationType") or "SEG")
    uid = str(first.SOPInstanceUID)
    for text in (f"LABELMAP from {kind} SEG {uid}", f"From {kind} SEG {uid}", f"From SEG {uid}"):
        if len(text) <= 64:
            return text
    return uid  # the whole UID (at most 64 characters) matters more than the words


def stand_in_sources(geometry: Geometry, seg: Dataset) -> list[Dataset]:
    """Header-only source slices on the grid of ``geometry`` carrying the SEG's patient and study.

    Their UIDs are placeholders: every reference the writer derives from them is replaced by
    :func:`_restore_references`.
    """
    from ..geometry import frame_positions, plane_attributes

    orientation, pixel_spacing = plane_attributes(geometry.affine)
    normal = np.cross(orientation[:3], orientation[3:])
    thickness = abs(float(geometry.affine[:3, 0] @ normal)) or 1.0
    frame_of_reference = str(seg.get("FrameOfReferenceUID") or "") or derived_uid("frame", str(seg.SOPInstanceUID))
    placeholder_series = derived_uid("placeholder series", str(seg.SOPInstanceUID))
    sources = []
    for index, position in enumerate(frame_positions(geometry.affine, geometry.shape[0])):
        ds = Dataset()
        for keyword in _PATIENT_STUDY:
            if keyword in seg:
                setattr(ds, keyword, seg.get(keyword))
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture: a placeholder, never referenced
        ds.SOPInstanceUID = derived_uid("placeholder", str(seg.SOPInstanceUID), str(index))
        ds.SeriesInstanceUID = placeholder_series
        ds.FrameOfReferenceUID = frame_of_reference
        ds.Modality = "OT"
        ds.Rows, ds.Columns = int(geometry.shape[1]), int(geometry.shape[2])
        ds.PixelSpacing = [float(v) for v in pixel_spacing]
        ds.ImageOrientationPatient = [float(v) for v in orientation]
        ds.ImagePositionPatient = [float(v) for v in position]
        ds.SliceThickness = thickness
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        sources.append(ds)
    return sources


def _with_algorithm(segmentation: Segmentation, settings: ConvertSettings) -> Segmentation:
    if not settings.algorithm_type and not settings.algorithm_name:
        return segmentation
    from ..model import SegmentAlgorithmType

    layers = []
    for layer in segmentation.layers:
        segments = []
        for segment in layer.segments:
            changes: dict[str, Any] = {}
            if settings.algorithm_type:
                changes["algorithm_type"] = SegmentAlgorithmType(settings.algorithm_type.upper())
            if settings.algorithm_name:
                changes["algorithm_name"] = settings.algorithm_name
            segments.append(dataclasses.replace(segment, **changes))
        layers.append(dataclasses.replace(layer, segments=segments))
    return segmentation.with_layers(layers)


def _position_key(values: Any) -> tuple[float, ...]:
    return tuple(round(float(v), _POSITION_DECIMALS) for v in values)


def _frame_references(headers: Sequence[Dataset]) -> dict[tuple[float, ...], list[Dataset]]:
    """Per plane position of the input: its Source Image items (distinct by instance and frame)."""
    references: dict[tuple[float, ...], list[Dataset]] = {}
    seen: dict[tuple[float, ...], set[tuple[str, str]]] = {}
    for ds in headers:
        shared = ds.get("SharedFunctionalGroupsSequence", [Dataset()])[0]
        for item in ds.get("PerFrameFunctionalGroupsSequence", []):
            plane = item.get("PlanePositionSequence") or shared.get("PlanePositionSequence")
            if not plane:
                continue
            key = _position_key(plane[0].ImagePositionPatient)
            for derivation in item.get("DerivationImageSequence", []) or shared.get("DerivationImageSequence", []):
                for source in derivation.get("SourceImageSequence", []):
                    identity = (str(source.get("ReferencedSOPInstanceUID", "")),
                                str(source.get("ReferencedFrameNumber", "")))
                    if identity in seen.setdefault(key, set()):
                        continue
                    seen[key].add(identity)
                    references.setdefault(key, []).append(copy.deepcopy(source))
    return references


def _restore_references(
    ds: Dataset, source: InputSeries, frame_references: dict[tuple[float, ...], list[Dataset]]
) -> None:
    """Replace the stand-ins' references in ``ds`` by the input's (and reference the input SEG series)."""
    first = source.first
    referenced = [copy.deepcopy(item) for item in first.get("ReferencedSeriesSequence", [])]
    seg_series = Dataset()
    seg_series.SeriesInstanceUID = first.SeriesInstanceUID
    instances = []
    for header in source.headers:
        item = Dataset()
        item.ReferencedSOPClassUID = header.SOPClassUID
        item.ReferencedSOPInstanceUID = header.SOPInstanceUID
        instances.append(item)
    seg_series.ReferencedInstanceSequence = DicomSequence(instances)
    referenced.append(seg_series)
    ds.ReferencedSeriesSequence = DicomSequence(referenced)
    if "SourceImageSequence" in ds:
        del ds.SourceImageSequence
    if "SourceImageSequence" in first:
        ds.SourceImageSequence = copy.deepcopy(first.SourceImageSequence)
    if not str(first.get("FrameOfReferenceUID") or ""):
        ds.pop("FrameOfReferenceUID", None)
    derivation_template = None
    for item in ds.PerFrameFunctionalGroupsSequence:
        derivations = item.get("DerivationImageSequence")
        if derivations and derivation_template is None:
            derivation_template = derivations[0]
    for item in ds.PerFrameFunctionalGroupsSequence:
        key = _position_key(item.PlanePositionSequence[0].ImagePositionPatient)
        sources = frame_references.get(key)
        if not sources:
            item.DerivationImageSequence = DicomSequence([])
            continue
        derivation = Dataset()
        if derivation_template is not None and "DerivationCodeSequence" in derivation_template:
            derivation.DerivationCodeSequence = copy.deepcopy(derivation_template.DerivationCodeSequence)
        else:
            code = Dataset()
            code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "113076", "DCM", "Segmentation"
            derivation.DerivationCodeSequence = DicomSequence([code])
        derivation.SourceImageSequence = DicomSequence([copy.deepcopy(s) for s in sources])
        item.DerivationImageSequence = DicomSequence([derivation])


def series_fingerprint(files: Sequence[str | os.PathLike[str]]) -> str:
    """A short stable hash of the input SOP Instance UIDs (for output folder names)."""
    uids = read_input_headers(files).sop_instance_uids
    return hashlib.sha256("\n".join(uids).encode()).hexdigest()[:12]


def expected_series_uid(files: Sequence[str | os.PathLike[str]], settings: ConvertSettings) -> str:
    """The Series Instance UID a deterministic conversion of ``files`` with ``settings`` gets."""
    return derived_uid(*read_input_headers(files).sop_instance_uids, settings.fingerprint())


def binary_dataset(files: Sequence[str | os.PathLike[str]]) -> Dataset:
    """One BINARY SEG instance holding every segment of the SEG series ``files`` (for receivers without LABELMAP).

    Segments are renumbered 1..n in layer order (BINARY numbers must be unique and consecutive);
    names, colors, terminology and algorithm are kept; references as in :func:`convert_datasets`.
    UIDs are derived from the input's.
    """
    import highdicom as hd
    from pydicom.uid import ExplicitVRLittleEndian

    from ..dicom.reader import read_segmentation
    from ..dicom.segment import segment_description

    segmentation = read_segmentation([os.fspath(f) for f in files])
    source = read_input_headers(files)
    first = source.first
    masks: list[np.ndarray] = []
    descriptions: list[Any] = []
    for layer in segmentation.layers:
        for segment in layer.segments:
            number = len(descriptions) + 1
            masks.append(layer.labels == segment.label_value)
            descriptions.append(segment_description(dataclasses.replace(segment, label_value=number)))
    pixels = np.stack(masks, axis=-1)
    uids = source.sop_instance_uids
    ds = hd.seg.Segmentation(
        source_images=stand_in_sources(segmentation.geometry, first),
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=derived_uid(*uids, "binary series"),
        series_number=int(first.get("SeriesNumber") or 1) or 1,
        sop_instance_uid=derived_uid(*uids, "binary instance"),
        instance_number=1,
        manufacturer=str(first.get("Manufacturer") or "DICOMLabelmapSeg"),
        manufacturer_model_name=str(first.get("ManufacturerModelName") or "DICOMLabelmapSeg"),
        software_versions=str(first.get("SoftwareVersions") or "0"),
        device_serial_number=str(first.get("DeviceSerialNumber") or "0"),
        content_label=str(first.get("ContentLabel") or "SEGMENTATION"),
        content_description=f"BINARY from LABELMAP SEG {first.SOPInstanceUID}"[:64],
        series_description=str(first.get("SeriesDescription") or "Segmentation"),
        transfer_syntax_uid=ExplicitVRLittleEndian,
        omit_empty_frames=False,
    )
    _restore_references(ds, source, _frame_references(source.headers))
    _make_deterministic(ds, first, derived_uid(*uids, "binary dimensions"))
    return ds
