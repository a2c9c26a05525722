"""DICOM defined terms and UIDs the library uses, each once; the values are the DICOM strings.

Loaded when Slicer starts (through :mod:`.model`): standard library only, Python 3.9 grammar.
"""

from __future__ import annotations

import enum

__all__ = ["SEG_SOP_CLASSES", "PhotometricInterpretation", "SegmentAlgorithmType", "SegmentationType", "SopClass"]


class SegmentAlgorithmType(enum.Enum):
    """Defined terms of Segment Algorithm Type (0062,0008)."""

    AUTOMATIC = "AUTOMATIC"
    SEMIAUTOMATIC = "SEMIAUTOMATIC"
    MANUAL = "MANUAL"


class SegmentationType(enum.Enum):
    """Defined terms of Segmentation Type (0062,0001)."""

    BINARY = "BINARY"
    FRACTIONAL = "FRACTIONAL"
    LABELMAP = "LABELMAP"


class PhotometricInterpretation(str, enum.Enum):
    """Photometric Interpretation (0028,0004) values a SEG may have (PALETTE COLOR: LABELMAP only)."""

    MONOCHROME2 = "MONOCHROME2"
    PALETTE_COLOR = "PALETTE COLOR"

    def __str__(self) -> str:
        return str(self.value)


class SopClass(str, enum.Enum):
    """SOP Class UIDs of segmentations; members compare equal to (and format as) the UID string."""

    SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
    LABELMAP_SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"

    def __str__(self) -> str:
        return str(self.value)


#: Every SEG SOP Class this library reads.
SEG_SOP_CLASSES = (SopClass.LABELMAP_SEGMENTATION_STORAGE.value, SopClass.SEGMENTATION_STORAGE.value)
