"""Per-frame functional groups and Segment Sequence items of multi-frame SEG headers, read fast.

pydicom converts nested sequences lazily but slowly (about 1 ms per frame item with five
nested sequences), which dominates reading a LABELMAP of a few hundred frames. This module
walks the raw bytes of the Per-Frame Functional Groups Sequence (explicit VR little endian,
defined or undefined lengths) and extracts only what the reader needs. Anything unexpected
(implicit VR, big endian, malformed lengths) returns ``None`` so that the caller falls back
to pydicom, which then reports the problem.

The Segment Sequence is read the same way (:func:`raw_segment_items`), into
:class:`RawItem` objects that answer ``get(keyword)`` with exactly the value pydicom would
give. Only plain values are taken (printable ASCII in an ASCII-compatible character set,
single-valued, valid for their VR, tags in order, pydicom's default conversion hooks); for
anything else the whole sequence is left to pydicom, so that its values, warnings and
errors are pydicom's.
"""

from __future__ import annotations

import re
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydicom import config as pydicom_config
from pydicom import hooks as pydicom_hooks
from pydicom.charset import convert_encodings
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pydicom.valuerep import VALIDATORS

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
_UINT32 = struct.Struct("<I")


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
    """(tag, VR, value start, value end) of a dataset's elements (undefined-length sequences: before the delimiter).

    The same checks as :func:`_element_header` and :func:`_element_end`, each header read once.
    """
    position = start
    while position < end:
        group, element, vr, length = _SHORT.unpack_from(buffer, position)
        if group == 0xFFFE:
            if element == 0xE00D:  # item delimiter
                return
            raise _Malformed
        vr = bytes(vr)
        if vr in _LONG_VRS:
            length = _UINT32.unpack_from(buffer, position + 8)[0]
            value_start = position + 12
        elif vr.isalpha():
            value_start = position + 8
        else:
            raise _Malformed
        if length == _UNDEFINED:
            if vr != b"SQ":
                raise _Malformed
            following = _skip_sequence(buffer, value_start, end)
            value_end = following - 8
        else:
            following = value_end = value_start + length
            if following > end:
                raise _Malformed
        yield (group << 16) | element, vr, value_start, value_end
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


# ---------------------------------------------------------------------------- Segment Sequence items

SEGMENT_SEQUENCE = 0x00620002
_SPECIFIC_CHARACTER_SET = 0x00080005

#: The elements of Segment Sequence items (and the items nested in them) that the segment reader
#: uses: tag -> (keyword, VR, value multiplicity taken; 0 for sequences). Other elements are skipped.
SEGMENT_ELEMENTS: dict[int, tuple[str, str, int]] = {
    0x00080100: ("CodeValue", "SH", 1),
    0x00080102: ("CodingSchemeDesignator", "SH", 1),
    0x00080103: ("CodingSchemeVersion", "SH", 1),
    0x00080104: ("CodeMeaning", "LO", 1),
    0x00080119: ("LongCodeValue", "UC", 1),
    0x00080120: ("URNCodeValue", "UR", 1),
    0x00082218: ("AnatomicRegionSequence", "SQ", 0),
    0x00082220: ("AnatomicRegionModifierSequence", "SQ", 0),
    0x00620003: ("SegmentedPropertyCategoryCodeSequence", "SQ", 0),
    0x00620004: ("SegmentNumber", "US", 1),
    0x00620005: ("SegmentLabel", "LO", 1),
    0x00620006: ("SegmentDescription", "ST", 1),
    0x00620007: ("SegmentationAlgorithmIdentificationSequence", "SQ", 0),
    0x00620008: ("SegmentAlgorithmType", "CS", 1),
    0x00620009: ("SegmentAlgorithmName", "LO", 1),
    0x0062000D: ("RecommendedDisplayCIELabValue", "US", 3),
    0x0062000F: ("SegmentedPropertyTypeCodeSequence", "SQ", 0),
    0x00620011: ("SegmentedPropertyTypeModifierCodeSequence", "SQ", 0),
    0x00620020: ("TrackingID", "UT", 1),
    0x00620021: ("TrackingUID", "UI", 1),
    0x0066002F: ("AlgorithmFamilyCodeSequence", "SQ", 0),
    0x00660031: ("AlgorithmVersion", "LO", 1),
    0x00660036: ("AlgorithmName", "LO", 1),
}
_SEGMENT_KEYWORDS = frozenset(keyword for keyword, _, _ in SEGMENT_ELEMENTS.values())

#: Every VR of PS3.5 (anything else is left to pydicom).
_KNOWN_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV".split()
)
#: Specific Character Sets whose text pydicom decodes with one ASCII-compatible codec.
_ASCII_CHARACTER_SETS = (None, "", "ISO_IR 6", "ISO_IR 100", "ISO_IR 192")
#: Python codecs (pydicom's names) that decode printable ASCII as ASCII.
_ASCII_COMPATIBLE = frozenset({"iso8859", "latin_1", "UTF8"})
#: Printable ASCII without backslash (a value delimiter), then trailing NUL padding.
_PLAIN_TEXT = re.compile(rb"[\x20-\x5b\x5d-\x7e]*\x00*\Z")
#: Printable ASCII with backslash (ST, UT: single-valued text), then trailing NUL padding.
_PLAIN_SINGLE_TEXT = re.compile(rb"[\x20-\x7e]*\x00*\Z")


class RawItem:
    """A Segment Sequence item (or an item nested in it) read from raw bytes.

    Answers ``get(keyword, default)`` like :meth:`pydicom.dataset.Dataset.get` for the keywords of
    :data:`SEGMENT_ELEMENTS` (sequences are lists of RawItem); asking for another keyword is a bug.
    """

    __slots__ = ("_values",)

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values

    def get(self, keyword: str, default: Any = None) -> Any:
        if keyword not in _SEGMENT_KEYWORDS:
            raise KeyError(f"{keyword} is not read from raw Segment Sequence items (add it to SEGMENT_ELEMENTS)")
        return self._values.get(keyword, default)

    def __contains__(self, keyword: object) -> bool:
        return keyword in self._values

    def __repr__(self) -> str:
        return f"RawItem({self._values!r})"


_segment_cache_lock = threading.Lock()
#: id(raw Segment Sequence bytes) -> (those bytes, their items); the bytes are held, so ids stay unique.
_segment_cache: dict[int, tuple[bytes | bytearray, list[RawItem]]] = {}
_SEGMENT_CACHE_SIZE = 8


def raw_segment_items(ds: Dataset) -> list[RawItem] | None:
    """The Segment Sequence items of ``ds`` read from raw bytes, or None if the fast path does not apply.

    None also when ``ds`` has no Segment Sequence, or pydicom has converted it already. The
    result of one raw value is remembered (the reader asks twice: when the file is read and
    when its header is parsed).
    """
    value = _raw_explicit_little_endian_value(ds, SEGMENT_SEQUENCE) if SEGMENT_SEQUENCE in ds else None
    if value is None or not _default_conversion() or not _ascii_compatible(ds):
        return None
    with _segment_cache_lock:
        cached = _segment_cache.get(id(value))
    if cached is not None and cached[0] is value:
        return cached[1]
    try:
        buffer = memoryview(value)
        items = [_raw_item(buffer, start, end) for start, end in _strict_items(buffer, 0, len(buffer))]
    except (_Malformed, struct.error, IndexError, ValueError):
        return None
    with _segment_cache_lock:
        while len(_segment_cache) >= _SEGMENT_CACHE_SIZE:
            del _segment_cache[next(iter(_segment_cache))]
        _segment_cache[id(value)] = (value, items)
    return items


def _default_conversion() -> bool:
    """True if pydicom converts raw elements with its default hooks (no callback changes values)."""
    return (
        pydicom_config.data_element_callback is None
        and pydicom_hooks.hooks.raw_element_vr is pydicom_hooks.raw_element_vr
        and pydicom_hooks.hooks.raw_element_value is pydicom_hooks.raw_element_value
    )


def _ascii_compatible(ds: Dataset) -> bool:
    """True if pydicom decodes the text of ``ds`` with one codec that reads ASCII as ASCII (and no warning)."""
    if ds.get("SpecificCharacterSet") not in _ASCII_CHARACTER_SETS:
        return False
    encodings = ds.original_character_set or ds._character_set
    encodings = [encodings] if isinstance(encodings, str) else list(encodings)
    return len(encodings) == 1 and encodings[0] in _ASCII_COMPATIBLE and convert_encodings(
        ds.get("SpecificCharacterSet")) == encodings


def _strict_items(buffer: memoryview, position: int, end: int) -> list[tuple[int, int]]:
    """(start, end) of each item of a sequence value ``buffer[position:end]``; nothing may follow the items."""
    items = []
    while position < end:
        if position + 8 > end:
            raise _Malformed
        group, element, length = _ITEM_HEADER.unpack_from(buffer, position)
        tag = (group << 16) | element
        position += 8
        if tag == _SEQUENCE_END:
            if position != end or length != 0:
                raise _Malformed
            break
        if tag != _ITEM:
            raise _Malformed
        if length == _UNDEFINED:
            item_end = _skip_dataset(buffer, position, end)
            items.append((position, item_end))
            position = item_end + 8  # past the item delimiter
            if position > end or _ITEM_HEADER.unpack_from(buffer, item_end)[2] != 0:
                raise _Malformed
        else:
            if position + length > end:
                raise _Malformed
            items.append((position, position + length))
            position += length
    return items


def raw_sequence_is_plain(ds: Dataset, tag: int) -> bool:
    """True if the sequence ``tag`` of ``ds`` is raw explicit VR little endian whose structure pydicom reads cleanly.

    Strictly checked (items and delimiters in place, lengths within bounds, tags in increasing
    order, known VRs, no item character set), so converting it with pydicom would neither fail
    nor warn: the reader can leave such a sequence to be converted lazily (when used) without
    missing a problem. Values are not looked at (pydicom does not convert them either).
    """
    value = _raw_explicit_little_endian_value(ds, tag)
    if value is None:
        return False
    try:
        buffer = memoryview(value)
        for start, end in _strict_items(buffer, 0, len(buffer)):
            _raw_item(buffer, start, end, {})
    except (_Malformed, struct.error, IndexError, ValueError):
        return False
    return True


def _raw_item(buffer: memoryview, start: int, end: int,
              wanted_elements: dict[int, tuple[str, str, int]] = SEGMENT_ELEMENTS) -> RawItem:
    """The RawItem of one item's elements ``buffer[start:end]`` (tags in increasing order, known VRs).

    Only ``wanted_elements`` are converted; the structure of every nested sequence is checked.
    """
    values: dict[str, Any] = {}
    previous = -1
    position = start
    while position < end:
        tag, vr, length, value_start = _element_header(buffer, position)
        if tag <= previous or vr not in _KNOWN_VRS or tag == _SPECIFIC_CHARACTER_SET:
            raise _Malformed  # pydicom decides: duplicates, odd VRs, an item's own character set
        previous = tag
        if length != _UNDEFINED:  # as _element_end, the header read once
            following = value_end = value_start + length
            if following > end:
                raise _Malformed
        else:
            if vr != b"SQ":
                raise _Malformed
            following = _skip_sequence(buffer, value_start, end)
            value_end = following - 8
            if _ITEM_HEADER.unpack_from(buffer, value_end)[2] != 0:
                raise _Malformed  # a sequence delimiter with a length: pydicom logs it
        wanted = wanted_elements.get(tag)
        if wanted is not None:
            keyword, expected_vr, multiplicity = wanted
            if vr.decode() != expected_vr:
                raise _Malformed
            values[keyword] = _raw_value(buffer, expected_vr, multiplicity, value_start, value_end, length)
        elif vr == b"SQ":  # not used, but its structure must be what pydicom reads without complaint
            for item_start, item_end in _strict_items(buffer, value_start, value_end):
                _raw_item(buffer, item_start, item_end, wanted_elements)
        position = following
    if position != end:
        raise _Malformed
    return RawItem(values)


def _raw_value(buffer: memoryview, vr: str, multiplicity: int, start: int, end: int, length: int) -> Any:
    """The value pydicom 3 gives a plain element (see :func:`raw_segment_items`); _Malformed for any other."""
    if vr == "SQ":
        if length == 0:
            return []
        return [_raw_item(buffer, item_start, item_end) for item_start, item_end in _strict_items(buffer, start, end)]
    if length == 0:  # pydicom's empty_value_for_VR
        if vr == "US" or pydicom_config.use_none_as_empty_text_VR_value:
            return None
        return ""
    raw = bytes(buffer[start:end])
    if vr == "US":
        if len(raw) != 2 * multiplicity:
            raise _Malformed
        numbers = list(struct.unpack(f"<{multiplicity}H", raw))
        return numbers[0] if multiplicity == 1 else numbers
    if not (_PLAIN_SINGLE_TEXT if vr in ("ST", "UT") else _PLAIN_TEXT).match(raw):
        raise _Malformed
    text = raw.decode("ascii")
    validator = VALIDATORS.get(vr)
    if vr in ("SH", "LO", "ST", "UC", "UT") and validator is not None and not validator(vr, text)[0]:
        raise _Malformed  # pydicom would warn (or raise): let it
    if vr == "UR":
        return text.rstrip()  # pydicom's convert_UR_string
    if vr == "UI":
        return UID(text.rstrip("\0 "))
    return text.rstrip("\0 ")  # CS: multi_string; SH, LO, UC: convert_text; ST, UT: convert_single_string
