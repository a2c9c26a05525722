"""The library's type hints tell the truth: mypy (configured in pyproject.toml) finds no error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_mypy_finds_no_error_in_the_library():
    pytest.importorskip("mypy", reason="mypy is not installed (it is in the test extra)")
    command = [sys.executable, "-m", "mypy", "--no-incremental", "--cache-dir", os.devnull]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
