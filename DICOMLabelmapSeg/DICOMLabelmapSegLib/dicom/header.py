"""The header of one DICOM SEG instance, parsed and checked (no pixel data is decoded).

:func:`parse_header` turns an instance into a :class:`Header`: segmentation type, frame
layout, segments (with colors from CIELab values or the palette color LUT), background
numbers, Pixel Padding Value and the plane geometry of every frame (through
:mod:`.framegroups`). Every problem raises a typed :class:`~.errors.LabelmapSegError`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from ..enums import SEG_SOP_CLASSES as SEG_SOP_CLASSES  # re-exported (reader.py)
from ..enums import SopClass
from ..errors import (
    GeometryMismatchError,
    InvalidDicomFileError,
    LabelmapSegError,
    UnsupportedSegmentationError,
)
from ..model import Segment, SegmentationType
from . import framegroups, pixels
from .segment import segment_from_description

logger = logging.getLogger(__name__)

LABELMAP_SEGMENTATION_STORAGE = SopClass.LABELMAP_SEGMENTATION_STORAGE.value
SEGMENTATION_STORAGE = SopClass.SEGMENTATION_STORAGE.value


@dataclass
class Instance:
    """One SEG instance as read: the dataset and the file it came from (None for a given Dataset)."""

    ds: Dataset
    path: str | None = None


def sop_class(ds: Dataset) -> str:
    """SOP Class UID of ``ds`` (else Media Storage SOP Class UID; '' if neither holds a UID's text).

    A damaged file may give the element another VR (a sequence whose items pydicom cannot
    convert): only a text value counts, so that the file is refused as having no SOP Class UID.
    """
    uid = ds.get("SOPClassUID")
    if not (isinstance(uid, str) and uid) and getattr(ds, "file_meta", None) is not None:
        uid = ds.file_meta.get("MediaStorageSOPClassUID")
    return str(uid) if isinstance(uid, str) else ""


def sop_class_name(ds: Dataset) -> str:
    """A readable name of the SOP class of ``ds`` for messages."""
    uid = sop_class(ds)
    if not uid:
        return "DICOM without SOP Class UID"
    name = pydicom.uid.UID(uid).name
    return name if name and name != uid else f"SOP Class {uid}"


def instance_name(instance: Instance) -> str:
    """How messages name an instance: its quoted file name, or 'The dataset'."""
    return f"'{Path(instance.path).name}'" if instance.path else "The dataset"


def quoted(value: Any, limit: int = 40) -> str:
    """``repr(value)``, cut to ``limit`` characters, for quoting untrusted header values in messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def brief_reason(error: BaseException) -> str:
    """A short, user-presentable reason from a library exception."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    text = text.replace("KeyError", "missing key").replace("struct.error", "bad binary value")
    if not text or "object at 0x" in text or "Traceback" in text:
        return "unreadable data"
    return text[:150]


@dataclass
class Planes:
    """Plane geometry of one instance's frames."""

    orientation: np.ndarray | None  # (6,)
    pixel_spacing: np.ndarray | None  # (2,)
    spacing_between_slices: float | None
    slice_thickness: float | None
    positions: np.ndarray | None  # (frames, 3); None if the frames have no positions


@dataclass
class Header:
    """The checked header facts of one SEG instance that the reader needs."""

    instance: Instance
    segmentation_type: SegmentationType
    transfer_syntax_uid: str
    layout: pixels.FrameLayout
    photometric_interpretation: str
    padding_value: int | None
    segments: dict[int, Segment]
    background_numbers: set[int]
    planes: Planes
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
        raise InvalidDicomFileError(f"{where} has {keyword} {quoted(value)}, which is not a number.") from error
    if not low <= number <= high:
        raise InvalidDicomFileError(f"{where} has {keyword} {number}; it must be between {low} and {high}.")
    return number


def parse_header(instance: Instance) -> Header:
    """Check and collect the header facts of one SEG instance (nothing is decoded)."""
    try:
        return _parse_header_unguarded(instance)
    except LabelmapSegError:
        raise
    except Exception as error:  # noqa: BLE001 - damaged nested values surface as many exception types
        raise InvalidDicomFileError(
            f"{instance_name(instance)} has a damaged or invalid header ({brief_reason(error)}); export the file again."
        ) from error


def _parse_header_unguarded(instance: Instance) -> Header:
    ds = instance.ds
    where = instance_name(instance)
    sop_class_uid = sop_class(ds)
    meta = getattr(ds, "file_meta", None)
    transfer_syntax_uid = str(meta.get("TransferSyntaxUID", "") if meta is not None else "") or "1.2.840.10008.1.2.1"
    text = str(_required(ds, "SegmentationType", where)).strip().upper()
    try:
        segmentation_type = SegmentationType(text)
    except ValueError as error:
        raise UnsupportedSegmentationError(
            f"{where} has Segmentation Type {quoted(text)}; only BINARY, FRACTIONAL and LABELMAP are defined."
        ) from error
    labelmap = sop_class_uid == LABELMAP_SEGMENTATION_STORAGE
    if labelmap != (segmentation_type == SegmentationType.LABELMAP):
        raise UnsupportedSegmentationError(
            f"{where} is {sop_class_name(ds)} with Segmentation Type {quoted(text)}; LABELMAP belongs to Label Map "
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
    photometric = _check_pixel_description(ds, where, segmentation_type, bits)
    layout = pixels.FrameLayout(rows, columns, bits, frames)
    padding = ds.get("PixelPaddingValue")
    padding = int(padding) if isinstance(padding, int) else None

    unsupported = _unsupported_reason(ds, where)
    segments, background = _segments(ds, where, segmentation_type, photometric)
    planes, frame_segments, source_uids = _frame_functional_groups(ds, where, frames, segmentation_type, unsupported)
    maximum_fractional = None
    if segmentation_type == SegmentationType.FRACTIONAL:
        maximum_fractional = _int(ds, "MaximumFractionalValue", where, 1, 255)
    return Header(
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


#: Photometric Interpretations each segmentation type allows (PS3.3 C.8.20.2; LABELMAP: Sup 243).
ALLOWED_PHOTOMETRIC = {
    SegmentationType.LABELMAP: ("MONOCHROME2", "PALETTE COLOR"),
    SegmentationType.BINARY: ("MONOCHROME2",),
    SegmentationType.FRACTIONAL: ("MONOCHROME2",),
}


def _check_pixel_description(ds: Dataset, where: str, segmentation_type: SegmentationType, bits: int) -> str:
    """Check the Image Pixel attributes a segmentation type fixes; return the Photometric Interpretation.

    Samples per Pixel 1, Pixel Representation 0 (unsigned), Bits Stored = Bits Allocated and
    High Bit = Bits Stored - 1 are the only values a SEG may have: anything else would make the
    pixel values mean something else (e.g. signed FRACTIONAL values >= 128 turn negative). An
    absent attribute is taken to have its only allowed value.
    """

    def present(keyword: str) -> Any:
        value = ds.get(keyword)
        return None if value is None or value == "" else value

    fixed = {
        "SamplesPerPixel": ("Samples per Pixel", 1),
        "PixelRepresentation": ("Pixel Representation", 0),
        "BitsStored": ("Bits Stored", bits),
        "HighBit": ("High Bit", bits - 1),
    }
    for keyword, (name, allowed) in fixed.items():
        value = present(keyword)
        try:
            number = None if value is None else int(value)
        except (TypeError, ValueError) as error:
            raise InvalidDicomFileError(f"{where} has {name} {quoted(value)}, which is not a number.") from error
        if number is not None and number != allowed:
            raise InvalidDicomFileError(
                f"{where} is a {segmentation_type.value} segmentation with {name} {number}; the standard allows "
                f"only {allowed} (with Bits Allocated {bits}), and the pixel values cannot be read as labels. "
                "The file is invalid; export it again with a conforming tool."
            )
    photometric = str(present("PhotometricInterpretation") or "MONOCHROME2").strip().upper()
    allowed_photometric = ALLOWED_PHOTOMETRIC[segmentation_type]
    if photometric not in allowed_photometric:
        raise InvalidDicomFileError(
            f"{where} is a {segmentation_type.value} segmentation with Photometric Interpretation "
            f"{quoted(photometric)}; the standard allows only {' or '.join(allowed_photometric)}. "
            "The file is invalid; export it again with a conforming tool."
        )
    return photometric


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
    items: Any = framegroups.raw_segment_items(ds)  # the same values as pydicom's, read much faster
    if items is None:
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
        raise InvalidDicomFileError(f"{where} has an invalid {what} {quoted(value)}.") from error
    if array.shape != (count,) or not np.all(np.isfinite(array)):
        raise InvalidDicomFileError(
            f"{where} has an invalid {what} {quoted(value)}: {count} finite numbers are needed."
        )
    return array


def _frame_functional_groups(
    ds: Dataset, where: str, frames: int, segmentation_type: SegmentationType, unsupported: str | None
) -> tuple[Planes, np.ndarray | None, list[str]]:
    """Orientation, spacing and position of every frame, referenced segments and source images."""
    if unsupported is not None:
        return Planes(None, None, None, None, None), None, []
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
    seen_orientation: Any = None  # the last value added (usually the shared group's, one object for all frames)
    seen_spacing: Any = None
    for index, group in enumerate(groups):
        orientation = group.image_orientation if group.image_orientation is not None else shared.image_orientation
        if orientation is not None and orientation is not seen_orientation:
            orientation_values.add(tuple(str(v) for v in orientation))
            seen_orientation = orientation
        spacing = group.pixel_spacing if group.pixel_spacing is not None else shared.pixel_spacing
        if spacing is not None and spacing is not seen_spacing:
            spacing_values.add(tuple(str(v) for v in spacing))
            seen_spacing = spacing
        if between is None and group.spacing_between_slices is not None:
            between = _optional_float(group.spacing_between_slices)
        if thickness is None and group.slice_thickness is not None:
            thickness = _optional_float(group.slice_thickness)
        if group.image_position is not None:
            positions[index] = _position(group.image_position, where)
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
    orientations = [_floats(v, 6, "Image Orientation (Patient)", where) for v in sorted(orientation_values)]
    spacings = [_floats(v, 2, "Pixel Spacing", where) for v in sorted(spacing_values)]
    # Per-frame values may be formatted differently; they must agree within DICOM decimal string precision.
    if any(not np.allclose(o, orientations[0], atol=1e-4) for o in orientations) or any(
        not np.allclose(p, spacings[0], rtol=1e-4, atol=1e-6) for p in spacings
    ):
        raise GeometryMismatchError(
            f"{where}: the frames have different orientations or pixel spacings; they do not form one volume."
        )
    frame_orientation = orientations[0] if orientations else None
    pixel_spacing = spacings[0] if spacings else None
    if pixel_spacing is not None and np.any(pixel_spacing <= 0):
        raise InvalidDicomFileError(f"{where} has Pixel Spacing {pixel_spacing.tolist()}; spacings must be positive.")
    if with_position and (frame_orientation is None or pixel_spacing is None):
        missing = "Image Orientation (Patient)" if frame_orientation is None else "Pixel Spacing"
        raise InvalidDicomFileError(
            f"{where} has frame positions but no {missing} (Plane Orientation / Pixel Measures functional group); "
            "the file is invalid."
        )
    if frame_orientation is not None:
        _check_orientation(frame_orientation, where)
    planes = Planes(frame_orientation, pixel_spacing, between or None, thickness or None,
                    positions if with_position else None)
    return planes, frame_segments, source_uids


def _position(value: Any, where: str) -> tuple[float, float, float] | np.ndarray:
    """An Image Position (Patient): three finite numbers (as :func:`_floats`, which says what is wrong)."""
    try:
        if len(value) == 3:
            x, y, z = float(value[0]), float(value[1]), float(value[2])
            if math.isfinite(x) and math.isfinite(y) and math.isfinite(z):
                return x, y, z
    except (TypeError, ValueError):
        pass
    return _floats(value, 3, "Image Position (Patient)", where)  # raises the error (or agrees)


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


def sorted_headers(instances: list[Instance]) -> list[Header]:
    """Parsed headers of a series' instances in Instance Number order (the layer order)."""
    headers = [parse_header(instance) for instance in instances]

    def key(header: Header) -> tuple[bool, int]:
        number = header.ds.get("InstanceNumber")
        try:
            return (False, int(number))
        except (TypeError, ValueError):
            return (True, 0)

    return sorted(headers, key=key)


def check_series_consistency(headers: list[Header]) -> None:
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
