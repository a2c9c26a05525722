"""Slicer TerminologyEntry strings <-> Terminology, checked against real files and Slicer's own serializer."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from DICOMLabelmapSegLib.formats.slicerterm import (
    DEFAULT_CONTEXT_NAME,
    DEFAULT_REGION_CONTEXT_NAME,
    format_code,
    format_terminology_entry,
    parse_code,
    parse_terminology_entry,
)
from DICOMLabelmapSegLib.model import Code, Terminology
from hypothesis import given, settings
from hypothesis import strategies as st

GENERAL_ANATOMY = "Segmentation category and type - 3D Slicer General Anatomy list"
RIGHT_LUNG = (
    f"{GENERAL_ANATOMY}~SCT^123037004^Anatomical Structure~SCT^39607008^Lung~SCT^24028007^Right"
    "~Anatomic codes - DICOM master list~^^~^^"
)


def _entries_in(path: Path) -> dict[str, str]:
    """Segment name -> TerminologyEntry string from a .seg.nrrd header (read as text, no library)."""
    header = path.read_bytes().split(b"\n\n", 1)[0].decode()
    fields = dict(re.findall(r"^(Segment\d+_\w+):=(.*)$", header, flags=re.MULTILINE))
    entries = {}
    for key, value in fields.items():
        if key.endswith("_Tags"):
            tags = dict(tag.split(":", 1) for tag in value.split("|") if tag)
            entries[fields[key.replace("_Tags", "_Name")]] = tags["TerminologyEntry"]
    return entries


@pytest.fixture(scope="module")
def real_entries(data_dir: Path) -> dict[str, str]:
    entries = _entries_in(data_dir / "slicerio" / "SegmentationOverlapping.seg.nrrd")
    assert len(entries) == 8
    return entries


def test_parse_real_right_lung(real_entries):
    assert real_entries["right lung"] == RIGHT_LUNG
    terminology = parse_terminology_entry(RIGHT_LUNG)
    assert terminology == Terminology(
        category=Code("123037004", "SCT", "Anatomical Structure"),
        type=Code("39607008", "SCT", "Lung"),
        type_modifier=Code("24028007", "SCT", "Right"),
        region=None,
        region_modifier=None,
        context_name=GENERAL_ANATOMY,
        region_context_name="Anatomic codes - DICOM master list",
    )


def test_real_entries_round_trip_exactly(real_entries):
    for name, entry in real_entries.items():
        terminology = parse_terminology_entry(entry)
        assert terminology is not None, name
        assert format_terminology_entry(terminology) == entry, name
    assert parse_terminology_entry(real_entries["overlapping sphere"]).type == Code("19227008", "SCT", "Foreign body")


def test_region_and_region_modifier():
    entry = (
        "Segmentation category and type - DICOM master list~SCT^49755003^Morphologically Altered Structure"
        "~SCT^4147007^Mass~^^~Anatomic codes - DICOM master list~SCT^39607008^Lung~SCT^7771000^Left"
    )
    terminology = parse_terminology_entry(entry)
    assert terminology.type_modifier is None
    assert terminology.region == Code("39607008", "SCT", "Lung")
    assert terminology.region_modifier == Code("7771000", "SCT", "Left")
    assert format_terminology_entry(terminology) == entry


@pytest.mark.parametrize(
    "entry",
    [
        RIGHT_LUNG + "|",  # tag-list separator left on the value
        RIGHT_LUNG + "~",  # empty extra trailing field
        RIGHT_LUNG + "~something~else",  # extra trailing fields of a newer writer
        "  " + RIGHT_LUNG + "\n",
    ],
)
def test_lenient_trailing_material(entry):
    assert parse_terminology_entry(entry) == parse_terminology_entry(RIGHT_LUNG)


def test_missing_trailing_fields_and_context():
    short = f"{GENERAL_ANATOMY}~SCT^123037004^Anatomical Structure~SCT^39607008^Lung"
    terminology = parse_terminology_entry(short)
    assert terminology.type == Code("39607008", "SCT", "Lung")
    assert terminology.type_modifier is None and terminology.region is None
    assert terminology.region_context_name is None
    no_context = parse_terminology_entry("SCT^85756007^Tissue~SCT^85756007^Tissue")
    assert no_context.category == Code("85756007", "SCT", "Tissue")
    assert no_context.context_name is None


@pytest.mark.parametrize(
    "entry",
    [None, "", "   ", "|", "~^^~^^~^^~~^^~^^", f"{GENERAL_ANATOMY}~^^~SCT^1^x~^^~~^^~^^", "ctx~SCT^1^x~^^~^^~~^^~^^"],
)
def test_absent_category_or_type_is_none(entry):
    assert parse_terminology_entry(entry) is None


def test_code_without_value_is_absent():
    # Written by some extensions: scheme designator without a value for "no modifier".
    entry = (
        "Segmentation category and type - DICOM master list~SCT^123037004^Anatomical Structure"
        "~SCT^89187006^Airway structure~SCT^^~~^^~^^"
    )
    terminology = parse_terminology_entry(entry)
    assert terminology.type_modifier is None
    assert terminology.region_context_name is None
    assert parse_code("SCT^^") is None and parse_code("^^") is None and parse_code("") is None


def test_region_modifier_without_region_is_dropped():
    entry = "ctx~SCT^1^a~SCT^2^b~^^~rctx~^^~SCT^7771000^Left"
    assert parse_terminology_entry(entry).region_modifier is None


def test_defaults_for_missing_context_names():
    terminology = Terminology(category=Code("85756007", "SCT", "Tissue"), type=Code("85756007", "SCT", "Tissue"))
    assert format_terminology_entry(terminology) == (
        f"{DEFAULT_CONTEXT_NAME}~SCT^85756007^Tissue~SCT^85756007^Tissue~^^~{DEFAULT_REGION_CONTEXT_NAME}~^^~^^"
    )


def test_reserved_characters_are_replaced(caplog):
    terminology = Terminology(category=Code("1", "99X", "A~B"), type=Code("2", "99X", "C^D|E"))
    entry = format_terminology_entry(terminology)
    assert entry.count("~") == 6 and "|" not in entry
    parsed = parse_terminology_entry(entry)
    assert parsed.category.meaning == "A-B"
    assert parsed.type.meaning == "C D/E"
    assert "contains" in caplog.text


def test_extra_carets_stay_in_meaning():
    assert parse_code("SCT^1^a^b") == Code("1", "SCT", "a^b")
    assert format_code(None) == "^^"


# --- against Slicer's own serializer (slicer-core) ---------------------------------------------------------------

_text = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF, blacklist_characters="~^|"), min_size=1, max_size=12
).map(str.strip).filter(bool)
_codes = st.builds(Code, value=_text, scheme_designator=_text, meaning=_text)
_terminologies = st.builds(
    Terminology,
    category=_codes,
    type=_codes,
    type_modifier=st.none() | _codes,
    region=st.none() | _codes,
    region_modifier=st.none() | _codes,
    context_name=st.none() | _text,
    region_context_name=st.none() | _text,
)


def _slicer_logic():
    slicer = pytest.importorskip("slicer", reason="slicer-core not installed")
    return slicer


def _triple(code: Code | None) -> list[str]:
    """Value, scheme, meaning: the argument order of Slicer's 17-string overload."""
    return ["", "", ""] if code is None else [code.value, code.scheme_designator, code.meaning]


@settings(max_examples=150, deadline=None)
@given(_terminologies)
def test_format_matches_slicer_serializer(terminology):
    slicer = _slicer_logic()
    region_modifier = terminology.region_modifier if terminology.region is not None else None
    expected = slicer.vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry(
        terminology.context_name or DEFAULT_CONTEXT_NAME,
        *_triple(terminology.category),
        *_triple(terminology.type),
        *_triple(terminology.type_modifier),
        terminology.region_context_name or DEFAULT_REGION_CONTEXT_NAME,
        *_triple(terminology.region),
        *_triple(region_modifier),
    )
    assert format_terminology_entry(terminology) == expected


def _from_slicer_entry(entry) -> Terminology:
    def code(obj) -> Code | None:
        value = obj.GetCodeValue()
        return Code(value, obj.GetCodingSchemeDesignator(), obj.GetCodeMeaning()) if value else None

    region = entry.GetRegionObject() if hasattr(entry, "GetRegionObject") else entry.GetAnatomicRegionObject()
    region_modifier = (
        entry.GetRegionModifierObject()
        if hasattr(entry, "GetRegionModifierObject")
        else entry.GetAnatomicRegionModifierObject()
    )
    region_context = (
        entry.GetRegionContextName() if hasattr(entry, "GetRegionContextName") else entry.GetAnatomicContextName()
    )
    return Terminology(
        category=code(entry.GetCategoryObject()),
        type=code(entry.GetTypeObject()),
        type_modifier=code(entry.GetTypeModifierObject()),
        region=code(region),
        region_modifier=code(region_modifier),
        context_name=entry.GetTerminologyContextName() or None,
        region_context_name=region_context or None,
    )


@settings(max_examples=100, deadline=None)
@given(_terminologies)
def test_slicer_deserializes_what_we_write(terminology):
    slicer = _slicer_logic()
    entry = slicer.vtkSlicerTerminologyEntry()
    assert slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(
        format_terminology_entry(terminology), entry
    )
    expected = Terminology(
        category=terminology.category,
        type=terminology.type,
        type_modifier=terminology.type_modifier,
        region=terminology.region,
        region_modifier=terminology.region_modifier if terminology.region is not None else None,
        context_name=terminology.context_name or DEFAULT_CONTEXT_NAME,
        region_context_name=terminology.region_context_name or DEFAULT_REGION_CONTEXT_NAME,
    )
    assert _from_slicer_entry(entry) == expected


def test_we_parse_what_slicer_reads_from_real_files(real_entries):
    slicer = _slicer_logic()
    for name, text in real_entries.items():
        entry = slicer.vtkSlicerTerminologyEntry()
        assert slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(text, entry), name
        assert parse_terminology_entry(text) == _from_slicer_entry(entry), name
        assert slicer.vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry(entry) == text
