"""DICOM plane geometry <-> the model's ``(slice, row, column)`` affine.

DICOM describes a frame by Image Position (Patient) (centre of its first pixel),
Image Orientation (Patient) (row cosines = direction of increasing column index,
then column cosines = direction of increasing row index) and Pixel Spacing
(spacing between rows, then between columns). The model's affine has columns
``[slice step, row step, column step, origin]`` in LPS millimetres.

Slicer, NRRD and NIfTI order the voxel axes the other way round, ``(i, j, k)`` with the column
index fastest, and Slicer and NIfTI use RAS: :func:`ijk_to_ras` and :func:`affine_from_ijk_to_ras`
are the one conversion between the two conventions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import numpy as np

from .errors import GeometryMismatchError

#: A vector or list of numbers: a sequence of floats or a 1D numpy array.
Vector = Union[Sequence[float], np.ndarray]

#: LPS -> RAS (negate x and y); its own inverse.
RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def ijk_to_ras(affine: np.ndarray) -> np.ndarray:
    """The IJK -> RAS matrix (Slicer, NIfTI; i = column fastest) of a model affine ``(k, j, i)`` -> LPS."""
    return (RAS_FROM_LPS @ np.asarray(affine, dtype=np.float64))[:, [2, 1, 0, 3]]


def affine_from_ijk_to_ras(matrix: np.ndarray) -> np.ndarray:
    """The model affine ``(k, j, i)`` -> LPS of an IJK -> RAS matrix (the inverse of :func:`ijk_to_ras`)."""
    return ijk_to_ras(matrix)  # reversing the axes and negating x, y are both their own inverse


def affine_from_plane(
    image_position: Vector,
    image_orientation: Vector,
    pixel_spacing: Vector,
    slice_step: Vector,
) -> np.ndarray:
    """Build the 4x4 index ``(k, j, i)`` -> LPS affine of a stack of frames.

    Parameters
    ----------
    image_position: Vector
        Image Position (Patient) of the first frame (k = 0).
    image_orientation: Vector
        Image Orientation (Patient): six direction cosines (row, then column).
    pixel_spacing: Vector
        Pixel Spacing: (spacing between rows, spacing between columns) in mm.
    slice_step: Vector
        Vector in mm from frame k to frame k + 1.
    """
    orientation = np.asarray(image_orientation, dtype=np.float64)
    row_cosines, column_cosines = orientation[:3], orientation[3:]
    affine = np.eye(4)
    affine[:3, 0] = np.asarray(slice_step, dtype=np.float64)
    affine[:3, 1] = column_cosines * float(pixel_spacing[0])
    affine[:3, 2] = row_cosines * float(pixel_spacing[1])
    affine[:3, 3] = np.asarray(image_position, dtype=np.float64)
    return affine


def plane_attributes(affine: np.ndarray) -> tuple[list[float], list[float]]:
    """Image Orientation (Patient) and Pixel Spacing of the frames of ``affine``."""
    row_step, column_step = affine[:3, 1], affine[:3, 2]
    row_spacing, column_spacing = float(np.linalg.norm(row_step)), float(np.linalg.norm(column_step))
    orientation = np.concatenate([column_step / column_spacing, row_step / row_spacing])
    return orientation.tolist(), [row_spacing, column_spacing]


def frame_positions(affine: np.ndarray, number_of_frames: int) -> np.ndarray:
    """Image Position (Patient) of each frame k = 0..n-1, shape ``(n, 3)``."""
    k = np.arange(number_of_frames, dtype=np.float64)[:, None]
    return affine[:3, 3][None, :] + k * affine[:3, 0][None, :]


def slice_normal(image_orientation: Vector) -> np.ndarray:
    """Unit normal of frames with this orientation (row cosines x column cosines)."""
    orientation = np.asarray(image_orientation, dtype=np.float64)
    normal = np.cross(orientation[:3], orientation[3:])
    length = np.linalg.norm(normal)
    if length < 1e-6:
        raise GeometryMismatchError(
            "Image Orientation (Patient) has parallel row and column directions; the file's geometry is invalid."
        )
    return normal / length


def slice_indices(
    positions: np.ndarray, origin: Vector, slice_step: Vector, tolerance: float = 0.01
) -> np.ndarray:
    """Index k of each frame position along ``slice_step`` from ``origin``.

    Raises GeometryMismatchError if a position is not within ``tolerance`` (fraction of
    the slice spacing, and of a millimetre in-plane) of a slice of the grid.
    """
    step = np.asarray(slice_step, dtype=np.float64)
    step_length_sq = float(step @ step)
    offsets = np.asarray(positions, dtype=np.float64) - np.asarray(origin, dtype=np.float64)[None, :]
    k_float = offsets @ step / step_length_sq
    k = np.rint(k_float)
    off_grid = np.abs(k_float - k) > tolerance
    in_plane = np.linalg.norm(offsets - k[:, None] * step[None, :], axis=1) > max(tolerance, 1e-3) * 100
    if np.any(off_grid) or np.any(in_plane):
        raise GeometryMismatchError(
            "Frame positions do not lie on a regular grid of parallel slices; "
            "this segmentation cannot be represented as one volume."
        )
    return k.astype(np.int64)
