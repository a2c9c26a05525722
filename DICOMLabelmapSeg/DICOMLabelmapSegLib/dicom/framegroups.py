"""Per-frame functional groups of multi-frame SEG headers, read fast.

pydicom converts nested sequences lazily but slowly (about 1 ms per frame item with five
nested sequences), which dominates reading a LABELMAP of a few hundred frames. This module
walks the raw bytes of the Per-Frame Functional Groups Sequence (explicit VR little endian,
defined or undefined lengths) and extracts only what the reader needs. Anything unexpected
(implicit VR, big endian, malformed lengths) returns ``None`` so that the caller falls back
to pydicom, which then reports the problem.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

PER_FRAME_FUNCTIONAL_GROUPS = 0x52009230

_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}

_PLANE_POSITION = 0x00209113
_IMAGE_POSITION = 0x00200032
_PLANE_ORIENTATION = 0x00209116
_IMAGE_ORIENTATION = 0x00200037
_PIXEL_MEASURES = 0x00289110
_PIXEL_SPACING = 0x00280030
_SPACING_BETWEEN_SLICES = 0x00180088
_SLICE_THICKNESS = 0x00180050
_SEGMENT_IDENTIFICATION = 0x0062000A
_REFERENCED_SEGMENT_NUMBER = 0x0062000B
_DERIVATION_IMAGE = 0x00089124
_SOURCE_IMAGE = 0x00082112
_REFERENCED_SOP_INSTANCE_UID = 0x00081155
_REFERENCED_SOP_CLASS_UID = 0x00081150
_SERIES_INSTANCE_UID = 0x0020000E
_REFERENCED_INSTANCE = 0x0008114A
_REFERENCED_IMAGE = 0x00081140
REFERENCED_SERIES = 0x00081115

_TAG = struct.Struct("<HH")
_SHORT = struct.Struct("<HH2sH")
_LONG = struct.Struct("<HH2s2xI")
_ITEM_HEADER = struct.Struct("<HHI")


class _Malformed(Exception):
    """The raw bytes are not what this walker handles; fall back to pydicom."""


@dataclass
class FrameGroup:
    """What the reader uses from one per-frame functional groups item (or the shared one).

    Decimal string values are kept as sequences of strings or numbers, as found.
    """

    image_position: Sequence | None = None
    image_orientation: Sequence | None = None
    pixel_spacing: Sequence | None = None
    spacing_between_slices: Any = None
    slice_thickness: Any = None
    referenced_segment_number: int | None = None
    source_sop_instance_uids: tuple[str, ...] = ()  # Source Image (in Derivation Image) and Referenced Image


def group_from_item(item: Dataset) -> FrameGroup:
    """The FrameGroup of a functional groups item parsed by pydicom (the slow, general path)."""
    group = FrameGroup()

    def first(keyword: str) -> Dataset | None:
        sequence = item.get(keyword)
        return sequence[0] if sequence else None

    position = first("PlanePositionSequence")
    if position is not None:
        group.image_position = position.get("ImagePositionPatient")
    orientation = first("PlaneOrientationSequence")
    if orientation is not None:
        group.image_orientation = orientation.get("ImageOrientationPatient")
    measures = first("PixelMeasuresSequence")
    if measures is not None:
        group.pixel_spacing = measures.get("PixelSpacing")
        group.spacing_between_slices = measures.get("SpacingBetweenSlices")
        group.slice_thickness = measures.get("SliceThickness")
    identification = first("SegmentIdentificationSequence")
    if identification is not None and identification.get("ReferencedSegmentNumber") is not None:
        group.referenced_segment_number = int(identification.ReferencedSegmentNumber)
    uids = []
    for derivation in item.get("DerivationImageSequence") or ():
        for source in derivation.get("SourceImageSequence") or ():
            uid = source.get("ReferencedSOPInstanceUID")
            if uid:
                uids.append(str(uid))
    for reference in item.get("ReferencedImageSequence") or ():
        uid = reference.get("ReferencedSOPInstanceUID")
        if uid:
            uids.append(str(uid))
    group.source_sop_instance_uids = tuple(uids)
    return group


def _raw_explicit_little_endian_value(ds: Dataset, tag: int) -> bytes | bytearray | None:
    """The undecoded bytes of element ``tag`` if pydicom has not parsed it yet and it is explicit VR LE."""
    raw = ds.get_item(tag)
    if not isinstance(raw, RawDataElement) or raw.is_implicit_VR or not raw.is_little_endian:
        return None
    value = raw.value
    return value if isinstance(value, (bytes, bytearray)) else None


def raw_frame_groups(ds: Dataset) -> list[FrameGroup] | None:
    """The per-frame groups of ``ds`` from raw bytes, or None if the fast path does not apply."""
    if PER_FRAME_FUNCTIONAL_GROUPS not in ds:
        return None
    value = _raw_explicit_little_endian_value(ds, PER_FRAME_FUNCTIONAL_GROUPS)
    if value is None:
        return None
    try:
        items = _items(memoryview(value), 0, len(value))
        return [_frame_group(buffer, start, end) for buffer, start, end in items]
    except (_Malformed, struct.error, IndexError, ValueError):
        return None


def raw_referenced_series(ds: Dataset) -> list[tuple[str, list[tuple[str, str]]]] | None:
    """Referenced Series Sequence from raw bytes: [(series UID, [(SOP class UID, SOP instance UID)])].

    None if the fast path does not apply (the caller then uses pydicom).
    """
    if REFERENCED_SERIES not in ds:
        return []
    value = _raw_explicit_little_endian_value(ds, REFERENCED_SERIES)
    if value is None:
        return None
    try:
        buffer = memoryview(value)
        result = []
        for _, start, end in _items(buffer, 0, len(buffer)):
            series_uid = ""
            instances = []
            for tag, vr, value_start, value_end in _elements(buffer, start, end):
                if tag == _SERIES_INSTANCE_UID:
                    series_uid = _text(buffer, value_start, value_end)
                elif tag == _REFERENCED_INSTANCE and vr == b"SQ":
                    for _, item_start, item_end in _items(buffer, value_start, value_end):
                        sop_class = sop_instance = ""
                        for inner_tag, _, inner_start, inner_end in _elements(buffer, item_start, item_end):
                            if inner_tag == _REFERENCED_SOP_CLASS_UID:
                                sop_class = _text(buffer, inner_start, inner_end)
                            elif inner_tag == _REFERENCED_SOP_INSTANCE_UID:
                                sop_instance = _text(buffer, inner_start, inner_end)
                        instances.append((sop_class, sop_instance))
            result.append((series_uid, instances))
        return result
    except (_Malformed, struct.error, IndexError, ValueError):
        return None


def _text(buffer: memoryview, start: int, end: int) -> str:
    return bytes(buffer[start:end]).rstrip(b"\x00 ").decode("ascii", errors="replace")


def _items(buffer: memoryview, position: int, end: int) -> list[tuple[memoryview, int, int]]:
    """(buffer, start, end) of each item of a sequence value spanning ``buffer[position:end]``."""
    items = []
    while position < end:
        group, element, length = _ITEM_HEADER.unpack_from(buffer, position)
        tag = (group << 16) | element
        position += 8
        if tag == _SEQUENCE_END:
            break
        if tag != _ITEM:
            raise _Malformed
        if length == _UNDEFINED:
            item_end = _skip_dataset(buffer, position, end)
            items.append((buffer, position, item_end))
            position = item_end + 8  # past the item delimiter
        else:
            if position + length > end:
                raise _Malformed
            items.append((buffer, position, position + length))
            position += length
    return items


def _element_header(buffer: memoryview, position: int) -> tuple[int, bytes, int, int]:
    """(tag, VR, value length, value start) of the element at ``position``."""
    group, element, vr, length = _SHORT.unpack_from(buffer, position)
    tag = (group << 16) | element
    if group == 0xFFFE:
        raise _Malformed
    vr = bytes(vr)
    if vr in _LONG_VRS:
        _, _, _, length = _LONG.unpack_from(buffer, position)
        return tag, vr, length, position + 12
    if not vr.isalpha():
        raise _Malformed
    return tag, vr, length, position + 8


def _skip_dataset(buffer: memoryview, position: int, end: int) -> int:
    """Position of the item delimiter ending an undefined-length item that starts at ``position``."""
    while position < end:
        group, element = _TAG.unpack_from(buffer, position)
        if (group << 16) | element == _ITEM_END:
            return position
        position = _element_end(buffer, position, end)
    raise _Malformed


def _element_end(buffer: memoryview, position: int, end: int) -> int:
    tag, vr, length, start = _element_header(buffer, position)
    if length != _UNDEFINED:
        if start + length > end:
            raise _Malformed
        return start + length
    if vr != b"SQ":
        raise _Malformed
    return _skip_sequence(buffer, start, end)


def _skip_sequence(buffer: memoryview, position: int, end: int) -> int:
    """Position after the sequence delimiter of an undefined-length sequence value."""
    while position < end:
        group, element, length = _ITEM_HEADER.unpack_from(buffer, position)
        tag = (group << 16) | element
        position += 8
        if tag == _SEQUENCE_END:
            return position
        if tag != _ITEM:
            raise _Malformed
        if length == _UNDEFINED:
            position = _skip_dataset(buffer, position, end) + 8
        else:
            position += length
    raise _Malformed


def _elements(buffer: memoryview, start: int, end: int):  # noqa: ANN202 - a private generator
    """(tag, VR, value start, value end or None for undefined-length sequences) of a dataset's elements."""
    position = start
    while position < end:
        group, element = _TAG.unpack_from(buffer, position)
        if (group << 16) | element == _ITEM_END:
            return
        tag, vr, length, value_start = _element_header(buffer, position)
        following = _element_end(buffer, position, end)
        value_end = value_start + length if length != _UNDEFINED else following - 8
        yield tag, vr, value_start, value_end
        position = following


def _referenced_uids(buffer: memoryview, start: int, end: int) -> tuple[str, ...]:
    """The Referenced SOP Instance UIDs of the items of the sequence value ``buffer[start:end]``."""
    uids = []
    for _, item_start, item_end in _items(buffer, start, end):
        for uid_tag, _, uid_start, uid_end in _elements(buffer, item_start, item_end):
            if uid_tag == _REFERENCED_SOP_INSTANCE_UID:
                uids.append(_text(buffer, uid_start, uid_end))
    return tuple(uids)


def _first_item(buffer: memoryview, start: int, end: int) -> tuple[int, int] | None:
    items = _items(buffer, start, end)
    return (items[0][1], items[0][2]) if items else None


def _frame_group(buffer: memoryview, start: int, end: int) -> FrameGroup:
    group = FrameGroup()
    for tag, vr, value_start, value_end in _elements(buffer, start, end):
        if vr != b"SQ":
            continue
        if tag == _DERIVATION_IMAGE:
            for _, derivation_start, derivation_end in _items(buffer, value_start, value_end):
                for inner_tag, _, inner_start, inner_end in _elements(buffer, derivation_start, derivation_end):
                    if inner_tag == _SOURCE_IMAGE:
                        group.source_sop_instance_uids += _referenced_uids(buffer, inner_start, inner_end)
            continue
        if tag == _REFERENCED_IMAGE:
            group.source_sop_instance_uids += _referenced_uids(buffer, value_start, value_end)
            continue
        if tag not in (_PLANE_POSITION, _PLANE_ORIENTATION, _PIXEL_MEASURES, _SEGMENT_IDENTIFICATION):
            continue
        item = _first_item(buffer, value_start, value_end)
        if item is None:
            continue
        for inner_tag, inner_vr, inner_start, inner_end in _elements(buffer, *item):
            value = bytes(buffer[inner_start:inner_end])
            if inner_tag == _IMAGE_POSITION:
                group.image_position = decimal_strings(value)
            elif inner_tag == _IMAGE_ORIENTATION:
                group.image_orientation = decimal_strings(value)
            elif inner_tag == _PIXEL_SPACING:
                group.pixel_spacing = decimal_strings(value)
            elif inner_tag == _SPACING_BETWEEN_SLICES:
                group.spacing_between_slices = decimal_strings(value)[0]
            elif inner_tag == _SLICE_THICKNESS:
                group.slice_thickness = decimal_strings(value)[0]
            elif inner_tag == _REFERENCED_SEGMENT_NUMBER and inner_vr == b"US" and len(value) == 2:
                group.referenced_segment_number = int.from_bytes(value, "little")
    return group


def decimal_strings(value: bytes) -> list[str]:
    """The values of a raw DS (decimal string) element."""
    return [part.strip() for part in value.rstrip(b"\x00 ").decode("ascii").split("\\")]
