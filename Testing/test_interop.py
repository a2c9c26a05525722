"""Interoperability: our files checked by tools no one here wrote, their files read by us.

* Our outputs in every transfer syntax x palette on/off x uint8/uint16 x one/two layers
  (frames of 40 x 36 pixels, an oblique grid, label values up to 255 / 65535):
  dciodvfy (no Error line; warnings must be on the reviewed list :data:`KNOWN_DCIODVFY_WARNINGS`),
  every independent decoder available for the syntax gives the same labels (pydicom's
  plugins: pyjpegls/CharLS, pylibjpeg-libjpeg, pylibjpeg-openjpeg, pylibjpeg-rle, pydicom's
  own RLE, Pillow; and DCMTK), dcmqi's segimage2itkimage (uncompressed and RLE) gives
  the same voxels and segment metadata, highdicom's reader too, dcmjs parses the file and sees the segments,
  and project-side checks dciodvfy does not make (every pixel value described, background).
  A covering subset runs by default; the full matrix is marked slow.
* Their outputs: every shared SEG that dcmqi reads is read by us to the same voxels, names,
  colors and codes that dcmqi itself reports; a LABELMAP written by dcmqi's itkimage2segimage
  (``--segmentationType labelmap``) from the shared NRRDs reads back to those NRRDs.
* Real-world source quirks: blank UIDs (the TotalSegmentator series), missing optional
  attributes, vendor private tags, Implicit VR source files, an Implicit VR SEG.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import DATA_DIR
from DICOMLabelmapSegLib.dicom.color import dicom_lab_to_rgb
from DICOMLabelmapSegLib.dicom.options import ExportOptions
from DICOMLabelmapSegLib.dicom.reader import read_segmentation
from DICOMLabelmapSegLib.dicom.source import geometry_from_source, read_source_series
from DICOMLabelmapSegLib.dicom.syntax import TransferSyntax
from DICOMLabelmapSegLib.dicom.writer import write_labelmap_seg
from DICOMLabelmapSegLib.errors import LabelmapSegError, SourceImageError
from DICOMLabelmapSegLib.model import Code, Segment, Segmentation, differences
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder, pixel_array
from pydicom.uid import ImplicitVRLittleEndian
from spatial import assert_same_labels_in_space
from synthetic import make_affine, make_ct_series, make_segmentation
from validators import (
    assert_check_clean,
    dciodvfy_output,
    dcmjs_parse,
    dcmqi_read,
    dcmtk_decode,
    independent_frames,
    node_inflate_frames,
    read_nrrd_kji,
    require_tool,
)

LABELMAP_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"
BACKGROUND = Code("125040", "DCM", "Background")

#: dciodvfy warnings reviewed and accepted: (pattern, whose, why). Anything else fails the test.
KNOWN_DCIODVFY_WARNINGS: tuple[tuple[str, str, str], ...] = ()

# ---------------------------------------------------------------- spatial comparison


# ---------------------------------------------------------------- our outputs: the matrix

MATRIX = list(itertools.product(TransferSyntax, [False, True], ["uint8", "uint16"], [1, 2]))
#: The default run covers every syntax, both photometric interpretations, both dtypes and both layer counts.
FAST = {(s, s_index % 2 == 0, "uint8", 2) for s_index, s in enumerate(TransferSyntax)} | {
    (s, s_index % 2 == 1, "uint16", 1) for s_index, s in enumerate(TransferSyntax)
}


def _case_id(case: tuple[TransferSyntax, bool, str, int]) -> str:
    syntax, palette, dtype, layers = case
    return f"{syntax.value}-{'palette' if palette else 'mono'}-{dtype}-{layers}layer"


def _params(cases: list[tuple[TransferSyntax, bool, str, int]]) -> list:
    return [
        pytest.param(case, id=_case_id(case), marks=() if case in FAST else pytest.mark.slow) for case in cases
    ]


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """An oblique 3 x 40 x 36 CT series (frames large enough for every codec's main path)."""
    paths = make_ct_series(tmp_path_factory.mktemp("ct"), shape=(3, 40, 36), affine=make_affine(oblique=True))
    source = read_source_series(paths)
    return source, geometry_from_source(source)


class _Written:
    """Series written on demand, once per matrix case."""

    def __init__(self, grid, root: Path) -> None:  # noqa: ANN001
        self.source, self.geometry = grid
        self.root = root
        self.cache: dict[tuple, tuple[Segmentation, list[Path]]] = {}

    def __call__(self, case: tuple[TransferSyntax, bool, str, int]) -> tuple[Segmentation, list[Path]]:
        if case not in self.cache:
            syntax, palette, dtype, layer_count = case
            first = [1, 2, 7, 255] if dtype == "uint8" else [1, 300, 4000, 65535]
            segmentation = make_segmentation(
                self.geometry, layers=[first, [5, 9]][:layer_count], empty=[2], seed=len(self.cache)
            )
            files = write_labelmap_seg(
                segmentation,
                self.source,
                self.root / _case_id(case),
                ExportOptions(transfer_syntax=syntax, palette_color=palette),
            )
            for path in files:
                assert_check_clean(path)  # our own checker: no error, no warning on anything we write
            self.cache[case] = (segmentation, files)
        return self.cache[case]


@pytest.fixture(scope="module")
def written(grid, tmp_path_factory: pytest.TempPathFactory) -> _Written:  # noqa: ANN001
    return _Written(grid, tmp_path_factory.mktemp("ours"))


@pytest.fixture(scope="module")
def warning_inventory() -> dict[str, set[str]]:
    """dciodvfy warnings seen, by warning text (minus values) -> cases; printed at the end of the module."""
    inventory: dict[str, set[str]] = {}
    yield inventory
    if inventory:
        print("\ndciodvfy warnings on our outputs:")  # noqa: T201 - the report asked for in the issue
        for text, cases in sorted(inventory.items()):
            print(f"  {text}  [{', '.join(sorted(cases))}]")  # noqa: T201


def _known_warning(line: str) -> bool:
    return any(re.search(pattern, line) for pattern, _, _ in KNOWN_DCIODVFY_WARNINGS)


@pytest.mark.parametrize("case", _params(MATRIX))
def test_dciodvfy_no_errors_and_only_reviewed_warnings(written, warning_inventory, case) -> None:  # noqa: ANN001
    _, files = written(case)
    for path in files:
        lines = dciodvfy_output(path).splitlines()
        errors = [line for line in lines if line.startswith("Error")]
        assert errors == [], f"{path.name}: {errors}"
        for line in lines:
            if line.startswith("Warning"):
                warning_inventory.setdefault(re.sub(r"<[^>]*>", "<...>", line), set()).add(_case_id(case))
        unreviewed = [line for line in lines if line.startswith("Warning") and not _known_warning(line)]
        assert unreviewed == [], f"{path.name}: dciodvfy warnings not on the reviewed list: {unreviewed}"


def _expected_frames(ds: Dataset, labels: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The model's slices in the file's frame order, found from each frame's Image Position (Patient)."""
    inverse = np.linalg.inv(affine)
    order = []
    for group in ds.PerFrameFunctionalGroupsSequence:
        position = [float(v) for v in group.PlanePositionSequence[0].ImagePositionPatient]
        k, j, i = (inverse @ np.array([*position, 1.0]))[:3]
        assert abs(j) < 1e-3 and abs(i) < 1e-3 and abs(k - round(k)) < 1e-3, "frame not on the model grid"
        order.append(int(round(k)))
    return labels[order]


#: Syntaxes DCMTK 3.6.7 (Debian) cannot decode, and that pydicom 3.0.2 / highdicom 0.28 cannot decode.
NOT_DCMTK = (TransferSyntax.HTJ2K, TransferSyntax.JPEG_XL, TransferSyntax.FRAME_DEFLATE)
NOT_PYDICOM = (TransferSyntax.JPEG_XL, TransferSyntax.FRAME_DEFLATE)


def _decoders(path: Path, ds: Dataset) -> dict[str, np.ndarray]:
    """Frames decoded by every independent decoder available for the file's transfer syntax."""
    syntax = ds.file_meta.TransferSyntaxUID
    ours = TransferSyntax.from_uid(str(syntax))
    shape = (int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns))
    results: dict[str, np.ndarray] = {}
    if ours == TransferSyntax.FRAME_DEFLATE:
        results["python zlib"] = independent_frames(ds)
        results["node zlib"] = node_inflate_frames(ds)
    elif ours == TransferSyntax.JPEG_XL:
        import imagecodecs
        from pydicom.encaps import generate_frames

        results["pillow-jxl"] = independent_frames(ds)
        results["imagecodecs"] = np.stack([imagecodecs.jpegxl_decode(f) for f in generate_frames(
            ds.PixelData, number_of_frames=shape[0])])
    elif syntax.is_encapsulated:
        for plugin in get_decoder(syntax).available_plugins:
            results[f"pydicom+{plugin}"] = pixel_array(path, decoding_plugin=plugin).reshape(shape)
        if ours == TransferSyntax.HTJ2K:  # pydicom's plugin is pylibjpeg-openjpeg; OpenJPH is another decoder
            import imagecodecs
            from pydicom.encaps import generate_frames

            results["imagecodecs (OpenJPH)"] = np.stack([imagecodecs.htj2k_decode(f) for f in generate_frames(
                ds.PixelData, number_of_frames=shape[0])])
    else:
        dtype = np.dtype(f"<u{int(ds.BitsAllocated) // 8}")
        results["numpy (raw Pixel Data)"] = np.frombuffer(ds.PixelData, dtype)[: int(np.prod(shape))].reshape(shape)
        results["pydicom"] = ds.pixel_array.reshape(shape)  # (pixel_array(path) does not inflate Deflated files)
    if ours not in NOT_DCMTK:
        results["DCMTK"] = dcmtk_decode(path).reshape(shape)
    return results


@pytest.mark.parametrize("case", _params(MATRIX))
def test_independent_decoders_give_identical_labels(written, case) -> None:  # noqa: ANN001
    segmentation, files = written(case)
    for path, layer in zip(files, segmentation.layers):
        ds = pydicom.dcmread(path)
        expected = _expected_frames(ds, layer.labels, segmentation.geometry.affine)
        decoded = _decoders(path, ds)
        independent = {name.split("+")[-1].split(" ")[0] for name in decoded}
        assert len(independent) >= 2, f"{path.name}: only {sorted(decoded)} can decode {case[0].label}"
        for name, frames in decoded.items():
            assert np.array_equal(frames, expected), f"{path.name}: {name} decodes other labels"


@pytest.mark.parametrize("case", _params(MATRIX))
def test_project_side_checks(written, case) -> None:  # noqa: ANN001
    """What dciodvfy does not check: every pixel value is a described segment; background is consistent."""
    segmentation, files = written(case)
    for path, layer in zip(files, segmentation.layers):
        ds = pydicom.dcmread(path)
        described = {int(item.SegmentNumber): item for item in ds.SegmentSequence}
        present = set(np.unique(independent_frames(ds)).tolist())
        assert present - {0} <= set(described), f"{path.name}: pixel values {present - set(described)} undescribed"
        assert set(described) - {0} == {s.label_value for s in layer.segments}
        # Background: pixel value 0. Either Pixel Padding Value 0 or absent; segment 0, if described, is Background.
        assert ds.get("PixelPaddingValue", 0) == 0
        if 0 in described:
            item = described[0]
            assert Code(item.SegmentedPropertyTypeCodeSequence[0].CodeValue,
                        item.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator,
                        "").same_concept(BACKGROUND)
        others = [n for n, item in described.items() if n != 0 and str(item.SegmentLabel).lower() == "background"]
        assert not others, f"{path.name}: non-zero segments named Background: {others}"
        if ds.PhotometricInterpretation == "PALETTE COLOR":
            first = int(ds.RedPaletteColorLookupTableDescriptor[1])
            entries = int(ds.RedPaletteColorLookupTableDescriptor[0]) or 65536
            assert first == 0 and entries > max(described), "the LUT must map background and every segment"
        # Our reader gives back the model: lossless.
    assert differences(segmentation, read_segmentation(files)) == []


def _dcmqi_code(entry: dict, key: str) -> Code | None:
    value = entry.get(key)
    return None if value is None else Code(value["CodeValue"], value["CodingSchemeDesignator"], value["CodeMeaning"])


def assert_segment_matches_dcmqi(segment: Segment, entry: dict, colors: bool = True) -> None:
    """Our segment equals dcmqi's JSON description of it (name, codes, algorithm, tracking, color)."""
    what = f"segment {segment.label_value}"
    assert entry["labelID"] == segment.label_value, what
    assert entry["SegmentLabel"] == segment.name, what
    assert entry.get("SegmentDescription") in (segment.description, None if segment.description else ""), what
    assert entry["SegmentAlgorithmType"] == segment.algorithm_type.value, what
    assert entry.get("SegmentAlgorithmName") == segment.algorithm_name, what
    assert entry.get("TrackingIdentifier") == segment.tracking_id, what
    assert entry.get("TrackingUniqueIdentifier") == segment.tracking_uid, what
    terminology = segment.terminology
    for key, code in (
        ("SegmentedPropertyCategoryCodeSequence", terminology.category),
        ("SegmentedPropertyTypeCodeSequence", terminology.type),
        ("SegmentedPropertyTypeModifierCodeSequence", terminology.type_modifier),
        ("AnatomicRegionSequence", terminology.region),
        ("AnatomicRegionModifierSequence", terminology.region_modifier),
    ):
        theirs = _dcmqi_code(entry, key)
        assert (code is None and theirs is None) or (code is not None and code.same_concept(theirs)), (what, key)
    if colors:
        assert tuple(entry["recommendedDisplayRGBValue"]) == segment.color, what


DCMQI_SYNTAXES = (TransferSyntax.EXPLICIT, TransferSyntax.RLE)


@pytest.mark.parametrize("case", _params([case for case in MATRIX if case[0] in DCMQI_SYNTAXES]))
def test_dcmqi_reads_our_files_identically(written, case, tmp_path: Path) -> None:  # noqa: ANN001
    """dcmqi 1.5.7 segimage2itkimage: same voxels (in patient space), segment numbers, names, codes, colors.

    A PALETTE COLOR file has no Recommended Display CIELab Value (the colors are in the LUT; highdicom and
    the standard forbid both), and dcmqi 1.5.7 does not read palettes: there its colors are not compared.
    """
    segmentation, files = written(case)
    for index, (path, layer) in enumerate(zip(files, segmentation.layers)):
        images, meta = dcmqi_read(path, tmp_path / f"dcmqi-{index}")
        assert len(images) == 1, "a LABELMAP has no overlaps: dcmqi must write one label map"
        labels, affine = read_nrrd_kji(images[0])
        if labels.dtype == np.int16:
            # dcmqi 1.5.7 writes label maps as signed 16-bit: segment numbers above 32767 come out negative.
            # Reinterpreting the bits recovers them; that limitation is dcmqi's, not the file's.
            labels = labels.view(np.uint16)
        assert_same_labels_in_space(layer.labels, segmentation.geometry.affine, labels, affine, path.name)
        (entries,) = meta["segmentAttributes"]
        entries = [entry for entry in entries if entry["labelID"] != 0]
        assert [entry["labelID"] for entry in entries] == [s.label_value for s in layer.segments]
        for segment, entry in zip(layer.segments, entries):
            assert_segment_matches_dcmqi(segment, entry, colors=not case[1])
        assert meta["SeriesDescription"] == "Segmentation"
        assert str(meta["SeriesNumber"]) == "300"


@pytest.mark.parametrize("case", _params(MATRIX))
def test_dcmjs_parses_our_files_and_sees_the_segments(written, case) -> None:  # noqa: ANN001
    segmentation, files = written(case)
    for path, layer in zip(files, segmentation.layers):
        summary = dcmjs_parse(path)
        assert summary["sopClassUID"] == LABELMAP_STORAGE
        assert summary["segmentationType"] == "LABELMAP"
        assert summary["transferSyntaxUID"] == case[0].uid
        assert (summary["numberOfFrames"], summary["rows"], summary["columns"]) == segmentation.geometry.shape
        assert summary["photometricInterpretation"] == ("PALETTE COLOR" if case[1] else "MONOCHROME2")
        assert summary["pixelDataBytes"] > 0
        segments = {s["number"]: s for s in summary["segments"] if s["number"] != 0}
        assert sorted(segments) == [s.label_value for s in layer.segments]
        for segment in layer.segments:
            seen = segments[segment.label_value]
            assert seen["label"] == segment.name
            assert (seen["type"]["value"], seen["type"]["scheme"]) == (
                segment.terminology.type.value,
                segment.terminology.type.scheme_designator,
            )


@pytest.mark.parametrize("case", _params([case for case in MATRIX if case[0] not in NOT_PYDICOM]))
def test_highdicom_reads_our_files_identically(written, case) -> None:  # noqa: ANN001
    """highdicom's reader (what IDC and many Python pipelines use): same voxels in space, numbers, names, codes."""
    hd = pytest.importorskip("highdicom")
    segmentation, files = written(case)
    for path, layer in zip(files, segmentation.layers):
        seg = hd.seg.segread(str(path))
        volume = seg.get_volume(combine_segments=True, relabel=False)
        assert_same_labels_in_space(
            layer.labels, segmentation.geometry.affine, np.asarray(volume.array), volume.affine, path.name
        )
        assert list(seg.segment_numbers) == [s.label_value for s in layer.segments]
        for segment in layer.segments:
            description = seg.get_segment_description(segment.label_value)
            assert description.segment_label == segment.name
            assert description.segmented_property_type.value == segment.terminology.type.value


# ---------------------------------------------------------------- their outputs, read by us and by dcmqi

#: Shared SEG files that dcmqi 1.5.7 reads (slide microscopy and projection radiographs it cannot place).
SHARED_SEGS = (
    "dcmqi/sparse-labelmap-noppv.dcm",
    "dcmqi/sparse-labelmap-ppv5.dcm",
    "dcmqi/liver.dcm",
    "dcmqi/partial_overlaps.dcm",
    "dcmqi/24x38x3/seg/label.seg",
    "dcmqi/23x38x3/seg/label.seg",
    "highdicom/seg_image_ct_binary.dcm",
    "highdicom/seg_image_ct_binary_overlap.dcm",
    "highdicom/seg_image_ct_binary_fractional.dcm",
    "highdicom/seg_image_ct_true_fractional.dcm",
)


def _dcmqi_segments(meta: dict) -> dict[int, dict]:
    return {entry["labelID"]: entry for group in meta["segmentAttributes"] for entry in group}


def _dcmqi_background_values(path: Path) -> set[int]:
    """Values dcmqi writes where there is no segment: 0 and, for a LABELMAP, its Pixel Padding Value."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return {0, int(ds.PixelPaddingValue)} if "PixelPaddingValue" in ds else {0}


@pytest.mark.parametrize("relative", SHARED_SEGS)
def test_shared_segs_read_as_dcmqi_reads_them(relative: str, tmp_path: Path) -> None:
    """Our reading of other tools' SEGs equals dcmqi's reading: voxels per segment, names, codes, colors."""
    if DATA_DIR is None:
        pytest.skip("shared data not found")
    path = DATA_DIR / relative
    segmentation = read_segmentation(path)
    images, meta = dcmqi_read(path, tmp_path / "split", merge_segments=False)
    described = _dcmqi_segments(meta)
    background = _dcmqi_background_values(path)
    ours = {s.label_value: s for s in segmentation.segments}
    assert set(ours) == set(described) - {0}
    for segment in ours.values():
        assert_segment_matches_dcmqi(segment, described[segment.label_value], colors="recommendedDisplayRGBValue"
                                     in described[segment.label_value])
    if pydicom.dcmread(path, stop_before_pixels=True).SegmentationType == "LABELMAP":
        (image,) = images  # dcmqi writes one label map per LABELMAP instance
        theirs, affine = read_nrrd_kji(image)
        theirs = np.where(np.isin(theirs, list(background - set(ours))), 0, theirs)
        (layer,) = segmentation.layers
        assert_same_labels_in_space(layer.labels, segmentation.geometry.affine, theirs, affine, relative)
        return
    # BINARY/FRACTIONAL: one image per segment, named by segment number. dcmqi keeps FRACTIONAL values;
    # our reader thresholds them at half the Maximum Fractional Value (its default), so threshold alike.
    header = pydicom.dcmread(path, stop_before_pixels=True)
    threshold = 0.5 * int(header.MaximumFractionalValue) if header.SegmentationType == "FRACTIONAL" else 1
    by_number = {int(p.stem.rsplit("-", 1)[-1]): p for p in images}
    assert set(by_number) == set(ours)
    for number, image in by_number.items():
        mask, affine = read_nrrd_kji(image)
        layer = next(layer for layer in segmentation.layers if layer.segment_for_label(number))
        ours_mask = (layer.labels == number).astype(np.uint8)
        theirs_mask = (mask >= threshold).astype(np.uint8)
        assert_same_labels_in_space(
            ours_mask, segmentation.geometry.affine, theirs_mask, affine, f"{relative} segment {number}"
        )


@pytest.mark.parametrize(
    "name", ["seg_image_sm_control_labelmap.dcm", "seg_image_sm_control_labelmap_palette_color.dcm"]
)
def test_highdicom_slide_labelmaps_fail_clearly(name: str) -> None:
    """Tiled slide-microscopy LABELMAPs (MONOCHROME2 and PALETTE COLOR): a clear 'not supported'."""
    if DATA_DIR is None:
        pytest.skip("shared data not found")
    with pytest.raises(LabelmapSegError) as raised:
        read_segmentation(DATA_DIR / "highdicom" / name)
    message = str(raised.value)
    assert type(raised.value).__name__ == "UnsupportedSegmentationError"
    assert "slide" in message.lower() and "\n" not in message


# ---------------------------------------------------------------- dcmqi writes a LABELMAP, we read it

DCMQI_WRITE_CASES = {
    # name: (label map NRRD, source series folder, segments as (label, name, category, type, color))
    "sparse-24x38x3": ("dcmqi/sparse_labelmap_noppv_seg.nrrd", "dcmqi/24x38x3/image"),
    "liver-ct": ("dcmqi/liver_seg.nrrd", "dcmqi/ct-3slice"),
    "liver-spine-gapped-ct": ("dcmqi/liver_spine_gapped_seg.nrrd", "dcmqi/ct-3slice"),
}
_DCMQI_SEGMENT_TEMPLATES = [
    ("Liver", ("85756007", "SCT", "Tissue"), ("10200004", "SCT", "Liver"), (221, 130, 101)),
    ("Spine", ("85756007", "SCT", "Tissue"), ("421060004", "SCT", "Spinal column"), (241, 214, 145)),
    ("Heart", ("85756007", "SCT", "Tissue"), ("80891009", "SCT", "Heart"), (206, 110, 84)),
]


def _dcmqi_metadata(labels: list[int]) -> dict:
    entries = []
    for index, label in enumerate(labels):
        name, category, kind, color = _DCMQI_SEGMENT_TEMPLATES[index % len(_DCMQI_SEGMENT_TEMPLATES)]
        entries.append(
            {
                "labelID": label,
                "SegmentLabel": f"{name} {label}",
                "SegmentDescription": f"{name} written by dcmqi",
                "SegmentAlgorithmType": "MANUAL",
                "SegmentedPropertyCategoryCodeSequence": dict(
                    zip(("CodeValue", "CodingSchemeDesignator", "CodeMeaning"), category)
                ),
                "SegmentedPropertyTypeCodeSequence": dict(zip(("CodeValue", "CodingSchemeDesignator", "CodeMeaning"),
                                                              kind)),
                "recommendedDisplayRGBValue": list(color),
            }
        )
    return {
        "ContentCreatorName": "Interop^Test",
        "ClinicalTrialSeriesID": "Session1",
        "ClinicalTrialTimePointID": "1",
        "SeriesDescription": "dcmqi labelmap",
        "SeriesNumber": "301",
        "InstanceNumber": "1",
        "BodyPartExamined": "",
        "segmentAttributes": [entries],
    }


@pytest.mark.parametrize("case", sorted(DCMQI_WRITE_CASES))
def test_dcmqi_written_labelmap_reads_back_to_the_nrrd(case: str, tmp_path: Path) -> None:
    """itkimage2segimage --segmentationType labelmap --useLabelIDAsSegmentNumber, then our reader."""
    if DATA_DIR is None:
        pytest.skip("shared data not found")
    nrrd_path, source = (DATA_DIR / part for part in DCMQI_WRITE_CASES[case])
    exe = require_tool("itkimage2segimage", "pip install dcmqi==1.5.7")
    reference, reference_affine = read_nrrd_kji(nrrd_path)
    labels = sorted(int(v) for v in np.unique(reference) if v != 0)
    metadata = tmp_path / "meta.json"
    metadata.write_text(json.dumps(_dcmqi_metadata(labels)))
    output = tmp_path / "dcmqi-labelmap.dcm"
    result = subprocess.run(
        [exe, "--segmentationType", "labelmap", "--useLabelIDAsSegmentNumber", "--inputImageList", str(nrrd_path),
         "--inputDICOMDirectory", str(source), "--inputMetadata", str(metadata), "--outputDICOM", str(output)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0 and output.is_file(), result.stdout[-2000:] + result.stderr[-2000:]
    ds = pydicom.dcmread(output, stop_before_pixels=True)
    assert ds.SOPClassUID == LABELMAP_STORAGE and ds.SegmentationType == "LABELMAP"
    segmentation = read_segmentation(output)
    (layer,) = segmentation.layers
    assert [s.label_value for s in layer.segments] == labels
    assert_same_labels_in_space(layer.labels, segmentation.geometry.affine, reference.astype(layer.labels.dtype),
                                reference_affine, case)
    expected = _dcmqi_metadata(labels)["segmentAttributes"][0]
    for segment, entry in zip(layer.segments, expected):
        assert segment.name == entry["SegmentLabel"]
        assert segment.color == tuple(entry["recommendedDisplayRGBValue"])
        assert segment.terminology.type.value == entry["SegmentedPropertyTypeCodeSequence"]["CodeValue"]
    assert segmentation.series_info.series_description == "dcmqi labelmap"
    source_uids = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in Path(source).iterdir()}
    assert set(segmentation.referenced_series.sop_instance_uids) <= source_uids


# ---------------------------------------------------------------- real-world quirks of source series


@pytest.fixture()
def quirk_case(tmp_path: Path):  # noqa: ANN201
    """A CT series and a segmentation on its grid, to be damaged by each quirk test."""
    paths = make_ct_series(tmp_path / "ct", shape=(4, 34, 33))
    segmentation = make_segmentation(geometry_from_source(read_source_series(paths)), layers=[[1, 2], [3]])
    return paths, segmentation


def _export_and_check(segmentation: Segmentation, source, output: Path) -> list[Path]:  # noqa: ANN001
    files = write_labelmap_seg(segmentation, source, output, ExportOptions(transfer_syntax="rle"))
    for path in files:
        errors = [line for line in dciodvfy_output(path).splitlines() if line.startswith("Error")]
        assert errors == [], f"{path.name}: {errors}"
    assert differences(segmentation, read_segmentation(files)) == []
    return files


def test_totalsegmentator_source_with_blank_uids_is_refused_clearly(tmp_path: Path) -> None:
    """The real TotalSegmentator CT has blank SOP Class/Instance, Study and Series UIDs: nothing can reference it."""
    if DATA_DIR is None:
        pytest.skip("shared data not found")
    folder = DATA_DIR / "totalsegmentator" / "example_ct_dicom"
    source = read_source_series(folder, require_uids=False)  # its geometry is fine
    segmentation = make_segmentation(geometry_from_source(source), layers=[[1, 2]])
    output = tmp_path / "out"
    with pytest.raises(SourceImageError) as raised:
        write_labelmap_seg(segmentation, folder, output)
    message = str(raised.value)
    assert "UID" in message and "\n" not in message and len(message) < 600
    assert not output.exists() or not any(output.iterdir())


def test_source_without_optional_attributes(quirk_case, tmp_path: Path) -> None:  # noqa: ANN001
    """Source slices stripped of Type 2/3 attributes (patient, study, equipment details) still export validly."""
    paths, segmentation = quirk_case
    optional = ("PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyDate", "StudyTime",
                "ReferringPhysicianName", "StudyID", "SeriesNumber", "Manufacturer", "StudyDescription",
                "SeriesDescription", "SliceThickness", "KVP", "PatientPosition", "Laterality",
                "PositionReferenceIndicator", "InstanceNumber", "ImageType", "AcquisitionNumber", "SeriesDate")
    for path in paths:
        ds = pydicom.dcmread(path)
        for keyword in optional:
            if keyword in ds:
                delattr(ds, keyword)
        ds.save_as(path)
    files = _export_and_check(segmentation, paths, tmp_path / "out")
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert "PatientName" in ds and ds.PatientName == ""  # Type 2: present, empty


def test_source_with_vendor_private_tags(quirk_case, tmp_path: Path) -> None:  # noqa: ANN001
    """Private creator blocks (as GE/Siemens write them) in the source do not leak into or break the SEG."""
    paths, segmentation = quirk_case
    for path in paths:
        ds = pydicom.dcmread(path)
        block = ds.private_block(0x0019, "GEMS_ACQU_01", create=True)
        block.add_new(0x10, "LO", "vendor value")
        block.add_new(0x11, "OB", b"\x01\x02\x03\x04")
        siemens = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
        siemens.add_new(0x10, "OB", bytes(range(64)))
        ds.save_as(path)
    files = _export_and_check(segmentation, paths, tmp_path / "out")
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        leaked = [elem.tag for elem in ds.iterall() if elem.tag.is_private]
        assert not leaked, f"private source tags copied into the SEG: {leaked}"


def test_implicit_vr_source_files(quirk_case, tmp_path: Path) -> None:  # noqa: ANN001
    paths, segmentation = quirk_case
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        ds.save_as(path, enforce_file_format=True)
        assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    _export_and_check(segmentation, paths, tmp_path / "out")


def test_source_without_preamble_and_file_meta(quirk_case, tmp_path: Path) -> None:  # noqa: ANN001
    """Old or raw DICOM streams without the 128-byte preamble and 'DICM' (still readable by pydicom)."""
    paths, segmentation = quirk_case
    for path in paths:
        ds = pydicom.dcmread(path)
        raw = tmp_path / "raw.dcm"
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        ds.save_as(raw, enforce_file_format=False)
        data = raw.read_bytes()
        path.write_bytes(data[132:] if data[128:132] == b"DICM" else data)
    try:
        files = _export_and_check(segmentation, paths, tmp_path / "out")
    except SourceImageError as error:  # a clear refusal is acceptable too
        assert "\n" not in str(error)
    else:
        assert files


@pytest.mark.parametrize("syntax", ["implicit", "big-endian"])
def test_seg_in_other_uncompressed_syntaxes_is_read(quirk_case, tmp_path: Path, syntax: str) -> None:  # noqa: ANN001
    """A SEG re-encoded by another tool as Implicit VR (or the retired Explicit VR Big Endian) reads the same."""
    paths, segmentation = quirk_case
    files = write_labelmap_seg(segmentation, paths, tmp_path / "out", ExportOptions(transfer_syntax="explicit"))
    converted = tmp_path / "converted"
    converted.mkdir()
    for path in files:
        ds = pydicom.dcmread(path)
        if syntax == "implicit":
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
            ds.save_as(converted / path.name, enforce_file_format=True)
        else:
            dcmconv = shutil.which("dcmconv")
            if dcmconv is None:
                pytest.skip("dcmconv (DCMTK) not found")
            subprocess.run([dcmconv, "+tb", str(path), str(converted / path.name)], check=True, timeout=60)
    assert differences(segmentation, read_segmentation(converted)) == []


def test_dcmqi_background_segment_zero_and_padding_agree_with_ours(written) -> None:  # noqa: ANN001
    """The background convention of dcmqi's LABELMAPs (segment 0 'Background', optional Pixel Padding Value)
    and ours (Pixel Padding Value 0, segment 0 'Background') are read alike: 0 is never a model segment."""
    if DATA_DIR is None:
        pytest.skip("shared data not found")
    segmentation, files = written((TransferSyntax.EXPLICIT, False, "uint8", 1))
    ours = pydicom.dcmread(files[0], stop_before_pixels=True)
    for name in ("sparse-labelmap-noppv.dcm", "sparse-labelmap-ppv5.dcm"):
        theirs = pydicom.dcmread(DATA_DIR / "dcmqi" / name, stop_before_pixels=True)
        for ds in (ours, theirs):
            background = [item for item in ds.SegmentSequence if int(item.SegmentNumber) == 0]
            assert background and background[0].SegmentLabel == "Background"
        read = read_segmentation(DATA_DIR / "dcmqi" / name)
        assert all(s.label_value != 0 for s in read.segments)
        assert dicom_lab_to_rgb(theirs.SegmentSequence[1].RecommendedDisplayCIELabValue) == read.segments[0].color
    assert all(s.label_value != 0 for s in read_segmentation(files).segments)
