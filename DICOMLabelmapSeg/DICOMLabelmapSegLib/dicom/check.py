"""Conformance checker for DICOM SEG instances (LABELMAP, BINARY, FRACTIONAL), separate from reading.

:func:`check_dataset` checks one instance against the rules of the Segmentation IODs
(PS3.3 A.51, Sup 243 for LABELMAP) that dciodvfy does not check, and returns
:class:`Finding` objects, each with a :class:`Rule`, a :class:`Severity` and a one-line
explanation. Nothing is repaired and nothing raises for a non-conforming file: a file that
cannot be checked at all yields one ``ERROR`` finding. What known consumers make of the file
is a separate question, answered by :mod:`.compat`.

The rules:

* ``pixel-format``: Samples per Pixel, Photometric Interpretation, Bits Allocated/Stored,
  High Bit and Pixel Representation allowed for the segmentation type.
* ``lossy-compression``: a lossy (or possibly lossy) transfer syntax, or Lossy Image
  Compression 01, on a LABELMAP or BINARY segmentation (labels are not intensities).
* ``undescribed-pixel-value``: every pixel value present (other than 0 and the Pixel Padding
  Value) is a described Segment Number; every Referenced Segment Number is described.
* ``padding-value``: Pixel Padding Value fits the pixel type and is not a segment's number.
* ``background-segment``: segment 0 only in LABELMAP, and then it means Background.
* ``segment-numbers``: unique, 1..65535 (0 for LABELMAP background); consecutive from 1 for BINARY/FRACTIONAL.
* ``required-code``: Type 1 attributes of each Segment Sequence item (label, algorithm type,
  category and type codes).
* ``code-vr``: code values, schemes, versions and meanings within their VRs (length, no control characters).
* ``frame-positions``: every frame has Image Position (Patient); one orientation; frames
  coplanar (a stack along the normal); LABELMAP frames at distinct positions.
* ``frame-spacing``: positions regular, or their gaps explained as omitted (empty) slices.
* ``dimension-indices``: Dimension Index Values have one value per dimension and agree with the positions.
* ``palette-lut``: a PALETTE COLOR file has a complete lookup table covering every segment number.
* ``cielab-with-palette``: Recommended Display CIELab Value is not allowed with PALETTE COLOR.
* ``pixel-data``: the pixel data can be decoded (and FRACTIONAL values are within Maximum Fractional Value).
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from ..enums import SopClass
from ..errors import LabelmapSegError
from ..model import SegmentationType
from . import framegroups, pixels, syntax

LABELMAP_SEGMENTATION_STORAGE = SopClass.LABELMAP_SEGMENTATION_STORAGE.value
SEGMENTATION_STORAGE = SopClass.SEGMENTATION_STORAGE.value
_IMAGE_POSITION_TAG = 0x00200032

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: (keyword, VR, maximum length) of the attributes of a code item (PS3.3 Table 8.8-1).
_CODE_ATTRIBUTES = (
    ("CodeValue", "SH", 16),
    ("CodingSchemeDesignator", "SH", 16),
    ("CodingSchemeVersion", "SH", 16),
    ("CodeMeaning", "LO", 64),
    ("LongCodeValue", "UC", None),
    ("URNCodeValue", "UR", None),
)
_SEGMENT_CODE_SEQUENCES = (
    "SegmentedPropertyCategoryCodeSequence",
    "SegmentedPropertyTypeCodeSequence",
    "AnatomicRegionSequence",
)
_NESTED_CODE_SEQUENCES = ("SegmentedPropertyTypeModifierCodeSequence", "AnatomicRegionModifierSequence")


class Severity(enum.Enum):
    """How bad a finding is. ``ERROR``: the file violates the standard; ``WARNING``: legal but
    likely to be misread or a sign of a problem; ``INFO``: worth knowing."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        return {Severity.INFO: 0, Severity.WARNING: 1, Severity.ERROR: 2}[self]


class Rule(enum.Enum):
    """The checked rules (see the module docstring)."""

    READABLE = "readable"
    PIXEL_FORMAT = "pixel-format"
    LOSSY_COMPRESSION = "lossy-compression"
    UNDESCRIBED_PIXEL_VALUE = "undescribed-pixel-value"
    PADDING_VALUE = "padding-value"
    BACKGROUND_SEGMENT = "background-segment"
    SEGMENT_NUMBERS = "segment-numbers"
    REQUIRED_CODE = "required-code"
    CODE_VR = "code-vr"
    FRAME_POSITIONS = "frame-positions"
    FRAME_SPACING = "frame-spacing"
    DIMENSION_INDICES = "dimension-indices"
    PALETTE_LUT = "palette-lut"
    CIELAB_WITH_PALETTE = "cielab-with-palette"
    PIXEL_DATA = "pixel-data"


@dataclass(frozen=True)
class Finding:
    """One result of a check: which rule, how bad, and a one-line explanation."""

    rule: Rule
    severity: Severity
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"rule": self.rule.value, "severity": self.severity.value, "message": self.message}


def worst_severity(findings: Iterable[Finding]) -> Severity | None:
    """The most severe severity among ``findings`` (None if there are none)."""
    worst: Severity | None = None
    for finding in findings:
        if worst is None or finding.severity.rank > worst.rank:
            worst = finding.severity
    return worst


def errors(findings: Iterable[Finding]) -> list[Finding]:
    """The ``ERROR`` findings."""
    return [finding for finding in findings if finding.severity == Severity.ERROR]


#: Environment variable that makes the writer check every dataset it builds (the test suite sets it).
SELF_CHECK_VARIABLE = "DICOMLABELMAPSEG_SELF_CHECK"


def self_check(ds: Dataset) -> None:
    """If ``DICOMLABELMAPSEG_SELF_CHECK=1``, raise RuntimeError when a dataset about to be written has an error.

    The writer calls this on every instance it builds; the header rules run (the pixel rules are
    guaranteed by the model's validation before encoding). An error here is a bug of this library.
    """
    if os.environ.get(SELF_CHECK_VARIABLE, "") != "1":
        return
    found = errors(check_dataset(ds, decode_pixels=False))
    if found:
        raise RuntimeError(
            "DICOMLabelmapSeg built a non-conforming SEG (a bug, please report it): "
            + "; ".join(f"{f.rule.value}: {f.message}" for f in found)
        )


def check_file(path: str | Path, decode_pixels: bool = True) -> list[Finding]:
    """Check one file (see :func:`check_dataset`); an unreadable file gives one ``readable`` error."""
    if not Path(path).is_file():  # a device (/dev/zero) or a FIFO would never end or block
        what = "does not exist" if not Path(path).exists() else "is not a regular file (a device, pipe or socket)"
        return [Finding(Rule.READABLE, Severity.ERROR, f"{what}; give a DICOM SEG file")]
    try:
        ds = pydicom.dcmread(str(path), force=True)
    except Exception as error:  # noqa: BLE001 - any damage means: not checkable
        return [Finding(Rule.READABLE, Severity.ERROR, f"not a readable DICOM file ({_brief(error)})")]
    return check_dataset(ds, decode_pixels=decode_pixels)


def check_dataset(ds: Dataset, decode_pixels: bool = True) -> list[Finding]:
    """Check one SEG instance; ``decode_pixels=False`` skips the rules that need the pixel data."""
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if sop_class not in (LABELMAP_SEGMENTATION_STORAGE, SEGMENTATION_STORAGE):
        name = pydicom.uid.UID(sop_class).name if sop_class else "no SOP Class UID"
        return [Finding(Rule.READABLE, Severity.ERROR, f"not a DICOM Segmentation ({name})")]
    text = str(ds.get("SegmentationType", "") or "").strip().upper()
    try:
        kind = SegmentationType(text)
    except ValueError:
        return [
            Finding(
                Rule.PIXEL_FORMAT, Severity.ERROR, f"Segmentation Type {text!r} is not BINARY, FRACTIONAL or LABELMAP"
            )
        ]
    findings: list[Finding] = []
    if (sop_class == LABELMAP_SEGMENTATION_STORAGE) != (kind == SegmentationType.LABELMAP):
        findings.append(
            Finding(
                Rule.PIXEL_FORMAT,
                Severity.ERROR,
                f"Segmentation Type {kind.value} does not belong "
                "to the SOP class (LABELMAP: Label Map Segmentation Storage, else Segmentation Storage)",
            )
        )
    try:
        findings += _pixel_format(ds, kind)
        findings += _lossy(ds, kind)
        numbers = list(_segment_numbers(ds))
        findings += _segment_items(ds, kind, numbers)
        findings += _padding(ds, kind, numbers)
        findings += _palette(ds, kind, numbers)
        findings += _frames(ds, kind, numbers)
        if decode_pixels:
            findings += _pixel_values(ds, kind, numbers)
    except Exception as error:  # noqa: BLE001 - a damaged header must give a finding, not a traceback
        findings.append(Finding(Rule.READABLE, Severity.ERROR, f"damaged header ({_brief(error)})"))
    return findings


def _brief(error: BaseException) -> str:
    text = " ".join(str(error).split())[:150]
    return text or type(error).__name__


def _int(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    try:
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return None


# ------------------------------------------------------------------------------- pixel format


def _pixel_format(ds: Dataset, kind: SegmentationType) -> list[Finding]:
    found: list[Finding] = []

    def bad(message: str) -> None:
        found.append(Finding(Rule.PIXEL_FORMAT, Severity.ERROR, message))

    bits = _int(ds, "BitsAllocated")
    allowed = {SegmentationType.LABELMAP: (8, 16), SegmentationType.BINARY: (1,), SegmentationType.FRACTIONAL: (8,)}
    if bits not in allowed[kind]:
        bad(f"Bits Allocated {bits} is not allowed for {kind.value} (allowed: {', '.join(map(str, allowed[kind]))})")
    stored, high = _int(ds, "BitsStored"), _int(ds, "HighBit")
    if bits is not None and stored != bits:
        bad(f"Bits Stored {stored} must equal Bits Allocated {bits}")
    if stored is not None and high != stored - 1:
        bad(f"High Bit {high} must be Bits Stored - 1 ({stored - 1})")
    if _int(ds, "PixelRepresentation") != 0:
        bad(f"Pixel Representation {ds.get('PixelRepresentation')!r} must be 0 (unsigned)")
    if _int(ds, "SamplesPerPixel") != 1:
        bad(f"Samples per Pixel {ds.get('SamplesPerPixel')!r} must be 1")
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    photometrics = ("MONOCHROME2", "PALETTE COLOR") if kind == SegmentationType.LABELMAP else ("MONOCHROME2",)
    if photometric not in photometrics:
        bad(
            f"Photometric Interpretation {photometric!r} is not allowed for {kind.value} "
            f"(allowed: {', '.join(photometrics)})"
        )
    if kind == SegmentationType.FRACTIONAL:
        maximum = _int(ds, "MaximumFractionalValue")
        if maximum is None or not 1 <= maximum <= 255:
            bad(f"Maximum Fractional Value {ds.get('MaximumFractionalValue')!r} must be 1-255")
        if str(ds.get("SegmentationFractionalType", "") or "") not in ("PROBABILITY", "OCCUPANCY"):
            bad("Segmentation Fractional Type must be PROBABILITY or OCCUPANCY")
    return found


def _transfer_syntax(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    return str(meta.get("TransferSyntaxUID", "") if meta is not None else "") or "1.2.840.10008.1.2.1"


def _lossy(ds: Dataset, kind: SegmentationType) -> list[Finding]:
    severity = Severity.WARNING if kind == SegmentationType.FRACTIONAL else Severity.ERROR
    what = "fractions" if kind == SegmentationType.FRACTIONAL else "labels"
    found = []
    uid = _transfer_syntax(ds)
    if syntax.may_be_lossy(uid):  # the codec registry's one answer
        found.append(
            Finding(
                Rule.LOSSY_COMPRESSION,
                severity,
                f"transfer syntax {pixels.syntax_name(uid)} "
                f"({uid}) may be lossy: {kind.value} {what} may have changed",
            )
        )
    if str(ds.get("LossyImageCompression", "") or "").strip() == "01":
        found.append(
            Finding(
                Rule.LOSSY_COMPRESSION,
                severity,
                f"Lossy Image Compression is 01: the {kind.value} "
                f"{what} were lossy compressed at some point and may be wrong",
            )
        )
    return found


# ------------------------------------------------------------------------------- segments


def _segment_numbers(ds: Dataset) -> Iterator[int | None]:
    for item in ds.get("SegmentSequence") or ():
        yield _int(item, "SegmentNumber")


def _segment_items(ds: Dataset, kind: SegmentationType, numbers: list[int | None]) -> list[Finding]:
    found: list[Finding] = []
    items = ds.get("SegmentSequence")
    if not items:
        return [Finding(Rule.REQUIRED_CODE, Severity.ERROR, "Segment Sequence is missing or empty")]
    known = [n for n in numbers if n is not None]
    if len(known) != len(numbers):
        found.append(
            Finding(Rule.SEGMENT_NUMBERS, Severity.ERROR, "a Segment Sequence item has no valid Segment Number")
        )
    duplicates = sorted({n for n in known if known.count(n) > 1})
    if duplicates:
        found.append(Finding(Rule.SEGMENT_NUMBERS, Severity.ERROR, f"Segment Numbers {duplicates} are used twice"))
    low = 0 if kind == SegmentationType.LABELMAP else 1
    outside = sorted(n for n in set(known) if not low <= n <= 65535)
    if outside:
        found.append(
            Finding(Rule.SEGMENT_NUMBERS, Severity.ERROR, f"Segment Numbers {outside} are outside {low}-65535")
        )
    if kind != SegmentationType.LABELMAP and known and sorted(known) != list(range(1, len(known) + 1)):
        found.append(
            Finding(
                Rule.SEGMENT_NUMBERS,
                Severity.ERROR,
                f"{kind.value} Segment Numbers must be 1, 2, 3, ... "
                f"in order; found {known[:8]}{' ...' if len(known) > 8 else ''}",
            )
        )
    palette = str(ds.get("PhotometricInterpretation", "") or "").strip().upper() == "PALETTE COLOR"
    with_lab = []
    for item, number in zip(items, numbers):
        where = f"segment {number}"
        for keyword in ("SegmentLabel", "SegmentAlgorithmType"):
            if not item.get(keyword):
                found.append(Finding(Rule.REQUIRED_CODE, Severity.ERROR, f"{where} has no {_spaced(keyword)} (Type 1)"))
        for keyword in _SEGMENT_CODE_SEQUENCES[:2]:
            sequence = item.get(keyword)
            if not sequence:
                found.append(
                    Finding(
                        Rule.REQUIRED_CODE,
                        Severity.ERROR,
                        f"{where} has no {_spaced(keyword)} (Type 1): what the segment is, is not stated",
                    )
                )
            elif len(sequence) != 1:
                found.append(
                    Finding(
                        Rule.REQUIRED_CODE,
                        Severity.ERROR,
                        f"{where}: {_spaced(keyword)} must have exactly one item, has {len(sequence)}",
                    )
                )
        found += _code_findings(item, where)
        label = item.get("SegmentLabel")
        if label and (len(str(label)) > 64 or _CONTROL.search(str(label))):
            found.append(
                Finding(
                    Rule.CODE_VR,
                    Severity.ERROR,
                    f"{where}: Segment Label {_shown(label)} is not a "
                    "valid LO (max 64 characters, no control characters)",
                )
            )
        if item.get("RecommendedDisplayCIELabValue") is not None:
            with_lab.append(number)
        if number == 0:
            found += _background_item(item, kind)
    if palette and with_lab:
        found.append(
            Finding(
                Rule.CIELAB_WITH_PALETTE,
                Severity.ERROR,
                f"segments {with_lab[:8]} have Recommended "
                "Display CIELab Value, which PALETTE COLOR segmentations must not have",
            )
        )
    return found


def _background_item(item: Dataset, kind: SegmentationType) -> list[Finding]:
    if kind != SegmentationType.LABELMAP:
        return [
            Finding(
                Rule.BACKGROUND_SEGMENT, Severity.ERROR, f"segment 0 is described; {kind.value} segments start at 1"
            )
        ]
    sequence = item.get("SegmentedPropertyTypeCodeSequence") or [Dataset()]
    code = (str(sequence[0].get("CodeValue", "")), str(sequence[0].get("CodingSchemeDesignator", "")))
    if code != ("125040", "DCM"):
        return [
            Finding(
                Rule.BACKGROUND_SEGMENT,
                Severity.WARNING,
                f"segment 0 has type {_shown(code)}, not "
                "Background (DCM 125040): pixel value 0 is background in a LABELMAP",
            )
        ]
    return []


def _spaced(keyword: str) -> str:
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", keyword)


def _shown(value: Any) -> str:
    text = repr(str(value) if not isinstance(value, tuple) else value)
    return text if len(text) <= 40 else text[:37] + "..."


def _code_items(item: Dataset) -> Iterator[tuple[str, Dataset]]:
    for keyword in _SEGMENT_CODE_SEQUENCES:
        for code in item.get(keyword) or ():
            yield keyword, code
            for nested in _NESTED_CODE_SEQUENCES:
                for inner in code.get(nested) or ():
                    yield nested, inner
    for identification in item.get("SegmentationAlgorithmIdentificationSequence") or ():
        for code in identification.get("AlgorithmFamilyCodeSequence") or ():
            yield "AlgorithmFamilyCodeSequence", code


def _code_findings(item: Dataset, where: str) -> list[Finding]:
    found = []
    for sequence, code in _code_items(item):
        name = _spaced(sequence).replace(" Code Sequence", "").replace(" Sequence", "")
        values = [code.get(k) for k in ("CodeValue", "LongCodeValue", "URNCodeValue")]
        if sum(1 for v in values if v) != 1 or not code.get("CodingSchemeDesignator") and not code.get("URNCodeValue"):
            found.append(
                Finding(
                    Rule.REQUIRED_CODE,
                    Severity.ERROR,
                    f"{where}: {name} code needs exactly one of Code "
                    "Value, Long Code Value, URN Code Value, and a Coding Scheme Designator",
                )
            )
        if not code.get("CodeMeaning"):
            found.append(Finding(Rule.REQUIRED_CODE, Severity.ERROR, f"{where}: {name} code has no Code Meaning"))
        for keyword, vr, limit in _CODE_ATTRIBUTES:
            value = code.get(keyword)
            if value is None:
                continue
            text = "\\".join(str(v) for v in value) if isinstance(value, MultiValue) else str(value)
            problem = None
            if isinstance(value, MultiValue) and vr != "UR":
                problem = "holds several values (a backslash)"
            elif limit is not None and len(text) > limit:
                problem = f"longer than {limit} characters"
            elif _CONTROL.search(text):
                problem = "contains control characters"
            elif "\\" in text and vr != "UR":
                problem = "contains a backslash"
            elif vr == "SH" and keyword != "CodingSchemeVersion" and text != text.strip():
                problem = "has leading or trailing spaces"
            if problem:
                found.append(
                    Finding(
                        Rule.CODE_VR,
                        Severity.ERROR,
                        f"{where}: {name} {_spaced(keyword)} {_shown(text)} is not a valid {vr}: {problem}",
                    )
                )
    return found


# ------------------------------------------------------------------------------- padding, palette


def _padding(ds: Dataset, kind: SegmentationType, numbers: list[int | None]) -> list[Finding]:
    padding = _int(ds, "PixelPaddingValue")
    if padding is None:
        return []
    if kind != SegmentationType.LABELMAP:
        return [
            Finding(
                Rule.PADDING_VALUE,
                Severity.WARNING,
                f"Pixel Padding Value {padding} in a {kind.value} segmentation has no meaning there",
            )
        ]
    bits = _int(ds, "BitsAllocated") or 16
    if not 0 <= padding < 1 << bits:
        return [
            Finding(
                Rule.PADDING_VALUE,
                Severity.ERROR,
                f"Pixel Padding Value {padding} does not fit {bits}-bit unsigned pixels",
            )
        ]
    if padding != 0 and padding in numbers:
        return [
            Finding(
                Rule.PADDING_VALUE,
                Severity.ERROR,
                f"Pixel Padding Value {padding} is also the number of a "
                "described segment: its pixels are both padding and that segment",
            )
        ]
    if padding != 0 and 0 in numbers:
        return [
            Finding(
                Rule.PADDING_VALUE,
                Severity.WARNING,
                f"Pixel Padding Value {padding} and a described "
                "segment 0: two values mean background; many readers treat only 0 as background",
            )
        ]
    return []


def _palette(ds: Dataset, kind: SegmentationType, numbers: list[int | None]) -> list[Finding]:
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    has_table = "RedPaletteColorLookupTableDescriptor" in ds
    if photometric != "PALETTE COLOR":
        if has_table and kind == SegmentationType.LABELMAP:
            return [
                Finding(
                    Rule.PALETTE_LUT,
                    Severity.WARNING,
                    f"a palette color lookup table with Photometric Interpretation {photometric}: viewers ignore it",
                )
            ]
        return []
    found: list[Finding] = []
    tables = []
    for color in ("Red", "Green", "Blue"):
        descriptor = ds.get(f"{color}PaletteColorLookupTableDescriptor")
        data = ds.get(f"{color}PaletteColorLookupTableData")
        if descriptor is None or data is None or len(descriptor) != 3:
            if f"Segmented{color}PaletteColorLookupTableData" in ds:
                continue  # segmented tables: not expanded here
            found.append(
                Finding(
                    Rule.PALETTE_LUT,
                    Severity.ERROR,
                    f"PALETTE COLOR without a complete {color.lower()} palette table (descriptor and data)",
                )
            )
            continue
        entries, first, bits = (int(v) for v in descriptor)
        entries = entries or 65536
        if bits not in (8, 16) or (len(bytes(data)) < entries * (2 if bits == 16 else 1)):
            found.append(
                Finding(
                    Rule.PALETTE_LUT,
                    Severity.ERROR,
                    f"the {color.lower()} palette table has "
                    f"{len(bytes(data))} bytes for {entries} entries of {bits} bits",
                )
            )
        tables.append((entries, first))
    if len(set(tables)) > 1:
        found.append(
            Finding(
                Rule.PALETTE_LUT,
                Severity.ERROR,
                "the red, green and blue palette tables have different lengths or first mapped values",
            )
        )
    if tables:
        entries, first = tables[0]
        last = first + entries - 1
        uncovered = sorted(n for n in numbers if n is not None and not first <= n <= last)
        if uncovered:
            found.append(
                Finding(
                    Rule.PALETTE_LUT,
                    Severity.ERROR,
                    f"the palette table maps pixel values {first}-{last} but not segments {uncovered[:8]}",
                )
            )
    if not found and len(tables) == 3:
        found += _palette_shift(ds)
    return found


def _palette_shift(ds: Dataset) -> list[Finding]:
    """A palette table one entry off against the segments' own CIELab colors (dcmqi's ``--usePalette``).

    Such a file also carries CIELab values (an error of its own); here the consequence is named:
    viewers show each segment in its neighbour's color.
    """
    from .color import dicom_lab_to_rgb
    from .header import _palette_channel  # the reader's own interpretation of the table

    channels = [_palette_channel(ds, color, "") for color in ("Red", "Green", "Blue")]
    first = channels[0][0]
    table = np.stack([values for _, values in channels], axis=1).astype(int)
    colors = {}
    for item in ds.get("SegmentSequence") or ():
        lab, number = item.get("RecommendedDisplayCIELabValue"), _int(item, "SegmentNumber")
        if lab is not None and len(lab) == 3 and number is not None and number > 0:
            colors[number] = np.array(dicom_lab_to_rgb([int(v) for v in lab]))

    def matches(offset: int) -> int:
        return sum(
            1
            for n, rgb in colors.items()
            if 0 <= n - first - offset < len(table) and np.abs(table[n - first - offset] - rgb).max() <= 3
        )

    if len(colors) < 2 or matches(0) >= matches(1) or matches(1) < 0.8 * len(colors):
        return []
    return [
        Finding(
            Rule.PALETTE_LUT,
            Severity.WARNING,
            "the palette table is shifted by one against the segments' CIELab colors (segment n's color sits at "
            "n-1, as dcmqi --usePalette writes): viewers show each segment in its neighbour's color",
        )
    ]


# ------------------------------------------------------------------------------- frames


def _frame_groups(ds: Dataset) -> tuple[framegroups.FrameGroup, list[framegroups.FrameGroup]]:
    shared_sequence = ds.get("SharedFunctionalGroupsSequence")
    shared = framegroups.group_from_item(shared_sequence[0]) if shared_sequence else framegroups.FrameGroup()
    groups = framegroups.raw_frame_groups(ds)
    if groups is None:
        groups = [framegroups.group_from_item(item) for item in ds.get("PerFrameFunctionalGroupsSequence") or ()]
    return shared, groups


def _frames(ds: Dataset, kind: SegmentationType, numbers: list[int | None]) -> list[Finding]:
    found: list[Finding] = []
    frames = _int(ds, "NumberOfFrames") or 1
    shared, groups = _frame_groups(ds)
    if str(ds.get("DimensionOrganizationType", "") or "").upper() == "TILED_FULL" and not groups:
        return found  # tiles placed by their order (PS3.3 C.7.6.17.3); no per-frame groups
    if len(groups) != frames:
        return [
            Finding(
                Rule.FRAME_POSITIONS,
                Severity.ERROR,
                f"Number of Frames {frames} but {len(groups)} per-frame functional group items",
            )
        ]
    if kind != SegmentationType.LABELMAP:
        referenced = [
            g.referenced_segment_number if g.referenced_segment_number is not None else shared.referenced_segment_number
            for g in groups
        ]
        missing = [i + 1 for i, n in enumerate(referenced) if n is None]
        if missing:
            found.append(
                Finding(
                    Rule.UNDESCRIBED_PIXEL_VALUE,
                    Severity.ERROR,
                    f"frames {missing[:8]} have no Referenced Segment Number",
                )
            )
        undescribed = sorted({n for n in referenced if n is not None} - set(numbers))
        if undescribed:
            found.append(
                Finding(
                    Rule.UNDESCRIBED_PIXEL_VALUE,
                    Severity.ERROR,
                    f"frames reference segments {undescribed[:8]} that the Segment Sequence does not describe",
                )
            )
    else:
        referenced = [None] * frames
    if ds.get("TotalPixelMatrixRows") is not None or "ImageOrientationSlide" in ds:
        return found  # slide microscopy: positions are in the slide coordinate system, not checked here
    positions = [g.image_position if g.image_position is not None else shared.image_position for g in groups]
    frame_orientations = [
        g.image_orientation if g.image_orientation is not None else shared.image_orientation for g in groups
    ]
    orientations = {tuple(round(float(v), 4) for v in o) for o in frame_orientations if o is not None}
    without = [i + 1 for i, p in enumerate(positions) if p is None or len(p) != 3]
    if len(without) == frames and not ds.get("FrameOfReferenceUID"):
        return found  # a segmentation of a projection image (no patient coordinate system)
    if without:
        found.append(
            Finding(
                Rule.FRAME_POSITIONS,
                Severity.ERROR,
                f"{len(without)} of {frames} frames have no Image "
                f"Position (Patient) (first: frame {without[0]}): they cannot be placed",
            )
        )
        return found
    if len(orientations) != 1:
        found.append(
            Finding(
                Rule.FRAME_POSITIONS,
                Severity.ERROR,
                "frames have no or different Image Orientation (Patient): they do not form one volume",
            )
        )
        return found
    orientation = np.array(next(iter(orientations)), dtype=np.float64)
    normal = np.cross(orientation[:3], orientation[3:])
    points = np.array([[float(v) for v in p or ()] for p in positions], dtype=np.float64)
    along = points @ normal
    in_plane = points - np.outer(along, normal)
    offsets = in_plane - in_plane[0]
    shift = float(np.max(np.linalg.norm(offsets, axis=1))) if frames > 1 else 0.0
    if shift > 1e-2:
        # A sheared stack (gantry tilt) moves the same in-plane step per mm along the normal: legal, often misread.
        depth = (along - along[0])[:, None]
        step = np.linalg.lstsq(depth, offsets, rcond=None)[0] if np.any(depth) else np.zeros((1, 3))
        residual = float(np.max(np.linalg.norm(offsets - depth @ step, axis=1)))
        if residual > 1e-2:
            found.append(
                Finding(
                    Rule.FRAME_POSITIONS,
                    Severity.ERROR,
                    f"frame positions are not a stack: frames are shifted in the image plane by up to {residual:.3g} "
                    "mm against the others",
                )
            )
        else:
            found.append(
                Finding(
                    Rule.FRAME_POSITIONS,
                    Severity.WARNING,
                    f"a sheared stack (gantry tilt): positions move {float(np.linalg.norm(step)):.3g} mm in-plane per "
                    "mm along the normal; readers that stack frames along the normal misplace them",
                )
            )
    keys = [(round(a, 3), n) for a, n in zip(along, referenced)]
    if len(set(keys)) != len(keys):
        what = "positions" if kind == SegmentationType.LABELMAP else "positions and segment"
        found.append(
            Finding(
                Rule.FRAME_POSITIONS,
                Severity.ERROR,
                f"{len(keys) - len(set(keys))} frames repeat the "
                f"{what} of another frame: a voxel would have two values",
            )
        )
    found += _spacing(ds, shared, groups, np.unique(np.round(along, 3)))
    found += _dimension_indices(ds, groups, along)
    return found


def _spacing(ds: Dataset, shared: framegroups.FrameGroup, groups: list, distinct: np.ndarray) -> list[Finding]:
    if distinct.size < 3:
        return []
    gaps = np.diff(distinct)
    declared = shared.spacing_between_slices
    if declared is None and groups and groups[0].spacing_between_slices is not None:
        declared = groups[0].spacing_between_slices
    step = abs(float(declared)) if declared not in (None, "") else float(gaps.min())
    if step <= 0:
        return [Finding(Rule.FRAME_SPACING, Severity.ERROR, f"Spacing Between Slices {declared} is not positive")]
    ratios = gaps / step
    tolerance = max(1e-2, 1e-3 * step)
    if np.all(np.abs(gaps - step) <= tolerance):
        return []
    if np.all(np.abs(ratios - np.round(ratios)) * step <= tolerance) and np.all(np.round(ratios) >= 1):
        omitted = int(np.sum(np.round(ratios) - 1))
        return [
            Finding(
                Rule.FRAME_SPACING,
                Severity.INFO,
                f"{omitted} slices without segments are omitted (gaps are multiples of the {step:g} mm slice spacing)",
            )
        ]
    return [
        Finding(
            Rule.FRAME_SPACING,
            Severity.WARNING,
            f"slice gaps from {gaps.min():.4g} to {gaps.max():.4g} mm "
            "are irregular and not explained by Spacing Between Slices: readers may resample or refuse",
        )
    ]


def _dimension_indices(ds: Dataset, groups: list, along: np.ndarray) -> list[Finding]:
    dimensions = ds.get("DimensionIndexSequence") or ()
    pointers = [
        int(item.DimensionIndexPointer) if item.get("DimensionIndexPointer") is not None else None
        for item in dimensions
    ]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or ()
    if not pointers or not per_frame:
        return []
    values = []
    for item in per_frame:
        content = item.get("FrameContentSequence")
        index = content[0].get("DimensionIndexValues") if content else None
        if index is None:
            return [
                Finding(
                    Rule.DIMENSION_INDICES,
                    Severity.ERROR,
                    "a frame has no Dimension Index Values although a Dimension Index Sequence is present",
                )
            ]
        index = [int(v) for v in (index if isinstance(index, (list, MultiValue)) else [index])]
        if len(index) != len(pointers):
            return [
                Finding(
                    Rule.DIMENSION_INDICES,
                    Severity.ERROR,
                    f"Dimension Index Values have {len(index)} values "
                    f"but the Dimension Index Sequence has {len(pointers)} dimensions",
                )
            ]
        values.append(index)
    if _IMAGE_POSITION_TAG not in pointers:
        return []
    column = pointers.index(_IMAGE_POSITION_TAG)
    by_index: dict[int, set[float]] = {}
    within: dict[tuple, set[float]] = {}
    for index, position in zip(values, np.round(along, 3)):
        by_index.setdefault(index[column], set()).add(float(position))
        within.setdefault(tuple(index[:column] + index[column + 1 :]) + (index[column],), set()).add(float(position))
    if any(len(v) > 1 for v in by_index.values()):
        if all(len(v) == 1 for v in within.values()):
            return [
                Finding(
                    Rule.DIMENSION_INDICES,
                    Severity.WARNING,
                    "Image Position index values are numbered "
                    "within each value of the other dimensions (e.g. per segment), not across the instance",
                )
            ]
        return [
            Finding(
                Rule.DIMENSION_INDICES,
                Severity.ERROR,
                "frames with the same Image Position index value have different positions",
            )
        ]
    ordered = [next(iter(by_index[k])) for k in sorted(by_index)]
    steps = np.diff(ordered)
    if len(set(ordered)) != len(ordered) or not (np.all(steps > 0) or np.all(steps < 0)):
        return [
            Finding(
                Rule.DIMENSION_INDICES,
                Severity.ERROR,
                "Image Position index values do not follow the frame positions along the normal (not monotonic)",
            )
        ]
    return []


# ------------------------------------------------------------------------------- pixel values


def _pixel_values(ds: Dataset, kind: SegmentationType, numbers: list[int | None]) -> list[Finding]:
    if "PixelData" not in ds:
        return [Finding(Rule.PIXEL_DATA, Severity.ERROR, "no Pixel Data")]
    rows, columns, bits = _int(ds, "Rows"), _int(ds, "Columns"), _int(ds, "BitsAllocated")
    frames = _int(ds, "NumberOfFrames") or 1
    if not rows or not columns or bits not in (1, 8, 16):
        return []  # reported as pixel-format
    try:
        if kind == SegmentationType.LABELMAP:
            layout = pixels.FrameLayout(rows, columns, bits, frames)
            out = np.empty((frames, rows, columns), dtype=layout.dtype)
            padding = _int(ds, "PixelPaddingValue")
            allowed = {n for n in numbers if n is not None} | {0} | (set() if padding is None else {padding})
            counts = pixels.decode_labelmap_frames(ds, layout, range(frames), out, allow_lossy=True,
                                                   known_through=pixels.allowed_through(allowed))
            present = set(np.flatnonzero(counts).tolist())
        else:
            array = np.asarray(ds.pixel_array)
            present = set(np.unique(array).tolist())
    except (LabelmapSegError, Exception) as error:  # noqa: BLE001 - any decoder failure is a finding
        return [Finding(Rule.PIXEL_DATA, Severity.ERROR, f"pixel data cannot be decoded ({_brief(error)})")]
    if kind == SegmentationType.FRACTIONAL:
        maximum = _int(ds, "MaximumFractionalValue") or 255
        above = sorted(v for v in present if v > maximum)
        if above:
            return [
                Finding(
                    Rule.PIXEL_DATA,
                    Severity.ERROR,
                    f"fractional values up to {above[-1]} exceed Maximum Fractional Value {maximum}",
                )
            ]
        return []
    if kind == SegmentationType.BINARY:
        return []
    padding = _int(ds, "PixelPaddingValue")
    undescribed = sorted(present - {n for n in numbers if n is not None} - {0, padding})
    if undescribed:
        shown = ", ".join(map(str, undescribed[:8])) + (" ..." if len(undescribed) > 8 else "")
        return [
            Finding(
                Rule.UNDESCRIBED_PIXEL_VALUE,
                Severity.ERROR,
                f"pixel values {shown} occur but no segment describes them",
            )
        ]
    return []
