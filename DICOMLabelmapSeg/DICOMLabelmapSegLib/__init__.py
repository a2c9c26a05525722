"""DICOMLabelmapSegLib: lossless DICOM LABELMAP Segmentation (SOP Class 1.2.840.10008.5.1.4.1.1.66.7).

The pure core (no Slicer, VTK or Qt): :mod:`.model`, :mod:`.syntax`, :mod:`.errors`,
:mod:`.color`, :mod:`.terminology`, :mod:`.writer`, :mod:`.reader`.
Adapters above it: :mod:`.mrml` (Slicer MRML, imported only inside Slicer or slicer-core),
:mod:`.fileio` and :mod:`.cli` (files and command line).
"""

import logging

from .dicom.syntax import TransferSyntax
from .errors import (
    CorruptPixelDataError,
    GeometryMismatchError,
    ImplausibleSizeError,
    InvalidDicomFileError,
    InvalidSegmentationError,
    LabelmapSegError,
    MissingCodecError,
    OverlappingSegmentsError,
    SourceImageError,
    TooManyLabelsError,
    UndescribedLabelError,
    UnsupportedSegmentationError,
)
from .model import (
    DEFAULT_TERMINOLOGY,
    Code,
    Geometry,
    Layer,
    ReferencedSeries,
    Segment,
    SegmentAlgorithmType,
    Segmentation,
    SegmentationType,
    SeriesInfo,
    Terminology,
    differences,
)

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "DEFAULT_TERMINOLOGY",
    "Code",
    "CorruptPixelDataError",
    "Geometry",
    "GeometryMismatchError",
    "ImplausibleSizeError",
    "InvalidDicomFileError",
    "InvalidSegmentationError",
    "LabelmapSegError",
    "Layer",
    "MissingCodecError",
    "OverlappingSegmentsError",
    "ReferencedSeries",
    "Segment",
    "SegmentAlgorithmType",
    "Segmentation",
    "SegmentationType",
    "SeriesInfo",
    "SourceImageError",
    "Terminology",
    "TooManyLabelsError",
    "TransferSyntax",
    "UndescribedLabelError",
    "UnsupportedSegmentationError",
    "differences",
]
