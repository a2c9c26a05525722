"""Segment <-> Segment Sequence item: placement of modifiers, round trips, items from other tools."""

from __future__ import annotations

import logging
from io import BytesIO

import pydicom
import pytest
from DICOMLabelmapSegLib.dicom.segment import (
    code_from_item,
    coded_concept,
    segment_description,
    segment_from_description,
    terminology_from_description,
)
from DICOMLabelmapSegLib.errors import InvalidDicomFileError
from DICOMLabelmapSegLib.model import (
    DEFAULT_TERMINOLOGY,
    UNSPECIFIED_CODE,
    Code,
    Segment,
    SegmentAlgorithmType,
    Terminology,
)
from pydicom.dataset import Dataset
from pydicom.tag import Tag

KIDNEY = Terminology(
    category=Code("123037004", "SCT", "Anatomical Structure"),
    type=Code("64033007", "SCT", "Kidney"),
    type_modifier=Code("7771000", "SCT", "Left"),
    region=Code("818981001", "SCT", "Abdomen"),
    region_modifier=Code("24028007", "SCT", "Right"),
)

FULL_SEGMENT = Segment(
    label_value=300,
    name="left kidney",
    color=(185, 102, 83),
    terminology=KIDNEY,
    algorithm_type=SegmentAlgorithmType.AUTOMATIC,
    algorithm_name="TotalSegmentator",
    algorithm_version="2.4.0",
    algorithm_family=Code("123109", "DCM", "Manual Processing"),
    description="Kidney, left, from the total task",
    tracking_id="kidney-L",
    tracking_uid="1.2.826.0.1.3680043.8.498.12345",
)


def _written(item: Dataset) -> Dataset:
    """The item as it reads back after encoding (plain pydicom types)."""
    outer = Dataset()
    outer.SegmentSequence = [item]
    outer.file_meta = pydicom.dataset.FileMetaDataset()
    outer.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    buffer = BytesIO()
    outer.save_as(buffer, enforce_file_format=False)
    buffer.seek(0)
    return pydicom.dcmread(buffer, force=True).SegmentSequence[0]


def test_modifiers_are_nested_where_the_standard_puts_them():
    item = segment_description(FULL_SEGMENT)
    type_item = item[Tag(0x0062, 0x000F)][0]
    assert Tag(0x0062, 0x0011) in type_item  # Segmented Property Type Modifier Code Sequence
    assert type_item.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue == "7771000"
    assert Tag(0x0062, 0x0011) not in item  # not at the segment level
    region_item = item[Tag(0x0008, 0x2218)][0]  # Anatomic Region Sequence
    assert region_item.CodeValue == "818981001"
    assert region_item[Tag(0x0008, 0x2220)][0].CodeValue == "24028007"  # Anatomic Region Modifier Sequence
    assert Tag(0x0008, 0x2220) not in item


def test_all_fields_written():
    item = segment_description(FULL_SEGMENT)
    assert item.SegmentNumber == 300
    assert item.SegmentLabel == "left kidney"
    assert item.SegmentDescription == "Kidney, left, from the total task"
    assert item.SegmentAlgorithmType == "AUTOMATIC"
    assert item.SegmentAlgorithmName == "TotalSegmentator"
    identification = item.SegmentationAlgorithmIdentificationSequence[0]
    assert identification.AlgorithmVersion == "2.4.0"
    assert identification.AlgorithmFamilyCodeSequence[0].CodeValue == "123109"
    assert item.TrackingID == "kidney-L" and item.TrackingUID == FULL_SEGMENT.tracking_uid
    assert len(item.RecommendedDisplayCIELabValue) == 3
    assert item.SegmentedPropertyCategoryCodeSequence[0].CodeMeaning == "Anatomical Structure"


@pytest.mark.parametrize(
    "segment",
    [
        FULL_SEGMENT,
        Segment(label_value=1, name="Tissue"),
        Segment(label_value=7, name="semi", algorithm_type="SEMIAUTOMATIC", algorithm_name="GrowCut"),
        Segment(
            label_value=2,
            name="lesion",
            color=(255, 0, 0),
            terminology=Terminology(
                Code("49755003", "SCT", "Morphologically Altered Structure"),
                Code("108369006", "SCT", "Neoplasm"),
                region=Code("39607008", "SCT", "Lung"),
            ),
        ),
        Segment(label_value=65535, name="max", color=(0, 0, 0), algorithm_name="manual tool"),
    ],
)
def test_round_trip_through_encoded_item(segment):
    back = segment_from_description(_written(segment_description(segment)))
    assert back == segment


def test_palette_items_have_no_cielab_and_take_the_given_color():
    item = segment_description(FULL_SEGMENT, include_color=False)
    assert "RecommendedDisplayCIELabValue" not in item
    back = segment_from_description(_written(item), color=FULL_SEGMENT.color)
    assert back == FULL_SEGMENT


def test_region_modifier_without_region_is_dropped_with_warning(caplog):
    terminology = Terminology(DEFAULT_TERMINOLOGY.category, DEFAULT_TERMINOLOGY.type,
                              region_modifier=Code("7771000", "SCT", "Left"))
    with caplog.at_level(logging.WARNING):
        item = segment_description(Segment(1, "x", terminology=terminology))
    assert "AnatomicRegionSequence" not in item
    assert "modifier" in caplog.text


def test_automatic_without_name_writes_required_placeholder():
    item = segment_description(Segment(1, "auto", algorithm_type=SegmentAlgorithmType.AUTOMATIC))
    assert item.SegmentAlgorithmType == "AUTOMATIC"
    assert item.SegmentAlgorithmName == "unknown"  # type 1C: required for AUTOMATIC
    assert "SegmentationAlgorithmIdentificationSequence" not in item


def test_long_and_odd_text_made_valid():
    segment = Segment(1, "a\\b " + "x" * 80, terminology=Terminology(
        DEFAULT_TERMINOLOGY.category, Code("T1", "99TEST", "m" * 70)))
    item = segment_description(segment)
    assert len(item.SegmentLabel) == 64 and "\\" not in item.SegmentLabel
    assert len(item.SegmentedPropertyTypeCodeSequence[0].CodeMeaning) == 64
    assert segment_from_description(_written(item)).terminology.same_codes(segment.terminology)


def test_long_code_values():
    long_code = Code("1234567890123456789", "99TEST", "long")
    urn_code = Code("urn:oid:1.2.3.4.5.6.7.8.9", "99URN", "urn")
    assert "LongCodeValue" in coded_concept(long_code)
    assert "URNCodeValue" in coded_concept(urn_code)
    assert code_from_item(coded_concept(long_code)) == long_code
    assert code_from_item(coded_concept(urn_code)) == urn_code


def test_tolerant_of_minimal_items():
    item = Dataset()
    item.SegmentNumber = 4
    segment = segment_from_description(item)
    assert segment.label_value == 4 and segment.name == ""
    # Missing Type 1 codes are not invented (issue 14): the explicit placeholder, never Slicer's default Tissue.
    assert segment.terminology == Terminology(UNSPECIFIED_CODE, UNSPECIFIED_CODE)
    assert segment.terminology != DEFAULT_TERMINOLOGY
    assert segment.algorithm_type == SegmentAlgorithmType.MANUAL
    item.SegmentAlgorithmType = "BOGUS"
    item.TrackingID = "only id"
    assert segment_from_description(item).tracking_id is None


def test_invalid_items_raise_typed_errors():
    item = Dataset()
    item.SegmentNumber = 0
    with pytest.raises(InvalidDicomFileError):
        segment_from_description(item)
    with pytest.raises(InvalidDicomFileError):
        code_from_item(Dataset())


def test_reads_dcmqi_items(data_dir):
    ds = pydicom.dcmread(data_dir / "dcmqi" / "partial_overlaps.dcm", stop_before_pixels=True)
    segments = [segment_from_description(item) for item in ds.SegmentSequence]
    assert [s.name for s in segments][:4] == ["GREEN", "ORANGE", "PURPLE", "LIGHT_BLUE"]
    assert segments[0].color == (128, 174, 128)
    for item, segment in zip(ds.SegmentSequence, segments):
        assert segment.terminology.type.value == item.SegmentedPropertyTypeCodeSequence[0].CodeValue
        assert segment.algorithm_type.value == item.SegmentAlgorithmType


def test_reads_dcmqi_labelmap_item(data_dir):
    ds = pydicom.dcmread(data_dir / "dcmqi" / "sparse-labelmap-noppv.dcm", stop_before_pixels=True)
    liver = [item for item in ds.SegmentSequence if item.SegmentNumber == 1][0]
    segment = segment_from_description(liver)
    assert segment.name == "Liver" and segment.color == (221, 130, 101)
    assert segment.description == "Liver Segmentation"
    assert segment.algorithm_type == SegmentAlgorithmType.SEMIAUTOMATIC and segment.algorithm_name == "SlicerEditor"
    assert (segment.tracking_id, segment.tracking_uid) == ("Liver", "1.2.3")
    terminology = terminology_from_description(liver)
    assert terminology.type == Code("10200004", "SCT", "Liver")
    assert terminology.region is None and terminology.type_modifier is None


def test_reads_highdicom_items(data_dir):
    ds = pydicom.dcmread(data_dir / "highdicom" / "seg_image_ct_binary_overlap.dcm", stop_before_pixels=True)
    segments = [segment_from_description(item) for item in ds.SegmentSequence]
    assert [s.name for s in segments] == ["first segment", "second segment"]
    assert all(s.algorithm_type in SegmentAlgorithmType for s in segments)
