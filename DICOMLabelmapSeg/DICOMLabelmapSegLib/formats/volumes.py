"""What every label-volume file reader and writer shares: size bounds, label arrays, dtype, validation, digests."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import ImplausibleSizeError, LabelmapSegError, TooManyLabelsError
from ..inputs import open_regular
from ..limits import MAX_VOXELS, check_bytes
from ..model import MAX_LABEL_VALUE, Segmentation, label_dtype
from .labeltable import LabelFileError

logger = logging.getLogger(__name__)


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open_regular(path, "Label map", LabelFileError) as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_size(shape: Sequence[int], path: Path, itemsize: int = 1) -> int:
    """The voxel count of ``shape``, refused beyond MAX_VOXELS or beyond the memory reading may take."""
    count = 1
    for n in shape:
        count *= int(n)
    if count > MAX_VOXELS:
        raise ImplausibleSizeError(
            f"{path.name} declares {count} voxels (shape {tuple(shape)}), more than the {MAX_VOXELS} this tool "
            "accepts; the header is corrupt or the volume is too large."
        )
    # the voxels as stored, and the label copy made of them
    check_bytes(count * (itemsize + 2), f"{path.name} ({count:,} voxels of {itemsize} byte(s))")
    return count


def label_array(volume: np.ndarray, path: Path) -> np.ndarray:
    """A C-contiguous uint8/uint16 copy/view of an integer-valued label volume."""
    if volume.dtype.kind == "f":
        if not np.all(np.isfinite(volume)) or not np.array_equal(volume, np.round(volume)):
            raise LabelFileError(f"{path.name} holds non-integer values; a label map must hold whole numbers.")
    elif volume.dtype.kind not in "iub":
        raise LabelFileError(f"{path.name}: voxel type {volume.dtype} is not a label map type.")
    if volume.size == 0:
        return np.ascontiguousarray(volume, dtype=np.uint8)
    low, high = volume.min(), volume.max()
    if low < 0:
        raise LabelFileError(f"{path.name} holds negative labels (minimum {low}); labels must be 0-{MAX_LABEL_VALUE}.")
    if high > MAX_LABEL_VALUE:
        raise TooManyLabelsError(f"{path.name} holds label {high}; label values must be at most {MAX_LABEL_VALUE}.")
    dtype = label_dtype(int(high))
    if volume.dtype == dtype and volume.flags.c_contiguous:
        return volume
    return np.ascontiguousarray(volume, dtype=dtype)


def common_dtype(segmentation: Segmentation) -> np.dtype:
    highest = max(
        [segment.label_value for segment in segmentation.segments]
        + [int(layer.labels.max()) if layer.labels.size else 0 for layer in segmentation.layers]
    )
    return label_dtype(highest)


def validate_for_file(segmentation: Segmentation, path: Path, check_pixels: bool = True) -> None:
    try:
        segmentation.validate(check_pixels=check_pixels)
    except LabelmapSegError as error:
        raise type(error)(f"{path.name}: {error}") from None
