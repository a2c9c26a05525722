"""The codec registry: one row per transfer syntax, read by the reader, the writer, the CLI and Slicer.

A :class:`TransferSyntax` member is a syntax this library writes; its :class:`SyntaxRow` says
everything about it: UID, CLI name (the member's value, a contract: scripts call it), label,
a one-line explanation (who reads it, size and speed on the 512x512x334 / 61-label benchmark
case), how pixel data is stored (:class:`PixelStorage`), the frame codec (encoder and decoder,
:mod:`.codecs`), the pip packages each direction needs, and whether it is lossless.
:func:`row_for_uid` also knows the syntaxes that are only read (other JPEG-LS, JPEG 2000, HTJ2K,
JPEG XL variants, implicit VR, big endian), and which of them may be lossy.

Adding a syntax is one row here (plus its tests); nothing else lists syntaxes.

Deflated Image Frame Compression (Supplement 244, 1.2.840.10008.1.2.8.1) and the JPEG XL
syntaxes (1.2.840.10008.1.2.4.110-112) are unknown to pydicom 3.0.2: :func:`register_with_pydicom`
adds them to pydicom's UID table as encapsulated explicit VR little endian transfer syntaxes (as
the standard defines them), so pydicom writes and reads the file meta and data set correctly; a
pydicom that knows a UID keeps its own entry.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..errors import MissingCodecError
from . import codecs
from .codecs import Codec, has_module


class PixelStorage(enum.Enum):
    """How a transfer syntax stores Pixel Data."""

    NATIVE = "native"  #: uncompressed pixel data
    ENCAPSULATED = "encapsulated"  #: one compressed fragment per frame
    DATASET_DEFLATE = "dataset-deflate"  #: native pixel data, the whole data set after the file meta deflated


@dataclass(frozen=True)
class SyntaxRow:
    """Everything about one transfer syntax."""

    uid: str
    label: str
    explanation: str
    storage: PixelStorage
    codec: Codec | None = None
    lossless: bool = True
    #: Tools known to read it (shown in --help and the panel).
    readers: str = ""
    #: pydicom's UID table entry, for syntaxes pydicom 3.0.2 does not know.
    pydicom_keyword: str | None = None


class TransferSyntax(enum.Enum):
    """Transfer syntaxes for writing; the value is the short name used by the CLI and settings."""

    JPEG_LS = "jpeg-ls"
    RLE = "rle"
    JPEG_2000 = "jpeg2000"
    HTJ2K = "htj2k"
    JPEG_XL = "jpeg-xl"
    FRAME_DEFLATE = "frame-deflate"
    DEFLATED = "deflated"
    EXPLICIT = "explicit"

    @property
    def row(self) -> SyntaxRow:
        """This syntax's registry row."""
        return _ROWS[self]

    @property
    def uid(self) -> str:
        """The transfer syntax UID."""
        return self.row.uid

    @property
    def label(self) -> str:
        """A short human-readable name."""
        return self.row.label

    @property
    def explanation(self) -> str:
        """One line telling a user when to choose this syntax, who reads it, and its size and speed."""
        return self.row.explanation

    @property
    def readers(self) -> str:
        """Tools known to read this syntax."""
        return self.row.readers

    @property
    def codec(self) -> Codec | None:
        """The frame codec (None for native and whole-data-set deflate)."""
        return self.row.codec

    @property
    def is_encapsulated(self) -> bool:
        """True if pixel data is stored as compressed fragments (one per frame)."""
        return self.row.storage == PixelStorage.ENCAPSULATED

    @property
    def whole_dataset_deflate(self) -> bool:
        """True if the data set after the file meta is deflated as a whole (Deflated Explicit VR LE)."""
        return self.row.storage == PixelStorage.DATASET_DEFLATE

    @property
    def encodes_bits(self) -> tuple[int, ...]:
        """Bits Allocated values this syntax writes (1 only with Deflated Image Frame Compression)."""
        return self.row.codec.encodes_bits if self.row.codec is not None else (1, 8, 16)

    @classmethod
    def from_uid(cls, uid: str) -> TransferSyntax:
        """Look a syntax up by its UID; raise ValueError for syntaxes we do not write."""
        for syntax in cls:
            if syntax.uid == uid:
                return syntax
        raise ValueError(f"Transfer syntax {uid} is not one of the syntaxes this library writes.")

    @classmethod
    def parse(cls, value: str | TransferSyntax) -> TransferSyntax:
        """Accept an enum member, its short name (``'jpeg-ls'``), its member name or its UID."""
        if isinstance(value, cls):
            return value
        text = str(value).strip()
        for syntax in cls:
            if text.lower() in (syntax.value, syntax.name.lower()) or text == syntax.uid:
                return syntax
        choices = ", ".join(s.value for s in cls)
        raise ValueError(f"Unknown transfer syntax '{value}'. Choose one of: {choices}.")

    def require_encoder(self) -> None:
        """Raise MissingCodecError naming the pip package if this syntax cannot be encoded here."""
        _require(self.missing_encoder_packages(), f"write {self.label}")

    def require_decoder(self) -> None:
        """Raise MissingCodecError naming the pip package if this syntax cannot be decoded here."""
        _require(self.missing_decoder_packages(), f"read {self.label}")

    def missing_encoder_packages(self) -> list[str]:
        """pip packages needed to encode this syntax that are not installed here (empty if none)."""
        return missing_packages(self.row.codec.encoder_modules if self.row.codec else ())

    def missing_decoder_packages(self) -> list[str]:
        """pip packages needed to decode this syntax that are not installed here (empty if none)."""
        return missing_packages(self.row.codec.decoder_modules if self.row.codec else ())


def missing_packages(alternatives: tuple[tuple[str, str], ...]) -> list[str]:
    """The preferred pip package of ``alternatives`` ((import name, package), any one suffices) if none is here."""
    if not alternatives or any(has_module(module) for module, _ in alternatives):
        return []
    return [alternatives[0][1]]


def _require(missing: list[str], purpose: str) -> None:
    if missing:
        raise MissingCodecError(
            f"To {purpose} the Python package '{missing[0]}' is needed but not installed. "
            f"Install it with: pip install {missing[0]}"
        )


_JPEG_LS = codecs.JpegLsCodec()
_JPEG_2000 = codecs.Jpeg2000Codec()
_HTJ2K = codecs.Htj2kCodec()
_JPEG_XL = codecs.JpegXlCodec()
_FRAME_DEFLATE = codecs.FrameDeflateCodec()
_RLE = codecs.RleCodec()

# Sizes: whole files of the 512x512x334, 61-label TotalSegmentator case; times: the codec alone, 1 thread
# (BENCHMARK.md).
_ROWS: dict[TransferSyntax, SyntaxRow] = {
    TransferSyntax.JPEG_LS: SyntaxRow(
        "1.2.840.10008.1.2.4.80", "JPEG-LS lossless",
        "Small and fast (1.37 MB, 0.06 s codec time); read by DCMTK, highdicom/pydicom, OHIF/cornerstone3D "
        "(not dcmqi); the recommended default.",
        PixelStorage.ENCAPSULATED, _JPEG_LS, readers="DCMTK, highdicom/pydicom, OHIF/cornerstone3D, this library",
    ),
    TransferSyntax.RLE: SyntaxRow(
        "1.2.840.10008.1.2.5", "RLE lossless",
        "Run-length compression every DICOM reader decodes, dcmqi and Slicer's built-in SEG plugin too (2.77 MB).",
        PixelStorage.ENCAPSULATED, _RLE,
        readers="dcmqi, Slicer's built-in plugin, DCMTK, highdicom/pydicom, OHIF/cornerstone3D, this library",
    ),
    TransferSyntax.JPEG_2000: SyntaxRow(
        "1.2.840.10008.1.2.4.90", "JPEG 2000 lossless",
        "Widely supported by PACS and viewers (not DCMTK's free toolkit, not dcmqi); large for label maps "
        "(4.98 MB) and the slowest to write.",
        PixelStorage.ENCAPSULATED, _JPEG_2000, readers="highdicom/pydicom, OHIF/cornerstone3D, most PACS, this library",
    ),
    TransferSyntax.HTJ2K: SyntaxRow(
        "1.2.840.10008.1.2.4.201", "HTJ2K lossless",
        "High-Throughput JPEG 2000 for viewers that stream it (OHIF/cornerstone3D); large for label maps "
        "(5.87 MB, 0.2 s codec time); needs imagecodecs to write.",
        PixelStorage.ENCAPSULATED, _HTJ2K,
        readers="OHIF/cornerstone3D, pydicom with pylibjpeg-openjpeg, this library (imagecodecs or pylibjpeg-openjpeg)",
    ),
    TransferSyntax.JPEG_XL: SyntaxRow(
        "1.2.840.10008.1.2.4.110", "JPEG XL lossless",
        f"Smallest (1.06 MB at libjxl effort {codecs.JPEG_XL_EFFORT}, 0.8 s codec time; effort 7 would save 0.2 MB "
        "more but take 23-31 s); few readers yet (this library with imagecodecs); needs imagecodecs.",
        PixelStorage.ENCAPSULATED, _JPEG_XL, readers="this library (imagecodecs)", pydicom_keyword="JPEGXLLossless",
    ),
    TransferSyntax.FRAME_DEFLATE: SyntaxRow(
        "1.2.840.10008.1.2.8.1", "Deflated Image Frame Compression",
        f"Each frame deflated (Supplement 244, made for segmentations; BINARY too): 1.16 MB at level "
        f"{codecs.DEFLATE_LEVEL}, 0.9 s codec time; new: pydicom 3.1+, recent cornerstone3D and this library read "
        "it, DCMTK 3.6.7, dcmqi and highdicom 0.28 do not.",
        PixelStorage.ENCAPSULATED, _FRAME_DEFLATE, readers="pydicom 3.1+, cornerstone3D, this library",
        pydicom_keyword="DeflatedImageFrameCompression",
    ),
    TransferSyntax.DEFLATED: SyntaxRow(
        "1.2.840.10008.1.2.1.99", "Deflated explicit VR little endian",
        "Whole file deflated (1.12 MB); read by DCMTK and pydicom, but some viewers and dciodvfy cannot open it.",
        PixelStorage.DATASET_DEFLATE, readers="DCMTK, highdicom/pydicom, this library",
    ),
    TransferSyntax.EXPLICIT: SyntaxRow(
        "1.2.840.10008.1.2.1", "Uncompressed (explicit VR little endian)",
        "No compression: largest files (87.8 MB), readable by every DICOM tool.",
        PixelStorage.NATIVE, readers="every DICOM tool",
    ),
}


def _read_only(uid: str, label: str, storage: PixelStorage, codec: Codec | None = None,
               lossless: bool = True, pydicom_keyword: str | None = None) -> SyntaxRow:
    return SyntaxRow(uid, label, "Read only.", storage, codec, lossless, pydicom_keyword=pydicom_keyword)


#: Syntaxes this library reads but does not write. Frames of encapsulated ones without a codec
#: here are decoded by pydicom's plugins. ``lossless=False``: the syntax allows lossy coding.
_READ_ONLY_ROWS: dict[str, SyntaxRow] = {
    row.uid: row
    for row in (
        _read_only("1.2.840.10008.1.2", "Implicit VR little endian", PixelStorage.NATIVE),
        _read_only("1.2.840.10008.1.2.2", "Explicit VR big endian", PixelStorage.NATIVE),
        _read_only("1.2.840.10008.1.2.4.81", "JPEG-LS near-lossless (lossy)", PixelStorage.ENCAPSULATED, _JPEG_LS,
                   lossless=False),
        _read_only("1.2.840.10008.1.2.4.91", "JPEG 2000 (lossy allowed)", PixelStorage.ENCAPSULATED, _JPEG_2000,
                   lossless=False),
        _read_only("1.2.840.10008.1.2.4.202", "HTJ2K lossless RPCL", PixelStorage.ENCAPSULATED, _HTJ2K),
        _read_only("1.2.840.10008.1.2.4.203", "HTJ2K (lossy allowed)", PixelStorage.ENCAPSULATED, _HTJ2K,
                   lossless=False),
        _read_only("1.2.840.10008.1.2.4.111", "JPEG XL JPEG recompression (lossy)", PixelStorage.ENCAPSULATED,
                   _JPEG_XL, lossless=False, pydicom_keyword="JPEGXLJPEGRecompression"),
        _read_only("1.2.840.10008.1.2.4.112", "JPEG XL (lossy allowed)", PixelStorage.ENCAPSULATED, _JPEG_XL,
                   lossless=False, pydicom_keyword="JPEGXL"),
        _read_only("1.2.840.10008.1.2.4.50", "JPEG baseline (lossy)", PixelStorage.ENCAPSULATED, lossless=False),
        _read_only("1.2.840.10008.1.2.4.51", "JPEG extended (lossy)", PixelStorage.ENCAPSULATED, lossless=False),
        _read_only("1.2.840.10008.1.2.4.57", "JPEG lossless", PixelStorage.ENCAPSULATED),
        _read_only("1.2.840.10008.1.2.4.70", "JPEG lossless SV1", PixelStorage.ENCAPSULATED),
        _read_only("1.2.840.10008.1.2.4.92", "JPEG 2000 Part 2 multi-component lossless", PixelStorage.ENCAPSULATED),
        _read_only("1.2.840.10008.1.2.4.93", "JPEG 2000 Part 2 multi-component (lossy allowed)",
                   PixelStorage.ENCAPSULATED, lossless=False),
        _read_only("1.2.840.10008.1.2.1.98", "Encapsulated uncompressed explicit VR little endian",
                   PixelStorage.ENCAPSULATED),
    )
}


def row_for_uid(uid: str) -> SyntaxRow | None:
    """The registry row of a transfer syntax UID (written or only read), or None if unknown here."""
    for syntax in TransferSyntax:
        if syntax.uid == uid:
            return syntax.row
    return _READ_ONLY_ROWS.get(uid)


def may_be_lossy(uid: str) -> bool:
    """True if pixel data in this transfer syntax may have been coded lossily (video and unknown syntaxes too)."""
    row = row_for_uid(uid)
    if row is not None:
        return not row.lossless
    from pydicom.uid import UID

    return UID(uid).is_transfer_syntax and UID(uid).is_compressed  # e.g. MPEG, HEVC: lossy


def register_with_pydicom() -> None:
    """Add the syntaxes pydicom does not know (Sup 244) to its UID table, as the standard defines them.

    pydicom then encodes the data set as explicit VR little endian and the Pixel Data as
    encapsulated (it derives both from the UID). A pydicom that knows a UID keeps its own entry.
    """
    try:
        from pydicom._uid_dict import UID_dictionary
    except ImportError:  # a pydicom without this table: it will know the syntaxes itself
        return
    for row in [*_ROWS.values(), *_READ_ONLY_ROWS.values()]:
        if row.pydicom_keyword:
            UID_dictionary.setdefault(row.uid, (row.label, "Transfer Syntax", "", "", row.pydicom_keyword))


register_with_pydicom()
