"""The fast export path (per-frame metadata cloned as raw bytes, dicom/frameclone.py) writes what the plain path writes.

Every element of every instance, at every depth, is compared after a write and a read:
equal except the UIDs and times generated per call. Pixel Data bytes are compared exactly
too (the fast path encodes frames with the same encoder highdicom uses).
"""

from __future__ import annotations

import dataclasses
import io
import os
import warnings

import numpy as np
import pydicom
import pytest
from DICOMLabelmapSegLib.dicom import check, frameclone, writer
from DICOMLabelmapSegLib.dicom.frameclone import PER_FRAME_FUNCTIONAL_GROUPS, SEGMENT_SEQUENCE
from DICOMLabelmapSegLib.dicom.segment import segment_description
from DICOMLabelmapSegLib.dicom.source import read_source_series
from DICOMLabelmapSegLib.enums import SegmentAlgorithmType
from DICOMLabelmapSegLib.model import Code, Geometry, Layer, Segment, Terminology
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from synthetic import make_affine, make_ct_series, make_segmentation

#: Generated per call (new UIDs, the time of writing); everything else must be equal.
GENERATED = {
    "SOPInstanceUID", "MediaStorageSOPInstanceUID", "DimensionOrganizationUID", "PaletteColorLookupTableUID",
    "InstanceCreationDate", "InstanceCreationTime", "ContentDate", "ContentTime", "ContributionDateTime",
    "FileMetaInformationGroupLength",  # follows the length of the new SOP Instance UID
}


def written(ds: pydicom.Dataset) -> pydicom.Dataset:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


def differences(a: pydicom.Dataset, b: pydicom.Dataset, path: str = "") -> list[str]:
    found = []
    if set(a.keys()) != set(b.keys()):
        found.append(f"{path}: tags only in one: {sorted(set(a.keys()) ^ set(b.keys()))}")
    for tag in sorted(set(a.keys()) & set(b.keys())):
        first, second = a[tag], b[tag]
        if first.keyword in GENERATED:
            continue
        if first.VR != second.VR:
            found.append(f"{path}{first.keyword}: VR {first.VR} vs {second.VR}")
        elif first.VR == "SQ":
            if len(first.value) != len(second.value):
                found.append(f"{path}{first.keyword}: {len(first.value)} vs {len(second.value)} items")
                continue
            for index, (x, y) in enumerate(zip(first.value, second.value)):
                found += differences(x, y, f"{path}{first.keyword}[{index}].")
        elif first.value != second.value:
            found.append(f"{path}{first.keyword}: {str(first.value)[:60]} vs {str(second.value)[:60]}")
    return found


def both_paths(tmp_path, shape, layers, syntax, oblique=False, flip=False, palette=False, shuffle=True,
               non_ascii=False, edit_sources=None):
    affine = make_affine(spacing=(2.5, 0.8, 0.7), oblique=oblique, flip_slices=flip)
    folder = tmp_path / "ct"
    make_ct_series(folder, shape, affine, shuffle=shuffle)
    if edit_sources is not None:
        edit_sources(folder)
    source = read_source_series(folder)
    geometry = Geometry(shape, affine, str(source[0].FrameOfReferenceUID))
    segmentation = make_segmentation(geometry, layers)
    if non_ascii:
        first = segmentation.layers[0]
        renamed = [dataclasses.replace(first.segments[0], name="Leber Müller", description="gefäß")]
        segmentation = segmentation.with_layers([Layer(first.labels, renamed + first.segments[1:]),
                                                 *segmentation.layers[1:]])
    options = writer.ExportOptions(transfer_syntax=syntax, palette_color=palette, series_instance_uid="1.2.3.4.5")
    cloned: list[bool] = []

    def spy(*arguments):
        cloned.append(original(*arguments))
        return cloned[-1]

    # Without the writer's self-check (it parses the raw sequences): the raw bytes are then what is written.
    # The checker runs on the written files instead (assert_same_content).
    original, writer.clone_frames = writer.clone_frames, spy
    self_check = os.environ.pop(check.SELF_CHECK_VARIABLE, None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fast = writer.create_labelmap_datasets(segmentation, folder, options)
    finally:
        writer.clone_frames = original
        if self_check is not None:
            os.environ[check.SELF_CHECK_VARIABLE] = self_check
    assert cloned == [True] * len(segmentation.layers), "the fast path was not taken"
    assert all(ds.get_item(PER_FRAME_FUNCTIONAL_GROUPS).is_raw for ds in fast)
    assert all(ds.get_item(SEGMENT_SEQUENCE).is_raw for ds in fast)  # ASCII, or UTF-8 (non_ascii): raw bytes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The reference reads every source header in full with pydicom (the fast path: source.py's slice reader).
        full_headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in sorted(folder.iterdir())]
        plain = writer.plain_labelmap_datasets(segmentation, full_headers, options)
    return fast, plain


def assert_same_content(fast, plain):
    assert len(fast) == len(plain)
    for cloned, reference in zip(fast, plain):
        a, b = written(cloned), written(reference)
        assert check.errors(check.check_dataset(a, decode_pixels=False)) == []
        assert differences(a.file_meta, b.file_meta) == []
        assert differences(a, b) == []
        assert a.PixelData == b.PixelData
        assert a.SOPInstanceUID != b.SOPInstanceUID  # the comparison skipped what differs, and only that


@pytest.mark.parametrize("syntax", ["jpeg-ls", "explicit", "deflated", "rle", "jpeg2000"])
def test_fast_path_writes_what_highdicom_writes(tmp_path, syntax):
    fast, plain = both_paths(tmp_path, (6, 34, 40), ((1, 2, 5),), syntax)
    assert_same_content(fast, plain)


def raw_sequences(ds: pydicom.Dataset, path: str = "") -> dict[str, bool]:
    """Every sequence held as raw bytes, at any depth (under parsed sequences): path -> still raw."""
    found = {}
    for tag in ds.keys():
        element = ds.get_item(tag)
        if element.VR != "SQ":
            continue
        name = f"{path}{pydicom.datadict.keyword_for_tag(tag)}"
        if element.is_raw:
            found[name] = True
        else:
            for index, item in enumerate(element.value):
                found.update(raw_sequences(item, f"{name}[{index}]."))
    return found


@pytest.mark.parametrize("non_ascii", [False, True])
def test_pydicom_writes_the_raw_sequences_without_parsing_them(tmp_path, non_ascii):
    """Every nested dataset is marked as read in its own encoding and character set: pydicom neither parses
    the raw sequences nor corrects them again (the Referenced Series item's references cost 5 ms per save)."""
    fast, _ = both_paths(tmp_path, (6, 20, 24), ((1, 2, 5),), "jpeg-ls", non_ascii=non_ascii)
    before = raw_sequences(fast[0])
    assert {"PerFrameFunctionalGroupsSequence", "SourceImageSequence",
            "ReferencedSeriesSequence[0].ReferencedInstanceSequence"} <= set(before)
    written(fast[0])
    assert raw_sequences(fast[0]) == before  # nothing parsed on the way out


def test_fast_path_multilayer_uint16_oblique_palette(tmp_path):
    fast, plain = both_paths(tmp_path, (5, 20, 24), ((1, 300, 7), (2, 3)), "explicit", oblique=True, flip=True,
                             palette=True, non_ascii=True)
    assert fast[0].SpecificCharacterSet == "ISO_IR 192"
    assert_same_content(fast, plain)


def test_fast_path_reads_back_the_labels(tmp_path):
    from DICOMLabelmapSegLib.dicom.reader import read_segmentation

    affine = make_affine()
    folder = tmp_path / "ct"
    make_ct_series(folder, (7, 16, 18), affine)
    source = read_source_series(folder)
    segmentation = make_segmentation(Geometry((7, 16, 18), affine, str(source[0].FrameOfReferenceUID)),
                                     ((1, 4, 9), (2, 3)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        files = writer.write_labelmap_seg(segmentation, folder, tmp_path / "out")
        back = read_segmentation(files)
    for ours, theirs in zip(segmentation.layers, back.layers):
        np.testing.assert_array_equal(ours.labels, theirs.labels)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    slices=st.integers(3, 7),
    rows=st.integers(1, 20),
    columns=st.integers(1, 20),
    layers=st.lists(st.lists(st.integers(1, 400), min_size=1, max_size=4, unique=True), min_size=1, max_size=3),
    syntax=st.sampled_from(["jpeg-ls", "explicit", "deflated", "rle"]),
    oblique=st.booleans(),
    flip=st.booleans(),
    palette=st.booleans(),
    shuffle=st.booleans(),
)
def test_fast_path_equals_plain_path_for_varied_inputs(tmp_path_factory, slices, rows, columns, layers, syntax,
                                                       oblique, flip, palette, shuffle):
    tmp_path = tmp_path_factory.mktemp("clone")
    fast, plain = both_paths(tmp_path, (slices, rows, columns), layers, syntax, oblique, flip, palette, shuffle)
    assert_same_content(fast, plain)


def space_padded_uids(folder):
    """Pad the odd-length UIDs of every file with a space instead of NUL (seen in the wild; pydicom strips both)."""
    for index, path in enumerate(sorted(folder.iterdir())):
        ds = pydicom.dcmread(path)
        uid = f"1.2.826.0.1.3680043.8.498.{index + 1}"
        uid += "1" * (1 - len(uid) % 2)  # odd length: pydicom pads it with NUL
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.save_as(path, enforce_file_format=True)
        data = path.read_bytes()
        for uid in {str(ds.SOPInstanceUID), str(ds.SOPClassUID)}:
            if len(uid) % 2:
                data = data.replace(uid.encode() + b"\0", uid.encode() + b" ")
        path.write_bytes(data)


def test_fast_path_reads_padded_uids_as_pydicom_does(tmp_path):
    """The clone takes unread UIDs from their raw bytes: padding must come off as pydicom takes it off."""
    fast, plain = both_paths(tmp_path, (4, 6, 5), [[1, 2]], "explicit", edit_sources=space_padded_uids)
    assert_same_content(fast, plain)
    references = [str(item.ReferencedSOPInstanceUID) for item in written(fast[0]).SourceImageSequence]
    assert all(uid == uid.strip() for uid in references) and any(len(uid) % 2 for uid in references)


text = st.text(st.characters(min_codepoint=32, max_codepoint=126, exclude_characters="\\"), min_size=1, max_size=40)
names = st.one_of(text, st.sampled_from(["Leber Müller", "gefäß", "肝臓", "Ñandú ü"]))
codes = st.builds(Code, st.from_regex(r"[0-9A-Z]{1,16}", fullmatch=True), st.sampled_from(["SCT", "DCM", "99X"]),
                  text, st.one_of(st.none(), st.just("2024")))


@settings(max_examples=60, deadline=None)
@given(
    segments=st.lists(
        st.builds(
            Segment,
            label_value=st.integers(1, 65535),
            name=names,
            color=st.tuples(*[st.integers(0, 255)] * 3),
            terminology=st.builds(Terminology, codes, codes, st.one_of(st.none(), codes), st.one_of(st.none(), codes),
                                  st.none()),
            algorithm_type=st.sampled_from(list(SegmentAlgorithmType)),
            algorithm_name=st.one_of(st.none(), text),
            algorithm_family=st.one_of(st.none(), codes),
            description=st.one_of(st.none(), names),
        ),
        min_size=1, max_size=5,
    ),
    charset=st.sampled_from([None, "ISO_IR 100", "ISO_IR 192"]),
    palette=st.booleans(),
)
def test_segment_items_are_encoded_as_pydicom_encodes_them(segments, charset, palette):
    """The Segment Sequence written as raw bytes (frameclone.encode_items_fast) is pydicom's encoding, byte for byte."""
    items = [segment_description(segment, include_color=not palette) for segment in segments]
    fast = frameclone.encode_items_fast(items, charset)
    ascii_only = all(segment.name.isascii() and (segment.description or "").isascii() for segment in segments)
    assert (fast is not None) == (ascii_only or charset == "ISO_IR 192")  # where the fast path applies
    if fast is not None:
        assert fast == b"".join(frameclone.encode_item(item, charset) for item in items)


def test_segment_items_the_fast_encoder_does_not_know_go_to_pydicom():
    item = segment_description(Segment(1, "Leber Müller"))
    assert frameclone.encode_items_fast([item], "ISO_IR 100") is None  # non-ASCII text in another character set
    assert frameclone.encode_items_fast([segment_description(Segment(1, "liver"))], "ISO 2022 IR 87") is None
    odd = segment_description(Segment(1, "liver"))
    odd.add_new(0x00620006, "DS", "1.5")  # a VR it does not write
    assert frameclone.encode_items_fast([odd], None) is None


def unusual_positions(folder):
    """Rewrite each slice's Image Position (Patient) bytes with spaces, a plus sign and an exponent (valid DS)."""
    import struct

    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        element = ds.get_item(0x00200032)
        old = b"\x20\x00\x32\x00DS" + struct.pack("<H", len(element.value)) + element.value
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        text = f" {x:.3f} \\{y:+g}\\ {z * 10:.4g}E-1".encode()
        text += b" " * (len(text) % 2)
        data = path.read_bytes()
        assert data.count(old) == 1
        path.write_bytes(data.replace(old, b"\x20\x00\x32\x00DS" + struct.pack("<H", len(text)) + text))


def test_fast_path_copies_positions_as_pydicom_reads_them(tmp_path):
    """The clone takes unread positions from their raw text: what pydicom would keep, byte for byte."""
    fast, plain = both_paths(tmp_path, (4, 6, 5), [[1, 2]], "explicit", edit_sources=unusual_positions)
    assert_same_content(fast, plain)
    written_fast, written_plain = written(fast[0]), written(plain[0])
    for a, b in zip(written_fast.PerFrameFunctionalGroupsSequence, written_plain.PerFrameFunctionalGroupsSequence):
        assert [x.original_string for x in a.PlanePositionSequence[0].ImagePositionPatient] == \
               [x.original_string for x in b.PlanePositionSequence[0].ImagePositionPatient]


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=12) | st.text(alphabet=" \0.\\0123456789", max_size=12).map(str.encode))
def test_raw_uids_are_read_as_pydicom_reads_them(raw):
    """The clone's UIDs from unread raw bytes (frameclone._uid_of) equal what pydicom makes of the same bytes."""
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import BaseTag

    def dataset() -> pydicom.Dataset:
        tag = BaseTag(0x00080018)
        return pydicom.Dataset({tag: RawDataElement(tag, "UI", len(raw), raw, 0, False, True)})

    reference, ours = dataset(), dataset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            expected = str(reference[0x00080018].value)
        except UnicodeDecodeError:  # bytes pydicom cannot decode: the clone must not invent a UID either
            with pytest.raises(UnicodeDecodeError):
                frameclone._uid_of(ours, 0x00080018)
            return
        assert frameclone._uid_of(ours, 0x00080018) == expected


@settings(max_examples=300, deadline=None)
@given(raw=st.text(alphabet=" \0.\\+-eE0123456789", max_size=30).map(str.encode))
def test_raw_positions_are_written_as_from_pydicom_values(raw):
    """Image Position (Patient) from unread raw bytes (frameclone._raw_position) is the element the clone writes
    from pydicom's value, or it is left to pydicom (None)."""
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import BaseTag

    tag = BaseTag(0x00200032)
    ours = frameclone._raw_position(pydicom.Dataset({tag: RawDataElement(tag, "DS", len(raw), raw, 0, False, True)}))
    if ours is None:
        return
    reference = pydicom.Dataset({tag: RawDataElement(tag, "DS", len(raw), raw, 0, False, True)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ours == frameclone._ds(0x00200032, reference.ImagePositionPatient)


def test_raw_positions_cover_the_usual_text():
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import BaseTag

    tag = BaseTag(0x00200032)
    raw = b"-125.5\\ 3.25\\+7E-1 "
    assert frameclone._raw_position(pydicom.Dataset({tag: RawDataElement(tag, "DS", len(raw), raw, 0, False, True)}))
