"""Segmentation files <-> the model: Slicer ``.seg.nrrd``, NIfTI and NRRD label maps.

No Slicer or VTK here: NRRD is read and written by this module (UTF-8 headers, bounded
decompression), NIfTI through ``nibabel``.

Formats
-------
``.seg.nrrd`` (3D Slicer segmentation)
    One label volume per layer: 3D for one layer, 4D ``list domain domain domain`` for several
    (Slicer's layout). Each segment is described by ``Segment<N>_ID/Name/Color/LabelValue/
    Layer/Extent/Tags`` header fields; the terminology is the ``TerminologyEntry`` tag. Segment
    fields the model has beyond Slicer's (algorithm, description, tracking) are stored as the
    tags ``DICOM.SegmentAlgorithmType`` etc. Read in any ``space`` (LPS, RAS, LAS); written in LPS.
NIfTI (``.nii``, ``.nii.gz``) and plain NRRD label maps
    3D: one layer; 4D: one layer per volume along the 4th axis. Meaning of the labels comes from
    a label table (:mod:`.labeltable`); without one, segments are named ``Segment_<label>``.
    Written NIfTI: one file (3D, or 4D for several layers), ``intent_code`` NIFTI_INTENT_LABEL,
    qform = sform (code 1, scanner), plus a JSON sidecar label table ``<name>.json`` next to it
    (``labels.nii.gz`` -> ``labels.json``) that keeps names, colors, layers and terminology.
    Reading a NIfTI/NRRD label map picks that sidecar up automatically when it is one of ours.

Geometry: the model's affine maps ``(k, j, i)`` (slice, row, column) to LPS. NRRD's first axis
and NIfTI's first array axis are ``i`` (fastest), so the model affine's columns are the file's
axis directions in reverse order; NIfTI affines are RAS and are converted with diag(-1, -1, 1).
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import logging
import os
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..atomic import AtomicFiles, write_atomically
from ..dicom.grid import check_bytes
from ..errors import GeometryMismatchError, ImplausibleSizeError, LabelmapSegError, TooManyLabelsError
from ..geometry import affine_from_ijk_to_ras, ijk_to_ras
from ..inputs import open_regular, parse_json, read_bounded, require_regular_file
from ..limits import MAX_VOXELS
from ..model import (
    MAX_LABEL_VALUE,
    Geometry,
    Layer,
    LayerPacker,
    Segment,
    Segmentation,
    label_dtype,
    present_labels,
    segment_id,
)
from .labeltable import (
    IMAGE_DIGEST_KEY,
    LABEL_TABLE_FORMAT,
    MAX_TABLE_BYTES,
    LabelFileError,
    LabelTable,
    default_color,
    default_segment,
    label_table_bytes,
    parse_label_table,
    read_label_table,
)
from .slicerterm import segment_fields_from_tags, segment_tags

logger = logging.getLogger(__name__)

__all__ = [
    "LabelFileError",
    "MAX_VOXELS",
    "pack_masks",
    "read_labelmap",
    "read_mask_folder",
    "read_seg_nrrd",
    "read_segmentation_file",
    "sidecar_path",
    "write_nifti",
    "write_seg_nrrd",
    "write_segmentation_file",
]

#: Largest NRRD header accepted (bytes).
MAX_HEADER_BYTES = 16 * 1024 * 1024
#: Set to 1 to let NRRD headers name detached data outside their own folder (absolute paths, '..').
ALLOW_EXTERNAL_DATA_ENV = "DICOMLABELMAPSEG_ALLOW_EXTERNAL_DATA"

SEG_NRRD_SUFFIX = ".seg.nrrd"
NIFTI_SUFFIXES = (".nii.gz", ".nii")
NRRD_SUFFIXES = (".nrrd", ".nhdr")


_LPS_FROM_SPACE = {
    "left-posterior-superior": (1.0, 1.0, 1.0),
    "lps": (1.0, 1.0, 1.0),
    "right-anterior-superior": (-1.0, -1.0, 1.0),
    "ras": (-1.0, -1.0, 1.0),
    "left-anterior-superior": (1.0, -1.0, 1.0),
    "las": (1.0, -1.0, 1.0),
}

_NRRD_TYPES = {
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
_DTYPE_FROM_NRRD = {name: dtype for dtype, names in _NRRD_TYPES.items() for name in names}


# =========================================================================== dispatch


def read_segmentation_file(
    path: str | os.PathLike[str], labels: LabelTable | str | os.PathLike[str] | None = None
) -> Segmentation:
    """Read a ``.seg.nrrd``, NRRD or NIfTI file into a :class:`Segmentation`.

    Parameters
    ----------
    path
        The file. A ``.nrrd`` whose header has ``Segment<N>_`` fields is read as a Slicer
        segmentation whatever its name. A folder is read with :func:`read_mask_folder`.
    labels
        Label table (object or JSON path) for plain label maps and mask folders; ignored for
        ``.seg.nrrd``.
    """
    path = Path(path)
    if not path.exists():
        raise LabelFileError(f"{path} does not exist.")
    if path.is_dir():
        return read_mask_folder(path, labels)
    require_regular_file(path, "Segmentation file", LabelFileError)
    name = path.name.lower()
    if name.endswith(NRRD_SUFFIXES):
        header, _ = _read_nrrd_header_file(path)
        if _segment_fields(header):
            if labels is not None:
                logger.warning("%s describes its own segments; the label table is ignored.", path)
            return read_seg_nrrd(path)
        return read_labelmap(path, labels)
    if name.endswith(NIFTI_SUFFIXES):
        return read_labelmap(path, labels)
    raise LabelFileError(
        f"{path.name}: unknown file type; give a Slicer segmentation (.seg.nrrd) or a label map (.nrrd, .nii, .nii.gz)."
    )


def write_segmentation_file(segmentation: Segmentation, path: str | os.PathLike[str]) -> list[Path]:
    """Write ``segmentation`` as ``.seg.nrrd`` or NIfTI (+ sidecar), chosen by the file name."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(SEG_NRRD_SUFFIX):
        return [write_seg_nrrd(segmentation, path)]
    if name.endswith(NIFTI_SUFFIXES):
        return write_nifti(segmentation, path)
    raise LabelFileError(
        f"Cannot tell the output format from '{path.name}': name it <name>.seg.nrrd (3D Slicer segmentation) "
        "or <name>.nii.gz (NIfTI label map with a JSON label table)."
    )


# =========================================================================== .seg.nrrd


def read_seg_nrrd(path: str | os.PathLike[str]) -> Segmentation:
    """Read a 3D Slicer ``.seg.nrrd`` file (3D, or 4D with one volume per layer)."""
    path = Path(path)
    header, data = _read_nrrd(path)
    volumes, affine = _nrrd_volumes(header, data, path)
    fields = _segment_fields(header)
    layer_segments: list[list[Segment]] = [[] for _ in volumes]
    for index in sorted(fields):
        segment_fields = fields[index]
        layer = _int_field(segment_fields, "Layer", index if len(volumes) > 1 else 0, path)
        if not 0 <= layer < len(volumes):
            raise LabelFileError(
                f"{path.name}: segment {index} is in layer {layer} but the file has {len(volumes)} layer(s)."
            )
        layer_segments[layer].append(_segment_from_fields(segment_fields, index, path))
    layers = [
        Layer(labels=_label_array(volume, path), segments=segments)
        for volume, segments in zip(volumes, layer_segments)
        if segments or np.any(volume)
    ]
    if not layers:
        layers = [Layer(labels=_label_array(volumes[0], path), segments=[])]
    segmentation = Segmentation(geometry=Geometry(shape=layers[0].labels.shape, affine=affine), layers=layers)
    _validate(segmentation, path)
    return segmentation


def write_seg_nrrd(segmentation: Segmentation, path: str | os.PathLike[str], compression_level: int = 6) -> Path:
    """Write ``segmentation`` as a 3D Slicer ``.seg.nrrd`` file (atomically; LPS space).

    One layer is written as a 3D volume, several as 4D (``kinds: list domain domain domain``).
    Segment IDs are ``Segment_<label>`` in the first layer and ``Segment_<label>_layer<n>`` (n = 2, 3, ...)
    in others, as :mod:`.mrml` names them.
    """
    path = Path(path)
    segmentation.validate(check_pixels=False)
    geometry = segmentation.geometry
    dtype = _common_dtype(segmentation)
    if len(segmentation.layers) == 1:
        data = np.ascontiguousarray(segmentation.layers[0].labels, dtype=dtype)
    else:
        data = np.stack([layer.labels.astype(dtype, copy=False) for layer in segmentation.layers], axis=-1)
    affine = geometry.affine
    directions = [affine[:3, 2], affine[:3, 1], affine[:3, 0]]  # i, j, k
    slices, rows, columns = geometry.shape
    fields: list[tuple[str, str]] = [
        ("type", _NRRD_TYPES[np.dtype(dtype)][1]),
        ("dimension", str(data.ndim)),
        ("space", "left-posterior-superior"),
        ("sizes", " ".join(str(n) for n in data.shape[::-1])),
        ("space directions", ("none " if data.ndim == 4 else "") + " ".join(_vector(v) for v in directions)),
        ("kinds", ("list " if data.ndim == 4 else "") + "domain domain domain"),
    ]
    if np.dtype(dtype).itemsize > 1:
        fields.append(("endian", "little"))
    fields += [("encoding", "gzip"), ("space origin", _vector(affine[:3, 3]))]
    custom: list[tuple[str, str]] = []
    extent = f"0 {columns - 1} 0 {rows - 1} 0 {slices - 1}"
    number = 0
    for layer_index, layer in enumerate(segmentation.layers):
        for segment in layer.segments:
            prefix = f"Segment{number}_"
            custom += [
                (prefix + "Color", " ".join(f"{c / 255:.6g}" for c in segment.color)),
                (prefix + "ColorAutoGenerated", "0"),
                (prefix + "Extent", extent),
                (prefix + "ID", segment_id(segment.label_value, layer_index)),
                (prefix + "LabelValue", str(segment.label_value)),
                (prefix + "Layer", str(layer_index)),
                (prefix + "Name", _single_line(segment.name)),
                (prefix + "NameAutoGenerated", "0"),
                (prefix + "Tags", _segment_tags(segment)),
            ]
            number += 1
    ras_matrix = ijk_to_ras(affine)
    reference_geometry = ";".join(_number(v) for v in ras_matrix.ravel()) + ";" + extent.replace(" ", ";") + ";"
    custom += [
        ("Segmentation_ContainedRepresentationNames", "Binary labelmap|"),
        (
            "Segmentation_ConversionParameters",
            f"Reference image geometry|{reference_geometry}|Image geometry description string determining the "
            "geometry of the labelmap that is created in course of conversion.&",
        ),
        ("Segmentation_MasterRepresentation", "Binary labelmap"),
        ("Segmentation_ReferenceImageExtentOffset", "0 0 0"),
    ]
    header_text = "NRRD0004\n# Complete NRRD file format specification at:\n# http://teem.sourceforge.net/nrrd/format.html\n"
    header_text += "".join(f"{key}: {value}\n" for key, value in fields)
    header_text += "".join(f"{key}:={value}\n" for key, value in custom)
    payload = _gzip(data.astype("<" + np.dtype(dtype).str[1:], copy=False).tobytes(order="C"), compression_level)
    write_atomically({path: [header_text.encode("utf-8"), b"\n", payload]})
    return path


def _segment_from_fields(fields: Mapping[str, str], index: int, path: Path) -> Segment:
    tags = _parse_tags(fields.get("Tags", ""))
    name = fields.get("Name") or fields.get("ID") or f"Segment_{index}"
    try:
        return Segment(
            label_value=_int_field(fields, "LabelValue", 1, path),
            name=name,
            color=_color_field(fields.get("Color"), path),
            **segment_fields_from_tags(tags, f"{path.name}: segment '{name}'"),
        )
    except LabelmapSegError as error:
        raise LabelFileError(f"{path.name}: segment {index} ('{name}'): {error}") from None
    except ValueError as error:
        raise LabelFileError(f"{path.name}: segment {index} ('{name}') has an invalid field: {error}") from None


def _segment_tags(segment: Segment) -> str:
    # Slicer splits tags at '|' (no escaping) and ends the list with '|'.
    return "".join(f"{key}:{_tag_value(value)}|" for key, value in segment_tags(segment).items())


def _parse_tags(text: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in text.split("|"):
        if ":" in item:
            key, value = item.split(":", 1)
            tags[key.strip()] = value
    return tags


def _tag_value(value: str) -> str:
    """A tag value Slicer can store: one line, no '|' (replaced by '/', as Slicer cannot escape it)."""
    cleaned = " ".join(value.splitlines()).replace("|", "/")
    if cleaned != value:
        logger.warning("Segment tag value %r contains '|' or line breaks; stored as %r.", value, cleaned)
    return cleaned


def _segment_fields(header: Mapping[str, str]) -> dict[int, dict[str, str]]:
    fields: dict[int, dict[str, str]] = {}
    for key, value in header.items():
        match = re.fullmatch(r"Segment(\d+)_(\w+)", key)
        if match:
            fields.setdefault(int(match.group(1)), {})[match.group(2)] = value
    return fields


def _int_field(fields: Mapping[str, str], name: str, default: int, path: Path) -> int:
    if name not in fields or fields[name].strip() == "":
        return default
    try:
        return int(fields[name].strip())
    except ValueError:
        raise LabelFileError(f"{path.name}: segment field {name} '{fields[name]}' is not an integer.") from None


def _color_field(text: str | None, path: Path) -> tuple[int, int, int]:
    if not text:
        return (128, 174, 128)
    try:
        values = [float(v) for v in text.split()]
    except ValueError:
        values = []
    if len(values) != 3 or not all(0.0 <= v <= 1.0 for v in values):
        raise LabelFileError(f"{path.name}: segment color '{text}' is not three numbers from 0 to 1.")
    return tuple(round(v * 255) for v in values)  # type: ignore[return-value]


# =========================================================================== plain label maps


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
    arrays, affine = _read_label_volumes(path)
    table = _resolve_table(path, labels)
    layers = _layers_from_table(arrays, table, path)  # describes every label present
    segmentation = Segmentation(geometry=Geometry(shape=arrays[0].shape, affine=affine), layers=layers)
    _validate(segmentation, path, check_pixels=False)
    return segmentation


def _read_label_volumes(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """The label volumes ``(k, j, i)`` (one per layer) and the model affine of a NIfTI/NRRD file."""
    if path.name.lower().endswith(NIFTI_SUFFIXES):
        volumes, affine = _read_nifti(path)
    else:
        header, data = _read_nrrd(path)
        volumes, affine = _nrrd_volumes(header, data, path)
    return [_label_array(volume, path) for volume in volumes], affine


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


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open_regular(path, "Label map", LabelFileError) as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_pair(path: Path, sidecar: Path, expected: object) -> None:
    """Refuse a sidecar written for another version of the label map (a pair not replaced together)."""
    if not isinstance(expected, str):
        return  # tables of other tools, or written before the digest was recorded
    if _file_digest(path) != expected:
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
        p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith((*NIFTI_SUFFIXES, ".nrrd"))
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
        arrays, affine = _read_label_volumes(file)
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
        name = _case_stem(file.name)
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
    return LayerPacker(shape, lambda count: _check_size((count, *shape), Path("masks")))


def _case_stem(name: str) -> str:
    for suffix in (*NIFTI_SUFFIXES, ".nrrd"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def write_nifti(segmentation: Segmentation, path: str | os.PathLike[str], sidecar: bool = True) -> list[Path]:
    """Write the label volumes as one NIfTI file (3D, or 4D with one volume per layer) + label table.

    Returns the paths written: the NIfTI file and, with ``sidecar``, ``<name>.json``.
    """
    import nibabel as nib

    path = Path(path)
    segmentation.validate(check_pixels=False)
    dtype = _common_dtype(segmentation)
    volumes = [layer.labels.astype(dtype, copy=False).T for layer in segmentation.layers]  # (i, j, k)
    data = volumes[0] if len(volumes) == 1 else np.stack(volumes, axis=-1)
    affine = ijk_to_ras(segmentation.geometry.affine)
    image = nib.Nifti1Image(data, affine)
    image.header.set_data_dtype(dtype)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm")
    image.header.set_intent("label")
    compressed = path.name.lower().endswith(".nii.gz")
    with AtomicFiles() as files:
        temporary = files.temporary(path)
        with open(temporary, "wb") as handle:
            if compressed:  # as nibabel's own .nii.gz writer: level 1, no time stamp
                with gzip.GzipFile(filename="", mode="wb", fileobj=handle, compresslevel=1, mtime=0) as stream:
                    image.to_file_map({"image": nib.FileHolder(fileobj=stream)})
            else:
                image.to_file_map({"image": nib.FileHolder(fileobj=handle)})
        written = [path]
        if sidecar:
            # the table records the digest of its image: a reader can tell a table left beside another image
            written.append(sidecar_path(path))
            layers = [layer.segments for layer in segmentation.layers]
            files.write_bytes(written[-1], label_table_bytes(layers, image_sha256=_file_digest(temporary)))
    return written


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """The label table next to a label map: ``x.nii.gz`` / ``x.nii`` / ``x.nrrd`` -> ``x.json``."""
    path = Path(path)
    name = path.name
    for suffix in (*NIFTI_SUFFIXES, SEG_NRRD_SUFFIX, *NRRD_SUFFIXES):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return path.with_name(name + ".json")


def _read_nifti(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    import nibabel as nib

    try:
        image = nib.load(str(path))
        shape = tuple(int(n) for n in image.shape)
    except FileNotFoundError:
        raise LabelFileError(f"{path} does not exist.") from None
    except Exception as error:  # nibabel raises many types for bad headers
        raise LabelFileError(f"{path.name} is not a readable NIfTI file: {error}") from None
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) not in (3, 4):
        raise LabelFileError(
            f"{path.name} has shape {image.shape}; a label map must be 3D, or 4D with one volume per layer."
        )
    stored = image.header.get_data_dtype().itemsize
    scaled = any(np.isfinite(v) and v not in (0, 1) for v in image.header.get_slope_inter() if v is not None)
    _check_size(shape, path, 8 if scaled else stored)  # scaled data is read as float64
    try:
        data = np.asanyarray(image.dataobj).reshape(shape, order="F")
    except MemoryError:
        raise ImplausibleSizeError(f"{path.name}: not enough memory to read the voxel data.") from None
    except Exception as error:
        raise LabelFileError(f"{path.name}: the voxel data cannot be read (truncated or corrupt?): {error}") from None
    header = image.header
    if int(header.get("sform_code", 0)) == 0 and int(header.get("qform_code", 0)) == 0:
        logger.warning(
            "%s has no orientation (qform and sform codes are 0); its voxel spacing is used with axes along "
            "R, A, S, which is probably not where the image was. Fix the file's header if the export looks wrong.",
            path.name,
        )
    volumes = [data.T] if data.ndim == 3 else [data[..., index].T for index in range(shape[3])]
    affine = affine_from_ijk_to_ras(image.affine)
    return volumes, affine


# =========================================================================== NRRD reading


def _read_nrrd_header_file(path: Path) -> tuple[dict[str, str], int]:
    try:
        with open_regular(path, "NRRD file", LabelFileError) as handle:
            return _read_nrrd_header(handle, path)
    except OSError as error:
        raise LabelFileError(f"Cannot read {path}: {error.strerror or error}") from None


def _read_nrrd_header(handle: BinaryIO, path: Path) -> tuple[dict[str, str], int]:
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


def _read_nrrd(path: Path) -> tuple[dict[str, str], np.ndarray]:
    """Header and data of a NRRD file; data shaped like the sizes reversed (C order)."""
    try:
        with open_regular(path, "NRRD file", LabelFileError) as handle:
            header, _ = _read_nrrd_header(handle, path)
            sizes = _nrrd_sizes(header, path)
            dtype = _nrrd_dtype(header, path)
            count = _check_size(sizes, path, dtype.itemsize)
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


def _read_nrrd_payload(header: Mapping[str, str], handle: BinaryIO, count: int, itemsize: int, path: Path) -> Any:
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
        raw = handle.read(nbytes)
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


def _bounded_decompress(decompressor: Any, handle: BinaryIO, limit: int, path: Path) -> bytearray:
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


def _check_size(shape: Sequence[int], path: Path, itemsize: int = 1) -> int:
    """The voxel count of ``shape``, refused beyond MAX_VOXELS or beyond the memory reading may take."""
    count = 1
    for n in shape:
        count *= int(n)
    if count > MAX_VOXELS:
        raise ImplausibleSizeError(
            f"{path.name} declares {count} voxels (shape {tuple(shape)}), more than the {MAX_VOXELS} this tool "
            "accepts; the header is corrupt or the volume is too large."
        )
    # the voxels as stored, and the label copy made of them
    check_bytes(count * (itemsize + 2), f"{path.name} ({count:,} voxels of {itemsize} byte(s))")
    return count


def _nrrd_volumes(header: Mapping[str, str], data: np.ndarray, path: Path) -> tuple[list[np.ndarray], np.ndarray]:
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


# =========================================================================== shared helpers


def _label_array(volume: np.ndarray, path: Path) -> np.ndarray:
    """A C-contiguous uint8/uint16 copy/view of an integer-valued label volume."""
    if volume.dtype.kind == "f":
        if not np.all(np.isfinite(volume)) or not np.array_equal(volume, np.round(volume)):
            raise LabelFileError(f"{path.name} holds non-integer values; a label map must hold whole numbers.")
    elif volume.dtype.kind not in "iub":
        raise LabelFileError(f"{path.name}: voxel type {volume.dtype} is not a label map type.")
    if volume.size == 0:
        return np.ascontiguousarray(volume, dtype=np.uint8)
    low, high = volume.min(), volume.max()
    if low < 0:
        raise LabelFileError(f"{path.name} holds negative labels (minimum {low}); labels must be 0-{MAX_LABEL_VALUE}.")
    if high > MAX_LABEL_VALUE:
        raise TooManyLabelsError(f"{path.name} holds label {high}; label values must be at most {MAX_LABEL_VALUE}.")
    dtype = label_dtype(int(high))
    if volume.dtype == dtype and volume.flags.c_contiguous:
        return volume
    return np.ascontiguousarray(volume, dtype=dtype)


def _common_dtype(segmentation: Segmentation) -> np.dtype:
    highest = max(
        [segment.label_value for segment in segmentation.segments]
        + [int(layer.labels.max()) if layer.labels.size else 0 for layer in segmentation.layers]
    )
    return label_dtype(highest)


def _validate(segmentation: Segmentation, path: Path, check_pixels: bool = True) -> None:
    try:
        segmentation.validate(check_pixels=check_pixels)
    except LabelmapSegError as error:
        raise type(error)(f"{path.name}: {error}") from None


def _single_line(text: str) -> str:
    return " ".join(text.splitlines())


def _number(value: float) -> str:
    value = float(value)
    return "0" if value == 0 else repr(value)


def _vector(values: Sequence[float]) -> str:
    return "(" + ",".join(_number(v) for v in values) + ")"


def _gzip(data: bytes, level: int) -> bytes:
    compressor = zlib.compressobj(level, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    return compressor.compress(data) + compressor.flush()
