"""The voxel grid of a SEG series from its frames' positions, and each frame's slice index.

Frames are placed by position, never by their order in the file; missing slices between
frames (sparse files of other tools) are filled on the regular grid implied by the
positions and the slice spacing.
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import GeometryMismatchError, ImplausibleSizeError, UnsupportedSegmentationError
from ..geometry import affine_from_plane, slice_normal
from ..limits import MAX_VOXELS, check_sparse
from ..model import Geometry, SegmentationType
from .header import Header, instance_name

logger = logging.getLogger(__name__)

def series_grid(
    headers: list[Header], max_voxels: int = MAX_VOXELS, max_slices: int | None = None
) -> tuple[Geometry, list[np.ndarray]]:
    """The volume grid of a series and the slice index of each frame of each instance.

    Frames are placed by position, never by their order in the file; only the sign of the slice
    axis follows the order (the way the frames progress). A single frame, or frames without a
    progression, give a slice axis along the frame normal (row direction x column direction).
    Missing slices between frames are filled on the regular grid.
    """
    first = headers[0]
    rows, columns = first.layout.rows, first.layout.columns
    with_positions = [h for h in headers if h.planes.positions is not None]
    if not with_positions:
        return _grid_without_positions(headers)
    if len(with_positions) != len(headers):
        raise GeometryMismatchError("Some instances of the series have frame positions and others do not.")
    orientation = first.planes.orientation
    spacing = first.planes.pixel_spacing
    if orientation is None or spacing is None:  # header.py refuses frame positions without them
        raise GeometryMismatchError(f"{instance_name(first.instance)} has frame positions but no plane orientation.")
    for header in headers[1:]:
        if header.planes.orientation is None or header.planes.pixel_spacing is None:
            raise GeometryMismatchError(f"{instance_name(header.instance)} has frame positions but no orientation.")
        if not np.allclose(header.planes.orientation, orientation, atol=1e-4) or not np.allclose(
            header.planes.pixel_spacing, spacing, rtol=1e-4, atol=1e-6
        ):
            raise GeometryMismatchError(
                f"{instance_name(header.instance)} has another orientation or pixel spacing than "
                f"{instance_name(first.instance)}; the layers of one segmentation must share one geometry."
            )
    normal = slice_normal(orientation)
    positions = np.concatenate([h.planes.positions for h in headers if h.planes.positions is not None])
    distances = positions @ normal
    tolerance = min(1e-3, 0.01 * float(spacing.min()))
    ordered = np.sort(distances)
    gaps = np.diff(ordered)
    gaps = gaps[gaps > tolerance]
    declared = next((h.planes.spacing_between_slices for h in headers if h.planes.spacing_between_slices), None)
    step = _slice_step(gaps, declared, first.planes.slice_thickness, tolerance)

    # The slice axis points the way the frames progress in the file (the first instance's first two
    # frames at different positions): writers that store slices in order k = 0..n-1 (ours does) are
    # read back with their slice direction, whichever way it points relative to the frame normal.
    sign = 1.0
    moves = np.diff(first.planes.positions @ normal)
    moves = moves[np.abs(moves) > tolerance]
    if moves.size and moves[0] < 0:
        sign = -1.0
    k_float = sign * (distances - (ordered[0] if sign > 0 else ordered[-1])) / step
    if not np.all(np.isfinite(k_float)) or k_float.max() >= max_voxels:
        raise ImplausibleSizeError(
            "The frame positions span an implausible distance (beyond the sanity limit of "
            f"{max_voxels:,} slices); the header is damaged."
        )
    k = np.rint(k_float)
    if np.any(np.abs(k_float - k) > 0.02):
        raise GeometryMismatchError(
            f"Frame positions are not on a regular grid of {step:g} mm slices; this segmentation cannot be "
            "represented as one volume."
        )
    slices = int(k.max()) + 1
    layers = len(headers) if first.segmentation_type == SegmentationType.LABELMAP else 1
    check_voxels(slices, rows, columns, layers, max_voxels)
    check_sparse(slices, int(np.unique(k).size), max_slices)

    if np.unique(k).size >= 2:
        design = np.stack([np.ones_like(k), k], axis=1)
        solution, *_ = np.linalg.lstsq(design, positions, rcond=None)
        origin, step_vector = solution[0], solution[1]
        step_vector[np.abs(step_vector) < 1e-9 * np.abs(step_vector).max()] = 0.0  # least-squares round-off
        residual = np.abs(design @ solution - positions).max()
        if residual > max(1e-2, 0.05 * float(spacing.min())):
            raise GeometryMismatchError(
                f"Frame positions deviate up to {residual:.3g} mm from a straight stack of slices; this segmentation "
                "cannot be represented as one volume."
            )
    else:
        origin = positions[0]
        step_vector = sign * step * normal
    affine = affine_from_plane(origin, orientation, spacing, step_vector)
    geometry = Geometry((slices, rows, columns), affine, first.frame_of_reference_uid)
    indices = []
    start = 0
    for header in headers:
        count = header.layout.number_of_frames
        indices.append(k[start : start + count].astype(np.int64))
        start += count
    return geometry, indices


def _slice_step(gaps: np.ndarray, declared: float | None, thickness: float | None, tolerance: float) -> float:
    """The slice spacing along the normal: Spacing Between Slices if consistent, else the smallest gap."""
    if not gaps.size:
        return declared or thickness or 1.0

    def consistent(step: float) -> bool:
        multiples = gaps / step
        return bool(np.all(np.abs(multiples - np.rint(multiples)) < 0.02) and np.all(np.rint(multiples) >= 1))

    if declared and declared > tolerance and consistent(declared):
        return float(declared)
    smallest = float(gaps.min())
    if consistent(smallest):
        if declared:
            logger.warning(
                "Spacing Between Slices (%g mm) does not match the frame positions; using %g mm from the positions.",
                declared,
                smallest,
            )
        return smallest
    raise GeometryMismatchError(
        "Frame positions are not on a regular grid of parallel slices (their distances are not multiples of one "
        "spacing); this segmentation cannot be represented as one volume."
    )


def _grid_without_positions(headers: list[Header]) -> tuple[Geometry, list[np.ndarray]]:
    """Frames without patient positions (e.g. projection radiographs): one 2D slice in pixel units."""
    first = headers[0]
    for header in headers:
        if header.frame_segments is not None:
            per_segment = np.bincount(header.frame_segments)
            single = per_segment.max() <= 1
        else:
            single = header.layout.number_of_frames == 1
        if not single:
            raise UnsupportedSegmentationError(
                f"{instance_name(header.instance)} has several frames per segment but no frame positions "
                "(Plane Position functional group); the frames cannot be placed in a volume."
            )
    spacing = first.planes.pixel_spacing if first.planes.pixel_spacing is not None else np.ones(2)
    orientation = first.planes.orientation if first.planes.orientation is not None else np.array([1.0, 0, 0, 0, 1, 0])
    logger.warning(
        "The segmentation has no patient coordinates (no Image Position (Patient)); it is read as one "
        "slice with origin 0 and pixel spacing %s mm.",
        spacing.tolist(),
    )
    step = slice_normal(orientation) * (first.planes.slice_thickness or 1.0)
    affine = affine_from_plane([0.0, 0.0, 0.0], orientation, spacing, step)
    geometry = Geometry((1, first.layout.rows, first.layout.columns), affine, first.frame_of_reference_uid)
    return geometry, [np.zeros(h.layout.number_of_frames, dtype=np.int64) for h in headers]


def check_voxels(slices: int, rows: int, columns: int, layers: int, max_voxels: int | None = None) -> None:
    limit = MAX_VOXELS if max_voxels is None else max_voxels
    voxels = slices * rows * columns * layers
    if voxels > limit:
        raise ImplausibleSizeError(
            f"The segmentation would need {voxels:,} voxels ({layers} layer(s) of {slices} x {rows} x {columns}); "
            f"the sanity limit is {limit:,}. The header is damaged, or raise max_voxels if the data is really this "
            "large."
        )
