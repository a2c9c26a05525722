"""Lossless frame codecs: one 2D frame in, one code stream out, and back, for every encapsulated syntax.

Each :class:`Codec` encodes a frame (uint8/uint16 label frame; for Deflated Image Frame
Compression also a 1-bit frame) and decodes a fragment back to a ``(rows, columns)`` array
after checking that the code stream's own header (size, bit depth, components, lossless
coding) matches what the DICOM header says; a mismatch raises :class:`FrameError` (the reader
turns it into a one-line :class:`~.errors.CorruptPixelDataError` naming the frame).

Bindings are chosen by measurement (512x512x334, 61 labels, BENCHMARK.md): where imagecodecs
is installed its codecs release the GIL, so :func:`encode_frames` and the reader run frames on
several threads; otherwise the codecs Slicer bundles (pyjpegls, Python's zlib) are used.
Every binding choice is made once per call, so the bytes do not depend on the thread count.

* JPEG-LS: CharLS through imagecodecs (releases the GIL: frames on every core) or pyjpegls
  (what Slicer bundles). Both write the same code stream: imagecodecs' SPIFF header, which
  DICOM does not use, is dropped (the tests prove the bytes equal). Decoded with imagecodecs
  or pyjpegls. Tiny frames (< 256 bytes) get a padded source on pyjpegls (its 2x destination
  buffer is too small for the headers).
* JPEG 2000: pylibjpeg-openjpeg (6 resolutions), Pillow for frames with a side under 32.
* HTJ2K: encoded with imagecodecs (OpenJPH), decoded with imagecodecs or pylibjpeg-openjpeg.
* JPEG XL: imagecodecs (libjxl), effort :data:`JPEG_XL_EFFORT`; a naked code stream for 8-bit
  frames, the ISOBMFF container for 16-bit ones (libjxl signals code stream level 10 there).
* Deflated Image Frame Compression (Sup 244): raw DEFLATE (RFC 1951) level
  :data:`DEFLATE_LEVEL` with zlib-ng (imagecodecs) or Python's zlib; 1-bit frames are packed
  frame by frame, least significant bit first, the last byte of a frame padded with zero bits
  (as pydicom-data's 510x510 files are).
* RLE: pylibjpeg-rle.
"""

from __future__ import annotations

import importlib.util
import io
import os
import struct
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InvalidSegmentationError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from .syntax import TransferSyntax

#: zlib level of Deflated Image Frame Compression: 9 (0.911 MB; zlib-ng 9: 0.914 MB at half the time;
#: libdeflate 12: 0.809 MB but 17.8 s, too slow for an export; see BENCHMARK.md).
DEFLATE_LEVEL = 9
#: libjxl effort of JPEG XL Lossless: 2 gives 0.817 MB in 0.8 s; 4: 0.723 MB, 5.8 s; 7: 0.614 MB, 23-31 s.
JPEG_XL_EFFORT = 2

#: Frames with fewer raw bytes than this go straight to the padded CharLS call.
_JPEG_LS_SMALL_FRAME_BYTES = 256
#: Extra source bytes given to CharLS on the padded path (its destination buffer is twice the source).
_JPEG_LS_PADDING_BYTES = 1024
#: Smallest frame side openjpeg (6 wavelet resolutions) encodes; smaller frames are encoded with Pillow.
_OPENJPEG_MIN_SIDE = 32


class FrameError(ValueError):
    """A code stream does not match the frame the DICOM header describes (or is not lossless)."""


class LossyFrameError(FrameError):
    """A code stream is coded lossily (near-lossless JPEG-LS, irreversible JPEG 2000)."""


def has_module(name: str) -> bool:
    """True if the module can be imported here (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


@dataclass(frozen=True)
class FrameFormat:
    """What one frame is, by the DICOM header: Rows, Columns, Bits Allocated (1, 8 or 16)."""

    rows: int
    columns: int
    bits: int
    #: Accept near-lossless JPEG-LS and irreversible JPEG 2000 code streams (the caller warned).
    allow_lossy: bool = False

    @property
    def pixels(self) -> int:
        """Pixels of one frame."""
        return self.rows * self.columns

    @property
    def nbytes(self) -> int:
        """Bytes of one native frame (1-bit frames padded to a whole byte)."""
        return (self.pixels * self.bits + 7) // 8

    @property
    def dtype(self) -> np.dtype:
        """The numpy dtype of one decoded pixel (uint8 for 1 and 8 bits)."""
        return np.dtype("<u2") if self.bits == 16 else np.dtype(np.uint8)


def _check_array(array: np.ndarray, frame: FrameFormat, what: str) -> np.ndarray:
    """``array`` as a ``(rows, columns)`` frame, or FrameError if shape, components or bit depth differ."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim != 2:
        components = array.shape[2] if array.ndim == 3 else "?"
        raise FrameError(f"the {what} code stream has {components} components (shape {array.shape}); a segmentation "
                         "frame has one")
    if array.shape != (frame.rows, frame.columns):
        raise FrameError(f"the {what} code stream is {array.shape[0]} x {array.shape[1]} pixels but Rows x Columns "
                         f"say {frame.rows} x {frame.columns}")
    if array.dtype.itemsize * 8 > max(frame.bits, 8) or array.dtype.kind not in "ub":
        raise FrameError(f"the {what} code stream holds {array.dtype.itemsize * 8}-bit {array.dtype} samples but Bits "
                         f"Allocated is {frame.bits}")
    return array


class Codec:
    """Encoder and decoder of one encapsulated transfer syntax (subclasses: one per syntax)."""

    #: Bits Allocated values the encoder writes.
    encodes_bits: tuple[int, ...] = (8, 16)
    #: Bits Allocated values the decoder reads.
    decodes_bits: tuple[int, ...] = (8, 16)
    #: Largest Rows or Columns the code stream can hold.
    max_side: int = 65535
    #: Alternatives (import name, pip package) for encoding and decoding, any one suffices; the first is the one
    #: suggested when none is installed (the decoder itself prefers imagecodecs, which releases the GIL).
    encoder_modules: tuple[tuple[str, str], ...] = ()
    decoder_modules: tuple[tuple[str, str], ...] = ()

    #: True if every frame's code stream ends with an end-of-image marker (FFD9: JPEG EOI, JPEG 2000 EOC).
    ends_with_marker: bool = False

    def check_header(self, stream: bytes | memoryview, frame: FrameFormat) -> None:
        """Check the code stream's own header against the frame (FrameError if it differs); cheap, no decoding."""

    def encoder(self) -> Callable[[np.ndarray], bytes]:
        """The encoding function of the binding used here: 2D frame -> code stream."""
        raise NotImplementedError

    def decoder(self, frame: FrameFormat) -> Callable[[bytes | memoryview], np.ndarray]:
        """The decoding function of the binding used here: code stream -> checked ``(rows, columns)`` array."""
        raise NotImplementedError

    def encoder_releases_gil(self) -> bool:
        """True if the encoder used here runs in parallel on threads."""
        return False

    def decoder_releases_gil(self) -> bool:
        """True if the decoder used here runs in parallel on threads."""
        return False


# ------------------------------------------------------------------------------------------ JPEG-LS


def jpeg_ls_frame(frame: np.ndarray) -> bytes:
    """The lossless JPEG-LS code stream of one 2D uint8/uint16 frame (pyjpegls / CharLS).

    Raises
    ------
    InvalidSegmentationError
        CharLS could not encode the frame (the message says which frame size and what to do).
    """
    import jpeg_ls  # type: ignore[import-untyped]

    rows, columns = frame.shape
    bits = 8 * frame.dtype.itemsize
    data = np.ascontiguousarray(frame, dtype=frame.dtype.newbyteorder("<")).tobytes()
    if len(data) >= _JPEG_LS_SMALL_FRAME_BYTES:
        try:
            return bytes(jpeg_ls.encode_buffer(data, rows, columns, 1, bits))
        except RuntimeError:
            pass  # the 2x buffer overflowed: retry with a padded source below
    return _jpeg_ls_padded(data, rows, columns, bits)


def jpeg_ls_frame_imagecodecs(frame: np.ndarray) -> bytes:
    """The same code stream as :func:`jpeg_ls_frame`, from imagecodecs' CharLS (releases the GIL).

    imagecodecs writes a SPIFF header (ITU-T T.87 Annex G: an APP8 segment, directory entries,
    the end-of-directory entry holding the real SOI); the code stream DICOM stores starts at that SOI.
    """
    from imagecodecs import jpegls_encode

    frame = np.ascontiguousarray(frame, dtype=frame.dtype.newbyteorder("="))
    stream = bytes(jpegls_encode(frame))
    start = spiff_stream_start(stream)
    if start is None:  # not the layout this function knows: let pyjpegls write the frame
        return jpeg_ls_frame(frame)
    return stream[start:]


def spiff_stream_start(stream: bytes) -> int | None:
    """Offset of the JPEG-LS SOI after a SPIFF header (0 without one); None for an unknown layout."""
    if stream[:2] != b"\xff\xd8":
        return None
    if stream[2:4] != b"\xff\xe8" or stream[6:12] != b"SPIFF\x00":
        return 0 if stream[2:4] == b"\xff\xf7" else None
    position = 4 + struct.unpack_from(">H", stream, 4)[0]  # after the SPIFF header segment
    while stream[position : position + 2] == b"\xff\xe8" and position + 8 <= len(stream):
        length = struct.unpack_from(">H", stream, position + 2)[0]
        if struct.unpack_from(">I", stream, position + 4)[0] == 1:  # end of directory: tag 1, then SOI
            soi = position + 8
            return soi if stream[soi : soi + 4] == b"\xff\xd8\xff\xf7" else None
        position += 2 + length
    return None


def _jpeg_ls_padded(data: bytes, rows: int, columns: int, bits: int) -> bytes:
    try:
        import _CharLS  # type: ignore[import-not-found]  # pyjpegls' extension module (jpeg_ls.encode_buffer calls its _encode)

        encode = _CharLS._encode
    except (ImportError, AttributeError):
        encode = None
    # Twice the source plus 2 KB: room for the headers and for JPEG-LS' worst case (4x the raw frame).
    padding = len(data) + _JPEG_LS_PADDING_BYTES
    try:
        if encode is None:
            raise RuntimeError("this pyjpegls version offers no way to give CharLS a larger buffer")
        return bytes(encode(data + bytes(padding), 0, 0, rows, columns, 1, bits))
    except RuntimeError as error:
        raise InvalidSegmentationError(
            f"JPEG-LS could not encode a {rows} x {columns} frame ({error}). "
            "Export with another transfer syntax (e.g. RLE or Deflated), or update pyjpegls."
        ) from error


@dataclass(frozen=True)
class JpegLsHeader:
    """The frame facts a JPEG-LS code stream states (SOF55 and SOS markers)."""

    rows: int
    columns: int
    bits: int
    components: int
    near: int


def jpeg_ls_header(stream: bytes | memoryview) -> JpegLsHeader:
    """Parse the SOF55 and first SOS segment of a JPEG-LS code stream (ITU-T T.87); FrameError if absent."""
    data = memoryview(stream)
    if bytes(data[:2]) != b"\xff\xd8":
        raise FrameError("the JPEG-LS code stream does not start with SOI")
    position, size, bits, components = 2, None, 0, 0
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            raise FrameError("the JPEG-LS code stream has a damaged marker segment")
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        length = struct.unpack_from(">H", data, position + 2)[0]
        segment = data[position + 4 : position + 2 + length]
        if marker == 0xF7:  # SOF55: P, Y, X, Nf
            if len(segment) < 6:
                raise FrameError("the JPEG-LS frame header is truncated")
            bits = segment[0]
            size = struct.unpack_from(">HH", segment, 1)
            components = segment[5]
        elif marker == 0xDA:  # SOS: Ns, (Ci, Tmi) * Ns, NEAR, ILV, Al/Ah
            if size is None:
                raise FrameError("the JPEG-LS code stream has no frame header before its scan")
            count = segment[0] if len(segment) else 0
            if len(segment) < 1 + 2 * count + 1:
                raise FrameError("the JPEG-LS scan header is truncated")
            return JpegLsHeader(size[0], size[1], bits, components, segment[1 + 2 * count])
        position += 2 + length
    raise FrameError("the JPEG-LS code stream has no scan header")


def check_jpeg_ls(stream: bytes | memoryview, frame: FrameFormat) -> JpegLsHeader:
    """The header of a JPEG-LS frame, checked against the DICOM header; FrameError if it differs or is near-lossless."""
    header = jpeg_ls_header(stream)
    if (header.rows, header.columns) != (frame.rows, frame.columns):
        raise FrameError(f"the JPEG-LS code stream is {header.rows} x {header.columns} pixels but Rows x Columns say "
                         f"{frame.rows} x {frame.columns}")
    if header.components != 1:
        raise FrameError(f"the JPEG-LS code stream has {header.components} components; a segmentation frame has one")
    if not 2 <= header.bits <= frame.bits:
        raise FrameError(f"the JPEG-LS code stream holds {header.bits}-bit samples but Bits Allocated is {frame.bits}")
    if header.near != 0 and not frame.allow_lossy:
        raise LossyFrameError(f"the JPEG-LS code stream is near-lossless (NEAR = {header.near}): label values may "
                              "be changed")
    return header


class JpegLsCodec(Codec):
    """JPEG-LS Lossless (1.2.840.10008.1.2.4.80)."""

    encoder_modules = (("jpeg_ls", "pyjpegls"),)  # imagecodecs is used where it is installed too
    decoder_modules = (("jpeg_ls", "pyjpegls"), ("imagecodecs", "imagecodecs"))  # imagecodecs used if both
    ends_with_marker = True

    def check_header(self, stream: bytes | memoryview, frame: FrameFormat) -> None:
        check_jpeg_ls(stream, frame)

    def encoder(self) -> Callable[[np.ndarray], bytes]:
        return jpeg_ls_frame_imagecodecs if has_module("imagecodecs") else jpeg_ls_frame

    def encoder_releases_gil(self) -> bool:
        return has_module("imagecodecs")

    def decoder(self, frame: FrameFormat) -> Callable[[bytes | memoryview], np.ndarray]:
        if has_module("imagecodecs"):
            from imagecodecs import jpegls_decode

            def decode_imagecodecs(stream: bytes | memoryview) -> np.ndarray:
                check_jpeg_ls(stream, frame)
                return _check_array(jpegls_decode(stream), frame, "JPEG-LS")  # type: ignore[arg-type]

            return decode_imagecodecs
        import jpeg_ls  # type: ignore[import-untyped]

        def decode_pyjpegls(stream: bytes | memoryview) -> np.ndarray:
            header = check_jpeg_ls(stream, frame)
            buffer = jpeg_ls.decode_from_buffer(bytes(stream))
            dtype = np.dtype("<u2") if header.bits > 8 else np.dtype(np.uint8)
            if len(buffer) != frame.pixels * dtype.itemsize:
                raise FrameError(f"the JPEG-LS code stream decodes to {len(buffer)} bytes, not {frame.rows} x "
                                 f"{frame.columns} pixels")
            return np.frombuffer(buffer, dtype=dtype).reshape(frame.rows, frame.columns)

        return decode_pyjpegls

    def decoder_releases_gil(self) -> bool:
        return has_module("imagecodecs")


# ------------------------------------------------------------------------------- JPEG 2000 and HTJ2K


@dataclass(frozen=True)
class J2kHeader:
    """The frame facts of a JPEG 2000 code stream's main header (SIZ, COD, CAP markers)."""

    rows: int
    columns: int
    bits: int
    components: int
    signed: bool
    reversible: bool
    high_throughput: bool


def j2k_header(stream: bytes | memoryview) -> J2kHeader:
    """Parse the main header of a JPEG 2000 code stream (ISO/IEC 15444-1 / -15, no JP2 box); FrameError if damaged."""
    data = memoryview(stream)
    if bytes(data[:4]) != b"\xff\x4f\xff\x51":
        raise FrameError("the JPEG 2000 code stream does not start with SOC and SIZ (a JP2 file, or damaged)")
    position, siz, reversible, high_throughput = 2, None, None, False
    while position + 4 <= len(data):
        marker = struct.unpack_from(">H", data, position)[0]
        if marker in (0xFF90, 0xFF93):  # SOT / SOD: end of the main header
            break
        length = struct.unpack_from(">H", data, position + 2)[0]
        segment = data[position + 4 : position + 2 + length]
        if marker == 0xFF51:  # SIZ: Rsiz Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz XTOsiz YTOsiz Csiz (Ssiz XRsiz YRsiz)*
            if len(segment) < 39:  # 36 bytes, then Ssiz XRsiz YRsiz of the first component
                raise FrameError("the JPEG 2000 SIZ marker is truncated")
            rsiz, xsiz, ysiz, xosiz, yosiz = struct.unpack_from(">HIIII", segment, 0)
            count = struct.unpack_from(">H", segment, 34)[0]
            ssiz = segment[36]
            siz = (ysiz - yosiz, xsiz - xosiz, (ssiz & 0x7F) + 1, count, bool(ssiz & 0x80))
            high_throughput = high_throughput or bool(rsiz & 0x4000)
        elif marker == 0xFF52 and len(segment) >= 10:  # COD: Scod, SGcod(4), SPcod: levels, cb w, cb h, style, wavelet
            reversible = segment[9] == 1 if reversible is None else reversible and segment[9] == 1
        elif marker == 0xFF53 and siz is not None:  # COC: Ccoc (1 or 2 bytes), Scoc, SPcoc as in COD
            offset = 1 if siz[3] < 257 else 2
            if len(segment) >= offset + 6:
                reversible = (reversible is not False) and segment[offset + 5] == 1
        elif marker == 0xFF50:  # CAP: Part 15 (HTJ2K) capabilities
            high_throughput = True
        position += 2 + length
    if siz is None or reversible is None:
        raise FrameError("the JPEG 2000 main header lacks its SIZ or COD marker")
    return J2kHeader(siz[0], siz[1], siz[2], siz[3], siz[4], reversible, high_throughput)


def check_j2k(stream: bytes | memoryview, frame: FrameFormat) -> J2kHeader:
    """The main header of a JPEG 2000/HTJ2K frame checked against the DICOM header and for reversible coding."""
    header = j2k_header(stream)
    if (header.rows, header.columns) != (frame.rows, frame.columns):
        raise FrameError(f"the JPEG 2000 code stream is {header.rows} x {header.columns} pixels but Rows x Columns "
                         f"say {frame.rows} x {frame.columns}")
    if header.components != 1:
        raise FrameError(f"the JPEG 2000 code stream has {header.components} components; a segmentation frame has "
                         "one")
    if header.signed or header.bits > max(frame.bits, 8):
        raise FrameError(f"the JPEG 2000 code stream holds {'signed ' if header.signed else ''}{header.bits}-bit "
                         f"samples but Bits Allocated is {frame.bits}")
    if not header.reversible and not frame.allow_lossy:
        raise LossyFrameError("the JPEG 2000 code stream uses the irreversible 9-7 wavelet (lossy): label values "
                              "may be changed")
    return header


def jpeg_2000_frame(frame: np.ndarray) -> bytes:
    """The lossless JPEG 2000 code stream (J2K, no JP2 box) of one 2D uint8/uint16 frame.

    pylibjpeg-openjpeg when installed (frames with sides of 32 or more), else Pillow, which Slicer
    bundles (its OpenJPEG, reversible 5-3 wavelet, fewer resolutions for small frames).
    """
    if min(frame.shape) >= _OPENJPEG_MIN_SIDE and importlib.util.find_spec("openjpeg") is not None:
        import openjpeg

        return bytes(openjpeg.encode(np.ascontiguousarray(frame), bits_stored=8 * frame.dtype.itemsize,
                                     photometric_interpretation=2, use_mct=False, codec_format=0))
    from PIL import Image

    rows, columns = frame.shape
    resolutions = min(6, int(np.log2(min(rows, columns))) + 1)  # each level halves the frame
    frame = np.ascontiguousarray(frame)
    image = (
        Image.fromarray(frame, mode="L") if frame.dtype == np.uint8
        else Image.frombytes("I;16", (columns, rows), frame.astype("<u2", copy=False).tobytes())
    )
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG2000", irreversible=False, num_resolutions=resolutions, no_jp2=True)
    return buffer.getvalue()


def _openjpeg_decoder(frame: FrameFormat, what: str) -> Callable[[bytes | memoryview], np.ndarray]:
    import openjpeg

    def decode(stream: bytes | memoryview) -> np.ndarray:
        check_j2k(stream, frame)
        return _check_array(openjpeg.decode(bytes(stream), j2k_format=0), frame, what)

    return decode


class Jpeg2000Codec(Codec):
    """JPEG 2000 Image Compression (Lossless Only) (1.2.840.10008.1.2.4.90)."""

    ends_with_marker = True

    def check_header(self, stream: bytes | memoryview, frame: FrameFormat) -> None:
        check_j2k(stream, frame)

    encoder_modules = (("PIL", "pillow"),)  # pylibjpeg-openjpeg is used instead when installed
    decoder_modules = (("openjpeg", "pylibjpeg-openjpeg"),)
    max_side = 2**31

    def encoder(self) -> Callable[[np.ndarray], bytes]:
        return jpeg_2000_frame

    def decoder(self, frame: FrameFormat) -> Callable[[bytes | memoryview], np.ndarray]:
        return _openjpeg_decoder(frame, "JPEG 2000")


def htj2k_frame(frame: np.ndarray) -> bytes:
    """The HTJ2K lossless code stream (reversible 5-3 wavelet, J2K without JP2 box) of one frame (OpenJPH)."""
    from imagecodecs import htj2k_encode

    resolutions = min(6, int(np.log2(min(frame.shape))) + 1)
    return bytes(htj2k_encode(np.ascontiguousarray(frame), reversible=True, resolutions=resolutions))


class Htj2kCodec(Codec):
    """High-Throughput JPEG 2000 Image Compression (Lossless Only) (1.2.840.10008.1.2.4.201)."""

    ends_with_marker = True

    def check_header(self, stream: bytes | memoryview, frame: FrameFormat) -> None:
        check_j2k(stream, frame)

    encoder_modules = (("imagecodecs", "imagecodecs"),)
    decoder_modules = (("openjpeg", "pylibjpeg-openjpeg"), ("imagecodecs", "imagecodecs"))  # imagecodecs if both
    max_side = 2**31

    def encoder(self) -> Callable[[np.ndarray], bytes]:
        return htj2k_frame

    def decoder(self, frame: FrameFormat) -> Callable[[bytes | memoryview], np.ndarray]:
        if not has_module("imagecodecs"):
            return _openjpeg_decoder(frame, "HTJ2K")
        from imagecodecs import htj2k_decode

        def decode(stream: bytes | memoryview) -> np.ndarray:
            check_j2k(stream, frame)
            return _check_array(htj2k_decode(stream), frame, "HTJ2K")  # type: ignore[arg-type]

        return decode

    def encoder_releases_gil(self) -> bool:
        return True

    def decoder_releases_gil(self) -> bool:
        return has_module("imagecodecs")


# ------------------------------------------------------------------------------------------ JPEG XL


def jpeg_xl_frame(frame: np.ndarray) -> bytes:
    """The JPEG XL lossless code stream (naked code stream, no container) of one frame (libjxl)."""
    from imagecodecs import jpegxl_encode

    return bytes(jpegxl_encode(np.ascontiguousarray(frame), lossless=True, effort=JPEG_XL_EFFORT,
                               usecontainer=False, numthreads=1))


class JpegXlCodec(Codec):
    """JPEG XL Lossless (1.2.840.10008.1.2.4.110)."""

    encoder_modules = (("imagecodecs", "imagecodecs"),)
    decoder_modules = (("imagecodecs", "imagecodecs"),)
    max_side = 2**30

    def encoder(self) -> Callable[[np.ndarray], bytes]:
        return jpeg_xl_frame

    def decoder(self, frame: FrameFormat) -> Callable[[bytes | memoryview], np.ndarray]:
        from imagecodecs import jpegxl_decode

        def decode(stream: bytes | memoryview) -> np.ndarray:
            if bytes(stream[:2]) != b"\xff\x0a" and bytes(stream[:12]) != b"\0\0\0\x0cJXL \r\n\x87\n":
                raise FrameError("the fragment is not a JPEG XL code stream")
            return _check_array(jpegxl_decode(stream, numthreads=1), frame, "JPEG XL")  # type: ignore[arg-type]

        return decode

    def encoder_releases_gil(self) -> bool:
        return True

    def decoder_releases_gil(self) -> bool:
        return True


# ---------------------------------------------------------------- Deflated Image Frame Compression


def pack_bits(frame: np.ndarray) -> bytes:
    """One 1-bit frame packed as DICOM native 1-bit data: 8 pixels a byte, least significant bit first.

    The last byte is padded with zero bits when ``rows * columns`` is not a multiple of 8.
    """
    return np.packbits(np.asarray(frame, dtype=bool).reshape(-1), bitorder="little").tobytes()


def unpack_bits(data: bytes | memoryview, frame: FrameFormat) -> np.ndarray:
    """The ``(rows, columns)`` uint8 0/1 frame of packed 1-bit data (the inverse of :func:`pack_bits`)."""
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=frame.pixels, bitorder="little")
    return bits.reshape(frame.rows, frame.columns)


def deflate_raw(data: bytes) -> bytes:
    """Raw DEFLATE (RFC 1951: no zlib header or checksum) of ``data`` at :data:`DEFLATE_LEVEL`."""
    if has_module("imagecodecs"):
        from imagecodecs import zlibng_encode

        return bytes(zlibng_encode(data, DEFLATE_LEVEL))[2:-4]  # zlib wrapper: 2-byte header, 4-byte Adler-32
    compressor = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


def inflate_raw(stream: bytes | memoryview, size: int) -> bytes:
    """Inflate a raw DEFLATE stream that must hold exactly ``size`` bytes (never more is allocated).

    Raises
    ------
    FrameError
        The stream is damaged, holds a different number of bytes, or is followed by more than
        one padding byte.
    """
    inflater = zlib.decompressobj(-15)
    try:
        data = inflater.decompress(stream, size + 1)
    except zlib.error as error:
        raise FrameError(f"the deflated frame is damaged ({error})") from error
    if len(data) > size or inflater.unconsumed_tail:
        raise FrameError(f"the deflated frame holds more than the {size} bytes Rows x Columns x Bits Allocated need")
    if not inflater.eof:
        raise FrameError(f"the deflated frame is truncated: it ends after {len(data)} of {size} bytes")
    if len(data) != size:
        raise FrameError(f"the deflated frame holds {len(data)} bytes but Rows x Columns x Bits Allocated need {size}")
    if len(inflater.unused_data) > 1 or inflater.unused_data.strip(b"\0"):
        raise FrameError(f"{len(inflater.unused_data)} bytes follow the end of the deflated frame")
    return data


class FrameDeflateCodec(Codec):
    """Deflated Image Frame Compression (1.2.840.10008.1.2.8.1, Supplement 244)."""

    encodes_bits = (1, 8, 16)
    decodes_bits = (1, 8, 16)
    max_side = 65535
    encoder_modules = ()  # Python's zlib; zlib-ng through imagecodecs when installed
    decoder_modules = ()

    def encoder(self) -> Callable[[np.ndarray], bytes]:
        def encode(frame: np.ndarray) -> bytes:
            if frame.dtype == bool:
                return deflate_raw(pack_bits(frame))
            return deflate_raw(np.ascontiguousarray(frame, dtype=frame.dtype.newbyteorder("<")).tobytes())

        return encode

    def decoder(self, frame: FrameFormat) -> Callable[[bytes | memoryview], np.ndarray]:
        def decode(stream: bytes | memoryview) -> np.ndarray:
            data = inflate_raw(stream, frame.nbytes)
            if frame.bits == 1:
                return unpack_bits(data, frame)
            return np.frombuffer(data, dtype=frame.dtype).reshape(frame.rows, frame.columns)

        return decode

    def encoder_releases_gil(self) -> bool:
        return True

    def decoder_releases_gil(self) -> bool:
        return True


# ---------------------------------------------------------------------------------------------- RLE


class RleCodec(Codec):
    """RLE Lossless (1.2.840.10008.1.2.5)."""

    encoder_modules = (("rle", "pylibjpeg-rle"),)
    decoder_modules = ()  # without pylibjpeg-rle, pydicom's own RLE decoder is used (decoder() raises ImportError)

    def encoder(self) -> Callable[[np.ndarray], bytes]:
        from rle.utils import encode_pixel_data

        def encode(frame: np.ndarray) -> bytes:
            rows, columns = frame.shape
            return bytes(encode_pixel_data(np.ascontiguousarray(frame, dtype=frame.dtype.newbyteorder("<")).tobytes(),
                                           rows=rows, columns=columns, samples_per_pixel=1,
                                           bits_allocated=8 * frame.dtype.itemsize, byteorder="<"))

        return encode

    def decoder(self, frame: FrameFormat) -> Callable[[bytes | memoryview], np.ndarray]:
        from rle.utils import decode_frame

        def decode(stream: bytes | memoryview) -> np.ndarray:
            segments = struct.unpack_from("<I", stream, 0)[0] if len(stream) >= 64 else -1
            if segments != frame.bits // 8:
                raise FrameError(f"the RLE frame has {segments} segments; {frame.bits}-bit pixels of one sample need "
                                 f"{frame.bits // 8}")
            buffer = decode_frame(bytes(stream), frame.pixels, frame.bits, "<")
            if len(buffer) != frame.pixels * frame.dtype.itemsize:
                raise FrameError(f"the RLE frame decodes to {len(buffer)} bytes, not {frame.rows} x {frame.columns} "
                                 "pixels")
            return np.frombuffer(buffer, dtype=frame.dtype).reshape(frame.rows, frame.columns)

        return decode


# ------------------------------------------------------------------------------------ many frames


def thread_count(threads: int) -> int:
    """Threads to use: ``threads``, or every core for 0 (at least 1)."""
    return max(1, int(threads) if threads and threads > 0 else (os.cpu_count() or 1))


def encode_frames(frames: np.ndarray | Sequence[np.ndarray], syntax: TransferSyntax, threads: int = 0) -> list[bytes]:
    """The code streams of ``frames`` (``(n, rows, columns)``: uint8/uint16, bool for 1-bit) in ``syntax``.

    Parameters
    ----------
    frames: numpy.ndarray
        The frames in file order.
    syntax: TransferSyntax
        An encapsulated syntax (its registry row's codec encodes).
    threads: int
        Encoding threads (0: every core); used only where the binding releases the GIL. The
        result is the same whatever the number.

    Returns
    -------
    list[bytes]
        One code stream per frame.
    """
    codec = syntax.codec
    if codec is None:
        raise ValueError(f"{syntax.label} stores frames natively; there is nothing to encode.")
    syntax.require_encoder()
    encode = codec.encoder()
    workers = thread_count(threads) if codec.encoder_releases_gil() else 1
    if workers <= 1 or len(frames) < 2:
        return [encode(frame) for frame in frames]
    # One task per thread, each encoding every n-th frame (balanced: a body's frames with the most
    # content lie together): 334 tasks, one per frame, cost their futures and hand-offs (~6 ms).
    count = min(workers, len(frames))
    with ThreadPoolExecutor(max_workers=count) as pool:
        parts = list(pool.map(lambda start: [encode(frame) for frame in frames[start::count]], range(count)))
    streams: list[bytes] = [b""] * len(frames)
    for start, part in enumerate(parts):
        streams[start::count] = part
    return streams


def native_frames(ds: Dataset) -> np.ndarray:
    """The frames of a dataset with native Pixel Data: ``(n, rows, columns)``; bool for Bits Allocated 1.

    1-bit native data runs on across frames without padding (PS3.5 8.1.1); it is unpacked here.
    """
    rows, columns, bits = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if bits == 1:
        pixels = np.unpackbits(np.frombuffer(ds.PixelData, dtype=np.uint8), count=count * rows * columns,
                               bitorder="little")
        return pixels.reshape(count, rows, columns).astype(bool)
    dtype = np.dtype("<u2") if bits == 16 else np.dtype(np.uint8)
    return np.frombuffer(ds.PixelData, dtype=dtype, count=count * rows * columns).reshape(count, rows, columns)


def encode_dataset(ds: Dataset, syntax: TransferSyntax, threads: int = 0) -> None:
    """Encode the native Pixel Data of ``ds`` frame by frame into ``syntax`` (encapsulated), in place.

    This also turns a BINARY SEG with native (1-bit) Pixel Data into Deflated Image Frame
    Compression: each frame is packed on its own (padded to a whole byte), then deflated.
    The file meta's Transfer Syntax UID is set; the caller saves the dataset as usual.
    """
    from pydicom.encaps import encapsulate
    from pydicom.uid import UID

    bits = int(ds.BitsAllocated)
    codec = syntax.codec
    if codec is None or bits not in codec.encodes_bits:
        raise InvalidSegmentationError(
            f"{syntax.label} cannot encode {bits}-bit frames; choose "
            + ("frame-deflate for BINARY segmentations." if bits == 1 else "another transfer syntax.")
        )
    frames = native_frames(ds)
    ds.PixelData = encapsulate(encode_frames(frames, syntax, threads))
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = UID(syntax.uid)
