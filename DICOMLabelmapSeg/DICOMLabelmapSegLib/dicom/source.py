"""The source image series a segmentation refers to: read its headers, check it, get its geometry.

:func:`read_source_series` reads only headers (never pixel data) of exactly one image
series and sorts it along the slice normal; :func:`geometry_from_source` turns such a
series (single-frame slices, or one multi-frame image) into the model's :class:`Geometry`.
Every problem is a :class:`SourceImageError` that says what is wrong and what to do.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Union

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

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
        groups.setdefault(str(ds.get("SeriesInstanceUID", "") or ""), []).append(ds)
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
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for ds in series) and len(series) > 1:
        raise SourceImageError(
            f"The series has {len(series)} files, some of them multi-frame images. A segmentation can reference "
            "either single-frame slices or one multi-frame image: choose one file."
        )
    _check_consistent(series)
    return sort_by_position(series)


def check_uids(series: Sequence[Dataset]) -> None:
    """Raise SourceImageError if a UID needed to reference the series is blank or missing."""
    blank = [keyword for keyword in REQUIRED_UIDS if any(not str(ds.get(keyword, "") or "").strip() for ds in series)]
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
    normal = slice_normal(_orientation(series[0]))
    return sorted(series, key=lambda ds: float(np.asarray(_position(ds)) @ normal))


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
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            files = [path]
        else:
            raise SourceImageError(f"'{path}' does not exist. Choose the folder or files of the image series.")
        for file in files:
            ds = _read_header(file)
            if ds is not None:
                datasets.append(ds)
    return datasets


def _read_header(path: Path) -> Dataset | None:
    try:
        # Values above 1 MB (icons, overlays, private blobs) stay on disk until someone reads them.
        ds = pydicom.dcmread(path, stop_before_pixels=True, defer_size="1 MB")
    except (InvalidDicomError, EOFError, OSError, ValueError, TypeError, KeyError) as error:
        logger.debug("Skipping %s: not readable as DICOM (%s)", path, error)
        return None
    ds.filename = str(path)
    return ds


def _is_image(ds: Dataset) -> bool:
    if "DirectoryRecordSequence" in ds:  # DICOMDIR
        return False
    if str(ds.get("Modality", "")).upper() in _NON_IMAGE_MODALITIES:
        return False
    return "Rows" in ds and "Columns" in ds


def _deduplicate(series: list[Dataset]) -> list[Dataset]:
    seen: set[str] = set()
    unique = []
    for ds in series:
        uid = str(ds.get("SOPInstanceUID", "") or "")
        if uid and uid in seen:
            logger.warning("Skipping a second copy of instance %s (%s).", uid, getattr(ds, "filename", ""))
            continue
        seen.add(uid)
        unique.append(ds)
    return unique


# --- checks -----------------------------------------------------------------------------------


def _check_consistent(series: Sequence[Dataset]) -> None:
    if len(series) == 1 and int(series[0].get("NumberOfFrames", 1) or 1) > 1:
        _multiframe_planes(series[0])  # raises if the plane attributes are missing
        return
    first = series[0]
    orientation = np.asarray(_orientation(first))
    spacing = np.asarray(_pixel_spacing(first))
    size = (int(first.Rows), int(first.Columns))
    for ds in series[1:]:
        where = getattr(ds, "filename", None) or ds.get("SOPInstanceUID", "a slice")
        if (int(ds.Rows), int(ds.Columns)) != size:
            raise SourceImageError(
                f"The slices of the series differ in size ({size[0]}x{size[1]} vs {ds.Rows}x{ds.Columns} in {where}); "
                "it may mix a localizer with the axial images. Choose files of one image stack."
            )
        if not np.allclose(_orientation(ds), orientation, atol=_ORIENTATION_TOLERANCE):
            raise SourceImageError(
                f"The slices of the series have different orientations ({where}); a segmentation needs one stack "
                "of parallel slices. Choose files of one image stack."
            )
        if not np.allclose(_pixel_spacing(ds), spacing, atol=_SPACING_TOLERANCE):
            raise SourceImageError(
                f"The slices of the series have different pixel spacings ({where}); choose files of one image stack."
            )
    positions = [tuple(np.round(_position(ds), 3)) for ds in series]
    if len(set(positions)) != len(positions):
        raise SourceImageError(
            "Several slices of the series share the same position (e.g. several time points or echoes in one "
            "series). Choose the files of one volume."
        )


def _orientation(ds: Dataset) -> list[float]:
    value = ds.get("ImageOrientationPatient")
    if value is None or len(value) != 6:
        raise SourceImageError(
            "A source image has no valid Image Orientation (Patient), so its position in space is unknown; "
            "only cross-sectional images (CT, MR, PET, ...) can be segmentation sources."
        )
    return [float(v) for v in value]


def _position(ds: Dataset) -> list[float]:
    value = ds.get("ImagePositionPatient")
    if value is None or len(value) != 3:
        raise SourceImageError(
            "A source image has no valid Image Position (Patient), so its position in space is unknown."
        )
    return [float(v) for v in value]


def _pixel_spacing(ds: Dataset) -> list[float]:
    value = ds.get("PixelSpacing")
    if value is None or len(value) != 2 or min(float(v) for v in value) <= 0:
        raise SourceImageError("A source image has no valid Pixel Spacing; its voxel size is unknown.")
    return [float(v) for v in value]


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
    number = first.get("SeriesNumber", "?")
    description = str(first.get("SeriesDescription", "") or "").strip() or "no description"
    modality = first.get("Modality", "?")
    return f"series {number} '{description}' ({modality}, {len(members)} files, UID {uid or 'blank'})"


def _describe(path_or_files: PathOrFiles) -> str:
    if isinstance(path_or_files, (str, os.PathLike)):
        return f"'{path_or_files}'"
    return "the given files"
