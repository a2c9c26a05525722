"""File formats <-> model: Slicer .seg.nrrd, NIfTI and NRRD label maps, label tables.

Real files from ../shared/data (slicerio, TotalSegmentator, dcmqi); geometry is checked
against values read from the files' headers and from the DICOM series they belong to.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import slicerio
from DICOMLabelmapSegLib.errors import ImplausibleSizeError, LabelmapSegError, UndescribedLabelError
from DICOMLabelmapSegLib.formats import fileio
from DICOMLabelmapSegLib.formats.labeltable import (
    LabelFileError,
    apply_terminology_lookup,
    default_color,
    parse_label_table,
    read_label_table,
    terminology_lookup_from_slicer_json,
)
from DICOMLabelmapSegLib.model import (
    Code,
    Geometry,
    Layer,
    Segment,
    SegmentAlgorithmType,
    Segmentation,
    Terminology,
    differences,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from synthetic import make_affine, make_segmentation

SLICERIO_FILES = ["Segmentation.seg.nrrd", "SegmentationOverlapping.seg.nrrd"]

# From the header of slicerio/Segmentation.seg.nrrd (LPS): space directions and origin.
SLICERIO_AFFINE = np.array(
    [
        [0.0, 0.0, -3.04687595367432, 193.09599304199222],
        [0.0, -3.04687595367432, 0.0, 216.39599609374994],
        [9.9999999999999964, 0.0, 0.0, -340.24999999999994],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


@pytest.fixture(scope="module")
def total_classes(data_dir: Path) -> Path:
    return data_dir / "totalsegmentator_total_classes.json"


# --------------------------------------------------------------------------- .seg.nrrd


def test_read_slicer_segmentation_metadata_and_geometry(data_dir: Path) -> None:
    segmentation = fileio.read_seg_nrrd(data_dir / "slicerio" / "Segmentation.seg.nrrd")
    assert segmentation.geometry.shape == (34, 128, 128)
    np.testing.assert_allclose(segmentation.geometry.affine, SLICERIO_AFFINE, atol=1e-9)
    assert len(segmentation.layers) == 1
    segments = segmentation.layers[0].segments
    assert [s.name for s in segments] == [
        "ribs", "cervical vertebral column", "thoracic vertebral column", "lumbar vertebral column",
        "right lung", "left lung", "tissue",
    ]
    assert [s.label_value for s in segments] == list(range(1, 8))
    assert segments[0].color == (253, 232, 158)  # 0.992157 0.909804 0.619608
    right_lung = segments[4]
    assert right_lung.terminology.category == Code("123037004", "SCT", "Anatomical Structure")
    assert right_lung.terminology.type == Code("39607008", "SCT", "Lung")
    assert right_lung.terminology.type_modifier == Code("24028007", "SCT", "Right")
    assert right_lung.terminology.context_name == "Segmentation category and type - 3D Slicer General Anatomy list"
    labels = segmentation.layers[0].labels
    assert labels.dtype == np.uint8 and labels.flags.c_contiguous
    # Voxels agree with slicerio's reading ([i, j, k] order) transposed to [k, j, i].
    reference = slicerio.read_segmentation(str(data_dir / "slicerio" / "Segmentation.seg.nrrd"))
    np.testing.assert_array_equal(labels, reference["voxels"].T)


def test_read_overlapping_segmentation_as_two_layers(data_dir: Path) -> None:
    segmentation = fileio.read_seg_nrrd(data_dir / "slicerio" / "SegmentationOverlapping.seg.nrrd")
    assert len(segmentation.layers) == 2
    assert [len(layer.segments) for layer in segmentation.layers] == [7, 1]
    sphere = segmentation.layers[1].segments[0]
    assert (sphere.name, sphere.label_value) == ("overlapping sphere", 1)
    assert sphere.terminology.type == Code("19227008", "SCT", "Foreign body")
    reference = slicerio.read_segmentation(str(data_dir / "slicerio" / "SegmentationOverlapping.seg.nrrd"))
    for index, layer in enumerate(segmentation.layers):
        np.testing.assert_array_equal(layer.labels, reference["voxels"][index].T)
    overlap = (segmentation.layers[0].labels > 0) & (segmentation.layers[1].labels > 0)
    assert overlap.any(), "the file's point is overlapping segments"


@pytest.mark.parametrize("name", SLICERIO_FILES)
def test_seg_nrrd_round_trip_is_lossless(data_dir: Path, tmp_path: Path, name: str) -> None:
    original = fileio.read_seg_nrrd(data_dir / "slicerio" / name)
    written = fileio.write_seg_nrrd(original, tmp_path / name)
    assert differences(original, fileio.read_seg_nrrd(written)) == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary file left behind"


@pytest.mark.parametrize("name", SLICERIO_FILES)
def test_slicerio_reads_our_seg_nrrd_like_the_original(data_dir: Path, tmp_path: Path, name: str) -> None:
    original_path = data_dir / "slicerio" / name
    written = fileio.write_seg_nrrd(fileio.read_seg_nrrd(original_path), tmp_path / name)
    expected = slicerio.read_segmentation(str(original_path))
    actual = slicerio.read_segmentation(str(written))
    np.testing.assert_array_equal(actual["voxels"], expected["voxels"])
    np.testing.assert_allclose(actual["ijkToLPS"], expected["ijkToLPS"], atol=1e-9)
    assert len(actual["segments"]) == len(expected["segments"])
    for a, e in zip(actual["segments"], expected["segments"]):
        assert (a["name"], a["labelValue"], a["layer"]) == (e["name"], e["labelValue"], e["layer"])
        np.testing.assert_allclose(a["color"], e["color"], atol=1e-6)
        assert a["terminology"] == e["terminology"]


def test_seg_nrrd_keeps_every_model_field_and_unicode(tmp_path: Path) -> None:
    segmentation = make_segmentation(
        Geometry((4, 6, 5), make_affine(oblique=True), None), layers=[[1, 2, 300], [7]], empty=[2]
    )
    first = segmentation.layers[0].segments[0]
    segmentation.layers[0].segments[0] = replace(
        first,
        name="Läsion ü 1",
        algorithm_type=SegmentAlgorithmType.AUTOMATIC,
        algorithm_name="TotalSegmentator",
        algorithm_version="2.4",
        algorithm_family=Code("123109", "DCM", "Manual Processing"),
        tracking_id="lesion-1",
        tracking_uid="2.25.1234",
    )
    path = fileio.write_seg_nrrd(segmentation, tmp_path / "x.seg.nrrd")
    back = fileio.read_seg_nrrd(path)
    assert differences(segmentation, back) == []
    assert back.layers[0].labels.dtype == np.uint16  # label 300
    assert back.layers[0].segment_for_label(2) is not None, "empty segments are kept"


def test_seg_nrrd_header_is_what_slicer_writes(tmp_path: Path) -> None:
    segmentation = make_segmentation(layers=[[1, 2], [3]])
    path = fileio.write_seg_nrrd(segmentation, tmp_path / "x.seg.nrrd")
    with open(path, "rb") as handle:
        header = handle.read(4096).split(b"\n\n")[0].decode("utf-8")
    assert "space: left-posterior-superior" in header
    assert "kinds: list domain domain domain" in header
    assert "Segment2_ID:=Segment_3_layer2" in header
    assert "Segment2_Layer:=1" in header
    assert "Segmentation_MasterRepresentation:=Binary labelmap" in header
    assert "Segment0_Tags:=TerminologyEntry:" in header and header.count("|\n") >= 3


def test_tag_values_cannot_break_the_tag_list(tmp_path: Path) -> None:
    segmentation = make_segmentation(layers=[[1]])
    segment = replace(segmentation.layers[0].segments[0], description="a|b\nc")
    segmentation.layers[0].segments[0] = segment
    back = fileio.read_seg_nrrd(fileio.write_seg_nrrd(segmentation, tmp_path / "x.seg.nrrd"))
    assert back.layers[0].segments[0].description == "a/b c"
    assert back.layers[0].segments[0].terminology.same_codes(segment.terminology)


def _nrrd_text(space: str, directions: str, origin: str, extra: str = "") -> bytes:
    return (
        "NRRD0004\ntype: uint8\ndimension: 3\nsizes: 3 2 2\n"
        f"space: {space}\nspace directions: {directions}\nkinds: domain domain domain\n"
        f"encoding: raw\nspace origin: {origin}\n{extra}\n"
    ).encode() + bytes([0, 1, 0, 0, 0, 0, 0, 0, 2, 0, 0, 1])


def test_nrrd_in_ras_space_gives_the_same_lps_affine_as_lps(tmp_path: Path) -> None:
    lps = tmp_path / "lps.nrrd"
    ras = tmp_path / "ras.nrrd"
    lps.write_bytes(_nrrd_text("left-posterior-superior", "(-1,0,0) (0,-2,0) (0,0,3)", "(10,20,30)"))
    ras.write_bytes(_nrrd_text("right-anterior-superior", "(1,0,0) (0,2,0) (0,0,3)", "(-10,-20,30)"))
    a, b = fileio.read_labelmap(lps), fileio.read_labelmap(ras)
    expected = np.array([[0, 0, -1, 10], [0, -2, 0, 20], [3, 0, 0, 30], [0, 0, 0, 1]], dtype=float)
    np.testing.assert_allclose(a.geometry.affine, expected)
    assert differences(a, b) == []
    # axis order: sizes 3 2 2 are (i, j, k); the 2nd value of the file is voxel i=1, j=0, k=0
    assert a.geometry.shape == (2, 2, 3)
    assert a.layers[0].labels[0, 0, 1] == 1 and a.layers[0].labels[1, 0, 2] == 2
    assert a.layers[0].labels[1, 1, 2] == 1


def test_dcmqi_nrrd_is_a_plain_labelmap_on_the_dicom_grid(data_dir: Path) -> None:
    from DICOMLabelmapSegLib.dicom.reader import read_segmentation

    labelmap = fileio.read_segmentation_file(data_dir / "dcmqi" / "liver_seg.nrrd")
    assert labelmap.geometry.shape == (3, 512, 512)
    np.testing.assert_allclose(labelmap.geometry.origin, [-235.2, -226.8, -128.69])
    np.testing.assert_allclose(labelmap.geometry.spacing, [1.0, 0.810547, 0.810547])
    assert [s.name for s in labelmap.segments] == ["Segment_1"]
    assert labelmap.layers[0].labels.dtype == np.uint8  # stored as short, values fit 8 bits
    # dcmqi made liver.dcm from this label map: same grid, same voxels.
    seg = read_segmentation(data_dir / "dcmqi" / "liver.dcm")
    assert labelmap.geometry.same_as(seg.geometry, atol=1e-3)
    np.testing.assert_array_equal(labelmap.layers[0].labels > 0, seg.layers[0].labels > 0)


# --------------------------------------------------------------------------- NIfTI


def test_totalsegmentator_nifti_with_class_table(data_dir: Path, total_classes: Path) -> None:
    path = data_dir / "totalsegmentator" / "example_seg_dicom.nii.gz"
    segmentation = fileio.read_labelmap(path, total_classes)
    image = nib.load(str(path))
    assert segmentation.geometry.shape == tuple(reversed(image.shape))  # (20, 512, 512)
    labels = segmentation.layers[0].labels
    np.testing.assert_array_equal(labels, np.asarray(image.dataobj).T)
    present = sorted(set(np.unique(labels).tolist()) - {0})
    assert [s.label_value for s in segmentation.segments] == present and len(present) == 31
    classes = json.loads(total_classes.read_text())
    assert all(s.name == classes[str(s.label_value)] for s in segmentation.segments)
    assert segmentation.layers[0].segment_for_label(5).name == "liver"
    # LAS file: RAS affine diag(-0.977, 0.977, 2) -> LPS columns (k, j, i)
    affine = segmentation.geometry.affine
    np.testing.assert_allclose(affine[:3, 2], [0.9765625, 0, 0], atol=1e-6)  # i: +x RAS(-) = L
    np.testing.assert_allclose(affine[:3, 1], [0, -0.9765625, 0], atol=1e-6)  # j: anterior = -P
    np.testing.assert_allclose(affine[:3, 0], [0, 0, 2.0], atol=1e-6)
    ras_origin = image.affine[:3, 3]
    np.testing.assert_allclose(affine[:3, 3], [-ras_origin[0], -ras_origin[1], ras_origin[2]])


def test_totalsegmentator_nifti_lies_on_its_dicom_series(data_dir: Path) -> None:
    """Voxel (k, j, i) of the NIfTI is at the same LPS point as DICOM voxel (k, 511 - j, i)."""
    from DICOMLabelmapSegLib.dicom.source import geometry_from_source, read_source_series

    series = read_source_series(data_dir / "totalsegmentator" / "example_ct_dicom", require_uids=False)
    dicom = geometry_from_source(series)
    nifti = fileio.read_labelmap(data_dir / "totalsegmentator" / "example_seg_dicom.nii.gz").geometry
    assert nifti.shape == dicom.shape
    for k, j, i in [(0, 0, 0), (19, 511, 511), (7, 100, 300)]:
        here = nifti.affine @ [k, j, i, 1]
        there = dicom.affine @ [k, 511 - j, i, 1]
        np.testing.assert_allclose(here, there, atol=1e-3)


@pytest.mark.parametrize("layers", [[[1, 2, 3]], [[1, 2], [1, 9]]], ids=["3D", "4D"])
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_nifti_round_trip_with_sidecar(tmp_path: Path, layers: list, suffix: str) -> None:
    segmentation = make_segmentation(Geometry((4, 6, 5), make_affine(oblique=True), None), layers=layers, empty=[3])
    written = fileio.write_nifti(segmentation, tmp_path / f"labels{suffix}")
    assert [p.name for p in written] == [f"labels{suffix}", "labels.json"]
    back = fileio.read_segmentation_file(written[0])  # sidecar picked up automatically
    assert differences(segmentation, back, atol=1e-4) == []
    image = nib.load(str(written[0]))
    assert image.header["sform_code"] == 1 and image.header["qform_code"] == 1
    assert image.header.get_intent()[0] == "label"
    assert image.ndim == (3 if len(layers) == 1 else 4)
    expected_ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ segmentation.geometry.affine[:, [2, 1, 0, 3]]
    np.testing.assert_allclose(image.affine, expected_ras, atol=1e-4)


def test_nifti_without_table_gets_generated_names_and_distinct_colors(tmp_path: Path) -> None:
    segmentation = make_segmentation(layers=[[1, 2, 3, 4, 5, 6]])
    path = fileio.write_nifti(segmentation, tmp_path / "plain.nii.gz", sidecar=False)[0]
    back = fileio.read_labelmap(path)
    assert [s.name for s in back.segments] == [f"Segment_{v}" for v in range(1, 7)]
    colors = [s.color for s in back.segments]
    assert len(set(colors)) == 6 and colors[0] == default_color(1)
    assert min(np.abs(np.subtract(a, b)).sum() for n, a in enumerate(colors) for b in colors[n + 1 :]) > 40


def test_foreign_json_next_to_nifti_is_not_taken_as_table(tmp_path: Path) -> None:
    segmentation = make_segmentation(layers=[[1, 2]])
    path = fileio.write_nifti(segmentation, tmp_path / "scan.nii.gz", sidecar=False)[0]
    (tmp_path / "scan.json").write_text(json.dumps({"Modality": "CT", "1": "not a label"}))
    assert [s.name for s in fileio.read_labelmap(path).segments] == ["Segment_1", "Segment_2"]


def test_labels_missing_from_table_are_named_and_reported(tmp_path: Path, caplog) -> None:
    segmentation = make_segmentation(layers=[[1, 2]])
    path = fileio.write_nifti(segmentation, tmp_path / "x.nii.gz", sidecar=False)[0]
    back = fileio.read_labelmap(path, parse_label_table({"1": "liver"}))
    assert [s.name for s in back.segments] == ["liver", "Segment_2"]
    assert "not in the label table" in caplog.text


def test_write_format_is_chosen_by_name(tmp_path: Path) -> None:
    segmentation = make_segmentation()
    assert fileio.write_segmentation_file(segmentation, tmp_path / "a.seg.nrrd")[0].name == "a.seg.nrrd"
    assert len(fileio.write_segmentation_file(segmentation, tmp_path / "a.nii.gz")) == 2
    with pytest.raises(LabelFileError, match="seg.nrrd"):
        fileio.write_segmentation_file(segmentation, tmp_path / "a.mha")


# --------------------------------------------------------------------------- label tables


def test_label_table_forms(tmp_path: Path, data_dir: Path) -> None:
    class_map = read_label_table(data_dir / "totalsegmentator_total_classes.json")
    assert class_map.lookup(1).name == "spleen" and not class_map.keep_absent and len(class_map) == 117
    rich = parse_label_table(
        {
            "3": {
                "name": "tumor",
                "color": "#ff0000",
                "terminology": {
                    "category": {"CodeValue": "49755003", "CodingSchemeDesignator": "SCT",
                                 "CodeMeaning": "Morphologically Altered Structure"},
                    "type": ["SCT", "108369006", "Neoplasm"],
                    "region": "SCT^10200004^Liver",
                },
                "algorithm_type": "automatic",
                "algorithm_name": "nnU-Net",
            }
        }
    )
    tumor = rich.lookup(3)
    assert tumor.color == (255, 0, 0) and tumor.algorithm_type is SegmentAlgorithmType.AUTOMATIC
    assert tumor.terminology.type == Code("108369006", "SCT", "Neoplasm")
    assert tumor.terminology.region == Code("10200004", "SCT", "Liver")
    slicer_entry = parse_label_table(
        {"2": {"name": "rib", "terminology": "Segmentation category and type - 3D Slicer General Anatomy list"
               "~SCT^123037004^Anatomical Structure~SCT^113197003^Rib~^^~Anatomic codes - DICOM master list~^^~^^"}}
    )
    assert slicer_entry.lookup(2).terminology.type.meaning == "Rib"
    dcmqi = parse_label_table(
        {"segmentAttributes": [[{"labelID": 1, "SegmentLabel": "Liver", "recommendedDisplayRGBValue": [221, 130, 101],
                                 "SegmentedPropertyCategoryCodeSequence": {"CodeValue": "123037004",
                                 "CodingSchemeDesignator": "SCT", "CodeMeaning": "Anatomical Structure"},
                                 "SegmentedPropertyTypeCodeSequence": {"CodeValue": "10200004",
                                 "CodingSchemeDesignator": "SCT", "CodeMeaning": "Liver"}}],
                               [{"labelID": 1, "SegmentLabel": "Tumor"}]]}
    )
    assert dcmqi.lookup(1, 0).name == "Liver" and dcmqi.lookup(1, 1).name == "Tumor" and dcmqi.keep_absent


@pytest.mark.parametrize(
    "document, message",
    [
        ({"0": "background"}, "outside 1-65535"),
        ({"x": "liver"}, "not a label value"),
        ({"1": {"name": "a", "color": [300, 0, 0]}}, "color"),
        ({"1": {"name": "a", "terminology": {"category": ["SCT", "1", "x"]}}}, "category' and 'type"),
        ({"segments": [{"name": "no label"}]}, "no 'label'"),
        ([{"label": 1}, {"label": 1}], "described twice"),
    ],
)
def test_bad_label_tables_say_what_is_wrong(document, message: str) -> None:
    with pytest.raises(LabelFileError, match=message):
        parse_label_table(document)


def test_unreadable_label_table_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(LabelFileError, match="not a readable JSON"):
        read_label_table(bad)
    with pytest.raises(LabelFileError, match="does not exist"):
        read_label_table(tmp_path / "missing.json")


def test_slicer_terminology_lookup_gives_codes_and_colors(data_dir: Path, total_classes: Path) -> None:
    lookup = terminology_lookup_from_slicer_json(
        [data_dir / "slicer" / "SegmentationCategoryTypeModifier-SlicerGeneralAnatomy.term.json"]
    )
    table = apply_terminology_lookup(read_label_table(total_classes), lookup)
    liver = table.lookup(5)
    assert liver.terminology.type.meaning == "Liver" and liver.terminology.type.scheme_designator == "SCT"
    kidney_right = table.lookup(2)
    assert kidney_right.terminology.type.meaning == "Kidney"
    assert kidney_right.terminology.type_modifier is not None
    assert kidney_right.terminology.type_modifier.meaning == "Right"
    assert liver.color != default_color(5)  # Slicer's recommended color


# --------------------------------------------------------------------------- bad inputs


def test_truncated_seg_nrrd_is_a_clear_error(data_dir: Path, tmp_path: Path) -> None:
    data = (data_dir / "slicerio" / "Segmentation.seg.nrrd").read_bytes()
    truncated = tmp_path / "truncated.seg.nrrd"
    truncated.write_bytes(data[: len(data) - 3000])
    with pytest.raises(LabelFileError, match="truncated|corrupt"):
        fileio.read_segmentation_file(truncated)


def test_huge_declared_size_is_refused_before_allocating(tmp_path: Path) -> None:
    path = tmp_path / "huge.nrrd"
    path.write_bytes(b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 100000 100000 100000\nencoding: gzip\n\n")
    with pytest.raises(ImplausibleSizeError, match="voxels"):
        fileio.read_labelmap(path)


def test_decompression_is_bounded_by_the_declared_size(tmp_path: Path) -> None:
    header = b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 2 2 2\nencoding: gzip\n\n"
    (tmp_path / "bomb.nrrd").write_bytes(header + gzip.compress(bytes(50_000_000)))
    segmentation = fileio.read_labelmap(tmp_path / "bomb.nrrd")
    assert segmentation.layers[0].labels.shape == (2, 2, 2)


@pytest.mark.parametrize(
    "content, error, message",
    [
        (b"hello world", LabelFileError, "not a NRRD file"),
        (b"NRRD0004\ntype: float\ndimension: 3\nsizes: 2 1 1\nencoding: raw\n\n" + np.float32([0.5, 1]).tobytes(),
         LabelFileError, "non-integer"),
        (b"NRRD0004\ntype: short\ndimension: 3\nsizes: 2 1 1\nencoding: raw\n\n" + np.int16([-1, 1]).tobytes(),
         LabelFileError, "negative"),
        (b"NRRD0004\ntype: uint8\ndimension: 2\nsizes: 2 1\nencoding: raw\n\n\x00\x01", LabelFileError, "3D"),
    ],
)
def test_bad_nrrd_files(tmp_path: Path, content: bytes, error: type, message: str) -> None:
    path = tmp_path / "bad.nrrd"
    path.write_bytes(content)
    with pytest.raises(error, match=message):
        fileio.read_segmentation_file(path)


def test_corrupt_nifti_and_unknown_types(tmp_path: Path) -> None:
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(gzip.compress(b"\x00" * 100))
    with pytest.raises(LabelFileError, match="NIfTI"):
        fileio.read_segmentation_file(bad)
    (tmp_path / "x.mha").write_bytes(b"x")
    with pytest.raises(LabelFileError, match="unknown file type"):
        fileio.read_segmentation_file(tmp_path / "x.mha")
    with pytest.raises(LabelFileError, match="does not exist"):
        fileio.read_segmentation_file(tmp_path / "missing.nii.gz")


def test_seg_nrrd_with_undescribed_voxels_is_rejected(tmp_path: Path) -> None:
    segmentation = Segmentation(
        Geometry((2, 2, 2), np.eye(4)), [Layer(np.array([[[0, 1], [2, 0]], [[0, 0], [0, 0]]], np.uint8), [])]
    )
    segmentation.layers[0].segments.append(Segment(1, "one"))
    path = fileio.write_seg_nrrd(segmentation, tmp_path / "x.seg.nrrd")
    with pytest.raises(UndescribedLabelError, match="x.seg.nrrd"):
        fileio.read_seg_nrrd(path)
    assert issubclass(LabelFileError, LabelmapSegError)


def test_terminology_survives_nifti_sidecar(tmp_path: Path) -> None:
    terminology = Terminology(
        Code("123037004", "SCT", "Anatomical Structure"), Code("64033007", "SCT", "Kidney"),
        type_modifier=Code("24028007", "SCT", "Right"),
    )
    segmentation = make_segmentation(layers=[[4]])
    segmentation.layers[0].segments[0] = replace(segmentation.layers[0].segments[0], terminology=terminology)
    back = fileio.read_labelmap(fileio.write_nifti(segmentation, tmp_path / "k.nii.gz")[0])
    assert back.segments[0].terminology.same_codes(terminology)


# --------------------------------------------------------------------------- light path == MRML path


@pytest.mark.mrml
@pytest.mark.parametrize("name", SLICERIO_FILES)
def test_light_and_mrml_readers_give_identical_models(data_dir: Path, mrml_scene, name: str) -> None:
    """pynrrd-free fileio and Slicer's vtkMRMLSegmentationStorageNode (+ mrml.py) agree."""
    from DICOMLabelmapSegLib.mrml import segmentation_from_node

    light = fileio.read_seg_nrrd(data_dir / "slicerio" / name)
    mrml = segmentation_from_node(_load_with_slicer(mrml_scene, data_dir / "slicerio" / name))
    assert differences(light, mrml) == []


@pytest.mark.mrml
def test_slicer_reads_our_seg_nrrd_identically(tmp_path: Path, mrml_scene) -> None:
    from DICOMLabelmapSegLib.mrml import segmentation_from_node

    segmentation = make_segmentation(
        Geometry((4, 6, 5), make_affine(oblique=True), None), layers=[[1, 2, 300], [7]], empty=[2]
    )
    first = segmentation.layers[0].segments[0]
    segmentation.layers[0].segments[0] = replace(
        first, name="Läsion 1", algorithm_type=SegmentAlgorithmType.AUTOMATIC, algorithm_name="nnU-Net",
        tracking_id="lesion-1", tracking_uid="2.25.1234",
    )
    path = fileio.write_seg_nrrd(segmentation, tmp_path / "ours.seg.nrrd")
    assert differences(segmentation, segmentation_from_node(_load_with_slicer(mrml_scene, path))) == []


@pytest.mark.mrml
def test_we_read_seg_nrrd_written_by_slicer_like_slicer(tmp_path: Path, mrml_scene, slicer_core) -> None:
    """A file Slicer writes: light path == MRML path, and every segment keeps its voxels and fields.

    (Slicer renumbers the label values of additional layers from 1 when it writes a file.)
    """
    from DICOMLabelmapSegLib.mrml import node_from_segmentation, segmentation_from_node

    segmentation = make_segmentation(Geometry((4, 6, 5), make_affine(oblique=True), None), layers=[[1, 3], [2]])
    node = node_from_segmentation(segmentation, mrml_scene, placeInSubjectHierarchy=False)
    path = tmp_path / "slicer.seg.nrrd"
    storage = slicer_core.slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(path))
    assert storage.WriteData(node) == 1
    light = fileio.read_seg_nrrd(path)
    assert differences(light, segmentation_from_node(_load_with_slicer(mrml_scene, path))) == []
    assert light.geometry.same_as(segmentation.geometry)
    for expected_layer, actual_layer in zip(segmentation.layers, light.layers):
        for expected in expected_layer.segments:
            actual = next(s for s in actual_layer.segments if s.name == expected.name)
            assert replace(actual, label_value=expected.label_value, terminology=expected.terminology) == expected
            assert actual.terminology.same_codes(expected.terminology)
            np.testing.assert_array_equal(
                actual_layer.labels == actual.label_value, expected_layer.labels == expected.label_value
            )


def _load_with_slicer(scene, path: Path):
    import slicer

    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(path))
    assert storage.ReadData(node) == 1, f"Slicer could not read {path}"
    return node


# --------------------------------------------------------------------------- mask folders


def _split_into_masks(source: Path, folder: Path, classes: dict[str, str], extra_empty: int = 3) -> list[int]:
    image = nib.load(str(source))
    data = np.asarray(image.dataobj)
    folder.mkdir()
    present = sorted(set(np.unique(data).tolist()) - {0})
    empty = [int(k) for k in classes if int(k) not in present][:extra_empty]
    for label in present + empty:
        mask = nib.Nifti1Image((data == label).astype(np.uint8), image.affine, image.header)
        nib.save(mask, str(folder / f"{classes[str(label)]}.nii.gz"))
    return present


def test_totalsegmentator_mask_folder_equals_its_multilabel_map(data_dir: Path, tmp_path: Path,
                                                                 total_classes: Path) -> None:
    source = data_dir / "totalsegmentator" / "example_seg.nii.gz"
    classes = json.loads(total_classes.read_text())
    present = _split_into_masks(source, tmp_path / "masks", classes)
    from_masks = fileio.read_segmentation_file(tmp_path / "masks", total_classes)
    from_labelmap = fileio.read_labelmap(source, total_classes)
    assert [s.label_value for s in from_masks.segments] == present, "empty masks are skipped"
    assert differences(from_labelmap, from_masks) == []


def test_mask_folder_without_table_and_with_overlaps(tmp_path: Path) -> None:
    geometry = Geometry((3, 4, 5), make_affine(), None)
    folder = tmp_path / "masks"
    base = np.zeros(geometry.shape, np.uint8)
    masks = {"b_kidney": base.copy(), "a_liver": base.copy(), "c_tumor": base.copy()}
    masks["a_liver"][0] = 1
    masks["b_kidney"][2] = 1
    masks["c_tumor"][0, :2] = 1  # inside the liver
    for name, mask in masks.items():
        segmentation = Segmentation(geometry, [Layer(mask, [Segment(1, name)])])
        fileio.write_nifti(segmentation, folder / f"{name}.nii.gz", sidecar=False)
    result = fileio.read_mask_folder(folder)
    assert [[(s.label_value, s.name) for s in layer.segments] for layer in result.layers] == [
        [(1, "a_liver"), (2, "b_kidney")],
        [(3, "c_tumor")],
    ]
    np.testing.assert_array_equal(result.layers[1].labels == 3, masks["c_tumor"] == 1)
    assert result.geometry.same_as(geometry)


def test_mask_folder_problems(tmp_path: Path) -> None:
    from DICOMLabelmapSegLib.errors import GeometryMismatchError

    (tmp_path / "empty").mkdir()
    with pytest.raises(LabelFileError, match="no .nii"):
        fileio.read_mask_folder(tmp_path / "empty")
    folder = tmp_path / "mixed"
    one = make_segmentation(Geometry((2, 3, 4), make_affine(), None), layers=[[1]])
    other = make_segmentation(Geometry((2, 3, 4), make_affine(spacing=(1, 1, 1)), None), layers=[[1]])
    fileio.write_nifti(one, folder / "a.nii.gz", sidecar=False)
    fileio.write_nifti(other, folder / "b.nii.gz", sidecar=False)
    with pytest.raises(GeometryMismatchError, match="same grid"):
        fileio.read_mask_folder(folder)
    multi = tmp_path / "multi"
    fileio.write_nifti(make_segmentation(layers=[[1, 2]]), multi / "a.nii.gz", sidecar=False)
    with pytest.raises(LabelFileError, match="several labels"):
        fileio.read_mask_folder(multi)


def test_nifti_without_orientation_is_read_with_a_warning(tmp_path: Path, caplog) -> None:
    image = nib.Nifti1Image(np.ones((2, 3, 4), np.uint8), None)
    image.header.set_zooms((2.0, 3.0, 4.0))
    nib.save(image, str(tmp_path / "bare.nii"))
    segmentation = fileio.read_labelmap(tmp_path / "bare.nii")
    assert "no orientation" in caplog.text
    np.testing.assert_allclose(segmentation.geometry.spacing, [4.0, 3.0, 2.0])


# --------------------------------------------------------------------------- properties and NRRD variants



@st.composite
def segmentations(draw) -> Segmentation:
    shape = tuple(draw(st.integers(1, 5)) for _ in range(3))
    spacing = [draw(st.floats(0.1, 5.0)) for _ in range(3)]
    origin = [draw(st.floats(-500, 500)) for _ in range(3)]
    affine = make_affine(spacing, origin, oblique=draw(st.booleans()), flip_slices=draw(st.booleans()))
    names = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="|"),
                    min_size=1, max_size=12).map(str.strip).filter(bool)
    layers = []
    for _ in range(draw(st.integers(1, 3))):
        values = draw(st.lists(st.integers(1, 400), min_size=1, max_size=4, unique=True))
        dtype = np.uint16 if max(values) > 255 else np.uint8
        seed = draw(st.integers(0, 2**16))
        labels = np.random.default_rng(seed).choice(np.array([0, *values], dtype=dtype), size=shape)
        segments = [replace(make_segment_like(v, draw(names)), color=tuple(draw(st.tuples(*[st.integers(0, 255)] * 3))))
                    for v in values]
        layers.append(Layer(labels, segments))
    return Segmentation(Geometry(shape, affine), layers)


def make_segment_like(label_value: int, name: str) -> Segment:
    from synthetic import make_segment

    return replace(make_segment(label_value, label_value), name=name)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(segmentation=segmentations())
def test_any_segmentation_survives_seg_nrrd_and_nifti(tmp_path: Path, segmentation: Segmentation) -> None:
    back = fileio.read_seg_nrrd(fileio.write_seg_nrrd(segmentation, tmp_path / "p.seg.nrrd"))
    assert differences(segmentation, back, atol=1e-6) == []
    back = fileio.read_labelmap(fileio.write_nifti(segmentation, tmp_path / "p.nii.gz")[0])
    assert differences(segmentation, back, atol=1e-3) == []  # NIfTI stores the affine as float32


def test_nrrd_variants_detached_bzip2_and_layer_axis_last(tmp_path: Path) -> None:
    import bz2

    values = np.arange(24, dtype=np.uint8) % 3  # sizes 4 3 2 (i fastest)
    header = (
        "NRRD0004\ntype: uchar\ndimension: 3\nsizes: 4 3 2\nspace: RAS\n"
        "space directions: (1,0,0) (0,1,0) (0,0,1)\n"
    )
    (tmp_path / "data.raw.bz2").write_bytes(bz2.compress(values.tobytes()))
    (tmp_path / "detached.nhdr").write_text(header + "encoding: bzip2\ndata file: data.raw.bz2\n\n")
    detached = fileio.read_labelmap(tmp_path / "detached.nhdr")
    np.testing.assert_array_equal(detached.layers[0].labels, values.reshape(2, 3, 4))
    np.testing.assert_allclose(detached.geometry.affine[:3, 2], [-1, 0, 0])  # RAS x -> LPS -x
    # 4D with the layer axis last (ITK vector-image order): two layers
    layer_last = np.concatenate([values, 2 - values])  # header order i j k layer: the layer axis is slowest
    (tmp_path / "layers.nrrd").write_bytes(
        (
            b"NRRD0004\ntype: uchar\ndimension: 4\nsizes: 4 3 2 2\nspace: left-posterior-superior\n"
            b"space directions: (1,0,0) (0,1,0) (0,0,1) none\nkinds: domain domain domain list\nencoding: raw\n\n"
        )
        + layer_last.tobytes()
    )
    layered = fileio.read_labelmap(tmp_path / "layers.nrrd")
    assert len(layered.layers) == 2
    np.testing.assert_array_equal(layered.layers[1].labels, (2 - values).reshape(2, 3, 4))
    assert [s.name for s in layered.layers[1].segments] == ["Layer1_Segment_1", "Layer1_Segment_2"]
