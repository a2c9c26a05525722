"""The reader's fast paths give exactly what the plain (pydicom) paths give.

* Segment Sequence items read from raw bytes (framegroups.raw_segment_items) and the sequences the
  reader leaves unconverted after checking their bytes (framegroups.raw_sequence_is_plain): for
  drawn items (any text, character sets, VRs, lengths, nesting) and for byte-damaged files, the
  segments, the warnings, the log records and the errors equal those of the plain path.
"""

from __future__ import annotations

import logging
import random
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from DICOMLabelmapSegLib.dicom import framegroups, header, reader
from DICOMLabelmapSegLib.dicom.reader import read_segmentation
from DICOMLabelmapSegLib.dicom.segment import segment_from_description
from DICOMLabelmapSegLib.model import SegmentationType, differences
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

EXAMPLES = 200


# ---------------------------------------------------------------------------- helpers


@contextmanager
def plain_paths(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Within the block the reader takes only its plain pydicom paths."""
    with monkeypatch.context() as patch:
        patch.setattr(framegroups, "raw_segment_items", lambda ds: None)
        patch.setattr(framegroups, "raw_sequence_is_plain", lambda ds, tag: False)
        yield


def outcome(function: Callable[[], Any]) -> tuple[Any, list[str], list[str]]:
    """(result or (error class, message), warnings, log records) of calling ``function``."""
    records: list[str] = []

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(f"{record.levelname} {record.name}: {record.getMessage()}")

    handler = Handler()
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.DEBUG)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result: Any = function()
            except Exception as error:  # noqa: BLE001 - compared, not handled
                result = (type(error).__name__, str(error))
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    return result, [f"{w.category.__name__}: {w.message}" for w in caught], records


def encoded(items: list[Dataset], charset: str | None, undefined: bool = False) -> bytes:
    """A small explicit VR little endian file holding ``items`` as its Segment Sequence.

    ``undefined``: the sequences and items nested in the Segment Sequence have undefined lengths
    (the Segment Sequence itself keeps its length: pydicom parses undefined-length top-level
    sequences while reading the file, so they are never raw).
    """
    ds = Dataset()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.SegmentSequence = items
    if undefined:
        for element in ds.iterall():
            if element.VR == "SQ" and element.tag != framegroups.SEGMENT_SEQUENCE:
                element.is_undefined_length = True
                for item in element.value:
                    item.is_undefined_length_sequence_item = True
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    buffer = BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(buffer, enforce_file_format=False)
    return buffer.getvalue()


def read_back(data: bytes) -> Dataset:
    return pydicom.dcmread(BytesIO(data), force=True)


# ---------------------------------------------------------------------------- drawn items

PLAIN = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="\\"), max_size=16)
ODD = st.sampled_from(["", " ", "  padded  ", "a\\b", "line\nbreak", "tab\tx", "ümlaut", "中文", "x" * 65,
                       "x" * 17, "trailing\x00", "ESC\x1b(B", "UPPER_CS 1", "lower cs"])
TEXT = st.integers(0, 15).flatmap(lambda k: ODD if k == 0 else PLAIN)  # mostly plain: both paths are taken
VALUES = {
    "CodeValue": ("SH", TEXT),
    "CodingSchemeDesignator": ("SH", TEXT),
    "CodingSchemeVersion": ("SH", TEXT),
    "CodeMeaning": ("LO", TEXT),
    "LongCodeValue": ("UC", TEXT),
    "URNCodeValue": ("UR", st.sampled_from(["urn:oid:1.2.3", "urn:x ", "http://a/b", "", "a b"])),
}


@st.composite
def codes(draw: st.DrawFn, depth: int = 0, modifier: str | None = None) -> Dataset:
    item = Dataset()
    for keyword, (vr, values) in VALUES.items():
        if draw(st.booleans()) or keyword in ("CodeValue", "CodingSchemeDesignator") and draw(st.booleans()):
            item.add_new(keyword, vr, draw(values))
    if modifier is not None and depth == 0 and draw(st.integers(0, 3)) == 0:
        item.add_new(modifier, "SQ", [draw(codes(depth=1)) for _ in range(draw(st.integers(0, 2)))])
    return item


@st.composite
def segment_items(draw: st.DrawFn) -> Dataset:
    item = Dataset()
    number = draw(st.integers(0, 300)) if draw(st.integers(0, 9)) else \
        draw(st.one_of(st.just(65535), st.lists(st.integers(0, 9), min_size=2, max_size=2)))
    if draw(st.integers(0, 20)):
        item.add_new("SegmentNumber", "US", number)
    item.add_new("SegmentLabel", "LO", draw(TEXT))
    for keyword, vr, values in (
        ("SegmentDescription", "ST", TEXT),
        ("SegmentAlgorithmType", "CS", st.sampled_from(["MANUAL", "AUTOMATIC", "SEMIAUTOMATIC", "automatic ",
                                                        "BOGUS", "", "A\\B"] + ["AUTOMATIC"] * 6)),
        ("SegmentAlgorithmName", "LO", TEXT),
        ("TrackingID", "UT", TEXT),
        ("TrackingUID", "UI", st.sampled_from(["1.2.3", "1.2.840.5"] * 4 + ["", "not a uid", "1.2\\3.4"])),
    ):
        if draw(st.booleans()):
            item.add_new(keyword, vr, draw(values))
    if draw(st.booleans()):
        item.add_new("RecommendedDisplayCIELabValue", "US",
                     draw(st.lists(st.integers(0, 65535), min_size=3, max_size=3) if draw(st.integers(0, 5))
                          else st.lists(st.integers(0, 65535), min_size=1, max_size=4)))
    for keyword, modifier in (
        ("SegmentedPropertyCategoryCodeSequence", None),
        ("SegmentedPropertyTypeCodeSequence", "SegmentedPropertyTypeModifierCodeSequence"),
        ("AnatomicRegionSequence", "AnatomicRegionModifierSequence"),
    ):
        if draw(st.integers(0, 4)):
            item.add_new(keyword, "SQ", [draw(codes(modifier=modifier)) for _ in range(draw(st.integers(0, 2)))])
    if draw(st.booleans()):
        identification = Dataset()
        identification.add_new("AlgorithmName", "LO", draw(TEXT))
        if draw(st.booleans()):
            identification.add_new("AlgorithmVersion", "LO", draw(TEXT))
        identification.add_new("AlgorithmFamilyCodeSequence", "SQ", [draw(codes())])
        item.add_new("SegmentationAlgorithmIdentificationSequence", "SQ", [identification])
    if draw(st.integers(0, 5)) == 0:  # elements the reader does not use, a sequence among them
        other = Dataset()
        other.add_new("CodeValue", "SH", draw(TEXT))
        item.add_new("PrimaryAnatomicStructureSequence", "SQ", [other])
        item.add_new(0x00091010, "LO", draw(TEXT))  # private
    if draw(st.integers(0, 15)) == 0:
        item.SpecificCharacterSet = "ISO_IR 192"
    return item


def _segments(ds: Dataset) -> Any:
    return header._segments(ds, "The dataset", SegmentationType.LABELMAP, "MONOCHROME2")


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=st.lists(segment_items(), min_size=0, max_size=4),
    charset=st.sampled_from([None, "ISO_IR 100", "ISO_IR 192", "ISO_IR 6"] * 3 + ["GB18030", "ISO 2022 IR 100", "x"]),
    undefined=st.booleans(),
)
def test_raw_segment_items_give_what_pydicom_gives(items: list[Dataset], charset: str | None, undefined: bool) -> None:
    data = encoded(items, charset, undefined)
    fast_ds, plain_ds = read_back(data), read_back(data)
    fast = framegroups.raw_segment_items(fast_ds)
    plain_items = plain_ds.get("SegmentSequence")
    assert framegroups.raw_segment_items(plain_ds) is None  # converted by pydicom: not read raw
    event("plain path" if fast is None else "fast path")
    if fast is None:
        return  # pydicom reads it (the plain path): nothing to compare
    assert framegroups.raw_segment_items(fast_ds) is fast  # kept for the header
    assert len(fast) == len(plain_items)
    for raw_item, plain_item in zip(fast, plain_items):
        plain_result = outcome(lambda: segment_from_description(plain_item))  # noqa: B023
        assert outcome(lambda: segment_from_description(raw_item)) == plain_result  # noqa: B023
        for keyword in framegroups._SEGMENT_KEYWORDS:
            assert _same_value(raw_item.get(keyword), plain_item.get(keyword)), keyword
    assert outcome(lambda: _segments(fast_ds)) == outcome(lambda: _segments(read_back(data)))


def _same_value(raw: Any, plain: Any) -> bool:
    if isinstance(raw, list) and raw and isinstance(raw[0], framegroups.RawItem):
        return len(raw) == len(plain) and all(
            _same_value(r.get(k), p.get(k)) for r, p in zip(raw, plain) for k in framegroups._SEGMENT_KEYWORDS
        )
    if isinstance(plain, (pydicom.multival.MultiValue, pydicom.Sequence)):
        plain = list(plain)
    return type(raw) is type(plain) and raw == plain


def test_plain_items_take_the_fast_path() -> None:
    item = Dataset()
    item.SegmentNumber = 3
    item.SegmentLabel = "liver"
    item.RecommendedDisplayCIELabValue = [27186, 51814, 10454]
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "10200004", "SCT", "Liver"
    item.SegmentedPropertyCategoryCodeSequence = [code]
    item.SegmentedPropertyTypeCodeSequence = [code]
    item.TrackingID, item.TrackingUID = "liver 1", "1.2.3.4"
    for charset in (None, "ISO_IR 100", "ISO_IR 192"):
        for undefined in (False, True):
            data = encoded([item], charset, undefined)
            if undefined:
                assert data.count(b"\xfe\xff\xdd\xe0") == 2  # sequence delimiters
            fast = framegroups.raw_segment_items(read_back(data))
            assert fast is not None
            assert segment_from_description(fast[0]) == segment_from_description(item)


@pytest.mark.parametrize("change", ["non-ascii", "backslash", "too-long", "item-charset", "wrong-vr", "hook"])
def test_unusual_items_are_left_to_pydicom(change: str, monkeypatch: pytest.MonkeyPatch) -> None:
    item = Dataset()
    item.SegmentNumber = 1
    item.SegmentLabel = {"non-ascii": "Lungenflügel", "backslash": "a\\b", "too-long": "x" * 65}.get(change, "lung")
    if change == "item-charset":
        item.SpecificCharacterSet = "ISO_IR 100"
    data = encoded([item], "ISO_IR 192")
    if change == "wrong-vr":
        data = data.replace(b"\x62\x00\x05\x00LO", b"\x62\x00\x05\x00SH")
    if change == "hook":
        monkeypatch.setattr(pydicom.config, "data_element_callback", lambda raw, **kwargs: raw)
    assert framegroups.raw_segment_items(read_back(data)) is None


def test_the_reader_leaves_clean_sequences_unconverted(tmp_path: Path) -> None:
    from test_reader import our_labelmap

    path = our_labelmap(tmp_path)
    ds = reader._read_file(path, headers_only=False)
    for tag in (framegroups.SEGMENT_SEQUENCE, 0x00082112, 0x52009229):  # segments, source images, shared groups
        assert isinstance(ds.get_item(tag), RawDataElement)
    plain = pydicom.dcmread(path)
    assert ds.SourceImageSequence == plain.SourceImageSequence  # converted when used: the same values
    assert ds.SharedFunctionalGroupsSequence == plain.SharedFunctionalGroupsSequence


# ---------------------------------------------------------------------------- damaged files


def _segment_bytes(path: Path) -> tuple[int, int]:
    """(start, end) of the Segment Sequence value in the file's bytes."""
    data = path.read_bytes()
    start = data.index(b"\x62\x00\x02\x00SQ\x00\x00") + 12
    ds = pydicom.dcmread(path)
    return start, start + ds.get_item(framegroups.SEGMENT_SEQUENCE).length


def _read_outcome(data: bytes, where: Path) -> tuple[Any, list[str], list[str]]:
    where.write_bytes(data)

    return outcome(lambda: read_segmentation(where))


@pytest.mark.filterwarnings("ignore")
def test_damaged_segment_sequences_read_as_on_the_plain_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Byte flips, cuts and insertions in the Segment Sequence: the same segments, warnings and errors."""
    from test_reader import our_labelmap

    path = our_labelmap(tmp_path)
    seed = path.read_bytes()
    start, end = _segment_bytes(path)
    rng = random.Random("segment-sequence-15")
    target = tmp_path / "mutated.dcm"
    fast_count = 0
    for _ in range(300):
        data = bytearray(seed)
        for _ in range(rng.choice([1, 1, 2, 3])):
            at = rng.randrange(start, end)
            kind = rng.random()
            if kind < 0.85:  # mostly in place: lengths stay, values change (many stay plain)
                data[at] = rng.choice([rng.randrange(256), rng.randrange(0x20, 0x7F), 0x20, 0x5C, 0x00, 0xFF, 0xC3])
            elif kind < 0.8:
                data[at : at + 2] = b""
            else:
                data[at:at] = rng.choice([b"\\", b"  ", b"\xfe\xff\x00\xe0", b"\x00\x00"])
        fast = _read_outcome(bytes(data), target)
        fast_count += framegroups.raw_segment_items(pydicom.dcmread(target)) is not None
        with plain_paths(monkeypatch):
            plain = _read_outcome(bytes(data), target)
        assert _comparable(fast) == _comparable(plain)
    assert fast_count > 25  # many mutations leave the sequence plain: the fast path is exercised


def _comparable(result: tuple[Any, list[str], list[str]]) -> Any:
    value, caught, records = result
    if not isinstance(value, tuple):  # a Segmentation
        value = (
            [layer.segments for layer in value.layers],
            [np.asarray(layer.labels).tobytes() for layer in value.layers],
            value.referenced_series,
            value.series_info,
        )
    return value, caught, records


def test_whole_reads_equal_the_plain_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_reader import our_labelmap

    path = our_labelmap(tmp_path)
    fast = read_segmentation(path)
    with plain_paths(monkeypatch):
        plain = read_segmentation(path)
    assert differences(plain, fast) == []
    assert fast.referenced_series == plain.referenced_series and fast.series_info == plain.series_info


# ---------------------------------------------------------------------------- allocators


def test_labels_decoded_into_another_allocators_memory_equal_numpys(tmp_path: Path) -> None:
    """Labels decoded into memory an allocator hands the reader (the node's VTK image) are those of a plain read."""
    from test_reader import our_labelmap

    path = our_labelmap(tmp_path)
    plain = read_segmentation(path)
    given: list[np.ndarray] = []

    def allocate(shape: tuple, dtype: np.dtype, zeroed: bool) -> np.ndarray:
        array = np.full(shape, 0xAB, dtype=dtype) if not zeroed else np.zeros(shape, dtype=dtype)
        given.append(array)
        return array

    with reader.labels_allocated_by(allocate):
        fast = read_segmentation(path)
    assert given and differences(plain, fast) == []


# ---------------------------------------------------------------------------- frame positions

NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["1", " 2.5 ", "-0", "1e400", "nan", "inf", "", "x", "1_0", "0x10", "+3.", "١٢"]),
    st.text(max_size=4),
)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.one_of(st.lists(NUMBERS, max_size=4), st.lists(NUMBERS, max_size=4).map(lambda v: "\\".join(v)),
                 st.none(), st.integers(), st.just(pydicom.valuerep.DSfloat("1.5")),
                 st.lists(st.floats(-1e6, 1e6).map(lambda f: f"{f:.6g}"), min_size=2, max_size=4).map(
                     lambda v: pydicom.multival.MultiValue(pydicom.valuerep.DSfloat, v))))
def test_frame_positions_parse_as_the_plain_path(value: Any) -> None:
    def plain() -> Any:
        return tuple(header._floats(value, 3, "Image Position (Patient)", "The dataset").tolist())

    def fast() -> Any:
        return tuple(float(v) for v in header._position(value, "The dataset"))

    assert outcome(fast) == outcome(plain)
