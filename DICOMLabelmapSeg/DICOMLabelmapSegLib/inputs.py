"""Reading untrusted input files with a type check and a size bound.

Every file the library reads whole (label tables, batch manifests, NRRD headers and detached
data, JSON sidecars) goes through :func:`open_regular` or :func:`read_bounded`: a device
(``/dev/zero``), a FIFO or a socket is refused before it is opened for reading (it could block
or never end), and a file is never read beyond ``limit`` bytes. :func:`parse_json` turns the
errors of a hostile JSON document (nesting deep enough to exhaust the recursion limit) into one
clear error.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import IO, Any

from .errors import LabelmapSegError

__all__ = ["InputFileError", "open_regular", "parse_json", "read_bounded", "require_regular_file"]


class InputFileError(LabelmapSegError, ValueError):
    """An input file is not a regular file, is too large, or cannot be parsed."""


def require_regular_file(
    path: str | os.PathLike[str], what: str, error: type[Exception] = InputFileError
) -> os.stat_result:
    """``os.stat(path)`` if ``path`` is a regular file (symlinks followed), else raise ``error``."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise error(f"{what} '{path}' does not exist; check the path.") from None
    except OSError as failure:
        raise error(f"{what} '{path}' cannot be read ({failure.strerror}); check the path and permissions.") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "folder" if stat.S_ISDIR(info.st_mode) else "device, pipe or socket"
        raise error(f"{what} '{path}' is a {kind}, not a regular file; give a file.")
    return info


def open_regular(path: str | os.PathLike[str], what: str, error: type[Exception] = InputFileError) -> IO[bytes]:
    """Open a regular file for binary reading without blocking on a FIFO that replaced it meanwhile."""
    require_regular_file(path, what, error)
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as failure:
        raise error(f"{what} '{path}' cannot be read ({failure.strerror}); check the path and permissions.") from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):  # swapped between the check and the open
        os.close(descriptor)
        raise error(f"{what} '{path}' is not a regular file; give a file.")
    if hasattr(os, "set_blocking"):
        os.set_blocking(descriptor, True)
    return os.fdopen(descriptor, "rb")


def read_bounded(path: str | os.PathLike[str], limit: int, what: str, error: type[Exception] = InputFileError) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (else ``error``: it is too large)."""
    with open_regular(path, what, error) as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise error(f"{what} '{path}' is larger than {limit:,} bytes; it is not the small file expected here.")
    return data


def parse_json(text: str | bytes, what: str, error: type[Exception] = InputFileError) -> Any:
    """``json.loads(text)``; a syntax error or absurd nesting becomes ``error`` naming ``what``."""
    try:
        return json.loads(text)
    except RecursionError:
        raise error(f"{what} is nested too deeply to be a real document; check the file.") from None
    except UnicodeDecodeError:
        raise error(f"{what} is not UTF-8 text; save it as UTF-8 JSON.") from None
    except json.JSONDecodeError as failure:
        raise error(
            f"{what} is not a readable JSON file (line {failure.lineno}, column {failure.colno}: {failure.msg})."
        ) from None
