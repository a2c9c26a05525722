"""SIGTERM and SIGHUP clean up like Ctrl-C (SIGINT).

Python turns SIGINT into :class:`KeyboardInterrupt`, which unwinds the stack: every
:class:`~.atomic.AtomicFiles` block discards its temporaries on the way. SIGTERM (``kill``, a
service manager, a batch scheduler) and SIGHUP (a closed terminal) end the process at once by
default and leave the temporaries behind. :func:`signals_as_interrupts` makes them raise
:class:`Terminated`, a ``KeyboardInterrupt``, so that they unwind and clean up the same way.

SIGKILL cannot be caught: its leftovers are our temporary names, which readers skip
(:func:`~.atomic.is_temporary_name`) and later writes remove
(:func:`~.atomic.remove_stale_temporaries`).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

__all__ = ["CLEANUP_SIGNALS", "Terminated", "signals_as_interrupts"]

#: The signals turned into :class:`Terminated` (those that exist on this platform).
CLEANUP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM or SIGHUP; raised like Ctrl-C so that outputs are cleaned up."""

    def __init__(self, signal_number: int) -> None:
        self.signal_number = signal_number
        super().__init__(f"terminated by {signal.Signals(signal_number).name}")

    @property
    def exit_code(self) -> int:
        """The shell's exit status of a process ended by this signal (128 + signal number)."""
        return 128 + self.signal_number


def _raise_terminated(signal_number: int, frame: FrameType | None) -> None:
    raise Terminated(signal_number)


@contextlib.contextmanager
def signals_as_interrupts(signals: tuple[int, ...] = CLEANUP_SIGNALS) -> Iterator[None]:
    """Within the block, ``signals`` raise :class:`Terminated` in the main thread; restored afterwards.

    Outside the main thread (where Python cannot install handlers) this does nothing. Signals
    that are ignored (``SIG_IGN``, e.g. SIGHUP under ``nohup``) stay ignored.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Callable[[int, FrameType | None], Any] | int | None] = {}
    try:
        for number in signals:
            handler = signal.getsignal(number)
            if handler is signal.SIG_IGN:
                continue
            previous[number] = handler
            signal.signal(number, _raise_terminated)
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old if old is not None else signal.SIG_DFL)
