"""Known consumers of DICOM SEG files and what they misread or refuse.

Facts observed with the named versions (tests in Testing/test_cornerstone.py and
Testing/test_interop.py assert those that a tool here can show). :func:`consumer_issues`
tells what a given SEG instance meets; :func:`warn_at_export` turns the issues that make a
major consumer *misread* a file into :class:`CompatibilityWarning` warnings, one line each,
naming the consumer and the alternative. Label values are never changed to please a consumer.
"""

from __future__ import annotations

import enum
import warnings
from dataclasses import dataclass

from pydicom.dataset import Dataset

from ..enums import SopClass

LABELMAP_SEGMENTATION_STORAGE = SopClass.LABELMAP_SEGMENTATION_STORAGE.value

_DCMQI_READS = {
    "1.2.840.10008.1.2",  # implicit VR little endian
    "1.2.840.10008.1.2.1",  # explicit VR little endian
    "1.2.840.10008.1.2.2",  # explicit VR big endian
    "1.2.840.10008.1.2.1.99",  # deflated (DCMTK inflates the whole dataset)
    "1.2.840.10008.1.2.5",  # RLE lossless
}
_DEFLATED = "1.2.840.10008.1.2.1.99"


class CompatibilityWarning(UserWarning):
    """The file written is valid DICOM that a major consumer misreads (filter it with the warnings module)."""


class Effect(enum.Enum):
    """What a consumer does with the file."""

    MISREADS = "misreads"  # opens it and shows wrong data
    REFUSES = "refuses"  # fails with an error


@dataclass(frozen=True)
class ConsumerIssue:
    """One consumer's trouble with one file."""

    consumer: str
    effect: Effect
    reason: str
    alternative: str

    def line(self) -> str:
        """One line for people: consumer, effect, why, and what to do instead."""
        return f"{self.consumer} {self.effect.value} this file: {self.reason}; {self.alternative}"

    def to_dict(self) -> dict[str, str]:
        return {
            "consumer": self.consumer,
            "effect": self.effect.value,
            "reason": self.reason,
            "alternative": self.alternative,
        }


CORNERSTONE = "cornerstone3D/OHIF (@cornerstonejs/adapters <= 5.14)"
HIGHDICOM = "highdicom 0.28"
DCMQI = "dcmqi 1.5.7"
GDCM = "GDCM/SimpleITK"
DCIODVFY = "dciodvfy"
PYDICOM_SEG = "pydicom-seg"
ORTHANC_DIMSE = "Orthanc 1.10 C-STORE"


def _transfer_syntax(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    return str(meta.get("TransferSyntaxUID", "") if meta is not None else "") or "1.2.840.10008.1.2.1"


def _max_segment_number(ds: Dataset) -> int:
    element = ds.get_item(0x00620002)  # Segment Sequence; raw bytes (the writer's) are read without replacing them
    if element is None:
        return 0
    from pydicom.dataelem import RawDataElement, convert_raw_data_element

    if isinstance(element, RawDataElement):
        element = convert_raw_data_element(element, encoding=ds._character_set, ds=ds)
    numbers = [int(item.SegmentNumber) for item in element.value or () if item.get("SegmentNumber")]
    return max(numbers, default=0)


def misreading_issues(ds: Dataset) -> list[ConsumerIssue]:
    """Issues of ``ds`` that make a major consumer show wrong data (the ones warned about at export)."""
    if str(ds.get("SOPClassUID", "")) != LABELMAP_SEGMENTATION_STORAGE:
        return []
    issues = []
    bits = int(ds.get("BitsAllocated", 8) or 8)
    if bits == 16 and _max_segment_number(ds) > 255:
        issues.append(
            ConsumerIssue(
                CORNERSTONE,
                Effect.MISREADS,
                "it keeps labels in 8 bits, so 16-bit label values wrap modulo 256 (256 is lost, 257 shows as 1)",
                "keep label values of each layer at most 255 (more layers) for OHIF users",
            )
        )
        issues.append(
            ConsumerIssue(
                HIGHDICOM,
                Effect.MISREADS,
                "per-segment masks of segment numbers above 255 come back empty (its combined label map is right)",
                "read it with get_volume(combine_segments=True) or keep label values at most 255",
            )
        )
    if str(ds.get("PhotometricInterpretation", "")).strip().upper() == "PALETTE COLOR":
        issues.append(
            ConsumerIssue(
                CORNERSTONE,
                Effect.MISREADS,
                "its per-frame path turns PALETTE COLOR frames into RGB before reading labels: all segments are lost",
                "export without the palette color table (MONOCHROME2) for OHIF users",
            )
        )
    return issues


def consumer_issues(ds: Dataset) -> list[ConsumerIssue]:
    """Every known consumer issue of one SEG instance: misreads first, then refusals."""
    issues = misreading_issues(ds)
    labelmap = str(ds.get("SOPClassUID", "")) == LABELMAP_SEGMENTATION_STORAGE
    syntax = _transfer_syntax(ds)
    if labelmap:
        issues.append(
            ConsumerIssue(
                GDCM,
                Effect.REFUSES,
                "it does not know Label Map Segmentation Storage",
                "convert with 'dicom-labelmap-seg import' to NIfTI or .seg.nrrd",
            )
        )
        issues.append(
            ConsumerIssue(
                PYDICOM_SEG,
                Effect.REFUSES,
                "it knows only Segmentation Storage (BINARY/FRACTIONAL)",
                "use highdicom or DICOMLabelmapSeg to read it",
            )
        )
        issues.append(
            ConsumerIssue(
                ORTHANC_DIMSE,
                Effect.REFUSES,
                "its C-STORE SCP does not accept the LABELMAP SOP class",
                "send it with STOW-RS (DICOMweb) or Orthanc's REST API",
            )
        )
    if syntax not in _DCMQI_READS:
        issues.append(
            ConsumerIssue(
                DCMQI,
                Effect.REFUSES,
                f"it decodes only uncompressed and RLE pixel data, not {_syntax_name(syntax)}",
                "export with --syntax rle or explicit for dcmqi users",
            )
        )
    if syntax == _DEFLATED:
        issues.append(
            ConsumerIssue(
                DCIODVFY,
                Effect.REFUSES,
                "it cannot read deflated files",
                "validate an uncompressed copy (--syntax explicit)",
            )
        )
    return issues


def _syntax_name(uid: str) -> str:
    import pydicom.uid

    name = pydicom.uid.UID(uid).name
    return name if name and name != uid else uid


def warn_at_export(ds: Dataset) -> list[ConsumerIssue]:
    """Issue one :class:`CompatibilityWarning` per misreading consumer of a dataset about to be written."""
    issues = misreading_issues(ds)
    for issue in issues:
        warnings.warn(f"Instance {ds.get('InstanceNumber', '?')}: {issue.line()}.", CompatibilityWarning, stacklevel=3)
    return issues
