"""Read DICOM Segmentation series (LABELMAP, BINARY, FRACTIONAL) into the model.

* LABELMAP (Label Map Segmentation Storage): every instance of the series is one layer.
  Frames are placed by their Image Position (Patient), never by their order; slices that
  have no frame (sparse files of other tools) are background. Label 0, the Pixel
  Padding Value and a segment numbered 0 are background and never become segments.
* BINARY and FRACTIONAL (Segmentation Storage): each frame belongs to one segment
  (Referenced Segment Number); segments are packed greedily into as few layers as
  possible such that no two segments of a layer overlap. FRACTIONAL frames are
  thresholded.

Untrusted headers are checked before anything is allocated, and every problem raises a
typed :class:`~.errors.LabelmapSegError` that says what is wrong and what to do.
"""

from __future__ import annotations

import contextlib
import contextvars
import filecmp
import logging
import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, Union

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from ..atomic import is_temporary_name
from ..errors import (
    CorruptPixelDataError,
    GeometryMismatchError,
    ImplausibleSizeError,
    InvalidDicomFileError,
    LabelmapSegError,
    UndescribedLabelError,
    UnsupportedSegmentationError,
)
from ..limits import check_bytes
from ..model import (
    Geometry,
    Layer,
    LayerPacker,
    ReferencedSeries,
    Segment,
    Segmentation,
    SegmentationType,
    SeriesInfo,
    label_dtype,
)
from ..segmentjson import segment_to_json
from . import framegroups, pixels
from .grid import MAX_VOXELS, check_voxels, series_grid
from .header import (
    LABELMAP_SEGMENTATION_STORAGE,
    SEG_SOP_CLASSES,
    SEGMENTATION_STORAGE,
    Header,
    Instance,
    brief_reason,
    check_series_consistency,
    instance_name,
    quoted,
    sop_class,
    sop_class_name,
    sorted_headers,
)

logger = logging.getLogger(__name__)

#: A path, a folder, a pydicom Dataset, or a list of those.
Source = Union[str, os.PathLike, Dataset]
Sources = Union[Source, Iterable[Source]]
T = TypeVar("T")


# ---------------------------------------------------------------------------- public API


@dataclass(frozen=True)
class LayerDescription:
    """Header facts of one SEG instance (one layer of a LABELMAP series)."""

    sop_instance_uid: str
    instance_number: int | None
    transfer_syntax_uid: str
    transfer_syntax: str
    number_of_frames: int
    rows: int
    columns: int
    bits_allocated: int
    photometric_interpretation: str
    pixel_padding_value: int | None
    segments: tuple[Segment, ...]
    path: str | None = None


@dataclass(frozen=True)
class SeriesDescription:
    """What :func:`describe` reports about one SEG series (no pixels decoded).

    ``problem`` is None if :func:`read_segmentation` can read the series, else why not.
    ``geometry`` is None if the headers define no volume (e.g. slide microscopy).
    """

    series_info: SeriesInfo
    layers: tuple[LayerDescription, ...]
    geometry: Geometry | None
    referenced_series: ReferencedSeries | None
    problem: str | None = None

    @property
    def segments(self) -> list[Segment]:
        """All segments of all layers."""
        return [segment for layer in self.layers for segment in layer.segments]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable summary (for ``dicom-labelmap-seg info --json``)."""
        info = self.series_info
        geometry = None
        if self.geometry is not None:
            geometry = {
                "shape": list(self.geometry.shape),
                "spacing": [round(float(v), 6) for v in self.geometry.spacing],
                "origin": [round(float(v), 6) for v in self.geometry.origin],
                "direction": [[round(float(v), 6) for v in row] for row in self.geometry.direction],
                "frame_of_reference_uid": self.geometry.frame_of_reference_uid,
            }
        referenced = None
        if self.referenced_series is not None:
            referenced = {
                "study_instance_uid": self.referenced_series.study_instance_uid,
                "series_instance_uid": self.referenced_series.series_instance_uid,
                "sop_class_uid": self.referenced_series.sop_class_uid,
                "instances": len(self.referenced_series.sop_instance_uids),
            }
        return {
            "series_instance_uid": info.series_instance_uid,
            "study_instance_uid": info.study_instance_uid,
            "segmentation_type": info.segmentation_type.value,
            "series_description": info.series_description,
            "series_number": info.series_number,
            "content_label": info.content_label,
            "content_description": info.content_description,
            "content_creator_name": info.content_creator_name,
            "patient_id": info.patient_id,
            "patient_name": info.patient_name,
            "palette_color": info.palette_color,
            "readable": self.problem is None,
            "problem": self.problem,
            "geometry": geometry,
            "referenced_series": referenced,
            "layers": [
                {
                    "sop_instance_uid": layer.sop_instance_uid,
                    "instance_number": layer.instance_number,
                    "path": layer.path,
                    "transfer_syntax": layer.transfer_syntax,
                    "transfer_syntax_uid": layer.transfer_syntax_uid,
                    "frames": layer.number_of_frames,
                    "rows": layer.rows,
                    "columns": layer.columns,
                    "bits_allocated": layer.bits_allocated,
                    "photometric_interpretation": layer.photometric_interpretation,
                    "pixel_padding_value": layer.pixel_padding_value,
                    "segments": [segment_to_json(segment) for segment in layer.segments],
                }
                for layer in self.layers
            ],
        }


def read_segmentation(
    sources: Sources,
    *,
    fractional_threshold: float = 0.5,
    max_voxels: int = MAX_VOXELS,
    workers: int = 0,
    max_bytes: int | None = None,
    max_slices: int | None = None,
    allow_lossy: bool = False,
) -> Segmentation:
    """Read ONE DICOM SEG series into a :class:`~.model.Segmentation`.

    Parameters
    ----------
    sources: path, folder, Dataset or a list of them
        The SEG instances of one series. Folders are searched recursively; files in them
        that are not DICOM SEG are skipped.
    fractional_threshold: float
        FRACTIONAL segmentations: a voxel belongs to a segment if its value is at least
        ``fractional_threshold * MaximumFractionalValue`` (and not 0).
    max_voxels: int
        Sanity bound on the label voxels (all layers) a header may make us allocate.
    workers: int
        Frame decoding threads (separate from any process count); 0 means ``os.cpu_count()``.
        Threads are used only with decoders that release the GIL (imagecodecs' CharLS, OpenJPH
        and libjxl, zlib); pyjpegls, pylibjpeg-openjpeg and pylibjpeg-rle decode on one.
    max_bytes: int | None
        Bytes reading may allocate; by default 75% of the memory available when reading starts
        (bounded by the process's address-space limit).
    max_slices: int | None
        Slices the grid may have; by default max(10,000, 100 x the slices that have frames), so
        that a few frames millions of slices apart (a damaged position) are refused.
    allow_lossy: bool
        Read LABELMAP/BINARY pixel data in a lossy transfer syntax (or marked Lossy Image
        Compression 01) with a warning, instead of refusing it (label values may be wrong).

    Raises
    ------
    LabelmapSegError
        A subclass saying what is wrong: InvalidDicomFileError, CorruptPixelDataError,
        ImplausibleSizeError, UnsupportedSegmentationError, GeometryMismatchError,
        UndescribedLabelError, MissingCodecError.
    """
    _check_threshold(fractional_threshold)
    series = _group_series(_load(sources, headers_only=False))
    if len(series) != 1:
        listed = ", ".join(sorted(series))
        raise UnsupportedSegmentationError(
            f"The input holds {len(series)} segmentation series ({listed}); read_segmentation reads one. "
            "Pass the files of one series, or use read_segmentations."
        )
    limits = _Limits(max_voxels, max_bytes, max_slices)
    return _guarded(_read_series, next(iter(series.values())), fractional_threshold, limits, workers, allow_lossy)


def read_segmentations(
    sources: Sources,
    *,
    fractional_threshold: float = 0.5,
    max_voxels: int = MAX_VOXELS,
    workers: int = 0,
    max_bytes: int | None = None,
    max_slices: int | None = None,
    allow_lossy: bool = False,
) -> list[Segmentation]:
    """Read every DICOM SEG series found in ``sources`` (grouped by Series Instance UID).

    Series are returned in the order they are first met. Unlike :func:`read_segmentation`,
    files that are not DICOM SEG are skipped even when named directly (a mixed list of files,
    e.g. a whole study, can be given). Parameters as :func:`read_segmentation`.
    """
    _check_threshold(fractional_threshold)
    limits = _Limits(max_voxels, max_bytes, max_slices)
    series = _group_series(_load(sources, headers_only=False, lenient=True))
    return [
        _guarded(_read_series, instances, fractional_threshold, limits, workers, allow_lossy)
        for instances in series.values()
    ]


@dataclass(frozen=True)
class _Limits:
    """The sanity bounds of one read (see :func:`read_segmentation`)."""

    max_voxels: int = MAX_VOXELS
    max_bytes: int | None = None
    max_slices: int | None = None


def _check_threshold(fractional_threshold: float) -> None:
    """A FRACTIONAL threshold must be a number in (0, 1]: 0 or less keeps everything, above 1 nothing."""
    try:
        value = float(fractional_threshold)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= 1):
        raise ValueError(
            f"The fractional threshold must be a number greater than 0 and at most 1 (got {fractional_threshold!r}); "
            "0.5 means a voxel belongs to a segment if it is at least half covered."
        )


def describe(sources: Sources) -> list[SeriesDescription]:
    """Header-level description of every SEG series in ``sources`` (no pixel data is decoded).

    Series that are valid DICOM SEG but cannot be read (e.g. slide microscopy) are described
    with a ``problem``; files that are not DICOM or lack mandatory attributes raise
    :class:`~.errors.InvalidDicomFileError`.
    """
    return [_guarded(_describe_series, instances) for instances in _group_series(_load(sources, True)).values()]


def _describe_series(instances: list[Instance]) -> SeriesDescription:
    """The SeriesDescription of one series (headers only)."""
    headers = sorted_headers(instances)
    check_series_consistency(headers)
    problem = None
    geometry = None
    try:
        unsupported = next((h.unsupported for h in headers if h.unsupported), None)
        if unsupported:
            raise UnsupportedSegmentationError(unsupported)
        geometry, _ = series_grid(headers)
    except LabelmapSegError as error:
        problem = str(error)
    return SeriesDescription(
        series_info=_series_info(headers),
        layers=tuple(_layer_description(header) for header in headers),
        geometry=geometry,
        referenced_series=_referenced_series(headers),
        problem=problem,
    )


def _guarded(function: Callable[..., T], instances: list[Instance], *args: Any) -> T:
    """Call ``function(instances, *args)``; turn any library exception into a typed error naming the file."""
    try:
        return function(instances, *args)
    except LabelmapSegError:
        raise
    except MemoryError as error:
        raise ImplausibleSizeError(
            "Not enough memory to read this segmentation; its header may be damaged, or the data is too large "
            "for this computer."
        ) from error
    except Exception as error:  # noqa: BLE001 - pydicom raises many types on damaged values
        where = instance_name(instances[0]) if len(instances) == 1 else "A file of the series"
        raise InvalidDicomFileError(
            f"{where} has a damaged header or pixel data ({brief_reason(error)}); export the file again."
        ) from error


# ---------------------------------------------------------------------------- loading files


def _load(sources: Sources, headers_only: bool, lenient: bool = False) -> list[Instance]:
    """Read every SEG instance of ``sources``.

    Files inside folders (searched recursively) that are not DICOM SEG are skipped; so are
    files named directly when ``lenient`` (for batch reading of mixed file lists), else
    they raise. The other files' pixel data is never read.
    """
    if isinstance(sources, (str, os.PathLike, Dataset)):
        sources = [sources]
    instances: list[Instance] = []
    skipped: list[str] = []
    searched_folder = False
    for source in sources:
        if isinstance(source, Dataset):
            _check_sop_class(source, "the given dataset")
            instances.append(Instance(source))
            continue
        path = Path(source)
        if path.is_dir():
            searched_folder = True
            # our temporaries (a killed export's ``.x.dcm.1234abcd.partial``) are never read
            files = sorted(p for p in path.rglob("*") if p.is_file() and not is_temporary_name(p.name))
        elif path.exists() and not path.is_file():
            raise InvalidDicomFileError(
                f"'{path}' is not a regular file or folder (a device, pipe or socket); give a DICOM SEG file."
            )
        elif path.is_file() and not lenient:
            ds = _read_file(path, headers_only)
            _check_sop_class(ds, f"'{path.name}'")
            instances.append(Instance(ds, str(path)))
            continue
        elif path.is_file():
            files = [path]
        else:
            raise InvalidDicomFileError(f"'{path}' does not exist; give a DICOM SEG file or a folder holding one.")
        for file in files:
            instance = _read_if_segmentation(file, headers_only, skipped)
            if instance is not None:
                instances.append(instance)
    if not instances:
        where = "the given folder(s)" if searched_folder else "the input"
        other = f" (found only: {', '.join(sorted(set(skipped)))})" if skipped else ""
        raise InvalidDicomFileError(f"No DICOM Segmentation files were found in {where}{other}.")
    return instances


def _read_if_segmentation(file: Path, headers_only: bool, skipped: list[str]) -> Instance | None:
    """The instance of ``file`` if it is a DICOM SEG, else None (noting what was skipped)."""
    if not _has_dicom_preamble(file):
        skipped.append("non-DICOM files")
        return None
    try:  # headers first: the pixel data of other files (e.g. the images) is never read
        ds = _read_file(file, headers_only=True)
    except InvalidDicomFileError as error:
        logger.warning("Skipped %s: %s", file, error)
        skipped.append("unreadable files")
        return None
    if sop_class(ds) not in SEG_SOP_CLASSES:
        skipped.append(sop_class_name(ds))
        return None
    return Instance(ds if headers_only else _read_file(file, headers_only), str(file))


_LAZY_SEQUENCES = (framegroups.PER_FRAME_FUNCTIONAL_GROUPS, framegroups.REFERENCED_SERIES)


def _has_dicom_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _read_file(path: Path, headers_only: bool) -> Dataset:
    try:
        size = path.stat().st_size
    except OSError as error:
        raise InvalidDicomFileError(
            f"'{path}' cannot be read ({error.strerror}); check the path and permissions."
        ) from error
    if size < 132 or not _has_dicom_preamble(path):
        raise InvalidDicomFileError(
            f"'{path.name}' is not a DICOM file (no 'DICM' marker after the 128-byte preamble). "
            "Give a DICOM SEG file (.dcm)."
        )
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(path, stop_before_pixels=headers_only)
            # pydicom converts element values lazily: convert them now so that damage surfaces here,
            # except two large sequences that framegroups parses from raw bytes much faster (guarded later).
            # Other sequences too when framegroups finds that pydicom would read them cleanly (they are
            # converted when used, if ever); the Segment Sequence is then read from raw bytes (header.py).
            for dataset in (getattr(ds, "file_meta", None) or Dataset(), ds):
                for tag in list(dataset.keys()):
                    if tag in _LAZY_SEQUENCES:
                        continue
                    if dataset is ds and _plain_sequence(ds, tag):
                        continue
                    _ = dataset[tag].value
    except InvalidDicomError as error:
        raise InvalidDicomFileError(f"'{path.name}' is not a valid DICOM file; give a DICOM SEG file.") from error
    except Exception as error:  # noqa: BLE001 - pydicom raises many types on damaged files
        raise InvalidDicomFileError(
            f"'{path.name}' is truncated or damaged and cannot be parsed as DICOM ({brief_reason(error)}). "
            "Copy or export the file again."
        ) from error
    for warning in caught:
        text = str(warning.message)
        if "End of file" in text or "EOF" in text:
            raise InvalidDicomFileError(
                f"'{path.name}' is truncated (the file ends inside an element); copy or export it again."
            )
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return ds


def _plain_sequence(ds: Dataset, tag: int) -> bool:
    """True for a raw sequence that pydicom would convert without a problem (checked from its bytes)."""
    if tag == framegroups.SEGMENT_SEQUENCE:
        return framegroups.raw_segment_items(ds) is not None  # read (and kept) now: header.py uses it
    raw = ds.get_item(tag)
    return isinstance(raw, RawDataElement) and raw.VR == "SQ" and framegroups.raw_sequence_is_plain(ds, tag)


def _check_sop_class(ds: Dataset, what: str) -> None:
    uid = sop_class(ds)
    if not uid or not pydicom.uid.UID(uid).is_valid:
        raise InvalidDicomFileError(
            f"{what} has no valid SOP Class UID (found {quoted(uid)}); the file is truncated or is not a DICOM "
            "Segmentation. Give a complete SEG file."
        )
    if uid not in SEG_SOP_CLASSES:
        raise UnsupportedSegmentationError(
            f"{what} is {sop_class_name(ds)}, not a DICOM Segmentation (Label Map Segmentation Storage or "
            "Segmentation Storage). Give a SEG file."
        )


def _group_series(instances: list[Instance]) -> dict[str, list[Instance]]:
    series: dict[str, list[Instance]] = {}
    seen: dict[str, Instance] = {}
    for instance in instances:
        uid = str(instance.ds.get("SeriesInstanceUID", "") or "")
        if not uid:
            raise InvalidDicomFileError(
                f"{instance_name(instance)} has no Series Instance UID (a mandatory attribute); the file is invalid."
            )
        sop_uid = str(instance.ds.get("SOPInstanceUID", "") or "")
        if sop_uid and sop_uid in seen:
            first = seen[sop_uid]
            if _same_content(first, instance):
                continue  # the same instance given twice (e.g. a copy in another folder)
            raise InvalidDicomFileError(
                f"{_location(first)} and {_location(instance)} have the same SOP Instance UID {quoted(sop_uid, 70)} "
                "but different content; one of them is not what its UID says. Remove the wrong file, or read them "
                "separately."
            )
        seen[sop_uid] = instance
        series.setdefault(uid, []).append(instance)
    return series


def _location(instance: Instance) -> str:
    """The quoted path of an instance for messages that must tell two files apart."""
    return f"'{instance.path}'" if instance.path else "a given dataset"


def _same_content(first: Instance, second: Instance) -> bool:
    """True if two instances with one SOP Instance UID are byte-identical copies (or one dataset twice)."""
    if first.path and second.path:
        a, b = Path(first.path), Path(second.path)
        try:
            if a.samefile(b):
                return True
            if a.stat().st_size != b.stat().st_size:
                return False
            return filecmp.cmp(a, b, shallow=False)
        except OSError:
            return False
    if first.path is None and second.path is None:
        return first.ds is second.ds or first.ds == second.ds
    return False


# ---------------------------------------------------------------------------- reading a series


def _read_series(instances: list[Instance], fractional_threshold: float, limits: _Limits, workers: int,
                 allow_lossy: bool = False) -> Segmentation:
    max_voxels = limits.max_voxels
    headers = sorted_headers(instances)
    check_series_consistency(headers)
    for header in headers:
        if header.unsupported:
            raise UnsupportedSegmentationError(header.unsupported)
        _check_frame_budget(header, max_voxels, allow_lossy)
    geometry, slice_indices = series_grid(headers, max_voxels, limits.max_slices)
    layers_needed = len(headers) if headers[0].segmentation_type == SegmentationType.LABELMAP else 1
    check_voxels(*geometry.shape, layers_needed, max_voxels)
    check_bytes(_bytes_needed(headers, geometry), "this segmentation", limits.max_bytes)
    if headers[0].segmentation_type == SegmentationType.LABELMAP:
        layers = [
            _read_labelmap_layer(header, geometry, indices, workers, allow_lossy)
            for header, indices in zip(headers, slice_indices)
        ]
    else:
        layers = _read_binary_layers(headers, geometry, slice_indices, fractional_threshold, max_voxels, workers,
                                     allow_lossy)
    return Segmentation(
        geometry=geometry,
        layers=layers,
        referenced_series=_referenced_series(headers),
        series_info=_series_info(headers),
    )


def _bytes_needed(headers: list[Header], geometry: Geometry) -> int:
    """Bytes the volumes and decode buffers of a series take at least (before anything is allocated)."""
    volume = int(np.prod(geometry.shape))
    if headers[0].segmentation_type == SegmentationType.LABELMAP:
        # one label volume per layer, plus one decoded frame at a time
        return sum(volume * h.layout.dtype.itemsize + h.layout.frame_bytes for h in headers)
    # all frames decoded at once (one byte per pixel) plus the boolean masks, and at least one layer
    frames = sum(h.layout.number_of_frames * h.layout.rows * h.layout.columns for h in headers)
    return 2 * frames + volume


def _check_frame_budget(header: Header, max_voxels: int, allow_lossy: bool = False) -> None:
    """Bound what the header claims before anything is allocated or decoded."""
    layout = header.layout
    voxels = layout.rows * layout.columns * layout.number_of_frames
    where = instance_name(header.instance)
    if voxels > max_voxels:
        raise ImplausibleSizeError(
            f"{where} claims {layout.number_of_frames} frames of {layout.rows} x {layout.columns} pixels "
            f"({voxels:,} voxels), beyond the sanity limit of {max_voxels:,}. The header is damaged, or raise "
            "max_voxels if the data is really this large."
        )
    if "PixelData" not in header.ds:
        raise InvalidDicomFileError(f"{where} has no Pixel Data; the file is invalid or truncated.")
    if pixels.is_native(header.transfer_syntax_uid):
        expected = math.ceil(voxels * layout.bits_allocated / 8)
        actual = len(header.ds.PixelData)
        if actual < expected:
            error = ImplausibleSizeError if actual * 2 < expected else CorruptPixelDataError
            raise error(
                f"{where}: Pixel Data holds {actual:,} bytes but {layout.number_of_frames} frames of "
                f"{layout.rows} x {layout.columns} x {layout.bits_allocated} bits need {expected:,}. The file is "
                "truncated or its header is wrong; export it again."
            )
        if actual > expected + 1:
            raise CorruptPixelDataError(
                f"{where}: Pixel Data holds {actual:,} bytes, more than the {expected:,} that Number of Frames "
                f"({layout.number_of_frames}) x Rows x Columns need. The header is wrong; export the file again."
            )
    else:
        pixels.require_decoder(header.transfer_syntax_uid)
        pixels.check_first_frame(header.ds, layout, allow_lossy)
    if header.segmentation_type != SegmentationType.FRACTIONAL:  # fractions may be lossy: they are thresholded
        pixels.check_lossless(header.ds, where, f"{header.segmentation_type.value} segmentation", allow_lossy)


#: Allocates LABELMAP label volumes while set (see :func:`labels_allocated_by`); None: numpy.
_LABEL_ALLOCATOR: contextvars.ContextVar[Callable[[tuple, np.dtype, bool], np.ndarray] | None] = \
    contextvars.ContextVar("label_allocator", default=None)


@contextlib.contextmanager
def labels_allocated_by(allocate: Callable[[tuple, np.dtype, bool], np.ndarray]) -> Iterator[None]:
    """Within the block, LABELMAP label volumes are decoded into ``allocate(shape, dtype, zeroed)``.

    ``zeroed`` is False when every voxel is about to be decoded (then the array need not be zero-filled).

    The MRML bridge uses it to decode straight into the VTK memory of the node it creates next
    (:func:`~..mrml.labels_in_vtk_memory`): no second copy of the label volume.
    """
    token = _LABEL_ALLOCATOR.set(allocate)
    try:
        yield
    finally:
        _LABEL_ALLOCATOR.reset(token)


def _read_labelmap_layer(header: Header, geometry: Geometry, slice_indices: np.ndarray, workers: int,
                         allow_lossy: bool = False) -> Layer:
    where = instance_name(header.instance)
    if np.unique(slice_indices).size != slice_indices.size:
        raise GeometryMismatchError(
            f"{where} has two or more frames at the same position; a LABELMAP holds one frame per slice."
        )
    described = set(header.segments)
    padding = header.padding_value
    if padding is not None and (padding == 0 or padding in described):
        if padding in described:
            logger.warning("%s: Pixel Padding Value %d is also a segment number; kept as that segment.", where, padding)
        padding = None
    allocate = _LABEL_ALLOCATOR.get()
    # Every slice gets a frame (unique, checked above) that is decoded in full: no zero-filling needed.
    covered = slice_indices.size == geometry.shape[0]
    out = np.zeros(geometry.shape, dtype=header.layout.dtype) if allocate is None else \
        allocate(geometry.shape, header.layout.dtype, not covered)
    allowed = described | header.background_numbers | {0}
    counts = pixels.decode_labelmap_frames(header.ds, header.layout, slice_indices, out, padding, workers,
                                           allow_lossy, pixels.allowed_through(allowed))
    undescribed = sorted(set(np.flatnonzero(counts).tolist()) - allowed)
    if undescribed:
        shown = ", ".join(str(v) for v in undescribed[:10]) + (" ..." if len(undescribed) > 10 else "")
        raise UndescribedLabelError(
            f"{where}: pixel values {shown} occur in the label map but the Segment Sequence describes no such "
            "segment. The file is invalid; export it again with all segments described."
        )
    if out.dtype == np.uint16 and max(described, default=0) <= 255 and not np.any(counts[256:]):
        out = out.astype(label_dtype(max(described, default=0)))
    return Layer(labels=out, segments=[header.segments[n] for n in sorted(described)])


def _read_binary_layers(
    headers: list[Header],
    geometry: Geometry,
    slice_indices: list[np.ndarray],
    fractional_threshold: float,
    max_voxels: int,
    workers: int = 0,
    allow_lossy: bool = False,
) -> list[Layer]:
    """Segments of BINARY/FRACTIONAL instances, packed greedily into non-overlapping layers."""
    masks: list[tuple[Segment, dict[int, np.ndarray]]] = []
    for header, indices in zip(headers, slice_indices):
        frames = _binary_frames(header, fractional_threshold, workers, allow_lossy)
        for number in sorted(header.segments):
            frame_numbers = np.flatnonzero(header.frame_segments == number)
            planes: dict[int, np.ndarray] = {}
            for f in frame_numbers:
                k = int(indices[f])
                planes[k] = planes[k] | frames[f] if k in planes else frames[f]
            masks.append((header.segments[number], planes))
        frame_segments = header.frame_segments if header.frame_segments is not None else np.zeros(0, np.int64)
        unknown = sorted(set(frame_segments.tolist()) - set(header.segments))
        if unknown:
            raise UndescribedLabelError(
                f"{instance_name(header.instance)}: frames reference segment numbers {unknown[:10]} that the Segment "
                "Sequence does not describe. The file is invalid."
            )
    packer = LayerPacker(geometry.shape, lambda count: check_voxels(*geometry.shape, count, max_voxels))
    for segment, planes in masks:
        packer.add(segment, planes)
    return packer.layers() or [Layer(labels=np.zeros(geometry.shape, dtype=np.uint8), segments=[])]


def _binary_frames(header: Header, fractional_threshold: float, workers: int = 0,
                   allow_lossy: bool = False) -> np.ndarray:
    """All frames of a BINARY/FRACTIONAL instance as booleans ``(frames, rows, columns)``."""
    where = instance_name(header.instance)
    layout = header.layout
    try:
        if pixels.can_decode_frames(header.transfer_syntax_uid, layout.bits_allocated):  # Sup 244; frames checked
            array = pixels.decode_frames(header.ds, layout, workers, allow_lossy)
        else:
            array = header.ds.pixel_array
    except (LabelmapSegError, KeyboardInterrupt, SystemExit):
        raise
    # pydicom and its plugins raise many types; Rust codecs (pylibjpeg-rle) raise pyo3's
    # PanicException, which derives from BaseException.
    except BaseException as error:  # noqa: BLE001
        raise CorruptPixelDataError(
            f"{where}: the pixel data cannot be decoded ({brief_reason(error)}). The file is damaged; export it again."
        ) from error
    try:
        array = np.asarray(array).reshape(layout.number_of_frames, layout.rows, layout.columns)
    except ValueError as error:
        raise CorruptPixelDataError(
            f"{where}: the decoded pixel data does not hold {layout.number_of_frames} frames of "
            f"{layout.rows} x {layout.columns}; the header does not match the pixels."
        ) from error
    if header.segmentation_type == SegmentationType.FRACTIONAL:
        maximum = header.maximum_fractional_value or 255
        threshold = fractional_threshold * maximum
        logger.warning(
            "%s is a FRACTIONAL segmentation; read as binary: voxels with value >= %g (%g x Maximum Fractional "
            "Value %d) belong to the segment.",
            where,
            threshold,
            fractional_threshold,
            maximum,
        )
        return (array >= threshold) & (array > 0)
    return array != 0


# ---------------------------------------------------------------------------- series-level facts


def _series_info(headers: list[Header]) -> SeriesInfo:
    ds = headers[0].ds

    def text(keyword: str) -> str | None:
        value = ds.get(keyword)
        return str(value) if value not in (None, "") else None

    number = ds.get("SeriesNumber")
    try:
        series_number = int(number) if number not in (None, "") else None
    except (TypeError, ValueError):
        series_number = None
    return SeriesInfo(
        series_instance_uid=str(ds.SeriesInstanceUID),
        sop_instance_uids=tuple(str(h.ds.get("SOPInstanceUID", "")) for h in headers),
        segmentation_type=headers[0].segmentation_type,
        transfer_syntax_uids=tuple(h.transfer_syntax_uid for h in headers),
        study_instance_uid=text("StudyInstanceUID"),
        series_description=text("SeriesDescription"),
        series_number=series_number,
        content_label=text("ContentLabel"),
        content_description=text("ContentDescription"),
        content_creator_name=text("ContentCreatorName"),
        patient_id=text("PatientID"),
        patient_name=text("PatientName"),
        palette_color=any(h.photometric_interpretation == "PALETTE COLOR" for h in headers),
    )


def _referenced_series(headers: list[Header]) -> ReferencedSeries | None:
    """The source series: Referenced Series Sequence, completed from per-frame source image references.

    Without a Referenced Series Sequence, the source images named per frame (Source Image
    Sequence, Referenced Image Sequence) or at the top level still give the SOP instances;
    the series UID is then ''. None if the file references no image at all.
    """
    ds = headers[0].ds
    series_uid = None
    referenced_class = None
    instance_uids: list[str] = []
    referenced = framegroups.raw_referenced_series(ds)
    if referenced is None:
        referenced = [
            (
                str(item.get("SeriesInstanceUID", "") or ""),
                [
                    (str(i.get("ReferencedSOPClassUID", "") or ""), str(i.get("ReferencedSOPInstanceUID", "") or ""))
                    for i in item.get("ReferencedInstanceSequence") or ()
                ],
            )
            for item in ds.get("ReferencedSeriesSequence") or ()
        ]
    for uid, instances in referenced:
        if series_uid is None and uid:
            series_uid = uid
            instance_uids = [instance for _, instance in instances if instance]
            referenced_class = next((sop for sop, _ in instances if sop), None)
    if not instance_uids:
        seen: set[str] = set()
        for header in headers:
            for uid in header.source_sop_uids:
                if uid not in seen:
                    seen.add(uid)
                    instance_uids.append(uid)
        for item in ds.get("SourceImageSequence") or ():
            uid = str(item.get("ReferencedSOPInstanceUID", "") or "")
            if uid and uid not in seen:
                seen.add(uid)
                instance_uids.append(uid)
                referenced_class = referenced_class or (str(item.get("ReferencedSOPClassUID") or "") or None)
    if series_uid is None and not instance_uids:
        return None
    return ReferencedSeries(
        study_instance_uid=str(ds.get("StudyInstanceUID", "") or ""),
        series_instance_uid=series_uid or "",  # '' if only the source images are named
        sop_class_uid=referenced_class,
        sop_instance_uids=tuple(instance_uids),
        frame_of_reference_uid=headers[0].frame_of_reference_uid,
    )


def _layer_description(header: Header) -> LayerDescription:
    number = header.ds.get("InstanceNumber")
    return LayerDescription(
        sop_instance_uid=str(header.ds.get("SOPInstanceUID", "")),
        instance_number=int(number) if number not in (None, "") else None,
        transfer_syntax_uid=header.transfer_syntax_uid,
        transfer_syntax=pixels.syntax_name(header.transfer_syntax_uid),
        number_of_frames=header.layout.number_of_frames,
        rows=header.layout.rows,
        columns=header.layout.columns,
        bits_allocated=int(header.ds.BitsAllocated),
        photometric_interpretation=header.photometric_interpretation,
        pixel_padding_value=header.padding_value,
        segments=tuple(header.segments[n] for n in sorted(header.segments)),
        path=header.instance.path,
    )


__all__: Sequence[str] = [
    "LABELMAP_SEGMENTATION_STORAGE",
    "MAX_VOXELS",
    "SEGMENTATION_STORAGE",
    "LayerDescription",
    "SeriesDescription",
    "describe",
    "read_segmentation",
    "read_segmentations",
]
