"""Segmentation files <-> the model: the entry points, dispatching on the one format table.

:func:`read_segmentation_file` and :func:`write_segmentation_file` pick the format from the
file name (:class:`~.registry.FileFormat`; a ``.nrrd`` with ``Segment<N>_`` fields is a Slicer
segmentation whatever its name; a folder is a folder of masks). The formats live in their own
modules: :mod:`.segnrrd`, :mod:`.nifti`, :mod:`.nrrd`, :mod:`.masks`; their public functions
are re-exported here.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..inputs import require_regular_file
from ..limits import MAX_VOXELS
from ..model import Segmentation
from .labeltable import LabelFileError, LabelTable
from .masks import pack_masks, read_labelmap, read_mask_folder
from .nifti import write_nifti
from .nrrd import read_nrrd_header_file
from .registry import FileFormat, sidecar_path
from .segnrrd import header_segments, read_seg_nrrd, write_seg_nrrd

logger = logging.getLogger(__name__)

__all__ = [
    "LabelFileError",
    "MAX_VOXELS",
    "pack_masks",
    "read_labelmap",
    "read_mask_folder",
    "read_seg_nrrd",
    "read_segmentation_file",
    "sidecar_path",
    "write_nifti",
    "write_seg_nrrd",
    "write_segmentation_file",
]


def read_segmentation_file(
    path: str | os.PathLike[str], labels: LabelTable | str | os.PathLike[str] | None = None
) -> Segmentation:
    """Read a ``.seg.nrrd``, NRRD or NIfTI file into a :class:`Segmentation`.

    Parameters
    ----------
    path
        The file. A ``.nrrd`` whose header has ``Segment<N>_`` fields is read as a Slicer
        segmentation whatever its name. A folder is read with :func:`read_mask_folder`.
    labels
        Label table (object or JSON path) for plain label maps and mask folders; ignored for
        ``.seg.nrrd``.
    """
    path = Path(path)
    if not path.exists():
        raise LabelFileError(f"{path} does not exist.")
    if path.is_dir():
        return read_mask_folder(path, labels)
    require_regular_file(path, "Segmentation file", LabelFileError)
    file_format = FileFormat.of(path.name)
    if file_format in (FileFormat.SEG_NRRD, FileFormat.NRRD):
        header, _ = read_nrrd_header_file(path)
        if header_segments(header):
            if labels is not None:
                logger.warning("%s describes its own segments; the label table is ignored.", path)
            return FileFormat.SEG_NRRD.reader()(path)
        return FileFormat.NRRD.reader()(path, labels)
    if file_format is not None:
        return file_format.reader()(path, labels)
    raise LabelFileError(
        f"{path.name}: unknown file type; give a Slicer segmentation (.seg.nrrd) or a label map (.nrrd, .nii, .nii.gz)."
    )


def write_segmentation_file(segmentation: Segmentation, path: str | os.PathLike[str]) -> list[Path]:
    """Write ``segmentation`` as ``.seg.nrrd`` or NIfTI (+ sidecar), chosen by the file name."""
    path = Path(path)
    file_format = FileFormat.of(path.name)
    if file_format is not None and file_format.writable:
        written = file_format.writer()(segmentation, path)
        return list(written) if isinstance(written, list) else [written]
    raise LabelFileError(
        f"Cannot tell the output format from '{path.name}': name it <name>.seg.nrrd (3D Slicer segmentation) "
        "or <name>.nii.gz (NIfTI label map with a JSON label table)."
    )
