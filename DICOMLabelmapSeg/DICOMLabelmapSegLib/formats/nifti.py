"""NIfTI label maps: reading the volumes (nibabel), writing one file + its JSON label table as one set.

Written: 3D, or 4D with one volume per layer; ``intent_code`` NIFTI_INTENT_LABEL, qform = sform
(code 1, scanner), plus a sidecar label table ``<name>.json`` (``labels.nii.gz`` ->
``labels.json``) that keeps names, colors, layers and terminology and records the image's
SHA-256. NIfTI affines are IJK -> RAS (:func:`~DICOMLabelmapSegLib.geometry.ijk_to_ras`).
"""

from __future__ import annotations

import gzip
import logging
import os
from pathlib import Path

import numpy as np

from ..atomic import AtomicFiles
from ..errors import ImplausibleSizeError
from ..geometry import affine_from_ijk_to_ras, ijk_to_ras
from ..inputs import require_regular_file
from ..model import Segmentation
from ..optional import import_optional
from .labeltable import LabelFileError, label_table_bytes
from .registry import sidecar_path
from .volumes import check_size, common_dtype, file_digest

logger = logging.getLogger(__name__)


def write_nifti(segmentation: Segmentation, path: str | os.PathLike[str], sidecar: bool = True) -> list[Path]:
    """Write the label volumes as one NIfTI file (3D, or 4D with one volume per layer) + label table.

    Returns the paths written: the NIfTI file and, with ``sidecar``, ``<name>.json``.
    """
    nib = import_optional("nibabel", "Writing NIfTI files", "files")

    path = Path(path)
    segmentation.validate(check_pixels=False)
    dtype = common_dtype(segmentation)
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
            files.write_bytes(written[-1], label_table_bytes(layers, image_sha256=file_digest(temporary)))
    return written


def read_nifti_volumes(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """The label volumes ``(k, j, i)`` (one per 4th-axis index) and the model affine of a NIfTI file."""
    nib = import_optional("nibabel", "Reading NIfTI files", "files")

    require_regular_file(path, "NIfTI file", LabelFileError)  # a FIFO or a device would block or never end
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
    check_size(shape, path, 8 if scaled else stored)  # scaled data is read as float64
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
