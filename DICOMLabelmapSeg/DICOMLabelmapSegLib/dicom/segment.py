"""Model segments and codes <-> DICOM Segment Sequence items (Segment Description Macro).

Where things live in a Segment Sequence (0062,0002) item (PS3.3 C.8.20.2, Segment
Description Macro):

* Segmented Property Category Code Sequence (0062,0003): one item, the category.
* Segmented Property Type Code Sequence (0062,000F): one item, the type; the
  **Segmented Property Type Modifier Code Sequence (0062,0011)** is nested *inside* that item.
* Anatomic Region Sequence (0008,2218): one item, the region; the **Anatomic Region
  Modifier Sequence (0008,2220)** is nested *inside* that item.
* Segment Label (0062,0005) is the segment name, Segment Description (0062,0006) its
  free-text description; Recommended Display CIELab Value (0062,000D) its color.

highdicom's :class:`highdicom.seg.SegmentDescription` builds most of this but has no
parameters for the two modifiers; :func:`add_type_modifier` and :func:`add_anatomic_region`
add them. The reverse, :func:`segment_from_description`, reads items written by any tool
(highdicom, dcmqi, ...), tolerating missing optional parts.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset

from ..errors import InvalidDicomFileError, InvalidSegmentationError
from ..model import UNSPECIFIED_CODE, Code, Segment, SegmentAlgorithmType, Terminology
from .color import dicom_lab_to_rgb, rgb_to_dicom_lab

if TYPE_CHECKING:  # highdicom is imported where a Segment Sequence is written: reading stays light
    import highdicom as hd

    from .framegroups import RawItem

logger = logging.getLogger(__name__)

#: Written as Segment Algorithm Name / Algorithm Version when the standard requires a value the model lacks.
UNKNOWN = "unknown"

_LO_MAX = 64  # Long String
_ST_MAX = 1024  # Short Text
_SH_MAX = 16  # Short String
_UC_MAX = 1024  # Long Code Value (UC is unlimited; codes longer than this are not codes)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
#: Characters no code string (SH, UC, UR) may hold: every control character (ESC too: we write ISO_IR 192).
_CODE_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\\]")


def long_string(value: str, what: str) -> str:
    """``value`` made a valid LO (Long String): no backslash or control characters, at most 64 characters.

    Changes are logged as warnings naming ``what``.
    """
    text = str(value).replace("\\", "/").replace("\n", " ").replace("\r", " ").replace("\t", " ")
    cleaned = _CONTROL.sub("", text)
    if len(cleaned) > _LO_MAX:
        cleaned = cleaned[:_LO_MAX]
    if cleaned != value:
        logger.warning(
            "%s %s was stored as '%s' (DICOM LO: max 64 characters, no backslash or control characters).",
            what,
            ascii(value)[:80],
            cleaned,
        )
    return cleaned


def short_text(value: str, what: str) -> str:
    """``value`` made a valid ST (Short Text): at most 1024 characters, no control characters but CR/LF."""
    cleaned = _CONTROL.sub("", str(value))[:_ST_MAX]
    if cleaned != value:
        logger.warning("%s was shortened or cleaned to fit DICOM Short Text (max 1024 characters).", what)
    return cleaned


def check_code(code: Code) -> None:
    """Refuse a code whose value, scheme designator or scheme version does not fit its VR.

    Coding Scheme Designator and Coding Scheme Version are SH (at most 16 characters); the
    code value is SH, or Long Code Value (UC) / URN Code Value (UR) when longer. None may
    contain a control character or a backslash. These identify the concept, so they are
    never changed: the export is refused. (Code meanings are cleaned with a warning.)

    Raises
    ------
    InvalidSegmentationError
        Naming the code and the offending field.
    """
    fields = (
        ("Code Value", code.value, _UC_MAX),
        ("Coding Scheme Designator", code.scheme_designator, _SH_MAX),
        ("Coding Scheme Version", code.scheme_version, _SH_MAX),
    )
    for name, value, limit in fields:
        if value is None and name == "Coding Scheme Version":
            continue
        text = str(value)
        problem = None
        if not text.strip():
            problem = "is empty"
        elif _CODE_FORBIDDEN.search(text):
            problem = "contains a control character (e.g. a line break) or a backslash"
        elif len(text) > limit:
            problem = f"has {len(text)} characters; DICOM allows at most {limit}"
        if problem:
            shown = text if len(text) <= 40 else text[:37] + "..."
            raise InvalidSegmentationError(
                f"The {name} {shown!r} of code '{_printable(code.meaning)}' {problem}; correct the code in the "
                "label table or terminology (nothing was written)."
            )


def _printable(text: str, limit: int = 40) -> str:
    cleaned = _CODE_FORBIDDEN.sub("?", str(text))
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


def coded_concept(code: Code) -> hd.sr.CodedConcept:
    """The highdicom CodedConcept (a pydicom Dataset code item) of a model Code.

    Code values longer than 16 characters go to Long Code Value or URN Code Value;
    Code Meaning is cut to 64 characters and cleaned of control characters if needed (with a
    warning). A value, scheme designator or version that does not fit its VR is refused
    (:func:`check_code`).
    """
    import highdicom as hd

    check_code(code)
    meaning = long_string(code.meaning, "Code meaning") or code.value
    return hd.sr.CodedConcept(code.value, code.scheme_designator, meaning, code.scheme_version)


def code_from_item(item: Dataset | RawItem) -> Code:
    """The model Code of a code sequence item (Code Value, Long Code Value or URN Code Value).

    Raises InvalidDicomFileError if the item has no code value or no coding scheme.
    """
    value = item.get("CodeValue") or item.get("LongCodeValue") or item.get("URNCodeValue")
    scheme = item.get("CodingSchemeDesignator")
    if not value or not scheme:
        raise InvalidDicomFileError(
            "A code sequence item lacks Code Value or Coding Scheme Designator; the file's terminology is invalid."
        )
    version = item.get("CodingSchemeVersion")
    return Code(str(value), str(scheme), str(item.get("CodeMeaning", "") or value), str(version) if version else None)


def _first_code(item: Dataset | RawItem, keyword: str) -> Code | None:
    sequence = item.get(keyword)
    if not sequence:
        return None
    try:
        return code_from_item(sequence[0])
    except InvalidDicomFileError:
        logger.warning("Ignoring an invalid %s item.", keyword)
        return None


def add_type_modifier(description: Dataset, modifier: Code | None) -> None:
    """Nest Segmented Property Type Modifier Code Sequence (0062,0011) in the type item."""
    if modifier is None:
        return
    description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
        coded_concept(modifier)
    ]


def add_anatomic_region(description: Dataset, region: Code | None, modifier: Code | None = None) -> None:
    """Set Anatomic Region Sequence (0008,2218) with the modifier (0008,2220) nested in its item.

    A modifier without a region cannot be stored (the standard nests it in the region item);
    it is dropped with a warning.
    """
    if region is None:
        if modifier is not None:
            logger.warning("Anatomic region modifier '%s' dropped: it needs an anatomic region.", modifier.meaning)
        return
    item = coded_concept(region)
    if modifier is not None:
        item.AnatomicRegionModifierSequence = [coded_concept(modifier)]
    description.AnatomicRegionSequence = [item]


def terminology_from_description(item: Dataset | RawItem) -> Terminology:
    """The Terminology of a Segment Sequence item.

    A missing (or invalid) category or type, both Type 1, is not invented: it becomes
    :data:`~DICOMLabelmapSeg.model.UNSPECIFIED_CODE`, with a warning naming the segment.
    """
    category = _first_code(item, "SegmentedPropertyCategoryCodeSequence")
    type_code = _first_code(item, "SegmentedPropertyTypeCodeSequence")
    missing = [name for name, code in (("category", category), ("type", type_code)) if code is None]
    if missing:
        logger.warning(
            "Segment %s '%s' has no Segmented Property %s (required); kept as 'unspecified', not guessed.",
            item.get("SegmentNumber", "?"), str(item.get("SegmentLabel", "") or ""), " or ".join(missing).title(),
        )
    category = category or UNSPECIFIED_CODE
    type_code = type_code or UNSPECIFIED_CODE
    type_modifier = None
    type_items = item.get("SegmentedPropertyTypeCodeSequence")
    if type_items:
        type_item = type_items[0]
        type_modifier = _first_code(type_item, "SegmentedPropertyTypeModifierCodeSequence")
    region = _first_code(item, "AnatomicRegionSequence")
    region_modifier = None
    if region is not None:
        region_modifier = _first_code(item.get("AnatomicRegionSequence")[0], "AnatomicRegionModifierSequence")
    return Terminology(category, type_code, type_modifier, region, region_modifier)


def algorithm_identification(segment: Segment) -> hd.AlgorithmIdentificationSequence | None:
    """Segmentation Algorithm Identification Sequence of a segment, if it has an algorithm family.

    The sequence is Type 3 (omitted without a family: nothing is invented); inside it the
    Algorithm Identification Macro requires name, family and version (Type 1), so a missing
    name or version is written as ``'unknown'``. Segment Algorithm Name (Type 1C) is likewise
    ``'unknown'`` for an AUTOMATIC/SEMIAUTOMATIC segment without a name (see :func:`segment_description`).
    These are the only values the writer fills in.
    """
    import highdicom as hd

    if segment.algorithm_family is None:
        return None
    return hd.AlgorithmIdentificationSequence(
        name=long_string(segment.algorithm_name or UNKNOWN, "Algorithm name"),
        family=coded_concept(segment.algorithm_family),
        version=long_string(segment.algorithm_version or UNKNOWN, "Algorithm version"),
    )


def segment_description(segment: Segment, include_color: bool = True,
                        identifications: dict[tuple, Any] | None = None) -> hd.seg.SegmentDescription:
    """The complete Segment Sequence item of a model segment.

    Parameters
    ----------
    segment: Segment
        The segment; its label value becomes the Segment Number.
    include_color: bool
        Write Recommended Display CIELab Value. Leave it out (``False``) for PALETTE COLOR
        segmentations, where the color is in the palette and the standard forbids both.
    identifications: dict | None
        Shared by the descriptions of one instance: segments of the same algorithm (name,
        version, family) get one identification sequence, built once (nothing changes it later).
    """
    import highdicom as hd

    terminology = segment.terminology
    unstated = [name for name, code in (("category", terminology.category), ("type", terminology.type))
                if code.same_concept(UNSPECIFIED_CODE)]
    if unstated:
        logger.warning(
            "Segment %d '%s': its %s was never stated (read from a file without it); written as the placeholder "
            "%s '%s'. Set the segment's terminology to store what it is.",
            segment.label_value, segment.name, " and ".join(unstated), UNSPECIFIED_CODE.scheme_designator,
            UNSPECIFIED_CODE.value,
        )
    if identifications is None:
        identification = algorithm_identification(segment)
    else:
        key = (segment.algorithm_name, segment.algorithm_version, segment.algorithm_family)
        if key not in identifications:
            identifications[key] = algorithm_identification(segment)
        identification = identifications[key]
    label = long_string(segment.name, "Segment name") or f"Segment {segment.label_value}"
    description = hd.seg.SegmentDescription(
        segment_number=segment.label_value,
        segment_label=label,
        segmented_property_category=coded_concept(terminology.category),
        segmented_property_type=coded_concept(terminology.type),
        # highdicom demands the identification sequence for non-MANUAL; the standard makes it optional.
        algorithm_type=segment.algorithm_type.value if identification is not None else "MANUAL",
        algorithm_identification=identification,
        tracking_uid=segment.tracking_uid,
        tracking_id=segment.tracking_id,
        display_color=hd.color.CIELabColor.from_dicom_value(rgb_to_dicom_lab(segment.color)) if include_color else None,
    )
    description.SegmentAlgorithmType = segment.algorithm_type.value
    if segment.algorithm_type != SegmentAlgorithmType.MANUAL:
        # Segment Algorithm Name is required (1C) for AUTOMATIC and SEMIAUTOMATIC.
        description.SegmentAlgorithmName = long_string(segment.algorithm_name or UNKNOWN, "Algorithm name")
    elif segment.algorithm_name:
        description.SegmentAlgorithmName = long_string(segment.algorithm_name, "Algorithm name")
    elif "SegmentAlgorithmName" in description:
        del description.SegmentAlgorithmName
    if segment.description:
        description.SegmentDescription = short_text(segment.description, "Segment description")
    add_type_modifier(description, terminology.type_modifier)
    add_anatomic_region(description, terminology.region, terminology.region_modifier)
    return description


def segment_from_description(item: Dataset | RawItem, color: tuple[int, int, int] | None = None) -> Segment:
    """The model Segment of a Segment Sequence item written by any tool.

    Parameters
    ----------
    item: pydicom.Dataset | RawItem
        A Segment Sequence item (Segment Number must be 1..65535), parsed by pydicom or read from raw
        bytes (:func:`~.framegroups.raw_segment_items`): both give the same Segment.
    color: tuple[int, int, int] | None
        RGB color to use (e.g. from a palette color LUT); by default the item's
        Recommended Display CIELab Value, or the model's default color if it has none.
    """
    number = item.get("SegmentNumber")
    if number is None or not 1 <= int(number) <= 65535:
        raise InvalidDicomFileError(
            f"A Segment Sequence item has Segment Number {number!r}; segment numbers must be 1-65535."
        )
    number = int(number)
    lab = item.get("RecommendedDisplayCIELabValue") if color is None else None
    if lab is not None:
        if len(lab) == 3 and all(0 <= int(v) <= 65535 for v in lab):
            color = dicom_lab_to_rgb([int(v) for v in lab])
        else:
            logger.warning("Segment %d has an invalid Recommended Display CIELab Value %s; ignored.", number, lab)
    algorithm_type = SegmentAlgorithmType.MANUAL
    try:
        algorithm_type = SegmentAlgorithmType(str(item.get("SegmentAlgorithmType", "MANUAL")).strip().upper())
    except ValueError:
        logger.warning("Segment %d has unknown Segment Algorithm Type %r; read as MANUAL.", number,
                       item.get("SegmentAlgorithmType"))
    algorithm_name = item.get("SegmentAlgorithmName") or None
    algorithm_version = None
    algorithm_family = None
    identification = item.get("SegmentationAlgorithmIdentificationSequence")
    if identification:
        algorithm_version = identification[0].get("AlgorithmVersion") or None
        algorithm_family = _first_code(identification[0], "AlgorithmFamilyCodeSequence")
        algorithm_name = algorithm_name or identification[0].get("AlgorithmName") or None
    tracking_id = item.get("TrackingID") or None
    tracking_uid = item.get("TrackingUID") or None
    if (tracking_id is None) != (tracking_uid is None):
        logger.warning("Segment %d has only one of Tracking ID and Tracking UID; both ignored.", number)
        tracking_id = tracking_uid = None
    kwargs = {} if color is None else {"color": (int(color[0]), int(color[1]), int(color[2]))}
    return Segment(
        label_value=number,
        name=str(item.get("SegmentLabel", "") or ""),
        terminology=terminology_from_description(item),
        algorithm_type=algorithm_type,
        algorithm_name=str(algorithm_name) if algorithm_name else None,
        algorithm_version=str(algorithm_version) if algorithm_version else None,
        algorithm_family=algorithm_family,
        description=str(item.get("SegmentDescription")) if item.get("SegmentDescription") else None,
        tracking_id=str(tracking_id) if tracking_id else None,
        tracking_uid=str(tracking_uid) if tracking_uid else None,
        **kwargs,
    )
