"""The fast source slice header reader (dicom/source.py) against pydicom, for varied headers.

The reader walks the raw elements of explicit or implicit VR little endian files and keeps
the :data:`_SLICE_TAGS`; every other file goes to pydicom. Whatever the path, the values it
returns (and the ones its checks parse from the raw bytes) must be the ones pydicom reads.
"""

from __future__ import annotations

import io
import math
import struct
import tempfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from DICOMLabelmapSegLib.dicom import source
from DICOMLabelmapSegLib.errors import SourceImageError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.datadict import dictionary_VR, keyword_for_tag

_LONG = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
_EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"
_IMPLICIT_LITTLE = "1.2.840.10008.1.2"
_EXPLICIT_BIG = "1.2.840.10008.1.2.2"
_DEFLATED = "1.2.840.10008.1.2.1.99"


# --- a small encoder: the bytes are exactly what the strategy chose ---------------------------


def _element(tag: int, vr: str, value: bytes, implicit: bool) -> bytes:
    group, element = tag >> 16, tag & 0xFFFF
    if implicit:
        return struct.pack("<HHI", group, element, len(value)) + value
    if vr in _LONG:
        return struct.pack("<HH2sHI", group, element, vr.encode(), 0, len(value)) + value
    return struct.pack("<HH2sH", group, element, vr.encode(), len(value)) + value


def _undefined_sequence(tag: int, items: list[bytes], undefined_items: bool, implicit: bool) -> bytes:
    group, element = tag >> 16, tag & 0xFFFF
    head = struct.pack("<HHI", group, element, 0xFFFFFFFF) if implicit else struct.pack(
        "<HH2sHI", group, element, b"SQ", 0, 0xFFFFFFFF)
    body = b""
    for item in items:
        if undefined_items:
            body += struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + item + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
        else:
            body += struct.pack("<HHI", 0xFFFE, 0xE000, len(item)) + item
    return head + body + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


def _padded(text: bytes, pad: bytes = b" ") -> bytes:
    return text + pad * (len(text) % 2)


def _file(syntax: str, elements: list[tuple[int, bytes]], sop_class: str = "1.2.840.10008.5.1.4.1.1.2") -> bytes:
    """Preamble, file meta and the given (tag, encoded element) pairs, sorted by tag."""
    meta = b"".join((
        _element(0x00020001, "OB", b"\0\1", False),
        _element(0x00020002, "UI", _padded(sop_class.encode(), b"\0"), False),
        _element(0x00020003, "UI", _padded(b"1.2.3.4", b"\0"), False),
        _element(0x00020010, "UI", _padded(syntax.encode(), b"\0"), False),
        _element(0x00020012, "UI", _padded(b"1.2.3", b"\0"), False),
    ))
    meta = _element(0x00020000, "UL", struct.pack("<I", len(meta)), False) + meta
    body = b"".join(encoded for _, encoded in sorted(elements, key=lambda pair: pair[0]))
    return b"\0" * 128 + b"DICM" + meta + body


# --- strategies -------------------------------------------------------------------------------

_uid = st.lists(st.integers(0, 10**9), min_size=1, max_size=6).map(lambda parts: ".".join(map(str, parts)))
_decimal = st.floats(-1e5, 1e5, allow_nan=False, allow_infinity=False)
_formats = st.sampled_from(["{:.6g}", "{!r}", " {:.4f}", "{:.3e}", "{:.2f} "])


@st.composite
def _decimal_string(draw: st.DrawFn, count: int | None = None) -> bytes:
    n = count if count is not None else draw(st.integers(1, 6))
    values = [draw(_formats).format(draw(_decimal))[:16] for _ in range(n)]
    return _padded("\\".join(values).encode())


@st.composite
def _value(draw: st.DrawFn, tag: int) -> bytes:
    """A value for one of the slice tags, in its VR (sometimes empty)."""
    vr = dictionary_VR(tag)
    if draw(st.integers(0, 9)) == 0 and vr != "US":
        return b""
    if vr == "UI":
        return _padded(draw(_uid).encode(), b"\0")
    if vr == "US":
        return struct.pack("<H", draw(st.integers(1, 65535)))
    if vr == "DS":
        count = {0x00200032: 3, 0x00200037: 6, 0x00280030: 2}.get(tag, 1)
        return draw(_decimal_string(count if draw(st.integers(0, 5)) else None))
    if vr == "IS":
        return _padded(str(draw(st.integers(-(2**31), 2**31 - 1))).encode())
    if vr == "CS":
        words = draw(st.lists(st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_", min_size=1, max_size=8),
                              min_size=1, max_size=1 if tag == 0x00080060 else 3))
        return _padded("\\".join(words).encode())
    if vr in ("DA", "TM"):
        return _padded(str(draw(st.integers(0, 99991231))).encode())
    # PN, LO, SH: ASCII or Latin-1 text
    text = draw(st.text(st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\\"), max_size=16))
    return _padded(text.encode("latin-1"))


@st.composite
def _header(draw: st.DrawFn) -> tuple[str, bytes]:
    syntax = draw(st.sampled_from([_EXPLICIT_LITTLE, _EXPLICIT_LITTLE, _IMPLICIT_LITTLE, _EXPLICIT_BIG, _DEFLATED]))
    implicit = syntax == _IMPLICIT_LITTLE
    wanted = sorted(source._SLICE_TAGS - {0x00280008, 0x00080005})  # single-frame, default character set
    present = draw(st.lists(st.sampled_from(wanted), unique=True, min_size=0, max_size=len(wanted)))
    present = sorted(set(present) | {0x00280010, 0x00280011})
    elements = []
    for tag in present:
        elements.append((tag, _element(tag, dictionary_VR(tag), draw(_value(tag)), implicit)))
    if draw(st.booleans()):
        elements.append((0x00080005, _element(0x00080005, "CS", b"ISO_IR 100", implicit)))
    if draw(st.booleans()):  # a frame count of one
        elements.append((0x00280008, _element(0x00280008, "IS", draw(st.sampled_from([b"1 ", b" 1", b""])), implicit)))
    unwanted = [(0x00080021, "DA", b"20260101"), (0x00081090, "LO", b"MODEL "), (0x00180060, "DS", b"120 "),
                (0x00201040, "LO", b""), (0x00280100, "US", b"\x10\0"), (0x00281052, "DS", b"-1024 ")]
    for tag, vr, value in draw(st.lists(st.sampled_from(unwanted), unique=True)):
        elements.append((tag, _element(tag, vr, value, implicit)))
    blob = draw(st.sampled_from([0, 0, 100, 17000, 40000]))  # private values that push tags past a chunk
    if blob:
        elements.append((0x00090010, _element(0x00090010, "LO", b"BLOB", implicit)))
        elements.append((0x00091001, _element(0x00091001, "OB", bytes(range(256)) * (blob // 256), implicit)))
    if draw(st.booleans()):  # an undefined-length sequence, items of defined or undefined length, nested
        inner = _element(0x00081150, "UI", _padded(b"1.2.3", b"\0"), implicit)
        nested = _undefined_sequence(0x0040A170, [inner], draw(st.booleans()), implicit)
        items = [inner + nested] * draw(st.integers(0, 3))
        elements.append((0x00081140, _undefined_sequence(0x00081140, items, draw(st.booleans()), implicit)))
    if draw(st.booleans()):
        elements.append((0x7FE00010, _element(0x7FE00010, "OW", b"\0\1" * 64, implicit)))
    data = _file(_EXPLICIT_LITTLE if syntax in (_EXPLICIT_BIG, _DEFLATED) else syntax, elements)
    if syntax in (_EXPLICIT_BIG, _DEFLATED):  # pydicom re-encodes the same values
        ds = pydicom.dcmread(io.BytesIO(data))
        for _ in ds.iterall():  # convert the values (a byte order change re-encodes them)
            pass
        ds.file_meta.TransferSyntaxUID = syntax
        out = io.BytesIO()
        pydicom.dcmwrite(out, ds, implicit_vr=False, little_endian=syntax != _EXPLICIT_BIG,
                         force_encoding=syntax == _EXPLICIT_BIG, enforce_file_format=syntax != _EXPLICIT_BIG)
        data = out.getvalue()
    return syntax, data


# --- the properties ---------------------------------------------------------------------------

#: Pixel data after the last slice tag: where the reader stops (a file that ends in an element shorter than
#: 12 bytes goes to pydicom).
_BITS = (0x7FE00010, _element(0x7FE00010, "OW", b"\0" * 16, False))
_TEXT_KEYWORDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")
_PLANES = ((source._orientation, "ImageOrientationPatient"), (source._position, "ImagePositionPatient"),
           (source._pixel_spacing, "PixelSpacing"))


def _outcome(function, ds):  # noqa: ANN001, ANN202 - a value or the error it raises
    try:
        return function(ds)
    except SourceImageError as error:
        return ("error", str(error))
    except Exception as error:  # noqa: BLE001
        return ("error", type(error).__name__)


def _check_same_as_pydicom(path: Path) -> None:
    fast = source._read_slice_header(path)
    full = source._read_header(path)  # pydicom
    assert (fast is None) == (full is None)
    if fast is None:
        return
    reference = pydicom.dcmread(path, stop_before_pixels=True)
    for tag in source._SLICE_TAGS:
        assert (tag in fast) == (tag in reference), keyword_for_tag(tag)
        if tag in reference:
            assert fast[tag].VR == reference[tag].VR, keyword_for_tag(tag)
            assert fast[tag].value == reference[tag].value, (keyword_for_tag(tag), fast[tag], reference[tag])
    assert fast.file_meta.get("TransferSyntaxUID") == reference.file_meta.get("TransferSyntaxUID")
    assert fast.original_encoding[:2] == reference.original_encoding[:2]
    # What the checks parse themselves from raw bytes equals what pydicom converts.
    for fresh in (source._read_slice_header(path), source._read_header(path)):
        for keyword in _TEXT_KEYWORDS + ("Modality",):
            assert source._string(fresh, keyword) == str(reference.get(keyword, "") or "").strip(), keyword
        for keyword in ("Rows", "Columns") if "Columns" in reference else ():
            assert source._unsigned_short(fresh, keyword) == int(reference[keyword].value)
        assert source._frames(fresh) == int(reference.get("NumberOfFrames", 1) or 1)
        assert source._is_image(fresh) == ("Rows" in reference and "Columns" in reference and str(
            reference.get("Modality", "")).upper() not in source._NON_IMAGE_MODALITIES)
        for function, keyword in _PLANES:
            expected = reference.get(keyword)
            if expected is not None and not isinstance(expected, (list, pydicom.multival.MultiValue)):
                expected = [expected]
            got = _outcome(function, fresh)
            if isinstance(got, tuple):
                assert expected is None or len(expected) != {"ImageOrientationPatient": 6, "PixelSpacing": 2}.get(
                    keyword, 3) or min(float(v) for v in expected) <= 0, (keyword, got, expected)
            else:
                assert got == [float(v) for v in expected], keyword
                assert all(math.isfinite(v) for v in got)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(_header())
def test_slice_reader_values_are_pydicoms(header: tuple[str, bytes]) -> None:
    """For varied headers (either VR encoding, absent and empty values, sequences of undefined length,
    values past the first chunk; big endian and deflated files that pydicom reads), the slice
    reader's elements and the values its checks parse equal pydicom's."""
    _, data = header
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "slice.dcm"
        path.write_bytes(data)
        _check_same_as_pydicom(path)


@pytest.mark.parametrize("cut", [0, 1, 7, 60, 131, 140, 200, -300, -140, -3])
def test_cut_files_are_read_as_pydicom_reads_them(tmp_path, cut):
    """A file cut short anywhere (in the meta, an element header or a value) gives what pydicom gives."""
    elements = [(tag, _element(tag, dictionary_VR(tag), value, False)) for tag, value in (
        (0x00080016, _padded(b"1.2.840.10008.5.1.4.1.1.2", b"\0")), (0x00080018, _padded(b"1.2.3.4.5", b"\0")),
        (0x00080060, b"CT"), (0x00200032, b"1\\2\\3 "), (0x00280010, b"\x08\0"), (0x00280011, b"\x09\0"),
        (0x00280030, b"0.5\\0.5 "))]
    data = _file(_EXPLICIT_LITTLE, elements)
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[:cut] if cut > 0 else data[:len(data) + cut])
    _check_same_as_pydicom(path)


@pytest.mark.parametrize("value", [b"\x01\x02\x03", b"", b"\x01\x02\x03\x04"])
def test_damaged_rows_as_pydicom(tmp_path, value):
    """A Rows value of the wrong length: skipped (damaged) or read exactly as pydicom does."""
    elements = [(0x00080060, _element(0x00080060, "CS", b"CT", False)),
                (0x00280010, _element(0x00280010, "US", value, False)),
                (0x00280011, _element(0x00280011, "US", b"\x09\0", False))]
    path = tmp_path / "rows.dcm"
    path.write_bytes(_file(_EXPLICIT_LITTLE, elements))
    fast, full = source._read_slice_header(path), source._read_header(path)
    assert (fast is None) == (full is None)
    if fast is not None:
        assert fast.Rows == full.Rows


def test_datasets_do_not_share_state(tmp_path):
    """Slice datasets are copies of one template: changing one (its file meta too) leaves the others as read."""
    elements = [(0x00080060, _element(0x00080060, "CS", b"CT", False)),
                (0x00280010, _element(0x00280010, "US", b"\x08\0", False)),
                (0x00280011, _element(0x00280011, "US", b"\x09\0", False)), _BITS]
    path = tmp_path / "a.dcm"
    path.write_bytes(_file(_EXPLICIT_LITTLE, elements))
    first, second = source._read_slice_header(path), source._read_slice_header(path)
    assert first.file_meta.TransferSyntaxUID == _EXPLICIT_LITTLE
    first.file_meta.TransferSyntaxUID = _IMPLICIT_LITTLE
    first.PatientName = "Changed"
    first.private_block(0x0009, "MINE", create=True).add_new(0x01, "LO", "x")
    first.set_original_encoding(True, True)
    assert second.file_meta.TransferSyntaxUID == _EXPLICIT_LITTLE
    assert "PatientName" not in second and 0x00090010 not in second
    assert second.original_encoding[:2] == (False, True)
    assert source._read_slice_header(path).file_meta.TransferSyntaxUID == _EXPLICIT_LITTLE
    assert source._scan(path.read_bytes(), io.BytesIO().read)  # the fast path read it
    assert vars(second).keys() == vars(pydicom.Dataset()).keys() | {"file_meta", "filename", "_slice_tags_only"}


def test_built_datasets_when_the_template_cannot_be_copied(tmp_path, monkeypatch):
    """With a pydicom whose Dataset state is not plain values, the datasets are built by pydicom: the same values."""
    paths = [tmp_path / f"{k}.dcm" for k in range(2)]
    for k, path in enumerate(paths):
        elements = [(0x00080060, _element(0x00080060, "CS", b"CT", False)),
                    (0x00200032, _element(0x00200032, "DS", b"0\\0\\%d " % k, False)),
                    (0x00280010, _element(0x00280010, "US", b"\x08\0", False)),
                    (0x00280011, _element(0x00280011, "US", b"\x09\0", False)), _BITS]
        path.write_bytes(_file(_EXPLICIT_LITTLE, elements))
    copied = [source._read_slice_header(path) for path in paths]
    assert all(getattr(ds, "_slice_tags_only", False) for ds in copied)
    monkeypatch.setattr(source, "_TEMPLATES", {})
    monkeypatch.setattr(source, "_copyable", lambda ds: False)
    built = [source._read_slice_header(path) for path in paths]
    for a, b in zip(copied, built):
        assert a == b and a.file_meta == b.file_meta and a.original_encoding == b.original_encoding


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(_decimal, _decimal, _decimal), min_size=2, max_size=12, unique=True),
       st.sampled_from([[1, 0, 0, 0, 1, 0], [0.6, 0.8, 0, -0.8, 0.6, 0], [1, 0, 0, 0, 0, -1]]))
def test_sort_by_position_is_the_stable_sort_along_the_normal(positions, orientation):
    """sort_by_position orders slices by their position along the normal, ties kept in the given order."""
    series = []
    for position in positions:
        ds = pydicom.Dataset()
        ds.ImagePositionPatient = [f"{v:.6g}" for v in position]
        ds.ImageOrientationPatient = orientation
        series.append(ds)
    normal = np.cross(orientation[:3], orientation[3:])
    expected = sorted(series, key=lambda ds: float(np.asarray([float(v) for v in ds.ImagePositionPatient]) @ normal))
    keys = [float(np.asarray([float(v) for v in ds.ImagePositionPatient]) @ normal) for ds in expected]
    got = source.sort_by_position(series)
    if len(set(np.round(keys, 6))) == len(keys):  # no near-ties (whose order may differ in the last bit)
        assert [id(ds) for ds in got] == [id(ds) for ds in expected]


def test_membership_does_not_read_deferred_values(tmp_path):
    """_has answers from the element dict: a value pydicom deferred (a large one) stays on disk."""
    elements = [(0x00080060, _element(0x00080060, "CS", b"CT", False)),
                (0x00081030, _element(0x00081030, "LO", b"A LONG STUDY DESCRIPTION  ", False)),
                (0x00280010, _element(0x00280010, "US", b"\x08\0", False)), _BITS]
    path = tmp_path / "deferred.dcm"
    path.write_bytes(_file(_EXPLICIT_LITTLE, elements))
    ds = pydicom.dcmread(path, defer_size=8)
    assert source._has(ds, "StudyDescription") and not source._has(ds, "DirectoryRecordSequence")
    assert ds.get_item("StudyDescription", keep_deferred=True).value is None  # still deferred
    assert source._string(ds, "StudyDescription") == "A LONG STUDY DESCRIPTION"  # read when asked for
    assert source._has(ds, "Rows") and not source._has(ds, "Columns")
    assert source._is_image(ds) is False


def test_raw_elements_built_by_their_constructor_are_the_same(tmp_path, monkeypatch):
    """With a pydicom whose RawDataElement has other fields, the constructor builds them: the same elements."""
    elements = [(0x00080060, _element(0x00080060, "CS", b"CT", False)),
                (0x00200032, _element(0x00200032, "DS", b"1\\2\\3 ", False)),
                (0x00280010, _element(0x00280010, "US", b"\x08\0", False)), _BITS]
    path = tmp_path / "raw.dcm"
    path.write_bytes(_file(_EXPLICIT_LITTLE, elements))
    fast = source._scan(path.read_bytes(), io.BytesIO().read)
    monkeypatch.setattr(source, "_new_raw", source._construct)
    monkeypatch.setattr(source, "_RAW_TAIL", ())
    built = source._scan(path.read_bytes(), io.BytesIO().read)
    assert fast == built and len(next(iter(fast[1].values()))) == len(source.RawDataElement._fields)
