"""What a run tells the user: progress (a tqdm bar with rate and ETA on a terminal), errors, the
summary, and the machine-readable JSON-lines report (``--report``)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from .common import PROGRAM

Progress = Callable[[float, str], None]


def _size(paths: Sequence[str]) -> int:
    total = 0
    for path in paths:
        try:
            if os.path.isdir(path):
                for root, _, files in os.walk(path):
                    total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
            else:
                total += os.path.getsize(path)
        except OSError:
            pass
    return total


def report_line(result: Any) -> dict[str, Any]:
    """The JSON-lines record of one case result."""
    status = "failed" if not result.ok else "skipped" if result.skipped else "ok"
    return {
        "name": result.name,
        "status": status,
        "inputs": list(result.inputs),
        "outputs": list(result.outputs),
        "input_bytes": _size(result.inputs),
        "output_bytes": _size(result.outputs),
        "seconds": round(result.seconds, 3),
        "error": result.error,
        "error_kind": result.error_kind,
        "notes": list(result.notes),
    }


class Reporter:
    """Progress on stderr (only on a terminal, never with --quiet), errors, the summary and the report file."""

    def __init__(
        self, stream: TextIO | None = None, quiet: bool = False, debug: bool = False,
        report_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.debug = debug
        self.interactive = not quiet and bool(getattr(self.stream, "isatty", lambda: False)())
        self.report_path = Path(report_path) if report_path else None
        self._last_draw = 0.0
        self._drawn = 0  # length of the single-case progress line on screen
        self._bar: Any = None

    # --- multi-case progress bar
    def start(self, total: int) -> None:
        """A progress bar over ``total`` cases (terminal only, more than one case)."""
        if self.interactive and total > 1:
            from tqdm import tqdm

            self._bar = tqdm(total=total, file=self.stream, unit="case", dynamic_ncols=True, leave=False)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _write(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text.rstrip("\n"), file=self.stream)
        else:
            self.stream.write(text)

    def case_progress(self, name: str) -> Progress | None:
        """A ``progress(fraction, message)`` callback drawing one updating line, or None."""
        if not self.interactive:
            return None

        def progress(fraction: float, message: str) -> None:
            now = time.monotonic()
            if fraction < 1.0 and now - self._last_draw < 0.1:
                return
            self._last_draw = now
            width = max(20, shutil.get_terminal_size((80, 24)).columns - 1)
            text = f"{name}: {max(0.0, min(1.0, fraction)) * 100:3.0f}% {message}"[:width]
            self.stream.write("\r" + text.ljust(self._drawn))
            self._drawn = len(text)
            self.stream.flush()

        return progress

    def case_done(self, number: int, total: int, result: Any) -> None:
        """Report a finished case: errors always, the report line always, the bar on a terminal."""
        if self.interactive and self._drawn:
            self.stream.write("\r" + " " * self._drawn + "\r")
            self._drawn = 0
        if self.report_path is not None:
            with open(self.report_path, "a", encoding="utf-8") as report:
                report.write(json.dumps(report_line(result), ensure_ascii=False) + "\n")
        if not result.ok:
            prefix = f"[{number}/{total}] " if total > 1 else ""
            self._write(f"{PROGRAM}: error: {prefix}{result.name}: {result.error}\n")
            if self.debug and result.details:
                self._write(result.details)
        for note in result.notes:
            if not self.quiet:
                self._write(f"{PROGRAM}: {result.name}: {note}\n")
        if self._bar is not None:
            self._bar.update(1)
            self._bar.refresh()  # a case takes long enough: draw each one (tqdm would skip some)
        self.stream.flush()

    def summary(self, results: Sequence[Any]) -> None:
        """One line (plus the failed cases) at the end of a multi-case run."""
        if len(results) < 2 or self.quiet:
            return
        failed = [result for result in results if not result.ok]
        skipped = sum(1 for result in results if result.ok and result.skipped)
        seconds = sum(result.seconds for result in results)
        resumed = f", {skipped} already complete (skipped)" if skipped else ""
        self.stream.write(
            f"{PROGRAM}: {len(results) - len(failed)} of {len(results)} cases succeeded{resumed}, "
            f"{len(failed)} failed ({seconds:.1f} s of work)\n"
        )
        for result in failed:
            self.stream.write(f"  failed: {result.name}: {result.error}\n")
        self.stream.flush()
