"""Exceptions raised by the DICOMLabelmapSeg library.

Every error says what is wrong and what the user can do about it. All derive
from :class:`LabelmapSegError` so that callers (the CLI, the Slicer plugin) can
catch one class and show ``str(error)`` to the user.
"""

from __future__ import annotations


class LabelmapSegError(Exception):
    """Base class of all errors raised deliberately by this library."""


class InvalidSegmentationError(LabelmapSegError, ValueError):
    """The segmentation model is inconsistent (e.g. overlap in a layer, undescribed labels)."""


class OverlappingSegmentsError(InvalidSegmentationError):
    """Two segments of one layer claim the same voxel."""


class TooManyLabelsError(InvalidSegmentationError):
    """A label value does not fit in 16 bits (1..65535)."""


class UndescribedLabelError(InvalidSegmentationError):
    """Pixels carry a label value that no segment describes."""


class GeometryMismatchError(LabelmapSegError, ValueError):
    """The segmentation does not lie in the referenced source series' space."""


class SourceImageError(LabelmapSegError, ValueError):
    """The referenced source images cannot be referenced (e.g. blank UIDs, mixed series)."""


class MissingCodecError(LabelmapSegError, ImportError):
    """A package needed to encode or decode a transfer syntax is not installed."""


class InvalidDicomFileError(LabelmapSegError, ValueError):
    """A file is not DICOM, is truncated, or lacks mandatory attributes."""


class UnsupportedSegmentationError(LabelmapSegError, ValueError):
    """A valid DICOM object that this library does not read (other SOP class, tiled slide, ...)."""


class CorruptPixelDataError(InvalidDicomFileError):
    """Pixel data cannot be decoded or does not match the header."""


class ImplausibleSizeError(InvalidDicomFileError):
    """A header claims a size beyond the sanity bound; rejected before allocating."""


class LossyPixelDataError(UnsupportedSegmentationError):
    """Label or binary pixel data in a lossy transfer syntax (or marked Lossy Image Compression 01)."""


class MissingDependencyError(LabelmapSegError, ImportError):
    """An optional Python package a feature needs is not installed; the message names the pip extra."""

    #: The pip extra that installs the package (``files``, ``pacs``...).
    extra: str = ""
