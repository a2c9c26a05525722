"""Shared pytest fixtures: where the real test data is, and temporary output folders.

The MRML fixtures (``slicer_core``, ``mrml_scene``) come from the plugin module mrml_support.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Every SEG the writer builds during the tests goes through our own checker (dicom/check.py self_check).
os.environ.setdefault("DICOMLABELMAPSEG_SELF_CHECK", "1")

pytest_plugins = ["mrml_support"]


def _find_data_dir() -> Path | None:
    env = os.environ.get("DICOMLABELMAPSEG_TEST_DATA")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve()
    candidates += [parent / "shared" / "data" for parent in here.parents]
    for candidate in candidates:
        if (candidate / "README.md").is_file() and (candidate / "dcmqi").is_dir():
            return candidate
    return None


DATA_DIR = _find_data_dir()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real-data folder (env DICOMLABELMAPSEG_TEST_DATA or ../shared/data)."""
    if DATA_DIR is None:
        pytest.skip("real test data not found: set DICOMLABELMAPSEG_TEST_DATA to the shared data folder")
    return DATA_DIR
