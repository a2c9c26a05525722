"""Lossless encoding of single label frames (uint8/uint16, one sample) for encapsulated transfer syntaxes.

* :func:`jpeg_ls_frame`: JPEG-LS lossless with CharLS (pyjpegls), any frame size. pyjpegls
  gives CharLS a destination buffer of twice the raw frame, which is too small for the
  codestream's headers when a frame has fewer than about 32 pixels ("destination buffer is too
  small"); such frames are encoded through pyjpegls' extension module with a padded source, so
  the buffer is large enough (CharLS reads only ``rows * columns`` pixels of it).
* :func:`jpeg_2000_frame`: JPEG 2000 reversible (lossless) with Pillow (openjpeg), with fewer
  wavelet resolutions for small frames (highdicom's encoder uses 6, which needs 32+ pixel sides).

Both write the frame with Bits Stored equal to its dtype's size (8 or 16), as pydicom's
encoders do for the datasets highdicom builds.
"""

from __future__ import annotations

import io

import numpy as np

from ..errors import InvalidSegmentationError

#: Frames with fewer raw bytes than this go straight to the padded CharLS call.
_JPEG_LS_SMALL_FRAME_BYTES = 256
#: Extra source bytes given to CharLS on the padded path (its destination buffer is twice the source).
_JPEG_LS_PADDING_BYTES = 1024


def jpeg_ls_frame(frame: np.ndarray) -> bytes:
    """The lossless JPEG-LS codestream of one 2D uint8/uint16 frame.

    Raises
    ------
    InvalidSegmentationError
        CharLS could not encode the frame (the message says which frame size and what to do).
    """
    import jpeg_ls

    rows, columns = frame.shape
    bits = 8 * frame.dtype.itemsize
    data = np.ascontiguousarray(frame, dtype=frame.dtype.newbyteorder("<")).tobytes()
    if len(data) >= _JPEG_LS_SMALL_FRAME_BYTES:
        try:
            return bytes(jpeg_ls.encode_buffer(data, rows, columns, 1, bits))
        except RuntimeError:
            pass  # the 2x buffer overflowed: retry with a padded source below
    return _jpeg_ls_padded(data, rows, columns, bits)


def _jpeg_ls_padded(data: bytes, rows: int, columns: int, bits: int) -> bytes:
    try:
        import _CharLS  # pyjpegls' extension module (jpeg_ls.encode_buffer calls its _encode)

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


def jpeg_2000_frame(frame: np.ndarray) -> bytes:
    """The lossless JPEG 2000 codestream (J2K, no JP2 box) of one 2D uint8/uint16 frame."""
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
