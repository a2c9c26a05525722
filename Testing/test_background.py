"""Frames encoded in the background while the export builds its metadata (dicom/background.py)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from DICOMLabelmapSegLib.dicom import background, codecs
from DICOMLabelmapSegLib.dicom.syntax import TransferSyntax
from hypothesis import given, settings
from hypothesis import strategies as st

THREADED = [s for s in TransferSyntax if s.codec is not None and s.codec.encoder_releases_gil()]


def frames_of(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frames = (rng.random((count, 24, 20)) < 0.2) * rng.integers(1, 9, (count, 24, 20))
    return frames.astype(np.uint8)


@pytest.mark.skipif(not THREADED, reason="no codec here releases the GIL")
@settings(max_examples=25, deadline=None)
@given(count=st.integers(background.MIN_FRAMES, 40), threads=st.integers(2, 5), seed=st.integers(0, 99),
       pause=st.sampled_from([0.0, 0.002]), syntax=st.sampled_from(THREADED))
def test_background_encoding_writes_the_streams_of_one_thread(count, threads, seed, pause, syntax):
    """Whatever the threads and however far the background got before the result is asked for."""
    frames = frames_of(count, seed)
    encoding = background.start_encoding(frames, syntax, threads)
    assert isinstance(encoding, background.BackgroundEncoding)
    time.sleep(pause)
    assert encoding.result() == codecs.encode_frames(frames, syntax, threads=1)


def test_no_background_thread_where_it_would_not_overlap():
    frames = frames_of(8)
    assert background.start_encoding(frames, TransferSyntax.EXPLICIT) is None  # native
    assert background.start_encoding(frames, TransferSyntax.JPEG_LS, threads=1) is None
    assert background.start_encoding(frames[: background.MIN_FRAMES - 1], TransferSyntax.JPEG_LS) is None


def test_an_encoding_error_reaches_the_caller_and_stops_the_other_threads():
    encoded: list[int] = []
    lock = threading.Lock()

    def encode(frame: np.ndarray) -> bytes:
        with lock:
            encoded.append(int(frame[0, 0]))
        if frame[0, 0] == 3:
            raise ValueError("frame 3 cannot be encoded")
        time.sleep(0.001)
        return bytes(frame[0, :1])

    frames = np.arange(200, dtype=np.uint8)[:, None, None] * np.ones((1, 2, 2), np.uint8)
    encoding = background.BackgroundEncoding(frames, encode, threads=3)
    with pytest.raises(ValueError, match="frame 3"):
        encoding.result()
    assert 3 in encoded and len(encoded) < 200  # the others stopped soon after the error


def test_cancel_stops_encoding_and_leaves_no_result():
    started = threading.Event()

    def encode(frame: np.ndarray) -> bytes:
        started.set()
        time.sleep(0.002)
        return b"x"

    encoding = background.BackgroundEncoding(np.zeros((500, 2, 2), np.uint8), encode, threads=2)
    started.wait(5)
    encoding.cancel()
    assert sum(1 for stream in encoding._streams if stream) < 500
    with pytest.raises(RuntimeError, match="cancelled"):
        encoding.result()
