"""TotalSegmentator class maps: SNOMED CT terminology and colors from TotalSegmentator's own mapping.

TotalSegmentator (Apache-2.0) publishes ``totalsegmentator_snomed_mapping.csv`` (structure name ->
category, type, modifier, region codes and a color) in its package resources. This module does not
ship a copy: it reads the file from, in order,

1. an explicit path (``--terminology-map PATH``),
2. the environment variable ``DICOMLABELMAPSEG_TOTALSEGMENTATOR_MAP``,
3. the installed ``totalsegmentator`` package (``totalsegmentator/resources/...``).

:func:`apply_totalsegmentator` gives the segments of a label table whose names are TotalSegmentator
structures these codes and colors, and marks them AUTOMATIC, algorithm "TotalSegmentator".
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.resources
import io
import os
from collections.abc import Mapping
from pathlib import Path

from ..errors import LabelmapSegError
from ..model import DEFAULT_TERMINOLOGY, Code, SegmentAlgorithmType, Terminology
from .labeltable import LabelTable, default_color

MAPPING_FILE = "totalsegmentator_snomed_mapping.csv"
ENVIRONMENT_VARIABLE = "DICOMLABELMAPSEG_TOTALSEGMENTATOR_MAP"
ALGORITHM_NAME = "TotalSegmentator"
#: Algorithm Family for a trained segmentation network (DCM 113037 'Artificial Intelligence').
ALGORITHM_FAMILY = Code("113037", "DCM", "Artificial Intelligence")
#: Share of a table's names that must be TotalSegmentator structures for the table to count as its class map.
MIN_SHARE = 0.8
MAX_MAPPING_BYTES = 16 * 1024 * 1024

_PREFIXES = {
    "category": "SegmentedPropertyCategoryCodeSequence",
    "type": "SegmentedPropertyTypeCodeSequence",
    "type_modifier": "SegmentedPropertyTypeModifierCodeSequence",
    "region": "AnatomicRegionSequence",
    "region_modifier": "AnatomicRegionModifierSequence",
}


class TerminologyMapError(LabelmapSegError, ValueError):
    """The TotalSegmentator mapping file cannot be read."""


def mapping_text(explicit: str | os.PathLike[str] | None = None) -> str | None:
    """The mapping CSV text (see the module docstring for where it is looked for), or None if none is found."""
    candidates = [explicit] if explicit else []
    if os.environ.get(ENVIRONMENT_VARIABLE):
        candidates.append(os.environ[ENVIRONMENT_VARIABLE])
    for candidate in candidates:
        path = Path(candidate)  # type: ignore[arg-type]
        try:
            if not path.is_file() or path.stat().st_size > MAX_MAPPING_BYTES:
                raise TerminologyMapError(f"{path} is not a TotalSegmentator mapping file (a CSV under 16 MB).")
            return path.read_text(encoding="utf-8-sig")
        except OSError as error:
            raise TerminologyMapError(f"Cannot read {path}: {error.strerror or error}") from None
    try:
        resource = importlib.resources.files("totalsegmentator") / "resources" / MAPPING_FILE
        return resource.read_text(encoding="utf-8-sig")
    except (ModuleNotFoundError, FileNotFoundError, OSError):
        return None


Entry = tuple[Terminology, "tuple[int, ...] | None"]


def read_mapping(text: str) -> dict[str, Entry]:
    """Structure name -> (terminology, color or None) of a TotalSegmentator mapping CSV."""
    mapping: dict[str, Entry] = {}
    try:
        for row in csv.DictReader(io.StringIO(text)):
            name = (row.get("Structure") or "").strip()
            if not name:
                continue
            codes = {}
            for field, prefix in _PREFIXES.items():
                value = (row.get(f"{prefix}.CodeValue") or "").strip()
                scheme = (row.get(f"{prefix}.CodingSchemeDesignator") or "").strip()
                meaning = (row.get(f"{prefix}.CodeMeaning") or "").strip()
                codes[field] = Code(value, scheme, meaning) if value and scheme and meaning else None
            if codes["category"] is None or codes["type"] is None:
                continue
            color_text = (row.get("DicomRGBColor") or "").replace(" ", "")
            parts = [int(v) for v in color_text.split(",") if v.isdigit()]
            color = tuple(parts) if len(parts) == 3 and all(0 <= v <= 255 for v in parts) else None
            mapping[name] = (Terminology(**codes), color)  # type: ignore[arg-type] # category/type checked
    except (csv.Error, ValueError) as error:
        raise TerminologyMapError(f"The TotalSegmentator mapping is not a valid CSV: {error}") from None
    if not mapping:
        raise TerminologyMapError("The TotalSegmentator mapping lists no structure with category and type codes.")
    return mapping


def is_class_map_of(table: LabelTable, mapping: Mapping[str, object]) -> bool:
    """Whether most names of ``table`` are structures of ``mapping`` (TotalSegmentator's class map)."""
    names = [segment.name for segment in table.entries.values()]
    return bool(names) and sum(name in mapping for name in names) >= MIN_SHARE * len(names)


def apply_totalsegmentator(table: LabelTable, explicit_map: str | os.PathLike[str] | None = None) -> LabelTable:
    """``table`` with TotalSegmentator terminology, colors and algorithm, if it is a TotalSegmentator class map.

    Only segments still carrying the default terminology are changed (explicit codes win); a
    color is replaced only where it was generated. Without a mapping file the table is returned
    unchanged (an explicit ``explicit_map`` that cannot be read is an error).
    """
    text = mapping_text(explicit_map)
    if text is None:
        return table
    mapping = read_mapping(text)
    if not is_class_map_of(table, mapping):
        return table
    updated = LabelTable(keep_absent=table.keep_absent)
    for key, segment in table.entries.items():
        match = mapping.get(segment.name)
        if match is not None and segment.terminology == DEFAULT_TERMINOLOGY:
            terminology, color = match
            generated = segment.color == default_color(segment.label_value)
            segment = dataclasses.replace(
                segment,
                terminology=terminology,
                color=color if color is not None and len(color) == 3 and generated else segment.color,  # type: ignore[arg-type]
                algorithm_type=SegmentAlgorithmType.AUTOMATIC,
                algorithm_name=segment.algorithm_name or ALGORITHM_NAME,
                algorithm_family=segment.algorithm_family or ALGORITHM_FAMILY,
            )
        updated.entries[key] = segment
    return updated
