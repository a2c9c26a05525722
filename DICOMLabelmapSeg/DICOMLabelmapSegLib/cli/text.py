"""Untrusted text (header strings of files) made safe for a terminal."""

from __future__ import annotations

import re
from typing import Any

# C0 and C1 control characters, DEL, and the bidirectional overrides/isolates that reorder what a terminal shows.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(value: Any) -> str:
    """``str(value)`` with control characters shown as escapes (``\\x1b``, ``\\n``, ...), so that a file's
    strings cannot move the cursor, recolor the terminal or forge extra output lines."""
    return _UNSAFE.sub(_escape, "" if value is None else str(value))
