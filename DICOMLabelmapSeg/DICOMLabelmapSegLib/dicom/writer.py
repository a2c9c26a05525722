"""Model -> DICOM LABELMAP Segmentation series (Label Map Segmentation Storage, 1.2.840.10008.5.1.4.1.1.66.7).

One instance per layer, all in one series (same Series Instance UID, Instance Number 1..n).
Each instance is built by highdicom (:class:`highdicom.seg.Segmentation`, segmentation type
LABELMAP) from the model's own geometry, so the segmentation grid need not equal the
source grid; every frame is kept (``omit_empty_frames=False``) so the full extent survives.

* Segment Number = label value (gaps allowed); segments without voxels are kept.
  highdicom adds segment 0, "Background", to the Segment Sequence.
* Pixels are uint8, or uint16 when a label value exceeds 255.
* Frames are stored in the model's slice order k = 0..n-1 (highdicom sorts them along
  ``column x row``; :func:`order_frames` restores the model order afterwards), so a reader
  that follows the frame order recovers the model's slice direction exactly. Each frame
  also carries its Image Position (Patient).
* highdicom writes native pixel data; the frames are then encoded by the codec registry
  (:mod:`.syntax` rows, :mod:`.codecs`), on several threads where the codec releases the GIL.
* PALETTE COLOR (``ExportOptions.palette_color``): a Palette Color LUT (8-bit entries, or
  16-bit beyond 256 entries) maps every label value to its segment's color (background and
  unused values black; see :func:`palette_lut`), with the sRGB ICC profile the IOD then
  requires. The standard forbids Recommended Display CIELab Value together with a palette,
  so the segments then carry no CIELab color: their colors are in the LUT.
* Speed (512x512x334, 61 labels: as fast as highdicom alone): when the grid is the source's,
  highdicom takes the frame positions from the sources (:func:`source_order_of_grid`) instead
  of matching given positions against them; label values with gaps are made consecutive for
  highdicom with placeholder segments that are dropped afterwards (:func:`_with_placeholders`),
  so it checks the voxels with one ``max()``; source headers are copied without decoding
  them. The output is the same as without these shortcuts (tested).
* Files are named ``<SeriesNumber>_<InstanceNumber>_<SOPInstanceUID>.dcm`` and written
  atomically as one set (:mod:`..atomic`): all renamed once all are complete; if anything
  fails, nothing new remains.
"""

from __future__ import annotations

import functools
import importlib.resources
import logging
import os
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian
from pydicom.valuerep import format_number_as_ds

from ..atomic import AtomicFiles
from ..errors import (
    GeometryMismatchError,
    InvalidSegmentationError,
    LabelmapSegError,
    OverlappingSegmentsError,
    TooManyLabelsError,
)
from ..geometry import frame_positions, plane_attributes
from ..model import MAX_LABEL_VALUE, Geometry, Layer, Segmentation, label_dtype
from . import check, codecs, compat
from .background import BackgroundEncoding, start_encoding
from .frameclone import clone_frames
from .options import ExportOptions
from .segment import long_string, segment_description
from .source import PathOrFiles, read_source_series, source_planes
from .syntax import TransferSyntax

logger = logging.getLogger(__name__)

Progress = Callable[[float, str], None]

#: Type 2 attributes highdicom copies from the source by attribute access (absent ones are added empty).
_COPIED_TYPE2 = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber",
    "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName",
)

_ICON_IMAGE_SEQUENCE = 0x00880200

#: Most placeholder segments given to highdicom to make the segment numbers consecutive (see _with_placeholders).
_MAX_PLACEHOLDERS = 1024
#: Fewer voxels than this (the fast path's two-slice instance): highdicom's check of every voxel value costs
#: less than building the placeholders.
_PLACEHOLDERS_FROM_VOXELS = 1 << 20
_PLACEHOLDER_LABEL = "unused"


def create_labelmap_datasets(
    segmentation: Segmentation,
    source_images: PathOrFiles,
    options: ExportOptions = ExportOptions(),  # noqa: B008 - frozen, immutable default
) -> list[Dataset]:
    """The LABELMAP SEG instances of ``segmentation``: one per layer, one series, Instance Number 1..n.

    Parameters
    ----------
    segmentation: Segmentation
        The model to export (validated first).
    source_images: str | os.PathLike | Dataset | Iterable
        The image series the segmentation refers to: a folder, files, or datasets
        (headers suffice). It provides patient, study and frame of reference.
    options: ExportOptions
        Transfer syntax, palette, series and equipment attributes.

    Raises
    ------
    MissingCodecError, InvalidSegmentationError (and subclasses), SourceImageError, GeometryMismatchError
    """
    return list(_iter_datasets(segmentation, source_images, options, None))


def plain_labelmap_datasets(
    segmentation: Segmentation,
    source_images: PathOrFiles,
    options: ExportOptions = ExportOptions(),  # noqa: B008 - frozen, immutable default
) -> list[Dataset]:
    """The same instances as :func:`create_labelmap_datasets`, every frame built by highdicom (the reference path).

    The default path clones the per-frame metadata of a two-frame highdicom instance
    (:mod:`.frameclone`); tests prove it writes the same content as this one.
    """
    return list(_iter_datasets(segmentation, source_images, options, None, clone=False))


def write_labelmap_seg(
    segmentation: Segmentation,
    source_images: PathOrFiles,
    output_dir: str | os.PathLike,
    options: ExportOptions = ExportOptions(),  # noqa: B008 - frozen, immutable default
    progress: Progress | None = None,
) -> list[Path]:
    """Write the LABELMAP SEG series of ``segmentation`` into ``output_dir``; return the files in instance order.

    Atomic (:class:`~DICOMLabelmapSegLib.atomic.AtomicFiles`): files are written under temporary
    names and all renamed once every one is complete; on any error nothing new remains in
    ``output_dir`` (nor ``output_dir`` itself if this call created it).
    ``progress(fraction, message)`` is called as layers are encoded and written.
    """
    output_dir = Path(output_dir)
    written: list[Path] = []
    with AtomicFiles() as files:
        for ds in _iter_datasets(segmentation, source_images, options, progress):
            name = f"{int(ds.SeriesNumber)}_{int(ds.InstanceNumber)}_{ds.SOPInstanceUID}.dcm"
            final = output_dir / name
            ds.save_as(files.temporary(final), enforce_file_format=True)
            written.append(final)
            if progress is not None:
                progress(len(written) / len(segmentation.layers), f"Wrote {name}")
    return written


# --- building -----------------------------------------------------------------------------------


def _iter_datasets(
    segmentation: Segmentation,
    source_images: PathOrFiles,
    options: ExportOptions,
    progress: Progress | None,
    clone: bool = True,
) -> Iterator[Dataset]:
    options.transfer_syntax.require_encoder()
    layers = prepare_layers(segmentation)
    # On the clone path a layer's frames are its slices in order: the first layer's are encoded in the
    # background from now on, while the source headers are read and the metadata is built.
    encodings: list[BackgroundEncoding | None] = [None] * len(layers)
    if clone:
        encodings[0] = start_encoding(layers[0].labels, options.transfer_syntax, options.threads)
    try:
        yield from _layer_datasets(segmentation, layers, source_images, options, progress, clone, encodings)
    finally:
        for encoding in encodings:
            if encoding is not None:
                encoding.cancel()


def _layer_datasets(
    segmentation: Segmentation,
    layers: list[Layer],
    source_images: PathOrFiles,
    options: ExportOptions,
    progress: Progress | None,
    clone: bool,
    encodings: list[BackgroundEncoding | None],
) -> Iterator[Dataset]:
    source = read_source_series(source_images)
    check_geometry(segmentation, source)
    series_instance_uid = options.series_instance_uid or hd.UID()
    order = source_order_of_grid(segmentation.geometry, source)
    # On the source's grid highdicom takes the positions from the sources (matching given positions
    # against them costs it n^2 lookups): slice k from source[order[k]], no plane positions built.
    plane_positions, plane_orientation, pixel_measures = _spatial_metadata(segmentation, positions=order is None)
    thickness = pixel_measures[0].SliceThickness
    grid_sources = list(source) if order is None else [source[i] for i in order]
    copies: list[Dataset] | None = None  # the header copies highdicom gets on the plain path, made when needed
    count = len(layers)
    spatial = (plane_positions, plane_orientation, pixel_measures)
    for index, layer in enumerate(layers):
        if progress is not None:
            progress(index / count, f"Encoding layer {index + 1} of {count}")
        ds = None
        if clone and order is not None:  # this layer's encoding started with the previous one's (or first)
            ds = _cloned_layer_dataset(layer, index + 1, grid_sources, source, series_instance_uid, spatial, options,
                                       segmentation.geometry, thickness, encodings[index])
            if index + 1 < count:  # the next layer's frames, while this one is written
                encodings[index + 1] = start_encoding(layers[index + 1].labels, options.transfer_syntax,
                                                      options.threads)
        encoding, encodings[index] = encodings[index], None
        if encoding is not None:
            encoding.cancel()  # done, or not needed (the plain path encodes the frames it orders)
        if ds is None:
            if copies is None:
                copies = _highdicom_sources(grid_sources, thickness)
            ds = _layer_dataset(layer, index + 1, copies, series_instance_uid, spatial, options, segmentation.geometry)
            if order is not None and order != sorted(order):
                _reference_in_source_order(ds, source)
        compat.warn_at_export(ds)  # CompatibilityWarning: a major consumer misreads this file (labels unchanged)
        check.self_check(ds)  # with DICOMLABELMAPSEG_SELF_CHECK=1 (tests): our own checker finds no error
        yield ds


def _reference_in_source_order(ds: Dataset, source: Sequence[Dataset]) -> None:
    """List the referenced instances in the order of ``source`` (as if highdicom had been given that order).

    Concerns the Referenced Series Sequence and the top-level Source Image Sequence; the
    per-frame references are per frame and stay as they are.
    """
    rank = {str(image.SOPInstanceUID): index for index, image in enumerate(source)}

    def in_source_order(items: Sequence[Dataset]) -> list[Dataset]:
        return sorted(items, key=lambda item: rank.get(str(item.ReferencedSOPInstanceUID), len(rank)))

    for series in ds.get("ReferencedSeriesSequence", []):
        series.ReferencedInstanceSequence = in_source_order(series.ReferencedInstanceSequence)
    if "SourceImageSequence" in ds:
        ds.SourceImageSequence = in_source_order(ds.SourceImageSequence)


def prepare_layers(segmentation: Segmentation) -> list[Layer]:
    """Validate the model for writing and return its layers with uint8/uint16 label arrays.

    Raises
    ------
    OverlappingSegmentsError
        Two segments of one layer share a label value (they would claim the same voxels).
    TooManyLabelsError
        A label array holds values above 65535.
    UndescribedLabelError
        Voxels carry a label value no segment of the layer describes.
    InvalidSegmentationError
        No layers, a layer without segments, or arrays that do not match the geometry.
    """
    if not segmentation.layers:
        raise InvalidSegmentationError("The segmentation has no layers: there is nothing to export.")
    layers = []
    for number, layer in enumerate(segmentation.layers, 1):
        values = [segment.label_value for segment in layer.segments]
        duplicates = sorted({v for v in values if values.count(v) > 1})
        if duplicates:
            names = [s.name for s in layer.segments if s.label_value in duplicates]
            raise OverlappingSegmentsError(
                f"Layer {number}: segments {names} share label value(s) {duplicates}, so they would overlap. "
                "Give each segment of a layer its own label value, or move overlapping segments to another layer."
            )
        if not layer.segments:
            raise InvalidSegmentationError(
                f"Layer {number} has no segments; a LABELMAP instance needs at least one. Remove the empty layer."
            )
        layers.append(Layer(_label_array(layer.labels, number), sorted(layer.segments, key=lambda s: s.label_value)))
    prepared = segmentation.with_layers(layers)
    prepared.validate()
    return layers


def _label_array(labels: np.ndarray, number: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype in (np.uint8, np.uint16):
        return labels
    if not np.issubdtype(labels.dtype, np.integer):
        raise InvalidSegmentationError(
            f"Layer {number} has a {labels.dtype} label array; labels must be integers (uint8 or uint16)."
        )
    low, high = (int(labels.min()), int(labels.max())) if labels.size else (0, 0)
    if low < 0 or high > MAX_LABEL_VALUE:
        raise TooManyLabelsError(
            f"Layer {number} holds label values from {low} to {high}; a LABELMAP SEG stores 0-{MAX_LABEL_VALUE}. "
            "Renumber the labels or split them over several layers."
        )
    return labels.astype(label_dtype(high))


def check_geometry(segmentation: Segmentation, source: Sequence[Dataset]) -> None:
    """Raise GeometryMismatchError if the segmentation cannot lie in the source series' space.

    That is the case when the geometry names a different Frame of Reference UID, or when
    its bounding box does not intersect the source volume at all.
    """
    geometry = segmentation.geometry
    first = source[0]
    series = _series_name(first)
    source_frame = str(first.get("FrameOfReferenceUID", "") or "")
    if geometry.frame_of_reference_uid and source_frame and geometry.frame_of_reference_uid != source_frame:
        raise GeometryMismatchError(
            f"The segmentation is in frame of reference {geometry.frame_of_reference_uid} but {series} is in "
            f"{source_frame}: it was not made on this series. Choose the image series the segmentation was made on."
        )
    orientation, spacing, positions, _ = source_planes(source)
    row_direction, column_direction = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    normal = np.cross(row_direction, column_direction)
    # Source axes: x along a row (column index grows, PixelSpacing[1]), y along a column (row index
    # grows, PixelSpacing[0]), z along the normal.
    axes = np.stack([row_direction, column_direction, normal])
    rows, columns = int(first.Rows), int(first.Columns)
    origin = positions[0]
    offsets = (positions - origin) @ axes.T
    source_low = np.array([-0.5 * spacing[1], -0.5 * spacing[0], offsets[:, 2].min()])
    source_high = np.array([(columns - 0.5) * spacing[1], (rows - 0.5) * spacing[0], offsets[:, 2].max()])
    thickness = max(0.5 * float(np.linalg.norm(geometry.affine[:3, 0])), 1e-3)
    source_low[2] -= thickness
    source_high[2] += thickness
    corners = np.array(
        [[k, j, i, 1.0] for k in (-0.5, geometry.shape[0] - 0.5)
         for j in (-0.5, geometry.shape[1] - 0.5) for i in (-0.5, geometry.shape[2] - 0.5)]
    )
    seg_points = (corners @ geometry.affine.T)[:, :3]
    seg_coordinates = (seg_points - origin) @ axes.T
    seg_low, seg_high = seg_coordinates.min(axis=0), seg_coordinates.max(axis=0)
    if np.any(seg_high < source_low - 1e-3) or np.any(seg_low > source_high + 1e-3):
        raise GeometryMismatchError(
            f"The segmentation's extent (LPS {np.round(seg_points.min(axis=0), 1).tolist()} to "
            f"{np.round(seg_points.max(axis=0), 1).tolist()} mm) does not overlap {series} at all. "
            "Choose the image series the segmentation was made on, or check the segmentation's geometry."
        )


def _series_name(ds: Dataset) -> str:
    description = str(ds.get("SeriesDescription", "") or "").strip()
    return (
        (f"series {ds.get('SeriesNumber')}" if ds.get("SeriesNumber") not in (None, "") else "series (no number)")
        + (f" '{description}'" if description else "")
        + f" (UID {ds.get('SeriesInstanceUID', '?')})"
    )


def _highdicom_sources(source: Sequence[Dataset], slice_thickness: float) -> list[Dataset]:
    """Header-only copies of the source datasets carrying every attribute highdicom reads.

    A missing or empty Slice Thickness (Type 2 in the source, but Type 1C in the SEG's Pixel
    Measures, which highdicom copies from the source) is set to the grid's slice spacing.
    """
    copies = []
    for ds in source:
        # Private, overlay, icon and pixel data elements are never copied into a SEG: skip them unread.
        # The others are copied as they are (raw elements stay raw until highdicom reads them).
        copy = Dataset({
            tag: ds.get_item(tag) for tag in ds.keys()
            if not (tag.is_private or 0x6000 <= tag.group <= 0x60FF or tag.group == 0x7FE0
                    or tag == _ICON_IMAGE_SEQUENCE)
        })
        for keyword in _COPIED_TYPE2:
            if keyword not in copy:
                setattr(copy, keyword, "")
        if "ImagePositionPatient" in copy and copy.get("SliceThickness") in (None, ""):
            copy.SliceThickness = slice_thickness
        if not copy.get("SpecificCharacterSet"):
            copy.pop("SpecificCharacterSet", None)  # blank: default repertoire
        copies.append(copy)
    return copies


def source_order_of_grid(geometry: Geometry, source: Sequence[Dataset]) -> list[int] | None:
    """Index of the source image at each slice k of the grid, or None if the grid is not the source's.

    The grid is the source's if the source images (single-frame, or one multi-frame image in
    frame order) have the grid's rows and columns and lie one on each slice position (within
    1 micrometre).
    """
    first = source[0]
    if (int(first.Rows), int(first.Columns)) != tuple(geometry.shape[1:]):
        return None
    try:
        _, _, positions, _ = source_planes(source)
    except LabelmapSegError:
        return None
    count = geometry.shape[0]
    if len(positions) != count:
        return None
    slices = frame_positions(geometry.affine, count)
    step = geometry.affine[:3, 0]
    nearest = np.rint((positions - geometry.affine[:3, 3]) @ step / float(step @ step)).astype(np.int64)
    if nearest.min() < 0 or nearest.max() >= count or len(np.unique(nearest)) != count:
        return None
    if np.linalg.norm(positions - slices[nearest], axis=1).max() > 1e-3:
        return None
    order = np.argsort(nearest)  # source index of slice k
    multiframe = len(source) == 1 and int(first.get("NumberOfFrames", 1) or 1) > 1
    if multiframe:
        return [0] if np.array_equal(order, np.arange(count)) else None  # frames of one image stay in order
    return order.tolist()


def _spatial_metadata(
    segmentation: Segmentation, positions: bool = True
) -> tuple[list[hd.PlanePositionSequence] | None, hd.PlaneOrientationSequence, hd.PixelMeasuresSequence]:
    """Plane positions (None unless ``positions``), orientation and pixel measures of the model's grid (any grid)."""
    geometry = segmentation.geometry
    affine = geometry.affine
    row_step, column_step = affine[:3, 1], affine[:3, 2]
    cosine = abs(float(row_step @ column_step)) / float(np.linalg.norm(row_step) * np.linalg.norm(column_step))
    if cosine > 1e-4:
        raise InvalidSegmentationError(
            "The segmentation's rows and columns are not perpendicular; DICOM frames must be rectangular. "
            "Resample the segmentation onto a grid with perpendicular in-plane axes."
        )
    orientation, pixel_spacing = plane_attributes(affine)
    normal = np.cross(orientation[:3], orientation[3:])
    slice_spacing = abs(float(affine[:3, 0] @ normal))
    coordinate_system = hd.CoordinateSystemNames.PATIENT
    return (
        [hd.PlanePositionSequence(coordinate_system, position) for position in frame_positions(
            affine, geometry.shape[0])] if positions else None,
        hd.PlaneOrientationSequence(coordinate_system, orientation),
        hd.PixelMeasuresSequence(pixel_spacing, slice_spacing),
    )


def _content_label(value: str) -> str:
    """A valid CS Content Label: upper case letters, digits, space and underscore, at most 16 characters.

    Also starts with a letter and does not end with space or underscore (highdicom insists).
    """
    label = re.sub(r"[^A-Z0-9 _]", "_", str(value).upper())
    label = re.sub(r"^[0-9 _]+", "", label)[:16].rstrip(" _")
    return label or "SEGMENTATION"


def palette_lut(layer: Layer) -> hd.PaletteColorLUTTransformation:
    """Palette mapping 0..max label to segment colors; background and unused values are black.

    Entries are 8-bit when they fit (at most 256 entries), else 16-bit (color * 257, so the
    high byte is the 8-bit color). dciodvfy rejects a LUT whose largest entry in a channel
    does not use the top bit (it takes that as the wrong bit depth), so when a channel of the
    segment colors stays below half range, one value that no voxel carries (the value after
    the largest label, else the first unused one) maps to white.
    """
    values = sorted(segment.label_value for segment in layer.segments)
    table_rgb = np.zeros((values[-1] + 1, 3), dtype=np.uint8)
    for segment in layer.segments:
        table_rgb[segment.label_value] = segment.color
    if table_rgb.max(axis=0).min() < 128:
        sentinel = values[-1] + 1 if values[-1] < MAX_LABEL_VALUE else _first_unused(values)
        if sentinel is not None:
            if sentinel >= len(table_rgb):
                table_rgb = np.vstack([table_rgb, np.zeros((sentinel + 1 - len(table_rgb), 3), np.uint8)])
            table_rgb[sentinel] = 255
    wide = len(table_rgb) > 256
    table = table_rgb.astype(np.uint16) * 257 if wide else table_rgb
    luts = [hd.PaletteColorLUT(0, np.ascontiguousarray(table[:, c]), color) for c, color in
            enumerate(("red", "green", "blue"))]
    red, green, blue = luts
    return hd.PaletteColorLUTTransformation(red, green, blue, palette_color_lut_uid=hd.UID())


def _first_unused(values: Sequence[int]) -> int | None:
    used = set(values)
    return next((value for value in range(1, MAX_LABEL_VALUE + 1) if value not in used), None)


@functools.lru_cache(maxsize=1)
def srgb_icc_profile() -> bytes:
    """The sRGB ICC profile shipped with highdicom (the ICC Profile module is required with PALETTE COLOR).

    It is an input ("scnr") profile, as DICOM requires; Pillow's built-in sRGB is a display profile.
    """
    return (importlib.resources.files("highdicom") / "_icc_profiles" / "sRGB_v4_ICC_preference.icc").read_bytes()


def _layer_dataset(
    layer: Layer,
    instance_number: int,
    sources: list[Dataset],
    series_instance_uid: str,
    spatial: tuple,
    options: ExportOptions,
    geometry: Geometry,
) -> Dataset:
    syntax = options.transfer_syntax
    highdicom_syntax = ExplicitVRLittleEndian  # frames are encoded by the codec registry below (codecs.py)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = _highdicom_segmentation(layer, instance_number, sources, series_instance_uid, spatial, options,
                                         highdicom_syntax)
        for warning in caught:
            logger.info("highdicom: %s", warning.message)
    except LabelmapSegError:
        raise
    except (ValueError, TypeError, AttributeError, KeyError) as error:
        raise InvalidSegmentationError(
            f"Layer {instance_number} could not be encoded as a LABELMAP segmentation: {error}"
        ) from error
    ds.SeriesDescription = long_string(options.series_description, "Series description")
    set_spacing_between_slices(ds, geometry)
    order_frames(ds, geometry)
    if not ds.file_meta.TransferSyntaxUID.is_encapsulated and ds.PixelData[-1:] == b"0" and (
            layer.labels.nbytes % 2):
        ds.PixelData = ds.PixelData[:-1] + b"\0"  # highdicom pads native pixel data with "0", DICOM with NUL
    if syntax.is_encapsulated:
        codecs.encode_dataset(ds, syntax, options.threads)
    if syntax == TransferSyntax.DEFLATED:
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    return ds


def _cloned_layer_dataset(
    layer: Layer,
    instance_number: int,
    sources: list[Dataset],
    referenced: Sequence[Dataset],
    series_instance_uid: str,
    spatial: tuple,
    options: ExportOptions,
    geometry: Geometry,
    slice_thickness: float,
    encoding: BackgroundEncoding | None = None,
) -> Dataset | None:
    """The instance of ``layer`` on the source grid, per-frame metadata cloned from a two-frame highdicom instance.

    ``sources[k]`` is the source image of slice k, ``referenced`` the source series in its
    own order (the order of the top-level references). None if the fast path does not apply;
    the result is the same as :func:`_layer_dataset`'s but for UIDs, dates and times. Only the
    first two sources are copied for highdicom (:func:`_highdicom_sources`). ``encoding``: the
    layer's frames being encoded in the background (else they are encoded here).
    """
    count = layer.labels.shape[0]
    if count < 3 or len(sources) != count or not hasattr(hd.spatial, "get_volume_positions"):
        return None
    ds = _layer_dataset(Layer(layer.labels[:2], layer.segments), instance_number,
                        _highdicom_sources(sources[:2], slice_thickness), series_instance_uid, spatial, options,
                        geometry)
    if not _spacing_of_all_slices(ds, sources, geometry):
        return None
    if not clone_frames(ds, sources, referenced):
        return None
    ds.NumberOfFrames = count
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        frames = encoding.result() if encoding is not None else _encoded_frames(
            ds, layer.labels, options.transfer_syntax, options.threads)
        ds.PixelData = encapsulate(frames)
        ds["PixelData"].VR = "OB"  # as codecs.encode_dataset leaves it
        ds["PixelData"].is_undefined_length = True
    else:
        data = np.ascontiguousarray(layer.labels, dtype=layer.labels.dtype.newbyteorder("<")).tobytes()
        ds.PixelData = data + (b"\0" if len(data) % 2 else b"")
    return ds


def _spacing_of_all_slices(ds: Dataset, sources: Sequence[Dataset], geometry: Geometry) -> bool:
    """Spacing Between Slices as highdicom derives it from all slices (it saw two); False if it would not.

    highdicom copies the source's value, or computes one from the frame positions (then
    :func:`set_spacing_between_slices` corrects it as on the plain path).
    """
    measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    source_value = sources[0].get("SpacingBetweenSlices")
    if source_value is not None and str(measures.get("SpacingBetweenSlices")) == str(source_value):
        return True
    orientation = ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
    positions = source_planes(sources)[2].tolist()  # parsed from the headers' bytes (pydicom: 10x slower)
    spacing, _ = hd.spatial.get_volume_positions(image_positions=positions, image_orientation=orientation)
    if spacing is None or spacing <= 0:
        return False
    measures.SpacingBetweenSlices = format_number_as_ds(spacing)
    set_spacing_between_slices(ds, geometry)
    return True


def _encoded_frames(ds: Dataset, labels: np.ndarray, syntax: TransferSyntax, threads: int = 0) -> list[bytes]:
    """Every slice of ``labels`` encoded by the codec registry (as :func:`_layer_dataset` encodes them)."""
    return codecs.encode_frames(labels, syntax, threads)


def _highdicom_segmentation(
    layer: Layer,
    instance_number: int,
    sources: list[Dataset],
    series_instance_uid: str,
    spatial: tuple,
    options: ExportOptions,
    transfer_syntax_uid: str,
) -> hd.seg.Segmentation:
    plane_positions, plane_orientation, pixel_measures = spatial
    identifications: dict[tuple, Any] = {}
    descriptions = [segment_description(s, not options.palette_color, identifications) for s in layer.segments]
    algorithm_types = {int(item.SegmentNumber): str(item.SegmentAlgorithmType) for item in descriptions}
    descriptions = _with_placeholders(descriptions, layer.labels.size)
    # highdicom builds its Background item from the first description, with that segment's algorithm
    # type: a non-MANUAL type without an identification sequence (Type 3 in the standard) would make
    # it raise. The Background gets MANUAL; the first segment its own type back afterwards.
    descriptions[0].SegmentAlgorithmType = "MANUAL"
    ds = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=layer.labels,
        segmentation_type=hd.seg.SegmentationTypeValues.LABELMAP,
        segment_descriptions=descriptions,
        series_instance_uid=series_instance_uid,
        series_number=int(options.series_number),
        sop_instance_uid=hd.UID(),
        instance_number=instance_number,
        manufacturer=long_string(options.manufacturer, "Manufacturer"),
        manufacturer_model_name=long_string(options.manufacturer_model_name, "Manufacturer model name"),
        software_versions=long_string(options.software_versions, "Software versions"),
        device_serial_number=long_string(options.device_serial_number, "Device serial number"),
        content_label=_content_label(options.content_label),
        content_description=(
            long_string(options.content_description, "Content description")
            if options.content_description else None
        ),
        content_creator_name=options.content_creator_name,
        transfer_syntax_uid=transfer_syntax_uid,
        plane_positions=plane_positions,
        plane_orientation=plane_orientation,
        pixel_measures=pixel_measures,
        omit_empty_frames=False,
        palette_color_lut_transformation=palette_lut(layer) if options.palette_color else None,
        icc_profile=srgb_icc_profile() if options.palette_color else None,
        workers=options.workers,
    )
    _finish_segment_sequence(ds, algorithm_types)
    set_specific_character_set(ds, sources[0], _is_ascii(layer, options))
    return ds


def set_specific_character_set(ds: Dataset, source: Dataset, ascii_only: bool) -> None:
    """Specific Character Set of the SEG: the source's, or UTF-8 (ISO_IR 192) if our texts are not ASCII.

    Set after construction: highdicom 0.28 takes the source's by default and has a
    ``specific_character_set`` argument, 0.27 (Slicer 5.12) has neither and leaves the attribute
    out. Text is encoded when the file is written, with this value (also in sequence items; the
    patient's name copied from the source is re-encoded from its decoded value).
    """
    charset = "ISO_IR 192" if not ascii_only else source.get("SpecificCharacterSet")
    if charset:
        ds.SpecificCharacterSet = charset
    elif "SpecificCharacterSet" in ds:
        del ds.SpecificCharacterSet


def _with_placeholders(descriptions: list[hd.seg.SegmentDescription],
                       voxels: int) -> list[hd.seg.SegmentDescription]:
    """The descriptions plus placeholders for the unused numbers below the largest, if that is worth it.

    With segment numbers 1..n highdicom checks the labels against the descriptions with one
    ``max()``; with gaps it computes the set difference of every voxel value (a sort or hash
    of the whole volume: 0.3 s for 512x512x334). :func:`prepare_layers` has already checked
    that every voxel value is described, so the placeholders' items are dropped afterwards
    (:func:`_finish_segment_sequence`); nothing else in the dataset depends on them. Not for
    fewer than :data:`_PLACEHOLDERS_FROM_VOXELS` voxels or more than :data:`_MAX_PLACEHOLDERS` gaps.
    """
    numbers = {int(item.SegmentNumber) for item in descriptions}
    missing = [number for number in range(1, max(numbers) + 1) if number not in numbers]
    if not missing or len(missing) > _MAX_PLACEHOLDERS or voxels < _PLACEHOLDERS_FROM_VOXELS:
        return descriptions
    placeholder = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=_PLACEHOLDER_LABEL,
            segmented_property_category=hd.sr.CodedConcept("85756007", "SCT", "Tissue"),
            segmented_property_type=hd.sr.CodedConcept("85756007", "SCT", "Tissue"),
            algorithm_type="MANUAL",
        )
        for number in missing
    ]
    return sorted([*descriptions, *placeholder], key=lambda item: int(item.SegmentNumber))


def _finish_segment_sequence(ds: Dataset, algorithm_types: dict[int, str]) -> None:
    """Keep the described segments (drop placeholders) with their own Segment Algorithm Type; Background MANUAL.

    The Background (segment 0) is not the output of any algorithm (dcmqi also writes it MANUAL),
    so it carries no Segment Algorithm Name either.
    """
    background, *items = ds.SegmentSequence
    background.SegmentAlgorithmType = "MANUAL"
    if "SegmentAlgorithmName" in background:
        del background.SegmentAlgorithmName
    kept = [item for item in items if int(item.SegmentNumber) in algorithm_types]
    for item in kept:
        item.SegmentAlgorithmType = algorithm_types[int(item.SegmentNumber)]
    if len(kept) != len(items):
        ds.SegmentSequence = [background, *kept]


def _is_ascii(layer: Layer, options: ExportOptions) -> bool:
    """True if every text this layer's instance gets from the model and the options is plain ASCII."""
    texts: list[str | None] = [
        options.series_description, options.content_label, options.content_description,
        options.content_creator_name, options.manufacturer, options.manufacturer_model_name,
        options.software_versions, options.device_serial_number,
    ]
    for segment in layer.segments:
        texts += [segment.name, segment.description, segment.algorithm_name, segment.algorithm_version,
                  segment.tracking_id]
        terminology = segment.terminology
        for code in (terminology.category, terminology.type, terminology.type_modifier, terminology.region,
                     terminology.region_modifier, segment.algorithm_family):
            if code is not None:
                texts += [code.meaning, code.value, code.scheme_designator, code.scheme_version]
    return all(text is None or str(text).isascii() for text in texts)


def set_spacing_between_slices(ds: Dataset, geometry: Geometry) -> None:
    """Spacing Between Slices of the shared Pixel Measures = the grid's slice spacing along the frame normal.

    highdicom derives it from the frame positions, after replacing the given pixel measures by the
    source's when the pixel spacing matches: for a single frame that gives 1.0 whatever the grid
    says. It is corrected here (only if it differs by more than DS rounding).
    """
    measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    orientation, _ = plane_attributes(geometry.affine)
    normal = np.cross(orientation[:3], orientation[3:])
    spacing = abs(float(geometry.affine[:3, 0] @ normal))
    current = measures.get("SpacingBetweenSlices")
    if current is None or abs(float(current) - spacing) > 1e-6 * max(1.0, spacing):
        measures.SpacingBetweenSlices = format_number_as_ds(spacing)


def order_frames(ds: Dataset, geometry: Geometry) -> None:
    """Reorder the frames of ``ds`` (functional groups and pixel data) into the model's slice order.

    Frames are matched to slices by Image Position (Patient); encapsulated frames are
    moved without re-encoding.
    """
    items = list(ds.PerFrameFunctionalGroupsSequence)
    positions = np.array(
        [[float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient] for item in items]
    )
    step = geometry.affine[:3, 0]
    slice_of_frame = (positions - geometry.affine[:3, 3]) @ step / float(step @ step)
    order = np.argsort(np.rint(slice_of_frame), kind="stable")
    if np.array_equal(order, np.arange(len(items))):
        return
    ds.PerFrameFunctionalGroupsSequence = [items[i] for i in order]
    count = len(items)
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        frames = list(generate_frames(ds.PixelData, number_of_frames=count))
        ds.PixelData = encapsulate([frames[i] for i in order])
    else:
        rows, columns = int(ds.Rows), int(ds.Columns)
        dtype = np.dtype("<u2") if int(ds.BitsAllocated) == 16 else np.dtype(np.uint8)
        pixels = np.frombuffer(ds.PixelData, dtype=dtype, count=count * rows * columns).reshape(count, -1)
        data = pixels[order].tobytes()
        ds.PixelData = data + (b"\0" if len(data) % 2 else b"")
