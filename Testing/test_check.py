"""The conformance checker (dicom/check.py), the compatibility section (dicom/compat.py) and ``check`` (cli/check.py).

* Our outputs in every transfer syntax x palette x uint8/uint16: no error.
* Every SEG in the shared data: exactly the findings reviewed below (foreign files' real defects).
* Known-defective foreign files built in code (a SEG without Type 1 codes, lossy syntaxes): exactly their defect.
* One constructed violation per rule: that rule fires (and is the only error).
* Compatibility issues and export-time CompatibilityWarning; the CLI's text, JSON and exit codes.
"""

from __future__ import annotations

import copy
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import DATA_DIR
from DICOMLabelmapSegLib.cli import check as cli_check
from DICOMLabelmapSegLib.cli.main import main
from DICOMLabelmapSegLib.dicom import check, compat
from DICOMLabelmapSegLib.dicom.check import Rule, Severity, check_dataset, check_file, errors
from DICOMLabelmapSegLib.dicom.source import geometry_from_source, read_source_series
from DICOMLabelmapSegLib.dicom.syntax import TransferSyntax
from DICOMLabelmapSegLib.dicom.writer import ExportOptions, write_labelmap_seg
from pydicom.dataset import Dataset
from synthetic import make_affine, make_ct_series, make_segmentation
from validators import assert_check_clean

# ---------------------------------------------------------------- our outputs


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    paths = make_ct_series(tmp_path_factory.mktemp("ct"), shape=(4, 20, 18), affine=make_affine(oblique=True))
    series = read_source_series(paths)
    return series, geometry_from_source(series)


@pytest.fixture(scope="module")
def outputs(source, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple, Path]:  # noqa: ANN001
    series, geometry = source
    root = tmp_path_factory.mktemp("ours")
    written: dict[tuple, Path] = {}
    for syntax in TransferSyntax:
        if syntax.missing_encoder_packages():  # e.g. imagecodecs in the Slicer 5.12 compatibility run
            continue
        for palette in (False, True):
            for wide in (False, True):
                labels = [1, 300, 65535] if wide else [1, 2, 7, 255]
                segmentation = make_segmentation(geometry, layers=[labels], empty=[2] if not wide else [])
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", compat.CompatibilityWarning)
                    files = write_labelmap_seg(
                        segmentation,
                        series,
                        root / f"{syntax.value}-{palette}-{wide}",
                        ExportOptions(transfer_syntax=syntax, palette_color=palette),
                    )
                written[(syntax, palette, wide)] = files[0]
    return written


def test_our_outputs_have_no_error_and_no_warning(outputs) -> None:  # noqa: ANN001
    for case, path in outputs.items():
        findings = check_file(path)
        assert [f for f in findings if f.severity != Severity.INFO] == [], f"{case}: {findings}"
        assert_check_clean(path)


@pytest.fixture
def base(outputs) -> Dataset:  # noqa: ANN001
    """A fresh copy of our explicit-VR uint8 MONOCHROME2 output."""
    return pydicom.dcmread(outputs[(TransferSyntax.EXPLICIT, False, False)])


def _segment(ds: Dataset, number: int) -> Dataset:
    return next(item for item in ds.SegmentSequence if int(item.SegmentNumber) == number)


def _only_error(ds: Dataset, rule: Rule) -> check.Finding:
    found = errors(check_dataset(ds))
    assert [f.rule for f in found] == [rule], found
    assert "\n" not in found[0].message
    return found[0]


# ---------------------------------------------------------------- one constructed violation per rule


def test_rule_undescribed_pixel_value(base: Dataset) -> None:
    described = {int(item.SegmentNumber) for item in base.SegmentSequence}
    base.SegmentSequence = [item for item in base.SegmentSequence if int(item.SegmentNumber) != 7]
    assert 7 in described
    assert "7" in _only_error(base, Rule.UNDESCRIBED_PIXEL_VALUE).message


def test_rule_padding_value_is_a_segment(base: Dataset) -> None:
    base.PixelPaddingValue = 7
    assert "7" in _only_error(base, Rule.PADDING_VALUE).message


def test_rule_padding_value_does_not_fit(base: Dataset) -> None:
    base.PixelPaddingValue = 300  # 8-bit pixels
    _only_error(base, Rule.PADDING_VALUE)


def _segment_zero(ds: Dataset) -> Dataset:
    """The Background item (segment 0) of ``ds``, added if the writer did not write one."""
    for item in ds.SegmentSequence:
        if int(item.SegmentNumber) == 0:
            return item
    item = copy.deepcopy(ds.SegmentSequence[0])
    item.SegmentNumber = 0
    item.SegmentLabel = "Background"
    item.SegmentedPropertyTypeCodeSequence[0].CodeValue = "125040"
    item.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator = "DCM"
    item.SegmentedPropertyTypeCodeSequence[0].CodeMeaning = "Background"
    ds.SegmentSequence.insert(0, item)
    return item


def test_padding_with_segment_zero_is_a_warning(base: Dataset) -> None:
    _segment_zero(base)
    base.PixelPaddingValue = 254
    findings = check_dataset(base)
    assert errors(findings) == []
    assert [f.rule for f in findings if f.severity == Severity.WARNING] == [Rule.PADDING_VALUE]


def test_rule_background_segment_not_background(base: Dataset) -> None:
    _segment_zero(base).SegmentedPropertyTypeCodeSequence[0].CodeValue = "85756007"
    _segment_zero(base).SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator = "SCT"
    findings = check_dataset(base)
    assert errors(findings) == []
    assert [f.rule for f in findings if f.severity == Severity.WARNING] == [Rule.BACKGROUND_SEGMENT]


def test_rule_segment_numbers_duplicate(base: Dataset) -> None:
    base.SegmentSequence.append(copy.deepcopy(_segment(base, 7)))
    _only_error(base, Rule.SEGMENT_NUMBERS)


def test_rule_frame_positions_missing(base: Dataset) -> None:
    del base.PerFrameFunctionalGroupsSequence[1].PlanePositionSequence
    assert "1 of 4 frames" in _only_error(base, Rule.FRAME_POSITIONS).message


def test_rule_frame_positions_not_coplanar(base: Dataset) -> None:
    position = base.PerFrameFunctionalGroupsSequence[2].PlanePositionSequence[0]
    orientation = np.array(
        base.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient, dtype=float
    )
    moved = np.array(position.ImagePositionPatient, dtype=float) + 3.0 * orientation[:3]  # along a row: in-plane
    position.ImagePositionPatient = [f"{v:.6f}" for v in moved]
    _only_error(base, Rule.FRAME_POSITIONS)


def test_sheared_stack_is_a_warning(base: Dataset) -> None:
    """Every frame moved by the same in-plane step per slice (gantry tilt): legal, but a warning."""
    orientation = np.array(
        base.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient, dtype=float
    )
    for index, group in enumerate(base.PerFrameFunctionalGroupsSequence):
        position = group.PlanePositionSequence[0]
        moved = np.array(position.ImagePositionPatient, dtype=float) + 0.5 * index * orientation[:3]
        position.ImagePositionPatient = [f"{v:.6f}" for v in moved]
    findings = check_dataset(base)
    assert errors(findings) == []
    assert [(f.rule, f.severity) for f in findings] == [(Rule.FRAME_POSITIONS, Severity.WARNING)]
    assert "sheared" in findings[0].message


def test_rule_frame_positions_repeated_in_a_labelmap(base: Dataset) -> None:
    groups = base.PerFrameFunctionalGroupsSequence
    groups[1].PlanePositionSequence[0].ImagePositionPatient = groups[0].PlanePositionSequence[0].ImagePositionPatient
    found = errors(check_dataset(base))
    assert Rule.FRAME_POSITIONS in [f.rule for f in found]
    assert "repeat" in " ".join(f.message for f in found)


def test_rule_frame_spacing_irregular(base: Dataset) -> None:
    groups = base.PerFrameFunctionalGroupsSequence
    first = np.array(groups[0].PlanePositionSequence[0].ImagePositionPatient, dtype=float)
    second = np.array(groups[1].PlanePositionSequence[0].ImagePositionPatient, dtype=float)
    odd = first + 0.4 * (second - first)
    groups[1].PlanePositionSequence[0].ImagePositionPatient = [f"{v:.6f}" for v in odd]
    findings = check_dataset(base)
    assert errors(findings) == []
    assert [f.rule for f in findings if f.severity == Severity.WARNING] == [Rule.FRAME_SPACING]


def test_omitted_empty_slices_are_info(base: Dataset) -> None:
    del base.PerFrameFunctionalGroupsSequence[1]  # frames 1 and 3 remain around a gap of two spacings
    frames = base.pixel_array[[0, 2, 3]]
    base.PixelData = frames.tobytes()
    base.NumberOfFrames = 3
    findings = check_dataset(base)
    assert [f.rule for f in findings] == [Rule.FRAME_SPACING] and findings[0].severity == Severity.INFO


def test_rule_dimension_indices_disagree_with_positions(base: Dataset) -> None:
    groups = base.PerFrameFunctionalGroupsSequence
    first = groups[0].FrameContentSequence[0]
    second = groups[1].FrameContentSequence[0]
    first.DimensionIndexValues, second.DimensionIndexValues = second.DimensionIndexValues, first.DimensionIndexValues
    _only_error(base, Rule.DIMENSION_INDICES)


def test_rule_dimension_indices_wrong_count(base: Dataset) -> None:
    base.PerFrameFunctionalGroupsSequence[0].FrameContentSequence[0].DimensionIndexValues = [1, 1, 1]
    _only_error(base, Rule.DIMENSION_INDICES)


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("PixelRepresentation", 1),
        ("BitsStored", 7),
        ("PhotometricInterpretation", "MONOCHROME1"),
        ("BitsAllocated", 32),
        ("SamplesPerPixel", 3),
    ],
)
def test_rule_pixel_format(base: Dataset, keyword: str, value: object) -> None:
    setattr(base, keyword, value)
    assert Rule.PIXEL_FORMAT in [f.rule for f in errors(check_dataset(base, decode_pixels=False))]


def test_rule_palette_lut_does_not_cover_the_segments(outputs) -> None:  # noqa: ANN001
    ds = pydicom.dcmread(outputs[(TransferSyntax.EXPLICIT, True, False)])
    for color in ("Red", "Green", "Blue"):
        setattr(ds, f"{color}PaletteColorLookupTableDescriptor", [100, 0, 16])
        setattr(ds, f"{color}PaletteColorLookupTableData", bytes(200))
    assert "255" in _only_error(ds, Rule.PALETTE_LUT).message


def test_rule_cielab_with_palette(outputs) -> None:  # noqa: ANN001
    ds = pydicom.dcmread(outputs[(TransferSyntax.EXPLICIT, True, False)])
    _segment(ds, 1).RecommendedDisplayCIELabValue = [50000, 30000, 30000]
    _only_error(ds, Rule.CIELAB_WITH_PALETTE)


@pytest.mark.parametrize(
    ("field", "value"),
    [("CodingSchemeDesignator", "X" * 40), ("CodeValue", "12\n34"), ("CodeMeaning", "m" * 65), ("CodeValue", "a\\b")],
)
def test_rule_code_vr(base: Dataset, field: str, value: str) -> None:
    setattr(_segment(base, 1).SegmentedPropertyTypeCodeSequence[0], field, value)
    assert _only_error(base, Rule.CODE_VR).message.startswith("segment 1")


def test_rule_lossy_image_compression_flag(base: Dataset) -> None:
    base.LossyImageCompression = "01"
    _only_error(base, Rule.LOSSY_COMPRESSION)


def test_rule_pixel_data_undecodable(outputs) -> None:  # noqa: ANN001
    ds = pydicom.dcmread(outputs[(TransferSyntax.RLE, False, False)])
    ds.PixelData = ds.PixelData[:40] + bytes(len(ds.PixelData) - 40)
    _only_error(ds, Rule.PIXEL_DATA)


def test_rule_readable() -> None:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    assert [f.rule for f in check_dataset(ds)] == [Rule.READABLE]


def test_rule_required_code_and_binary_checks(source, tmp_path: Path) -> None:  # noqa: ANN001
    """BINARY rules: frames referencing undescribed segments; Segment Numbers 1, 2, 3, ..."""
    series, _ = source
    ds = _binary_seg(series)
    assert errors(check_dataset(ds)) == []
    broken = copy.deepcopy(ds)
    broken.SegmentSequence[0].SegmentNumber = 5
    rules = {f.rule for f in errors(check_dataset(broken))}
    assert rules == {Rule.SEGMENT_NUMBERS, Rule.UNDESCRIBED_PIXEL_VALUE}


def _binary_seg(series: list[Dataset]) -> Dataset:
    import highdicom as hd

    tissue = hd.sr.CodedConcept("85756007", "SCT", "Tissue")
    mask = np.zeros((len(series), int(series[0].Rows), int(series[0].Columns)), dtype=bool)
    mask[1:3, 4:9, 5:10] = True
    return hd.seg.Segmentation(
        source_images=series,
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[hd.seg.SegmentDescription(1, "blob", tissue, tissue, "MANUAL")],
        series_instance_uid=hd.UID(),
        series_number=5,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="test",
        manufacturer_model_name="test",
        software_versions="1",
        device_serial_number="1",
    )


# ---------------------------------------------------------------- known-defective foreign files, built in code


def test_syngo_via_like_seg_without_type_1_codes(base: Dataset) -> None:
    """A Siemens syngo.via SEG without Segmented Property Category/Type: exactly those findings."""
    item = _segment(base, 1)
    del item.SegmentedPropertyCategoryCodeSequence
    del item.SegmentedPropertyTypeCodeSequence
    found = errors(check_dataset(base))
    assert [f.rule for f in found] == [Rule.REQUIRED_CODE, Rule.REQUIRED_CODE]
    assert all(f.message.startswith("segment 1 has no Segmented Property") for f in found)


@pytest.mark.parametrize(
    ("written", "relabelled"),
    [(TransferSyntax.JPEG_2000, "1.2.840.10008.1.2.4.91"), (TransferSyntax.JPEG_LS, "1.2.840.10008.1.2.4.81")],
)
def test_lossy_syntax_labelmaps_report_exactly_that(outputs, written: TransferSyntax, relabelled: str) -> None:  # noqa: ANN001
    """The code stream stays decodable; only the transfer syntax says 'may be lossy'."""
    ds = pydicom.dcmread(outputs[(written, False, False)])
    ds.file_meta.TransferSyntaxUID = relabelled
    finding = _only_error(ds, Rule.LOSSY_COMPRESSION)
    assert relabelled in finding.message


def test_lossy_jpeg_2000_really_lossy(outputs, tmp_path: Path) -> None:  # noqa: ANN001
    """Frames re-encoded with lossy JPEG 2000 (issue 13 item 1): lossy-compression (syntax and flag) is reported."""
    from PIL import Image
    from pydicom.encaps import encapsulate

    ds = pydicom.dcmread(outputs[(TransferSyntax.EXPLICIT, False, False)])
    streams = []
    for frame in ds.pixel_array:
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(frame), mode="L").save(
            buffer,
            format="JPEG2000",
            irreversible=True,
            quality_mode="rates",
            quality_layers=[40],
            num_resolutions=3,
            no_jp2=True,
        )
        streams.append(buffer.getvalue())
    ds.PixelData = encapsulate(streams)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.91"
    ds.LossyImageCompression = "01"
    path = tmp_path / "lossy.dcm"
    ds.save_as(path)
    found = errors(check_file(path))
    assert [f.rule for f in found].count(Rule.LOSSY_COMPRESSION) == 2
    # the damage itself: values no segment describes, where the lossy coding invented them
    assert {f.rule for f in found} <= {Rule.LOSSY_COMPRESSION, Rule.UNDESCRIBED_PIXEL_VALUE}


# ---------------------------------------------------------------- the shared data

#: Reviewed findings (rule, severity) of the foreign SEGs in the shared data; everything else: no finding.
SHARED_FINDINGS = {
    "dcmqi/partial_overlaps.dcm": [(Rule.DIMENSION_INDICES, Severity.WARNING)],
    "dcmqi/sparse-labelmap-ppv5.dcm": [(Rule.PADDING_VALUE, Severity.WARNING)],
    "highdicom/seg_image_ct_binary_overlap.dcm": [(Rule.FRAME_SPACING, Severity.INFO)],
}


def _shared_segs() -> list[str]:
    """Every DICOM Segmentation in the shared data, whatever its file name (dcmqi's are '*.seg' too)."""
    if DATA_DIR is None:
        return []
    found = []
    for path in sorted(p for p in DATA_DIR.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
        except Exception:  # noqa: BLE001, S112 - not DICOM
            continue
        if str(ds.get("SOPClassUID", "")) in (check.LABELMAP_SEGMENTATION_STORAGE, check.SEGMENTATION_STORAGE):
            found.append(str(path.relative_to(DATA_DIR)))
    return found


def test_the_shared_data_holds_segs_of_three_writers() -> None:
    if DATA_DIR is None:
        pytest.skip("real test data not found")
    segs = _shared_segs()
    assert len(segs) >= 15 and {s.split("/")[0] for s in segs} == {"dcmqi", "highdicom"}


@pytest.mark.parametrize("relative", _shared_segs() or ["(no data)"])
def test_shared_segs_give_exactly_the_reviewed_findings(relative: str, data_dir: Path) -> None:
    findings = check_file(data_dir / relative)
    assert [(f.rule, f.severity) for f in findings] == SHARED_FINDINGS.get(relative, []), findings


# ---------------------------------------------------------------- compatibility


def test_compatibility_of_our_outputs(outputs) -> None:  # noqa: ANN001
    def consumers(case: tuple, effect: compat.Effect) -> set[str]:
        ds = pydicom.dcmread(outputs[case], stop_before_pixels=True)
        return {issue.consumer for issue in compat.consumer_issues(ds) if issue.effect == effect}

    plain = (TransferSyntax.RLE, False, False)
    assert consumers(plain, compat.Effect.MISREADS) == set()
    assert compat.GDCM in consumers(plain, compat.Effect.REFUSES)
    assert compat.DCMQI not in consumers(plain, compat.Effect.REFUSES)
    assert consumers((TransferSyntax.RLE, False, True), compat.Effect.MISREADS) == {
        compat.CORNERSTONE,
        compat.HIGHDICOM,
    }
    assert consumers((TransferSyntax.RLE, True, False), compat.Effect.MISREADS) == {compat.CORNERSTONE}
    assert compat.DCMQI in consumers((TransferSyntax.JPEG_LS, False, False), compat.Effect.REFUSES)
    assert compat.DCMQI in consumers((TransferSyntax.JPEG_2000, False, False), compat.Effect.REFUSES)
    assert compat.DCIODVFY in consumers((TransferSyntax.DEFLATED, False, False), compat.Effect.REFUSES)


def test_export_warns_once_per_misreading_consumer(source, tmp_path: Path) -> None:  # noqa: ANN001
    series, geometry = source
    segmentation = make_segmentation(geometry, layers=[[1, 300]])
    with pytest.warns(compat.CompatibilityWarning) as caught:
        files = write_labelmap_seg(segmentation, series, tmp_path / "wide", ExportOptions(palette_color=True))
    lines = [str(w.message) for w in caught if issubclass(w.category, compat.CompatibilityWarning)]
    assert len(lines) == 3 and all("\n" not in line for line in lines)
    assert sum("cornerstone3D" in line for line in lines) == 2 and any("highdicom" in line for line in lines)
    assert all("; " in line for line in lines)  # consumer, reason; alternative
    # never changes labels: the file still holds 300
    assert 300 in np.unique(pydicom.dcmread(files[0]).pixel_array)
    with warnings.catch_warnings():
        warnings.simplefilter("error", compat.CompatibilityWarning)
        write_labelmap_seg(make_segmentation(geometry, layers=[[1, 2]]), series, tmp_path / "plain")


# ---------------------------------------------------------------- the CLI


def test_cli_text_json_and_exit_codes(outputs, base: Dataset, tmp_path: Path) -> None:  # noqa: ANN001
    good = outputs[(TransferSyntax.EXPLICIT, False, False)]
    out = io.StringIO()
    args = _parse([str(good)])
    assert cli_check.run(args, out) == 0
    assert f"{good}: OK" in out.getvalue() and "compatibility:" in out.getvalue()

    warned = tmp_path / "warned.dcm"
    ds = copy.deepcopy(base)
    _segment_zero(ds).SegmentedPropertyTypeCodeSequence[0].CodeValue = "85756007"
    _segment_zero(ds).SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator = "SCT"
    ds.save_as(warned)
    assert cli_check.run(_parse([str(warned)]), io.StringIO()) == cli_check.EXIT_WARNINGS

    bad = tmp_path / "bad.dcm"
    _segment(base, 1).SegmentedPropertyTypeCodeSequence[0].CodeMeaning = "x\x1b]0;owned\x07"
    _segment(base, 1).SegmentedPropertyTypeCodeSequence[0].CodeValue = "1\n2"
    base.save_as(bad)
    out = io.StringIO()
    assert cli_check.run(_parse([str(good), str(bad), "--json"]), out) == 1
    results = json.loads(out.getvalue())
    assert [r["worst"] for r in results] == [None, "error"]
    assert results[1]["findings"][0]["rule"] == "code-vr"
    out = io.StringIO()
    cli_check.run(_parse([str(bad)]), out)
    assert "\x1b" not in out.getvalue() and "\\x1b" in out.getvalue()
    assert all(line.startswith(("  ", str(bad))) for line in out.getvalue().splitlines())

    # through the real command line: folders are searched, non-SEG files in them skipped
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "notes.txt").write_text("not DICOM")
    (folder / "a.dcm").write_bytes(good.read_bytes())
    assert main(["check", str(folder), "--json"]) == 0
    assert main(["check", str(folder / "notes.txt")]) == 1

    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom")
    assert cli_check.run(_parse([str(junk)]), io.StringIO()) == 1
    assert cli_check.main([str(tmp_path / "empty_dir_missing")]) == 1  # missing file: readable error


def _parse(argv: list[str]):  # noqa: ANN202
    import argparse

    parser = argparse.ArgumentParser()
    cli_check.configure(parser)
    return parser.parse_args(argv)


# ---------------------------------------------------------------- honest metadata for missing codes


def test_missing_type_1_codes_stay_unspecified_through_seg_nrrd_and_export(
    base: Dataset,
    source,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,  # noqa: ANN001
) -> None:
    """A SEG without Segmented Property Category/Type: nothing invented (not 'Tissue'), a warning names the
    segment, the .seg.nrrd carries the placeholder, and a later export writes the placeholder (warning again),
    never a real concept."""
    import logging

    from DICOMLabelmapSegLib.dicom.reader import read_segmentation
    from DICOMLabelmapSegLib.formats.fileio import read_seg_nrrd, write_seg_nrrd
    from DICOMLabelmapSegLib.model import DEFAULT_TERMINOLOGY, UNSPECIFIED_CODE

    item = _segment(base, 7)
    del item.SegmentedPropertyCategoryCodeSequence
    del item.SegmentedPropertyTypeCodeSequence
    syngo = tmp_path / "syngo.dcm"
    base.save_as(syngo)
    with caplog.at_level(logging.WARNING, logger="DICOMLabelmapSegLib"):
        segmentation = read_segmentation([syngo])
    segment = segmentation.layers[0].segment_for_label(7)
    assert segment.terminology.category == UNSPECIFIED_CODE and segment.terminology.type == UNSPECIFIED_CODE
    assert not segment.terminology.same_codes(DEFAULT_TERMINOLOGY)
    assert any("Segment 7" in r.getMessage() and "unspecified" in r.getMessage() for r in caplog.records)
    others = [s for s in segmentation.layers[0].segments if s.label_value != 7]
    assert all(s.terminology.category != UNSPECIFIED_CODE for s in others)

    nrrd = write_seg_nrrd(segmentation, tmp_path / "syngo.seg.nrrd")
    assert UNSPECIFIED_CODE.scheme_designator in nrrd.read_bytes()[:20000].decode("latin-1")
    again = read_seg_nrrd(nrrd).segments
    assert next(s for s in again if s.label_value == 7).terminology.type == UNSPECIFIED_CODE

    series, _ = source
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="DICOMLabelmapSegLib"):
        files = write_labelmap_seg(read_seg_nrrd(nrrd), series, tmp_path / "exported")
    assert any("never stated" in r.getMessage() and "'segment 7'" in r.getMessage() for r in caplog.records)
    written = pydicom.dcmread(files[0])
    assert str(_segment(written, 7).SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator) == "99DLMSEG"
    assert_check_clean(files[0])


def test_palette_shifted_by_one_like_dcmqi_use_palette(outputs) -> None:  # noqa: ANN001
    """dcmqi's bin2labelsegimage --usePalette: CIELab values and a table one entry off (background gets segment 1's
    color). Reported: the CIELab error, and the shift as a warning that explains the wrong colors."""
    from DICOMLabelmapSegLib.dicom.color import rgb_to_dicom_lab
    from DICOMLabelmapSegLib.dicom.header import _palette_channel

    ds = pydicom.dcmread(outputs[(TransferSyntax.EXPLICIT, True, False)])
    channels = [_palette_channel(ds, color, "") for color in ("Red", "Green", "Blue")]
    table = np.stack([values for _, values in channels], axis=1)
    for item in ds.SegmentSequence:
        number = int(item.SegmentNumber)
        if number:
            item.RecommendedDisplayCIELabValue = list(rgb_to_dicom_lab(tuple(int(c) for c in table[number])))
    shifted = np.vstack([table[1:], table[-1:]])  # entry n-1 holds segment n's color
    for c, color in enumerate(("Red", "Green", "Blue")):
        setattr(ds, f"{color}PaletteColorLookupTableDescriptor", [len(shifted), 0, 8])
        setattr(ds, f"{color}PaletteColorLookupTableData", shifted[:, c].astype(np.uint8).tobytes())
    findings = check_dataset(ds)
    assert [(f.rule, f.severity) for f in findings] == [
        (Rule.CIELAB_WITH_PALETTE, Severity.ERROR),
        (Rule.PALETTE_LUT, Severity.WARNING),
    ], findings
    assert "shifted by one" in findings[1].message


def test_writer_self_check_raises_on_a_non_conforming_dataset(base: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer calls check.self_check on every dataset; the test suite turns it on (conftest)."""
    import os

    assert os.environ.get(check.SELF_CHECK_VARIABLE) == "1"
    check.self_check(base)  # ours: nothing to report
    base.PixelRepresentation = 1
    with pytest.raises(RuntimeError, match="pixel-format"):
        check.self_check(base)
    monkeypatch.setenv(check.SELF_CHECK_VARIABLE, "0")
    check.self_check(base)  # off: users pay nothing


def test_known_misread_highdicom_per_segment_masks_above_255(outputs) -> None:  # noqa: ANN001
    """highdicom 0.28: per-segment masks of segment numbers above 255 in a 16-bit LABELMAP come back empty, its
    combined label map is right (compat.HIGHDICOM). If this fails because the masks are right, update compat.py."""
    import highdicom as hd

    if not hd.__version__.startswith("0.28"):
        pytest.skip(f"the known misread is of highdicom 0.28 (this is {hd.__version__})")
    path = outputs[(TransferSyntax.EXPLICIT, False, True)]
    stored = pydicom.dcmread(path).pixel_array
    seg = hd.seg.segread(path)
    assert int(seg.get_volume(segment_numbers=[1], combine_segments=False).array.sum()) == int((stored == 1).sum())
    assert (stored == 300).any()
    assert int(seg.get_volume(segment_numbers=[300], combine_segments=False).array.sum()) == 0
    assert int(seg.get_volume(combine_segments=True).array.max()) == int(stored.max())
    issues = compat.misreading_issues(pydicom.dcmread(path, stop_before_pixels=True))
    assert compat.HIGHDICOM in {issue.consumer for issue in issues}
