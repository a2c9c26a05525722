"""Tests of reader.py / pixels.py: real SEG files of other tools, edited variants, and bad input.

References are independent of our reader: dcmqi's own NRRD exports of its test SEGs
(read with pynrrd) and highdicom's decoding of its test SEGs.
"""

from __future__ import annotations

import copy
import io
import logging
import shutil
import tracemalloc
from pathlib import Path

import highdicom as hd
import nrrd
import numpy as np
import pydicom
import pytest
from corruptions import message_problems
from DICOMLabelmapSegLib import (
    Code,
    CorruptPixelDataError,
    GeometryMismatchError,
    ImplausibleSizeError,
    InvalidDicomFileError,
    LabelmapSegError,
    MissingCodecError,
    SegmentAlgorithmType,
    SegmentationType,
    UndescribedLabelError,
    UnsupportedSegmentationError,
    differences,
)
from DICOMLabelmapSegLib.dicom import framegroups
from DICOMLabelmapSegLib.dicom.color import rgb_to_dicom_lab
from DICOMLabelmapSegLib.dicom.reader import describe, read_segmentation, read_segmentations
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

LIVER = Code("10200004", "SCT", "Liver")
TISSUE = Code("85756007", "SCT", "Tissue")
COMPRESSED = [JPEGLSLossless, RLELossless, JPEG2000Lossless]


# ---------------------------------------------------------------------------- helpers


def nrrd_volume(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A NRRD file as ``[k, j, i]`` array and (k, j, i) -> LPS affine (independent of our code)."""
    data, header = nrrd.read(str(path))
    assert header["space"] == "left-posterior-superior"
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(header["space directions"], dtype=float).T[:, ::-1]
    affine[:3, 3] = header["space origin"]
    return np.ascontiguousarray(data.transpose(2, 1, 0)), affine


def aligned(labels: np.ndarray, affine: np.ndarray, reference_affine: np.ndarray) -> np.ndarray:
    """``labels`` re-indexed onto a reference grid that differs by axis flips only (asserted)."""
    mapping = np.linalg.inv(reference_affine) @ affine
    signs = np.sign(np.round(np.diag(mapping[:3, :3])))
    assert np.allclose(mapping[:3, :3], np.diag(signs), atol=1e-4), "grids differ by more than axis flips"
    flips = tuple(slice(None, None, -1) if s < 0 else slice(None) for s in signs)
    flipped = labels[flips]
    new_affine = affine.copy()
    for axis, s in enumerate(signs):
        if s < 0:
            new_affine[:3, 3] += affine[:3, axis] * (labels.shape[axis] - 1)
            new_affine[:3, axis] *= -1
    assert np.allclose(new_affine, reference_affine, atol=1e-3)
    return flipped


def assert_good_message(error: BaseException) -> None:
    assert isinstance(error, LabelmapSegError)
    assert message_problems(str(error)) == [], str(error)


def save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def frames_of(ds: Dataset) -> np.ndarray:
    """Pixel frames ``(frames, rows, columns)`` decoded by pydicom (the independent decoder)."""
    array = ds.pixel_array
    return array.reshape(int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns))


def set_frames(ds: Dataset, frames: np.ndarray, syntax: str = ExplicitVRLittleEndian) -> Dataset:
    """Replace the pixel data with ``frames`` (uint8/uint16), encoded in ``syntax`` by pydicom's encoders."""
    frames = np.ascontiguousarray(frames)
    bits = frames.dtype.itemsize * 8
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.NumberOfFrames = frames.shape[0]
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PixelData = frames.tobytes()
    ds["PixelData"].VR = "OB" if bits == 8 else "OW"
    if syntax == DeflatedExplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    elif syntax == JPEG2000Lossless:  # openjpeg's 6 resolutions need >= 32 pixels a side: use Pillow
        ds.PixelData = encapsulate([j2k_frame(frame) for frame in frames])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    elif syntax != ExplicitVRLittleEndian:
        ds.compress(syntax, frames if frames.shape[0] > 1 else frames[0], generate_instance_uid=False)
    return ds


def j2k_frame(frame: np.ndarray) -> bytes:
    """A lossless JPEG 2000 codestream of one frame, encoded by Pillow (OpenJPEG)."""
    from PIL import Image

    buffer = io.BytesIO()
    if frame.dtype == np.uint8:
        image = Image.fromarray(frame)
    else:
        image = Image.frombytes("I;16", (frame.shape[1], frame.shape[0]), frame.astype("<u2").tobytes())
    resolutions = min(6, int(np.log2(min(frame.shape))) + 1)
    image.save(buffer, format="JPEG2000", irreversible=False, num_resolutions=resolutions, no_jp2=True)
    data = buffer.getvalue()
    return data + b"\x00" * (len(data) % 2)


def sparse(data_dir: Path, kind: str = "noppv") -> Dataset:
    return pydicom.dcmread(data_dir / "dcmqi" / f"sparse-labelmap-{kind}.dcm")


def segment_item(number: int, name: str, rgb: tuple[int, int, int] | None = (10, 200, 30)) -> Dataset:
    item = Dataset()
    item.SegmentNumber = number
    item.SegmentLabel = name
    item.SegmentAlgorithmType = "MANUAL"
    category, type_item = Dataset(), Dataset()
    category.CodeValue, category.CodingSchemeDesignator, category.CodeMeaning = "85756007", "SCT", "Tissue"
    type_item.CodeValue, type_item.CodingSchemeDesignator, type_item.CodeMeaning = "85756007", "SCT", "Tissue"
    item.SegmentedPropertyCategoryCodeSequence = [category]
    item.SegmentedPropertyTypeCodeSequence = [type_item]
    if rgb is not None:
        item.RecommendedDisplayCIELabValue = list(rgb_to_dicom_lab(rgb))
    return item


def frame_positions(ds: Dataset) -> list:
    return [group.PlanePositionSequence[0] for group in ds.PerFrameFunctionalGroupsSequence]


# ---------------------------------------------------------------------------- dcmqi LABELMAP


@pytest.mark.parametrize("kind", ["noppv", "ppv5"])
def test_dcmqi_sparse_labelmap_matches_dcmqi_nrrd(data_dir: Path, kind: str) -> None:
    segmentation = read_segmentation(data_dir / "dcmqi" / f"sparse-labelmap-{kind}.dcm")
    reference, reference_affine = nrrd_volume(data_dir / "dcmqi" / f"sparse_labelmap_{kind}_seg.nrrd")
    # dcmqi fills the slice without a frame with the padding value (5) or 0; in the model it is background.
    reference = np.where(reference == 5, 0, reference)
    assert segmentation.geometry.shape == (3, 38, 24)
    assert segmentation.geometry.same_as(type(segmentation.geometry)((3, 38, 24), reference_affine))
    assert len(segmentation.layers) == 1
    layer = segmentation.layers[0]
    assert layer.labels.dtype == np.uint8
    np.testing.assert_array_equal(layer.labels, reference)
    assert not layer.labels[1].any(), "the gap slice must be background"
    # Segment 0 'Background' is not a model segment.
    assert [s.label_value for s in layer.segments] == [1]
    liver = layer.segments[0]
    assert liver.name == "Liver"
    assert liver.description == "Liver Segmentation"
    assert liver.algorithm_type == SegmentAlgorithmType.SEMIAUTOMATIC
    assert liver.algorithm_name == "SlicerEditor"
    assert liver.tracking_id == "Liver" and liver.tracking_uid == "1.2.3"
    assert liver.terminology.category.same_concept(TISSUE)
    assert liver.terminology.type.same_concept(LIVER)
    assert liver.color == (221, 130, 101)  # Slicer's liver color, from CIELab (41661, 41167, 40792)
    assert segmentation.geometry.frame_of_reference_uid == (
        "1.2.826.0.1.3680043.2.1125.1.91107089595205807043185863214762603"
    )


def test_dcmqi_sparse_labelmap_series_info_and_references(data_dir: Path) -> None:
    segmentation = read_segmentation(data_dir / "dcmqi" / "sparse-labelmap-ppv5.dcm")
    info = segmentation.series_info
    assert info.segmentation_type == SegmentationType.LABELMAP
    assert info.series_number == 300
    assert info.content_label == "DCMQI"
    assert info.content_creator_name == "Doe^John"
    assert info.patient_id == "123456"
    assert info.transfer_syntax_uids == (ExplicitVRLittleEndian,)
    assert info.sop_instance_uids == ("1.2.276.0.7230010.3.1.4.8323329.114908.1781279372.413280",)
    assert not info.palette_color
    referenced = segmentation.referenced_series
    assert referenced.series_instance_uid == "1.2.826.0.1.3680043.2.1125.1.9881642883347102869241902700569139"
    assert referenced.sop_class_uid == pydicom.uid.CTImageStorage
    assert len(referenced.sop_instance_uids) == 2
    assert referenced.study_instance_uid == info.study_instance_uid


def test_describe_reports_headers_without_pixels(data_dir: Path, tmp_path: Path) -> None:
    ds = sparse(data_dir, "ppv5")
    del ds.PixelData  # describe must not need (or decode) pixel data
    path = save(ds, tmp_path / "no-pixels.dcm")
    (description,) = describe(path)
    assert description.problem is None
    assert description.geometry.shape == (3, 38, 24)
    assert [s.name for s in description.segments] == ["Liver"]
    (layer,) = description.layers
    assert layer.pixel_padding_value == 5 and layer.number_of_frames == 2 and layer.bits_allocated == 8
    assert layer.transfer_syntax == "Uncompressed (explicit VR little endian)"
    summary = description.to_dict()
    assert summary["segmentation_type"] == "LABELMAP"
    assert summary["layers"][0]["segments"][0]["terminology"]["type"]["meaning"] == "Liver"
    assert summary["referenced_series"]["instances"] == 2
    with pytest.raises(InvalidDicomFileError, match="no Pixel Data"):
        read_segmentation(path)


# ---------------------------------------------------------------------------- dcmqi / highdicom BINARY


def test_dcmqi_liver_binary_matches_nrrd(data_dir: Path) -> None:
    segmentation = read_segmentation(data_dir / "dcmqi" / "liver.dcm")
    reference, reference_affine = nrrd_volume(data_dir / "dcmqi" / "liver_seg.nrrd")
    (layer,) = segmentation.layers
    np.testing.assert_array_equal(aligned(layer.labels, segmentation.geometry.affine, reference_affine), reference)
    assert [(s.label_value, s.name) for s in layer.segments] == [(1, "Liver")]
    # An old dcmqi file: SNOMED RT codes are read as written.
    assert layer.segments[0].terminology.type.same_concept(Code("T-62000", "SRT", "Liver"))
    assert segmentation.series_info.segmentation_type == SegmentationType.BINARY
    assert len(segmentation.referenced_series.sop_instance_uids) == 3


def test_dcmqi_partial_overlaps_packed_into_three_layers(data_dir: Path) -> None:
    segmentation = read_segmentation(data_dir / "dcmqi" / "partial_overlaps.dcm")
    # Greedy packing: segments 1, 4, 5 do not overlap; 2 and 3 overlap segment 1 (and each other).
    assert [[s.label_value for s in layer.segments] for layer in segmentation.layers] == [[1, 4, 5], [2], [3]]
    assert [s.name for s in segmentation.segments] == ["GREEN", "LIGHT_BLUE", "DARK_BLUE", "ORANGE", "PURPLE"]
    for index, layer in enumerate(segmentation.layers):
        # dcmqi's own export of this SEG wrote one NRRD per non-overlapping group, the same grouping.
        reference, reference_affine = nrrd_volume(data_dir / "dcmqi" / f"partial_overlaps-{index + 1}.nrrd")
        np.testing.assert_array_equal(aligned(layer.labels, segmentation.geometry.affine, reference_affine), reference)


@pytest.mark.parametrize("size", ["23x38x3", "24x38x3"])
def test_dcmqi_odd_sized_binary_matches_nrrd(data_dir: Path, size: str) -> None:
    # 23 columns: BINARY frames are bit-packed across frame boundaries.
    segmentation = read_segmentation(data_dir / "dcmqi" / size / "seg" / "label.seg")
    reference, reference_affine = nrrd_volume(data_dir / "dcmqi" / size / "nrrd" / "label.nrrd")
    labels = aligned(segmentation.layers[0].labels, segmentation.geometry.affine, reference_affine)
    np.testing.assert_array_equal(labels, reference)


def highdicom_reference(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """highdicom's decoding: (segments, k, j, i) masks in our slice order, and its affine."""
    seg = hd.seg.segread(str(path))
    volume = seg.get_volume(combine_segments=False, allow_missing_positions=True)
    return volume.array, volume.affine


@pytest.mark.parametrize(
    "name", ["seg_image_ct_binary", "seg_image_ct_binary_overlap", "seg_image_ct_binary_single_frame"]
)
def test_highdicom_binary_matches_highdicom(data_dir: Path, name: str) -> None:
    path = data_dir / "highdicom" / f"{name}.dcm"
    segmentation = read_segmentation(path)
    masks, affine = highdicom_reference(path)
    masks = np.moveaxis(masks, -1, 0) if masks.ndim == 4 else masks[None]
    seg = hd.seg.segread(str(path))
    numbers = list(seg.segment_numbers)
    assert sorted(s.label_value for s in segmentation.segments) == numbers
    for number, mask in zip(numbers, masks):
        layer = next(layer for layer in segmentation.layers if layer.segment_for_label(number))
        ours = aligned(layer.labels == number, segmentation.geometry.affine, affine)
        np.testing.assert_array_equal(ours, mask.astype(bool))
    # Overlapping segments must land in different layers, and a layer's segments never overlap.
    for layer in segmentation.layers:
        layer.validate(segmentation.geometry.shape)


def test_highdicom_overlap_needs_two_layers(data_dir: Path) -> None:
    segmentation = read_segmentation(data_dir / "highdicom" / "seg_image_ct_binary_overlap.dcm")
    assert [[s.label_value for s in layer.segments] for layer in segmentation.layers] == [[1], [2]]


@pytest.mark.parametrize("name", ["seg_image_ct_true_fractional", "seg_image_ct_binary_fractional"])
def test_fractional_is_thresholded_with_warning(data_dir: Path, name: str, caplog: pytest.LogCaptureFixture) -> None:
    path = data_dir / "highdicom" / f"{name}.dcm"
    ds = pydicom.dcmread(path)
    values = frames_of(ds)
    with caplog.at_level(logging.WARNING, logger="DICOMLabelmapSegLib.dicom.reader"):
        segmentation = read_segmentation(path)
    assert any("FRACTIONAL" in record.getMessage() for record in caplog.records)
    labels = segmentation.layers[0].labels
    maximum = int(ds.MaximumFractionalValue)
    assert np.count_nonzero(labels) == np.count_nonzero(values >= 0.5 * maximum)
    low = read_segmentation(path, fractional_threshold=0.1).layers[0].labels
    high = read_segmentation(path, fractional_threshold=0.9).layers[0].labels
    assert np.count_nonzero(low) == np.count_nonzero(values >= 0.1 * maximum)
    assert np.count_nonzero(high) == np.count_nonzero(values >= 0.9 * maximum)
    assert np.all(high <= labels) and np.all(labels <= low)


def test_projection_radiograph_binary_reads_as_one_slice(data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = data_dir / "highdicom" / "seg_image_cr_binary.dcm"
    with caplog.at_level(logging.WARNING):
        segmentation = read_segmentation(path)
    assert "no patient coordinates" in caplog.text
    assert segmentation.geometry.shape == (1, 16, 16)
    np.testing.assert_array_equal(segmentation.layers[0].labels[0], pydicom.dcmread(path).pixel_array)


# ---------------------------------------------------------------------------- highdicom slide microscopy


SLIDE_FILES = [
    "seg_image_sm_control",
    "seg_image_sm_control_labelmap",
    "seg_image_sm_control_labelmap_palette_color",
    "seg_image_sm_dots",
    "seg_image_sm_dots_tiled_full",
    "seg_image_sm_numbers",
]


@pytest.mark.parametrize("name", SLIDE_FILES)
def test_slide_microscopy_is_unsupported_with_clear_message(data_dir: Path, name: str) -> None:
    path = data_dir / "highdicom" / f"{name}.dcm"
    with pytest.raises(UnsupportedSegmentationError, match="slide microscopy") as caught:
        read_segmentation(path)
    assert_good_message(caught.value)
    (description,) = describe(path)
    assert description.geometry is None and "slide microscopy" in description.problem
    assert len(description.segments) == len(pydicom.dcmread(path, stop_before_pixels=True).SegmentSequence) - (
        1 if "labelmap" in name else 0
    )


def test_highdicom_palette_color_labelmap_colors_from_lut(data_dir: Path) -> None:
    path = data_dir / "highdicom" / "seg_image_sm_control_labelmap_palette_color.dcm"
    (description,) = describe(path)
    assert description.series_info.palette_color
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    lut = pydicom.pixels.apply_color_lut(np.arange(22, dtype=np.uint8), ds)
    colors = {s.label_value: s.color for s in description.segments}
    assert 0 not in colors  # background
    assert colors == {n: tuple(int(c) for c in lut[n]) for n in range(1, 21)}
    assert colors[1] == (255, 0, 191)


# ---------------------------------------------------------------------------- transfer syntaxes and edits


def sparse_uint16(data_dir: Path) -> Dataset:
    """The dcmqi sparse labelmap made 16-bit with a second segment numbered 300."""
    ds = sparse(data_dir)
    frames = frames_of(ds).astype(np.uint16)
    frames[1, 5:9, 3:7] = 300
    ds.SegmentSequence.append(segment_item(300, "three hundred"))
    return set_frames(ds, frames)


@pytest.mark.parametrize(
    "syntax", [ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, JPEGLSLossless, RLELossless, JPEG2000Lossless]
)
@pytest.mark.parametrize("bits", [8, 16])
def test_transfer_syntaxes_decode_identically(data_dir: Path, tmp_path: Path, syntax: str, bits: int) -> None:
    ds = sparse(data_dir) if bits == 8 else sparse_uint16(data_dir)
    expected = frames_of(ds)
    set_frames(ds, expected, syntax)
    path = save(ds, tmp_path / "seg.dcm")
    segmentation = read_segmentation(path)
    labels = segmentation.layers[0].labels
    assert labels.dtype == (np.uint8 if bits == 8 else np.uint16)
    np.testing.assert_array_equal(labels[[0, 2]], expected)
    assert not labels[1].any()
    assert segmentation.series_info.transfer_syntax_uids == (syntax,)
    # pydicom's own decoder (pylibjpeg plugins) agrees with our direct codec calls.
    np.testing.assert_array_equal(frames_of(pydicom.dcmread(path)), expected)


def test_frames_placed_by_position_not_order(data_dir: Path, tmp_path: Path) -> None:
    ds = sparse(data_dir)
    frames = frames_of(ds).copy()
    frames[0, 0, 0] = 1  # make the frames distinguishable
    forward = read_segmentation(set_frames(copy.deepcopy(ds), frames))
    ds.PerFrameFunctionalGroupsSequence = list(reversed(ds.PerFrameFunctionalGroupsSequence))
    backward = read_segmentation(save(set_frames(ds, frames[::-1].copy(), JPEGLSLossless), tmp_path / "rev.dcm"))
    # Same voxels in space; the slice axis points the way the frames progress in the file.
    assert forward.geometry.affine[2, 0] == pytest.approx(2.5)
    assert backward.geometry.affine[2, 0] == pytest.approx(-2.5)
    assert backward.geometry.origin[2] == pytest.approx(-172.75)
    np.testing.assert_array_equal(
        aligned(backward.layers[0].labels, backward.geometry.affine, forward.geometry.affine), forward.layers[0].labels
    )
    assert forward.layers[0].labels[0, 0, 0] == 1 and backward.layers[0].labels[2, 0, 0] == 1


def test_frame_order_within_a_progression_does_not_matter(data_dir: Path) -> None:
    """Frames in any order: each lands at its position (the first two fix the slice direction)."""
    ds = sparse(data_dir)
    groups = ds.PerFrameFunctionalGroupsSequence
    template = groups[0]
    z_values = [-177.75, -175.25, -165.25, -170.25]  # ascending first, then out of order, with a gap
    frames = np.zeros((4, 38, 24), dtype=np.uint8)
    new_groups = []
    for index, z in enumerate(z_values):
        group = copy.deepcopy(template)
        group.PlanePositionSequence[0].ImagePositionPatient = [46.464901, 5.0188098, z]
        new_groups.append(group)
        frames[index, index, :] = 1
    ds.PerFrameFunctionalGroupsSequence = new_groups
    segmentation = read_segmentation(set_frames(ds, frames))
    assert segmentation.geometry.shape == (6, 38, 24)
    labels = segmentation.layers[0].labels
    for index, z in enumerate(z_values):
        k = round((z + 177.75) / 2.5)
        np.testing.assert_array_equal(labels[k], frames[index])
    assert not labels[[2, 4]].any()  # the slices without a frame are background
def test_oblique_sheared_positions_give_exact_affine(data_dir: Path) -> None:
    ds = sparse(data_dir)
    rotation = np.array([[0.8, -0.6, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0]])
    row, column = rotation @ [1, 0, 0], rotation @ [0, 0, 1]
    ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient = [*row, *column]
    step = np.cross(row, column) * 2.5 + 0.3 * row  # not along the normal
    origin = np.array([10.0, -20.0, 30.0])
    for k, position in zip((0, 2), frame_positions(ds)):
        position.ImagePositionPatient = [float(v) for v in origin + k * step]
    segmentation = read_segmentation(ds)
    affine = segmentation.geometry.affine
    np.testing.assert_allclose(affine[:3, 0], step, atol=1e-6)
    np.testing.assert_allclose(affine[:3, 1], column * 0.7, atol=1e-9)
    np.testing.assert_allclose(affine[:3, 2], row * 0.7, atol=1e-9)
    np.testing.assert_allclose(affine[:3, 3], origin, atol=1e-6)


def test_spacing_from_positions_without_spacing_between_slices(data_dir: Path) -> None:
    ds = sparse(data_dir)
    del ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].SpacingBetweenSlices
    segmentation = read_segmentation(ds)
    # Only two frames 5 mm apart: without Spacing Between Slices the smallest step is 5 mm.
    assert segmentation.geometry.shape == (2, 38, 24)
    assert segmentation.geometry.spacing[0] == pytest.approx(5.0)


def layer_dataset(ds: Dataset, instance_number: int, z_values: list[float], frames: np.ndarray) -> Dataset:
    """A second instance of the same series with frames at other z positions."""
    other = copy.deepcopy(ds)
    other.SOPInstanceUID = other.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    other.InstanceNumber = instance_number
    groups = [copy.deepcopy(other.PerFrameFunctionalGroupsSequence[0]) for _ in z_values]
    for group, z in zip(groups, z_values):
        x, y, _ = group.PlanePositionSequence[0].ImagePositionPatient
        group.PlanePositionSequence[0].ImagePositionPatient = [x, y, z]
    other.PerFrameFunctionalGroupsSequence = groups
    return set_frames(other, frames)


def test_layers_on_one_grid_union_their_extents(data_dir: Path) -> None:
    ds = sparse(data_dir)
    frames = frames_of(ds)
    second = layer_dataset(ds, 2, [-175.25, -170.25], frames)  # the gap slice and one beyond the end
    segmentation = read_segmentation([second, ds])  # given out of order: layers follow Instance Number
    assert segmentation.geometry.shape == (4, 38, 24)
    first_layer, second_layer = (layer.labels for layer in segmentation.layers)
    np.testing.assert_array_equal(first_layer[[0, 2]], frames)
    assert not first_layer[[1, 3]].any()
    np.testing.assert_array_equal(second_layer[[1, 3]], frames)
    assert not second_layer[[0, 2]].any()
    assert segmentation.series_info.sop_instance_uids == (ds.SOPInstanceUID, second.SOPInstanceUID)


def test_layers_on_different_grids_are_rejected(data_dir: Path) -> None:
    ds = sparse(data_dir)
    second = layer_dataset(ds, 2, [-176.0], frames_of(ds)[:1])  # 1.75 mm off the 2.5 mm grid
    with pytest.raises(GeometryMismatchError, match="grid") as caught:
        read_segmentation([ds, second])
    assert_good_message(caught.value)
    third = layer_dataset(ds, 3, [-177.75], frames_of(ds)[:1, :, :20].copy())
    third.Columns = 20
    with pytest.raises(GeometryMismatchError, match="one geometry"):
        read_segmentation([ds, third])


def test_read_segmentations_groups_series_and_skips_other_files(data_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(data_dir / "dcmqi" / "sparse-labelmap-noppv.dcm", folder / "a.dcm")
    shutil.copy(data_dir / "dcmqi" / "liver.dcm", folder / "sub" / "b.dcm")
    shutil.copy(data_dir / "highdicom" / "ct_image.dcm", folder / "ct.dcm")  # not a SEG: skipped
    (folder / "notes.txt").write_text("not DICOM")
    (folder / "broken.dcm").write_bytes(bytes(128) + b"DICM" + b"\x02\x00")  # unreadable: skipped with a warning
    segmentations = read_segmentations(folder)
    assert sorted(s.series_info.segmentation_type.value for s in segmentations) == ["BINARY", "LABELMAP"]
    with pytest.raises(UnsupportedSegmentationError, match="read_segmentations") as caught:
        read_segmentation(folder)
    assert_good_message(caught.value)
    assert len(describe(folder)) == 2
    # A Dataset, a list of Datasets and a list of paths are sources too.
    ds = pydicom.dcmread(folder / "a.dcm")
    assert read_segmentation(ds).geometry.shape == (3, 38, 24)
    assert read_segmentation([ds, ds]).geometry.shape == (3, 38, 24)  # the same instance twice counts once
    assert read_segmentation([folder / "a.dcm"]).geometry.shape == (3, 38, 24)
    # read_segmentations skips other files even when they are named directly (a mixed file list).
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    assert len(read_segmentations(files)) == 2
    with pytest.raises(UnsupportedSegmentationError, match="CT Image Storage"):
        read_segmentation([folder / "a.dcm", folder / "ct.dcm"])
    with pytest.raises(InvalidDicomFileError, match="found only: CT Image Storage"):
        read_segmentations([folder / "ct.dcm"])


def palette_dataset(data_dir: Path, bits: int) -> Dataset:
    ds = sparse(data_dir)
    ds.PhotometricInterpretation = "PALETTE COLOR"
    del ds.SegmentSequence[1].RecommendedDisplayCIELabValue
    red, green, blue = np.array([0, 250]), np.array([0, 17]), np.array([0, 99])
    for name, values in (("Red", red), ("Green", green), ("Blue", blue)):
        setattr(ds, f"{name}PaletteColorLookupTableDescriptor", [2, 0, bits])
        data = values.astype(np.uint8) if bits == 8 else (values * 257).astype("<u2")
        setattr(ds, f"{name}PaletteColorLookupTableData", data.tobytes())
    return ds


@pytest.mark.parametrize("bits", [8, 16])
def test_palette_color_lut_gives_segment_colors(data_dir: Path, bits: int) -> None:
    segmentation = read_segmentation(palette_dataset(data_dir, bits))
    assert segmentation.series_info.palette_color
    assert segmentation.segments[0].color == (250, 17, 99)


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "content",
    [b"", b"hello, not DICOM\n" * 50, b"\x89PNG\r\n\x1a\n" + bytes(300), bytes(128) + b"DICM", bytes(4096)],
    ids=["empty", "text", "png", "preamble-only", "zeros"],
)
def test_non_dicom_bytes_are_rejected(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.dcm"
    path.write_bytes(content)
    with pytest.raises(InvalidDicomFileError) as caught:
        read_segmentation(path)
    assert_good_message(caught.value)
    with pytest.raises(InvalidDicomFileError):
        describe(path)


def test_missing_path_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(InvalidDicomFileError, match="does not exist"):
        read_segmentation(tmp_path / "nothing.dcm")
    with pytest.raises(InvalidDicomFileError, match="No DICOM Segmentation"):
        read_segmentation(tmp_path)


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, JPEGLSLossless, RLELossless])
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.995])
def test_truncated_files_are_rejected(data_dir: Path, tmp_path: Path, syntax: str, fraction: float) -> None:
    ds = sparse(data_dir)
    set_frames(ds, frames_of(ds), syntax)
    data = save(ds, tmp_path / "whole.dcm").read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(InvalidDicomFileError) as caught:
        read_segmentation(path)
    assert_good_message(caught.value)


def test_wrong_sop_class_is_unsupported(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedSegmentationError, match="CT Image Storage") as caught:
        read_segmentation(data_dir / "highdicom" / "ct_image.dcm")
    assert_good_message(caught.value)
    ds = sparse(data_dir)
    ds.SegmentationType = "SPARSE"
    with pytest.raises(UnsupportedSegmentationError, match="SPARSE"):
        read_segmentation(ds)
    ds = sparse(data_dir)
    ds.SegmentationType = "BINARY"  # BINARY in Label Map Segmentation Storage
    with pytest.raises(UnsupportedSegmentationError):
        read_segmentation(ds)


@pytest.mark.parametrize(
    "keyword",
    ["SegmentSequence", "Rows", "Columns", "SeriesInstanceUID", "SegmentationType", "PerFrameFunctionalGroupsSequence",
     "BitsAllocated"],
)
def test_missing_mandatory_attributes(data_dir: Path, tmp_path: Path, keyword: str) -> None:
    ds = sparse(data_dir)
    delattr(ds, keyword)
    with pytest.raises(InvalidDicomFileError) as caught:
        read_segmentation(save(ds, tmp_path / "seg.dcm"))
    assert_good_message(caught.value)


@pytest.mark.parametrize(
    "edit",
    ["orientation", "spacing", "position", "segment-number"],
)
def test_missing_nested_attributes(data_dir: Path, edit: str) -> None:
    ds = sparse(data_dir)
    shared = ds.SharedFunctionalGroupsSequence[0]
    if edit == "orientation":
        del shared.PlaneOrientationSequence
    elif edit == "spacing":
        del shared.PixelMeasuresSequence[0].PixelSpacing
    elif edit == "position":
        del frame_positions(ds)[1].ImagePositionPatient
    else:
        del ds.SegmentSequence[1].SegmentNumber
    with pytest.raises(InvalidDicomFileError) as caught:
        read_segmentation(ds)
    assert_good_message(caught.value)


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, JPEGLSLossless])
@pytest.mark.parametrize("delta", [-1, +1])
def test_number_of_frames_must_match(data_dir: Path, syntax: str, delta: int) -> None:
    ds = sparse(data_dir)
    set_frames(ds, frames_of(ds), syntax)
    ds.NumberOfFrames = 2 + delta
    with pytest.raises(InvalidDicomFileError, match="per-frame functional groups"):
        read_segmentation(ds)
    # With matching per-frame groups, the pixel data itself disagrees.
    groups = list(ds.PerFrameFunctionalGroupsSequence)
    if delta > 0:
        extra = copy.deepcopy(groups[0])
        extra.PlanePositionSequence[0].ImagePositionPatient = [46.464901, 5.0188098, -167.75]
        groups.append(extra)
    else:
        groups = groups[:1]
    ds.PerFrameFunctionalGroupsSequence = groups
    with pytest.raises(CorruptPixelDataError) as caught:
        read_segmentation(ds)
    assert_good_message(caught.value)


@pytest.mark.parametrize("syntax", COMPRESSED)
@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_compressed_frames(data_dir: Path, syntax: str, damage: str) -> None:
    ds = sparse(data_dir)
    set_frames(ds, frames_of(ds), syntax)
    frames = list(generate_frames(ds.PixelData, number_of_frames=2))
    if damage == "truncate":
        frames[1] = frames[1][: len(frames[1]) // 3]
    else:
        frames[1] = bytes(np.random.default_rng(3).integers(0, 256, len(frames[1]), dtype=np.uint8))
    ds.PixelData = encapsulate([f + b"\x00" * (len(f) % 2) for f in frames])
    with pytest.raises(CorruptPixelDataError) as caught:
        read_segmentation(ds)
    assert_good_message(caught.value)


@pytest.mark.parametrize("syntax", [JPEGLSLossless, JPEG2000Lossless])
def test_frames_of_another_size_than_the_header_are_corrupt(data_dir: Path, syntax: str) -> None:
    ds = sparse(data_dir)
    set_frames(ds, frames_of(ds), syntax)
    ds.Rows = 37  # the frames are 38 rows
    with pytest.raises(CorruptPixelDataError, match="Frame 1 of .*code stream is 38 x 24 pixels but Rows x Columns "
                       "say 37 x 24") as caught:
        read_segmentation(ds)
    assert_good_message(caught.value)


def test_undescribed_label_values_are_rejected(data_dir: Path) -> None:
    ds = sparse(data_dir)
    frames = frames_of(ds).copy()
    frames[0, 0, :3] = [7, 8, 9]
    set_frames(ds, frames, JPEGLSLossless)
    with pytest.raises(UndescribedLabelError, match="7, 8, 9") as caught:
        read_segmentation(ds)
    assert_good_message(caught.value)
    ds = sparse(data_dir)
    ds.SegmentSequence = ds.SegmentSequence[:1]  # only 'Background' left
    with pytest.raises(UndescribedLabelError, match="values 1 "):
        read_segmentation(ds)


def test_binary_frame_referencing_undescribed_segment(data_dir: Path) -> None:
    ds = pydicom.dcmread(data_dir / "highdicom" / "seg_image_ct_binary_overlap.dcm")
    ds.PerFrameFunctionalGroupsSequence[5].SegmentIdentificationSequence[0].ReferencedSegmentNumber = 9
    with pytest.raises(UndescribedLabelError, match="9"):
        read_segmentation(ds)


def test_duplicate_segment_numbers_are_rejected(data_dir: Path) -> None:
    ds = sparse(data_dir)
    ds.SegmentSequence.append(copy.deepcopy(ds.SegmentSequence[1]))
    with pytest.raises(InvalidDicomFileError, match="more than once"):
        read_segmentation(ds)


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, JPEGLSLossless])
@pytest.mark.parametrize(
    "sizes",
    [(65535, 65535, 2_000_000_000), (65535, 65535, 2), (38, 24, 2_000_000_000), (30000, 30000, 2)],
    ids=["all", "frame", "frames", "under-cap"],
)
def test_absurd_sizes_are_rejected_before_allocating(data_dir: Path, syntax: str, sizes: tuple[int, int, int]) -> None:
    ds = sparse(data_dir)
    set_frames(ds, frames_of(ds), syntax)
    ds.Rows, ds.Columns, ds.NumberOfFrames = sizes
    tracemalloc.start()
    try:
        with pytest.raises(InvalidDicomFileError) as caught:
            read_segmentation(ds)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, f"{peak} bytes allocated for a lying header"
    assert_good_message(caught.value)


def test_positions_spanning_an_absurd_extent(data_dir: Path) -> None:
    ds = sparse(data_dir)
    set_frames(ds, frames_of(ds), JPEGLSLossless)
    frame_positions(ds)[1].ImagePositionPatient = [46.464901, 5.0188098, -177.75 + 2.5e7]
    with pytest.raises(ImplausibleSizeError, match="sanity limit") as caught:
        read_segmentation(ds)
    assert_good_message(caught.value)
    with pytest.raises(ImplausibleSizeError):
        read_segmentation(sparse(data_dir), max_voxels=1000)  # a configurable bound


def test_geometry_errors(data_dir: Path) -> None:
    ds = sparse(data_dir)
    frame_positions(ds)[1].ImagePositionPatient = [46.464901, 5.0188098, -177.75]
    with pytest.raises(GeometryMismatchError, match="same position"):
        read_segmentation(ds)
    ds = sparse(data_dir)
    ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient = [1, 0, 0, 1, 0, 0]
    with pytest.raises(GeometryMismatchError):
        read_segmentation(ds)
    ds = sparse(data_dir)
    frame_positions(ds)[0].ImagePositionPatient = ["nan", "0", "1"]
    with pytest.raises(InvalidDicomFileError, match="Image Position"):
        read_segmentation(ds)


def test_missing_codec_names_the_package(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    ds = sparse(data_dir)
    set_frames(ds, frames_of(ds), JPEGLSLossless)
    real_find_spec = importlib.util.find_spec
    hidden = ("jpeg_ls", "imagecodecs")  # either decodes JPEG-LS
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *args: None if name in hidden else real_find_spec(name, *args)
    )
    with pytest.raises(MissingCodecError, match="pip install pyjpegls") as caught:
        read_segmentation(ds)
    assert_good_message(caught.value)


# ---------------------------------------------------------------------------- raw functional groups parser


def group_tuple(group: framegroups.FrameGroup) -> tuple:
    def floats(values):  # noqa: ANN001, ANN202
        return None if values is None else tuple(round(float(v), 9) for v in values)

    return (
        floats(group.image_position),
        floats(group.image_orientation),
        floats(group.pixel_spacing),
        None if group.spacing_between_slices is None else float(group.spacing_between_slices),
        None if group.slice_thickness is None else float(group.slice_thickness),
        group.referenced_segment_number,
        group.source_sop_instance_uids,
    )


def our_labelmap(tmp_path: Path) -> Path:
    """A small LABELMAP written by the project's writer (two layers' worth of segments in one layer)."""
    from DICOMLabelmapSegLib import Geometry
    from DICOMLabelmapSegLib.dicom.source import read_source_series
    from DICOMLabelmapSegLib.dicom.writer import write_labelmap_seg
    from synthetic import make_affine, make_ct_series, make_segmentation

    affine = make_affine(oblique=True)
    source = read_source_series(make_ct_series(tmp_path / "ct", shape=(5, 12, 16), affine=affine))
    geometry = Geometry((5, 12, 16), affine, str(source[0].FrameOfReferenceUID))
    (path,) = write_labelmap_seg(make_segmentation(geometry, layers=[[1, 2, 300]]), source, tmp_path / "seg")
    return path


@pytest.mark.parametrize("name", ["dcmqi/sparse-labelmap-ppv5.dcm", "ours"])
def test_raw_frame_groups_equal_pydicom(data_dir: Path, tmp_path: Path, name: str) -> None:
    path = our_labelmap(tmp_path) if name == "ours" else data_dir / name
    fast = framegroups.raw_frame_groups(pydicom.dcmread(path))
    assert fast is not None, "the raw parser must handle explicit VR little endian with defined lengths"
    slow = [framegroups.group_from_item(item) for item in pydicom.dcmread(path).PerFrameFunctionalGroupsSequence]
    assert [group_tuple(g) for g in fast] == [group_tuple(g) for g in slow]
    assert all(g.image_position is not None and g.source_sop_instance_uids for g in fast)
    ds = pydicom.dcmread(path)
    assert framegroups.raw_referenced_series(ds) == [
        (
            item.SeriesInstanceUID,
            [(i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID) for i in item.ReferencedInstanceSequence],
        )
        for item in ds.ReferencedSeriesSequence
    ]


def test_undefined_length_sequences_read_the_same(tmp_path: Path) -> None:
    path = our_labelmap(tmp_path)
    ds = pydicom.dcmread(path)
    for element in ds.iterall():
        if element.VR == "SQ":
            element.is_undefined_length = True
            for item in element.value:
                item.is_undefined_length_sequence_item = True
    undefined = save(ds, tmp_path / "undefined.dcm")
    assert undefined.read_bytes().count(b"\xfe\xff\xdd\xe0") > 10  # sequence delimiters
    expected, actual = read_segmentation(path), read_segmentation(undefined)
    assert differences(expected, actual) == []
    assert actual.referenced_series == expected.referenced_series


def test_raw_frame_groups_fall_back_for_implicit_vr_and_damage(data_dir: Path) -> None:
    implicit = pydicom.dcmread(data_dir / "highdicom" / "seg_image_ct_binary.dcm")
    assert framegroups.raw_frame_groups(implicit) is None  # pydicom parses it instead
    ds = pydicom.dcmread(data_dir / "dcmqi" / "sparse-labelmap-ppv5.dcm")
    raw = ds.get_item(framegroups.PER_FRAME_FUNCTIONAL_GROUPS)
    damaged = bytearray(raw.value)
    damaged[16:20] = b"\xff\xff\xff\x7f"  # the first nested sequence's length, far beyond the value
    ds[framegroups.PER_FRAME_FUNCTIONAL_GROUPS] = raw._replace(value=bytes(damaged))
    assert framegroups.raw_frame_groups(ds) is None
    with pytest.raises(InvalidDicomFileError):
        read_segmentation(ds)


@pytest.mark.slow
def test_large_jpeg_ls_labelmap_reads_fast(tmp_path: Path) -> None:
    """A 512 x 512 x 334 JPEG-LS LABELMAP with 61 labels (the project's speed target: well under 0.4 s)."""
    import time

    from DICOMLabelmapSegLib import Geometry, Layer, Segmentation
    from DICOMLabelmapSegLib.dicom.source import read_source_series
    from DICOMLabelmapSegLib.dicom.writer import write_labelmap_seg
    from synthetic import make_affine, make_ct_series, make_segment

    shape = (334, 512, 512)
    affine = make_affine(spacing=(1.0, 0.75, 0.75))
    source = read_source_series(make_ct_series(tmp_path / "ct", shape=shape, affine=affine, shuffle=False))
    rng = np.random.default_rng(0)
    labels = np.zeros(shape, dtype=np.uint8)
    values = sorted(rng.choice(np.arange(1, 118), size=61, replace=False).tolist())
    for value in values:  # 61 boxes ("organs")
        low = rng.integers(0, [300, 450, 450])
        size = rng.integers(10, [60, 80, 80])
        labels[low[0] : low[0] + size[0], low[1] : low[1] + size[1], low[2] : low[2] + size[2]] = value
    segmentation = Segmentation(
        Geometry(shape, affine, str(source[0].FrameOfReferenceUID)),
        [Layer(labels, [make_segment(v, i) for i, v in enumerate(values)])],
    )
    (path,) = write_labelmap_seg(segmentation, source, tmp_path / "seg")
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        read_back = read_segmentation(path)
        timings.append(time.perf_counter() - start)
    np.testing.assert_array_equal(read_back.layers[0].labels, labels)
    # Loose bound: the machine running the tests may be shared; bench/ measures properly.
    assert min(timings) < 1.5, timings


@pytest.mark.parametrize("syntax", [JPEGLSLossless, RLELossless, JPEG2000Lossless])
def test_threaded_decoding_gives_the_same_volume(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, syntax: str
) -> None:
    from DICOMLabelmapSegLib.dicom import pixels
    ds = sparse_uint16(data_dir)
    set_frames(ds, frames_of(ds), syntax)
    serial = read_segmentation(ds, workers=1)
    monkeypatch.setattr(pixels, "_PARALLEL_MIN_VOXELS", 0)  # use the pool even for this small file
    threaded = read_segmentation(ds, workers=4)
    assert differences(serial, threaded) == []


def test_rle_without_pylibjpeg_rle_uses_pydicom(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    ds = sparse_uint16(data_dir)
    expected = read_segmentation(copy.deepcopy(ds))
    set_frames(ds, frames_of(ds), RLELossless)
    monkeypatch.setitem(sys.modules, "rle.utils", None)  # 'import rle.utils' now fails
    assert differences(expected, read_segmentation(ds)) == []


def test_syntax_without_any_decoder_is_a_missing_codec(data_dir: Path) -> None:
    ds = sparse(data_dir)
    set_frames(ds, frames_of(ds), RLELossless)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: pydicom has no decoder
    with pytest.raises(MissingCodecError, match="cannot be decoded") as caught:
        read_segmentation(ds)
    assert_good_message(caught.value)


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, JPEGLSLossless, RLELossless])
def test_labelmap_written_by_highdicom_directly(tmp_path: Path, syntax: str) -> None:
    """highdicom's own LABELMAP output (frames in its order, 'Background' segment 0) reads back exactly."""
    from DICOMLabelmapSegLib.dicom.source import read_source_series
    from synthetic import highdicom_labelmap, make_affine, make_ct_series

    affine = make_affine(oblique=True)
    shape = (5, 12, 16)
    source = read_source_series(make_ct_series(tmp_path / "ct", shape=shape, affine=affine))
    rng = np.random.default_rng(5)
    labels = np.zeros(shape, dtype=np.uint8)
    labels[1:4, 2:9, 3:12] = 2
    labels[2:5, 5:11, 1:6] = 5
    labels[rng.random(shape) < 0.05] = 3
    seg = highdicom_labelmap(source, labels, (2, 3, 5), transfer_syntax_uid=syntax)
    segmentation = read_segmentation(save(seg, tmp_path / "hd.dcm"))
    assert [s.label_value for s in segmentation.segments] == [2, 3, 5]  # no 'Background' segment
    reference_affine = np.asarray(affine)
    labels_read = aligned(segmentation.layers[0].labels, segmentation.geometry.affine, reference_affine)
    np.testing.assert_array_equal(labels_read, labels)
    assert segmentation.referenced_series.series_instance_uid == source[0].SeriesInstanceUID
    assert len(segmentation.referenced_series.sop_instance_uids) == shape[0]


@pytest.mark.parametrize("compress", ["none", "deflate"])
def test_labelmap_written_by_dcmqi(data_dir: Path, tmp_path: Path, compress: str) -> None:
    """dcmqi's itkimage2segimage LABELMAP output (sparse: no frames for empty slices) matches its input."""
    import json
    import subprocess

    from validators import tool_path

    exe = tool_path("itkimage2segimage")
    if exe is None:
        pytest.skip("dcmqi not installed: pip install dcmqi")
    labels, header = nrrd.read(str(data_dir / "dcmqi" / "24x38x3" / "nrrd" / "label.nrrd"))
    labels = labels.astype(np.int16)
    assert labels[:, :, 1].any() and not labels[:, :, [0, 2]].any()
    labels[:, :, 2] = np.where(labels[:, :, 1] == 1, 7, 0)  # move the liver to the last slice
    labels[:, :, 1] = 0  # an empty slice between two frames: dcmqi writes no frame for it
    labels[2:9, 3:12, 0] = 3
    nrrd_path = tmp_path / "labels.nrrd"
    nrrd.write(str(nrrd_path), labels, header)
    colors = {3: [10, 200, 30], 7: [221, 130, 101]}
    metadata = {
        "ContentCreatorName": "Doe^Jane",
        "ClinicalTrialSeriesID": "Session1",
        "ClinicalTrialTimePointID": "1",
        "ClinicalTrialCoordinatingCenterName": "dcmqi",
        "SeriesDescription": "Segmentation",
        "SeriesNumber": "300",
        "InstanceNumber": "1",
        "ContentLabel": "SEGMENTATION",
        "segmentAttributes": [[
            {
                "labelID": label,
                "SegmentLabel": f"label {label}",
                "SegmentAlgorithmType": "MANUAL",
                "recommendedDisplayRGBValue": colors[label],
                "SegmentedPropertyCategoryCodeSequence": {
                    "CodeValue": "85756007", "CodingSchemeDesignator": "SCT", "CodeMeaning": "Tissue"
                },
                "SegmentedPropertyTypeCodeSequence": {
                    "CodeValue": "10200004", "CodingSchemeDesignator": "SCT", "CodeMeaning": "Liver"
                },
            }
            for label in (3, 7)
        ]],
    }
    (tmp_path / "meta.json").write_text(json.dumps(metadata))
    output = tmp_path / "seg.dcm"
    subprocess.run(
        [exe, "--segmentationType", "labelmap", "--useLabelIDAsSegmentNumber", "--compress", compress,
         "--inputImageList", str(nrrd_path), "--inputDICOMDirectory", str(data_dir / "dcmqi" / "24x38x3" / "image"),
         "--outputDICOM", str(output), "--inputMetadata", str(tmp_path / "meta.json")],
        check=True, capture_output=True, timeout=120,
    )
    assert int(pydicom.dcmread(output, stop_before_pixels=True).NumberOfFrames) == 2  # sparse
    segmentation = read_segmentation(output)
    reference, reference_affine = nrrd_volume(nrrd_path)
    layer = segmentation.layers[0]
    np.testing.assert_array_equal(aligned(layer.labels, segmentation.geometry.affine, reference_affine), reference)
    assert [(s.label_value, s.name) for s in layer.segments] == [(3, "label 3"), (7, "label 7")]
    assert [s.color for s in layer.segments] == [tuple(colors[3]), tuple(colors[7])]
    assert all(s.terminology.type.same_concept(LIVER) for s in layer.segments)


@pytest.mark.parametrize("where", ["derivation", "referenced-image"])
def test_referenced_images_without_referenced_series(data_dir: Path, tmp_path: Path, where: str) -> None:
    ds = sparse(data_dir)
    del ds.ReferencedSeriesSequence
    expected = [
        group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        for group in ds.PerFrameFunctionalGroupsSequence
    ]
    if where == "referenced-image":
        for group in ds.PerFrameFunctionalGroupsSequence:
            reference = Dataset()
            reference.ReferencedSOPClassUID = pydicom.uid.CTImageStorage
            reference.ReferencedSOPInstanceUID = group.DerivationImageSequence[0].SourceImageSequence[0][
                "ReferencedSOPInstanceUID"
            ].value
            group.ReferencedImageSequence = [reference]
            del group.DerivationImageSequence
    path = save(ds, tmp_path / "seg.dcm")
    assert framegroups.raw_frame_groups(pydicom.dcmread(path)) is not None  # the raw parser is exercised
    referenced = read_segmentation(path).referenced_series
    assert read_segmentation(ds).referenced_series == referenced  # and pydicom's path agrees
    assert referenced.series_instance_uid == ""  # not known without the Referenced Series Sequence
    assert list(referenced.sop_instance_uids) == expected
    assert referenced.frame_of_reference_uid == ds.FrameOfReferenceUID


def test_per_frame_orientation_and_spacing(data_dir: Path) -> None:
    """Plane orientation and pixel measures given per frame (not shared), formatted differently, are one geometry."""
    ds = sparse(data_dir)
    shared = ds.SharedFunctionalGroupsSequence[0]
    orientation, measures = shared.PlaneOrientationSequence, shared.PixelMeasuresSequence
    del shared.PlaneOrientationSequence, shared.PixelMeasuresSequence
    for index, group in enumerate(ds.PerFrameFunctionalGroupsSequence):
        group.PlaneOrientationSequence = copy.deepcopy(orientation)
        group.PixelMeasuresSequence = copy.deepcopy(measures)
        if index:
            group.PlaneOrientationSequence[0].ImageOrientationPatient = ["1.0", "0.0", "0.0", "0.0", "1.0", "0.000001"]
    expected = read_segmentation(sparse(data_dir))
    assert differences(expected, read_segmentation(ds)) == []
    ds.PerFrameFunctionalGroupsSequence[1].PlaneOrientationSequence[0].ImageOrientationPatient = [0, 1, 0, 1, 0, 0]
    with pytest.raises(GeometryMismatchError, match="different orientations"):
        read_segmentation(ds)


def test_highdicom_segment_description_fields(data_dir: Path) -> None:
    path = data_dir / "highdicom" / "seg_image_ct_binary.dcm"
    (segment,) = read_segmentation(path).segments
    item = pydicom.dcmread(path, stop_before_pixels=True).SegmentSequence[0]
    assert segment.name == "first segment"
    assert segment.terminology.category.same_concept(TISSUE)
    assert segment.terminology.type.same_concept(Code("272673000", "SCT", "Bone"))
    assert segment.algorithm_type == SegmentAlgorithmType.AUTOMATIC
    assert (segment.algorithm_name, segment.algorithm_version) == ("test", "v1.0")
    assert segment.algorithm_family.same_concept(Code("123110", "DCM", "Artificial Intelligence"))
    assert (segment.tracking_id, segment.tracking_uid) == (item.TrackingID, item.TrackingUID)
    assert segment.color == (128, 174, 128)  # no display color in the file: the model's default
