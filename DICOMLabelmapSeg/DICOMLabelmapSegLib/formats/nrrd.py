"""NRRD files: bounded header and payload reading (attached or detached, raw/gzip/bz2), axes -> model affine.

Used by :mod:`.segnrrd` (Slicer segmentations) and :mod:`.masks` (label maps). Geometry: NRRD's
first axis is ``i`` (fastest), so the model affine's columns are the header's spatial axes in
reverse order; ``space`` may be LPS, RAS or LAS.
"""

from __future__ import annotations

import bz2
import logging
import os
import re
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..errors import ImplausibleSizeError
from ..geometry import Vector
from ..inputs import open_regular
from .labeltable import LabelFileError
from .volumes import check_size

logger = logging.getLogger(__name__)


#: Largest NRRD header accepted (bytes).
MAX_HEADER_BYTES = 16 * 1024 * 1024


#: Set to 1 to let NRRD headers name detached data outside their own folder (absolute paths, '..').
ALLOW_EXTERNAL_DATA_ENV = "DICOMLABELMAPSEG_ALLOW_EXTERNAL_DATA"


_LPS_FROM_SPACE = {
    "left-posterior-superior": (1.0, 1.0, 1.0),
    "lps": (1.0, 1.0, 1.0),
    "right-anterior-superior": (-1.0, -1.0, 1.0),
    "ras": (-1.0, -1.0, 1.0),
    "left-anterior-superior": (1.0, -1.0, 1.0),
    "las": (1.0, -1.0, 1.0),
}


NRRD_TYPES: dict[np.dtype, tuple[str, ...]] = {
    np.dtype("int8"): ("signed char", "int8", "int8_t"),
    np.dtype("uint8"): ("uchar", "unsigned char", "uint8", "uint8_t"),
    np.dtype("int16"): ("short", "short int", "signed short", "signed short int", "int16", "int16_t"),
    np.dtype("uint16"): ("ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t"),
    np.dtype("int32"): ("int", "signed int", "int32", "int32_t"),
    np.dtype("uint32"): ("uint", "unsigned int", "uint32", "uint32_t"),
    np.dtype("int64"): ("longlong", "long long", "long long int", "signed long long", "int64", "int64_t"),
    np.dtype("uint64"): ("ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t"),
    np.dtype("float32"): ("float",),
    np.dtype("float64"): ("double",),
}


_DTYPE_FROM_NRRD: dict[str, np.dtype] = {name: dtype for dtype, names in NRRD_TYPES.items() for name in names}


def read_nrrd_header_file(path: Path) -> tuple[dict[str, str], int]:
    try:
        with open_regular(path, "NRRD file", LabelFileError) as handle:
            return _read_nrrd_header(handle, path)
    except OSError as error:
        raise LabelFileError(f"Cannot read {path}: {error.strerror or error}") from None


def _read_nrrd_header(handle: IO[bytes], path: Path) -> tuple[dict[str, str], int]:
    """Header fields (``key: value`` and ``key:=value`` alike) and the header's byte length."""
    magic = handle.readline(64)
    if not magic.startswith(b"NRRD000"):
        raise LabelFileError(f"{path.name} is not a NRRD file (it does not start with 'NRRD000').")
    header: dict[str, str] = {}
    length = len(magic)
    while True:
        line = handle.readline(MAX_HEADER_BYTES)
        length += len(line)
        if length > MAX_HEADER_BYTES:
            raise ImplausibleSizeError(f"{path.name}: the NRRD header is larger than {MAX_HEADER_BYTES} bytes.")
        if not line or not line.strip():
            break
        try:
            text = line.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            text = line.decode("latin-1").rstrip("\r\n")
        if text.startswith("#"):
            continue
        match = re.match(r"([^:]+):=?(.*)", text)
        if not match:
            raise LabelFileError(f"{path.name}: the NRRD header line '{text[:80]}' is not 'field: value'.")
        key, value = match.group(1).strip(), match.group(2)
        header[key] = value.strip() if not text[len(match.group(1)) :].startswith(":=") else value
    return header, length


def read_nrrd(path: Path) -> tuple[dict[str, str], np.ndarray]:
    """Header and data of a NRRD file; data shaped like the sizes reversed (C order)."""
    try:
        with open_regular(path, "NRRD file", LabelFileError) as handle:
            header, _ = _read_nrrd_header(handle, path)
            sizes = _nrrd_sizes(header, path)
            dtype = _nrrd_dtype(header, path)
            count = check_size(sizes, path, dtype.itemsize)
            data_file = header.get("data file", header.get("datafile"))
            if data_file:
                if "%" in data_file or data_file.upper().startswith("LIST"):
                    raise LabelFileError(f"{path.name}: multi-file NRRD data ('{data_file}') is not supported.")
                data_path = _detached_data_path(path, data_file)
                with open_regular(data_path, f"{path.name}: the detached data file", LabelFileError) as data_handle:
                    raw = _read_nrrd_payload(header, data_handle, count, dtype.itemsize, path)
            else:
                raw = _read_nrrd_payload(header, handle, count, dtype.itemsize, path)
    except FileNotFoundError as error:
        raise LabelFileError(f"{path.name}: file not found: {error.filename}") from None
    except OSError as error:
        raise LabelFileError(f"Cannot read {path}: {error.strerror or error}") from None
    if isinstance(raw, np.ndarray):
        data = raw.astype(dtype, copy=False)
    else:
        data = np.frombuffer(raw, dtype=dtype, count=count)
    return header, data.reshape(tuple(reversed(sizes)))


def _detached_data_path(path: Path, data_file: str) -> Path:
    """The detached data file of a NRRD header, which must lie in the header's folder (or below it).

    An untrusted header naming ``/etc/...`` or ``../..`` would otherwise put the bytes of any readable
    file into the output; set DICOMLABELMAPSEG_ALLOW_EXTERNAL_DATA=1 to allow such headers.
    """
    data_path = Path(data_file) if os.path.isabs(data_file) else path.parent / data_file
    if os.environ.get(ALLOW_EXTERNAL_DATA_ENV, "") not in ("", "0"):
        return data_path
    folder = os.path.realpath(path.parent)
    target = os.path.realpath(data_path)
    if os.path.commonpath([folder, target]) != folder:
        raise LabelFileError(
            f"{path.name} names detached data '{data_file[:80]}' outside its own folder; copy the data next to the "
            f"header, or set {ALLOW_EXTERNAL_DATA_ENV}=1 if you trust this header."
        )
    return data_path


def _header_int(header: Mapping[str, str], names: tuple[str, ...], path: Path, low: int, high: int) -> int:
    text = next((header[name] for name in names if name in header), "0")
    try:
        value = int(text)
    except ValueError:
        raise LabelFileError(f"{path.name}: '{names[0]}: {text[:40]}' is not a whole number.") from None
    if not low <= value <= high:
        raise LabelFileError(f"{path.name}: '{names[0]}: {value}' is outside {low}-{high:,}; the header is corrupt.")
    return value


def _read_nrrd_payload(header: Mapping[str, str], handle: IO[bytes], count: int, itemsize: int, path: Path) -> Any:
    nbytes = count * itemsize
    for _ in range(_header_int(header, ("line skip", "lineskip"), path, 0, MAX_HEADER_BYTES)):
        if not handle.readline(MAX_HEADER_BYTES):  # the file ends: the data is missing
            break
    byte_skip = _header_int(header, ("byte skip", "byteskip"), path, -1, 2**62)
    encoding = header.get("encoding", "raw").lower()
    if encoding in ("ascii", "text", "txt"):
        text = handle.read(count * 64 + 1024)
        try:
            values = np.array(text.split(), dtype=np.float64)
        except ValueError:
            raise LabelFileError(f"{path.name}: the ASCII voxel data is not numbers.") from None
        if values.size < count:
            raise LabelFileError(f"{path.name}: the voxel data is truncated ({values.size} of {count} values).")
        return values[:count]
    if encoding == "raw":
        if byte_skip == -1:
            handle.seek(-nbytes, os.SEEK_END)
        elif byte_skip > 0:
            handle.seek(byte_skip, os.SEEK_CUR)
        raw: bytes | bytearray = handle.read(nbytes)
    elif encoding in ("gzip", "gz", "bzip2", "bz2"):
        if byte_skip < 0:
            raise LabelFileError(f"{path.name}: 'byte skip: -1' with compressed data is not supported.")
        decompressor: Any = (
            zlib.decompressobj(zlib.MAX_WBITS | 32) if encoding.startswith("gz") else bz2.BZ2Decompressor()
        )
        raw = _bounded_decompress(decompressor, handle, byte_skip + nbytes, path)[byte_skip:]
    else:
        raise LabelFileError(f"{path.name}: NRRD encoding '{encoding}' is not supported (use raw, gzip or bzip2).")
    if len(raw) < nbytes:
        raise LabelFileError(
            f"{path.name}: the voxel data is truncated ({len(raw)} of {nbytes} bytes); the file is incomplete."
        )
    return raw


def _bounded_decompress(decompressor: Any, handle: IO[bytes], limit: int, path: Path) -> bytearray:
    """Decompress at most ``limit`` bytes (a small file cannot make us allocate more)."""
    out = bytearray()
    pending = b""
    try:
        while len(out) < limit:
            if not pending:
                pending = handle.read(1 << 20)
                if not pending:
                    break
            if isinstance(decompressor, bz2.BZ2Decompressor):
                if decompressor.eof:
                    break
                out += decompressor.decompress(pending, max_length=limit - len(out))
                pending = b""
            else:
                out += decompressor.decompress(pending, limit - len(out))
                pending = decompressor.unconsumed_tail
                if decompressor.eof:
                    break
    except (zlib.error, OSError, EOFError) as error:
        raise LabelFileError(f"{path.name}: the compressed voxel data is corrupt: {error}") from None
    return out


def _nrrd_sizes(header: Mapping[str, str], path: Path) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in header["sizes"].split())
        dimension = int(header.get("dimension", len(sizes)))
    except (KeyError, ValueError):
        raise LabelFileError(f"{path.name}: the NRRD header has no valid 'sizes' field.") from None
    if dimension != len(sizes) or dimension not in (3, 4) or any(n < 1 for n in sizes):
        raise LabelFileError(
            f"{path.name}: sizes {header.get('sizes')} - a label map must be 3D, or 4D with a layer axis."
        )
    return sizes


def _nrrd_dtype(header: Mapping[str, str], path: Path) -> np.dtype:
    type_name = " ".join(header.get("type", "").split())
    dtype = _DTYPE_FROM_NRRD.get(type_name)
    if dtype is None:
        raise LabelFileError(f"{path.name}: NRRD type '{type_name}' is not supported for label maps.")
    if dtype.itemsize > 1:
        dtype = dtype.newbyteorder(">" if header.get("endian", "little").strip() == "big" else "<")
    return dtype


def nrrd_volumes(header: Mapping[str, str], data: np.ndarray, path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """Split NRRD data into 3D ``(k, j, i)`` volumes (one per layer) and build the model affine."""
    ndim = data.ndim
    directions = _parse_directions(header.get("space directions"), ndim, path)  # header axis order
    kinds = header.get("kinds", "").split()
    if directions is not None:
        spatial_header = [axis for axis in range(ndim) if directions[axis] is not None]
    elif len(kinds) == ndim:
        spatial_header = [axis for axis in range(ndim) if kinds[axis].lower() in ("domain", "space")]
    else:
        spatial_header = list(range(ndim))[-3:]
    if len(spatial_header) != 3:
        raise LabelFileError(f"{path.name}: expected 3 spatial axes, found {len(spatial_header)} (kinds: {kinds}).")
    if ndim == 4 and spatial_header not in ([0, 1, 2], [1, 2, 3]):
        raise LabelFileError(f"{path.name}: the layer axis of a 4D NRRD must be the first or the last axis.")
    sign = np.ones(3)
    space = " ".join(header.get("space", "").lower().split())
    if space:
        if space not in _LPS_FROM_SPACE:
            raise LabelFileError(f"{path.name}: NRRD space '{space}' is not supported (use LPS, RAS or LAS).")
        sign = np.asarray(_LPS_FROM_SPACE[space])
    spacings = _optional_numbers(header.get("spacings"), ndim)
    affine = np.eye(4)
    # The model's columns are (k, j, i): the spatial header axes in reverse order.
    for column, header_axis in enumerate(reversed(spatial_header)):
        if directions is not None:
            vector = np.asarray(directions[header_axis], dtype=np.float64)
        else:  # no orientation given: axis-aligned, like ITK
            vector = np.zeros(3)
            step = spacings[header_axis] if spacings and np.isfinite(spacings[header_axis]) else 1.0
            vector[2 - column] = step
        affine[:3, column] = sign * vector
    origin = _optional_numbers(header.get("space origin"), 3)
    if origin is not None:
        affine[:3, 3] = sign * np.asarray(origin)
    elif header.get("space origin"):
        raise LabelFileError(
            f"{path.name}: 'space origin: {header['space origin'][:60]}' is not three finite numbers; "
            "the header is corrupt."
        )
    if ndim == 3:
        return [data], affine
    list_axis = 3 if spatial_header == [1, 2, 3] else 0  # numpy axes are the header axes reversed
    volumes = [np.take(data, index, axis=list_axis) for index in range(data.shape[list_axis])]
    return volumes, affine


def _parse_directions(text: str | None, ndim: int, path: Path) -> list[list[float] | None] | None:
    if text is None:
        return None
    items = re.findall(r"\(([^)]*)\)|(none)", text)
    directions: list[list[float] | None] = []
    for vector, none in items:
        if none:
            directions.append(None)
            continue
        try:
            values = [float(v) for v in vector.split(",")]
        except ValueError:
            values = []
        if len(values) != 3 or not all(np.isfinite(values)):
            raise LabelFileError(f"{path.name}: space direction '({vector})' is not three numbers.")
        directions.append(values)
    if len(directions) != ndim:
        raise LabelFileError(f"{path.name}: 'space directions' has {len(directions)} entries for {ndim} axes.")
    return directions


def _optional_numbers(text: str | None, count: int) -> list[float] | None:
    if not text:
        return None
    """``count`` finite numbers from a NRRD vector or list field, else None (absent, NaN, inf, garbage)."""
    try:
        values = [float(v) for v in re.findall(r"[^\s(),]+", text)]
    except ValueError:
        return None
    return values if len(values) == count and all(np.isfinite(values)) else None


def nrrd_number(value: float) -> str:
    value = float(value)
    return "0" if value == 0 else repr(value)


def nrrd_vector(values: Vector) -> str:
    return "(" + ",".join(nrrd_number(v) for v in values) + ")"


def gzip_bytes(data: bytes, level: int) -> bytes:
    compressor = zlib.compressobj(level, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    return compressor.compress(data) + compressor.flush()
