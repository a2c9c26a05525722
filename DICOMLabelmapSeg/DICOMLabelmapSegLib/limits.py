"""Bounds the library enforces, each defined once (reader, writer, file formats and checks import them).

Loaded when Slicer starts (through :mod:`.model`): standard library (and errors.py) only, Python 3.9 grammar.
"""

from __future__ import annotations

import os

from .errors import ImplausibleSizeError

__all__ = [
    "MAX_LABEL_VALUE",
    "MAX_VOXELS",
    "MEMORY_SHARE",
    "SPARSE_FACTOR",
    "SPARSE_SLICE_FLOOR",
    "available_memory",
    "check_bytes",
    "check_sparse",
    "memory_limit",
]

#: Highest label value = Segment Number (0062,0004), an unsigned 16-bit value; 0 is background.
MAX_LABEL_VALUE = 65535
#: Default bound on the voxels one input may make us allocate (all layers together), DICOM or file.
MAX_VOXELS = 2**31
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
