"""The one table of segmentation file formats: suffixes, what reads and writes each, the sidecar name.

A new input or output format is one row here plus its module (reader ``module:function``,
writer ``module:function``, resolved when first used so this table stays light to import):
:func:`~.fileio.read_segmentation_file`, :func:`~.fileio.write_segmentation_file`, the
mask-folder reader and the CLI (output names, case names) all read it.
"""

from __future__ import annotations

import enum
import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["FileFormat", "ALL_SUFFIXES", "WRITABLE_SUFFIXES", "sidecar_path", "strip_suffix"]


class FileFormat(enum.Enum):
    """A segmentation file format other than DICOM. Value: (suffixes, label, reader, writer)."""

    #: 3D Slicer segmentation (listed first: ``.seg.nrrd`` also ends with ``.nrrd``).
    SEG_NRRD = ((".seg.nrrd",), "3D Slicer segmentation", "segnrrd:read_seg_nrrd", "segnrrd:write_seg_nrrd")
    #: NIfTI label map; written with a JSON label table next to it.
    NIFTI = ((".nii.gz", ".nii"), "NIfTI label map", "masks:read_labelmap", "nifti:write_nifti")
    #: NRRD label map (read only; a .nrrd with Segment<N>_ fields is read as a Slicer segmentation).
    NRRD = ((".nrrd", ".nhdr"), "NRRD label map", "masks:read_labelmap", None)

    def __init__(self, suffixes: tuple[str, ...], label: str, reader: str | None, writer: str | None) -> None:
        self.suffixes = suffixes
        self.label = label
        self._reader = reader
        self._writer = writer

    @classmethod
    def of(cls, name: str | os.PathLike[str]) -> FileFormat | None:
        """The format a file name says (case-insensitive), or None."""
        lower = os.fspath(name).lower()
        for file_format in cls:
            if lower.endswith(file_format.suffixes):
                return file_format
        return None

    @property
    def writable(self) -> bool:
        return self._writer is not None

    def reader(self) -> Callable[..., Any]:
        """``reader(path, labels)``; label tables are ignored by formats that describe their own segments."""
        return _resolve(self._reader)

    def writer(self) -> Callable[..., Any]:
        """``writer(segmentation, path)``; returns the path or the list of paths written."""
        return _resolve(self._writer)


#: Every suffix of the table, longest first within a format.
ALL_SUFFIXES: tuple[str, ...] = tuple(suffix for file_format in FileFormat for suffix in file_format.suffixes)
#: The suffixes a segmentation can be written as.
WRITABLE_SUFFIXES: tuple[str, ...] = tuple(
    suffix for file_format in FileFormat if file_format.writable for suffix in file_format.suffixes
)


def strip_suffix(name: str) -> str:
    """``name`` without the format suffix of the table (``liver.nii.gz`` -> ``liver``); unchanged if none."""
    lower = name.lower()
    for suffix in ALL_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """The label table next to a label map: ``x.nii.gz`` / ``x.nii`` / ``x.nrrd`` -> ``x.json``."""
    path = Path(path)
    return path.with_name(strip_suffix(path.name) + ".json")


def _resolve(target: str | None) -> Callable[..., Any]:
    if target is None:
        raise ValueError("this format cannot be written")
    module, function = target.split(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), function)  # type: ignore[no-any-return]
