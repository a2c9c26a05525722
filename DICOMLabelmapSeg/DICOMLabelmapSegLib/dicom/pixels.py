"""Fast frame decoding of LABELMAP SEG pixel data straight into a preallocated label volume.

The reader places frames by their positions, so decoding takes a target slice index per
frame. Compressed frames are taken from the encapsulated Pixel Data with
:mod:`pydicom.encaps` and decoded with the codec libraries directly (CharLS via
``pyjpegls``, OpenJPEG via ``pylibjpeg-openjpeg``, ``pylibjpeg-rle``); native pixel data
is viewed with :func:`numpy.frombuffer`. Other encapsulated syntaxes go through pydicom's
decoder plugins. Every codec failure becomes a :class:`~.errors.CorruptPixelDataError`.

While decoding, a histogram of label values is accumulated so that the reader can check
for undescribed labels without another pass over the volume.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.uid import UID

from ..errors import CorruptPixelDataError, LabelmapSegError, MissingCodecError
from .syntax import TransferSyntax

#: Native (uncompressed) transfer syntaxes: implicit/explicit VR little endian, deflated
#: (pydicom inflates it while reading), explicit VR big endian.
_NATIVE_LITTLE_ENDIAN = {
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.1.99",
}
_NATIVE_BIG_ENDIAN = "1.2.840.10008.1.2.2"
_JPEG_LS = {"1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"}
_JPEG_2000 = {
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
}
_RLE = "1.2.840.10008.1.2.5"

#: Below this many voxels, decoding is done in the calling thread (a pool costs more than it saves).
_PARALLEL_MIN_VOXELS = 2_000_000


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
        return np.dtype(np.uint8 if self.bits_allocated == 8 else "<u2")

    @property
    def frame_bytes(self) -> int:
        """Bytes of one decoded frame."""
        return self.rows * self.columns * (self.bits_allocated // 8)


def is_native(transfer_syntax_uid: str) -> bool:
    """True if pixel data of this transfer syntax is stored uncompressed."""
    return transfer_syntax_uid in _NATIVE_LITTLE_ENDIAN or transfer_syntax_uid == _NATIVE_BIG_ENDIAN


def syntax_name(transfer_syntax_uid: str) -> str:
    """A readable name of a transfer syntax UID."""
    try:
        return TransferSyntax.from_uid(transfer_syntax_uid).label
    except ValueError:
        name = UID(transfer_syntax_uid).name
        return name if name and name != transfer_syntax_uid else f"unknown transfer syntax {transfer_syntax_uid}"


def require_decoder(transfer_syntax_uid: str) -> None:
    """Raise MissingCodecError (naming the pip package) if frames of this syntax cannot be decoded here."""
    try:
        syntax = TransferSyntax.from_uid(transfer_syntax_uid)
    except ValueError:
        syntax = None
    if syntax is not None:
        syntax.require_decoder()
        return
    if is_native(transfer_syntax_uid):
        return
    if transfer_syntax_uid in _JPEG_LS:
        TransferSyntax.JPEG_LS.require_decoder()
        return
    if transfer_syntax_uid in _JPEG_2000:
        TransferSyntax.JPEG_2000.require_decoder()
        return
    decoder = _pydicom_decoder(transfer_syntax_uid)
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "a pydicom pixel data plugin"
        raise MissingCodecError(
            f"Pixel data in {syntax_name(transfer_syntax_uid)} cannot be decoded: no decoder is installed "
            f"(options: {missing}). Install one of them, e.g. pip install pylibjpeg pylibjpeg-libjpeg."
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


def frame_fragments(ds: pydicom.Dataset, layout: FrameLayout) -> list[bytes]:
    """The compressed bytes of every frame of encapsulated Pixel Data, in file order."""
    extended = None
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        extended = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    try:
        frames = list(
            pydicom.encaps.generate_frames(
                ds.PixelData, number_of_frames=layout.number_of_frames, extended_offsets=extended
            )
        )
    except Exception as error:  # noqa: BLE001 - pydicom raises ValueError, KeyError, struct.error, ...
        raise CorruptPixelDataError(
            f"The encapsulated Pixel Data cannot be split into {layout.number_of_frames} frames ({error}). "
            "The file is damaged or truncated; export it again."
        ) from error
    if len(frames) != layout.number_of_frames:
        raise CorruptPixelDataError(
            f"Number of Frames says {layout.number_of_frames} but the encapsulated Pixel Data holds "
            f"{len(frames)} frames. The file is damaged or truncated; export it again."
        )
    return frames


def check_first_frame(ds: pydicom.Dataset, layout: FrameLayout) -> None:
    """Compare the first compressed frame's own header with Rows and Columns, before anything is allocated.

    JPEG-LS and JPEG 2000 code streams state their size; a header that lies about the frame
    size is rejected here instead of after allocating the volume it claims.
    """
    transfer_syntax_uid = str(ds.file_meta.TransferSyntaxUID)
    if transfer_syntax_uid not in _JPEG_LS and transfer_syntax_uid not in _JPEG_2000:
        return
    try:
        fragment = pydicom.encaps.get_frame(ds.PixelData, 0, number_of_frames=layout.number_of_frames)
        if transfer_syntax_uid in _JPEG_LS:
            header = _jpeg_ls_header(fragment)
            size = (header["height"], header["width"])
        else:
            import openjpeg

            parameters = openjpeg.get_parameters(bytes(fragment), j2k_format=0)
            size = (int(parameters["rows"]), int(parameters["columns"]))
    except Exception as error:  # noqa: BLE001 - codecs raise RuntimeError, ValueError, ...
        raise CorruptPixelDataError(
            f"The first frame's {syntax_name(transfer_syntax_uid)} data cannot be read ({str(error)[:100]}). "
            "The file is damaged or truncated; export it again."
        ) from error
    if size != (layout.rows, layout.columns):
        raise CorruptPixelDataError(
            f"The first frame is {size[0]} x {size[1]} pixels but Rows x Columns say {layout.rows} x "
            f"{layout.columns}. The header does not match the pixel data; export the file again."
        )


def _jpeg_ls_header(fragment: bytes) -> dict:
    """Width and height of a JPEG-LS code stream (pyjpegls' extension module reads only the header)."""
    try:
        from _CharLS import read_header
    except ImportError:  # another pyjpegls layout: decode the frame instead (slower, same check)
        import jpeg_ls

        return jpeg_ls.decode_buffer(bytes(fragment))[1]
    return read_header(bytes(fragment))


def _frame_decoder(
    ds: pydicom.Dataset, transfer_syntax_uid: str, layout: FrameLayout
) -> Callable[[int, bytes], np.ndarray]:
    """A function (frame index, fragment bytes) -> 2D array of one decoded frame."""
    shape = (layout.rows, layout.columns)
    dtype = layout.dtype

    def check(frame_index: int, buffer: bytes | bytearray) -> np.ndarray:
        if len(buffer) != layout.frame_bytes:
            raise CorruptPixelDataError(
                f"Frame {frame_index + 1} decodes to {len(buffer)} bytes but Rows x Columns x Bits Allocated "
                f"say {layout.frame_bytes}. The pixel data does not match the header; export the file again."
            )
        return np.frombuffer(buffer, dtype=dtype).reshape(shape)

    if transfer_syntax_uid in _JPEG_LS:
        import jpeg_ls

        def decode_jpeg_ls(frame_index: int, fragment: bytes) -> np.ndarray:
            return check(frame_index, jpeg_ls.decode_from_buffer(fragment))

        return decode_jpeg_ls

    if transfer_syntax_uid in _JPEG_2000:
        import openjpeg

        def decode_jpeg_2000(frame_index: int, fragment: bytes) -> np.ndarray:
            array = openjpeg.decode(fragment, j2k_format=0, reshape=True)
            if array.shape != shape or array.dtype.itemsize * 8 > layout.bits_allocated:
                raise CorruptPixelDataError(
                    f"Frame {frame_index + 1} decodes to shape {array.shape} of {array.dtype} but the header says "
                    f"{shape} of {layout.bits_allocated}-bit pixels; export the file again."
                )
            return array

        return decode_jpeg_2000

    if transfer_syntax_uid == _RLE:
        try:
            import rle.utils as rle_utils
        except ImportError:
            rle_utils = None
        if rle_utils is not None:

            def decode_rle(frame_index: int, fragment: bytes) -> np.ndarray:
                return check(frame_index, rle_utils.decode_frame(fragment, layout.rows * layout.columns,
                                                                 layout.bits_allocated, "<"))

            return decode_rle

    decoder = _pydicom_decoder(transfer_syntax_uid)

    def decode_with_pydicom(frame_index: int, fragment: bytes) -> np.ndarray:
        array, _ = decoder.as_array(ds, index=frame_index, as_rgb=False)
        return check(frame_index, np.ascontiguousarray(array, dtype=dtype).tobytes())

    return decode_with_pydicom


def decode_labelmap_frames(
    ds: pydicom.Dataset,
    layout: FrameLayout,
    slice_of_frame: Sequence[int],
    out: np.ndarray,
    padding_value: int | None = None,
    workers: int = 1,
) -> np.ndarray:
    """Decode every frame of ``ds`` into ``out[slice_of_frame[f]]`` and return the label histogram.

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
        Decoding threads; 0 means ``os.cpu_count()``. Threads pay off only with codecs that
        release the GIL (pyjpegls and pylibjpeg-openjpeg do not), so the default is 1.

    Returns
    -------
    numpy.ndarray
        Per label value (after padding removal), a count that is non-zero exactly when the value occurs.
    """
    transfer_syntax_uid = str(ds.file_meta.TransferSyntaxUID)
    slices = np.asarray(slice_of_frame, dtype=np.int64)
    if is_native(transfer_syntax_uid):
        return _native_frames(ds, layout, slices, out, padding_value, transfer_syntax_uid == _NATIVE_BIG_ENDIAN)
    require_decoder(transfer_syntax_uid)
    fragments = frame_fragments(ds, layout)
    decode = _frame_decoder(ds, transfer_syntax_uid, layout)
    bins = 1 << layout.bits_allocated

    def run(frame_indices: range) -> np.ndarray:
        counts = np.zeros(bins, dtype=np.int64)
        for f in frame_indices:
            try:
                frame = decode(f, fragments[f])
            except (LabelmapSegError, KeyboardInterrupt, SystemExit):
                raise
            # Codecs raise RuntimeError, ValueError, ...; Rust ones (pylibjpeg-rle) pyo3's PanicException,
            # which derives from BaseException.
            except BaseException as error:  # noqa: BLE001
                raise CorruptPixelDataError(
                    f"Frame {f + 1} of {layout.number_of_frames} cannot be decoded as "
                    f"{syntax_name(transfer_syntax_uid)} ({str(error)[:120]}). The file is damaged or truncated; "
                    "export it again."
                ) from error
            target = out[slices[f]]
            target[...] = frame
            if padding_value is not None:
                target[target == padding_value] = 0
            counts += _occurrences(target, bins)
        return counts

    n = layout.number_of_frames
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or n < 2 or n * layout.rows * layout.columns < _PARALLEL_MIN_VOXELS:
        return run(range(n))
    chunks = min(n, workers * 4)
    bounds = np.linspace(0, n, chunks + 1).astype(int)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(run, [range(bounds[c], bounds[c + 1]) for c in range(chunks)]))
    return np.sum(results, axis=0)


def _occurrences(labels: np.ndarray, bins: int) -> np.ndarray:
    """Per value, a count that is non-zero exactly when the value occurs in ``labels``.

    Only the first pixel and the pixels where the value changes (in memory order) are
    counted: every value that occurs starts a run, and label maps have few runs, so this
    is several times faster than a histogram of all pixels.
    """
    flat = labels.reshape(-1)
    if not flat.size:
        return np.zeros(bins, dtype=np.int64)
    starts = flat[1:][flat[1:] != flat[:-1]]
    counts = np.bincount(starts, minlength=bins)
    counts[flat[0]] += 1
    return counts


def _native_frames(
    ds: pydicom.Dataset,
    layout: FrameLayout,
    slices: np.ndarray,
    out: np.ndarray,
    padding_value: int | None,
    big_endian: bool,
) -> np.ndarray:
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
    bins = 1 << layout.bits_allocated
    counts = np.zeros(bins, dtype=np.int64)
    for k in np.unique(slices):  # slice by slice: bounded temporary memory
        target = out[k]
        if padding_value is not None:
            target[target == padding_value] = 0
        counts += _occurrences(target, bins)
    return counts
