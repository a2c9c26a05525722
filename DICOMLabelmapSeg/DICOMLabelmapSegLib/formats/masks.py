"""Label maps (NIfTI/NRRD, 3D = one layer, 4D = one layer per volume) and folders of binary masks -> the model.

The meaning of the labels comes from a label table (:mod:`.labeltable`): given, or the sidecar
``<name>.json`` we wrote next to the image; without one, segments are named ``Segment_<label>``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ..errors import GeometryMismatchError, LabelmapSegError
from ..inputs import parse_json, read_bounded
from ..model import Geometry, Layer, LayerPacker, Segment, Segmentation, present_labels
from .labeltable import (
    IMAGE_DIGEST_KEY,
    LABEL_TABLE_FORMAT,
    MAX_TABLE_BYTES,
    LabelFileError,
    LabelTable,
    default_color,
    default_segment,
    parse_label_table,
    read_label_table,
)
from .nifti import read_nifti_volumes
from .nrrd import nrrd_volumes, read_nrrd
from .registry import FileFormat, sidecar_path
from .volumes import check_size, file_digest, label_array, validate_for_file

#: Files of a mask folder (one mask each).
MASK_SUFFIXES = (*FileFormat.NIFTI.suffixes, ".nrrd")

logger = logging.getLogger(__name__)


def read_labelmap(
    path: str | os.PathLike[str], labels: LabelTable | str | os.PathLike[str] | None = None
) -> Segmentation:
    """Read a NIfTI or NRRD label map (3D = one layer; 4D = one layer per volume).

    Parameters
    ----------
    path
        ``.nii``, ``.nii.gz``, ``.nrrd`` or ``.nhdr``.
    labels
        A :class:`LabelTable` or the path of a label table JSON file. When ``None``, a sidecar
        ``<name>.json`` written by this library is used if present; otherwise labels are named
        ``Segment_<label>`` and given generated colors.
    """
    path = Path(path)
    arrays, affine = read_label_volumes(path)
    table = _resolve_table(path, labels)
    layers = _layers_from_table(arrays, table, path)  # describes every label present
    segmentation = Segmentation(geometry=Geometry(shape=arrays[0].shape, affine=affine), layers=layers)
    validate_for_file(segmentation, path, check_pixels=False)
    return segmentation


def read_label_volumes(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """The label volumes ``(k, j, i)`` (one per layer) and the model affine of a NIfTI/NRRD file."""
    if FileFormat.of(path.name) is FileFormat.NIFTI:
        volumes, affine = read_nifti_volumes(path)
    else:
        header, data = read_nrrd(path)
        volumes, affine = nrrd_volumes(header, data, path)
    return [label_array(volume, path) for volume in volumes], affine


def _resolve_table(path: Path, labels: LabelTable | str | os.PathLike[str] | None) -> LabelTable | None:
    if isinstance(labels, LabelTable):
        return labels
    if labels is not None:
        return read_label_table(labels)
    sidecar = sidecar_path(path)
    if sidecar.is_file():
        try:
            document = parse_json(read_bounded(sidecar, MAX_TABLE_BYTES, "Label table", LabelFileError), str(sidecar))
        except (OSError, LabelmapSegError):
            return None
        if isinstance(document, dict) and document.get("format") == LABEL_TABLE_FORMAT:
            _check_pair(path, sidecar, document.get(IMAGE_DIGEST_KEY))
            logger.info("Using label table %s", sidecar)
            return parse_label_table(document)
    return None


def _check_pair(path: Path, sidecar: Path, expected: object) -> None:
    """Refuse a sidecar written for another version of the label map (a pair not replaced together)."""
    if not isinstance(expected, str):
        return  # tables of other tools, or written before the digest was recorded
    if file_digest(path) != expected:
        raise LabelFileError(
            f"{sidecar.name} was written for another version of {path.name} (the pair was not replaced together, "
            "e.g. an interrupted write or a copy of one file); its names and colors may be wrong. Write the pair "
            "again, or give the right label table with --labels."
        )


def _layers_from_table(arrays: Sequence[np.ndarray], table: LabelTable | None, path: Path) -> list[Layer]:
    multi_layer = len(arrays) > 1
    if table is not None:
        beyond = sorted(layer for layer in table.layers() if layer >= len(arrays))
        if beyond and table.keep_absent:
            raise LabelFileError(
                f"The label table describes layer {beyond[0]} but {path.name} has {len(arrays)} layer(s)."
            )
    layers = []
    undescribed: list[int] = []
    for layer_index, array in enumerate(arrays):
        present = [int(v) for v in present_labels(array) if v != 0]
        segments: dict[int, Segment] = {}
        for label_value in present:
            segment = table.lookup(label_value, layer_index) if table is not None else None
            if segment is None:
                if table is not None:
                    undescribed.append(label_value)
                segment = default_segment(label_value, layer_index, multi_layer)
            segments[label_value] = segment
        if table is not None and table.keep_absent:
            for (layer, label_value), segment in table.entries.items():
                if layer in (layer_index, None) and label_value not in segments:
                    segments[label_value] = segment
        layers.append(Layer(labels=array, segments=[segments[v] for v in sorted(segments)]))
    if undescribed:
        shown = ", ".join(str(v) for v in sorted(set(undescribed))[:10])
        logger.warning("%s: labels %s are not in the label table; named Segment_<label>.", path.name, shown)
    return layers


def read_mask_folder(
    folder: str | os.PathLike[str], labels: LabelTable | str | os.PathLike[str] | None = None
) -> Segmentation:
    """Read a folder of binary masks, one segment per file (TotalSegmentator's default output).

    Every ``*.nii``, ``*.nii.gz`` and ``*.nrrd`` file in ``folder`` (not its subfolders) is one
    segment named after the file (``liver.nii.gz`` -> ``liver``); all must share one grid.
    Empty masks are skipped. With a label table, a mask whose name matches an entry's name
    gets that entry's label value, color and terminology (so TotalSegmentator's class map gives
    the same label values as its multi-label output); other masks get the next free values.
    Non-overlapping masks share a layer; a mask overlapping every existing layer starts a new one.
    """
    folder = Path(folder)
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(MASK_SUFFIXES)
    )
    if not files:
        raise LabelFileError(f"{folder} holds no .nii, .nii.gz or .nrrd mask files.")
    table = labels if isinstance(labels, LabelTable) else read_label_table(labels) if labels is not None else None
    by_name = {segment.name.lower(): segment for segment in (table.entries.values() if table else [])}
    used = {segment.label_value for segment in by_name.values()}
    geometry: Geometry | None = None
    packer: LayerPacker | None = None
    next_value = max(used, default=0)
    unnamed: list[str] = []
    for file in files:  # one mask in memory at a time: a folder may hold 100+ masks of a large CT
        arrays, affine = read_label_volumes(file)
        if len(arrays) != 1:
            raise LabelFileError(f"{file.name} is 4D; a mask folder holds one 3D binary mask per file.")
        file_geometry = Geometry(shape=arrays[0].shape, affine=affine)
        if geometry is None:
            geometry = file_geometry
        elif not geometry.same_as(file_geometry):
            raise GeometryMismatchError(
                f"{file.name} is not on the same grid as {files[0].name}; the masks of a folder must share one grid."
            )
        present = [int(v) for v in present_labels(arrays[0]) if v]
        if not present:
            continue
        if len(present) > 1:
            raise LabelFileError(
                f"{file.name} holds several labels ({present[:5]}); a mask folder holds one binary mask per file. "
                "Give a multi-label map as a file, not in a folder."
            )
        name = file_stem(file.name)
        segment = by_name.get(name.lower())
        if segment is None:
            unnamed.append(file.name)
            next_value += 1
            segment = Segment(label_value=next_value, name=name, color=default_color(next_value))
        packer = packer or _mask_packer(geometry.shape)
        packer.add(segment, arrays[0] != 0)
    if geometry is None or packer is None:
        raise LabelFileError(f"Every mask in {folder} is empty; there is nothing to export.")
    if table is not None and unnamed:
        shown = ", ".join(unnamed[:5])
        logger.warning("%s: masks %s are not in the label table; they get label values after it.", folder, shown)
    return Segmentation(geometry=geometry, layers=packer.layers())


def pack_masks(masks: Iterable[tuple[Segment, np.ndarray]]) -> list[Layer]:
    """Put boolean masks into as few non-overlapping label layers as possible (first fit, in order).

    Each layer's segments come out in label-value order (:class:`~DICOMLabelmapSegLib.model.LayerPacker`).
    """
    packer: LayerPacker | None = None
    for segment, mask in masks:
        packer = packer or _mask_packer(mask.shape)
        packer.add(segment, mask)
    return packer.layers() if packer is not None else []


def _mask_packer(shape: Sequence[int]) -> LayerPacker:
    """A layer packer for masks of ``shape`` that refuses more voxels than :data:`MAX_VOXELS` in all."""
    return LayerPacker(shape, lambda count: check_size((count, *shape), Path("masks")))


def file_stem(name: str) -> str:
    for suffix in MASK_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name
