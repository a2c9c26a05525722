"""The segmentation model: what a LABELMAP SEG series holds, free of any file format.

Conventions
-----------
* A label array is indexed ``[slice, row, column]`` (``k, j, i``), like the frames of a
  DICOM multi-frame image and like ``numpy`` arrays obtained from VTK images.
* :attr:`Geometry.affine` maps the index vector in that same order, ``(k, j, i, 1)``, to
  patient coordinates in millimetres in the DICOM patient coordinate system (LPS).
  This is highdicom's :class:`highdicom.Volume` convention.
* A :class:`Layer` holds one label array; the segments of one layer never overlap
  (each voxel has at most one label). Overlapping segments live in different layers.
  Each layer becomes one LABELMAP SEG instance; all instances form one series.
* Colors are 8-bit sRGB triples. Segment label values are the DICOM segment numbers.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np

from .enums import SegmentAlgorithmType, SegmentationType
from .errors import (
    InvalidSegmentationError,
    TooManyLabelsError,
    UndescribedLabelError,
)
from .limits import MAX_LABEL_VALUE


@dataclass(frozen=True)
class Code:
    """A coded concept: Code Value, Coding Scheme Designator, Code Meaning."""

    value: str
    scheme_designator: str
    meaning: str
    scheme_version: str | None = None

    def same_concept(self, other: Code | None) -> bool:
        """True if ``other`` denotes the same concept (meaning and version may differ)."""
        return (
            other is not None
            and self.value == other.value
            and self.scheme_designator == other.scheme_designator
        )


@dataclass(frozen=True)
class Terminology:
    """What a segment is: category and type (with modifier), and where (region with modifier).

    ``context_name`` and ``region_context_name`` are Slicer's names of the terminology
    lists the codes were picked from; they are not DICOM attributes and are not stored
    in SEG files (readers leave them ``None``).
    """

    category: Code
    type: Code
    type_modifier: Code | None = None
    region: Code | None = None
    region_modifier: Code | None = None
    context_name: str | None = None
    region_context_name: str | None = None

    def same_codes(self, other: Terminology | None) -> bool:
        """True if all five codes denote the same concepts (context names ignored)."""
        if other is None:
            return False
        pairs = (
            (self.category, other.category),
            (self.type, other.type),
            (self.type_modifier, other.type_modifier),
            (self.region, other.region),
            (self.region_modifier, other.region_modifier),
        )
        return all((a is None and b is None) or (a is not None and a.same_concept(b)) for a, b in pairs)


#: What Slicer assigns to a segment nobody classified: category and type "Tissue" (SNOMED CT).
DEFAULT_TERMINOLOGY = Terminology(
    category=Code("85756007", "SCT", "Tissue"),
    type=Code("85756007", "SCT", "Tissue"),
)

#: Placeholder for a required code that the source did not state (a SEG without Segmented Property
#: Category or Type). A local coding scheme ("99" prefix, PS3.16 8.2), so that no reader and no later
#: export takes it for a real concept; DICOMLabelmapSeg warns when it reads or writes it.
UNSPECIFIED_CODE = Code("unspecified", "99DLMSEG", "Unspecified (not stated in the source)")


@dataclass(frozen=True)
class Segment:
    """One segment: a label value within its layer and everything that describes it."""

    label_value: int
    name: str
    color: tuple[int, int, int] = (128, 174, 128)
    terminology: Terminology = DEFAULT_TERMINOLOGY
    algorithm_type: SegmentAlgorithmType = SegmentAlgorithmType.MANUAL
    algorithm_name: str | None = None
    algorithm_version: str | None = None
    algorithm_family: Code | None = None
    description: str | None = None
    tracking_id: str | None = None
    tracking_uid: str | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.label_value, (int, np.integer)) and 1 <= int(self.label_value) <= MAX_LABEL_VALUE):
            raise TooManyLabelsError(
                f"Segment '{self.name}' has label value {self.label_value}; label values must be "
                f"integers from 1 to {MAX_LABEL_VALUE} (DICOM segment numbers are 16-bit)."
            )
        if len(self.color) != 3 or not all(0 <= int(c) <= 255 for c in self.color):
            raise InvalidSegmentationError(
                f"Segment '{self.name}' has color {self.color}; give three integers 0-255 (RGB)."
            )
        object.__setattr__(self, "label_value", int(self.label_value))
        object.__setattr__(self, "color", tuple(int(c) for c in self.color))
        object.__setattr__(self, "algorithm_type", SegmentAlgorithmType(self.algorithm_type))
        if (self.tracking_id is None) != (self.tracking_uid is None):
            raise InvalidSegmentationError(
                f"Segment '{self.name}': tracking ID and tracking UID must be given together."
            )


@dataclass(frozen=True, eq=False)
class Geometry:
    """The voxel grid: shape ``(slices, rows, columns)`` and the index-to-LPS affine."""

    shape: tuple[int, int, int]
    affine: np.ndarray
    frame_of_reference_uid: str | None = None

    def __post_init__(self) -> None:
        affine = np.array(self.affine, dtype=np.float64)
        if affine.shape != (4, 4) or not np.allclose(affine[3], [0, 0, 0, 1]):
            raise InvalidSegmentationError("The affine must be a 4x4 matrix with last row (0, 0, 0, 1).")
        if len(self.shape) != 3 or any(int(n) < 1 for n in self.shape):
            raise InvalidSegmentationError(f"Shape {self.shape} must be three positive sizes (slices, rows, columns).")
        if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise InvalidSegmentationError("The affine is singular: voxel spacing cannot be zero.")
        affine.setflags(write=False)
        object.__setattr__(self, "affine", affine)
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))

    @property
    def spacing(self) -> np.ndarray:
        """Voxel spacing in mm along (slice, row, column)."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def origin(self) -> np.ndarray:
        """LPS position of the centre of voxel (0, 0, 0)."""
        return self.affine[:3, 3].copy()

    @property
    def direction(self) -> np.ndarray:
        """Unit direction vectors as columns, in (slice, row, column) order."""
        return self.affine[:3, :3] / self.spacing

    def same_as(self, other: Geometry, atol: float = 1e-4) -> bool:
        """True if shape equal and affines agree within ``atol`` mm (DICOM DS precision).

        A single slice has no slice direction (a file stores only its position, orientation
        and spacing), so for ``shape[0] == 1`` the slice step may point either way.
        """
        if self.shape != other.shape:
            return False
        if np.allclose(self.affine, other.affine, atol=atol, rtol=0):
            return True
        if self.shape[0] != 1:
            return False
        flipped = other.affine.copy()
        flipped[:3, 0] *= -1
        return bool(np.allclose(self.affine, flipped, atol=atol, rtol=0))


@dataclass(eq=False)
class Layer:
    """One label array and the segments it holds (their label values are distinct)."""

    labels: np.ndarray
    segments: list[Segment] = field(default_factory=list)

    def segment_for_label(self, label_value: int) -> Segment | None:
        """The segment with this label value, or None."""
        for segment in self.segments:
            if segment.label_value == label_value:
                return segment
        return None

    def validate(self, shape: tuple[int, int, int] | None = None, check_pixels: bool = True) -> None:
        """Raise InvalidSegmentationError if this layer is inconsistent."""
        if self.labels.ndim != 3:
            raise InvalidSegmentationError(f"A layer's label array must be 3D, got shape {self.labels.shape}.")
        if shape is not None and tuple(self.labels.shape) != tuple(shape):
            raise InvalidSegmentationError(
                f"A layer's label array has shape {self.labels.shape} but the geometry says {tuple(shape)}."
            )
        if self.labels.dtype not in (np.uint8, np.uint16):
            raise InvalidSegmentationError(
                f"Label arrays must be uint8 or uint16, got {self.labels.dtype}; convert with .astype()."
            )
        values = [s.label_value for s in self.segments]
        if len(set(values)) != len(values):
            duplicates = sorted({v for v in values if values.count(v) > 1})
            raise InvalidSegmentationError(
                f"Label values {duplicates} are used by more than one segment in the same layer; "
                "segments that overlap must go to separate layers."
            )
        if check_pixels:
            present = present_labels(self.labels)
            undescribed = sorted(set(present.tolist()) - set(values) - {0})
            if undescribed:
                count = len(undescribed)
                shown = ", ".join(str(v) for v in undescribed[:10]) + (", ..." if count > 10 else "")
                which = f"{count} label values ({shown}) occur" if count > 1 else f"Label value {shown} occurs"
                raise UndescribedLabelError(
                    f"{which} in the label array but no segment describes {'them' if count > 1 else 'it'}; add "
                    "segments for them (e.g. a --labels table listing them) or set those voxels to 0."
                )


class LayerPacker:
    """Paints segment masks into as few non-overlapping label layers as possible (first fit, in order).

    A mask goes into the first layer where it overlaps no labelled voxel and whose segments do
    not already use its label value; otherwise into a new layer. Used for BINARY/FRACTIONAL SEG
    instances and for folders of mask files.

    Parameters
    ----------
    shape: tuple[int, int, int]
        The ``(k, j, i)`` shape of every layer.
    before_new_layer: Callable[[int], object] | None
        Called with the number of layers there will be before a new layer is allocated (to
        refuse an implausible size with the caller's message).
    """

    def __init__(self, shape: Sequence[int], before_new_layer: Callable[[int], object] | None = None) -> None:
        self.shape = (int(shape[0]), int(shape[1]), int(shape[2]))
        self._before_new_layer = before_new_layer
        self._layers: list[Layer] = []

    def add(self, segment: Segment, mask: np.ndarray | Mapping[int, np.ndarray]) -> None:
        """Paint ``mask`` (a boolean ``(k, j, i)`` array, or ``{k: (j, i) plane}``) with the segment's label value."""
        planes = _mask_planes(mask) if isinstance(mask, np.ndarray) else mask
        target = next(
            (
                layer
                for layer in self._layers
                if layer.segment_for_label(segment.label_value) is None
                and not any(np.any(layer.labels[k][plane]) for k, plane in planes.items())
            ),
            None,
        )
        if target is None:
            if self._before_new_layer is not None:
                self._before_new_layer(len(self._layers) + 1)
            target = Layer(labels=np.zeros(self.shape, dtype=np.uint8), segments=[])
            self._layers.append(target)
        if segment.label_value > np.iinfo(target.labels.dtype).max:
            target.labels = target.labels.astype(label_dtype(segment.label_value))
        for k, plane in planes.items():
            target.labels[k][plane] = segment.label_value
        target.segments.append(segment)

    def layers(self) -> list[Layer]:
        """The layers so far, each with its segments in label-value order (empty list if nothing was added)."""
        for layer in self._layers:
            layer.segments.sort(key=lambda segment: segment.label_value)
        return self._layers


def _mask_planes(mask: np.ndarray) -> dict[int, np.ndarray]:
    """The non-empty ``(j, i)`` planes of a boolean ``(k, j, i)`` mask, by k (views, no copies)."""
    mask = np.asarray(mask, dtype=bool)
    return {int(k): mask[k] for k in np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))}


@dataclass(frozen=True)
class ReferencedSeries:
    """The source image series a segmentation was derived from (identifiers only)."""

    study_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str | None = None
    sop_instance_uids: tuple[str, ...] = ()
    frame_of_reference_uid: str | None = None


@dataclass(frozen=True)
class SeriesInfo:
    """DICOM-level facts about a SEG series that was read (not needed for writing)."""

    series_instance_uid: str
    sop_instance_uids: tuple[str, ...]
    segmentation_type: SegmentationType
    transfer_syntax_uids: tuple[str, ...]
    study_instance_uid: str | None = None
    series_description: str | None = None
    series_number: int | None = None
    content_label: str | None = None
    content_description: str | None = None
    content_creator_name: str | None = None
    patient_id: str | None = None
    patient_name: str | None = None
    palette_color: bool = False


@dataclass(eq=False)
class Segmentation:
    """A segmentation: geometry, one or more layers, and what it references."""

    geometry: Geometry
    layers: list[Layer]
    referenced_series: ReferencedSeries | None = None
    series_info: SeriesInfo | None = None

    @property
    def segments(self) -> list[Segment]:
        """All segments of all layers, layer by layer."""
        return [segment for layer in self.layers for segment in layer.segments]

    def validate(self, check_pixels: bool = True) -> None:
        """Raise InvalidSegmentationError if any layer is inconsistent with the geometry."""
        if not self.layers:
            raise InvalidSegmentationError("A segmentation needs at least one layer.")
        for layer in self.layers:
            layer.validate(self.geometry.shape, check_pixels=check_pixels)

    def with_layers(self, layers: Sequence[Layer]) -> Segmentation:
        """A copy of this segmentation holding other layers."""
        return replace(self, layers=list(layers))


#: Present labels already counted for read-only arrays: id -> (weak array, values, still valid?).
_KNOWN_PRESENT: dict[int, tuple[weakref.ref, np.ndarray, Callable[[], bool]]] = {}


def remember_present_labels(labels: np.ndarray, present: np.ndarray, still_valid: Callable[[], bool]) -> None:
    """Let :func:`present_labels` answer ``present`` for this read-only array while ``still_valid()`` is True.

    The MRML bridge counts a layer once and hands the writer a read-only view of the node's
    voxels; ``still_valid`` (the layer image's modification time unchanged) guards against the
    voxels changing underneath. Writable arrays are never remembered.
    """
    if labels.flags.writeable:
        return
    key = id(labels)
    _KNOWN_PRESENT[key] = (weakref.ref(labels), np.asarray(present).copy(), still_valid)
    weakref.finalize(labels, _KNOWN_PRESENT.pop, key, None)


def present_labels(labels: np.ndarray) -> np.ndarray:
    """Sorted distinct values of a uint8/uint16 label array (fast: counted, not sorted).

    The voxels are taken in parts on every core; each part is reduced to a covering sample
    (:func:`covering_sample`) whose values are counted (:func:`label_counts`). A read-only
    array counted before (:func:`remember_present_labels`) is not counted again.
    """
    known = _KNOWN_PRESENT.get(id(labels))
    if known is not None and known[0]() is labels and not labels.flags.writeable and known[2]():
        return known[1].copy()
    if labels.dtype not in (np.uint8, np.uint16) or not labels.size:
        return np.unique(labels)
    flat = np.ascontiguousarray(labels).reshape(-1)
    row = labels.shape[-1]

    def count(start: int) -> np.ndarray:
        return label_counts(flat[start : start + _COUNTING_PART], row)

    starts = range(0, flat.size, _COUNTING_PART)
    workers = min(len(starts), os.cpu_count() or 1)
    if workers <= 1:
        return np.flatnonzero(count(0))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return np.flatnonzero(sum(pool.map(count, starts)))


#: Voxels per part that :func:`present_labels` counts on one thread.
_COUNTING_PART = 1 << 22
#: Image width Pillow's histogram views a uint8 sample with.
_HISTOGRAM_WIDTH = 4096


def covering_sample(flat: np.ndarray, row: int = 0) -> np.ndarray:
    """Some values of a contiguous 1D uint8/uint16 array, among them every distinct value it holds.

    The array is viewed as 64-bit words: a word equal to an earlier word holds no value that word
    did not, so the first word, every word that differs from its predecessor and the tail that
    fills no word are kept. With ``row`` (the label map's row length in voxels), a word is also
    dropped where it equals the word one row before (a region's edge runs on from row to row).
    A label map's long runs leave about a tenth of its voxels, its rows about a fortieth.
    """
    per_word = 8 // flat.itemsize
    whole = flat.size - flat.size % per_word
    if not whole:
        return flat
    words = flat[:whole].view(np.uint64)
    keep = words[1:] != words[:-1]  # keep[i]: word i + 1 differs from word i
    lag = row // per_word if row > 0 and row % per_word == 0 else 0  # words per row
    if 0 < lag < words.size:
        np.logical_and(keep[lag - 1 :], words[lag:] != words[:-lag], out=keep[lag - 1 :])
    changed = np.flatnonzero(keep)
    changed += 1
    return np.concatenate((words[:1].view(flat.dtype), words[changed].view(flat.dtype), flat[whole:]))


def label_counts(flat: np.ndarray, row: int = 0) -> np.ndarray:
    """Per value of a contiguous 1D uint8 (256 bins) or uint16 (65536) array, a count that is non-zero exactly
    when the value occurs (counts of a covering sample, not of voxels), as int64.

    ``row`` is the label map's row length (:func:`covering_sample`). uint8 samples are counted by
    Pillow's histogram (C, releases the GIL), else by bincount.
    """
    sample = covering_sample(flat, row)
    if flat.dtype != np.uint8:
        return np.bincount(sample, minlength=65536).astype(np.int64, copy=False)
    try:
        from PIL import Image
    except ImportError:
        return np.bincount(sample, minlength=256).astype(np.int64, copy=False)
    rows = sample.size // _HISTOGRAM_WIDTH
    counts = np.bincount(sample[rows * _HISTOGRAM_WIDTH :], minlength=256).astype(np.int64, copy=False)
    if rows:
        image = Image.frombuffer("L", (_HISTOGRAM_WIDTH, rows), sample[: rows * _HISTOGRAM_WIDTH], "raw", "L", 0, 1)
        counts += np.asarray(image.histogram(), dtype=np.int64)
    return counts


def segment_id(label_value: int, layer_index: int = 0) -> str:
    """The Segment ID a label gets in Slicer and in ``.seg.nrrd`` files.

    ``Segment_<label>`` in the first layer (``layer_index`` 0), ``Segment_<label>_layer<n>`` in
    layer n = ``layer_index + 1`` (the SEG instance number) of the others.
    """
    return f"Segment_{label_value}" if layer_index == 0 else f"Segment_{label_value}_layer{layer_index + 1}"


def label_dtype(max_label_value: int) -> np.dtype:
    """The smallest unsigned type (uint8 or uint16) that holds ``max_label_value``."""
    if max_label_value > MAX_LABEL_VALUE:
        raise TooManyLabelsError(
            f"Label value {max_label_value} exceeds {MAX_LABEL_VALUE}; a LABELMAP SEG holds at most "
            f"{MAX_LABEL_VALUE} labels per layer. Split the segments over several layers."
        )
    return np.dtype(np.uint8 if max_label_value <= 255 else np.uint16)


def differences(expected: Segmentation, actual: Segmentation, atol: float = 1e-4) -> list[str]:
    """Human-readable list of how ``actual`` differs from ``expected`` (empty if equivalent).

    Compares geometry (within ``atol`` mm), layer count, voxels, and every segment field.
    Terminology is compared by codes; Slicer context names are ignored.
    """
    found: list[str] = []
    if not expected.geometry.same_as(actual.geometry, atol=atol):
        found.append(
            f"geometry differs: shape {expected.geometry.shape} vs {actual.geometry.shape}, "
            f"affine\n{expected.geometry.affine}\nvs\n{actual.geometry.affine}"
        )
    if len(expected.layers) != len(actual.layers):
        found.append(f"{len(expected.layers)} layers expected, {len(actual.layers)} found")
        return found
    for index, (a, b) in enumerate(zip(expected.layers, actual.layers)):
        if a.labels.shape != b.labels.shape or not np.array_equal(a.labels, b.labels):
            mismatched = int(np.count_nonzero(a.labels != b.labels)) if a.labels.shape == b.labels.shape else -1
            found.append(f"layer {index}: voxels differ ({mismatched} voxels)")
        a_by_label = {s.label_value: s for s in a.segments}
        b_by_label = {s.label_value: s for s in b.segments}
        if set(a_by_label) != set(b_by_label):
            found.append(f"layer {index}: label values {sorted(a_by_label)} vs {sorted(b_by_label)}")
            continue
        for label_value, sa in a_by_label.items():
            sb = b_by_label[label_value]
            for name in (
                "name", "color", "algorithm_type", "algorithm_name", "algorithm_version",
                "description", "tracking_id", "tracking_uid",
            ):
                if getattr(sa, name) != getattr(sb, name):
                    found.append(
                        f"layer {index} label {label_value}: {name} {getattr(sa, name)!r} vs {getattr(sb, name)!r}"
                    )
            if (sa.algorithm_family is None) != (sb.algorithm_family is None) or (
                sa.algorithm_family is not None and not sa.algorithm_family.same_concept(sb.algorithm_family)
            ):
                found.append(f"layer {index} label {label_value}: algorithm family differs")
            if not sa.terminology.same_codes(sb.terminology):
                found.append(
                    f"layer {index} label {label_value}: terminology {sa.terminology} vs {sb.terminology}"
                )
    return found
