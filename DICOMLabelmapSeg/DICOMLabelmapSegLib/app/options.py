"""Export options from what a user gave (the CLI's and the converter's one route to ExportOptions)."""

from __future__ import annotations

from typing import Any

from ..dicom.options import ExportOptions
from ..errors import LabelmapSegError


class OptionError(LabelmapSegError, ValueError):
    """An option value the library refuses."""


def export_options(**values: Any) -> ExportOptions:
    """ExportOptions from the given values (None = the library's default).

    Defaults and validation live in :class:`~..dicom.options.ExportOptions`; a value it refuses
    becomes an :class:`OptionError` (bad input, exit 1), not an internal error.
    """
    given = {key: value for key, value in values.items() if value is not None}
    try:
        return ExportOptions(**given)
    except (ValueError, TypeError) as error:
        if isinstance(error, LabelmapSegError):
            raise
        raise OptionError(str(error)) from None
