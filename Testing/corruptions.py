"""A corpus of damaged SEG files made from valid ones, and a guarded way to read them.

:func:`generate_corpus` turns valid seed files (our outputs in several transfer syntaxes,
the shared samples of other tools) into damaged files: truncations, broken compressed
frames, missing mandatory attributes, lying headers, wrong SOP class, non-DICOM bytes.
Each :class:`Corruption` says which error classes are acceptable.

:class:`GuardedReader` reads files with ``reader.read_segmentation`` in a worker
subprocess under an address-space limit, with a per-file time bound, and reports each
outcome (error class, message, seconds, peak traced memory) as plain data, so that a
crash, a hang or a huge allocation of the reader is observed instead of taking the test
run down. Run as a script (``python corruptions.py --worker``) this module is that worker.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames

LIBRARY_DIR = Path(__file__).resolve().parents[1] / "DICOMLabelmapSeg"

#: Error classes (names from errors.py) a damaged file may raise, by family.
FILE_ERRORS = ("InvalidDicomFileError",)  # includes CorruptPixelDataError, ImplausibleSizeError
PIXEL_ERRORS = ("CorruptPixelDataError", "InvalidDicomFileError", "UndescribedLabelError")
GEOMETRY_ERRORS = ("GeometryMismatchError", "InvalidDicomFileError")
SIZE_ERRORS = ("ImplausibleSizeError", "CorruptPixelDataError", "InvalidDicomFileError")
UNSUPPORTED_ERRORS = ("UnsupportedSegmentationError", "InvalidDicomFileError")
SEGMENT_ERRORS = ("UndescribedLabelError", "InvalidSegmentationError", "InvalidDicomFileError")
ANY_ERROR = ("LabelmapSegError",)

PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"


@dataclass(frozen=True)
class Corruption:
    """One damaged file and what reading it may legitimately do.

    ``expected`` names acceptable LabelmapSegError subclasses (any class in the raised
    error's MRO matches). ``may_load`` is True for damage that cannot be detected
    without a checksum (DICOM has none) or that a lenient reader may tolerate: then a
    successful load is also acceptable, but never a raw library exception.
    """

    name: str
    path: Path
    expected: tuple[str, ...]
    may_load: bool = False

    @property
    def about_sizes(self) -> bool:
        """True for damage to sizes and frame counts: worth tracing every allocation when read."""
        return any(word in self.name for word in ("giant", "frames-", "rows", "columns", "bits-", "truncated-pixel"))


# ---------------------------------------------------------------- message quality

_RAW_EXCEPTION_PATTERNS = re.compile(
    r"Traceback|\b(KeyError|AttributeError|IndexError|TypeError|NameError|struct\.error|"
    r"UnboundLocalError|ZeroDivisionError|RecursionError)\b|object has no attribute|"
    r"index out of range|unpack requires|NoneType|\[Errno \d+\]|<[\w.]+ object at 0x"
)


def message_problems(message: str) -> list[str]:
    """Why an error message is not one clear sentence for a user (empty list: it is fine).

    A short technical cause in parentheses after the sentence (``... damaged header (unpack requires
    a buffer of 4 bytes); export it again.``) is fine; a message that *is* a library exception is not.
    """
    problems = []
    text = message.strip()
    sentence = text
    while True:  # drop parenthesized details, innermost first
        shorter = re.sub(r"\([^()]*\)", "", sentence)
        if shorter == sentence:
            break
        sentence = shorter
    if len(sentence.strip()) < 15:
        problems.append(f"too short to say what is wrong: {text!r}")
    if len(text) > 600:
        problems.append(f"too long ({len(text)} characters)")
    if text.count("\n") > 2:
        problems.append(f"{text.count(chr(10)) + 1} lines")
    raw = _RAW_EXCEPTION_PATTERNS.search(sentence)
    if raw:
        problems.append(f"looks like a raw library exception ({raw.group(0)!r})")
    return problems


# ---------------------------------------------------------------- corpus generation


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=False)
    return path


def _pixel_data_offset(data: bytes) -> int | None:
    """Offset of the Pixel Data element tag in an uncompressed-header file (None if absent)."""
    offset = data.rfind(PIXEL_DATA_TAG)
    return offset if offset > 132 else None


def _is_deflated(ds: Dataset) -> bool:
    return ds.file_meta.TransferSyntaxUID == pydicom.uid.DeflatedExplicitVRLittleEndian


def _frames(ds: Dataset) -> list[bytes]:
    return list(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1))))


def _even(data: bytes) -> bytes:
    return data if len(data) % 2 == 0 else data + b"\x00"


class _CorpusBuilder:
    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.items: list[Corruption] = []

    def add_bytes(self, name: str, data: bytes, expected: tuple[str, ...], may_load: bool = False) -> None:
        path = _write(self.out_dir / f"{name.replace('/', '__')}.dcm", data)
        self.items.append(Corruption(name, path, expected, may_load))

    def add_dataset(
        self, name: str, seed: Path, edit: Callable[[Dataset], None], expected: tuple[str, ...], may_load: bool = False
    ) -> None:
        ds = pydicom.dcmread(seed)
        edit(ds)
        path = _save(ds, self.out_dir / f"{name.replace('/', '__')}.dcm")
        self.items.append(Corruption(name, path, expected, may_load))


def _truncations(builder: _CorpusBuilder, label: str, seed: Path) -> None:
    """Cut the file at several offsets: in the preamble, the meta header, the dataset, the pixels."""
    data = seed.read_bytes()
    ds = pydicom.dcmread(seed)
    pixel_offset = _pixel_data_offset(data)
    cuts = {"preamble": 64, "meta": 150, "quarter": len(data) // 4}
    if pixel_offset and not _is_deflated(ds):
        cuts["pixel-tag"] = pixel_offset + 2
        cuts["pixel-data"] = pixel_offset + (len(data) - pixel_offset) // 2
    else:
        cuts["half"] = len(data) // 2
    encapsulated = ds.file_meta.TransferSyntaxUID.is_encapsulated
    if encapsulated:
        # Cut inside the last frame's fragment (before it: the 8-byte sequence delimiter).
        last_fragment = _frames(ds)[-1]
        cuts["last-frame"] = len(data) - 8 - len(last_fragment) // 2
    for where, offset in cuts.items():
        builder.add_bytes(f"{label}/truncated-{where}", data[:offset], FILE_ERRORS)
    # Without its last byte an encapsulated file loses only part of the sequence delimiter:
    # the pixel data is intact, so a reader may load it (likewise the end of a raw deflate stream).
    builder.add_bytes(f"{label}/truncated-last-byte", data[:-1], FILE_ERRORS, may_load=encapsulated or _is_deflated(ds))


def _frame_damage(builder: _CorpusBuilder, label: str, seed: Path) -> None:
    """Damage one encapsulated (compressed) frame: truncate it, garble it, drop it."""
    ds = pydicom.dcmread(seed)
    if not ds.file_meta.TransferSyntaxUID.is_encapsulated:
        return
    count = int(ds.NumberOfFrames)
    middle = count // 2
    rng = np.random.default_rng(7)

    def replace_frame(make: Callable[[bytes], bytes]) -> Callable[[Dataset], None]:
        def edit(target: Dataset) -> None:
            frames = _frames(target)
            frames[middle] = _even(make(frames[middle]))
            target.PixelData = encapsulate(frames, has_bot=True)

        return edit

    builder.add_dataset(
        f"{label}/frame-truncated", seed, replace_frame(lambda f: f[: max(2, len(f) // 3)]), PIXEL_ERRORS
    )
    builder.add_dataset(
        f"{label}/frame-garbage", seed, replace_frame(lambda f: rng.bytes(max(16, len(f)))), PIXEL_ERRORS
    )
    builder.add_dataset(f"{label}/frame-empty", seed, replace_frame(lambda f: b"\x00\x00"), PIXEL_ERRORS)

    def flip_middle(frame: bytes) -> bytes:
        garbled = bytearray(frame)
        for index in range(len(frame) // 3, 2 * len(frame) // 3):
            garbled[index] ^= 0x5A
        return bytes(garbled)

    # Garbled entropy-coded data can decode to other valid labels: no checksum can tell.
    builder.add_dataset(f"{label}/frame-bitflips", seed, replace_frame(flip_middle), PIXEL_ERRORS, may_load=True)

    def drop_frame(target: Dataset) -> None:
        frames = _frames(target)
        del frames[middle]
        target.PixelData = encapsulate(frames, has_bot=False)

    builder.add_dataset(f"{label}/frame-missing", seed, drop_frame, PIXEL_ERRORS)

    def lie_about_syntax(target: Dataset) -> None:
        target.file_meta.TransferSyntaxUID = (
            pydicom.uid.RLELossless
            if target.file_meta.TransferSyntaxUID != pydicom.uid.RLELossless
            else pydicom.uid.JPEGLSLossless
        )

    builder.add_dataset(f"{label}/syntax-lies", seed, lie_about_syntax, PIXEL_ERRORS)


#: Top-level elements (tag bytes, little endian) whose value length is made to swallow what follows.
_SWALLOWED = {
    "SOPClassUID": b"\x08\x00\x16\x00UI",
    "SegmentationType": b"\x62\x00\x01\x00CS",
    "Rows": b"\x28\x00\x10\x00US",
    "BitsAllocated": b"\x28\x00\x00\x01US",
}


def _swallowing_lengths(builder: _CorpusBuilder, label: str, seed: Path) -> None:
    """Raise a short element's 16-bit value length so its value swallows the next kilobytes of the file.

    What a fuzzer finds first: the reader then sees kilobytes of garbage as a UID, a code string or
    a list of numbers, and must still answer with a short, clear message.
    """
    data = seed.read_bytes()
    if _is_deflated(pydicom.dcmread(seed, stop_before_pixels=True)):
        return
    for keyword, prefix in _SWALLOWED.items():
        offset = data.find(prefix, 132)
        if offset < 0:
            continue
        length = min(4000, len(data) - offset - 8) & ~1
        damaged = data[: offset + 6] + length.to_bytes(2, "little") + data[offset + 8 :]
        builder.add_bytes(f"{label}/swallowing-{keyword}", damaged, ANY_ERROR)


def _meta_damage(builder: _CorpusBuilder, label: str, seed: Path) -> None:
    """Damage the file meta information: an unknown VR, a lying group length, a missing transfer syntax."""
    data = seed.read_bytes()
    media_class = data.find(b"\x02\x00\x02\x00UI", 132)
    if media_class > 0:
        damaged = data[: media_class + 4] + b"UA" + data[media_class + 6 :]
        # The dataset's own SOP Class UID still says what the file is: a reader may load it.
        builder.add_bytes(f"{label}/meta-unknown-vr", damaged, FILE_ERRORS, may_load=True)
        sop_class = damaged.find(b"\x08\x00\x16\x00UI", 132)
        if sop_class > 0:  # ... and with that one empty, the reader must fall back on the damaged meta element
            length = int.from_bytes(damaged[sop_class + 6 : sop_class + 8], "little")
            damaged = damaged[: sop_class + 6] + b"\x00\x00" + damaged[sop_class + 8 + length :]
            builder.add_bytes(f"{label}/meta-unknown-vr-no-sop-class", damaged, FILE_ERRORS)
    group_length = data.find(b"\x02\x00\x00\x00UL\x04\x00", 132)
    if group_length > 0:
        damaged = data[: group_length + 8] + (0xFFFFFFF0).to_bytes(4, "little") + data[group_length + 12 :]
        builder.add_bytes(f"{label}/meta-group-length-huge", damaged, FILE_ERRORS, may_load=True)
    syntax = data.find(b"\x02\x00\x10\x00UI", 132)
    if syntax > 0:
        length = int.from_bytes(data[syntax + 6 : syntax + 8], "little")
        unknown = b"1.2.3.4.5.6.7.8.9".ljust(length, b"\x00")[:length]
        damaged = data[: syntax + 8] + unknown + data[syntax + 8 + length :]
        builder.add_bytes(f"{label}/meta-unknown-transfer-syntax", damaged, ANY_ERROR)


def _delete(*keywords: str) -> Callable[[Dataset], None]:
    def edit(ds: Dataset) -> None:
        for keyword in keywords:
            if keyword in ds:
                delattr(ds, keyword)

    return edit


def _delete_functional(sequence: str, keyword: str) -> Callable[[Dataset], None]:
    """Delete ``keyword`` wherever it occurs in the shared or per-frame functional groups."""

    def edit(ds: Dataset) -> None:
        for group_sequence in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
            for group in ds.get(group_sequence, []):
                for item in group.get(sequence, []):
                    if keyword in item:
                        delattr(item, keyword)

    return edit


#: Type 1 attributes without which a LABELMAP SEG cannot be reconstructed.
MANDATORY_TOP_LEVEL = (
    "Rows",
    "Columns",
    "BitsAllocated",
    "NumberOfFrames",
    "SegmentationType",
    "SegmentSequence",
    "PerFrameFunctionalGroupsSequence",
    "PixelData",
)
#: Type 1 attributes a lenient reader may do without (a load is acceptable, a raw exception is not).
TOLERABLE_TOP_LEVEL = (
    "SOPClassUID",  # the file meta's Media Storage SOP Class UID still says what it is
    "PixelRepresentation",  # unsigned is the only value a SEG may have
    "SamplesPerPixel",  # 1 is the only value a SEG may have
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "FrameOfReferenceUID",
    "PhotometricInterpretation",
    "BitsStored",
    "HighBit",
    "DimensionIndexSequence",
    "ReferencedSeriesSequence",
)


def _header_damage(builder: _CorpusBuilder, label: str, seed: Path) -> None:
    """Edit header attributes: missing ones, lying sizes, wrong SOP class, broken geometry, segments."""
    for keyword in MANDATORY_TOP_LEVEL:
        builder.add_dataset(f"{label}/missing-{keyword}", seed, _delete(keyword), ANY_ERROR)
    for keyword in TOLERABLE_TOP_LEVEL:
        builder.add_dataset(f"{label}/missing-{keyword}", seed, _delete(keyword), ANY_ERROR, may_load=True)
    builder.add_dataset(
        f"{label}/missing-SharedFunctionalGroupsSequence",
        seed,
        _delete("SharedFunctionalGroupsSequence"),
        ANY_ERROR,
        may_load=True,  # a writer may put everything per frame; then a reader needs no shared groups
    )
    builder.add_dataset(
        f"{label}/missing-PixelSpacing",
        seed,
        _delete_functional("PixelMeasuresSequence", "PixelSpacing"),
        ANY_ERROR,
    )
    builder.add_dataset(
        f"{label}/missing-ImageOrientationPatient",
        seed,
        _delete_functional("PlaneOrientationSequence", "ImageOrientationPatient"),
        ANY_ERROR,
    )
    builder.add_dataset(
        f"{label}/missing-ImagePositionPatient",
        seed,
        _delete_functional("PlanePositionSequence", "ImagePositionPatient"),
        ANY_ERROR,
    )

    def set_value(keyword: str, value: object) -> Callable[[Dataset], None]:
        def edit(ds: Dataset) -> None:
            setattr(ds, keyword, value)

        return edit

    # Sizes: lying headers must not make the reader allocate what they claim.
    builder.add_dataset(f"{label}/giant-rows", seed, set_value("Rows", 65535), SIZE_ERRORS)
    builder.add_dataset(f"{label}/giant-columns", seed, set_value("Columns", 65535), SIZE_ERRORS)

    def giant_everything(ds: Dataset) -> None:
        ds.Rows, ds.Columns, ds.NumberOfFrames = 65535, 65535, 2_000_000_000

    builder.add_dataset(f"{label}/giant-all", seed, giant_everything, SIZE_ERRORS)
    builder.add_dataset(f"{label}/giant-frames", seed, set_value("NumberOfFrames", 2_000_000_000), SIZE_ERRORS)
    builder.add_dataset(f"{label}/frames-plus-one", seed, _number_of_frames_delta(+1), PIXEL_ERRORS)
    builder.add_dataset(f"{label}/frames-minus-one", seed, _number_of_frames_delta(-1), PIXEL_ERRORS)
    builder.add_dataset(f"{label}/frames-zero", seed, set_value("NumberOfFrames", 0), ANY_ERROR)
    builder.add_dataset(f"{label}/rows-zero", seed, set_value("Rows", 0), ANY_ERROR)
    builder.add_dataset(f"{label}/bits-allocated-12", seed, set_value("BitsAllocated", 12), ANY_ERROR)
    builder.add_dataset(f"{label}/bits-allocated-64", seed, set_value("BitsAllocated", 64), ANY_ERROR)
    builder.add_dataset(f"{label}/samples-per-pixel-3", seed, set_value("SamplesPerPixel", 3), ANY_ERROR)
    # Pixel attributes a segmentation type fixes (values >= 128 of a signed FRACTIONAL turn negative, ...).
    builder.add_dataset(f"{label}/pixel-representation-1", seed, set_value("PixelRepresentation", 1), FILE_ERRORS)
    builder.add_dataset(f"{label}/bits-stored-lower", seed, _bits_stored_lower, FILE_ERRORS)
    builder.add_dataset(f"{label}/high-bit-0", seed, _high_bit_zero, FILE_ERRORS)
    builder.add_dataset(
        f"{label}/photometric-monochrome1", seed, set_value("PhotometricInterpretation", "MONOCHROME1"), FILE_ERRORS
    )
    builder.add_dataset(f"{label}/photometric-rgb", seed, set_value("PhotometricInterpretation", "RGB"), FILE_ERRORS)

    # SOP class and segmentation type.
    builder.add_dataset(
        f"{label}/sop-class-ct", seed, set_value("SOPClassUID", pydicom.uid.CTImageStorage), UNSUPPORTED_ERRORS
    )
    builder.add_dataset(f"{label}/sop-class-garbage", seed, set_value("SOPClassUID", "1.2.3.4"), UNSUPPORTED_ERRORS)
    builder.add_dataset(
        f"{label}/segmentation-type-unknown", seed, set_value("SegmentationType", "SPARSE"), UNSUPPORTED_ERRORS
    )

    # Geometry: per-frame functional groups that disagree with the frames.
    builder.add_dataset(f"{label}/per-frame-groups-short", seed, _per_frame_groups_short, ANY_ERROR)
    header = pydicom.dcmread(seed, stop_before_pixels=True)
    if int(header.get("NumberOfFrames", 1)) >= 3:  # two positions always span a (maybe sheared) grid
        builder.add_dataset(f"{label}/positions-off-grid", seed, _positions_off_grid, GEOMETRY_ERRORS)
    if int(header.get("NumberOfFrames", 1)) >= 2:
        # BINARY frames of one segment at one position may be merged; LABELMAP frames must not collide.
        lenient = header.get("SegmentationType") != "LABELMAP"
        builder.add_dataset(f"{label}/positions-duplicate", seed, _positions_duplicate, ANY_ERROR, may_load=lenient)
    builder.add_dataset(f"{label}/positions-garbage", seed, _positions_garbage, ANY_ERROR)
    if int(header.get("NumberOfFrames", 1)) >= 2:  # a sparse grid of millions of empty slices is refused
        builder.add_dataset(
            f"{label}/positions-millions-of-slices-apart", seed, _positions_far_apart, SIZE_ERRORS + GEOMETRY_ERRORS
        )
    builder.add_dataset(f"{label}/orientation-degenerate", seed, _orientation_degenerate, ANY_ERROR)
    builder.add_dataset(f"{label}/spacing-zero", seed, _spacing_zero, ANY_ERROR)

    # Segments: undescribed, duplicated, impossible numbers.
    builder.add_dataset(f"{label}/segment-undescribed", seed, _drop_last_segment, SEGMENT_ERRORS)
    builder.add_dataset(f"{label}/segment-sequence-empty", seed, _empty_segment_sequence, SEGMENT_ERRORS)
    builder.add_dataset(f"{label}/segment-duplicate-number", seed, _duplicate_segment_number, ANY_ERROR)
    builder.add_dataset(f"{label}/segment-number-huge", seed, _segment_number_beyond_bits, ANY_ERROR, may_load=True)
    builder.add_dataset(f"{label}/segment-missing-number", seed, _segment_without_number, ANY_ERROR)


def _number_of_frames_delta(delta: int) -> Callable[[Dataset], None]:
    def edit(ds: Dataset) -> None:
        ds.NumberOfFrames = max(1, int(ds.NumberOfFrames) + delta)

    return edit


def _per_frame_groups_short(ds: Dataset) -> None:
    ds.PerFrameFunctionalGroupsSequence = ds.PerFrameFunctionalGroupsSequence[:-1]


def _frame_positions(ds: Dataset) -> list[Dataset]:
    return [
        group.PlanePositionSequence[0]
        for group in ds.PerFrameFunctionalGroupsSequence
        if "PlanePositionSequence" in group
    ]


def _positions_off_grid(ds: Dataset) -> None:
    target = _frame_positions(ds)[-1]
    x, y, z = (float(v) for v in target.ImagePositionPatient)
    # Move the last frame a third of a slice along every axis: no regular grid holds it.
    target.ImagePositionPatient = [x + 0.37, y - 0.29, z + 0.41]


def _positions_duplicate(ds: Dataset) -> None:
    positions = _frame_positions(ds)
    positions[-1].ImagePositionPatient = list(positions[0].ImagePositionPatient)


def _bits_stored_lower(ds: Dataset) -> None:
    bits = int(ds.BitsAllocated)
    if bits > 1:
        ds.BitsStored, ds.HighBit = bits - 1, bits - 2
    else:  # BINARY: Bits Stored 1 is the only value; a lie the other way
        ds.BitsStored, ds.HighBit = 8, 7


def _high_bit_zero(ds: Dataset) -> None:
    ds.HighBit = 0 if int(ds.BitsAllocated) > 1 else 7


def _positions_far_apart(ds: Dataset) -> None:
    """The last frame moved 6.7 million slice spacings away along the slice normal."""
    items = _frame_positions(ds)
    first, last = (np.array([float(v) for v in item.ImagePositionPatient]) for item in (items[0], items[-1]))
    step = last - first
    if not np.any(step):
        step = np.array([0.0, 0.0, 1.0])
    far = last + step / max(len(items) - 1, 1) * 6_700_000
    items[-1].ImagePositionPatient = [f"{v:.12g}"[:16] for v in far]


def _positions_garbage(ds: Dataset) -> None:
    for position in _frame_positions(ds):
        position.ImagePositionPatient = ["nan", "inf", "1e308"]


def _orientation_degenerate(ds: Dataset) -> None:
    for group_sequence in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for group in ds.get(group_sequence, []):
            for item in group.get("PlaneOrientationSequence", []):
                item.ImageOrientationPatient = [1, 0, 0, 1, 0, 0]


def _spacing_zero(ds: Dataset) -> None:
    for group_sequence in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for group in ds.get(group_sequence, []):
            for item in group.get("PixelMeasuresSequence", []):
                item.PixelSpacing = [0, 0]


def _drop_last_segment(ds: Dataset) -> None:
    # Keep the segment sequence non-empty; drop the highest-numbered described segment.
    numbered = sorted(ds.SegmentSequence, key=lambda item: int(item.SegmentNumber))
    keep = [item for item in numbered if item is not numbered[-1]]
    if not keep:
        numbered[-1].SegmentNumber = int(numbered[-1].SegmentNumber) + 1
        return
    ds.SegmentSequence = keep


def _empty_segment_sequence(ds: Dataset) -> None:
    ds.SegmentSequence = []


def _duplicate_segment_number(ds: Dataset) -> None:
    items = list(ds.SegmentSequence)
    if len(items) >= 2:
        items[1].SegmentNumber = items[0].SegmentNumber
    else:
        duplicate = Dataset()
        duplicate.update(items[0])
        ds.SegmentSequence.append(duplicate)


def _segment_number_beyond_bits(ds: Dataset) -> None:
    extra = Dataset()
    extra.update(ds.SegmentSequence[0])
    extra.SegmentNumber = 65535 if int(ds.BitsAllocated) == 8 else 65534
    ds.SegmentSequence.append(extra)


def _segment_without_number(ds: Dataset) -> None:
    del ds.SegmentSequence[0].SegmentNumber


def _non_dicom(builder: _CorpusBuilder) -> None:
    rng = np.random.default_rng(11)
    builder.add_bytes("bytes/empty-file", b"", FILE_ERRORS)
    builder.add_bytes("bytes/text", b"This is a text file, not DICOM.\n" * 20, FILE_ERRORS)
    builder.add_bytes("bytes/random", rng.bytes(4096), FILE_ERRORS)
    builder.add_bytes("bytes/png", b"\x89PNG\r\n\x1a\n" + rng.bytes(200), FILE_ERRORS)
    builder.add_bytes("bytes/preamble-only", b"\x00" * 128 + b"DICM", FILE_ERRORS)
    builder.add_bytes("bytes/zeros", b"\x00" * 8192, FILE_ERRORS)
    # A valid-looking meta header followed by nothing, and one followed by random bytes.
    meta = b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\x14\x001.2.840.10008.1.2.1\x00"
    builder.add_bytes("bytes/meta-only", meta, FILE_ERRORS)
    builder.add_bytes("bytes/meta-then-random", meta + rng.bytes(2048), FILE_ERRORS)
    # An element claiming a 4 GB value length.
    builder.add_bytes("bytes/giant-length", meta + b"\x08\x00\x16\x00UN\x00\x00\xf0\xff\xff\xff" + b"1.2", FILE_ERRORS)
    # Deep nesting of undefined-length sequences.
    open_sequence_item = b"\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff\xfe\xff\x00\xe0\xff\xff\xff\xff"
    nested = open_sequence_item * 2000
    builder.add_bytes("bytes/deep-nesting", meta + nested, FILE_ERRORS)


def _folders(builder: _CorpusBuilder, other_dicom: Path | None) -> None:
    """Folders without any readable SEG: empty, only non-DICOM files, only damaged or other DICOM."""

    def folder(name: str, files: dict[str, bytes], expected: tuple[str, ...] = FILE_ERRORS) -> Path:
        path = builder.out_dir / name.replace("/", "__")
        path.mkdir(parents=True, exist_ok=True)
        for file_name, data in files.items():
            _write(path / file_name, data)
        builder.items.append(Corruption(name, path, expected))
        return path

    folder("folder/empty", {})
    folder("folder/not-dicom", {"notes.txt": b"no DICOM here\n", "image.png": b"\x89PNG\r\n\x1a\n" + bytes(64)})
    folder("folder/damaged-seg", {"seg.dcm": b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI"})
    loop = folder("folder/symlink-loop", {"readme.txt": b"a folder that contains itself\n"})
    try:
        (loop / "again").symlink_to(loop, target_is_directory=True)
    except OSError:  # no symlinks on this file system: the folder is still a valid case
        pass
    if other_dicom is not None:
        folder("folder/only-other-dicom", {"ct.dcm": other_dicom.read_bytes()})


def generate_corpus(
    seeds: dict[str, Path],
    out_dir: Path,
    header_seeds: Iterable[str] | None = None,
    other_dicom: Path | None = None,
) -> list[Corruption]:
    """Write the damaged files made from ``seeds`` (label -> valid file) into ``out_dir``.

    Every seed gets truncations (and frame damage if compressed); the seeds named in
    ``header_seeds`` (default: all) also get every header edit. Non-DICOM inputs and
    folders without a SEG (``other_dicom``: a valid non-SEG DICOM file to put in one) are added once.
    """
    builder = _CorpusBuilder(out_dir)
    chosen = set(seeds if header_seeds is None else header_seeds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid values written on purpose
        for label, seed in seeds.items():
            _truncations(builder, label, seed)
            _meta_damage(builder, label, seed)
            _frame_damage(builder, label, seed)
            if label in chosen:
                _header_damage(builder, label, seed)
                _swallowing_lengths(builder, label, seed)
        _non_dicom(builder)
        _folders(builder, other_dicom)
    return builder.items


# ---------------------------------------------------------------- seeds

#: Valid LABELMAP files of other tools in the shared data folder, used as seeds.
SHARED_SEEDS = {
    "dcmqi-ppv5": "dcmqi/sparse-labelmap-ppv5.dcm",
    "dcmqi-noppv": "dcmqi/sparse-labelmap-noppv.dcm",
    "dcmqi-binary": "dcmqi/liver.dcm",
    "highdicom-binary": "highdicom/seg_image_ct_binary.dcm",
}


#: Our own outputs used as seeds: label -> (transfer syntax, palette color, label values of the layer).
OUR_SEEDS = {
    "ours-explicit-u8": ("explicit", False, (1, 2, 3)),
    "ours-jpegls-u8": ("jpeg-ls", False, (1, 2, 3)),
    "ours-jpegls-palette": ("jpeg-ls", True, (2, 5, 7)),
    "ours-rle-u16": ("rle", False, (1, 2, 300)),
    "ours-jpeg2000-u8": ("jpeg2000", False, (1, 2, 3)),
    "ours-deflated-u8": ("deflated", False, (1, 2, 3)),
}


def write_our_seeds(out_dir: Path, shape: tuple[int, int, int] = (4, 10, 12)) -> dict[str, Path]:
    """Write small valid SEG files with our writer (one per :data:`OUR_SEEDS` entry); label -> path."""
    from DICOMLabelmapSegLib.dicom.options import ExportOptions
    from DICOMLabelmapSegLib.dicom.source import geometry_from_source, read_source_series
    from DICOMLabelmapSegLib.dicom.writer import write_labelmap_seg
    from synthetic import make_ct_series, make_segmentation

    ct_files = make_ct_series(out_dir / "ct", shape=shape)
    source = read_source_series(ct_files)
    geometry = geometry_from_source(source)
    seeds: dict[str, Path] = {}
    for index, (label, (syntax, palette, values)) in enumerate(OUR_SEEDS.items()):
        segmentation = make_segmentation(geometry, layers=[values], seed=index)
        options = ExportOptions(transfer_syntax=syntax, palette_color=palette)
        (written,) = write_labelmap_seg(segmentation, source, out_dir / "written" / label, options)
        seeds[label] = _write(out_dir / f"{label}.dcm", written.read_bytes())
    return seeds


def write_seeds(out_dir: Path, data_dir: Path | None = None, max_size: int | None = 65536) -> dict[str, Path]:
    """All seeds (ours, and the shared samples when ``data_dir`` is known) no larger than ``max_size`` bytes."""
    if data_dir is None:
        from conftest import DATA_DIR

        data_dir = DATA_DIR
    seeds = {**write_our_seeds(out_dir / "ours"), **write_shared_seeds(out_dir / "shared", data_dir)}
    return {label: path for label, path in seeds.items() if max_size is None or path.stat().st_size <= max_size}


def write_shared_seeds(out_dir: Path, data_dir: Path | None) -> dict[str, Path]:
    """Copy the shared sample seeds that exist into ``out_dir`` (label -> path)."""
    seeds: dict[str, Path] = {}
    if data_dir is None:
        return seeds
    for label, relative in SHARED_SEEDS.items():
        source = Path(data_dir) / relative
        if source.is_file():
            seeds[label] = _write(out_dir / f"{label}.dcm", source.read_bytes())
    return seeds


# ---------------------------------------------------------------- guarded reading


@dataclass(frozen=True)
class Outcome:
    """What reading one file did."""

    status: str  # "ok", "error", "crash", "hang"
    error_type: str | None = None
    error_mro: tuple[str, ...] = ()
    message: str = ""
    seconds: float = 0.0
    peak_mb: float = 0.0  # peak of Python and numpy allocations (tracemalloc; 0 when not traced)
    rss_mb: float = 0.0  # peak resident memory of the worker process during the read (VmHWM)

    def is_error(self, names: Iterable[str]) -> bool:
        """True if reading raised an error of one of the named classes."""
        return self.status == "error" and bool(set(names) & set(self.error_mro))


class GuardedReader:
    """Reads files in a worker subprocess with a time bound and an address-space limit.

    A worker that crashes or exceeds ``timeout`` seconds on a file is killed and replaced;
    that file's outcome says so. Use as a context manager.
    """

    def __init__(self, timeout: float = 10.0, address_space_mb: int = 3072, startup_grace: float = 5.0) -> None:
        self.timeout = timeout
        self.address_space_mb = address_space_mb
        self.startup_grace = startup_grace
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> GuardedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> subprocess.Popen[str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(LIBRARY_DIR), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
        limit = self.address_space_mb * 1024 * 1024

        def limit_memory() -> None:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

        return subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
            preexec_fn=limit_memory,
        )

    def close(self) -> None:
        """Stop the worker."""
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait()
            self._process = None

    def read(self, path: Path | str, trace: bool = False) -> Outcome:
        """Read one file (or folder) in the worker and return what happened.

        ``trace`` also measures the peak of every allocation with tracemalloc (about five times
        slower): it sees arrays whose pages were never touched, which resident memory does not.
        """
        if self._process is None or self._process.poll() is not None:
            self._process = self._start()
        process = self._process
        assert process.stdin is not None and process.stdout is not None
        start = time.monotonic()
        process.stdin.write(json.dumps({"path": str(path), "trace": trace}) + "\n")
        process.stdin.flush()
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            # The first read of a fresh worker also pays for importing the library.
            ready = selector.select(self.timeout + self.startup_grace)
        if not ready:
            self.close()
            return Outcome("hang", seconds=time.monotonic() - start)
        line = process.stdout.readline()
        if not line:
            code = process.wait()
            self._process = None
            return Outcome("crash", message=f"worker exited with code {code}", seconds=time.monotonic() - start)
        reply = json.loads(line)
        return Outcome(
            reply["status"],
            reply.get("error_type"),
            tuple(reply.get("error_mro", ())),
            reply.get("message", ""),
            reply["seconds"],
            reply["peak_mb"],
            reply["rss_mb"],
        )


def _resident_peak_mb() -> float:
    """Peak resident memory of this process since the last :func:`_reset_resident_peak` (Linux)."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) / 1024
    except (OSError, IndexError, ValueError):
        return 0.0


def _reset_resident_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _worker() -> None:
    """Read paths from stdin (JSON lines), answer outcomes on stdout (JSON lines)."""
    import tracemalloc
    import warnings

    from DICOMLabelmapSegLib.dicom import reader
    warnings.simplefilter("ignore")
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("trace"):
            tracemalloc.start()
        _reset_resident_peak()
        start = time.perf_counter()
        reply: dict[str, object]
        try:
            reader.read_segmentation(request["path"])
            reply = {"status": "ok"}
        except BaseException as error:  # noqa: B036 - the worker reports everything, even MemoryError
            reply = {
                "status": "error",
                "error_type": type(error).__name__,
                "error_mro": [cls.__name__ for cls in type(error).__mro__],
                "message": str(error),
            }
        reply["seconds"] = time.perf_counter() - start
        reply["rss_mb"] = _resident_peak_mb()
        reply["peak_mb"] = tracemalloc.get_traced_memory()[1] / 1e6 if tracemalloc.is_tracing() else 0.0
        tracemalloc.stop()
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    _worker()
