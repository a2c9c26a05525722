"""Frames encoded on a background thread while the caller's thread builds the dataset around them.

The export's metadata (source headers, highdicom's two-slice instance, the cloned frame items)
is Python on one core; the frames' codec runs in C without the GIL. So one background thread
encodes frames from the start, and when the caller asks for the result its own thread joins
in, with further threads up to the number asked for. Each frame is taken once from a shared
counter and encoded on its own: the code streams are those of
:func:`~.codecs.encode_frames` whatever the timing.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence

import numpy as np

from .codecs import thread_count
from .syntax import TransferSyntax

#: Fewer frames than this are encoded when asked for (a thread is not worth starting).
MIN_FRAMES = 3


class BackgroundEncoding:
    """The code streams of ``frames`` (``encode`` turns one frame into one), being made on a background thread.

    ``threads``: how many threads encode once :meth:`result` is asked for (the background one and
    the caller's included).
    """

    def __init__(self, frames: np.ndarray | Sequence[np.ndarray], encode: Callable[[np.ndarray], bytes],
                 threads: int) -> None:
        self._frames = frames
        self._encode = encode
        self._threads = threads
        self._streams: list[bytes] = [b""] * len(frames)
        self._next = itertools.count()  # next() is one C call: each frame goes to exactly one thread
        self._stopped = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="DICOMLabelmapSeg encoding", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        count = len(self._frames)
        try:
            for index in self._next:
                if index >= count or self._stopped:
                    return
                self._streams[index] = self._encode(self._frames[index])
        except BaseException as error:  # noqa: BLE001 - re-raised by result() on the caller's thread
            self._error = self._error or error
            self._stopped = True

    def result(self) -> list[bytes]:
        """Every frame's code stream, in frame order; raises what encoding raised."""
        helpers = [threading.Thread(target=self._work, daemon=True) for _ in range(self._threads - 2)]
        for helper in helpers:
            helper.start()
        self._work()
        for thread in (self._thread, *helpers):
            thread.join()
        if self._error is not None:
            raise self._error
        if self._stopped:
            raise RuntimeError("the encoding was cancelled")
        return self._streams

    def cancel(self) -> None:
        """Stop encoding (the frame being encoded is finished); the result is then not needed."""
        self._stopped = True
        self._thread.join()


def start_encoding(frames: np.ndarray | Sequence[np.ndarray], syntax: TransferSyntax,
                   threads: int = 0) -> BackgroundEncoding | None:
    """Start encoding ``frames`` (``(n, rows, columns)``, file order) in the background, or None where that
    would not overlap: a native syntax, a binding that holds the GIL, one thread, fewer than :data:`MIN_FRAMES`."""
    codec = syntax.codec
    if codec is None or len(frames) < MIN_FRAMES:
        return None
    syntax.require_encoder()
    workers = thread_count(threads)
    if workers < 2 or not codec.encoder_releases_gil():
        return None
    return BackgroundEncoding(frames, codec.encoder(), workers)
