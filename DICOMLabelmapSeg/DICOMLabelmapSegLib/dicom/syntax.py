"""Transfer syntaxes offered for LABELMAP SEG output, and the codec packages they need."""

from __future__ import annotations

import enum
import importlib.util
from dataclasses import dataclass

from ..errors import MissingCodecError


@dataclass(frozen=True)
class _SyntaxInfo:
    uid: str
    label: str
    explanation: str
    encoder_modules: tuple[tuple[str, str], ...]  # (import name, pip package)
    decoder_modules: tuple[tuple[str, str], ...]


class TransferSyntax(enum.Enum):
    """Transfer syntaxes for writing; the value is the short name used by the CLI and settings."""

    JPEG_LS = "jpeg-ls"
    RLE = "rle"
    JPEG_2000 = "jpeg2000"
    DEFLATED = "deflated"
    EXPLICIT = "explicit"

    @property
    def _info(self) -> _SyntaxInfo:
        return _SYNTAX_INFO[self]

    @property
    def uid(self) -> str:
        """The transfer syntax UID."""
        return self._info.uid

    @property
    def label(self) -> str:
        """A short human-readable name."""
        return self._info.label

    @property
    def explanation(self) -> str:
        """One line telling a user when to choose this syntax."""
        return self._info.explanation

    @property
    def is_encapsulated(self) -> bool:
        """True if pixel data is stored as compressed fragments (one per frame)."""
        return self in (TransferSyntax.JPEG_LS, TransferSyntax.RLE, TransferSyntax.JPEG_2000)

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
        _require(self._info.encoder_modules, f"write {self.label}")

    def require_decoder(self) -> None:
        """Raise MissingCodecError naming the pip package if this syntax cannot be decoded here."""
        _require(self._info.decoder_modules, f"read {self.label}")

    def missing_encoder_packages(self) -> list[str]:
        """pip packages needed to encode this syntax that are not installed here (empty if none)."""
        return [package for module, package in self._info.encoder_modules if importlib.util.find_spec(module) is None]

    def missing_decoder_packages(self) -> list[str]:
        """pip packages needed to decode this syntax that are not installed here (empty if none)."""
        return [package for module, package in self._info.decoder_modules if importlib.util.find_spec(module) is None]


def _require(modules: tuple[tuple[str, str], ...], purpose: str) -> None:
    for module_name, package in modules:
        if importlib.util.find_spec(module_name) is None:
            raise MissingCodecError(
                f"To {purpose} the Python package '{package}' is needed but not installed. "
                f"Install it with: pip install {package}"
            )


_SYNTAX_INFO: dict[TransferSyntax, _SyntaxInfo] = {
    TransferSyntax.JPEG_LS: _SyntaxInfo(
        "1.2.840.10008.1.2.4.80",
        "JPEG-LS lossless",
        "Smallest files and fast; the recommended default.",
        (("jpeg_ls", "pyjpegls"),),
        (("jpeg_ls", "pyjpegls"),),
    ),
    TransferSyntax.RLE: _SyntaxInfo(
        "1.2.840.10008.1.2.5",
        "RLE lossless",
        "Simple run-length compression that almost every DICOM reader decodes (dcmqi too).",
        (),
        (),
    ),
    TransferSyntax.JPEG_2000: _SyntaxInfo(
        "1.2.840.10008.1.2.4.90",
        "JPEG 2000 lossless",
        "Widely supported by PACS and viewers; slower to write.",
        (("openjpeg", "pylibjpeg-openjpeg"),),
        (("openjpeg", "pylibjpeg-openjpeg"),),
    ),
    TransferSyntax.DEFLATED: _SyntaxInfo(
        "1.2.840.10008.1.2.1.99",
        "Deflated explicit VR little endian",
        "Whole file zlib-compressed; small, but some viewers cannot open it.",
        (),
        (),
    ),
    TransferSyntax.EXPLICIT: _SyntaxInfo(
        "1.2.840.10008.1.2.1",
        "Uncompressed (explicit VR little endian)",
        "No compression: largest files, readable by every DICOM tool.",
        (),
        (),
    ),
}
