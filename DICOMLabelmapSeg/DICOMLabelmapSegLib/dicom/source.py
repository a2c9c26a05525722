"""The source image series a segmentation refers to: read its headers, check it, get its geometry.

:func:`read_source_series` reads only headers (never pixel data) of exactly one image
series and sorts it along the slice normal; :func:`geometry_from_source` turns such a
series (single-frame slices, or one multi-frame image) into the model's :class:`Geometry`.
Every problem is a :class:`SourceImageError` that says what is wrong and what to do.
"""

from __future__ import annotations

import logging
import math
import os
import re
import stat
import struct
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Union

import numpy as np
import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import BaseTag
from pydicom.uid import UID

from ..errors import GeometryMismatchError, SourceImageError
from ..geometry import affine_from_plane, slice_indices, slice_normal
from ..model import Geometry

logger = logging.getLogger(__name__)

PathOrFiles = Union[str, os.PathLike, Dataset, Iterable[Union[str, os.PathLike, Dataset]]]

#: UIDs a segmentation must copy or reference; blank ones make the series unreferenceable.
REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")

#: SOP classes that are never source images (segmentations, RT structures, SR, presentation states...).
_NON_IMAGE_MODALITIES = {"SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "SR", "PR", "KO", "REG", "DOC"}

_UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")

# Orientation cosines and spacings are DS values: compare with a tolerance that survives rounding.
_ORIENTATION_TOLERANCE = 1e-4
_SPACING_TOLERANCE = 1e-3


def read_source_series(path_or_files: PathOrFiles, require_uids: bool = True) -> list[Dataset]:
    """Headers (no pixel data) of the one image series in ``path_or_files``, sorted along the slice normal.

    Parameters
    ----------
    path_or_files: str | os.PathLike | Dataset | Iterable
        A folder (searched recursively), a file, a list of files, or already read datasets.
        Files that are not DICOM, and non-image objects (SEG, RTSTRUCT, SR, ...), are skipped.
    require_uids: bool
        Raise if SOP Class/Instance, Study or Series Instance UIDs are blank or missing
        (needed to reference the series). Pass False to only read the geometry.

    Raises
    ------
    SourceImageError
        No DICOM image found, several series, blank UIDs, or slices that do not share
        orientation, pixel spacing and size.
    """
    datasets = [ds for ds in _read_headers(path_or_files) if _is_image(ds)]
    if not datasets:
        raise SourceImageError(
            f"No DICOM image files were found in {_describe(path_or_files)}. "
            "Choose the folder or files of the image series the segmentation was drawn on."
        )
    groups: dict[str, list[Dataset]] = {}
    for ds in datasets:
        groups.setdefault(_string(ds, "SeriesInstanceUID"), []).append(ds)
    if len(groups) > 1:
        summaries = [_series_summary(uid, members) for uid, members in groups.items()]
        listing = "; ".join(summaries[:8]) + ("; ..." if len(summaries) > 8 else "")
        raise SourceImageError(
            f"{_describe(path_or_files)} holds {len(groups)} image series ({listing}). "
            "Choose a folder (or files) containing exactly one series: the one the segmentation belongs to."
        )
    series = _deduplicate(next(iter(groups.values())))
    if require_uids:
        check_uids(series)
    if len(series) > 1 and any(_frames(ds) > 1 for ds in series):
        raise SourceImageError(
            f"The series has {len(series)} files, some of them multi-frame images. A segmentation can reference "
            "either single-frame slices or one multi-frame image: choose one file."
        )
    positions = _check_consistent(series)
    return _with_full_ends(series if positions is None else _sorted_along_normal(series, positions))


def _with_full_ends(series: list[Dataset]) -> list[Dataset]:
    """The series with its first and last slice read in full (the others carry :data:`_SLICE_TAGS` only).

    A segmentation copies the patient and study attributes from the first slice of its grid,
    which is one of the two ends.
    """
    for index in {0, len(series) - 1}:
        ds = series[index]
        if getattr(ds, "_slice_tags_only", False) and getattr(ds, "filename", None):
            full = _read_header(Path(ds.filename))
            if full is not None:
                series[index] = full
    return series


def check_uids(series: Sequence[Dataset]) -> None:
    """Raise SourceImageError if a UID needed to reference the series is blank or missing."""
    blank = [keyword for keyword in REQUIRED_UIDS if any(not _string(ds, keyword).strip() for ds in series)]
    if blank:
        names = ", ".join(_spaced(keyword) for keyword in blank)
        raise SourceImageError(
            f"The image series cannot be referenced by a segmentation because these UIDs are blank or missing "
            f"in its files: {names} (often the result of over-aggressive de-identification). Re-export the series "
            "from the scanner or PACS, or repair it by assigning new UIDs (e.g. with a de-identification tool that "
            "replaces UIDs instead of blanking them), then load the repaired series."
        )
    for ds in series[:1]:
        for keyword in REQUIRED_UIDS + ("FrameOfReferenceUID",):
            value = str(ds.get(keyword, "") or "")
            if value and not is_valid_uid(value):
                logger.warning("The source series has a malformed %s '%s'; references to it will carry it.",
                               keyword, value)
    if not str(series[0].get("FrameOfReferenceUID", "") or "").strip():
        raise SourceImageError(
            "The image series has no Frame of Reference UID, so a segmentation cannot state that it lies in the "
            "same space. Re-export the series from the scanner or PACS with its Frame of Reference UID."
        )


def is_valid_uid(value: str) -> bool:
    """True if ``value`` is a syntactically valid UID (digits and dots, no leading zeros, at most 64 characters)."""
    return len(value) <= 64 and _UID_PATTERN.match(value) is not None


def sort_by_position(series: Sequence[Dataset]) -> list[Dataset]:
    """Single-frame slices sorted by their position along the slice normal (others returned as is)."""
    if len(series) < 2:
        return list(series)
    return _sorted_along_normal(series, [_position(ds) for ds in series])


def _sorted_along_normal(series: Sequence[Dataset], positions: Sequence[Sequence[float]]) -> list[Dataset]:
    """``series`` (of at least two slices, at ``positions``) sorted along the normal of its first slice."""
    if len(series) < 2:
        return list(series)
    normal = slice_normal(_orientation(series[0]))
    along = np.array(positions, dtype=np.float64) @ normal
    return [series[index] for index in np.argsort(along, kind="stable")]


def geometry_from_source(datasets: Sequence[Dataset]) -> Geometry:
    """The voxel grid of a source series: single-frame slices or one multi-frame image.

    Frames must be parallel, equally spaced, same size; the slice step of a single slice
    is Spacing Between Slices, else Slice Thickness, else 1 mm, along the normal.

    Raises
    ------
    SourceImageError
        Missing plane attributes, or frames that do not form a regular grid.
    """
    if not datasets:
        raise SourceImageError("No source images were given.")
    if len(datasets) == 1 and int(datasets[0].get("NumberOfFrames", 1) or 1) > 1:
        orientation, spacing, positions, thickness = _multiframe_planes(datasets[0])
    else:
        series = sort_by_position(datasets)
        _check_consistent(series)
        orientation = _orientation(series[0])
        spacing = _pixel_spacing(series[0])
        positions = np.array([_position(ds) for ds in series], dtype=np.float64)
        thickness = _slice_thickness(series[0])
    normal = slice_normal(orientation)
    if len(positions) > 1:
        order = np.argsort(positions @ normal, kind="stable")
        positions = positions[order]
        step = (positions[-1] - positions[0]) / (len(positions) - 1)
        if float(np.linalg.norm(step)) < 1e-6:
            raise SourceImageError("All frames of the source series lie at the same position; it is not a volume.")
        try:
            indices = slice_indices(positions, positions[0], step)
        except GeometryMismatchError as error:
            raise SourceImageError(
                "The slices of the source series are not equally spaced (missing slices or variable spacing), "
                "so they do not form one regular volume. Choose a complete series with constant slice spacing."
            ) from error
        if not np.array_equal(indices, np.arange(len(positions))):
            raise SourceImageError("The source series has duplicate or missing slice positions.")
    else:
        step = normal * thickness
    rows, columns = int(datasets[0].Rows), int(datasets[0].Columns)
    affine = affine_from_plane(positions[0], orientation, spacing, step)
    frame_of_reference = str(datasets[0].get("FrameOfReferenceUID", "") or "") or None
    return Geometry((len(positions), rows, columns), affine, frame_of_reference)


def source_planes(datasets: Sequence[Dataset]) -> tuple[list[float], list[float], np.ndarray, float]:
    """Image Orientation, Pixel Spacing, frame positions ``(n, 3)`` and slice thickness of a source series.

    Unlike :func:`geometry_from_source` this does not require regular slice spacing.
    """
    if len(datasets) == 1 and int(datasets[0].get("NumberOfFrames", 1) or 1) > 1:
        return _multiframe_planes(datasets[0])
    positions = np.array([_position(ds) for ds in datasets], dtype=np.float64)
    return _orientation(datasets[0]), _pixel_spacing(datasets[0]), positions, _slice_thickness(datasets[0])


# --- reading ----------------------------------------------------------------------------------


def _read_headers(path_or_files: PathOrFiles) -> list[Dataset]:
    items: list = [path_or_files] if isinstance(path_or_files, (str, os.PathLike, Dataset)) else list(path_or_files)
    datasets = []
    for item in items:
        if isinstance(item, Dataset):
            datasets.append(item)
            continue
        name = os.fspath(item)  # a Path only where one is needed: making hundreds costs more than reading them
        try:
            mode = os.stat(name).st_mode  # one stat for is_dir() and is_file()
        except (OSError, ValueError):
            mode = None  # pathlib decides (some errors it raises)
        files: list[str | Path]
        if mode is not None and stat.S_ISREG(mode):
            files = [name]
        elif stat.S_ISDIR(mode) if mode is not None else Path(name).is_dir():
            files = sorted(p for p in Path(name).rglob("*") if p.is_file())
        elif mode is None and Path(name).is_file():
            files = [name]
        else:
            raise SourceImageError(f"'{name}' does not exist. Choose the folder or files of the image series.")
        for file in files:
            ds = _read_slice_header(file)
            if ds is not None:
                datasets.append(ds)
    return datasets


#: The attributes a source slice is read for (geometry, references, the checks and messages here, and what
#: highdicom reads from every source image). The first and last slice of a series are read in full
#: (highdicom copies the patient and study modules from the first one it is given).
_SLICE_TAGS = frozenset({
    0x00080005, 0x00080008, 0x00080016, 0x00080018, 0x00080020, 0x00080030, 0x00080050, 0x00080060,
    0x00080090, 0x0008103E, 0x00100010, 0x00100020, 0x00100030, 0x00100040, 0x00180050, 0x00180088,
    0x0020000D, 0x0020000E, 0x00200010, 0x00200011, 0x00200013, 0x00200032, 0x00200037, 0x00200052,
    0x00280002, 0x00280004, 0x00280008, 0x00280010, 0x00280011, 0x00280030,
})
_LAST_SLICE_TAG = max(_SLICE_TAGS)
#: The tag of each of :data:`_SLICE_TAGS` as the key its raw element is stored under (one lookup finds both).
_SLICE_KEYS = {tag: BaseTag(tag) for tag in _SLICE_TAGS}
_IMPLICIT_LITTLE = "1.2.840.10008.1.2"
#: Transfer syntaxes whose dataset is not explicit VR little endian as stored (read by pydicom).
_NOT_EXPLICIT_LITTLE = {"1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.99"}
_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
#: The VRs with a 16-bit length, by their bytes (one look-up instead of three tests per element).
_SHORT_VR_NAMES = {name.encode(): name for name in (
    "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "PN", "SH", "SL", "SS", "ST", "TM",
    "UI", "UL", "US")}
_UNDEFINED = 0xFFFFFFFF
_HEADER_CHUNK = 16384
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0)  # O_BINARY: Windows
_ROWS, _COLUMNS, _NUMBER_OF_FRAMES = BaseTag(0x00280010), BaseTag(0x00280011), BaseTag(0x00280008)
_TRANSFER_SYNTAX = BaseTag(0x00020010)
_EXPLICIT_HEADER = struct.Struct("<HH2sH").unpack_from  # group, element, VR, 16-bit length
_IMPLICIT_HEADER = struct.Struct("<HHI").unpack_from  # group, element, 32-bit length
_LENGTH = struct.Struct("<I").unpack_from
#: The fields of a RawDataElement the reader sets; the others (is_raw, is_buffered in pydicom 3) keep their defaults.
_RAW_FIELDS = ("tag", "VR", "length", "value", "value_tell", "is_implicit_VR", "is_little_endian")
_FAST_RAW = RawDataElement._fields[:7] == _RAW_FIELDS and set(RawDataElement._fields[7:]) <= set(
    RawDataElement._field_defaults)
_RAW_TAIL = tuple(RawDataElement._field_defaults[name] for name in RawDataElement._fields[7:]) if _FAST_RAW else ()


def _construct(cls: type, fields: tuple) -> RawDataElement:
    return cls(*fields)


#: A RawDataElement from all its fields: what its _make does, without a Python call (else its constructor).
_new_raw: Callable[[type, tuple], RawDataElement] = tuple.__new__ if _FAST_RAW else _construct  # type: ignore[assignment]


#: The elements of a dataset as pydicom keeps them (read ones stay raw until a value is asked for).
_Elements = dict[BaseTag, Union[DataElement, RawDataElement]]


class _NotMinimal(Exception):
    """The file is not one the minimal reader handles; pydicom reads it."""


def _read_slice_header(path: str | Path) -> Dataset | None:
    """The header of one source slice: the :data:`_SLICE_TAGS` only, read by walking the raw elements.

    About 10x faster than pydicom for a CT slice. Files it does not handle (no preamble,
    big endian, deflated, DICOMDIR, multi-frame) are read by pydicom (:func:`_read_header`).
    """
    try:
        descriptor = os.open(path, _OPEN_FLAGS)  # no file object: a third of the time of open() and read()
        try:
            syntax, elements = _scan(os.read(descriptor, _HEADER_CHUNK), partial(os.read, descriptor))
        finally:
            os.close(descriptor)
    except (_NotMinimal, struct.error, IndexError, UnicodeDecodeError):
        return _read_header(path)
    except OSError as error:
        logger.debug("Skipping %s: not readable (%s)", path, error)
        return None
    implicit = syntax == _IMPLICIT_LITTLE
    ds = _new_dataset(elements, syntax, implicit)
    # Text values are parsed from the raw bytes (_string); a binary one is checked by converting it,
    # unless it is the one form that cannot fail (a 2-byte US).
    if not all(_is_short(elements.get(tag)) for tag in (_ROWS, _COLUMNS)) and not _values_readable(
            ds, path, _BINARY_KEYWORDS):
        return None
    if _NUMBER_OF_FRAMES in elements and _string(ds, "NumberOfFrames") not in ("", "1"):
        return _read_header(path)  # multi-frame: its functional groups are needed
    state = ds.__dict__  # plain attributes (Dataset.__setattr__ looks every name up in the DICOM dictionary)
    state["filename"] = str(path)
    state["_slice_tags_only"] = True  # the ends of a series are read again in full
    return ds


def _is_short(element: object) -> bool:
    """True for an absent element and for a raw 2-byte US one (converting that cannot fail)."""
    return element is None or (
        isinstance(element, RawDataElement) and element.VR in ("US", None) and element.length == 2
        and element.value is not None and len(element.value) == 2)


def _scan(data: bytes, read: Callable[[int], bytes]) -> tuple[str, _Elements]:
    """(Transfer Syntax UID, the raw :data:`_SLICE_TAGS` elements) of a file whose first bytes are ``data``.

    ``read(n)`` reads up to ``n`` more bytes of the file (b"" at its end).

    Raises _NotMinimal for a file pydicom must read: no preamble, a transfer syntax other than
    little endian (explicit or implicit) VR, a DICOMDIR, an element it cannot parse, a value
    cut short by the end of the file.
    """
    if data[128:132] != b"DICM":
        raise _NotMinimal
    explicit_header, implicit_header, length_at, long_vrs = _EXPLICIT_HEADER, _IMPLICIT_HEADER, _LENGTH, _LONG_VRS
    short_vr_names = _SHORT_VR_NAMES
    size = len(data)
    position = 132
    syntax_value = sop_class_value = b""
    while True:  # the file meta elements: group 0002, explicit VR little endian
        if position + 12 > size:
            data = _more(data, read, position + 12)
            size = len(data)
            if position + 12 > size:
                raise _NotMinimal
        group, element, vr, length = explicit_header(data, position)
        if group != 0x0002:
            break
        if vr in short_vr_names:
            start = position + 8
        elif vr in long_vrs:
            length = length_at(data, position + 8)[0]
            start = position + 12
        elif vr.isalpha():
            start = position + 8
        else:
            raise _NotMinimal
        end = start + length
        if end > size:
            data = _through(data, read, end)
            size = len(data)
        if element == 0x0010:
            syntax_value = data[start:end]
        elif element == 0x0002:
            sop_class_value = data[start:end]
        position = end
    syntax = syntax_value.rstrip(b"\0 ").decode("ascii", "replace")
    if syntax in _NOT_EXPLICIT_LITTLE or sop_class_value.rstrip(b"\0 ").decode("ascii", "replace") == _DICOMDIR_CLASS:
        raise _NotMinimal
    implicit = syntax == _IMPLICIT_LITTLE
    wanted = _SLICE_KEYS.get
    raw_tail = _RAW_TAIL
    short_vr_name = short_vr_names.get
    last = _LAST_SLICE_TAG
    found: _Elements = {}
    while True:  # the top-level elements up to the last wanted one
        if position + 12 > size:
            data = _more(data, read, position + 12)
            size = len(data)
            if position + 12 > size:
                if size <= position:  # the end of a file without pixel data
                    return syntax, found
                raise _NotMinimal
        if implicit:
            group, element, length = implicit_header(data, position)
            vr_name = None
            start = position + 8
        else:
            group, element, vr, length = explicit_header(data, position)
            vr_name = short_vr_name(vr)
            if vr_name is not None:  # the common case (an item tag is beyond the last wanted tag)
                start = position + 8
            elif group == 0xFFFE:  # item and delimiter tags have no VR
                length = length_at(data, position + 4)[0]
                start = position + 8
            elif vr in long_vrs:
                length = length_at(data, position + 8)[0]
                vr_name = vr.decode()
                start = position + 12
            elif vr.isalpha():
                vr_name = vr.decode()
                start = position + 8
            else:
                raise _NotMinimal
        tag = (group << 16) | element
        if tag > last:
            return syntax, found
        if length == _UNDEFINED:
            walker = _Walker(data, read, start)
            walker.skip_undefined(implicit)
            data, position = walker.data, walker.position
            size = len(data)
            continue
        end = start + length
        if end > size:
            data = _through(data, read, end)
            size = len(data)
        key = wanted(tag)
        if key is not None:
            found[key] = _new_raw(RawDataElement, (key, vr_name, length, data[start:end], start, implicit, True)
                                  + raw_tail)
        position = end


def _more(data: bytes, read: Callable[[int], bytes], end: int) -> bytes:
    """``data`` followed by more of the file, up to at least ``end`` bytes if the file has them."""
    while end > len(data):
        more = read(max(_HEADER_CHUNK, end - len(data)))
        if not more:
            break
        data += more
    return data


def _through(data: bytes, read: Callable[[int], bytes], end: int) -> bytes:
    """:func:`_more` up to ``end``; _NotMinimal (pydicom reads the file) if the file ends before."""
    data = _more(data, read, end)
    if end > len(data):
        raise _NotMinimal
    return data


class _Walker:
    """Skips an undefined-length sequence in a file's first bytes, reading more of the file as needed."""

    def __init__(self, data: bytes, read: Callable[[int], bytes], position: int) -> None:
        self.data = data
        self.read = read
        self.position = position

    def _need(self, end: int) -> None:
        if end > len(self.data):
            self.data = _more(self.data, self.read, end)
            if end > len(self.data):
                raise _NotMinimal

    def _header(self, implicit: bool) -> tuple[int, int, int]:
        """(tag, value length, value start) of the element at the position."""
        self._need(self.position + 12)
        group, element = struct.unpack_from("<HH", self.data, self.position)
        tag = (group << 16) | element
        if implicit or group == 0xFFFE:
            return tag, struct.unpack_from("<I", self.data, self.position + 4)[0], self.position + 8
        vr = self.data[self.position + 4:self.position + 6]
        if vr in _LONG_VRS:
            return tag, struct.unpack_from("<I", self.data, self.position + 8)[0], self.position + 12
        if not vr.isalpha():
            raise _NotMinimal
        return tag, struct.unpack_from("<H", self.data, self.position + 6)[0], self.position + 8

    def skip_undefined(self, implicit: bool) -> None:
        """Skip an undefined-length sequence value (items of defined or undefined length) at the position."""
        while True:
            tag, length, start = self._header(True)
            self.position = start
            if tag == 0xFFFEE0DD:  # sequence delimiter
                return
            if tag != 0xFFFEE000:
                raise _NotMinimal
            if length != _UNDEFINED:
                self.position = start + length
                continue
            while True:  # an undefined-length item: elements up to the item delimiter
                tag, length, start = self._header(implicit)
                if tag == 0xFFFEE00D:
                    self.position = start
                    break
                if length == _UNDEFINED:
                    self.position = start
                    self.skip_undefined(implicit)
                else:
                    self.position = start + length


#: Empty datasets as pydicom makes them, one per transfer syntax, that :func:`_new_dataset` copies.
_TEMPLATES: dict[str, Dataset] = {}


def _new_dataset(elements: _Elements, syntax: str, implicit: bool) -> Dataset:
    """A Dataset of raw ``elements`` read with ``syntax``, its file meta holding the Transfer Syntax UID.

    Copies the state of a template made by pydicom (a fresh Dataset's attributes) rather than
    building one (20 us of attribute look-ups per slice); its containers are fresh copies.
    """
    template = _TEMPLATES.get(syntax)
    if template is None:
        template = Dataset()
        template.set_original_encoding(implicit, True)
        template.file_meta = FileMetaDataset()
        value = syntax.encode("ascii")
        value += b"\0" * (len(value) % 2)
        # Stored raw (immutable, so shared by the copies); converted to the same UID on first access.
        template.file_meta[_TRANSFER_SYNTAX] = RawDataElement(_TRANSFER_SYNTAX, "UI", len(value), value, 0, False, True)
        if not (_copyable(template) and _copyable(template.file_meta)) or len(_TEMPLATES) > 16:
            ds = Dataset(elements)  # an unknown pydicom (or many odd syntaxes): build it
            ds.set_original_encoding(implicit, True)
            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = UID(syntax)
            return ds
        _TEMPLATES[syntax] = template
    meta = _copy(template.file_meta)
    ds = _copy(template, elements)
    ds.__dict__["file_meta"] = meta
    return ds


def _copyable(ds: Dataset) -> bool:
    """True if the attributes of ``ds`` are immutable values, flat containers of them, or its file meta."""
    simple = (type(None), bool, int, float, str, bytes, tuple)
    for name, value in vars(ds).items():
        if name == "file_meta" and isinstance(value, FileMetaDataset):
            continue
        if isinstance(value, (dict, list)):
            items = value.items() if isinstance(value, dict) else enumerate(value)
            if not all(isinstance(k, simple) and isinstance(v, simple) for k, v in items):
                return False
        elif not isinstance(value, simple):
            return False
    return True


def _copy(template: Dataset, elements: dict | None = None) -> Dataset:
    """A new dataset with the state of ``template`` (containers copied); ``elements`` as its elements."""
    ds = object.__new__(type(template))
    state = ds.__dict__
    for name, value in template.__dict__.items():
        state[name] = value.copy() if isinstance(value, (dict, list)) else value
    if elements is not None:
        state["_dict"] = elements
    return ds


def _read_header(path: str | Path) -> Dataset | None:
    try:
        # Values above 1 MB (icons, overlays, private blobs) stay on disk until someone reads them.
        ds = pydicom.dcmread(path, stop_before_pixels=True, defer_size="1 MB")
    except (InvalidDicomError, EOFError, OSError, ValueError, TypeError, KeyError) as error:
        logger.debug("Skipping %s: not readable as DICOM (%s)", path, error)
        return None
    except Exception as error:  # noqa: BLE001 - a junk file (deep nesting, ...) must not stop the export
        logger.warning("Skipping %s: not readable as DICOM (%s).", path, type(error).__name__)
        return None
    if not _values_readable(ds, path):
        return None
    ds.filename = str(path)
    return ds


def _values_readable(ds: Dataset, path: str | Path, keywords: tuple[str, ...] | None = None) -> bool:
    """Convert the values every source header is read for now; False (with a warning) if one is damaged.

    pydicom converts values lazily: a damaged one (a 3-byte Rows) would otherwise surface later,
    as an unexpected error, instead of the junk file being skipped.
    """
    try:
        for keyword in keywords or _CHECKED_KEYWORDS:
            _ = ds.get(keyword)
    except Exception as error:  # noqa: BLE001 - pydicom raises many types on damaged values
        logger.warning("Skipping %s: its header is damaged (%s).", path, " ".join(str(error).split())[:120])
        return False
    return True


#: Attributes read from every source header: their values are checked when the file is read.
_CHECKED_KEYWORDS = (
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "Modality",
    "Rows", "Columns", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
    "NumberOfFrames",
)  # fmt: skip
#: Those of them with binary values (a wrong length raises when converted).
_BINARY_KEYWORDS = ("Rows", "Columns")


def _is_image(ds: Dataset) -> bool:
    if _has(ds, "DirectoryRecordSequence"):  # DICOMDIR
        return False
    if _string(ds, "Modality").upper() in _NON_IMAGE_MODALITIES:
        return False
    return _has(ds, "Rows") and _has(ds, "Columns")


def _deduplicate(series: list[Dataset]) -> list[Dataset]:
    seen: set[str] = set()
    unique = []
    for ds in series:
        uid = _string(ds, "SOPInstanceUID")
        if uid and uid in seen:
            logger.warning("Skipping a second copy of instance %s (%s).", uid, getattr(ds, "filename", ""))
            continue
        seen.add(uid)
        unique.append(ds)
    return unique


# --- checks -----------------------------------------------------------------------------------


def _check_consistent(series: Sequence[Dataset]) -> list[list[float]] | None:
    """Raise SourceImageError unless the slices share size, orientation and spacing at distinct positions.

    Returns the positions of single-frame slices (None for a multi-frame image).
    """
    if len(series) == 1 and _frames(series[0]) > 1:
        _multiframe_planes(series[0])  # raises if the plane attributes are missing
        return None
    first = series[0]
    sizes = np.array([(_unsigned_short(ds, "Rows"), _unsigned_short(ds, "Columns")) for ds in series])
    orientations = np.array([_orientation(ds) for ds in series])
    spacings = np.array([_pixel_spacing(ds) for ds in series])

    def where(mismatch: np.ndarray) -> str:
        ds = series[int(np.flatnonzero(mismatch)[0])]
        return str(getattr(ds, "filename", None) or ds.get("SOPInstanceUID", "a slice"))

    other_size = np.any(sizes != sizes[0], axis=1)
    if other_size.any():
        rows, columns = sizes[int(np.flatnonzero(other_size)[0])]
        raise SourceImageError(
            f"The slices of the series differ in size ({first.Rows}x{first.Columns} vs {rows}x{columns} in "
            f"{where(other_size)}); it may mix a localizer with the axial images. Choose files of one image stack."
        )
    other_orientation = ~np.all(np.isclose(orientations, orientations[0], atol=_ORIENTATION_TOLERANCE), axis=1)
    if other_orientation.any():
        raise SourceImageError(
            f"The slices of the series have different orientations ({where(other_orientation)}); a segmentation "
            "needs one stack of parallel slices. Choose files of one image stack."
        )
    other_spacing = ~np.all(np.isclose(spacings, spacings[0], atol=_SPACING_TOLERANCE), axis=1)
    if other_spacing.any():
        raise SourceImageError(
            f"The slices of the series have different pixel spacings ({where(other_spacing)}); choose files of one "
            "image stack."
        )
    positions = [_position(ds) for ds in series]
    rounded = np.round(np.array(positions), 3)
    if len(np.unique(rounded, axis=0)) != len(rounded):
        raise SourceImageError(
            "Several slices of the series share the same position (e.g. several time points or echoes in one "
            "series). Choose the files of one volume."
        )
    return positions


#: Tags of the keywords looked up here (pydicom's keyword look-up costs more than the rest of a read).
_TAGS: dict[str, BaseTag] = {}


def _elements(ds: Dataset, keyword: str) -> tuple[BaseTag, dict] | None:
    """The tag of ``keyword`` and the dict of the elements of ``ds`` (None if either is not as expected)."""
    tag = _TAGS.get(keyword)
    if tag is None:
        number = tag_for_keyword(keyword)
        if number is None:
            return None
        tag = _TAGS[keyword] = _SLICE_KEYS.get(number) or BaseTag(number)  # the key object: found by identity
    elements = getattr(ds, "_dict", None)
    return (tag, elements) if isinstance(elements, dict) else None


def _element(ds: Dataset, keyword: str) -> DataElement | RawDataElement | None:
    """``ds.get_item(keyword)``: the element (raw while pydicom has not converted it), None if absent."""
    found = _elements(ds, keyword)
    if found is None:
        return ds.get_item(keyword)
    element = found[1].get(found[0])
    if isinstance(element, RawDataElement) and element.value is None:
        return ds.get_item(keyword)  # a deferred value: pydicom reads it
    return element


def _has(ds: Dataset, keyword: str) -> bool:
    """``keyword in ds`` (a deferred value is not read)."""
    found = _elements(ds, keyword)
    return keyword in ds if found is None else found[0] in found[1]


def _raw_value(element: DataElement | RawDataElement | None) -> bytes | None:
    """The value bytes of a raw element (as stored: pydicom has not converted it), else None."""
    if isinstance(element, RawDataElement) and isinstance(element.value, bytes):
        return element.value
    return None


def _string(ds: Dataset, keyword: str) -> str:
    """An ASCII attribute (UID, CS, IS) as text, '' if absent; read from the raw bytes while they are raw (faster)."""
    element = _element(ds, keyword)
    if element is None:
        return ""
    value = _raw_value(element)
    if value is not None and value.isascii():
        return value.rstrip(b"\0 ").lstrip(b" ").decode("ascii")
    return str(ds.get(keyword, "") or "")


def _unsigned_short(ds: Dataset, keyword: str) -> int:
    """``int(ds.<keyword>)`` of a US attribute (Rows, Columns); from the raw bytes while they are raw (faster)."""
    element = _element(ds, keyword)
    value = _raw_value(element)
    if value is not None and len(value) == 2 and element.VR in ("US", None):  # type: ignore[union-attr]
        return int.from_bytes(value, "little" if element.is_little_endian else "big")  # type: ignore[union-attr]
    return int(getattr(ds, keyword))


def _frames(ds: Dataset) -> int:
    """``int(ds.get("NumberOfFrames", 1) or 1)``, without converting the common raw values ('', '1')."""
    element = _element(ds, "NumberOfFrames")
    if element is None:
        return 1
    if _raw_value(element) in (b"", b"1", b"1 ", b" 1"):
        return 1
    return int(ds.get("NumberOfFrames", 1) or 1)


class _Parsed(list):
    """Floats :func:`_decimals` parsed from raw bytes (a new list: returned as they are)."""


def _decimals(ds: Dataset, keyword: str) -> Sequence | None:
    """The values of a DS attribute; parsed from the raw bytes while pydicom has not converted them (faster)."""
    value = _raw_value(_element(ds, keyword))
    if value is not None:
        text = value.rstrip(b"\0 ")
        if text:
            try:
                return _Parsed([float(part) for part in text.split(b"\\")])
            except ValueError:
                pass  # pydicom reports it
    return ds.get(keyword)


def _orientation(ds: Dataset) -> list[float]:
    value = _decimals(ds, "ImageOrientationPatient")
    if value is None or len(value) != 6:
        raise SourceImageError(
            "A source image has no valid Image Orientation (Patient), so its position in space is unknown; "
            "only cross-sectional images (CT, MR, PET, ...) can be segmentation sources."
        )
    return value if type(value) is _Parsed else [float(v) for v in value]


def _position(ds: Dataset) -> list[float]:
    value = _decimals(ds, "ImagePositionPatient")
    if value is None or len(value) != 3:
        raise SourceImageError(
            "A source image has no valid Image Position (Patient), so its position in space is unknown."
        )
    position = value if type(value) is _Parsed else [float(v) for v in value]
    if not all(map(math.isfinite, position)):
        name = Path(str(getattr(ds, "filename", "") or "")).name or "A source image"
        raise SourceImageError(
            f"Source image '{name}' has Image Position (Patient) {position}; a position must be three finite "
            "numbers. Repair or remove that file from the series."
        )
    return position


def _pixel_spacing(ds: Dataset) -> list[float]:
    value = _decimals(ds, "PixelSpacing")
    if value is None or len(value) != 2 or min(float(v) for v in value) <= 0:
        raise SourceImageError("A source image has no valid Pixel Spacing; its voxel size is unknown.")
    return value if type(value) is _Parsed else [float(v) for v in value]


def _slice_thickness(ds: Dataset) -> float:
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = ds.get(keyword)
        if value not in (None, "") and float(value) > 0:
            return float(value)
    return 1.0


def _multiframe_planes(ds: Dataset) -> tuple[list[float], list[float], np.ndarray, float]:
    """Orientation, pixel spacing, per-frame positions and thickness of an enhanced multi-frame image."""
    shared = (ds.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if len(per_frame) != frames:
        raise SourceImageError(
            "The multi-frame source image lacks per-frame plane positions; its geometry is unknown."
        )

    def find(group_keyword: str, index: int = 0) -> Dataset:
        for group in (per_frame[index], shared):
            sequence = group.get(group_keyword)
            if sequence:
                return sequence[0]
        raise SourceImageError(
            f"The multi-frame source image has no {_spaced(group_keyword)}; its geometry is unknown."
        )

    orientation = _orientation(find("PlaneOrientationSequence"))
    measures = find("PixelMeasuresSequence")
    spacing = _pixel_spacing(measures)
    positions = np.array([_position(find("PlanePositionSequence", i)) for i in range(frames)], dtype=np.float64)
    for i in range(1, frames):
        if not np.allclose(_orientation(find("PlaneOrientationSequence", i)), orientation, atol=_ORIENTATION_TOLERANCE):
            raise SourceImageError("The frames of the multi-frame source image have different orientations.")
    return orientation, spacing, positions, _slice_thickness(measures)


# --- messages ---------------------------------------------------------------------------------


def _spaced(keyword: str) -> str:
    """'SOPInstanceUID' -> 'SOP Instance UID'."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", keyword)


def _series_summary(uid: str, members: Sequence[Dataset]) -> str:
    first = members[0]
    number = first.get("SeriesNumber")
    name = f"series {number}" if number not in (None, "") else "series (no number)"
    description = str(first.get("SeriesDescription", "") or "").strip() or "no description"
    modality = first.get("Modality", "?")
    return f"{name} '{description}' ({modality}, {len(members)} files, UID {uid or 'blank'})"


def _describe(path_or_files: PathOrFiles) -> str:
    if isinstance(path_or_files, (str, os.PathLike)):
        return f"'{path_or_files}'"
    return "the given files"
