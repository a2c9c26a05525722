"""Read DICOM Segmentation series (LABELMAP, BINARY, FRACTIONAL) into the model.

* LABELMAP (Label Map Segmentation Storage): every instance of the series is one layer.
  Frames are placed by their Image Position (Patient), never by their order; slices that
  have no frame (sparse files of other tools) are background. Label 0, the Pixel
  Padding Value and a segment numbered 0 are background and never become segments.
* BINARY and FRACTIONAL (Segmentation Storage): each frame belongs to one segment
  (Referenced Segment Number); segments are packed greedily into as few layers as
  possible such that no two segments of a layer overlap. FRACTIONAL frames are
  thresholded.

Untrusted headers are checked before anything is allocated, and every problem raises a
typed :class:`~.errors.LabelmapSegError` that says what is wrong and what to do.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, Union

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from . import framegroups, pixels
from .errors import (
    CorruptPixelDataError,
    GeometryMismatchError,
    ImplausibleSizeError,
    InvalidDicomFileError,
    LabelmapSegError,
    UndescribedLabelError,
    UnsupportedSegmentationError,
)
from .geometry import affine_from_plane, slice_normal
from .model import (
    Geometry,
    Layer,
    ReferencedSeries,
    Segment,
    Segmentation,
    SegmentationType,
    SeriesInfo,
    label_dtype,
)
from .terminology import segment_from_description

logger = logging.getLogger(__name__)

LABELMAP_SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
_SEG_SOP_CLASSES = (LABELMAP_SEGMENTATION_STORAGE, SEGMENTATION_STORAGE)

#: Default sanity bound on the voxels a series may make us allocate (all layers together).
MAX_VOXELS = 2**31

#: A path, a folder, a pydicom Dataset, or a list of those.
Source = Union[str, os.PathLike, Dataset]
Sources = Union[Source, Iterable[Source]]
T = TypeVar("T")


# ---------------------------------------------------------------------------- public API


@dataclass(frozen=True)
class LayerDescription:
    """Header facts of one SEG instance (one layer of a LABELMAP series)."""

    sop_instance_uid: str
    instance_number: int | None
    transfer_syntax_uid: str
    transfer_syntax: str
    number_of_frames: int
    rows: int
    columns: int
    bits_allocated: int
    photometric_interpretation: str
    pixel_padding_value: int | None
    segments: tuple[Segment, ...]
    path: str | None = None


@dataclass(frozen=True)
class SeriesDescription:
    """What :func:`describe` reports about one SEG series (no pixels decoded).

    ``problem`` is None if :func:`read_segmentation` can read the series, else why not.
    ``geometry`` is None if the headers define no volume (e.g. slide microscopy).
    """

    series_info: SeriesInfo
    layers: tuple[LayerDescription, ...]
    geometry: Geometry | None
    referenced_series: ReferencedSeries | None
    problem: str | None = None

    @property
    def segments(self) -> list[Segment]:
        """All segments of all layers."""
        return [segment for layer in self.layers for segment in layer.segments]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable summary (for ``dicom-labelmap-seg info --json``)."""
        info = self.series_info
        geometry = None
        if self.geometry is not None:
            geometry = {
                "shape": list(self.geometry.shape),
                "spacing": [round(float(v), 6) for v in self.geometry.spacing],
                "origin": [round(float(v), 6) for v in self.geometry.origin],
                "direction": [[round(float(v), 6) for v in row] for row in self.geometry.direction],
                "frame_of_reference_uid": self.geometry.frame_of_reference_uid,
            }
        referenced = None
        if self.referenced_series is not None:
            referenced = {
                "study_instance_uid": self.referenced_series.study_instance_uid,
                "series_instance_uid": self.referenced_series.series_instance_uid,
                "sop_class_uid": self.referenced_series.sop_class_uid,
                "instances": len(self.referenced_series.sop_instance_uids),
            }
        return {
            "series_instance_uid": info.series_instance_uid,
            "study_instance_uid": info.study_instance_uid,
            "segmentation_type": info.segmentation_type.value,
            "series_description": info.series_description,
            "series_number": info.series_number,
            "content_label": info.content_label,
            "content_description": info.content_description,
            "content_creator_name": info.content_creator_name,
            "patient_id": info.patient_id,
            "patient_name": info.patient_name,
            "palette_color": info.palette_color,
            "readable": self.problem is None,
            "problem": self.problem,
            "geometry": geometry,
            "referenced_series": referenced,
            "layers": [
                {
                    "sop_instance_uid": layer.sop_instance_uid,
                    "instance_number": layer.instance_number,
                    "path": layer.path,
                    "transfer_syntax": layer.transfer_syntax,
                    "transfer_syntax_uid": layer.transfer_syntax_uid,
                    "frames": layer.number_of_frames,
                    "rows": layer.rows,
                    "columns": layer.columns,
                    "bits_allocated": layer.bits_allocated,
                    "photometric_interpretation": layer.photometric_interpretation,
                    "pixel_padding_value": layer.pixel_padding_value,
                    "segments": [_segment_dict(segment) for segment in layer.segments],
                }
                for layer in self.layers
            ],
        }


def read_segmentation(
    sources: Sources,
    *,
    fractional_threshold: float = 0.5,
    max_voxels: int = MAX_VOXELS,
    workers: int = 1,
) -> Segmentation:
    """Read ONE DICOM SEG series into a :class:`~.model.Segmentation`.

    Parameters
    ----------
    sources: path, folder, Dataset or a list of them
        The SEG instances of one series. Folders are searched recursively; files in them
        that are not DICOM SEG are skipped.
    fractional_threshold: float
        FRACTIONAL segmentations: a voxel belongs to a segment if its value is at least
        ``fractional_threshold * MaximumFractionalValue`` (and not 0).
    max_voxels: int
        Sanity bound on the label voxels (all layers) a header may make us allocate.
    workers: int
        Frame decoding threads; 0 means ``os.cpu_count()``. Default 1: the codec wrappers
        (pyjpegls, pylibjpeg-openjpeg) hold the GIL while decoding, and threads measured no
        faster on a 512 x 512 x 334 JPEG-LS or RLE label map.

    Raises
    ------
    LabelmapSegError
        A subclass saying what is wrong: InvalidDicomFileError, CorruptPixelDataError,
        ImplausibleSizeError, UnsupportedSegmentationError, GeometryMismatchError,
        UndescribedLabelError, MissingCodecError.
    """
    series = _group_series(_load(sources, headers_only=False))
    if len(series) != 1:
        listed = ", ".join(sorted(series))
        raise UnsupportedSegmentationError(
            f"The input holds {len(series)} segmentation series ({listed}); read_segmentation reads one. "
            "Pass the files of one series, or use read_segmentations."
        )
    return _guarded(_read_series, next(iter(series.values())), fractional_threshold, max_voxels, workers)


def read_segmentations(
    sources: Sources,
    *,
    fractional_threshold: float = 0.5,
    max_voxels: int = MAX_VOXELS,
    workers: int = 1,
) -> list[Segmentation]:
    """Read every DICOM SEG series found in ``sources`` (grouped by Series Instance UID).

    Series are returned in the order they are first met. Parameters as :func:`read_segmentation`.
    """
    series = _group_series(_load(sources, headers_only=False))
    return [
        _guarded(_read_series, instances, fractional_threshold, max_voxels, workers) for instances in series.values()
    ]


def describe(sources: Sources) -> list[SeriesDescription]:
    """Header-level description of every SEG series in ``sources`` (no pixel data is decoded).

    Series that are valid DICOM SEG but cannot be read (e.g. slide microscopy) are described
    with a ``problem``; files that are not DICOM or lack mandatory attributes raise
    :class:`~.errors.InvalidDicomFileError`.
    """
    return [_guarded(_describe_series, instances) for instances in _group_series(_load(sources, True)).values()]


def _describe_series(instances: list[_Instance]) -> SeriesDescription:
    """The SeriesDescription of one series (headers only)."""
    headers = _sorted_headers(instances)
    _check_series_consistency(headers)
    problem = None
    geometry = None
    try:
        unsupported = next((h.unsupported for h in headers if h.unsupported), None)
        if unsupported:
            raise UnsupportedSegmentationError(unsupported)
        geometry, _ = _series_grid(headers)
    except LabelmapSegError as error:
        problem = str(error)
    return SeriesDescription(
        series_info=_series_info(headers),
        layers=tuple(_layer_description(header) for header in headers),
        geometry=geometry,
        referenced_series=_referenced_series(headers),
        problem=problem,
    )


def _guarded(function: Callable[..., T], instances: list[_Instance], *args: Any) -> T:
    """Call ``function(instances, *args)``; turn any library exception into a typed error naming the file."""
    try:
        return function(instances, *args)
    except LabelmapSegError:
        raise
    except MemoryError as error:
        raise ImplausibleSizeError(
            "Not enough memory to read this segmentation; its header may be damaged, or the data is too large "
            "for this computer."
        ) from error
    except Exception as error:  # noqa: BLE001 - pydicom raises many types on damaged values
        where = _where(instances[0]) if len(instances) == 1 else "A file of the series"
        raise InvalidDicomFileError(
            f"{where} has a damaged header or pixel data ({_brief(error)}); export the file again."
        ) from error


# ---------------------------------------------------------------------------- loading files


@dataclass
class _Instance:
    ds: Dataset
    path: str | None = None


def _load(sources: Sources, headers_only: bool) -> list[_Instance]:
    """Read every SEG instance of ``sources`` (folders recursively, skipping non-SEG files there)."""
    if isinstance(sources, (str, os.PathLike, Dataset)):
        sources = [sources]
    instances: list[_Instance] = []
    skipped: list[str] = []
    searched_folder = False
    for source in sources:
        if isinstance(source, Dataset):
            _check_sop_class(source, "the given dataset")
            instances.append(_Instance(source))
            continue
        path = Path(source)
        if path.is_dir():
            searched_folder = True
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                if not _has_dicom_preamble(file):
                    continue
                try:  # headers first: other files of the folder (e.g. the images) are not read further
                    ds = _read_file(file, headers_only=True)
                except InvalidDicomFileError as error:
                    logger.warning("Skipped %s: %s", file, error)
                    skipped.append("unreadable files")
                    continue
                if _sop_class(ds) not in _SEG_SOP_CLASSES:
                    skipped.append(_sop_class_name(ds))
                    continue
                instances.append(_Instance(ds if headers_only else _read_file(file, headers_only), str(file)))
        elif path.is_file():
            ds = _read_file(path, headers_only)
            _check_sop_class(ds, f"'{path.name}'")
            instances.append(_Instance(ds, str(path)))
        else:
            raise InvalidDicomFileError(f"'{path}' does not exist; give a DICOM SEG file or a folder holding one.")
    if not instances:
        where = "the given folder(s)" if searched_folder else "the input"
        other = f" (found only: {', '.join(sorted(set(skipped)))})" if skipped else ""
        raise InvalidDicomFileError(f"No DICOM Segmentation files were found in {where}{other}.")
    return instances


_LAZY_SEQUENCES = (framegroups.PER_FRAME_FUNCTIONAL_GROUPS, framegroups.REFERENCED_SERIES)


def _has_dicom_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _read_file(path: Path, headers_only: bool) -> Dataset:
    try:
        size = path.stat().st_size
    except OSError as error:
        raise InvalidDicomFileError(
            f"'{path}' cannot be read ({error.strerror}); check the path and permissions."
        ) from error
    if size < 132 or not _has_dicom_preamble(path):
        raise InvalidDicomFileError(
            f"'{path.name}' is not a DICOM file (no 'DICM' marker after the 128-byte preamble). "
            "Give a DICOM SEG file (.dcm)."
        )
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(path, stop_before_pixels=headers_only)
            # pydicom converts element values lazily: convert them now so that damage surfaces here,
            # except two large sequences that framegroups parses from raw bytes much faster (guarded later).
            for dataset in (getattr(ds, "file_meta", None) or Dataset(), ds):
                for tag in list(dataset.keys()):
                    if tag not in _LAZY_SEQUENCES:
                        _ = dataset[tag].value
    except InvalidDicomError as error:
        raise InvalidDicomFileError(f"'{path.name}' is not a valid DICOM file; give a DICOM SEG file.") from error
    except Exception as error:  # noqa: BLE001 - pydicom raises many types on damaged files
        raise InvalidDicomFileError(
            f"'{path.name}' is truncated or damaged and cannot be parsed as DICOM ({_brief(error)}). "
            "Copy or export the file again."
        ) from error
    for warning in caught:
        text = str(warning.message)
        if "End of file" in text or "EOF" in text:
            raise InvalidDicomFileError(
                f"'{path.name}' is truncated (the file ends inside an element); copy or export it again."
            )
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return ds


def _sop_class(ds: Dataset) -> str:
    uid = ds.get("SOPClassUID")
    if not uid and getattr(ds, "file_meta", None) is not None:
        uid = ds.file_meta.get("MediaStorageSOPClassUID")
    return str(uid or "")


def _sop_class_name(ds: Dataset) -> str:
    uid = _sop_class(ds)
    if not uid:
        return "DICOM without SOP Class UID"
    name = pydicom.uid.UID(uid).name
    return name if name and name != uid else f"SOP Class {uid}"


def _check_sop_class(ds: Dataset, what: str) -> None:
    uid = _sop_class(ds)
    if not uid or not pydicom.uid.UID(uid).is_valid:
        raise InvalidDicomFileError(
            f"{what} has no valid SOP Class UID (found {_shown(uid)}); the file is truncated or is not a DICOM "
            "Segmentation. Give a complete SEG file."
        )
    if uid not in _SEG_SOP_CLASSES:
        raise UnsupportedSegmentationError(
            f"{what} is {_sop_class_name(ds)}, not a DICOM Segmentation (Label Map Segmentation Storage or "
            "Segmentation Storage). Give a SEG file."
        )


def _group_series(instances: list[_Instance]) -> dict[str, list[_Instance]]:
    series: dict[str, list[_Instance]] = {}
    seen: set[str] = set()
    for instance in instances:
        uid = str(instance.ds.get("SeriesInstanceUID", "") or "")
        if not uid:
            raise InvalidDicomFileError(
                f"{_where(instance)} has no Series Instance UID (a mandatory attribute); the file is invalid."
            )
        sop_uid = str(instance.ds.get("SOPInstanceUID", "") or "")
        if sop_uid and sop_uid in seen:
            continue  # the same instance given twice
        seen.add(sop_uid)
        series.setdefault(uid, []).append(instance)
    return series


def _where(instance: _Instance) -> str:
    return f"'{Path(instance.path).name}'" if instance.path else "The dataset"


def _shown(value: Any, limit: int = 40) -> str:
    """``repr(value)``, cut to ``limit`` characters, for quoting untrusted header values in messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _brief(error: BaseException) -> str:
    """A short, user-presentable reason from a library exception."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    text = text.replace("KeyError", "missing key").replace("struct.error", "bad binary value")
    if not text or "object at 0x" in text or "Traceback" in text:
        return "unreadable data"
    return text[:150]


# ---------------------------------------------------------------------------- headers


@dataclass
class _Planes:
    """Plane geometry of one instance's frames."""

    orientation: np.ndarray | None  # (6,)
    pixel_spacing: np.ndarray | None  # (2,)
    spacing_between_slices: float | None
    slice_thickness: float | None
    positions: np.ndarray | None  # (frames, 3); None if the frames have no positions


@dataclass
class _Header:
    instance: _Instance
    segmentation_type: SegmentationType
    transfer_syntax_uid: str
    layout: pixels.FrameLayout
    photometric_interpretation: str
    padding_value: int | None
    segments: dict[int, Segment]
    background_numbers: set[int]
    planes: _Planes
    frame_segments: np.ndarray | None  # BINARY/FRACTIONAL: referenced segment number per frame
    maximum_fractional_value: int | None
    frame_of_reference_uid: str | None
    unsupported: str | None = None
    source_sop_uids: list[str] = field(default_factory=list)

    @property
    def ds(self) -> Dataset:
        return self.instance.ds


def _required(ds: Dataset, keyword: str, where: str) -> Any:
    value = ds.get(keyword)
    if value is None or (isinstance(value, (str, bytes, list, pydicom.Sequence)) and len(value) == 0):
        raise InvalidDicomFileError(
            f"{where} lacks {keyword}, a mandatory attribute of DICOM Segmentations; the file is invalid. "
            "Export it again with a conforming tool."
        )
    return value


def _int(ds: Dataset, keyword: str, where: str, low: int, high: int) -> int:
    value = _required(ds, keyword, where)
    try:
        number = int(value)
    except (TypeError, ValueError) as error:
        raise InvalidDicomFileError(f"{where} has {keyword} {_shown(value)}, which is not a number.") from error
    if not low <= number <= high:
        raise InvalidDicomFileError(f"{where} has {keyword} {number}; it must be between {low} and {high}.")
    return number


def _parse_header(instance: _Instance) -> _Header:
    """Check and collect the header facts of one SEG instance (nothing is decoded)."""
    try:
        return _parse_header_unguarded(instance)
    except LabelmapSegError:
        raise
    except Exception as error:  # noqa: BLE001 - damaged nested values surface as many exception types
        raise InvalidDicomFileError(
            f"{_where(instance)} has a damaged or invalid header ({_brief(error)}); export the file again."
        ) from error


def _parse_header_unguarded(instance: _Instance) -> _Header:
    ds = instance.ds
    where = _where(instance)
    sop_class = _sop_class(ds)
    meta = getattr(ds, "file_meta", None)
    transfer_syntax_uid = str(meta.get("TransferSyntaxUID", "") if meta is not None else "") or "1.2.840.10008.1.2.1"
    text = str(_required(ds, "SegmentationType", where)).strip().upper()
    try:
        segmentation_type = SegmentationType(text)
    except ValueError as error:
        raise UnsupportedSegmentationError(
            f"{where} has Segmentation Type {_shown(text)}; only BINARY, FRACTIONAL and LABELMAP are defined."
        ) from error
    labelmap = sop_class == LABELMAP_SEGMENTATION_STORAGE
    if labelmap != (segmentation_type == SegmentationType.LABELMAP):
        raise UnsupportedSegmentationError(
            f"{where} is {_sop_class_name(ds)} with Segmentation Type {_shown(text)}; LABELMAP belongs to Label Map "
            "Segmentation Storage and BINARY/FRACTIONAL to Segmentation Storage. The file is inconsistent."
        )
    rows = _int(ds, "Rows", where, 1, 65535)
    columns = _int(ds, "Columns", where, 1, 65535)
    frames = _int(ds, "NumberOfFrames", where, 1, 2**31 - 1) if "NumberOfFrames" in ds else 1
    bits = _int(ds, "BitsAllocated", where, 1, 64)
    allowed_bits = {
        SegmentationType.LABELMAP: (8, 16),
        SegmentationType.BINARY: (1,),
        SegmentationType.FRACTIONAL: (8,),
    }
    if bits not in allowed_bits[segmentation_type]:
        raise InvalidDicomFileError(
            f"{where} is a {segmentation_type.value} segmentation with Bits Allocated {bits}; the standard allows "
            f"{' or '.join(map(str, allowed_bits[segmentation_type]))}."
        )
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        raise InvalidDicomFileError(f"{where} has Samples per Pixel {samples}; segmentations have 1.")
    layout = pixels.FrameLayout(rows, columns, bits, frames)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").strip().upper()
    padding = ds.get("PixelPaddingValue")
    padding = int(padding) if isinstance(padding, int) else None

    unsupported = _unsupported_reason(ds, where)
    segments, background = _segments(ds, where, segmentation_type, photometric)
    planes, frame_segments, source_uids = _frame_functional_groups(ds, where, frames, segmentation_type, unsupported)
    maximum_fractional = None
    if segmentation_type == SegmentationType.FRACTIONAL:
        maximum_fractional = _int(ds, "MaximumFractionalValue", where, 1, 255)
    return _Header(
        instance=instance,
        segmentation_type=segmentation_type,
        transfer_syntax_uid=transfer_syntax_uid,
        layout=layout,
        photometric_interpretation=photometric,
        padding_value=padding,
        segments=segments,
        background_numbers=background,
        planes=planes,
        frame_segments=frame_segments,
        maximum_fractional_value=maximum_fractional,
        frame_of_reference_uid=str(ds.FrameOfReferenceUID) if ds.get("FrameOfReferenceUID") else None,
        unsupported=unsupported,
        source_sop_uids=source_uids,
    )


def _unsupported_reason(ds: Dataset, where: str) -> str | None:
    organization = str(ds.get("DimensionOrganizationType", "") or "").upper()
    if "TotalPixelMatrixRows" in ds or organization.startswith("TILED") or "ImageOrientationSlide" in ds:
        return (
            f"{where} is a slide microscopy segmentation (tiles of a total pixel matrix in the slide coordinate "
            "system); DICOMLabelmapSeg reads segmentations of 3D patient-space images only. "
            "Use highdicom (Segmentation.get_total_pixel_matrix) for slide images."
        )
    return None


def _segments(
    ds: Dataset, where: str, segmentation_type: SegmentationType, photometric: str
) -> tuple[dict[int, Segment], set[int]]:
    """The described segments by number, and the numbers that are background (segment 0)."""
    items = ds.get("SegmentSequence")
    if items is None:
        raise InvalidDicomFileError(f"{where} lacks the Segment Sequence, a mandatory attribute; the file is invalid.")
    palette = _palette_colors(ds, where) if photometric == "PALETTE COLOR" else None
    segments: dict[int, Segment] = {}
    background: set[int] = set()
    for item in items:
        number = item.get("SegmentNumber")
        if number is None:
            raise InvalidDicomFileError(
                f"{where} has a Segment Sequence item without Segment Number; the file is invalid."
            )
        number = int(number)
        if number in segments or number in background:
            raise InvalidDicomFileError(
                f"{where} describes Segment Number {number} more than once; segment numbers must be unique."
            )
        if number == 0:
            if segmentation_type != SegmentationType.LABELMAP:
                raise InvalidDicomFileError(f"{where} describes segment number 0; BINARY segments start at 1.")
            background.add(0)  # highdicom's 'Background' segment: pixel value 0 is background anyway
            continue
        color = None
        if palette is not None and item.get("RecommendedDisplayCIELabValue") is None:
            color = palette(number)
        segments[number] = segment_from_description(item, color=color)
    return segments, background


def _palette_colors(ds: Dataset, where: str):  # noqa: ANN202 - returns a small closure
    """A function segment number -> RGB from the palette color LUT (8- or 16-bit entries)."""
    channels = [_palette_channel(ds, name, where) for name in ("Red", "Green", "Blue")]
    first = channels[0][0]
    if any(channel[0] != first for channel in channels):
        raise InvalidDicomFileError(f"{where}: the red, green and blue palette tables start at different values.")
    length = min(len(channel[1]) for channel in channels)
    table = np.stack([channel[1][:length] for channel in channels], axis=1)

    def color(number: int) -> tuple[int, int, int]:
        index = min(max(number - first, 0), length - 1)  # values outside the table take its end entries
        return tuple(int(c) for c in table[index])  # type: ignore[return-value]

    return color


def _palette_channel(ds: Dataset, name: str, where: str) -> tuple[int, np.ndarray]:
    """(first mapped value, 8-bit entries) of one channel of a palette color lookup table."""
    descriptor = ds.get(f"{name}PaletteColorLookupTableDescriptor")
    data = ds.get(f"{name}PaletteColorLookupTableData")
    if descriptor is None or data is None or len(descriptor) != 3:
        segmented = f"Segmented{name}PaletteColorLookupTableData" in ds
        raise (UnsupportedSegmentationError if segmented else InvalidDicomFileError)(
            f"{where} is PALETTE COLOR but its {name.lower()} palette table is "
            f"{'segmented (not supported)' if segmented else 'missing or incomplete'}; give its segments "
            "Recommended Display CIELab Values instead."
        )
    entries, first, bits = (int(v) for v in descriptor)
    entries = entries or 65536
    data = bytes(data)
    if bits == 16 and len(data) >= 2 * entries:
        values = (np.frombuffer(data, dtype="<u2", count=entries) >> 8).astype(np.uint8)
    elif bits == 8 and len(data) == 2 * entries:  # 8-bit entries stored in 16-bit words (older writers)
        values = (np.frombuffer(data, dtype="<u2", count=entries) & 0xFF).astype(np.uint8)
    elif bits == 8 and len(data) >= entries:
        values = np.frombuffer(data, dtype=np.uint8, count=entries)
    else:
        raise InvalidDicomFileError(
            f"{where}: the {name.lower()} palette table has {len(data)} bytes for {entries} entries of {bits} bits; "
            "the palette color lookup table is invalid."
        )
    return first, values


def _floats(value: Any, count: int, what: str, where: str) -> np.ndarray:
    try:
        array = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InvalidDicomFileError(f"{where} has an invalid {what} {_shown(value)}.") from error
    if array.shape != (count,) or not np.all(np.isfinite(array)):
        raise InvalidDicomFileError(
            f"{where} has an invalid {what} {_shown(value)}: {count} finite numbers are needed."
        )
    return array


def _frame_functional_groups(
    ds: Dataset, where: str, frames: int, segmentation_type: SegmentationType, unsupported: str | None
) -> tuple[_Planes, np.ndarray | None, list[str]]:
    """Orientation, spacing and position of every frame, referenced segments and source images."""
    if unsupported is not None:
        return _Planes(None, None, None, None, None), None, []
    shared_sequence = ds.get("SharedFunctionalGroupsSequence")
    shared = framegroups.group_from_item(shared_sequence[0]) if shared_sequence else framegroups.FrameGroup()
    groups = framegroups.raw_frame_groups(ds)
    if groups is None:
        per_frame = ds.get("PerFrameFunctionalGroupsSequence")
        if per_frame is None:
            raise InvalidDicomFileError(
                f"{where} lacks the Per-Frame Functional Groups Sequence, a mandatory attribute; the file is invalid."
            )
        groups = [framegroups.group_from_item(item) for item in per_frame]
    if len(groups) != frames:
        raise InvalidDicomFileError(
            f"{where} says Number of Frames {frames} but has {len(groups)} per-frame functional groups; "
            "the header is inconsistent. Export the file again."
        )

    orientation_values: set[tuple] = set()
    spacing_values: set[tuple] = set()
    between = _optional_float(shared.spacing_between_slices)
    thickness = _optional_float(shared.slice_thickness)
    positions = np.empty((frames, 3), dtype=np.float64)
    with_position = 0
    frame_segments = np.zeros(frames, dtype=np.int64) if segmentation_type != SegmentationType.LABELMAP else None
    source_uids: list[str] = []
    seen_sources: set[str] = set()
    for index, group in enumerate(groups):
        orientation = group.image_orientation if group.image_orientation is not None else shared.image_orientation
        if orientation is not None:
            orientation_values.add(tuple(str(v) for v in orientation))
        spacing = group.pixel_spacing if group.pixel_spacing is not None else shared.pixel_spacing
        if spacing is not None:
            spacing_values.add(tuple(str(v) for v in spacing))
        if between is None and group.spacing_between_slices is not None:
            between = _optional_float(group.spacing_between_slices)
        if thickness is None and group.slice_thickness is not None:
            thickness = _optional_float(group.slice_thickness)
        if group.image_position is not None:
            positions[index] = _floats(group.image_position, 3, "Image Position (Patient)", where)
            with_position += 1
        if frame_segments is not None:
            number = group.referenced_segment_number
            number = shared.referenced_segment_number if number is None else number
            if number is None:
                raise InvalidDicomFileError(
                    f"{where}: frame {index + 1} has no Referenced Segment Number (Segment Identification "
                    "Sequence); every frame of a BINARY or FRACTIONAL segmentation needs one."
                )
            frame_segments[index] = number
        for uid in group.source_sop_instance_uids:
            if uid not in seen_sources:
                seen_sources.add(uid)
                source_uids.append(uid)
    if with_position not in (0, frames):
        raise InvalidDicomFileError(
            f"{where}: {frames - with_position} of {frames} frames have no Image Position (Patient); "
            "frames cannot be placed. The file is invalid."
        )
    orientations = {tuple(_floats(v, 6, "Image Orientation (Patient)", where)) for v in orientation_values}
    spacings = {tuple(_floats(v, 2, "Pixel Spacing", where)) for v in spacing_values}
    if len(orientations) > 1 or len(spacings) > 1:
        raise GeometryMismatchError(
            f"{where}: the frames have different orientations or pixel spacings; they do not form one volume."
        )
    orientation = np.array(orientations.pop()) if orientations else None
    spacing = np.array(spacings.pop()) if spacings else None
    if spacing is not None and np.any(spacing <= 0):
        raise InvalidDicomFileError(f"{where} has Pixel Spacing {spacing.tolist()}; spacings must be positive.")
    if with_position and (orientation is None or spacing is None):
        missing = "Image Orientation (Patient)" if orientation is None else "Pixel Spacing"
        raise InvalidDicomFileError(
            f"{where} has frame positions but no {missing} (Plane Orientation / Pixel Measures functional group); "
            "the file is invalid."
        )
    if orientation is not None:
        _check_orientation(orientation, where)
    planes = _Planes(orientation, spacing, between or None, thickness or None, positions if with_position else None)
    return planes, frame_segments, source_uids


def _optional_float(value: Any) -> float | None:
    """abs(float(value)) of an optional DS value; None if absent, unparsable or not finite."""
    if value is None or value == "":
        return None
    try:
        number = abs(float(value))
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _check_orientation(orientation: np.ndarray, where: str) -> None:
    row, column = orientation[:3], orientation[3:]
    if (
        abs(np.linalg.norm(row) - 1) > 1e-3
        or abs(np.linalg.norm(column) - 1) > 1e-3
        or abs(float(row @ column)) > 1e-3
    ):
        raise GeometryMismatchError(
            f"{where} has Image Orientation (Patient) {orientation.tolist()}; row and column directions must be "
            "orthogonal unit vectors. The file's geometry is invalid."
        )


def _sorted_headers(instances: list[_Instance]) -> list[_Header]:
    """Parsed headers of a series' instances in Instance Number order (the layer order)."""
    headers = [_parse_header(instance) for instance in instances]

    def key(header: _Header) -> tuple[bool, int]:
        number = header.ds.get("InstanceNumber")
        try:
            return (False, int(number))
        except (TypeError, ValueError):
            return (True, 0)

    return sorted(headers, key=key)


def _check_series_consistency(headers: list[_Header]) -> None:
    """All instances of a series must be of one SEG type, frame size and frame of reference."""
    first = headers[0]
    for header in headers[1:]:
        if header.segmentation_type != first.segmentation_type:
            raise UnsupportedSegmentationError(
                f"The series mixes {first.segmentation_type.value} and {header.segmentation_type.value} "
                "instances; read them as separate segmentations."
            )
        if (header.layout.rows, header.layout.columns) != (first.layout.rows, first.layout.columns):
            raise GeometryMismatchError(
                f"Instances of the series have frames of {first.layout.rows}x{first.layout.columns} and "
                f"{header.layout.rows}x{header.layout.columns} pixels; the layers of one segmentation must share "
                "one geometry."
            )
        if header.frame_of_reference_uid != first.frame_of_reference_uid:
            raise GeometryMismatchError(
                "Instances of the series have different Frame of Reference UIDs; the layers of one segmentation "
                "must share one geometry."
            )


# ---------------------------------------------------------------------------- geometry


def _series_grid(headers: list[_Header], max_voxels: int = MAX_VOXELS) -> tuple[Geometry, list[np.ndarray]]:
    """The volume grid of a series and the slice index of each frame of each instance.

    Frames are placed by position, never by their order in the file; only the sign of the slice
    axis follows the order (the way the frames progress). A single frame, or frames without a
    progression, give a slice axis along the frame normal (row direction x column direction).
    Missing slices between frames are filled on the regular grid.
    """
    first = headers[0]
    rows, columns = first.layout.rows, first.layout.columns
    with_positions = [h for h in headers if h.planes.positions is not None]
    if not with_positions:
        return _grid_without_positions(headers)
    if len(with_positions) != len(headers):
        raise GeometryMismatchError("Some instances of the series have frame positions and others do not.")
    orientation = first.planes.orientation
    spacing = first.planes.pixel_spacing
    for header in headers[1:]:
        if not np.allclose(header.planes.orientation, orientation, atol=1e-4) or not np.allclose(
            header.planes.pixel_spacing, spacing, rtol=1e-4, atol=1e-6
        ):
            raise GeometryMismatchError(
                f"{_where(header.instance)} has another orientation or pixel spacing than {_where(first.instance)}; "
                "the layers of one segmentation must share one geometry."
            )
    normal = slice_normal(orientation)
    positions = np.concatenate([h.planes.positions for h in headers])
    distances = positions @ normal
    tolerance = min(1e-3, 0.01 * float(spacing.min()))
    ordered = np.sort(distances)
    gaps = np.diff(ordered)
    gaps = gaps[gaps > tolerance]
    declared = next((h.planes.spacing_between_slices for h in headers if h.planes.spacing_between_slices), None)
    step = _slice_step(gaps, declared, first.planes.slice_thickness, tolerance)

    # The slice axis points the way the frames progress in the file (the first instance's first two
    # frames at different positions): writers that store slices in order k = 0..n-1 (ours does) are
    # read back with their slice direction, whichever way it points relative to the frame normal.
    sign = 1.0
    moves = np.diff(first.planes.positions @ normal)
    moves = moves[np.abs(moves) > tolerance]
    if moves.size and moves[0] < 0:
        sign = -1.0
    k_float = sign * (distances - (ordered[0] if sign > 0 else ordered[-1])) / step
    if not np.all(np.isfinite(k_float)) or k_float.max() >= max_voxels:
        raise ImplausibleSizeError(
            "The frame positions span an implausible distance (beyond the sanity limit of "
            f"{max_voxels:,} slices); the header is damaged."
        )
    k = np.rint(k_float)
    if np.any(np.abs(k_float - k) > 0.02):
        raise GeometryMismatchError(
            f"Frame positions are not on a regular grid of {step:g} mm slices; this segmentation cannot be "
            "represented as one volume."
        )
    slices = int(k.max()) + 1
    layers = len(headers) if first.segmentation_type == SegmentationType.LABELMAP else 1
    _check_voxels(slices, rows, columns, layers, max_voxels)

    if np.unique(k).size >= 2:
        design = np.stack([np.ones_like(k), k], axis=1)
        solution, *_ = np.linalg.lstsq(design, positions, rcond=None)
        origin, step_vector = solution[0], solution[1]
        step_vector[np.abs(step_vector) < 1e-9 * np.abs(step_vector).max()] = 0.0  # least-squares round-off
        residual = np.abs(design @ solution - positions).max()
        if residual > max(1e-2, 0.05 * float(spacing.min())):
            raise GeometryMismatchError(
                f"Frame positions deviate up to {residual:.3g} mm from a straight stack of slices; this segmentation "
                "cannot be represented as one volume."
            )
    else:
        origin = positions[0]
        step_vector = sign * step * normal
    affine = affine_from_plane(origin, orientation, spacing, step_vector)
    geometry = Geometry((slices, rows, columns), affine, first.frame_of_reference_uid)
    indices = []
    start = 0
    for header in headers:
        count = header.layout.number_of_frames
        indices.append(k[start : start + count].astype(np.int64))
        start += count
    return geometry, indices


def _slice_step(gaps: np.ndarray, declared: float | None, thickness: float | None, tolerance: float) -> float:
    """The slice spacing along the normal: Spacing Between Slices if consistent, else the smallest gap."""
    if not gaps.size:
        return declared or thickness or 1.0

    def consistent(step: float) -> bool:
        multiples = gaps / step
        return bool(np.all(np.abs(multiples - np.rint(multiples)) < 0.02) and np.all(np.rint(multiples) >= 1))

    if declared and declared > tolerance and consistent(declared):
        return float(declared)
    smallest = float(gaps.min())
    if consistent(smallest):
        if declared:
            logger.warning(
                "Spacing Between Slices (%g mm) does not match the frame positions; using %g mm from the positions.",
                declared,
                smallest,
            )
        return smallest
    raise GeometryMismatchError(
        "Frame positions are not on a regular grid of parallel slices (their distances are not multiples of one "
        "spacing); this segmentation cannot be represented as one volume."
    )


def _grid_without_positions(headers: list[_Header]) -> tuple[Geometry, list[np.ndarray]]:
    """Frames without patient positions (e.g. projection radiographs): one 2D slice in pixel units."""
    first = headers[0]
    for header in headers:
        if header.frame_segments is not None:
            per_segment = np.bincount(header.frame_segments)
            single = per_segment.max() <= 1
        else:
            single = header.layout.number_of_frames == 1
        if not single:
            raise UnsupportedSegmentationError(
                f"{_where(header.instance)} has several frames per segment but no frame positions "
                "(Plane Position functional group); the frames cannot be placed in a volume."
            )
    spacing = first.planes.pixel_spacing if first.planes.pixel_spacing is not None else np.ones(2)
    orientation = first.planes.orientation if first.planes.orientation is not None else np.array([1.0, 0, 0, 0, 1, 0])
    logger.warning(
        "The segmentation has no patient coordinates (no Image Position (Patient)); it is read as one "
        "slice with origin 0 and pixel spacing %s mm.",
        spacing.tolist(),
    )
    step = slice_normal(orientation) * (first.planes.slice_thickness or 1.0)
    affine = affine_from_plane([0.0, 0.0, 0.0], orientation, spacing, step)
    geometry = Geometry((1, first.layout.rows, first.layout.columns), affine, first.frame_of_reference_uid)
    return geometry, [np.zeros(h.layout.number_of_frames, dtype=np.int64) for h in headers]


def _check_voxels(slices: int, rows: int, columns: int, layers: int, max_voxels: int | None = None) -> None:
    limit = MAX_VOXELS if max_voxels is None else max_voxels
    voxels = slices * rows * columns * layers
    if voxels > limit:
        raise ImplausibleSizeError(
            f"The segmentation would need {voxels:,} voxels ({layers} layer(s) of {slices} x {rows} x {columns}); "
            f"the sanity limit is {limit:,}. The header is damaged, or raise max_voxels if the data is really this "
            "large."
        )


# ---------------------------------------------------------------------------- reading a series


def _read_series(
    instances: list[_Instance], fractional_threshold: float, max_voxels: int, workers: int
) -> Segmentation:
    headers = _sorted_headers(instances)
    _check_series_consistency(headers)
    for header in headers:
        if header.unsupported:
            raise UnsupportedSegmentationError(header.unsupported)
        _check_frame_budget(header, max_voxels)
    geometry, slice_indices = _series_grid(headers, max_voxels)
    layers_needed = len(headers) if headers[0].segmentation_type == SegmentationType.LABELMAP else 1
    _check_voxels(*geometry.shape, layers_needed, max_voxels)
    if headers[0].segmentation_type == SegmentationType.LABELMAP:
        layers = [
            _read_labelmap_layer(header, geometry, indices, workers) for header, indices in zip(headers, slice_indices)
        ]
    else:
        layers = _read_binary_layers(headers, geometry, slice_indices, fractional_threshold, max_voxels)
    return Segmentation(
        geometry=geometry,
        layers=layers,
        referenced_series=_referenced_series(headers),
        series_info=_series_info(headers),
    )


def _check_frame_budget(header: _Header, max_voxels: int) -> None:
    """Bound what the header claims before anything is allocated or decoded."""
    layout = header.layout
    voxels = layout.rows * layout.columns * layout.number_of_frames
    where = _where(header.instance)
    if voxels > max_voxels:
        raise ImplausibleSizeError(
            f"{where} claims {layout.number_of_frames} frames of {layout.rows} x {layout.columns} pixels "
            f"({voxels:,} voxels), beyond the sanity limit of {max_voxels:,}. The header is damaged, or raise "
            "max_voxels if the data is really this large."
        )
    if "PixelData" not in header.ds:
        raise InvalidDicomFileError(f"{where} has no Pixel Data; the file is invalid or truncated.")
    if pixels.is_native(header.transfer_syntax_uid):
        expected = math.ceil(voxels * layout.bits_allocated / 8)
        actual = len(header.ds.PixelData)
        if actual < expected:
            error = ImplausibleSizeError if actual * 2 < expected else CorruptPixelDataError
            raise error(
                f"{where}: Pixel Data holds {actual:,} bytes but {layout.number_of_frames} frames of "
                f"{layout.rows} x {layout.columns} x {layout.bits_allocated} bits need {expected:,}. The file is "
                "truncated or its header is wrong; export it again."
            )
        if actual > expected + 1:
            raise CorruptPixelDataError(
                f"{where}: Pixel Data holds {actual:,} bytes, more than the {expected:,} that Number of Frames "
                f"({layout.number_of_frames}) x Rows x Columns need. The header is wrong; export the file again."
            )
    else:
        pixels.require_decoder(header.transfer_syntax_uid)
        if header.segmentation_type == SegmentationType.LABELMAP:
            pixels.check_first_frame(header.ds, layout)


def _read_labelmap_layer(header: _Header, geometry: Geometry, slice_indices: np.ndarray, workers: int) -> Layer:
    where = _where(header.instance)
    if np.unique(slice_indices).size != slice_indices.size:
        raise GeometryMismatchError(
            f"{where} has two or more frames at the same position; a LABELMAP holds one frame per slice."
        )
    described = set(header.segments)
    padding = header.padding_value
    if padding is not None and (padding == 0 or padding in described):
        if padding in described:
            logger.warning("%s: Pixel Padding Value %d is also a segment number; kept as that segment.", where, padding)
        padding = None
    out = np.zeros(geometry.shape, dtype=header.layout.dtype)
    counts = pixels.decode_labelmap_frames(header.ds, header.layout, slice_indices, out, padding, workers)
    present = set(np.flatnonzero(counts).tolist())
    undescribed = sorted(present - described - header.background_numbers - {0})
    if undescribed:
        shown = ", ".join(str(v) for v in undescribed[:10]) + (" ..." if len(undescribed) > 10 else "")
        raise UndescribedLabelError(
            f"{where}: pixel values {shown} occur in the label map but the Segment Sequence describes no such "
            "segment. The file is invalid; export it again with all segments described."
        )
    if out.dtype == np.uint16 and max(described, default=0) <= 255 and not np.any(counts[256:]):
        out = out.astype(label_dtype(max(described, default=0)))
    return Layer(labels=out, segments=[header.segments[n] for n in sorted(described)])


def _read_binary_layers(
    headers: list[_Header],
    geometry: Geometry,
    slice_indices: list[np.ndarray],
    fractional_threshold: float,
    max_voxels: int,
) -> list[Layer]:
    """Segments of BINARY/FRACTIONAL instances, packed greedily into non-overlapping layers."""
    masks: list[tuple[Segment, dict[int, np.ndarray]]] = []
    for header, indices in zip(headers, slice_indices):
        frames = _binary_frames(header, fractional_threshold)
        for number in sorted(header.segments):
            frame_numbers = np.flatnonzero(header.frame_segments == number)
            planes: dict[int, np.ndarray] = {}
            for f in frame_numbers:
                k = int(indices[f])
                planes[k] = planes[k] | frames[f] if k in planes else frames[f]
            masks.append((header.segments[number], planes))
        unknown = sorted(set(header.frame_segments.tolist()) - set(header.segments))
        if unknown:
            raise UndescribedLabelError(
                f"{_where(header.instance)}: frames reference segment numbers {unknown[:10]} that the Segment "
                "Sequence does not describe. The file is invalid."
            )
    layers: list[tuple[np.ndarray, list[Segment]]] = []
    for segment, planes in masks:
        target = None
        for labels, segments in layers:
            if any(s.label_value == segment.label_value for s in segments):
                continue
            if all(not np.any(labels[k][mask]) for k, mask in planes.items()):
                target = (labels, segments)
                break
        if target is None:
            _check_voxels(*geometry.shape, len(layers) + 1, max_voxels)
            target = (np.zeros(geometry.shape, dtype=np.uint8), [])
            layers.append(target)
        labels, segments = target
        if segment.label_value > 255 and labels.dtype == np.uint8:
            index = next(i for i, layer in enumerate(layers) if layer[0] is labels)
            labels = labels.astype(np.uint16)
            layers[index] = (labels, segments)
        for k, mask in planes.items():
            labels[k][mask] = segment.label_value
        segments.append(segment)
    if not layers:
        layers.append((np.zeros(geometry.shape, dtype=np.uint8), []))
    return [Layer(labels=labels, segments=sorted(segments, key=lambda s: s.label_value)) for labels, segments in layers]


def _binary_frames(header: _Header, fractional_threshold: float) -> np.ndarray:
    """All frames of a BINARY/FRACTIONAL instance as booleans ``(frames, rows, columns)``."""
    where = _where(header.instance)
    layout = header.layout
    try:
        array = header.ds.pixel_array
    except LabelmapSegError:
        raise
    except Exception as error:  # noqa: BLE001 - pydicom and its plugins raise many types
        raise CorruptPixelDataError(
            f"{where}: the pixel data cannot be decoded ({_brief(error)}). The file is damaged; export it again."
        ) from error
    try:
        array = np.asarray(array).reshape(layout.number_of_frames, layout.rows, layout.columns)
    except ValueError as error:
        raise CorruptPixelDataError(
            f"{where}: the decoded pixel data does not hold {layout.number_of_frames} frames of "
            f"{layout.rows} x {layout.columns}; the header does not match the pixels."
        ) from error
    if header.segmentation_type == SegmentationType.FRACTIONAL:
        maximum = header.maximum_fractional_value or 255
        threshold = fractional_threshold * maximum
        logger.warning(
            "%s is a FRACTIONAL segmentation; read as binary: voxels with value >= %g (%g x Maximum Fractional "
            "Value %d) belong to the segment.",
            where,
            threshold,
            fractional_threshold,
            maximum,
        )
        return (array >= threshold) & (array > 0)
    return array != 0


# ---------------------------------------------------------------------------- series-level facts


def _series_info(headers: list[_Header]) -> SeriesInfo:
    ds = headers[0].ds

    def text(keyword: str) -> str | None:
        value = ds.get(keyword)
        return str(value) if value not in (None, "") else None

    number = ds.get("SeriesNumber")
    try:
        series_number = int(number) if number not in (None, "") else None
    except (TypeError, ValueError):
        series_number = None
    return SeriesInfo(
        series_instance_uid=str(ds.SeriesInstanceUID),
        sop_instance_uids=tuple(str(h.ds.get("SOPInstanceUID", "")) for h in headers),
        segmentation_type=headers[0].segmentation_type,
        transfer_syntax_uids=tuple(h.transfer_syntax_uid for h in headers),
        study_instance_uid=text("StudyInstanceUID"),
        series_description=text("SeriesDescription"),
        series_number=series_number,
        content_label=text("ContentLabel"),
        content_description=text("ContentDescription"),
        content_creator_name=text("ContentCreatorName"),
        patient_id=text("PatientID"),
        patient_name=text("PatientName"),
        palette_color=any(h.photometric_interpretation == "PALETTE COLOR" for h in headers),
    )


def _referenced_series(headers: list[_Header]) -> ReferencedSeries | None:
    """The source series: Referenced Series Sequence, completed from per-frame source image references."""
    ds = headers[0].ds
    series_uid = None
    sop_class = None
    instance_uids: list[str] = []
    referenced = framegroups.raw_referenced_series(ds)
    if referenced is None:
        referenced = [
            (
                str(item.get("SeriesInstanceUID", "") or ""),
                [
                    (str(i.get("ReferencedSOPClassUID", "") or ""), str(i.get("ReferencedSOPInstanceUID", "") or ""))
                    for i in item.get("ReferencedInstanceSequence") or ()
                ],
            )
            for item in ds.get("ReferencedSeriesSequence") or ()
        ]
    for uid, instances in referenced:
        if series_uid is None and uid:
            series_uid = uid
            instance_uids = [instance for _, instance in instances if instance]
            sop_class = next((sop for sop, _ in instances if sop), None)
    if series_uid is None:
        return None
    if not instance_uids:
        seen: set[str] = set()
        for header in headers:
            for uid in header.source_sop_uids:
                if uid not in seen:
                    seen.add(uid)
                    instance_uids.append(uid)
        for item in ds.get("SourceImageSequence") or ():
            uid = str(item.get("ReferencedSOPInstanceUID", "") or "")
            if uid and uid not in seen:
                seen.add(uid)
                instance_uids.append(uid)
                sop_class = sop_class or (str(item.get("ReferencedSOPClassUID") or "") or None)
    return ReferencedSeries(
        study_instance_uid=str(ds.get("StudyInstanceUID", "") or ""),
        series_instance_uid=series_uid,
        sop_class_uid=sop_class,
        sop_instance_uids=tuple(instance_uids),
        frame_of_reference_uid=headers[0].frame_of_reference_uid,
    )


def _layer_description(header: _Header) -> LayerDescription:
    number = header.ds.get("InstanceNumber")
    return LayerDescription(
        sop_instance_uid=str(header.ds.get("SOPInstanceUID", "")),
        instance_number=int(number) if number not in (None, "") else None,
        transfer_syntax_uid=header.transfer_syntax_uid,
        transfer_syntax=pixels.syntax_name(header.transfer_syntax_uid),
        number_of_frames=header.layout.number_of_frames,
        rows=header.layout.rows,
        columns=header.layout.columns,
        bits_allocated=int(header.ds.BitsAllocated),
        photometric_interpretation=header.photometric_interpretation,
        pixel_padding_value=header.padding_value,
        segments=tuple(header.segments[n] for n in sorted(header.segments)),
        path=header.instance.path,
    )


def _code_dict(code: Any) -> dict[str, str] | None:
    if code is None:
        return None
    return {"value": code.value, "scheme": code.scheme_designator, "meaning": code.meaning}


def _segment_dict(segment: Segment) -> dict[str, Any]:
    terminology = segment.terminology
    return {
        "label_value": segment.label_value,
        "name": segment.name,
        "color": list(segment.color),
        "category": _code_dict(terminology.category),
        "type": _code_dict(terminology.type),
        "type_modifier": _code_dict(terminology.type_modifier),
        "region": _code_dict(terminology.region),
        "region_modifier": _code_dict(terminology.region_modifier),
        "algorithm_type": segment.algorithm_type.value,
        "algorithm_name": segment.algorithm_name,
        "description": segment.description,
        "tracking_id": segment.tracking_id,
        "tracking_uid": segment.tracking_uid,
    }


__all__: Sequence[str] = [
    "LABELMAP_SEGMENTATION_STORAGE",
    "MAX_VOXELS",
    "SEGMENTATION_STORAGE",
    "LayerDescription",
    "SeriesDescription",
    "describe",
    "read_segmentation",
    "read_segmentations",
]
