"""Slicer's "TerminologyEntry" segment tag <-> :class:`~.model.Terminology` (pure Python).

3D Slicer stores what a segment is as one string in the segment tag ``TerminologyEntry``
(and in ``SegmentN_Tags`` of ``.seg.nrrd`` files). It has seven ``~``-separated fields::

    context~category~type~typeModifier~regionContext~region~regionModifier

where each code is ``CodingSchemeDesignator^CodeValue^CodeMeaning`` and an absent code is
``^^``. Real example (slicerio's ``Segmentation.seg.nrrd``, segment "right lung")::

    Segmentation category and type - 3D Slicer General Anatomy list~SCT^123037004^Anatomical Structure~
    SCT^39607008^Lung~SCT^24028007^Right~Anatomic codes - DICOM master list~^^~^^

(one line in the file) gives ``Terminology(category=Code("123037004", "SCT", "Anatomical Structure"),
type=Code("39607008", "SCT", "Lung"), type_modifier=Code("24028007", "SCT", "Right"),
context_name="Segmentation category and type - 3D Slicer General Anatomy list",
region_context_name="Anatomic codes - DICOM master list")``.

Note the order inside a code: the *string* is scheme, value, meaning; the 17-argument
``vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry`` overload takes value,
scheme, meaning. :func:`format_terminology_entry` produces exactly what Slicer's own
serializer writes (tested against slicer-core).

Parsing is tolerant (strict when encoding, tolerant when decoding): a trailing ``|`` (tag
list separator), extra trailing fields, missing trailing fields, surrounding blanks and a
missing leading context name are accepted. Codes without a code value count as absent
(some writers emit ``SCT^^``). An entry without a category and type cannot be
represented in DICOM and parses to ``None``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ..errors import LabelmapSegError
from ..model import DEFAULT_TERMINOLOGY, Code, Segment, SegmentAlgorithmType, Terminology

__all__ = [
    "DEFAULT_CONTEXT_NAME",
    "DEFAULT_REGION_CONTEXT_NAME",
    "SEGMENT_TAG_NAMES",
    "TERMINOLOGY_ENTRY_TAG",
    "format_code",
    "format_terminology_entry",
    "parse_code",
    "parse_terminology_entry",
    "segment_fields_from_tags",
    "segment_tags",
]

logger = logging.getLogger(__name__)

#: Name of the segment tag that holds the serialized terminology (``vtkSegment.GetTerminologyEntryTagName()``).
TERMINOLOGY_ENTRY_TAG = "TerminologyEntry"

#: Context written when a terminology has no ``context_name`` (Slicer's DICOM master list context).
DEFAULT_CONTEXT_NAME = "Segmentation category and type - DICOM master list"

#: Region context written when a terminology has no ``region_context_name``.
DEFAULT_REGION_CONTEXT_NAME = "Anatomic codes - DICOM master list"

_FIELD_SEPARATOR = "~"
_COMPONENT_SEPARATOR = "^"
#: Characters that would break the entry string or the ``|``-separated tag list of .seg.nrrd files.
_RESERVED = {"~": "-", "^": " ", "|": "/"}
_NUMBER_OF_FIELDS = 7


def parse_code(text: str | None) -> Code | None:
    """Parse ``SCHEME^value^meaning`` into a :class:`Code`; ``None`` if there is no code value.

    Parameters
    ----------
    text: str | None
        One code component of a TerminologyEntry string, e.g. ``"SCT^39607008^Lung"`` or ``"^^"``.

    Returns
    -------
    Code | None
        The code, or ``None`` for an empty code. Extra ``^`` are kept in the meaning.
    """
    if not text:
        return None
    parts = text.split(_COMPONENT_SEPARATOR)
    parts += [""] * (3 - len(parts))
    scheme, value, meaning = parts[0].strip(), parts[1].strip(), _COMPONENT_SEPARATOR.join(parts[2:]).strip()
    if not value:
        return None
    return Code(value=value, scheme_designator=scheme, meaning=meaning)


def format_code(code: Code | None) -> str:
    """Format a :class:`Code` as ``SCHEME^value^meaning`` (``^^`` for ``None``)."""
    if code is None:
        return _COMPONENT_SEPARATOR * 2
    return _COMPONENT_SEPARATOR.join(
        _sanitize(part, "code") for part in (code.scheme_designator, code.value, code.meaning)
    )


def parse_terminology_entry(text: str | None) -> Terminology | None:
    """Parse a Slicer TerminologyEntry string into a :class:`Terminology`.

    Parameters
    ----------
    text: str | None
        The value of the segment's ``TerminologyEntry`` tag.

    Returns
    -------
    Terminology | None
        ``None`` if the string is empty or lacks a category or type (Slicer's "none" selection).
        Context names are kept in ``context_name`` and ``region_context_name`` (``None`` if empty).
    """
    if text is None:
        return None
    text = text.strip().rstrip("|").strip()
    if not text:
        return None
    fields = text.split(_FIELD_SEPARATOR)
    if fields[0].count(_COMPONENT_SEPARATOR) == 2 and len(fields) < _NUMBER_OF_FIELDS:
        # Written without the leading context name: the first field is already the category code.
        fields.insert(0, "")
    if len(fields) > _NUMBER_OF_FIELDS:
        logger.debug("Ignoring %d extra field(s) of terminology entry %r", len(fields) - _NUMBER_OF_FIELDS, text)
    fields = (fields + [""] * _NUMBER_OF_FIELDS)[:_NUMBER_OF_FIELDS]
    context, category, type_, type_modifier, region_context, region, region_modifier = fields
    category_code, type_code = parse_code(category), parse_code(type_)
    if category_code is None or type_code is None:
        logger.debug("Terminology entry %r has no category or type; treated as absent", text)
        return None
    region_code = parse_code(region)
    return Terminology(
        category=category_code,
        type=type_code,
        type_modifier=parse_code(type_modifier),
        region=region_code,
        # Like Slicer, a region modifier only counts when there is a region.
        region_modifier=parse_code(region_modifier) if region_code is not None else None,
        context_name=context.strip() or None,
        region_context_name=region_context.strip() or None,
    )


def format_terminology_entry(terminology: Terminology) -> str:
    """Serialize a :class:`Terminology` exactly as Slicer's ``SerializeTerminologyEntry`` does.

    Parameters
    ----------
    terminology: Terminology
        The codes; missing context names become :data:`DEFAULT_CONTEXT_NAME` and
        :data:`DEFAULT_REGION_CONTEXT_NAME` (the DICOM master lists Slicer ships).

    Returns
    -------
    str
        The seven-field TerminologyEntry string. Reserved characters (``~ ^ |``) inside
        meanings or context names are replaced (``- space /``) and logged, since Slicer's
        format cannot escape them.
    """
    fields = [
        _sanitize(terminology.context_name or DEFAULT_CONTEXT_NAME, "context name"),
        format_code(terminology.category),
        format_code(terminology.type),
        format_code(terminology.type_modifier),
        _sanitize(terminology.region_context_name or DEFAULT_REGION_CONTEXT_NAME, "region context name"),
        format_code(terminology.region),
        format_code(terminology.region_modifier if terminology.region is not None else None),
    ]
    return _FIELD_SEPARATOR.join(fields)


def _sanitize(text: str, what: str) -> str:
    """Replace characters Slicer's terminology string cannot hold."""
    if not any(character in text for character in _RESERVED):
        return text
    cleaned = "".join(_RESERVED.get(character, character) for character in text)
    logger.warning("Terminology %s %r contains '~', '^' or '|'; stored as %r in Slicer", what, text, cleaned)
    return cleaned


# ---------------------------------------------------------------------------------------------------------------
# Segment tags: the model fields Slicer has no field for (shared by the .seg.nrrd reader/writer and the MRML bridge)

#: Segment tags holding DICOM segment attributes that Slicer has no field for (the first two are the
#: names Slicer's own DICOM SEG plugin uses).
TAG_ALGORITHM_TYPE = "DICOM.SegmentAlgorithmType"
TAG_ALGORITHM_NAME = "DICOM.SegmentAlgorithmName"
TAG_ALGORITHM_VERSION = "DICOM.SegmentAlgorithmVersion"
TAG_ALGORITHM_FAMILY = "DICOM.SegmentAlgorithmFamily"
TAG_DESCRIPTION = "DICOM.SegmentDescription"
TAG_TRACKING_ID = "DICOM.TrackingID"
TAG_TRACKING_UID = "DICOM.TrackingUID"

#: Every tag :func:`segment_tags` may write, in the order it writes them.
SEGMENT_TAG_NAMES = (
    TERMINOLOGY_ENTRY_TAG,
    TAG_ALGORITHM_TYPE,
    TAG_ALGORITHM_NAME,
    TAG_ALGORITHM_VERSION,
    TAG_ALGORITHM_FAMILY,
    TAG_DESCRIPTION,
    TAG_TRACKING_ID,
    TAG_TRACKING_UID,
)


def segment_tags(segment: Segment) -> dict[str, str]:
    """The Slicer segment tags that carry ``segment``'s terminology and DICOM attributes (absent fields omitted)."""
    values = {
        TERMINOLOGY_ENTRY_TAG: format_terminology_entry(segment.terminology),
        TAG_ALGORITHM_TYPE: segment.algorithm_type.value,
        TAG_ALGORITHM_NAME: segment.algorithm_name,
        TAG_ALGORITHM_VERSION: segment.algorithm_version,
        TAG_ALGORITHM_FAMILY: format_code(segment.algorithm_family) if segment.algorithm_family else None,
        TAG_DESCRIPTION: segment.description,
        TAG_TRACKING_ID: segment.tracking_id,
        TAG_TRACKING_UID: segment.tracking_uid,
    }
    return {tag: value for tag, value in values.items() if value is not None}


def segment_fields_from_tags(tags: Mapping[str, str | None], where: str) -> dict[str, Any]:
    """Keyword arguments of :class:`~.model.Segment` read from Slicer segment tags (tolerant).

    Blank tags count as absent. An unreadable terminology becomes the default (Tissue), an unknown
    algorithm type MANUAL, a tracking ID without UID (or the reverse) is dropped; each with a
    warning naming ``where`` (e.g. "file.seg.nrrd: segment 'Liver'").
    """

    def tag(name: str) -> str | None:
        value = tags.get(name)
        return value if value and value.strip() else None

    try:
        terminology = parse_terminology_entry(tag(TERMINOLOGY_ENTRY_TAG))
    except (LabelmapSegError, ValueError, IndexError) as error:
        logger.warning("%s has an unreadable terminology (%s); using Tissue.", where, error)
        terminology = None
    algorithm_type_text = tag(TAG_ALGORITHM_TYPE)
    try:
        algorithm_type = SegmentAlgorithmType((algorithm_type_text or "MANUAL").strip().upper())
    except ValueError:
        logger.warning("%s has an unknown algorithm type %r; using MANUAL.", where, algorithm_type_text)
        algorithm_type = SegmentAlgorithmType.MANUAL
    tracking_id, tracking_uid = tag(TAG_TRACKING_ID), tag(TAG_TRACKING_UID)
    if (tracking_id is None) != (tracking_uid is None):
        logger.warning("%s has a tracking ID or UID without the other; both ignored.", where)
        tracking_id = tracking_uid = None
    return {
        "terminology": terminology or DEFAULT_TERMINOLOGY,
        "algorithm_type": algorithm_type,
        "algorithm_name": tag(TAG_ALGORITHM_NAME),
        "algorithm_version": tag(TAG_ALGORITHM_VERSION),
        "algorithm_family": parse_code(tag(TAG_ALGORITHM_FAMILY)),
        "description": tag(TAG_DESCRIPTION),
        "tracking_id": tracking_id,
        "tracking_uid": tracking_uid,
    }
