"""Frame decoding of SEG pixel data, straight into a preallocated label volume.

The reader places frames by their positions, so decoding takes a target slice index per
frame. Encapsulated Pixel Data is split into frames by walking its fragments
(:func:`frame_fragments`; offset tables are used only when a frame spans several fragments,
and only after they are checked), and each frame is decoded by its transfer syntax's codec
from the registry (:mod:`.syntax`, :mod:`.codecs`), which checks the frame's own header
(size, bit depth, components, lossless coding) against Rows x Columns x Bits Allocated.
Syntaxes without a codec here go through pydicom's decoder plugins. Native pixel data is
viewed with :func:`numpy.frombuffer`. Every codec failure becomes a
:class:`~.errors.CorruptPixelDataError` naming the frame.

Lossy transfer syntaxes and Lossy Image Compression "01" are refused for LABELMAP and BINARY
unless the caller allows them (:func:`check_lossless`): a lossy code stream changes label values
without a trace.

While decoding, a histogram of label values is accumulated so that the reader can check
for undescribed labels without another pass over the volume.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.uid import UID

from ..errors import CorruptPixelDataError, LabelmapSegError, LossyPixelDataError, MissingCodecError
from ..model import label_counts, present_labels
from .codecs import FrameError, FrameFormat, LossyFrameError
from .syntax import PixelStorage, SyntaxRow, TransferSyntax, may_be_lossy, row_for_uid

logger = logging.getLogger(__name__)

_NATIVE_BIG_ENDIAN = "1.2.840.10008.1.2.2"
_JPEG_LS_NEAR_LOSSLESS = "1.2.840.10008.1.2.4.81"

#: Below this many voxels, decoding is done in the calling thread (a pool costs more than it saves).
_PARALLEL_MIN_VOXELS = 2_000_000

_ITEM = b"\xfe\xff\x00\xe0"
_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0"


@dataclass(frozen=True)
class FrameLayout:
    """What the header says one frame looks like."""

    rows: int
    columns: int
    bits_allocated: int
    number_of_frames: int

    @property
    def dtype(self) -> np.dtype:
        """The numpy dtype of one decoded pixel."""
        return np.dtype("<u2") if self.bits_allocated == 16 else np.dtype(np.uint8)

    @property
    def frame_bytes(self) -> int:
        """Bytes of one decoded frame (a 1-bit frame padded to a whole byte)."""
        return (self.rows * self.columns * self.bits_allocated + 7) // 8

    def frame(self, allow_lossy: bool = False) -> FrameFormat:
        """One frame's format for the codecs (``allow_lossy``: accept lossy code streams)."""
        return FrameFormat(self.rows, self.columns, self.bits_allocated, allow_lossy)


def is_native(transfer_syntax_uid: str) -> bool:
    """True if pixel data of this transfer syntax is stored uncompressed (also whole-data-set deflate)."""
    row = row_for_uid(transfer_syntax_uid)
    return row is not None and row.storage in (PixelStorage.NATIVE, PixelStorage.DATASET_DEFLATE)


def syntax_name(transfer_syntax_uid: str) -> str:
    """A readable name of a transfer syntax UID."""
    row = row_for_uid(transfer_syntax_uid)
    if row is not None:
        return row.label
    name = UID(transfer_syntax_uid).name
    return name if name and name != transfer_syntax_uid else f"unknown transfer syntax {transfer_syntax_uid}"


def require_decoder(transfer_syntax_uid: str) -> None:
    """Raise MissingCodecError (naming the pip package) if frames of this syntax cannot be decoded here."""
    row = row_for_uid(transfer_syntax_uid)
    if row is not None and row.storage != PixelStorage.ENCAPSULATED:
        return
    if row is not None and row.codec is not None:
        from .syntax import missing_packages

        missing = missing_packages(row.codec.decoder_modules)
        if missing:
            raise MissingCodecError(
                f"To read {row.label} the Python package '{missing[0]}' is needed but not installed. "
                f"Install it with: pip install {missing[0]}"
            )
        return
    decoder = _pydicom_decoder(transfer_syntax_uid)
    if not decoder.is_available:
        missing_text = "; ".join(decoder.missing_dependencies) or "a pydicom pixel data plugin"
        raise MissingCodecError(
            f"Pixel data in {syntax_name(transfer_syntax_uid)} cannot be decoded: no decoder is installed "
            f"(options: {missing_text}). Install one of them, e.g. pip install pylibjpeg pylibjpeg-libjpeg."
        )


def _pydicom_decoder(transfer_syntax_uid: str):  # noqa: ANN202 - pydicom's Decoder type is private
    from pydicom.pixels import get_decoder

    try:
        return get_decoder(transfer_syntax_uid)
    except NotImplementedError as error:
        raise MissingCodecError(
            f"Pixel data in {syntax_name(transfer_syntax_uid)} cannot be decoded by pydicom or this library; "
            "convert the file to an uncompressed or lossless syntax first (e.g. with dcmconv or gdcmconv)."
        ) from error


def check_lossless(ds: pydicom.Dataset, where: str, kind: str, allow_lossy: bool = False) -> None:
    """Refuse label or binary pixel data that may have been coded lossily, unless ``allow_lossy``.

    Lossy means a transfer syntax that allows lossy coding (JPEG baseline, JPEG-LS near-lossless
    unless every frame states NEAR = 0, JPEG 2000 / HTJ2K / JPEG XL without "lossless only", video)
    or Lossy Image Compression "01".
    With ``allow_lossy`` the data is read with a warning that labels may be wrong.

    Raises
    ------
    LossyPixelDataError
        One line naming the file, the reason and the option that reads it anyway.
    """
    uid = str(ds.file_meta.TransferSyntaxUID)
    reasons = []
    if may_be_lossy(uid) and not _near_lossless_with_near_zero(ds, uid):
        reasons.append(f"its transfer syntax {syntax_name(uid)} ({uid}) allows lossy compression")
    if str(ds.get("LossyImageCompression", "") or "").strip() == "01":
        reasons.append('Lossy Image Compression is "01"')
    if not reasons:
        return
    reason = " and ".join(reasons)
    if allow_lossy:
        logger.warning("%s: %s; read anyway as asked: label values may be wrong.", where, reason)
        return
    raise LossyPixelDataError(
        f"{where} holds {kind} pixel data that may have been compressed lossily ({reason}): label values may be "
        "wrong. Ask for a lossless export, or read it anyway with allow_lossy=True (--allow-lossy)."
    )


def _near_lossless_with_near_zero(ds: pydicom.Dataset, uid: str) -> bool:
    """True for JPEG-LS near-lossless data whose every frame states NEAR = 0: that is exact (ITU-T T.87)."""
    if uid != _JPEG_LS_NEAR_LOSSLESS:
        return False
    from .codecs import jpeg_ls_header

    try:
        layout = FrameLayout(int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated), int(ds.get("NumberOfFrames", 1)))
        exact = all(jpeg_ls_header(fragment).near == 0 for fragment in frame_fragments(ds, layout))
    except (FrameError, LabelmapSegError, ValueError, TypeError):
        return False  # damaged: the decoder says why later
    if exact:
        logger.info("JPEG-LS near-lossless data with NEAR = 0 in every frame: exact, read as lossless.")
    return exact


# ---------------------------------------------------------------------------- encapsulated frames


def _fragments(pixel_data: bytes) -> tuple[list[int], list[tuple[int, int, int]]]:
    """The Basic Offset Table and the fragments of encapsulated Pixel Data.

    Returns the offsets of the Basic Offset Table (may be empty) and, per fragment, its
    offset from the first fragment's item tag (as offset tables count), the start of its
    value in ``pixel_data`` and its length.
    """
    data = memoryview(pixel_data)
    if len(data) < 8 or bytes(data[:4]) != _ITEM:
        raise CorruptPixelDataError("The encapsulated Pixel Data does not start with a Basic Offset Table item; "
                                    "the file is damaged. Export it again.")
    length = struct.unpack_from("<I", data, 4)[0]
    if length % 4 or 8 + length > len(data):
        raise CorruptPixelDataError(f"The Basic Offset Table of the Pixel Data has an invalid length ({length}); "
                                    "the file is damaged. Export it again.")
    table = list(struct.unpack_from(f"<{length // 4}I", data, 8))
    first = position = 8 + length
    fragments: list[tuple[int, int, int]] = []
    while position + 8 <= len(data):
        tag = bytes(data[position : position + 4])
        if tag == _SEQUENCE_DELIMITER:
            break
        if tag != _ITEM:
            raise CorruptPixelDataError(f"The encapsulated Pixel Data has no item tag at byte {position}; the file "
                                        "is damaged or truncated. Export it again.")
        length = struct.unpack_from("<I", data, position + 4)[0]
        if position + 8 + length > len(data):
            raise CorruptPixelDataError(f"Fragment {len(fragments) + 1} of the Pixel Data runs past its end; the "
                                        "file is truncated. Export it again.")
        fragments.append((position - first, position + 8, length))
        position += 8 + length
    return table, fragments


def _checked_table(offsets: Sequence[int], lengths: Sequence[int] | None, fragments: list[tuple[int, int, int]],
                   frames: int, name: str) -> list[int] | None:
    """Per frame, the index of its first fragment, if ``offsets`` is a valid table for ``frames``; else None.

    Valid: one offset per frame, the first 0, strictly increasing, each at a fragment's item
    tag, and (with ``lengths``) each frame's length within its fragments.
    """
    starts = {offset: index for index, (offset, _, _) in enumerate(fragments)}
    if len(offsets) != frames or not offsets or offsets[0] != 0:
        return None
    if any(b <= a for a, b in zip(offsets, offsets[1:])) or any(offset not in starts for offset in offsets):
        logger.warning("The %s of the Pixel Data is not increasing or points between fragments; it is ignored.",
                       name)
        return None
    firsts = [starts[offset] for offset in offsets]
    if lengths is not None:
        if len(lengths) != frames:
            return None
        for k, first in enumerate(firsts):
            end = firsts[k + 1] if k + 1 < frames else len(fragments)
            span = sum(length for _, _, length in fragments[first:end])
            if not 0 < lengths[k] <= span:
                logger.warning("The %s of the Pixel Data gives frame %d a length beyond its fragments; it is ignored.",
                               name, k + 1)
                return None
    return firsts


def _ends_with_end_marker(pixel_data: memoryview, start: int, length: int) -> bool:
    """True if a fragment ends with a JPEG EOI / JPEG 2000 EOC marker (FFD9), maybe followed by one padding byte."""
    tail = bytes(pixel_data[max(start, start + length - 3) : start + length])
    return tail.endswith(b"\xff\xd9") or tail.endswith(b"\xff\xd9\x00")


def frame_fragments(ds: pydicom.Dataset, layout: FrameLayout) -> list[bytes | memoryview]:
    """The compressed bytes of every frame of encapsulated Pixel Data, in file order.

    With one fragment per frame (what this library and Supplement 244 write) the fragments
    are the frames and offset tables are not followed. With more fragments, a frame starts
    where the Extended Offset Table says (or else the Basic Offset Table), only if that table
    is valid (:func:`_checked_table`); else, for JPEG-family syntaxes, a frame ends at a
    fragment that ends with an end-of-image marker.

    Raises
    ------
    CorruptPixelDataError
        The fragments cannot be split into Number of Frames frames.
    """
    pixel_data = ds.PixelData
    table, fragments = _fragments(pixel_data)
    frames = layout.number_of_frames
    view = memoryview(pixel_data)
    if len(fragments) == frames:
        if table and _checked_table(table, None, fragments, frames, "Basic Offset Table") is None:
            logger.info("The Basic Offset Table does not match the fragments (one per frame); it is ignored.")
        return [view[start : start + length] for _, start, length in fragments]
    if len(fragments) < frames:
        raise CorruptPixelDataError(
            f"Number of Frames says {frames} but the encapsulated Pixel Data holds {len(fragments)} fragments. "
            "The file is damaged or truncated; export it again."
        )
    firsts = None
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        try:
            offsets = list(struct.unpack(f"<{len(ds.ExtendedOffsetTable) // 8}Q", ds.ExtendedOffsetTable))
            lengths = list(struct.unpack(f"<{len(ds.ExtendedOffsetTableLengths) // 8}Q",
                                         ds.ExtendedOffsetTableLengths))
        except (struct.error, TypeError):
            offsets, lengths = [], []
        firsts = _checked_table(offsets, lengths, fragments, frames, "Extended Offset Table")
    if firsts is None and table:
        firsts = _checked_table(table, None, fragments, frames, "Basic Offset Table")
    if firsts is None:
        row = row_for_uid(str(ds.file_meta.TransferSyntaxUID))
        if row is not None and (row.codec is None or row.codec.ends_with_marker):  # JPEG family
            ends = [i for i, (_, start, length) in enumerate(fragments) if _ends_with_end_marker(view, start, length)]
            if len(ends) == frames and ends[-1] == len(fragments) - 1:
                firsts = [0, *(end + 1 for end in ends[:-1])]
    if firsts is None:
        raise CorruptPixelDataError(
            f"The encapsulated Pixel Data holds {len(fragments)} fragments for {frames} frames and no valid offset "
            "table says where each frame starts. The file is damaged; export it again."
        )
    result: list[bytes | memoryview] = []
    for k, first in enumerate(firsts):
        end = firsts[k + 1] if k + 1 < frames else len(fragments)
        parts = fragments[first:end]
        result.append(view[parts[0][1] : parts[0][1] + parts[0][2]] if len(parts) == 1
                      else b"".join(bytes(view[start : start + length]) for _, start, length in parts))
    return result


def check_first_frame(ds: pydicom.Dataset, layout: FrameLayout, allow_lossy: bool = False) -> None:
    """Compare the first compressed frame's own header with Rows and Columns, before anything is allocated.

    JPEG-LS and JPEG 2000 code streams state their size; a header that lies about the frame
    size is rejected here instead of after allocating the volume it claims. (Every frame is
    checked again when it is decoded.)
    """
    row = row_for_uid(str(ds.file_meta.TransferSyntaxUID))
    if row is None or row.codec is None:
        return
    first = frame_fragments(ds, layout)[0]
    try:
        row.codec.check_header(first, layout.frame(allow_lossy))
    except LossyFrameError as error:
        raise _lossy_frame(1, layout.number_of_frames, error) from error
    except FrameError as error:
        raise CorruptPixelDataError(
            f"Frame 1 of {layout.number_of_frames}: {error}. The header does not match the pixel data; export the "
            "file again."
        ) from error


def _lossy_frame(number: int, count: int, error: FrameError) -> LossyPixelDataError:
    return LossyPixelDataError(
        f"Frame {number} of {count}: {error}. Ask for a lossless export, or read it anyway with allow_lossy=True "
        "(--allow-lossy)."
    )


def _frame_decoder(ds: pydicom.Dataset, row: SyntaxRow | None, layout: FrameLayout,
                   allow_lossy: bool) -> Callable[[int, bytes | memoryview, np.ndarray], None]:
    """A function (frame index, fragment bytes, 2D target) that decodes one frame into the target."""
    shape = (layout.rows, layout.columns)
    if row is not None and row.codec is not None:
        try:
            decode = row.codec.decoder(layout.frame(allow_lossy))

            def decode_with_codec(_index: int, fragment: bytes | memoryview, target: np.ndarray) -> None:
                target[...] = decode(fragment)

            return decode_with_codec
        except ImportError:  # an optional binding is missing (pylibjpeg-rle): pydicom's own decoder below
            pass

    decoder = _pydicom_decoder(str(ds.file_meta.TransferSyntaxUID))

    def decode_with_pydicom(frame_index: int, fragment: bytes | memoryview, target: np.ndarray) -> None:
        array, _ = decoder.as_array(ds, index=frame_index, as_rgb=False)
        array = np.asarray(array)
        if array.shape != shape:
            raise FrameError(f"it decodes to shape {array.shape} but Rows x Columns say {shape}")
        target[...] = array

    return decode_with_pydicom


def _decoding_threads(row: SyntaxRow | None, layout: FrameLayout, workers: int) -> int:
    workers = workers or os.cpu_count() or 1
    if row is None or row.codec is None or not row.codec.decoder_releases_gil():
        return 1
    if layout.number_of_frames < 2 or layout.number_of_frames * layout.rows * layout.columns < _PARALLEL_MIN_VOXELS:
        return 1
    return workers


def _run_frames(ds: pydicom.Dataset, layout: FrameLayout, workers: int, allow_lossy: bool,
                target: Callable[[int], np.ndarray], store: Callable[[int, np.ndarray], None]) -> None:
    """Decode every frame into ``target(frame index)``, then call ``store(frame index, that target)``.

    ``store`` runs on the decoding threads (each frame on one).
    """
    uid = str(ds.file_meta.TransferSyntaxUID)
    require_decoder(uid)
    row = row_for_uid(uid)
    fragments = frame_fragments(ds, layout)
    decode = _frame_decoder(ds, row, layout, allow_lossy)
    n = layout.number_of_frames

    def run(frame_indices: range) -> None:
        for f in frame_indices:
            frame = target(f)
            try:
                decode(f, fragments[f], frame)
            except LossyFrameError as error:
                raise _lossy_frame(f + 1, n, error) from error
            except FrameError as error:
                raise CorruptPixelDataError(
                    f"Frame {f + 1} of {n}: {error}. The pixel data does not match the header; export the file again."
                ) from error
            except (LabelmapSegError, KeyboardInterrupt, SystemExit):
                raise
            # Codecs raise RuntimeError, ValueError, ...; Rust ones (pylibjpeg-rle) pyo3's PanicException,
            # which derives from BaseException.
            except BaseException as error:  # noqa: BLE001
                raise CorruptPixelDataError(
                    f"Frame {f + 1} of {n} cannot be decoded as {syntax_name(uid)} ({str(error)[:120]}). The file is "
                    "damaged or truncated; export it again."
                ) from error
            store(f, frame)

    threads = _decoding_threads(row, layout, workers)
    if threads <= 1:
        run(range(n))
        return
    chunks = min(n, threads * 4)
    bounds = np.linspace(0, n, chunks + 1).astype(int)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(run, [range(bounds[c], bounds[c + 1]) for c in range(chunks)]))


def allowed_through(allowed: set[int]) -> int:
    """The largest k such that 0..k are all allowed label values (0 counts as allowed): ``known_through``."""
    k = 0
    while k + 1 in allowed:
        k += 1
    return k


class _LabelTally:
    """Which label values occur: each frame's largest value as it is decoded, the values once all are.

    Values up to ``known_through`` are allowed anyway (0 and the described segments 1..N of a
    well-formed instance), so frames whose largest value is no more than that are not counted.
    The others are counted after decoding: the whole volume on every core when they are many
    (a quarter of its slices or more: one pass over long runs of memory), else frame by frame.
    """

    def __init__(self, frames: int, bins: int, known_through: int) -> None:
        self.known_through = known_through
        self.bins = bins
        self.largest = np.zeros(frames, dtype=np.int64)

    def add(self, f: int, labels: np.ndarray) -> None:
        if labels.size:
            self.largest[f] = int(labels.max())

    def counts(self, out: np.ndarray, slices: np.ndarray) -> np.ndarray:
        """Per value, non-zero for the largest value and exactly for the values above ``known_through``
        in ``out`` (the decoded volume; ``slices``: the slice of each frame)."""
        counts = np.zeros(self.bins, dtype=np.int64)
        counted = np.unique(slices[self.largest > self.known_through])
        if counted.size and counted.size * 4 >= out.shape[0]:
            counts[present_labels(out)] += 1
        else:
            for k in counted:
                counts += label_counts(np.ascontiguousarray(out[k]).reshape(-1), out.shape[-1])
        counts[np.unique(self.largest)] += 1
        return counts


def decode_labelmap_frames(
    ds: pydicom.Dataset,
    layout: FrameLayout,
    slice_of_frame: Sequence[int] | np.ndarray,
    out: np.ndarray,
    padding_value: int | None = None,
    workers: int = 1,
    allow_lossy: bool = False,
    known_through: int = -1,
) -> np.ndarray:
    """Decode every frame of ``ds`` into ``out[slice_of_frame[f]]`` and return which label values occur.

    Parameters
    ----------
    ds: pydicom.Dataset
        A LABELMAP SEG instance with Pixel Data.
    layout: FrameLayout
        Rows, Columns, Bits Allocated and Number of Frames from the header.
    slice_of_frame: Sequence[int]
        Target slice index in ``out`` of each frame (file order).
    out: numpy.ndarray
        The preallocated ``(slices, rows, columns)`` label volume of dtype ``layout.dtype``.
    padding_value: int | None
        A Pixel Padding Value to turn into background 0 (None: keep all values).
    workers: int
        Decoding threads; 0 means ``os.cpu_count()``. Used only with codecs that release the
        GIL (imagecodecs' CharLS, OpenJPH, libjxl; zlib); the result does not depend on it.
    allow_lossy: bool
        Decode near-lossless / irreversible code streams too (else they are refused).
    known_through: int
        Values 0..known_through need not be reported (the caller allows them); -1: report all.

    Returns
    -------
    numpy.ndarray
        Per label value (after padding removal), a count that is non-zero for the largest value
        and exactly for the values above ``known_through`` that occur; values up to it may be 0.
    """
    transfer_syntax_uid = str(ds.file_meta.TransferSyntaxUID)
    slices = np.asarray(slice_of_frame, dtype=np.int64)
    tally = _LabelTally(len(slices), 1 << layout.bits_allocated, known_through)

    def store(f: int, target: np.ndarray) -> None:
        if padding_value is not None:
            target[target == padding_value] = 0
        tally.add(f, target)

    if is_native(transfer_syntax_uid):
        _native_frames(ds, layout, slices, out, transfer_syntax_uid == _NATIVE_BIG_ENDIAN)
        for f, k in enumerate(slices):
            store(f, out[k])
    else:
        _run_frames(ds, layout, workers, allow_lossy, lambda f: out[slices[f]], store)
    return tally.counts(out, slices)


def can_decode_frames(transfer_syntax_uid: str, bits_allocated: int) -> bool:
    """True if this module's codecs decode frames of this syntax and bit depth (else use pydicom's pixel_array)."""
    row = row_for_uid(transfer_syntax_uid)
    return row is not None and row.codec is not None and bits_allocated in row.codec.decodes_bits


def decode_frames(ds: pydicom.Dataset, layout: FrameLayout, workers: int = 1, allow_lossy: bool = False) -> np.ndarray:
    """All frames of an encapsulated BINARY/FRACTIONAL (or any) instance: ``(frames, rows, columns)``.

    1-bit frames come back as uint8 0/1. Every frame is checked like a label map's.
    """
    out = np.empty((layout.number_of_frames, layout.rows, layout.columns), dtype=layout.dtype)

    _run_frames(ds, layout, workers, allow_lossy, out.__getitem__, lambda _f, _frame: None)
    return out


def _native_frames(ds: pydicom.Dataset, layout: FrameLayout, slices: np.ndarray, out: np.ndarray,
                   big_endian: bool) -> None:
    """Copy the frames of native (uncompressed) Pixel Data into ``out[slices[f]]``."""
    pixel_data = ds.PixelData
    expected = layout.frame_bytes * layout.number_of_frames
    # An odd length is padded to even with one byte.
    if len(pixel_data) not in (expected, expected + (expected % 2)):
        raise CorruptPixelDataError(
            f"Pixel Data holds {len(pixel_data)} bytes but Number of Frames ({layout.number_of_frames}) x Rows "
            f"({layout.rows}) x Columns ({layout.columns}) x {layout.bits_allocated} bits need {expected}. "
            "The file is truncated or its header is wrong; export it again."
        )
    dtype = layout.dtype.newbyteorder(">") if big_endian else layout.dtype
    frames = np.frombuffer(pixel_data, dtype=dtype, count=layout.number_of_frames * layout.rows * layout.columns)
    frames = frames.reshape(layout.number_of_frames, layout.rows, layout.columns)
    if np.array_equal(slices, np.arange(len(slices))) and out.shape[0] == len(slices):
        out[...] = frames
    else:
        out[slices] = frames


__all__ = [
    "FrameLayout", "TransferSyntax", "allowed_through", "can_decode_frames", "check_first_frame", "check_lossless",
    "decode_frames", "decode_labelmap_frames", "frame_fragments", "is_native", "require_decoder", "syntax_name",
]
