"""MRML bridge: Slicer segmentation node <-> :class:`~.model.Segmentation`.

Runs inside 3D Slicer (5.8 and later) and on the Qt-free ``slicer-core`` wheel; this is the
only module of the library that imports ``slicer`` and ``vtk``.

One shared binary labelmap layer of the node is one :class:`~.model.Layer` (one LABELMAP
instance). Layers are read and written as whole label arrays (zero-copy views of VTK
memory plus one copy), never segment by segment, so 100 segments on 512x512x300 voxels
take a fraction of a second.

Decisions
---------
* **Extent.** Export uses the full reference grid: the reference volume if one is given,
  else the segmentation's "Reference image geometry" conversion parameter, else the union
  of the layers' extents. Layers usually hold only their effective extent; they are padded
  with 0. ``crop=True`` instead crops to the bounding box of all non-zero voxels.
  Voxels outside the reference grid are dropped with a warning.
* **Other grids.** A layer on a different grid (other spacing or direction, or a
  non-integer offset) is resampled into the reference grid by nearest neighbour, as
  Slicer's own labelmap export does, with a warning; ``allowResampling=False`` raises
  :class:`~.errors.GeometryMismatchError` instead.
* **Stray labels.** Voxels whose value matches no segment of their layer (or belong to a
  segment left out with ``segmentIds``) are set to 0; Slicer does not show them either.
* **Transforms.** Geometry is exported in the reference volume's own (DICOM) coordinates,
  or in world coordinates without a reference volume. So a segmentation under the same
  transform as its volume exports unchanged, and one moved by a linear transform relative
  to its volume is exported where it is shown (resampled onto the volume's grid if needed).
  A non-linear relative transform raises :class:`~.errors.GeometryMismatchError` (harden it first).
* **Segment IDs** of created nodes are ``Segment_<label value>`` in the first layer and
  ``Segment_<label value>_layer<n>`` in layer ``n`` (1-based, the SEG instance number):
  stable, readable and unique. Segments are added layer by layer.
* **Terminology** lives in the segment tag ``TerminologyEntry`` (:mod:`.slicerterm`);
  missing context names become Slicer's DICOM master list contexts. The other DICOM
  segment attributes live in segment tags ``DICOM.SegmentAlgorithmType``,
  ``DICOM.SegmentAlgorithmName`` (both used by Slicer's own SEG plugin),
  ``DICOM.SegmentAlgorithmVersion``, ``DICOM.SegmentAlgorithmFamily`` (``SCHEME^value^meaning``),
  ``DICOM.SegmentDescription``, ``DICOM.TrackingID`` and ``DICOM.TrackingUID``.
* **Colors**: Slicer's 0-1 floats <-> 8-bit by rounding; names and colors of created
  segments are marked "not auto-generated" so Slicer keeps them.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from .errors import GeometryMismatchError, InvalidSegmentationError
from .formats.slicerterm import (
    SEGMENT_TAG_NAMES,
    TERMINOLOGY_ENTRY_TAG,
    segment_fields_from_tags,
    segment_tags,
)
from .geometry import RAS_FROM_LPS, affine_from_ijk_to_ras, ijk_to_ras
from .model import (
    Geometry,
    Layer,
    ReferencedSeries,
    Segment,
    Segmentation,
    SeriesInfo,
    label_dtype,
    present_labels,
    remember_present_labels,
    segment_id,
)

__all__ = [
    "find_series_node",
    "find_study_item",
    "labels_in_vtk_memory",
    "get_terminology_entry",
    "node_from_segmentation",
    "place_in_subject_hierarchy",
    "put_in_new_study",
    "release_layers_on_removal",
    "segment_id",
    "segmentation_from_node",
    "set_series_uids",
    "set_terminology_entry",
]

logger = logging.getLogger(__name__)

#: Subject hierarchy UID name and attribute Slicer's DICOM module uses.
DICOM_UID_NAME = "DICOM"
DICOM_INSTANCE_UID_NAME = "DICOMInstanceUID"
REFERENCED_INSTANCE_UIDS_ATTRIBUTE = "DICOM.ReferencedInstanceUIDs"

_VTK_TYPES = {np.dtype(np.uint8): vtk.VTK_UNSIGNED_CHAR, np.dtype(np.uint16): vtk.VTK_UNSIGNED_SHORT}


@dataclass(frozen=True)
class _Grid:
    """A voxel grid in Slicer's terms: IJK -> RAS matrix (i fastest) and inclusive extent."""

    ijk_to_ras: np.ndarray
    extent: tuple[int, int, int, int, int, int]

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape (slices, rows, columns) = (k, j, i)."""
        e = self.extent
        return (e[5] - e[4] + 1, e[3] - e[2] + 1, e[1] - e[0] + 1)

    @property
    def empty(self) -> bool:
        e = self.extent
        return e[1] < e[0] or e[3] < e[2] or e[5] < e[4]

    def affine(self) -> np.ndarray:
        """The model's ``(k, j, i)`` -> LPS affine of the voxel at the start of the extent."""
        affine = affine_from_ijk_to_ras(self.ijk_to_ras)
        start = np.array([self.extent[0], self.extent[2], self.extent[4], 1.0])
        affine[:3, 3] = (RAS_FROM_LPS @ self.ijk_to_ras @ start)[:3]
        return affine

    @classmethod
    def from_geometry(cls, geometry: Geometry) -> _Grid:
        """The grid of a model geometry, extent starting at 0."""
        slices, rows, columns = geometry.shape
        return cls(ijk_to_ras(geometry.affine), (0, columns - 1, 0, rows - 1, 0, slices - 1))

    def vtk_matrix(self) -> vtk.vtkMatrix4x4:
        matrix = vtk.vtkMatrix4x4()
        for row in range(4):
            for column in range(4):
                matrix.SetElement(row, column, float(self.ijk_to_ras[row, column]))
        return matrix

    def oriented_image(self) -> slicer.vtkOrientedImageData:
        """An oriented image with this geometry and no scalars (a resampling reference)."""
        image = slicer.vtkOrientedImageData()
        image.SetExtent(*self.extent)
        image.SetImageToWorldMatrix(self.vtk_matrix())
        return image


# ---------------------------------------------------------------------------------------------------------------
# node -> model


def segmentation_from_node(
    segmentationNode: slicer.vtkMRMLSegmentationNode,
    referenceVolumeNode: slicer.vtkMRMLVolumeNode | None = None,
    *,
    crop: bool = False,
    segmentIds: Sequence[str] | None = None,
    allowResampling: bool = True,
    referencedSeries: ReferencedSeries | None = None,
) -> Segmentation:
    """Read a segmentation node into the model: one layer per shared binary labelmap.

    Parameters
    ----------
    segmentationNode: vtkMRMLSegmentationNode
        The node to read. If it has no binary labelmap representation, one is created.
    referenceVolumeNode: vtkMRMLVolumeNode | None
        Export on this volume's grid (e.g. the source series). Default: the segmentation's
        reference image geometry.
    crop: bool
        Crop the grid to the bounding box of all non-zero voxels (default: full grid).
    segmentIds: Sequence[str] | None
        Export only these segments (default: all). Voxels of the others become 0.
    allowResampling: bool
        Resample layers that are not on the reference grid (nearest neighbour); if False,
        raise GeometryMismatchError instead.
    referencedSeries: ReferencedSeries | None
        Stored in the result (also its Frame of Reference UID in the geometry).

    Returns
    -------
    Segmentation
        Layers in Slicer's layer order, segments in segmentation order within a layer.
        Empty segments are kept; layers without selected segments are left out.

    Raises
    ------
    InvalidSegmentationError
        No segments, unknown segment IDs, or no binary labelmap could be created.
    GeometryMismatchError
        Non-linear transform relative to the reference volume (or world), or a layer off the
        grid with ``allowResampling=False``.
    """
    segmentation = segmentationNode.GetSegmentation()
    binaryName = _binary_labelmap_name()
    allIds = list(segmentation.GetSegmentIDs())
    if not allIds:
        raise InvalidSegmentationError(f"Segmentation '{segmentationNode.GetName()}' has no segments to export.")
    selected = set(allIds if segmentIds is None else segmentIds)
    unknown = sorted(selected - set(allIds))
    if unknown:
        raise InvalidSegmentationError(
            f"Segment IDs {unknown} are not in segmentation '{segmentationNode.GetName()}'; "
            f"it has {allIds[:10]}{' ...' if len(allIds) > 10 else ''}."
        )
    _ensure_binary_labelmap(segmentationNode, binaryName)

    # Everything below is in the export frame: the reference volume's local coordinates, else world.
    toFrame = _segmentation_to_frame(segmentationNode, referenceVolumeNode)
    grid = _reference_grid(segmentation, referenceVolumeNode, binaryName, toFrame)
    layers: list[Layer] = []
    for layerIndex in range(segmentation.GetNumberOfLayers(binaryName)):
        layerIds = [sid for sid in segmentation.GetSegmentIDsForLayer(layerIndex, binaryName) if sid in selected]
        if not layerIds:
            continue
        layerIds.sort(key=allIds.index)
        segments = [_segment_from_vtk(segmentation.GetSegment(sid), sid) for sid in layerIds]
        image = segmentation.GetLayerDataObject(layerIndex, binaryName)
        labels = _labels_on_grid(image, grid, segments, allowResampling, layerIndex, toFrame)
        layers.append(Layer(labels=labels, segments=segments))

    if not layers:
        raise InvalidSegmentationError("No segments were selected for export; select at least one segment.")
    geometryAffine = grid.affine()
    if crop:
        layers, geometryAffine = _crop(layers, geometryAffine)
    shape = layers[0].labels.shape
    geometry = Geometry(
        shape=shape,
        affine=geometryAffine,
        frame_of_reference_uid=referencedSeries.frame_of_reference_uid if referencedSeries else None,
    )
    result = Segmentation(geometry=geometry, layers=layers, referenced_series=referencedSeries)
    result.validate(check_pixels=False)
    return result


def _binary_labelmap_name() -> str:
    return slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()


def _ensure_binary_labelmap(segmentationNode: slicer.vtkMRMLSegmentationNode, binaryName: str) -> None:
    """Create the binary labelmap representation if the node only has another one."""
    segmentation = segmentationNode.GetSegmentation()
    if segmentation.ContainsRepresentation(binaryName):
        return
    logger.info("Converting segmentation '%s' to binary labelmap for export", segmentationNode.GetName())
    if not segmentationNode.CreateBinaryLabelmapRepresentation() or not segmentation.ContainsRepresentation(
        binaryName
    ):
        raise InvalidSegmentationError(
            f"Segmentation '{segmentationNode.GetName()}' cannot be converted to a binary labelmap; "
            "set its reference geometry (Segmentations module) and try again."
        )


def _reference_grid(
    segmentation: slicer.vtkSegmentation,
    referenceVolumeNode: slicer.vtkMRMLVolumeNode | None,
    binaryName: str,
    toFrame: np.ndarray,
) -> _Grid:
    """The full grid to export on (reference volume, reference geometry, or union of layers), in the frame."""
    if referenceVolumeNode is not None:
        imageData = referenceVolumeNode.GetImageData()
        if imageData is None:
            raise GeometryMismatchError(f"Reference volume '{referenceVolumeNode.GetName()}' has no image data.")
        matrix = vtk.vtkMatrix4x4()
        referenceVolumeNode.GetIJKToRASMatrix(matrix)
        grid = _Grid(_numpy_matrix(matrix), tuple(imageData.GetExtent()))
        if not grid.empty:
            return grid
    parameter = segmentation.GetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    )
    if parameter:
        matrix = vtk.vtkMatrix4x4()
        extent = [0, -1, 0, -1, 0, -1]
        if slicer.vtkSegmentationConverter.DeserializeImageGeometry(parameter, matrix, extent):
            e = [int(v) for v in extent]
            grid = _Grid(toFrame @ _numpy_matrix(matrix), (e[0], e[1], e[2], e[3], e[4], e[5]))
            if not grid.empty:
                return grid
        logger.warning("Ignoring unusable reference image geometry %r", parameter)
    union = _union_of_layers(segmentation, binaryName)
    return _Grid(toFrame @ union.ijk_to_ras, union.extent)


def _union_of_layers(segmentation: slicer.vtkSegmentation, binaryName: str) -> _Grid:
    """Union of the layers' extents on the first layer's grid (all layers must share it)."""
    union: _Grid | None = None
    for layerIndex in range(segmentation.GetNumberOfLayers(binaryName)):
        grid = _image_grid(segmentation.GetLayerDataObject(layerIndex, binaryName))
        if grid.empty:
            continue
        if union is None:
            union = grid
            continue
        offset = _integer_offset(union, grid)
        if offset is None:
            raise GeometryMismatchError(
                "The segmentation has no reference image geometry and its layers lie on different grids; "
                "set a reference geometry (Segmentations module) or pass a reference volume."
            )
        e, u = grid.extent, union.extent
        union = _Grid(
            union.ijk_to_ras,
            (
                min(u[0], e[0] + offset[0]), max(u[1], e[1] + offset[0]),
                min(u[2], e[2] + offset[1]), max(u[3], e[3] + offset[1]),
                min(u[4], e[4] + offset[2]), max(u[5], e[5] + offset[2]),
            ),
        )
    if union is None:
        raise InvalidSegmentationError(
            "All segments are empty and the segmentation has no reference image geometry: the grid is unknown. "
            "Set a reference geometry or pass a reference volume."
        )
    return union


def _image_grid(image: slicer.vtkOrientedImageData) -> _Grid:
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    return _Grid(_numpy_matrix(matrix), tuple(image.GetExtent()))


def _integer_offset(reference: _Grid, other: _Grid, tolerance: float = 1e-3) -> tuple[int, int, int] | None:
    """Index offset t with reference index = other index + t, or None if the grids are not aligned."""
    relative = np.linalg.solve(reference.ijk_to_ras, other.ijk_to_ras)
    if not np.allclose(relative[:3, :3], np.eye(3), atol=tolerance, rtol=0):
        return None
    translation = relative[:3, 3]
    rounded = np.rint(translation)
    if not np.allclose(translation, rounded, atol=tolerance, rtol=0):
        return None
    return int(rounded[0]), int(rounded[1]), int(rounded[2])


def _labels_on_grid(
    image: slicer.vtkOrientedImageData | None,
    grid: _Grid,
    segments: list[Segment],
    allowResampling: bool,
    layerIndex: int,
    toFrame: np.ndarray,
) -> np.ndarray:
    """The layer's label array on ``grid`` (in the export frame): padded/cropped copy, strays set to 0.

    When the layer covers exactly the grid, has the label dtype and no stray values, the result is
    a read-only view of the node's own voxels (no copy: export then costs no memory for the labels).
    """
    values = [segment.label_value for segment in segments]
    dtype = label_dtype(max(values))
    out = np.zeros(grid.shape, dtype=dtype)
    if image is None or image.GetPointData().GetScalars() is None:
        return out
    layerGrid = _image_grid(image)
    if layerGrid.empty:
        return out
    if not np.allclose(toFrame, np.eye(4)):
        layerGrid = _Grid(toFrame @ layerGrid.ijk_to_ras, layerGrid.extent)
        moved = slicer.vtkOrientedImageData()
        moved.ShallowCopy(image)  # same voxels, placed in the export frame
        moved.SetImageToWorldMatrix(layerGrid.vtk_matrix())
        image = moved
    if image.GetNumberOfScalarComponents() != 1:
        raise InvalidSegmentationError(f"Layer {layerIndex} has {image.GetNumberOfScalarComponents()} components.")
    offset = _integer_offset(grid, layerGrid)
    if offset is None:
        if not allowResampling:
            raise GeometryMismatchError(
                f"Layer {layerIndex} (segments {[s.name for s in segments][:5]}) is not on the reference grid; "
                "resample the segmentation (Segmentations module, 'Specify geometry') or allow resampling."
            )
        logger.warning("Layer %d is not on the reference grid; resampling it (nearest neighbour)", layerIndex)
        resampled = slicer.vtkOrientedImageData()
        if not slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
            image, grid.oriented_image(), resampled, False, False
        ):
            raise GeometryMismatchError(f"Layer {layerIndex} could not be resampled onto the reference grid.")
        image, layerGrid = resampled, _image_grid(resampled)
        offset = _integer_offset(grid, layerGrid)
        if layerGrid.empty or image.GetPointData().GetScalars() is None:
            return out  # nothing of the layer lies within the grid
        if offset is None:
            raise GeometryMismatchError(f"Layer {layerIndex} could not be resampled onto the reference grid.")
    source = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(layerGrid.shape)

    # Overlap of the layer's extent (shifted into grid indices) with the grid, as slices.
    e, g = layerGrid.extent, grid.extent
    source_slices, out_slices = [], []
    for lo_index, hi_index in ((4, 5), (2, 3), (0, 1)):  # k, j, i
        shift = offset[lo_index // 2]
        lo = max(e[lo_index] + shift, g[lo_index])
        hi = min(e[hi_index] + shift, g[hi_index])
        if hi < lo:
            _warn_dropped(source, layerIndex)
            return out
        source_slices.append(slice(lo - shift - e[lo_index], hi - shift - e[lo_index] + 1))
        out_slices.append(slice(lo - g[lo_index], hi - g[lo_index] + 1))
    region = source[tuple(source_slices)]
    if region.shape == out.shape and region.dtype == out.dtype:
        present = _present_values(region)
        if not set(present) - set(values) - {0}:
            # The layer is the grid and holds nothing else: a read-only view of the node's voxels, no copy.
            # Its labels are counted once: the writer's check reuses the count while the layer is unchanged.
            view = region.view()
            view.flags.writeable = False
            mtime = image.GetMTime()
            remember_present_labels(view, np.asarray(present, dtype=np.int64),
                                    lambda: image.GetMTime() == mtime)
            return view
    if region.shape != source.shape:
        outside = int(np.count_nonzero(source)) - int(np.count_nonzero(region))
        if outside:
            logger.warning(
                "Layer %d: %d non-zero voxels lie outside the reference grid and are not exported", layerIndex, outside
            )
    _copy_labels(region, out[tuple(out_slices)], values, layerIndex)
    return out


def _warn_dropped(source: np.ndarray, layerIndex: int) -> None:
    count = int(np.count_nonzero(source))
    if count:
        logger.warning("Layer %d: all %d non-zero voxels lie outside the reference grid", layerIndex, count)


def _has_stray_labels(region: np.ndarray, values: list[int]) -> bool:
    """True if ``region`` holds a non-zero value that is not in ``values`` (one scan of the voxels)."""
    wanted = set(values)
    if region.dtype.kind == "u" and wanted == set(range(1, len(values) + 1)):
        # Fast path (Slicer's usual 1..n labels): a maximum tells whether anything else occurs.
        return region.size > 0 and int(region.max()) > len(values)
    return bool(set(_present_values(region)) - wanted - {0})


def _copy_labels(region: np.ndarray, target: np.ndarray, values: list[int], layerIndex: int) -> None:
    """Copy ``region`` into ``target``, setting values that are not in ``values`` to 0."""
    unsigned = region.dtype.kind == "u"
    if not _has_stray_labels(region, values):
        np.copyto(target, region, casting="unsafe")
        return
    if unsigned and region.dtype.itemsize <= 2:
        lookup = np.zeros(int(region.max()) + 1, dtype=target.dtype)
        lookup[[v for v in values if v < lookup.size]] = [v for v in values if v < lookup.size]
        np.copyto(target, lookup[region])
    else:
        keep = np.isin(region, np.asarray(values))
        np.copyto(target, np.where(keep, region, 0), casting="unsafe")
    dropped = int(np.count_nonzero(region)) - int(np.count_nonzero(target))
    logger.warning(
        "Layer %d: %d voxels carry label values of no exported segment; they are exported as 0", layerIndex, dropped
    )


def _present_values(region: np.ndarray) -> list[int]:
    if region.size == 0:
        return []
    if region.dtype in (np.uint8, np.uint16):
        return present_labels(region).tolist()  # chunked: bincount of the whole array copies it to int64
    return np.unique(region).tolist()


def _crop(layers: list[Layer], affine: np.ndarray) -> tuple[list[Layer], np.ndarray]:
    """Crop all layers to the bounding box of their non-zero voxels (unchanged if all are empty)."""
    bounds = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        occupied = np.zeros(layers[0].labels.shape[axis], dtype=bool)
        for layer in layers:
            occupied |= np.any(layer.labels, axis=other)
        indices = np.flatnonzero(occupied)
        if indices.size == 0:
            return layers, affine
        bounds.append((int(indices[0]), int(indices[-1]) + 1))
    window = tuple(slice(lo, hi) for lo, hi in bounds)
    cropped = [Layer(labels=np.ascontiguousarray(layer.labels[window]), segments=layer.segments) for layer in layers]
    start = np.array([bounds[0][0], bounds[1][0], bounds[2][0], 1.0])
    new_affine = affine.copy()
    new_affine[:3, 3] = (affine @ start)[:3]
    return cropped, new_affine


def _segmentation_to_frame(
    segmentationNode: slicer.vtkMRMLSegmentationNode, referenceVolumeNode: slicer.vtkMRMLVolumeNode | None
) -> np.ndarray:
    """RAS matrix from the segmentation's local coordinates to the export frame.

    The frame is the reference volume's local coordinates (its DICOM coordinates), else world:
    a segmentation under the same transform as its volume exports unchanged.
    """
    source = segmentationNode.GetParentTransformNode()
    target = referenceVolumeNode.GetParentTransformNode() if referenceVolumeNode is not None else None
    if source is None and target is None:
        return np.eye(4)
    matrix = vtk.vtkMatrix4x4()
    if not slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(source, target, matrix):
        raise GeometryMismatchError(
            f"Segmentation '{segmentationNode.GetName()}' is under a non-linear transform (relative to its "
            "reference volume); harden the transform (Transforms module) before exporting."
        )
    return _numpy_matrix(matrix)


def _numpy_matrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(row, column) for column in range(4)] for row in range(4)])


def _rgb255(color: Sequence[float]) -> tuple[int, int, int]:
    """8-bit sRGB of a VTK color (floats 0..1)."""
    red, green, blue = (int(round(min(max(float(c), 0.0), 1.0) * 255)) for c in color)
    return red, green, blue


def _segment_from_vtk(segment: slicer.vtkSegment, segmentId: str) -> Segment:
    """Model segment from a vtkSegment's name, color, label value, terminology and DICOM tags."""
    name = segment.GetName() or segmentId
    tags = {tag: _get_tag(segment, tag) for tag in SEGMENT_TAG_NAMES if tag != TERMINOLOGY_ENTRY_TAG}
    tags[TERMINOLOGY_ENTRY_TAG] = get_terminology_entry(segment)
    return Segment(
        label_value=segment.GetLabelValue(),
        name=name,
        color=_rgb255(segment.GetColor()),
        **segment_fields_from_tags(tags, f"Segment '{name}'"),
    )


# ---------------------------------------------------------------------------------------------------------------
# model -> node


def node_from_segmentation(
    segmentation: Segmentation,
    scene: slicer.vtkMRMLScene,
    name: str | None = None,
    referenceVolumeNode: slicer.vtkMRMLVolumeNode | None = None,
    *,
    placeInSubjectHierarchy: bool = True,
    releaseLayersOnRemoval: bool = True,
) -> slicer.vtkMRMLSegmentationNode:
    """Create a segmentation node holding the model: one shared labelmap per layer.

    Parameters
    ----------
    segmentation: Segmentation
        The model (validated without a pixel scan; undescribed labels stay invisible in Slicer).
    scene: vtkMRMLScene
        Scene to add the node to.
    name: str | None
        Node name; default: Series Description, Content Label, or "Segmentation".
    referenceVolumeNode: vtkMRMLVolumeNode | None
        If given, becomes the node's reference geometry (Slicer's "source volume" grid).
        Otherwise the reference geometry is the model's full grid.
    placeInSubjectHierarchy: bool
        Create the subject hierarchy item (see :func:`place_in_subject_hierarchy`).
    releaseLayersOnRemoval: bool
        Make removing the node (delete, scene close) fast: see :func:`release_layers_on_removal`.

    Returns
    -------
    vtkMRMLSegmentationNode
        With display node, binary labelmap as source representation, segment IDs
        ``Segment_<label>`` (first layer) / ``Segment_<label>_layer<n>``.

    Raises
    ------
    InvalidSegmentationError
        The model is inconsistent, or Slicer refused a segment.
    """
    segmentation.validate(check_pixels=False)
    grid = _Grid.from_geometry(segmentation.geometry)
    directions = segmentation.geometry.direction
    if not np.allclose(directions.T @ directions, np.eye(3), atol=1e-4):
        logger.warning("Segmentation grid is not orthogonal (sheared); Slicer shows it as stored but may resample")

    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name or _default_name(segmentation))
    node.CreateDefaultDisplayNodes()
    vtkSegmentation = node.GetSegmentation()
    binaryName = _binary_labelmap_name()
    if hasattr(vtkSegmentation, "SetSourceRepresentationName"):
        vtkSegmentation.SetSourceRepresentationName(binaryName)
    else:  # pragma: no cover - Slicer < 5.4
        vtkSegmentation.SetMasterRepresentationName(binaryName)
    if referenceVolumeNode is not None:
        node.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolumeNode)
    else:
        vtkSegmentation.SetConversionParameter(
            slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(),
            slicer.vtkSegmentationConverter.SerializeImageGeometry(grid.vtk_matrix(), list(grid.extent)),
        )

    wasModifying = node.StartModify()
    try:
        for layerIndex, layer in enumerate(segmentation.layers):
            if not layer.segments:
                logger.debug("Layer %d has no segments; Slicer cannot hold it, skipped", layerIndex)
                continue
            image = _oriented_image(layer.labels, grid)
            for segment in layer.segments:
                segmentId = segment_id(segment.label_value, layerIndex)
                vtkSegment = _vtk_segment(segment)
                vtkSegment.AddRepresentation(binaryName, image)
                if not vtkSegmentation.AddSegment(vtkSegment, segmentId):
                    raise InvalidSegmentationError(f"Slicer refused segment '{segment.name}' (ID {segmentId}).")
    finally:
        node.EndModify(wasModifying)

    if placeInSubjectHierarchy:
        place_in_subject_hierarchy(node, segmentation.referenced_series, segmentation.series_info)
    if releaseLayersOnRemoval:
        release_layers_on_removal(node)
    return node


#: Node attribute: the segments' representations are dropped when the node leaves the scene.
RELEASE_LAYERS_ATTRIBUTE = "DICOMLabelmapSeg.ReleaseLayersOnRemoval"
_observedScenes: dict[str, tuple[weakref.ref, int]] = {}


def release_layers_on_removal(segmentationNode: slicer.vtkMRMLSegmentationNode) -> None:
    """Drop the segments' labelmaps when the node is removed from its scene, so that removal takes milliseconds.

    When a segmentation whose segments share a labelmap layer is destroyed, Slicer removes its
    segments one by one and separates each from the shared layer first (a threshold of the
    whole layer per segment): 6.5 s for 61 segments on 512x512x334, minutes for hundreds. A
    scene observer (one per scene) drops the representations of marked nodes when they are
    about to be removed (deleting the node, closing the scene); the layer images themselves
    are left alone, so anyone else holding them keeps their data.
    """
    segmentationNode.SetAttribute(RELEASE_LAYERS_ATTRIBUTE, "1")
    scene = segmentationNode.GetScene()
    if scene is None:
        return
    key = scene.__this__
    observed = _observedScenes.get(key)
    if observed is not None and observed[0]() is scene:
        return
    _observedScenes[key] = (weakref.ref(scene), scene.AddObserver(slicer.vtkMRMLScene.NodeAboutToBeRemovedEvent,
                                                                  _onNodeAboutToBeRemoved))


@vtk.calldata_type(vtk.VTK_OBJECT)
def _onNodeAboutToBeRemoved(caller: slicer.vtkMRMLScene, event: str, node: slicer.vtkMRMLNode | None) -> None:
    if node is None or not node.IsA("vtkMRMLSegmentationNode") or node.GetAttribute(RELEASE_LAYERS_ATTRIBUTE) != "1":
        return
    segmentation = node.GetSegmentation()
    if segmentation is None:
        return
    for segmentId in segmentation.GetSegmentIDs():
        segmentation.GetSegment(segmentId).RemoveAllRepresentations()


def _default_name(segmentation: Segmentation) -> str:
    info = segmentation.series_info
    if info is not None:
        return info.series_description or info.content_label or "Segmentation"
    return "Segmentation"


#: Label volumes allocated in VTK memory by :func:`vtk_label_volume`: id(array) -> (weak array, image).
_vtkLabelImages: dict[int, tuple[weakref.ref, slicer.vtkOrientedImageData]] = {}


def vtk_label_volume(shape: tuple[int, int, int], dtype: np.dtype, zeroed: bool = True) -> np.ndarray:
    """A ``(slices, rows, columns)`` label array in the memory of a new vtkOrientedImageData.

    Zero-filled if ``zeroed`` (the reader passes False when it decodes every voxel).

    :func:`node_from_segmentation` then uses that image for the layer instead of copying the
    labels into a new one (once: a second node from the same array gets its own copy).
    """
    slices, rows, columns = shape
    image = slicer.vtkOrientedImageData()
    image.SetExtent(0, columns - 1, 0, rows - 1, 0, slices - 1)
    image.AllocateScalars(_VTK_TYPES[np.dtype(dtype)], 1)
    array = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(shape)
    if zeroed:
        array.fill(0)
    key = id(array)
    _vtkLabelImages[key] = (weakref.ref(array), image)
    weakref.finalize(array, _vtkLabelImages.pop, key, None)
    return array


def labels_in_vtk_memory():  # noqa: ANN201 - a context manager
    """Within the block, the reader decodes LABELMAP layers straight into VTK memory (:func:`vtk_label_volume`).

    Use around reading a SEG whose model goes to :func:`node_from_segmentation` next: the node
    then holds the decoded voxels without a second copy of the label volume.
    """
    from .dicom.reader import labels_allocated_by

    return labels_allocated_by(vtk_label_volume)


def _oriented_image(labels: np.ndarray, grid: _Grid) -> slicer.vtkOrientedImageData:
    """A vtkOrientedImageData holding ``labels``: the image they were decoded into, else a copy (VTK memory)."""
    entry = _vtkLabelImages.get(id(labels))
    if entry is not None and entry[0]() is labels and labels.shape == grid.shape:
        del _vtkLabelImages[id(labels)]  # used once: the image now belongs to this node
        image = entry[1]
        scalars = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
        if np.shares_memory(scalars, labels):
            image.SetExtent(*grid.extent)
            image.SetImageToWorldMatrix(grid.vtk_matrix())
            return image
    image = slicer.vtkOrientedImageData()
    image.SetExtent(*grid.extent)
    image.SetImageToWorldMatrix(grid.vtk_matrix())
    image.AllocateScalars(_VTK_TYPES[labels.dtype], 1)
    target = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(labels.shape)
    np.copyto(target, labels)
    return image


def _vtk_segment(segment: Segment) -> slicer.vtkSegment:
    vtkSegment = slicer.vtkSegment()
    vtkSegment.SetName(segment.name)
    vtkSegment.SetNameAutoGenerated(False)
    vtkSegment.SetColor(*(c / 255.0 for c in segment.color))
    vtkSegment.SetColorAutoGenerated(False)
    vtkSegment.SetLabelValue(segment.label_value)
    tags = segment_tags(segment)
    set_terminology_entry(vtkSegment, tags.pop(TERMINOLOGY_ENTRY_TAG))
    for tag, value in tags.items():
        vtkSegment.SetTag(tag, value)
    return vtkSegment


# ---------------------------------------------------------------------------------------------------------------
# segment tags (feature-tested: Slicer 5.8 has no Get/SetTerminology)


def get_terminology_entry(segment: slicer.vtkSegment) -> str:
    """The segment's TerminologyEntry string ('' if none), on Slicer 5.8 and later."""
    if hasattr(segment, "GetTerminology"):
        return segment.GetTerminology() or ""
    return _get_tag(segment, _terminology_tag_name()) or ""


def set_terminology_entry(segment: slicer.vtkSegment, entry: str) -> None:
    """Set the segment's TerminologyEntry string, on Slicer 5.8 and later."""
    if hasattr(segment, "SetTerminology"):
        segment.SetTerminology(entry)
    else:  # pragma: no cover - Slicer 5.8
        segment.SetTag(_terminology_tag_name(), entry)


def _terminology_tag_name() -> str:
    getter = getattr(slicer.vtkSegment, "GetTerminologyEntryTagName", None)
    return getter() if getter is not None else TERMINOLOGY_ENTRY_TAG


def _get_tag(segment: slicer.vtkSegment, tag: str) -> str | None:
    """A segment tag's value, or None if the tag is absent or blank."""
    reference = vtk.reference("") if hasattr(vtk, "reference") else vtk.mutable("")
    if not segment.GetTag(tag, reference):
        return None
    value = str(reference)
    return value if value.strip() else None


# ---------------------------------------------------------------------------------------------------------------
# subject hierarchy


def place_in_subject_hierarchy(
    segmentationNode: slicer.vtkMRMLSegmentationNode,
    referencedSeries: ReferencedSeries | None = None,
    seriesInfo: SeriesInfo | None = None,
) -> int:
    """Create (or move) the node's subject hierarchy item under the referenced series' study.

    The parent is the study of the item whose ``DICOM`` UID is the referenced Series
    Instance UID, else the item whose ``DICOM`` UID is the Study Instance UID, else the
    scene. Sets attribute ``DICOM.ReferencedInstanceUIDs`` (space-separated SOP Instance
    UIDs of the source images) and, given ``seriesInfo``, the item UIDs ``DICOM`` (Series
    Instance UID) and ``DICOMInstanceUID`` as Slicer's DICOM module does.

    Returns
    -------
    int
        The subject hierarchy item ID of the node.
    """
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(segmentationNode.GetScene())
    parent = find_study_item(shNode, referencedSeries) or shNode.GetSceneItemID()
    item = shNode.GetItemByDataNode(segmentationNode)
    if item:
        shNode.SetItemParent(item, parent)
    else:
        item = shNode.CreateItem(parent, segmentationNode)
    if referencedSeries is not None and referencedSeries.sop_instance_uids:
        shNode.SetItemAttribute(item, REFERENCED_INSTANCE_UIDS_ATTRIBUTE, " ".join(referencedSeries.sop_instance_uids))
    if seriesInfo is not None:
        set_series_uids(segmentationNode, seriesInfo.series_instance_uid, seriesInfo.sop_instance_uids)
        if parent == shNode.GetSceneItemID() and seriesInfo.study_instance_uid:
            _insert_patient_and_study(shNode, item, seriesInfo)
    return item


def _insert_patient_and_study(shNode: slicer.vtkMRMLSubjectHierarchyNode, item: int, seriesInfo: SeriesInfo) -> None:
    """Put a series item whose study is not loaded under patient/study items made from its identifiers,
    as Slicer's DICOM module does (an empty Patient ID becomes ``Patient-<StudyInstanceUID>``)."""
    patientID = seriesInfo.patient_id or f"Patient-{seriesInfo.study_instance_uid}"
    slicer.vtkSlicerSubjectHierarchyModuleLogic.InsertDicomSeriesInHierarchy(
        shNode, patientID, seriesInfo.study_instance_uid, seriesInfo.series_instance_uid
    )
    patientItem = shNode.GetItemAncestorAtLevel(item, "Patient")
    if patientItem and seriesInfo.patient_name:
        shNode.SetItemAttribute(patientItem, "DICOM.PatientName", seriesInfo.patient_name)
        shNode.SetItemName(patientItem, seriesInfo.patient_name)


def set_series_uids(node: slicer.vtkMRMLNode, seriesInstanceUid: str, sopInstanceUids: Sequence[str]) -> int:
    """Give the node's subject hierarchy item (created under the scene if absent) the DICOM item UIDs
    ``DICOM`` (Series Instance UID) and ``DICOMInstanceUID`` (space-separated SOP Instance UIDs)."""
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(node.GetScene())
    item = shNode.GetItemByDataNode(node) or shNode.CreateItem(shNode.GetSceneItemID(), node)
    shNode.SetItemUID(item, DICOM_UID_NAME, seriesInstanceUid)
    if sopInstanceUids:
        shNode.SetItemUID(item, DICOM_INSTANCE_UID_NAME, " ".join(sopInstanceUids))
    return item


def put_in_new_study(nodes: Sequence[slicer.vtkMRMLNode], patientName: str, studyName: str) -> int:
    """Create a patient and a study item and move the nodes' items under the study; returns the study item.

    Used before exporting a volume that is not in a study (Slicer's Export to DICOM dialog needs one);
    the dialog's tag editor then asks for the patient and study values.
    """
    scene = nodes[0].GetScene()
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    patientItem = shNode.CreateSubjectItem(shNode.GetSceneItemID(), patientName)
    studyItem = shNode.CreateStudyItem(patientItem, studyName)
    for node in nodes:
        item = shNode.GetItemByDataNode(node) or shNode.CreateItem(studyItem, node)
        shNode.SetItemParent(item, studyItem)
    return studyItem


def find_study_item(shNode: slicer.vtkMRMLSubjectHierarchyNode, referencedSeries: ReferencedSeries | None) -> int:
    """The study item of the referenced series in the subject hierarchy (0 if not loaded)."""
    if referencedSeries is None:
        return 0
    seriesItem = shNode.GetItemByUID(DICOM_UID_NAME, referencedSeries.series_instance_uid)
    if seriesItem:
        return shNode.GetItemParent(seriesItem)
    if referencedSeries.study_instance_uid:
        return shNode.GetItemByUID(DICOM_UID_NAME, referencedSeries.study_instance_uid)
    return 0


def find_series_node(scene: slicer.vtkMRMLScene, seriesInstanceUid: str) -> slicer.vtkMRMLNode | None:
    """The data node loaded from the series with this UID (item UID ``DICOM``), or None."""
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    item = shNode.GetItemByUID(DICOM_UID_NAME, seriesInstanceUid)
    return shNode.GetItemDataNode(item) if item else None
