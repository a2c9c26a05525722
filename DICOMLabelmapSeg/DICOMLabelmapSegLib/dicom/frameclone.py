"""Grow a two-frame LABELMAP instance built by highdicom into the full instance, as raw bytes.

highdicom builds one Python object per frame (per-frame functional groups, source image
references) and pydicom then encodes each element by element: 1-2 ms per frame, more than
the frame's pixels cost. When the segmentation grid is the source series' grid, every frame
item differs from the first one only in its Image Position (Patient), its referenced source
image and its Dimension Index Values. So highdicom builds the instance for the first two
slices (it stays the author of every module, the Segment Sequence and the validation), and
this module clones the first frame's item, and the references, for every slice as raw
explicit VR little endian bytes, which pydicom writes unchanged.

Self-check: the clone of the second frame must be byte-identical to the item highdicom wrote
for it, and likewise for the references; if not (a highdicom version that writes something
else), :func:`clone_frames` returns None and the writer takes the plain path. Tests compare
the two paths' files element by element over varied inputs.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np
from pydicom import config as pydicom_config
from pydicom.charset import default_encoding
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import correct_ambiguous_vr, write_dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.valuerep import DS, is_valid_ds

PER_FRAME_FUNCTIONAL_GROUPS = 0x52009230
SOURCE_IMAGE_SEQUENCE = 0x00082112
REFERENCED_SERIES_SEQUENCE = 0x00081115
REFERENCED_INSTANCE_SEQUENCE = 0x0008114A
SEGMENT_SEQUENCE = 0x00620002
_DIMENSION_INDEX_VALUES = 0x00209157
_IMAGE_POSITION_PATIENT = 0x00200032
_SOP_CLASS_UID = 0x00080016
_SOP_INSTANCE_UID = 0x00080018
_REFERENCED_SOP_CLASS_UID = 0x00081150
_REFERENCED_SOP_INSTANCE_UID = 0x00081155

_ITEM_TAG = b"\xfe\xff\x00\xe0"
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_UINT32 = struct.Struct("<I")
_UINT16 = struct.Struct("<H")


def encode_item(item: Dataset, character_set: str | None = None) -> bytes:
    """One sequence item as pydicom writes it in explicit VR little endian (defined lengths).

    ``character_set``: the Specific Character Set of the dataset holding the item (default repertoire if None).
    """
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    write_dataset(buffer, item, parent_encoding=character_set or default_encoding)
    content = buffer.getvalue()
    return _ITEM_TAG + _UINT32.pack(len(content)) + content


def _containers(buffer: bytes, start: int, end: int, found: list[tuple[int, int, int]]) -> None:
    """(length field position, value start, value end) of every sequence and item in ``buffer[start:end]``."""
    position = start
    while position < end:
        vr = buffer[position + 4:position + 6]
        if vr in _LONG_VRS:
            length_position, value_start = position + 8, position + 12
            length = _UINT32.unpack_from(buffer, length_position)[0]
        else:
            length_position, value_start = -1, position + 8
            length = _UINT16.unpack_from(buffer, position + 6)[0]
        if length == 0xFFFFFFFF:
            raise ValueError("undefined length")
        value_end = value_start + length
        if vr == b"SQ":
            found.append((length_position, value_start, value_end))
            item = value_start
            while item < value_end:
                if buffer[item:item + 4] != _ITEM_TAG:
                    raise ValueError("not an item")
                item_length = _UINT32.unpack_from(buffer, item + 4)[0]
                found.append((item + 4, item + 8, item + 8 + item_length))
                _containers(buffer, item + 8, item + 8 + item_length, found)
                item += 8 + item_length
        position = value_end


def _tag_bytes(tag: int) -> bytes:
    return (tag >> 16).to_bytes(2, "little") + (tag & 0xFFFF).to_bytes(2, "little")


def _ui(tag: int, uid: str) -> bytes:
    value = uid.encode("ascii")
    return _tag_bytes(tag) + b"UI" + (len(value) + len(value) % 2).to_bytes(2, "little") + value + (
        b"\0" if len(value) % 2 else b"")


def _ds(tag: int, values: Sequence) -> bytes:
    numbers = [DS(value, auto_format=True) for value in values]
    text = "\\".join(getattr(x, "original_string", None) or str(x) for x in numbers)
    value = (text + " " * (len(text) % 2)).encode("ascii")
    return _tag_bytes(tag) + b"DS" + len(value).to_bytes(2, "little") + value


def _ul(tag: int, number: int) -> bytes:
    return _tag_bytes(tag) + b"UL" + (4).to_bytes(2, "little") + int(number).to_bytes(4, "little")


class _Template:
    """An encoded item with holes where per-frame elements go (found by their exact encoded bytes).

    Filling a hole with a value of another length corrects the lengths of the sequences and
    items around it, as pydicom would have written them.
    """

    def __init__(self, encoded: bytes, holes: Sequence[bytes]) -> None:
        self.chunks: list[bytes] = []
        self.holes = [len(hole) for hole in holes]
        positions = []
        position = 0
        for hole in holes:
            start = encoded.find(hole, position)
            if start < 0 or encoded.find(hole, start + len(hole)) >= 0:
                raise ValueError("element not found exactly once")
            positions.append(start)
            self.chunks.append(encoded[position:start])
            position = start + len(hole)
        self.chunks.append(encoded[position:])
        containers: list[tuple[int, int, int]] = [(4, 8, len(encoded))]
        _containers(encoded, 8, len(encoded), containers)
        # For each container enclosing a hole: its length field, its length, the holes before the
        # field (they shift it) and the holes inside (they change its length).
        self.patches = []
        for length_position, start, end in containers:
            inside = [i for i, hole_start in enumerate(positions) if start <= hole_start < end]
            if inside:
                before = [i for i, hole_start in enumerate(positions) if hole_start < length_position]
                self.patches.append((length_position, end - start, before, inside))

    def fill(self, values: Sequence[bytes]) -> bytes:
        parts = [self.chunks[0]]
        for value, chunk in zip(values, self.chunks[1:]):
            parts += [value, chunk]
        deltas = [len(value) - size for value, size in zip(values, self.holes)]
        if not any(deltas):
            return b"".join(parts)
        filled = bytearray(b"".join(parts))
        for length_position, length, before, inside in self.patches:
            _UINT32.pack_into(filled, length_position + sum(deltas[i] for i in before),
                              length + sum(deltas[i] for i in inside))
        return bytes(filled)


def _frame_elements(source: Dataset, dimension_index: int, references: list[bytes] | None = None) -> list[bytes]:
    """The per-frame elements of the frame on ``source``, in the order they appear in an item.

    ``references``: :func:`_reference_elements` of ``source``, if already encoded.
    """
    return [
        *(references or _reference_elements(source)),
        _ul(_DIMENSION_INDEX_VALUES, dimension_index),
        _raw_position(source) or _ds(_IMAGE_POSITION_PATIENT, source.ImagePositionPatient),
    ]


def _raw_position(source: Dataset) -> bytes | None:
    """The Image Position (Patient) element :func:`_ds` writes, from the unread raw value; None if unsure.

    pydicom reads each value as the stripped text, which ``DS(..., auto_format=True)`` keeps when it
    is a valid DS; only such values are taken (anything else: pydicom converts, :func:`_ds` formats).
    """
    element = source.get_item(_IMAGE_POSITION_PATIENT)
    if not isinstance(element, RawDataElement) or not isinstance(element.value, bytes) or (
            pydicom_config.use_DS_numpy or pydicom_config.use_DS_decimal):
        return None
    text = element.value.decode("latin-1")
    parts = [part.strip() for part in text.strip().split("\\")]
    if len(parts) != 3 or not text.isascii() or not all(is_valid_ds(part) for part in parts):
        return None
    value = "\\".join(parts)
    encoded = (value + " " * (len(value) % 2)).encode("ascii")
    return _tag_bytes(_IMAGE_POSITION_PATIENT) + b"DS" + len(encoded).to_bytes(2, "little") + encoded


def _reference_elements(source: Dataset) -> list[bytes]:
    return [_ui(_REFERENCED_SOP_CLASS_UID, _uid_of(source, _SOP_CLASS_UID)),
            _ui(_REFERENCED_SOP_INSTANCE_UID, _uid_of(source, _SOP_INSTANCE_UID))]


def _uid_of(source: Dataset, tag: int) -> str:
    """A UID of ``source`` as pydicom gives it; from the raw bytes when unread (pydicom's conversion and
    validation cost more than the rest of the clone)."""
    element = source.get_item(tag)
    if isinstance(element, RawDataElement) and isinstance(element.value, bytes):
        try:
            text = element.value.decode("ascii").rstrip("\0 ")  # as pydicom: trailing padding only
        except UnicodeDecodeError:
            text = ""
        if text and text[0] not in " \0" and "\\" not in text:  # leading padding: as pydicom takes it off
            return text
    return str(source[tag].value)


def _raw_sequence(tag: int, items: bytes) -> RawDataElement:
    return RawDataElement(BaseTag(tag), "SQ", len(items), items, 0, False, True, True, False)


def clone_frames(mini: Dataset, sources: Sequence[Dataset], referenced: Sequence[Dataset]) -> bool:
    """Turn ``mini`` (highdicom's instance of the first two slices) into the instance of all ``sources``.

    Parameters
    ----------
    mini: Dataset
        Two frames, in slice order, on ``sources[0]`` and ``sources[1]``; changed in place
        (except Number of Frames and Pixel Data, which the caller sets).
    sources: Sequence[Dataset]
        The source image of each slice, in slice order (single-frame images, one series).
    referenced: Sequence[Dataset]
        The same images in the order the top-level references list them.

    Returns
    -------
    bool
        False if ``mini`` is not what this clone expects (then ``mini`` is unchanged).
    """
    count = len(sources)
    try:
        per_frame = mini.PerFrameFunctionalGroupsSequence
        first_index = int(per_frame[0].FrameContentSequence[0].DimensionIndexValues)
        second_index = int(per_frame[1].FrameContentSequence[0].DimensionIndexValues)
        if (first_index, second_index) == (1, 2):
            indices = np.arange(1, count + 1)
        elif (first_index, second_index) == (2, 1):
            indices = np.arange(count, 0, -1)
        else:
            return False
        frame_template = _Template(encode_item(per_frame[0]), _frame_elements(sources[0], first_index))
        if frame_template.fill(_frame_elements(sources[1], second_index)) != encode_item(per_frame[1]):
            return False
        source_items = mini.SourceImageSequence
        series_items = mini.ReferencedSeriesSequence
        if len(source_items) != 2 or len(series_items) != 1:
            return False
        instances = series_items[0].ReferencedInstanceSequence
        by_uid = {str(image.SOPInstanceUID): image for image in sources[:2]}
        found = [by_uid.get(str(item.ReferencedSOPInstanceUID)) for item in source_items]
        order = [image for image in found if image is not None]
        if len(order) != 2 or len(instances) != 2:
            return False
        source_template = _Template(encode_item(source_items[0]), _reference_elements(order[0]))
        instance_template = _Template(encode_item(instances[0]), _reference_elements(order[0]))
        if (source_template.fill(_reference_elements(order[1])) != encode_item(source_items[1])
                or instance_template.fill(_reference_elements(order[1])) != encode_item(instances[1])):
            return False
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return False

    # What pydicom does before writing (it would also parse raw sequences). The Segment Sequence holds no
    # ambiguous VR and is the largest part by far with many segments: it is left out of the walk (an
    # ambiguous VR there would make the write fail, never pass silently).
    segments = mini.get_item(SEGMENT_SEQUENCE)
    if segments is not None:
        del mini[SEGMENT_SEQUENCE]
    correct_ambiguous_vr(mini, True)
    if segments is not None:
        mini[SEGMENT_SEQUENCE] = segments
    # Each image's references are encoded once: they go into its frame and into both reference lists.
    references = {id(image): _reference_elements(image) for image in sources}
    for image in referenced:
        references.setdefault(id(image), _reference_elements(image))
    frames = b"".join(
        frame_template.fill(_frame_elements(source, int(index), references[id(source)]))
        for source, index in zip(sources, indices)
    )
    mini[PER_FRAME_FUNCTIONAL_GROUPS] = _raw_sequence(PER_FRAME_FUNCTIONAL_GROUPS, frames)
    mini[SOURCE_IMAGE_SEQUENCE] = _raw_sequence(
        SOURCE_IMAGE_SEQUENCE, b"".join(source_template.fill(references[id(image)]) for image in referenced)
    )
    series_items[0][REFERENCED_INSTANCE_SEQUENCE] = _raw_sequence(
        REFERENCED_INSTANCE_SEQUENCE, b"".join(instance_template.fill(references[id(image)]) for image in referenced)
    )
    if segments is not None:
        _raw_segment_sequence(mini, segments)
    _as_if_read(mini)  # after: the walk skips the Segment Sequence's items once they are raw bytes
    return True


def _raw_segment_sequence(mini: Dataset, segments: DataElement | RawDataElement) -> None:
    """Replace the Segment Sequence by its bytes if :func:`encode_items_fast` encodes it as pydicom does.

    Checked on the first and the last item against pydicom's own encoding; otherwise pydicom writes it.
    """
    if isinstance(segments, RawDataElement) or segments.is_undefined_length or not segments.value:
        return
    items = segments.value
    character_set = mini.get("SpecificCharacterSet")
    encoded = encode_items_fast(items, character_set)
    if encoded is None or not encoded.startswith(encode_item(items[0], character_set)) or not encoded.endswith(
            encode_item(items[-1], character_set)):
        return
    mini[SEGMENT_SEQUENCE] = _raw_sequence(SEGMENT_SEQUENCE, encoded)


#: Text VRs written with the dataset's character set (pydicom's write_text) and those written in ASCII (write_string).
_CHARSET_TEXT_VRS = {"LO", "LT", "SH", "ST", "UC", "UT"}
_ASCII_TEXT_VRS = {"AE", "AS", "CS", "DA", "DT", "TM", "UI", "UR"}
_VALUE_LENGTH_32 = {"UC", "UR", "UT"}
#: Character sets in which ASCII text is encoded as ASCII (the default repertoire is their G0 set).
_ASCII_COMPATIBLE_CHARSETS = {None, "", "ISO_IR 6", "ISO_IR 100", "ISO_IR 101", "ISO_IR 109", "ISO_IR 110",
                              "ISO_IR 144", "ISO_IR 148", "ISO_IR 192"}
_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_ITEM_DELIMITER = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"


def encode_items_fast(items: Sequence[Dataset], character_set: object) -> bytes | None:
    """The items of a sequence as pydicom writes them (explicit VR little endian), or None if unsure.

    Covers what highdicom's Segment Sequence items hold: nested sequences, US values and ASCII
    text (the same bytes in every character set listed in :data:`_ASCII_COMPATIBLE_CHARSETS`), or
    any text of the character-set VRs in UTF-8 (ISO_IR 192).
    Anything else (other VRs, non-ASCII text, raw elements, values too long for their length
    field) gives None, and pydicom writes the sequence. About 10x faster than pydicom.
    """
    if not (character_set is None or isinstance(character_set, str)) or character_set not in (
            _ASCII_COMPATIBLE_CHARSETS):
        return None
    parts: list[bytes] = []
    utf8 = character_set == "ISO_IR 192"
    for item in items:
        if not _encode_item_fast(item, parts, utf8):
            return None
    return b"".join(parts)


def _encode_item_fast(item: Dataset, parts: list[bytes], utf8: bool) -> bool:
    if "SpecificCharacterSet" in item:
        return False  # an item's own character set: leave it to pydicom
    parts.append(_ITEM_TAG)
    length_index = len(parts)
    parts.append(b"")
    start = len(parts)
    for tag in sorted(item.keys()):
        element = item.get_item(tag)
        if element is None or getattr(element, "is_raw", True):
            return False
        vr, value = element.VR, element.value
        header = _tag_bytes(tag) + vr.encode("ascii") if isinstance(vr, str) and len(vr) == 2 else None
        if header is None:
            return False
        if vr == "SQ":
            parts.append(header + b"\0\0")
            sequence_length_index = len(parts)
            parts.append(b"")
            sequence_start = len(parts)
            for nested in value:
                if not _encode_item_fast(nested, parts, utf8):
                    return False
            if element.is_undefined_length:
                parts[sequence_length_index] = b"\xff\xff\xff\xff"
                parts.append(_SEQUENCE_DELIMITER)
            else:
                parts[sequence_length_index] = _UINT32.pack(sum(len(p) for p in parts[sequence_start:]))
            continue
        if element.is_empty:
            encoded = b""
        elif vr == "US":
            numbers = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
            if not all(type(number) is int and 0 <= number <= 0xFFFF for number in numbers):
                return False
            encoded = struct.pack(f"<{len(numbers)}H", *numbers)
        elif vr in _CHARSET_TEXT_VRS or vr in _ASCII_TEXT_VRS:
            texts = [value] if isinstance(value, str) else list(value) if isinstance(value, MultiValue) else []
            if not texts or not all(isinstance(text, str) for text in texts):
                return False
            text = "\\".join(texts)
            if text.isascii():
                encoded = text.encode("ascii")
            elif utf8 and vr in _CHARSET_TEXT_VRS:
                encoded = text.encode("utf-8")
            else:
                return False
            if len(encoded) % 2:
                encoded += b"\0" if vr == "UI" else b" "
        else:
            return False
        if vr in _VALUE_LENGTH_32:
            parts.append(header + b"\0\0" + _UINT32.pack(len(encoded)) + encoded)
        elif len(encoded) > 0xFFFF:
            return False
        else:
            parts.append(header + _UINT16.pack(len(encoded)) + encoded)
    if getattr(item, "is_undefined_length_sequence_item", False):
        parts[length_index] = b"\xff\xff\xff\xff"
        parts.append(_ITEM_DELIMITER)
    else:
        parts[length_index] = _UINT32.pack(sum(len(p) for p in parts[start:]))
    return True


def _as_if_read(ds: Dataset) -> None:
    """Mark ``ds`` and every nested dataset as read in explicit VR little endian with the character set it has.

    pydicom then writes raw elements unchanged instead of parsing and re-encoding them, and does
    not redo the ambiguous-VR correction (done once by :func:`clone_frames`) for every nested
    item: with hundreds of segments that repetition costs more than writing them. The character
    set is the one pydicom sees for each dataset (an item's is not its parent's when pydicom has
    no link to the parent): any other makes pydicom parse and correct the item, raw sequences and all.
    """
    ds.set_original_encoding(False, True, ds._character_set)
    for tag in ds.keys():
        element = ds.get_item(tag)
        if getattr(element, "is_raw", False) or element.VR != "SQ":
            continue
        for item in element.value:
            _as_if_read(item)
