"""The voxel grid of a SEG series from its frames' positions, and each frame's slice index.

Frames are placed by position, never by their order in the file; missing slices between
frames (sparse files of other tools) are filled on the regular grid implied by the
positions and the slice spacing.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from ..errors import GeometryMismatchError, ImplausibleSizeError, UnsupportedSegmentationError
from ..geometry import affine_from_plane, slice_normal
from ..limits import MAX_VOXELS
from ..model import Geometry, SegmentationType
from .header import Header, instance_name

logger = logging.getLogger(__name__)

#: Share of the memory available now (and of the address-space limit) that reading may allocate by default.
MEMORY_SHARE = 0.75
#: A grid with more slices than this is refused when it is also far sparser than :data:`SPARSE_FACTOR`.
SPARSE_SLICE_FLOOR = 10_000
#: ... i.e. when it has more than this many slices per frame: a few frames millions of slices apart.
SPARSE_FACTOR = 100


def available_memory() -> int | None:
    """Bytes this process can still allocate: MemAvailable, bounded by RLIMIT_AS; None if unknown."""
    limits: list[int] = []
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    limits.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        try:
            limits.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            pass
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            with open("/proc/self/statm", encoding="ascii") as handle:
                used = int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            limits.append(max(soft - used, 0))
    except (ImportError, OSError, ValueError, IndexError):
        pass
    return min(limits) if limits else None


def memory_limit(max_bytes: int | None = None) -> int | None:
    """The bytes a read may allocate: ``max_bytes`` if given, else a share of the available memory."""
    if max_bytes is not None:
        return max_bytes
    available = available_memory()
    return None if available is None else int(available * MEMORY_SHARE)


def check_bytes(needed: int, what: str, max_bytes: int | None = None) -> None:
    """Refuse to allocate ``needed`` bytes beyond :func:`memory_limit` (before anything is allocated)."""
    limit = memory_limit(max_bytes)
    if limit is not None and needed > limit:
        source = "the given limit" if max_bytes is not None else f"{MEMORY_SHARE:.0%} of the memory available now"
        raise ImplausibleSizeError(
            f"Reading {what} would need about {_size(needed)}, more than {source} ({_size(limit)}). The header "
            "may be damaged; if the data is really this large, free memory or raise the limit (max_bytes; CLI "
            "--max-memory)."
        )


def _size(count: int) -> str:
    """A byte count for messages: 1.68 GiB, 12.0 MiB, 600 bytes."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{count} bytes"


def check_sparse(slices: int, frames: int, max_slices: int | None = None) -> None:
    """Refuse grids that are almost all empty slices: a few frames millions of slices apart."""
    limit = max_slices if max_slices is not None else max(SPARSE_SLICE_FLOOR, SPARSE_FACTOR * frames)
    if slices > limit:
        raise ImplausibleSizeError(
            f"The {frames} frame(s) span {slices:,} slices, more than the limit of {limit:,}: the grid would be "
            "almost all empty slices, so a frame position is probably damaged. If the positions are right, raise "
            "the limit (max_slices; CLI --max-slices)."
        )


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
