"""Texts shown to the user by the Slicer shell: counts, sizes and error messages."""

from __future__ import annotations

from ..errors import LabelmapSegError


def plural(count: int, word: str) -> str:
    """``'1 file'``, ``'2 files'``."""
    return f"{count} {word}{'' if count == 1 else 's'}"


def humanSize(size: int) -> str:
    """A byte count as ``'812 bytes'``, ``'1.5 kB'``, ``'3.2 MB'`` (powers of 1000)."""
    value = float(size)
    for unit in ("bytes", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} bytes"  # pragma: no cover - the loop always returns


def userMessage(error: BaseException) -> str:
    """The message shown to the user for an error raised while loading or exporting."""
    if isinstance(error, (LabelmapSegError, ValueError)):
        return str(error)
    return f"Unexpected error ({type(error).__name__}): {error}"
