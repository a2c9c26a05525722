"""Label tables: what each label value of a plain label map means (name, color, terminology).

A label map file (NIfTI, NRRD) holds only numbers; a label table gives them meaning.
:func:`read_label_table` accepts these JSON forms:

* **Class map** (TotalSegmentator's ``class_map``): ``{"1": "spleen", "2": "kidney_right"}``.
* **Label map of objects**: ``{"1": {"name": "spleen", "color": [157, 108, 162],
  "terminology": ...}, ...}``.
* **Segment list** (what :func:`write_label_table` writes, the NIfTI sidecar):
  ``{"segments": [{"label": 1, "layer": 0, "name": ..., "color": ..., "terminology": ...}]}``;
  a top-level JSON list of such objects is accepted too.
* **dcmqi segmentation metadata** (``itkimage2segimage`` input): ``{"segmentAttributes":
  [[{"labelID": 1, "SegmentLabel": ..., "SegmentedPropertyTypeCodeSequence": {...}}]]}``;
  the outer list is the layer (dcmqi's input file) index.

``terminology`` may be an object ``{"category": CODE, "type": CODE, "type_modifier": CODE,
"region": CODE, "region_modifier": CODE}`` or a Slicer ``TerminologyEntry`` string.
A ``CODE`` is ``{"value": "123037004", "scheme_designator": "SCT", "meaning": "Anatomical
Structure"}`` (DICOM keywords ``CodeValue``/``CodingSchemeDesignator``/``CodeMeaning`` work too),
a list ``["SCT", "123037004", "Anatomical Structure"]`` (scheme first, as Slicer writes it) or
the string ``"SCT^123037004^Anatomical Structure"``.

Segment lists describe one segmentation exactly, so their segments are kept even when their
label is absent from the voxels; class maps list a whole label space, so only labels present
in the voxels become segments (see :meth:`LabelTable.keep_absent`).
"""

from __future__ import annotations

import colorsys
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..atomic import write_atomically
from ..errors import LabelmapSegError
from ..inputs import parse_json, read_bounded, require_regular_file
from ..model import (
    DEFAULT_TERMINOLOGY,
    Code,
    Segment,
    SegmentAlgorithmType,
    Terminology,
)
from ..segmentjson import segment_to_json
from .slicerterm import parse_terminology_entry

logger = logging.getLogger(__name__)

#: Value of ``"format"`` in label tables written by this library.
LABEL_TABLE_FORMAT = "dicom-labelmap-seg label table"
LABEL_TABLE_VERSION = 1

#: Largest label table file read (bytes); a table is small, a huge file is a mistake.
MAX_TABLE_BYTES = 64 * 1024 * 1024
#: Key of a sidecar table holding the SHA-256 of the label map it belongs to.
IMAGE_DIGEST_KEY = "image_sha256"

_GOLDEN_RATIO_CONJUGATE = 0.6180339887498949


class LabelFileError(LabelmapSegError, ValueError):
    """A label map file, .seg.nrrd file or label table cannot be read or is inconsistent."""


@dataclass
class LabelTable:
    """Segments described by a table, by ``(layer, label value)``; layer ``None`` = any layer."""

    entries: dict[tuple[int | None, int], Segment] = field(default_factory=dict)
    keep_absent: bool = False

    def lookup(self, label_value: int, layer: int = 0) -> Segment | None:
        """The segment describing ``label_value`` in ``layer`` (exact layer first, then any layer)."""
        return self.entries.get((layer, label_value)) or self.entries.get((None, label_value))

    def layers(self) -> set[int]:
        """Layer indices named explicitly by the table."""
        return {layer for layer, _ in self.entries if layer is not None}

    def __len__(self) -> int:
        return len(self.entries)


def default_color(label_value: int) -> tuple[int, int, int]:
    """A distinct, deterministic color for a label (golden-ratio hue steps, like many viewers)."""
    hue = (int(label_value) * _GOLDEN_RATIO_CONJUGATE) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.65, 0.9)
    return (round(red * 255), round(green * 255), round(blue * 255))


def default_segment(label_value: int, layer: int = 0, multi_layer: bool = False) -> Segment:
    """The segment given to a label no table describes: ``Segment_<label>``, a generated color."""
    name = f"Segment_{label_value}" if not multi_layer else f"Layer{layer}_Segment_{label_value}"
    return Segment(label_value=label_value, name=name, color=default_color(label_value))


# --------------------------------------------------------------------------- reading


def read_label_table(path: str | os.PathLike[str]) -> LabelTable:
    """Read a label table JSON file in any of the forms described in the module docstring.

    Raises
    ------
    LabelFileError
        If the file is missing, not JSON, or an entry cannot be understood.
    """
    path = Path(path)
    size = require_regular_file(path, "Label table", LabelFileError).st_size
    if size > MAX_TABLE_BYTES:
        raise LabelFileError(f"Label table {path} is {size} bytes; a label table should be a small JSON file.")
    data = read_bounded(path, MAX_TABLE_BYTES, "Label table", LabelFileError)
    document = parse_json(data, f"Label table {path}", LabelFileError)
    try:
        return parse_label_table(document)
    except LabelFileError as error:
        raise LabelFileError(f"Label table {path}: {error}") from None


def parse_label_table(document: Any) -> LabelTable:
    """Build a :class:`LabelTable` from a parsed JSON document (see module docstring)."""
    if isinstance(document, list):
        return _table_from_entries(document, keep_absent=True)
    if not isinstance(document, Mapping):
        raise LabelFileError("a label table must be a JSON object or list")
    if "segments" in document:
        return _table_from_entries(document["segments"], keep_absent=True)
    if "segmentAttributes" in document:
        return _table_from_dcmqi(document)
    table = LabelTable(keep_absent=False)
    for key, value in document.items():
        label_value = _label_value(key)
        if isinstance(value, str):
            entry: Mapping[str, Any] = {"name": value}
        elif isinstance(value, Mapping):
            entry = value
        else:
            raise LabelFileError(f"label {key}: expected a name or an object, got {type(value).__name__}")
        table.entries[(_optional_int(entry.get("layer"), "layer"), label_value)] = segment_from_entry(
            entry, label_value
        )
    return table


def _table_from_entries(entries: Any, keep_absent: bool) -> LabelTable:
    if not isinstance(entries, list):
        raise LabelFileError("'segments' must be a list of objects")
    table = LabelTable(keep_absent=keep_absent)
    for position, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise LabelFileError(f"segment #{position + 1} is not an object")
        raw_label = entry.get("label", entry.get("label_value", entry.get("labelValue")))
        if raw_label is None:
            raise LabelFileError(f"segment #{position + 1} has no 'label' (its label value)")
        label_value = _label_value(raw_label)
        layer = _optional_int(entry.get("layer"), "layer")
        key = (0 if layer is None else layer, label_value)
        if key in table.entries:
            raise LabelFileError(f"label {label_value} is described twice in layer {key[0]}")
        table.entries[key] = segment_from_entry(entry, label_value)
    return table


def _table_from_dcmqi(document: Mapping[str, Any]) -> LabelTable:
    layers = document["segmentAttributes"]
    if not isinstance(layers, list) or not all(isinstance(layer, list) for layer in layers):
        raise LabelFileError("'segmentAttributes' must be a list of lists (one list per label file)")
    table = LabelTable(keep_absent=True)
    for layer_index, entries in enumerate(layers):
        for entry in entries:
            if not isinstance(entry, Mapping) or "labelID" not in entry:
                raise LabelFileError("each dcmqi segment attribute object needs a 'labelID'")
            label_value = _label_value(entry["labelID"])
            table.entries[(layer_index, label_value)] = segment_from_entry(entry, label_value)
    return table


#: The keys a label table entry may have (ours, slicerio's and dcmqi's); others are warned about.
ENTRY_KEYS = frozenset(
    {
        "label", "label_value", "labelValue", "labelID", "layer", "name", "SegmentLabel", "segment_label",
        "color", "recommendedDisplayRGBValue", "rgb", "terminology", "algorithm_type", "SegmentAlgorithmType",
        "algorithm_name", "SegmentAlgorithmName", "algorithm_version", "algorithm_family", "description",
        "SegmentDescription", "tracking_id", "TrackingIdentifier", "tracking_uid", "TrackingUniqueIdentifier",
        "SegmentedPropertyCategoryCodeSequence", "SegmentedPropertyTypeCodeSequence",
        "SegmentedPropertyTypeModifierCodeSequence", "AnatomicRegionSequence", "AnatomicRegionModifierSequence",
    }
)  # fmt: skip
#: The keys of a code object.
CODE_KEYS = frozenset(
    {
        "value", "CodeValue", "code_value", "scheme_designator", "CodingSchemeDesignator", "scheme",
        "meaning", "CodeMeaning", "code_meaning", "scheme_version", "CodingSchemeVersion",
    }
)  # fmt: skip
#: The keys of a terminology object.
TERMINOLOGY_KEYS = frozenset(
    {"category", "type", "type_modifier", "region", "region_modifier", "context_name", "region_context_name"}
)


def _warn_unknown_keys(mapping: Mapping[str, Any], known: frozenset[str], where: str) -> None:
    """Warn about keys nothing reads (a misspelt 'nmae' or 'colour' would otherwise be ignored silently)."""
    unknown = sorted(str(key) for key in mapping if key not in known)
    if unknown:
        shown = ", ".join(repr(key)[:40] for key in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        logger.warning("Label table: %s has unknown key(s) %s; they are ignored (misspelt?).", where, shown)


def segment_from_entry(entry: Mapping[str, Any], label_value: int) -> Segment:
    """A :class:`Segment` from one label table entry (our keys, slicerio keys or dcmqi keys)."""
    _warn_unknown_keys(entry, ENTRY_KEYS, f"label {label_value}")
    name = _first(entry, "name", "SegmentLabel", "segment_label")
    if name is None:
        name = f"Segment_{label_value}"
    color = _first(entry, "color", "recommendedDisplayRGBValue", "rgb")
    terminology = _terminology_from_entry_fields(entry)
    algorithm_type = _first(entry, "algorithm_type", "SegmentAlgorithmType")
    try:
        return Segment(
            label_value=label_value,
            name=str(name),
            color=default_color(label_value) if color is None else _color(color),
            terminology=terminology,
            algorithm_type=SegmentAlgorithmType(
                str(algorithm_type).upper() if algorithm_type else SegmentAlgorithmType.MANUAL
            ),
            algorithm_name=_optional_str(_first(entry, "algorithm_name", "SegmentAlgorithmName")),
            algorithm_version=_optional_str(entry.get("algorithm_version")),
            algorithm_family=_optional_code(entry.get("algorithm_family")),
            description=_optional_str(_first(entry, "description", "SegmentDescription")),
            tracking_id=_optional_str(_first(entry, "tracking_id", "TrackingIdentifier")),
            tracking_uid=_optional_str(_first(entry, "tracking_uid", "TrackingUniqueIdentifier")),
        )
    except ValueError as error:  # includes the model's InvalidSegmentationError
        raise LabelFileError(f"label {label_value}: {error}") from None


def _terminology_from_entry_fields(entry: Mapping[str, Any]) -> Terminology:
    value = entry.get("terminology")
    if isinstance(value, str):
        parsed = parse_terminology_entry(value)
        if parsed is None:
            raise LabelFileError(f"terminology '{value}' has no category and type codes")
        return parsed
    if isinstance(value, Mapping):
        _warn_unknown_keys(value, TERMINOLOGY_KEYS, "a terminology")
        fields = {name: value.get(name) for name in ("category", "type", "type_modifier", "region", "region_modifier")}
        context_name = value.get("context_name")
        region_context_name = value.get("region_context_name")
    elif value is None:
        fields = {
            "category": entry.get("SegmentedPropertyCategoryCodeSequence"),
            "type": entry.get("SegmentedPropertyTypeCodeSequence"),
            "type_modifier": entry.get("SegmentedPropertyTypeModifierCodeSequence"),
            "region": entry.get("AnatomicRegionSequence"),
            "region_modifier": entry.get("AnatomicRegionModifierSequence"),
        }
        context_name = region_context_name = None
    else:
        raise LabelFileError("'terminology' must be an object or a Slicer TerminologyEntry string")
    if fields["category"] is None and fields["type"] is None:
        if any(fields[name] is not None for name in ("type_modifier", "region", "region_modifier")):
            raise LabelFileError("terminology gives modifiers or a region but no category and type")
        return DEFAULT_TERMINOLOGY
    if fields["category"] is None or fields["type"] is None:
        raise LabelFileError("terminology needs both 'category' and 'type' codes")
    return Terminology(
        category=_code(fields["category"]),
        type=_code(fields["type"]),
        type_modifier=_optional_code(fields["type_modifier"]),
        region=_optional_code(fields["region"]),
        region_modifier=_optional_code(fields["region_modifier"]),
        context_name=_optional_str(context_name),
        region_context_name=_optional_str(region_context_name),
    )


def _code(value: Any) -> Code:
    if isinstance(value, str):
        parts = value.split("^")
        if len(parts) != 3:
            raise LabelFileError(f"code '{value}' must look like 'SCHEME^VALUE^MEANING'")
        value = parts
    if isinstance(value, (list, tuple)):
        if len(value) != 3 or not all(isinstance(part, str) and part for part in value):
            raise LabelFileError(f"code {value!r} must be [scheme designator, code value, code meaning]")
        return Code(value[1], value[0], value[2])
    if isinstance(value, Mapping):
        _warn_unknown_keys(value, CODE_KEYS, "a code")
        code_value = _first(value, "value", "CodeValue", "code_value")
        scheme = _first(value, "scheme_designator", "CodingSchemeDesignator", "scheme")
        meaning = _first(value, "meaning", "CodeMeaning", "code_meaning")
        version = _first(value, "scheme_version", "CodingSchemeVersion")
        if not (code_value and scheme and meaning):
            raise LabelFileError(f"code {dict(value)!r} needs a value, a scheme designator and a meaning")
        return Code(str(code_value), str(scheme), str(meaning), _optional_str(version))
    raise LabelFileError(f"cannot read a code from {value!r}")


def _optional_code(value: Any) -> Code | None:
    if value is None or value == "" or (isinstance(value, (list, tuple)) and not any(value)):
        return None
    return _code(value)


def _color(value: Any) -> tuple[int, int, int]:
    if isinstance(value, str) and value.startswith("#") and len(value) == 7:
        return (int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16))
    if isinstance(value, (list, tuple)) and len(value) == 3:
        if all(isinstance(c, int) and not isinstance(c, bool) for c in value):
            return (value[0], value[1], value[2])
        if all(isinstance(c, (int, float)) and 0.0 <= c <= 1.0 for c in value):
            return tuple(round(float(c) * 255) for c in value)  # type: ignore[return-value]
    raise LabelFileError(f"color {value!r} must be [r, g, b] integers 0-255, floats 0-1, or '#rrggbb'")


def _label_value(value: Any) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise LabelFileError(f"'{value}' is not a label value (an integer 1-65535)") from None
    if not 1 <= number <= 65535:
        raise LabelFileError(f"label value {number} is outside 1-65535 (0 is the background)")
    return number


def _optional_int(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise LabelFileError(f"'{what}' must be a non-negative integer, got {value!r}")
    return value


def _optional_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _first(mapping: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if key in mapping and mapping[key] is not None:
            return mapping[key]
    return None


# --------------------------------------------------------------------------- writing


def label_table_document(layers: Iterable[Iterable[Segment]], image_sha256: str | None = None) -> dict[str, Any]:
    """The JSON document describing the segments of each layer (segment-list form).

    ``image_sha256``: the SHA-256 of the label map file this table describes (a sidecar), so
    that a reader can tell a table left beside another version of the image.
    """
    segments = [segment_to_json(segment, index) for index, layer in enumerate(layers) for segment in layer]
    document: dict[str, Any] = {"format": LABEL_TABLE_FORMAT, "version": LABEL_TABLE_VERSION}
    if image_sha256 is not None:
        document[IMAGE_DIGEST_KEY] = image_sha256
    document["segments"] = segments
    return document


def label_table_bytes(layers: Iterable[Iterable[Segment]], image_sha256: str | None = None) -> bytes:
    """The segment-list JSON label table of ``layers`` as UTF-8 bytes (what :func:`write_label_table` writes)."""
    document = label_table_document(layers, image_sha256)
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def write_label_table(layers: Iterable[Iterable[Segment]], path: str | os.PathLike[str]) -> Path:
    """Write the segments of each layer as a segment-list JSON label table, atomically."""
    path = Path(path)
    write_atomically({path: label_table_bytes(layers)})
    return path


# --------------------------------------------------------------------------- Slicer terminology lookup


def terminology_lookup_from_slicer_json(
    paths: Iterable[str | os.PathLike[str]],
) -> dict[str, tuple[Terminology, tuple]]:
    """Index Slicer ``*.term.json`` category/type lists by lower-case names.

    Keys are the type's code meaning and its ``3dSlicerLabel`` (``"spleen"``), and for types
    with Left/Right modifiers also ``"<name> left"`` / ``"<name> right"``. Values are the
    terminology and the recommended display color.
    """
    index: dict[str, tuple[Terminology, tuple]] = {}
    for path in paths:
        data = read_bounded(path, MAX_TABLE_BYTES, "Terminology file", LabelFileError)
        document = parse_json(data, f"Terminology file {path}", LabelFileError)
        try:
            categories = document["SegmentationCodes"]["Category"]
            context_name = document.get("SegmentationCategoryTypeContextName")
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise LabelFileError(f"{path} is not a Slicer category/type terminology file: {error}") from None
        for category in categories:
            category_code = _slicer_code(category)
            for type_entry in category.get("Type", []):
                type_code = _slicer_code(type_entry)
                color = tuple(type_entry.get("recommendedDisplayRGBValue", ()))
                base = Terminology(category_code, type_code, context_name=context_name)
                names = {type_code.meaning.lower(), str(type_entry.get("3dSlicerLabel", "")).lower()} - {""}
                for name in names:
                    index.setdefault(name, (base, color))
                for modifier in type_entry.get("Modifier", []):
                    modifier_code = _slicer_code(modifier)
                    modified = replace(base, type_modifier=modifier_code)
                    modifier_color = tuple(modifier.get("recommendedDisplayRGBValue", color))
                    for name in names:
                        index.setdefault(f"{name} {modifier_code.meaning.lower()}", (modified, modifier_color))
    return index


def _slicer_code(entry: Mapping[str, Any]) -> Code:
    return Code(str(entry["CodeValue"]), str(entry["CodingSchemeDesignator"]), str(entry["CodeMeaning"]))


def apply_terminology_lookup(table: LabelTable, lookup: Mapping[str, tuple[Terminology, tuple]]) -> LabelTable:
    """Give segments that have the default terminology the codes and color of a matching name.

    Names are matched case-insensitively with ``_`` read as a space (``kidney_right`` matches
    Slicer's ``Kidney`` with modifier ``Right``). Segments without a match are left unchanged.
    """
    updated = LabelTable(keep_absent=table.keep_absent)
    for key, segment in table.entries.items():
        match = lookup.get(segment.name.replace("_", " ").strip().lower())
        if match is not None and segment.terminology == DEFAULT_TERMINOLOGY:
            terminology, color = match
            generated_color = segment.color == default_color(segment.label_value)
            new_color = tuple(color) if len(color) == 3 and generated_color else segment.color
            segment = replace(segment, terminology=terminology, color=new_color)
        updated.entries[key] = segment
    return updated
