"""How a LABELMAP SEG series is written: :class:`ExportOptions`, its defaults and its validation.

Every shell (CLI, module panel, DICOM plugin, demo) builds its options through this class, so
the defaults below are the only ones, and a value that cannot be written is refused here with
a ``ValueError`` naming the value and the rule, before any work is done.

Light to import (standard library and :mod:`.syntax` only), so that the Slicer shell and
:mod:`..app` can read the defaults when Slicer starts; Python 3.9 grammar.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any

from .. import __version__
from .syntax import TransferSyntax

__all__ = [
    "DEFAULT_CONTENT_LABEL",
    "DEFAULT_SERIES_DESCRIPTION",
    "DEFAULT_SERIES_NUMBER",
    "DEFAULT_TRANSFER_SYNTAX",
    "MAX_SERIES_NUMBER",
    "ExportOptions",
]

DEFAULT_TRANSFER_SYNTAX = TransferSyntax.JPEG_LS
DEFAULT_SERIES_DESCRIPTION = "Segmentation"
DEFAULT_SERIES_NUMBER = 300
DEFAULT_CONTENT_LABEL = "SEGMENTATION"
#: Series Number (0020,0011) is IS; highdicom and the standard's 32-bit signed range want 1..2^31-1.
MAX_SERIES_NUMBER = 2**31 - 1


class _TransferSyntaxField:
    """A dataclass field that takes a :class:`TransferSyntax` or any name/UID of one, and stores the member."""

    def __init__(self, default: TransferSyntax) -> None:
        self._default = default
        self._name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, instance: object | None, owner: type) -> TransferSyntax:
        if instance is None:
            return self._default  # dataclasses read the default from the class
        return instance.__dict__.get(self._name, self._default)  # type: ignore[no-any-return]

    def __set__(self, instance: object, value: TransferSyntax | str) -> None:
        instance.__dict__[self._name] = TransferSyntax.parse(value)


@dataclass(frozen=True)
class ExportOptions:
    """How to write a LABELMAP SEG series.

    Parameters
    ----------
    transfer_syntax: TransferSyntax | str
        The compression; also a short name (``"jpeg-ls"``) or UID of a :class:`TransferSyntax`.
        Always a :class:`TransferSyntax` when read back.
    palette_color: bool
        PALETTE COLOR photometric interpretation (a LUT of the segment colors) instead of MONOCHROME2.
    series_description, series_number, series_instance_uid
        Series attributes; a new Series Instance UID is generated when None. Series Number 1..2^31-1.
    content_label, content_description, content_creator_name
        Content Identification (the writer makes the label a valid Code String: upper case, 16 characters).
    manufacturer, manufacturer_model_name, software_versions, device_serial_number
        Equipment attributes (the writer shortens texts to 64 characters, with a warning).
    workers: int
        Passed to highdicom (0: encode frames in this process).
    threads: int
        Frame encoding threads (0: every core), used where the codec releases the GIL
        (:mod:`.codecs`); the files are the same whatever the number.

    Raises
    ------
    ValueError
        For an unknown transfer syntax, a series number outside 1..2^31-1 or an invalid Series
        Instance UID, with a message that says which value and what is allowed.
    """

    transfer_syntax: _TransferSyntaxField = _TransferSyntaxField(DEFAULT_TRANSFER_SYNTAX)
    palette_color: bool = False
    series_description: str = DEFAULT_SERIES_DESCRIPTION
    series_number: int = DEFAULT_SERIES_NUMBER
    series_instance_uid: str | None = None
    content_label: str = DEFAULT_CONTENT_LABEL
    content_description: str | None = None
    content_creator_name: str | None = None
    manufacturer: str = "DICOMLabelmapSeg"
    manufacturer_model_name: str = "DICOMLabelmapSeg"
    software_versions: str = field(default=__version__)
    device_serial_number: str = "0"
    workers: int = 0
    threads: int = 0

    def __post_init__(self) -> None:
        from .source import is_valid_uid  # pydicom: imported when options are built, not when Slicer starts

        _check_series_number(self.series_number)
        if isinstance(self.threads, bool) or not isinstance(self.threads, numbers.Integral) or self.threads < 0:
            raise ValueError(f"Encoding threads {self.threads!r} must be a whole number >= 0 (0: every core).")
        if self.series_instance_uid is not None and not is_valid_uid(self.series_instance_uid):
            raise ValueError(
                f"Series Instance UID '{self.series_instance_uid}' is not a valid UID (digits and dots, "
                "no leading zeros, at most 64 characters); leave it empty to generate one."
            )


def _check_series_number(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"Series number {value!r} is not a whole number; use 1 to {MAX_SERIES_NUMBER} (e.g. 300).")
    if not 1 <= int(value) <= MAX_SERIES_NUMBER:
        raise ValueError(f"Series number {value} is out of range; use 1 to {MAX_SERIES_NUMBER} (e.g. 300).")
