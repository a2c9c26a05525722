"""The one JSON form of a segment and of a code: label tables, sidecars and ``info --json`` use it.

A code is ``{"value": ..., "scheme_designator": ..., "meaning": ...[, "scheme_version": ...]}``
(the :class:`~.model.Code` field names). A segment is::

    {"label": 1, ["layer": 0,] "name": ..., "color": [r, g, b],
     "terminology": {"category": CODE, "type": CODE[, "type_modifier", "region", "region_modifier",
                     "context_name", "region_context_name"]},
     "algorithm_type": "MANUAL"[, "algorithm_name", "algorithm_version", "algorithm_family",
     "description", "tracking_id", "tracking_uid"]}

Fields the segment does not have are left out. :mod:`.formats.labeltable` reads this form and
the older ones (``"scheme"`` for the designator, dcmqi and Slicer layouts).
"""

from __future__ import annotations

from typing import Any

from .model import Code, Segment

__all__ = ["code_to_json", "segment_to_json"]


def code_to_json(code: Code) -> dict[str, str]:
    """A code as a JSON object with the model's field names."""
    result = {"value": code.value, "scheme_designator": code.scheme_designator, "meaning": code.meaning}
    if code.scheme_version:
        result["scheme_version"] = code.scheme_version
    return result


def segment_to_json(segment: Segment, layer: int | None = None) -> dict[str, Any]:
    """One segment as a JSON object (with its ``layer`` index when given); ``None`` fields are left out."""
    terminology = segment.terminology
    term: dict[str, Any] = {"category": code_to_json(terminology.category), "type": code_to_json(terminology.type)}
    for name in ("type_modifier", "region", "region_modifier"):
        code = getattr(terminology, name)
        if code is not None:
            term[name] = code_to_json(code)
    for name in ("context_name", "region_context_name"):
        if getattr(terminology, name):
            term[name] = getattr(terminology, name)
    entry: dict[str, Any] = {"label": segment.label_value}
    if layer is not None:
        entry["layer"] = layer
    entry.update(
        {"name": segment.name, "color": list(segment.color), "terminology": term,
         "algorithm_type": segment.algorithm_type.value}
    )
    for name in ("algorithm_name", "algorithm_version", "description", "tracking_id", "tracking_uid"):
        if getattr(segment, name) is not None:
            entry[name] = getattr(segment, name)
    if segment.algorithm_family is not None:
        entry["algorithm_family"] = code_to_json(segment.algorithm_family)
    return entry
