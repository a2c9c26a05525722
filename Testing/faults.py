"""Send real signals to a running command line at chosen points, and look at what is on disk.

:func:`signal_when` starts ``dicom-labelmap-seg`` (the console script's module) in its own
process group and sends a signal when a condition on the file system first holds (e.g. "a
temporary exists in the output folder") or after a delay, then waits for the process to end.
:func:`temporaries` and :func:`listing` say what a folder holds afterwards. Used by
test_faults.py (export and import) and usable for ``batch -j 2`` (send to the group).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hostile import capped_environment, cli_command, limits


@dataclass
class Signalled:
    """What happened to one run: the exit code and whether the signal was sent before it ended."""

    code: int
    stderr: str
    sent: bool
    seconds: float


def temporaries(folder: Path) -> list[Path]:
    """Our temporary files (``.<name>.<random>.partial``) anywhere under ``folder``."""
    from DICOMLabelmapSegLib.atomic import is_temporary_name

    if not folder.exists():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_temporary_name(p.name))


def listing(folder: Path) -> dict[str, bytes]:
    """Every regular file under ``folder`` that is not one of our temporaries, with its content."""
    from DICOMLabelmapSegLib.atomic import is_temporary_name

    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not is_temporary_name(p.name)
    }


def signal_when(
    args: list[str],
    signal_number: int,
    condition: Callable[[], bool] | float,
    cwd: Path | None = None,
    timeout: float = 120.0,
    group: bool = False,
) -> Signalled:
    """Run the command line; send ``signal_number`` when ``condition()`` first holds (or after that many seconds).

    ``group`` sends it to the whole process group (the worker processes of ``batch -j 2`` too), as a
    terminal's Ctrl-C does. The condition is polled every millisecond.
    """
    start = time.monotonic()
    process = subprocess.Popen(
        cli_command(*args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=capped_environment(),
        preexec_fn=limits(),
        start_new_session=True,
    )
    sent = False
    deadline = start + timeout
    while process.poll() is None and time.monotonic() < deadline:
        ready = (time.monotonic() - start >= condition) if isinstance(condition, (int, float)) else condition()
        if ready:
            if group:
                os.killpg(process.pid, signal_number)
            else:
                process.send_signal(signal_number)
            sent = True
            break
        time.sleep(0.001)
    try:
        _, stderr = process.communicate(timeout=max(deadline - time.monotonic(), 1.0))
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        _, stderr = process.communicate()
        name = signal.Signals(signal_number).name
        raise AssertionError(f"{args[0]} did not end within {timeout} s after {name}") from None
    return Signalled(process.returncode, stderr, sent, time.monotonic() - start)
