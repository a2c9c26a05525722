"""What every subcommand of ``dicom-labelmap-seg`` shares: exit codes, error lines, names, options."""

from __future__ import annotations

import argparse
import errno
import os
from collections.abc import Sequence
from pathlib import Path

from ..dicom.options import MAX_SERIES_NUMBER
from ..errors import LabelmapSegError
from ..formats.registry import ALL_SUFFIXES

PROGRAM = "dicom-labelmap-seg"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\
exit codes:
  0    success (every case succeeded)
  1    an input could not be processed: invalid or missing file, series that cannot be
       referenced, unsupported SEG, an optional package that is not installed, a receiver
       that refused the files, ... (the reason is printed on stderr in one line; --debug
       adds the traceback)
  2    usage error (unknown option, missing argument, a value out of range)
  3    unexpected internal error (a bug: please report it with the output of --debug)
  130  interrupted (Ctrl-C)
"""


#: pip extra that provides each optional top-level module (the names in pyproject.toml's extras).
OPTIONAL_MODULE_EXTRAS = {
    "nrrd": "files",
    "nibabel": "files",
    "dask": "dask",
    "distributed": "dask",
    "fsspec": "dask",
    "dicomweb_client": "pacs",
    "pynetdicom": "pacs",
    "requests": "pacs",
}


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's layout and appends '(default: X)' where a default means something."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        meaningful = action.default not in (None, False, argparse.SUPPRESS) and bool(action.option_strings)
        if meaningful and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def series_number(text: str) -> int:
    """argparse type: a Series Number, 1 .. 2^31-1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    problem = series_number_problem(value)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return value


def series_number_problem(value: int) -> str | None:
    """Why ``value`` is not a valid Series Number, or None."""
    if not 1 <= value <= MAX_SERIES_NUMBER:
        return f"{value} is not a series number: give a whole number from 1 to {MAX_SERIES_NUMBER}"
    return None


def missing_extra_message(error: ImportError) -> str | None:
    """'X is not installed: pip install ...[extra]' for an optional module, or None for other import errors."""
    extra = getattr(error, "extra", None)
    if extra:
        return str(error)
    name = (getattr(error, "name", None) or "").split(".")[0]
    extra = OPTIONAL_MODULE_EXTRAS.get(name)
    if not extra:
        return None
    return (
        f"this needs the Python package '{name}', which is not installed: "
        f"pip install 'dicom-labelmap-seg[{extra}]'"
    )


def classify_error(error: BaseException) -> tuple[str, str]:
    """(kind, one-line message) of an exception: kind 'input' (exit 1) or 'internal' (exit 3)."""
    if isinstance(error, ImportError) and not isinstance(error, LabelmapSegError):
        message = missing_extra_message(error)
        if message:
            return "input", one_line(message)
    if isinstance(error, (LabelmapSegError, OSError)):
        return "input", one_line(describe_error(error))
    if isinstance(error, RecursionError):
        return "input", "the input is nested too deeply to be read"
    if isinstance(error, MemoryError):
        return "input", "not enough memory for this input (is it far larger than it should be?)"
    return "internal", one_line(f"unexpected {type(error).__name__}: {error}")


def describe_error(error: BaseException) -> str:
    """The message of an error; OSErrors as 'cannot access PATH: reason', or 'writing failed' when the disk is full."""
    if isinstance(error, OSError) and not isinstance(error, LabelmapSegError):
        where = f" {error.filename}" if getattr(error, "filename", None) else ""
        if error.errno in _WRITE_FAILURES:
            return (f"writing{where} failed: {error.strerror or error}; free disk space (or raise the file size "
                    "limit) and run the command again (nothing was left half-written)")
        return f"cannot access{where}: {error.strerror or error}"
    return str(error)


#: errno values of a write that ran out of room: disk full, quota exceeded, file size limit.
_WRITE_FAILURES = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines too) made one space."""
    return " ".join(str(text).split())


def case_name(path: str) -> str:
    """A short name for an input: its file name without the segmentation suffix."""
    name = Path(path.rstrip("/\\")).name or "segmentation"
    for suffix in (*ALL_SUFFIXES, ".dcm"):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def unique_names(paths: Sequence[str]) -> list[str]:
    """:func:`case_name` of each path, made unique with _2, _3, ... suffixes."""
    names: list[str] = []
    for path in paths:
        name = case_name(path)
        candidate, number = name, 2
        while candidate in names:
            candidate, number = f"{name}_{number}", number + 1
        names.append(candidate)
    return names


def default_jobs() -> int:
    """Worker processes by default: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
