"""The independent validators (Testing/validators.py) work, and they catch broken files.

Inputs are real files from the shared data folder: dcmqi's LABELMAP SEG (the only LABELMAP
written by another tool), highdicom's LABELMAP SEGs, and a LABELMAP built with highdicom
(not our writer) from dcmqi's real liver and partial-overlap masks on dcmqi's ct-3slice CT,
saved in every transfer syntax the project writes.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
import validators
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)
from validators import ValidationFailure

LABELMAP_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.7"
SYNTAXES = {
    "jpeg-ls": JPEGLSLossless,
    "rle": RLELossless,
    "jpeg2000": JPEG2000Lossless,
    "deflated": DeflatedExplicitVRLittleEndian,
    "explicit": ExplicitVRLittleEndian,
}
LABEL_VALUES = (1, 7, 42, 117, 200)  # gapped, as TotalSegmentator's are


def _ct_3slice(data_dir: Path) -> list[pydicom.Dataset]:
    series = [pydicom.dcmread(path) for path in sorted((data_dir / "dcmqi" / "ct-3slice").glob("*.dcm"))]
    for ds in series:
        if "SpecificCharacterSet" in ds and not ds.SpecificCharacterSet:
            del ds.SpecificCharacterSet  # empty in these files; highdicom >= 0.28 rejects ''
    return sorted(series, key=lambda ds: float(ds.ImagePositionPatient[2]))


def _real_labels(data_dir: Path, source: list[pydicom.Dataset]) -> np.ndarray:
    """dcmqi's partial-overlap masks, then its liver mask on top, as one (3, 512, 512) label map."""
    import highdicom as hd

    uids = [ds.SOPInstanceUID for ds in source]
    options = {"ignore_spatial_locations": True, "assert_missing_frames_are_empty": True}
    labels = np.zeros((len(source), 512, 512), np.uint8)
    overlaps = hd.seg.segread(data_dir / "dcmqi" / "partial_overlaps.dcm")
    for number, value in zip(overlaps.get_segment_numbers(), (3, 7, 42, 200, 117)):
        mask = overlaps.get_pixels_by_source_instance(uids, segment_numbers=[number], **options)[..., 0]
        labels[mask > 0] = value
    liver = hd.seg.segread(data_dir / "dcmqi" / "liver.dcm").get_pixels_by_source_instance(uids, **options)[..., 0]
    labels[liver > 0] = 1
    return labels


@dataclass(frozen=True)
class LabelmapFiles:
    labels: np.ndarray  # [k, j, i], slices in ascending z like the CT series
    stored: np.ndarray  # the same slices in the order the SEG stores its frames
    files: dict[str, Path]  # syntax name -> SEG file


@pytest.fixture(scope="module")
def labelmap_files(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> LabelmapFiles:
    """highdicom LABELMAP SEGs of a real label map in each transfer syntax."""
    from synthetic import highdicom_labelmap

    source = _ct_3slice(data_dir)
    labels = _real_labels(data_dir, source)
    assert set(np.unique(labels)) == {0, *LABEL_VALUES}, "the real masks should leave every label visible"
    folder = tmp_path_factory.mktemp("labelmaps")
    files = {}
    for name, uid in SYNTAXES.items():
        seg = highdicom_labelmap(
            source,
            labels,
            LABEL_VALUES,
            transfer_syntax_uid=ExplicitVRLittleEndian if uid == DeflatedExplicitVRLittleEndian else uid,
            omit_empty_frames=False,
        )
        if uid == DeflatedExplicitVRLittleEndian:
            seg.file_meta.TransferSyntaxUID = uid
        files[name] = folder / f"{name}.dcm"
        seg.save_as(files[name], enforce_file_format=True)
        assert pydicom.dcmread(files[name], stop_before_pixels=True).file_meta.TransferSyntaxUID == uid
    return LabelmapFiles(labels, _frames_in_file_order(labels, source, files["explicit"]), files)


def _frames_in_file_order(labels: np.ndarray, source: list[pydicom.Dataset], path: Path) -> np.ndarray:
    """The label slices in the order the SEG stores its frames (matched by Image Position Patient)."""
    z_of_slice = [float(ds.ImagePositionPatient[2]) for ds in source]
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    order = [
        z_of_slice.index(float(item.PlanePositionSequence[0].ImagePositionPatient[2]))
        for item in ds.PerFrameFunctionalGroupsSequence
    ]
    return labels[order]


def _without(path: Path, keyword: str, out: Path) -> Path:
    ds = pydicom.dcmread(path)
    delattr(ds, keyword)
    ds.save_as(out, enforce_file_format=True)
    return out


# ---- dciodvfy ---------------------------------------------------------------------------------


def test_dciodvfy_accepts_real_labelmap_seg(data_dir: Path) -> None:
    path = data_dir / "dcmqi" / "sparse-labelmap-ppv5.dcm"
    assert validators.dciodvfy_errors(path) == []
    assert "Segmentation" in validators.dciodvfy_output(path), "dciodvfy should recognise the SEG IOD"


@pytest.mark.parametrize("name", SYNTAXES)
def test_dciodvfy_accepts_labelmap_in_every_syntax(labelmap_files: LabelmapFiles, name: str) -> None:
    files = labelmap_files.files
    assert validators.dciodvfy_errors(files[name]) == []


@pytest.mark.parametrize("keyword", ["SegmentationType", "SegmentSequence"])
def test_dciodvfy_reports_missing_mandatory_attribute(data_dir: Path, tmp_path: Path, keyword: str) -> None:
    broken = _without(data_dir / "dcmqi" / "sparse-labelmap-ppv5.dcm", keyword, tmp_path / "broken.dcm")
    errors = validators.dciodvfy_errors(broken)
    assert any(keyword in line for line in errors), f"dciodvfy did not report the missing {keyword}: {errors}"


def test_dciodvfy_checks_deflated_files_through_inflated_twin(labelmap_files: LabelmapFiles, tmp_path: Path) -> None:
    files = labelmap_files.files
    broken = _without(files["deflated"], "SegmentationType", tmp_path / "broken-deflated.dcm")
    assert pydicom.dcmread(broken).file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    assert any("SegmentationType" in line for line in validators.dciodvfy_errors(broken))


# ---- DCMTK ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SYNTAXES)
def test_dcmtk_decodes_every_syntax_losslessly(labelmap_files: LabelmapFiles, name: str) -> None:
    decoded = validators.dcmtk_decode(labelmap_files.files[name])
    assert decoded.shape == labelmap_files.stored.shape
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, labelmap_files.stored)


@pytest.mark.parametrize(
    "relative", ["dcmqi/sparse-labelmap-ppv5.dcm", "highdicom/seg_image_sm_control_labelmap_palette_color.dcm"]
)
def test_dcmtk_matches_pydicom_on_real_labelmaps(data_dir: Path, relative: str) -> None:
    path = data_dir / relative
    expected = pydicom.dcmread(path).pixel_array
    decoded = validators.dcmtk_decode(path)
    np.testing.assert_array_equal(decoded.reshape(expected.shape), expected)


def test_dcmtk_unpacks_binary_segmentation(data_dir: Path) -> None:
    path = data_dir / "dcmqi" / "liver.dcm"
    ds = pydicom.dcmread(path)
    assert ds.BitsAllocated == 1
    np.testing.assert_array_equal(validators.dcmtk_decode(path), ds.pixel_array)


def test_dcmtk_detects_corrupt_jpeg_ls(labelmap_files: LabelmapFiles, tmp_path: Path) -> None:
    raw = bytearray(labelmap_files.files["jpeg-ls"].read_bytes())
    start = raw.index(b"\xff\xd8", len(raw) // 2)  # a JPEG-LS frame start (SOI) in the pixel data
    raw[start + 40 : start + 200] = bytes(160)  # wipe scan header and data
    broken = tmp_path / "corrupt-jpeg-ls.dcm"
    broken.write_bytes(bytes(raw))
    try:
        decoded = validators.dcmtk_decode(broken)
    except ValidationFailure as failure:
        assert "dcmdjpls" in str(failure)
    else:
        assert not np.array_equal(decoded, labelmap_files.stored), (
            "a wiped JPEG-LS frame decoded to the original labels"
        )


# ---- dcmqi ------------------------------------------------------------------------------------


def test_dcmqi_reads_its_own_labelmap(data_dir: Path, tmp_path: Path) -> None:
    images, meta = validators.dcmqi_read(data_dir / "dcmqi" / "sparse-labelmap-ppv5.dcm", tmp_path)
    assert len(images) == 1
    labels, affine = validators.read_nrrd_kji(images[0])
    reference, reference_affine = validators.read_nrrd_kji(data_dir / "dcmqi" / "sparse_labelmap_ppv5_seg.nrrd")
    np.testing.assert_array_equal(labels, reference)
    np.testing.assert_allclose(affine, reference_affine, atol=1e-4)
    segment_labels = {item["labelID"]: item["SegmentLabel"] for item in meta["segmentAttributes"][0]}
    assert set(segment_labels) <= {0, *np.unique(labels).tolist()}
    assert "Liver" in segment_labels.values()


def test_dcmqi_reads_highdicom_labelmap(labelmap_files: LabelmapFiles, tmp_path: Path) -> None:
    images, meta = validators.dcmqi_read(labelmap_files.files["rle"], tmp_path)
    assert len(images) == 1
    array, _ = validators.read_nrrd_kji(images[0])
    np.testing.assert_array_equal(array, labelmap_files.labels)
    assert sorted(item["labelID"] for item in meta["segmentAttributes"][0]) == list(LABEL_VALUES)


def test_dcmqi_rejects_non_dicom(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"not a DICOM file" * 64)
    with pytest.raises(ValidationFailure, match="segimage2itkimage"):
        validators.dcmqi_read(garbage, tmp_path / "out")


# ---- dcmjs ------------------------------------------------------------------------------------


def test_dcmjs_parses_real_labelmap(data_dir: Path) -> None:
    path = data_dir / "highdicom" / "seg_image_sm_control_labelmap_palette_color.dcm"
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    summary = validators.dcmjs_parse(path)
    assert summary["sopClassUID"] == LABELMAP_SOP_CLASS
    assert summary["segmentationType"] == "LABELMAP"
    assert summary["numberOfFrames"] == int(ds.NumberOfFrames)
    assert summary["photometricInterpretation"] == "PALETTE COLOR"
    assert [s["label"] for s in summary["segments"]] == [item.SegmentLabel for item in ds.SegmentSequence]


@pytest.mark.parametrize("name", SYNTAXES)
def test_dcmjs_parses_every_syntax(labelmap_files: LabelmapFiles, name: str) -> None:
    files = labelmap_files.files
    summary = validators.dcmjs_parse(files[name])
    assert summary["transferSyntaxUID"] == SYNTAXES[name]
    assert summary["numberOfFrames"] == 3
    assert [s["number"] for s in summary["segments"]] == [0, *LABEL_VALUES]  # highdicom adds background 0
    assert summary["pixelDataBytes"] > 0


def test_dcmjs_rejects_truncated_file(data_dir: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes((data_dir / "dcmqi" / "sparse-labelmap-ppv5.dcm").read_bytes()[:100])
    with pytest.raises(ValidationFailure, match="dcmjs"):
        validators.dcmjs_parse(truncated)


# ---- availability policy ----------------------------------------------------------------------


def test_missing_tool_skips_locally_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validators, "tool_path", lambda name: None)
    monkeypatch.setattr(validators, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match="make setup"):
        validators.require_tool("dcmdjpls", "apt-get install dcmtk")
    monkeypatch.setattr(validators, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match="unavailable in CI"):
        validators.require_tool("dcmdjpls", "apt-get install dcmtk")


def test_tools_are_installed_in_ci() -> None:
    if not validators.IN_CI:
        pytest.skip("only enforced in CI (CI=true)")
    for name in ("dciodvfy", "segimage2itkimage", "dcmdjpls", "dcmdrle", "dcmconv", "dcmdump", "node"):
        assert validators.tool_path(name) or shutil.which(name), f"{name} missing in CI"
    assert (validators.JS_DIR / "node_modules" / "dcmjs").is_dir(), "dcmjs missing in CI"
