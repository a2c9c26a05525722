"""Synthetic but realistic test inputs: small CT series written with pydicom, and model segmentations.

Shared by the test modules of all engineers::

    from synthetic import make_affine, make_ct_series, make_segmentation

    paths = make_ct_series(tmp_path / "ct", shape=(5, 12, 16), affine=make_affine(oblique=True))
    source = read_source_series(paths)                    # headers, sorted
    geometry = geometry_from_source(source)               # same grid as the series
    segmentation = make_segmentation(geometry, layers=[[1, 2, 3], [4]])

The CT files are valid single-frame CT Image Storage instances (real UIDs, patient/study/
series/frame-of-reference/equipment/plane/pixel modules), so they can be loaded by any
DICOM tool and used as highdicom source images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from DICOMLabelmapSegLib.geometry import frame_positions, plane_attributes
from DICOMLabelmapSegLib.model import (
    Code,
    Geometry,
    Layer,
    Segment,
    Segmentation,
    Terminology,
    label_dtype,
)
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

DEFAULT_SHAPE = (5, 12, 16)


def make_affine(
    spacing: Sequence[float] = (2.5, 0.8, 0.7),
    origin: Sequence[float] = (-30.0, -40.0, 20.0),
    oblique: bool = False,
    flip_slices: bool = False,
) -> np.ndarray:
    """A 4x4 ``(k, j, i) -> LPS`` affine.

    Parameters
    ----------
    spacing: Sequence[float]
        Slice, row and column spacing in mm.
    origin: Sequence[float]
        LPS position of voxel (0, 0, 0).
    oblique: bool
        Rotate the axial grid by 20 degrees about one axis and 10 about another (not axis-aligned).
    flip_slices: bool
        Make the slice step point against the slice normal (slices stored inferior to superior reversed).
    """
    directions = np.eye(3)  # columns: slice normal (S... here +z), row step (+y), column step (+x)
    directions = directions[:, [2, 1, 0]]  # slice along z, rows along y, columns along x
    if oblique:
        a, b = np.radians(20.0), np.radians(10.0)
        rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
        rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
        directions = rz @ rx @ directions
    if flip_slices:
        directions[:, 0] *= -1
    affine = np.eye(4)
    affine[:3, :3] = directions * np.asarray(spacing, dtype=np.float64)[None, :]
    affine[:3, 3] = origin
    return affine


def make_ct_series(
    directory: str | Path,
    shape: Sequence[int] = DEFAULT_SHAPE,
    affine: np.ndarray | None = None,
    *,
    frame_of_reference_uid: str | None = None,
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    series_number: int = 1,
    series_description: str = "Synthetic CT",
    patient_id: str = "SYN001",
    patient_name: str = "Synthetic^Patient",
    blank: Sequence[str] = (),
    shuffle: bool = True,
) -> list[Path]:
    """Write a single-frame CT series ``shape = (slices, rows, columns)`` into ``directory``.

    Parameters
    ----------
    directory: str | Path
        Created if needed; files are named ``CT<k>.dcm`` (k = slice index along the affine).
    affine: numpy.ndarray | None
        Index ``(k, j, i)`` -> LPS affine (default: :func:`make_affine`). Rows/columns
        must be orthogonal (DICOM planes); the slice step may be any non-coplanar vector.
    blank: Sequence[str]
        Keywords (e.g. ``"SOPInstanceUID"``) written as empty values, to imitate
        over-aggressive de-identification.
    shuffle: bool
        Name files in a shuffled order so readers must sort by position.

    Returns
    -------
    list[Path]
        The files, in slice order k = 0..n-1.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    affine = make_affine() if affine is None else np.asarray(affine, dtype=np.float64)
    slices, rows, columns = (int(n) for n in shape)
    orientation, pixel_spacing = plane_attributes(affine)
    positions = frame_positions(affine, slices)
    study_instance_uid = study_instance_uid or generate_uid()
    series_instance_uid = series_instance_uid or generate_uid()
    frame_of_reference_uid = frame_of_reference_uid or generate_uid()
    slice_spacing = float(np.linalg.norm(affine[:3, 0]))
    names = np.random.default_rng(slices * 1000 + rows).permutation(slices) if shuffle else np.arange(slices)
    paths = []
    for k in range(slices):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        sop_instance_uid = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = sop_instance_uid
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_instance_uid
        ds.StudyDate = "20240101"
        ds.SeriesDate = "20240101"
        ds.StudyTime = "120000"
        ds.AccessionNumber = "ACC001"
        ds.Modality = "CT"
        ds.Manufacturer = "Synthetic"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "Synthetic study"
        ds.SeriesDescription = series_description
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.SliceThickness = f"{slice_spacing:.6g}"
        ds.KVP = "120"
        ds.PatientPosition = "HFS"
        ds.Laterality = ""
        ds.StudyInstanceUID = study_instance_uid
        ds.SeriesInstanceUID = series_instance_uid
        ds.StudyID = "1"
        ds.SeriesNumber = series_number
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [f"{v:.10g}" for v in positions[k]]
        ds.ImageOrientationPatient = [f"{v:.10g}" for v in orientation]
        ds.FrameOfReferenceUID = frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = rows
        ds.Columns = columns
        ds.PixelSpacing = [f"{v:.10g}" for v in pixel_spacing]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        pixels = (np.arange(rows * columns, dtype=np.int16).reshape(rows, columns) * 3 + 40 * k).astype(np.int16)
        ds.PixelData = pixels.tobytes()
        for keyword in blank:
            setattr(ds, keyword, "")
            if keyword == "SOPInstanceUID":
                ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()  # file meta must stay valid
        path = directory / f"CT{int(names[k]):04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


#: A few codes for segments (category, type) that differ from Slicer's Tissue default.
SAMPLE_TERMINOLOGIES = (
    Terminology(Code("123037004", "SCT", "Anatomical Structure"), Code("10200004", "SCT", "Liver")),
    Terminology(
        Code("123037004", "SCT", "Anatomical Structure"),
        Code("64033007", "SCT", "Kidney"),
        type_modifier=Code("7771000", "SCT", "Left"),
        region=Code("818981001", "SCT", "Abdomen"),
    ),
    Terminology(
        Code("49755003", "SCT", "Morphologically Altered Structure"),
        Code("108369006", "SCT", "Neoplasm"),
        region=Code("39607008", "SCT", "Lung"),
        region_modifier=Code("24028007", "SCT", "Right"),
    ),
    Terminology(Code("85756007", "SCT", "Tissue"), Code("85756007", "SCT", "Tissue")),
)


def make_segment(label_value: int, index: int = 0) -> Segment:
    """A fully described segment: name, distinct color, terminology (some with modifiers)."""
    rng = np.random.default_rng(label_value)
    return Segment(
        label_value=label_value,
        name=f"segment {label_value}",
        color=tuple(int(c) for c in rng.integers(0, 256, 3)),
        terminology=SAMPLE_TERMINOLOGIES[index % len(SAMPLE_TERMINOLOGIES)],
        description=f"synthetic segment with label {label_value}",
    )


def make_segmentation(
    geometry: Geometry | None = None,
    layers: Sequence[Sequence[int]] = ((1, 2, 3),),
    *,
    empty: Sequence[int] = (),
    seed: int = 0,
    dtype: np.dtype | type | None = None,
) -> Segmentation:
    """A segmentation with one layer per entry of ``layers`` (each a list of label values).

    Every label value gets a described segment (see :func:`make_segment`); every label
    not in ``empty`` occurs in its layer's voxels (random blobs plus one guaranteed voxel),
    labels in ``empty`` are described but absent. The dtype is uint8 unless a label
    exceeds 255 (or ``dtype`` is given). Default geometry: :data:`DEFAULT_SHAPE`, :func:`make_affine`.
    """
    geometry = geometry or Geometry(DEFAULT_SHAPE, make_affine(), generate_uid())
    rng = np.random.default_rng(seed)
    model_layers = []
    index = 0
    for label_values in layers:
        values = [int(v) for v in label_values]
        layer_dtype = np.dtype(dtype) if dtype is not None else label_dtype(max(values, default=1))
        labels = np.zeros(geometry.shape, dtype=layer_dtype)
        present = [v for v in values if v not in set(empty)]
        if present:
            choice = rng.integers(0, len(present) + 1, size=geometry.shape)  # 0 = background
            lookup = np.array([0, *present], dtype=layer_dtype)
            labels = lookup[choice]
            flat = labels.reshape(-1)
            for position, value in zip(rng.choice(flat.size, size=len(present), replace=False), present):
                flat[position] = value
            labels = flat.reshape(geometry.shape)
        segments = []
        for value in values:
            segments.append(make_segment(value, index))
            index += 1
        model_layers.append(Layer(labels, segments))
    return Segmentation(geometry, model_layers)


def highdicom_labelmap(
    source: Sequence[Dataset],
    labels: np.ndarray,
    segment_numbers: Sequence[int],
    transfer_syntax_uid: str = ExplicitVRLittleEndian,
    **kwargs,
):
    """A LABELMAP SEG made by highdicom directly: an independent writer for reader and validator tests.

    Each segment number gets a MANUAL "Tissue" segment labelled ``segment <number>``; ``kwargs``
    go to :class:`highdicom.seg.Segmentation` (e.g. ``omit_empty_frames=False``).
    """
    import highdicom as hd

    tissue = hd.sr.CodedConcept("85756007", "SCT", "Tissue")
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=f"segment {number}",
            segmented_property_category=tissue,
            segmented_property_type=tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for number in segment_numbers
    ]
    return hd.seg.Segmentation(
        source_images=source,
        pixel_array=labels,
        segmentation_type=hd.seg.SegmentationTypeValues.LABELMAP,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=300,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="highdicom test",
        manufacturer_model_name="highdicom",
        software_versions=hd.__version__,
        device_serial_number="1",
        transfer_syntax_uid=transfer_syntax_uid,
        **kwargs,
    )
