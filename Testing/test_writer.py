"""Writing LABELMAP SEG series: validity (dciodvfy), lossless pixels, colors, terminology, atomicity, errors."""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
from pathlib import Path

import numpy as np
import pydicom
import pytest
from DICOMLabelmapSegLib.dicom import writer as writer_module
from DICOMLabelmapSegLib.dicom.color import dicom_lab_to_rgb
from DICOMLabelmapSegLib.dicom.options import ExportOptions
from DICOMLabelmapSegLib.dicom.source import geometry_from_source, read_source_series
from DICOMLabelmapSegLib.dicom.syntax import TransferSyntax
from DICOMLabelmapSegLib.dicom.writer import (
    create_labelmap_datasets,
    write_labelmap_seg,
)
from DICOMLabelmapSegLib.errors import (
    GeometryMismatchError,
    InvalidSegmentationError,
    MissingCodecError,
    OverlappingSegmentsError,
    SourceImageError,
    TooManyLabelsError,
    UndescribedLabelError,
)
from DICOMLabelmapSegLib.geometry import frame_positions
from DICOMLabelmapSegLib.model import Geometry, Layer, Segment, Segmentation
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from synthetic import make_affine, make_ct_series, make_segment, make_segmentation
from validators import dciodvfy_errors, dciodvfy_warnings, independent_frames

LABEL_MAP_SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"


@pytest.fixture(scope="module")
def small_series(tmp_path_factory):
    """A 5 x 12 x 16 oblique CT series (frames smaller than openjpeg's 32-pixel minimum)."""
    paths = make_ct_series(tmp_path_factory.mktemp("ct_small"), shape=(5, 12, 16), affine=make_affine(oblique=True))
    return paths, geometry_from_source(read_source_series(paths))


@pytest.fixture(scope="module")
def large_series(tmp_path_factory):
    """A 3 x 40 x 36 axial CT series (frames large enough for highdicom's own JPEG 2000 encoder)."""
    paths = make_ct_series(tmp_path_factory.mktemp("ct_large"), shape=(3, 40, 36))
    return paths, geometry_from_source(read_source_series(paths))


def frames_in_model_order(ds: Dataset, geometry: Geometry) -> np.ndarray:
    """Index k of each frame of ``ds`` in the model grid, found from Image Position (Patient)."""
    expected = frame_positions(geometry.affine, geometry.shape[0])
    indices = []
    for item in ds.PerFrameFunctionalGroupsSequence:
        position = np.array([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient])
        distances = np.linalg.norm(expected - position, axis=1)
        assert distances.min() < 1e-3, "frame position is not on the model grid"
        indices.append(int(distances.argmin()))
    return np.array(indices)


def assert_lossless(path: Path, layer: Layer, geometry: Geometry) -> Dataset:
    """Decode without our codecs (pydicom's plugins; zlib for Sup 244, pillow-jxl for JPEG XL), compare voxels."""
    ds = pydicom.dcmread(path)
    frames = independent_frames(ds)
    order = frames_in_model_order(ds, geometry)
    assert order.tolist() == list(range(geometry.shape[0])), "all slices, stored in the model's slice order"
    assert np.array_equal(frames, layer.labels)
    return ds


def segment_colors(ds: Dataset) -> dict[int, tuple[int, int, int]]:
    """Colors per segment number, from the palette LUT or from Recommended Display CIELab Value."""
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        entries = int(ds.RedPaletteColorLookupTableDescriptor[0]) or 65536
        table = np.asarray(apply_color_lut(np.arange(entries, dtype=np.uint16), ds))
        if int(ds.RedPaletteColorLookupTableDescriptor[2]) == 16:
            table = table >> 8
        return {int(item.SegmentNumber): tuple(int(c) for c in table[int(item.SegmentNumber)])
                for item in ds.SegmentSequence}
    return {int(item.SegmentNumber): dicom_lab_to_rgb(item.RecommendedDisplayCIELabValue)
            for item in ds.SegmentSequence if "RecommendedDisplayCIELabValue" in item}


MATRIX = list(itertools.product(TransferSyntax, [False, True], ["uint8", "uint16"], [1, 2]))


@pytest.mark.parametrize(("syntax", "palette", "dtype", "layer_count"), MATRIX,
                         ids=[f"{s.value}-{'palette' if p else 'mono'}-{d}-{n}layer" for s, p, d, n in MATRIX])
def test_every_syntax_palette_dtype_and_layer_count_is_valid_and_lossless(
    tmp_path, small_series, syntax, palette, dtype, layer_count
):
    paths, geometry = small_series
    first = [1, 2, 7] if dtype == "uint8" else [1, 300, 4000]
    layers = [first, [5, 9]][:layer_count]
    segmentation = make_segmentation(geometry, layers=layers, empty=[2, 9])
    files = write_labelmap_seg(segmentation, paths, tmp_path, ExportOptions(transfer_syntax=syntax,
                                                                            palette_color=palette))
    assert len(files) == layer_count
    series_uids = set()
    for number, (path, layer) in enumerate(zip(files, segmentation.layers), 1):
        assert dciodvfy_errors(path) == []
        assert dciodvfy_warnings(path) == []
        ds = assert_lossless(path, layer, geometry)
        assert ds.file_meta.TransferSyntaxUID == syntax.uid
        assert ds.SOPClassUID == LABEL_MAP_SEGMENTATION_STORAGE
        assert ds.SegmentationType == "LABELMAP"
        assert int(ds.InstanceNumber) == number
        assert int(ds.BitsAllocated) == (16 if max(s.label_value for s in layer.segments) > 255 else 8)
        assert ds.PhotometricInterpretation == ("PALETTE COLOR" if palette else "MONOCHROME2")
        described = {int(item.SegmentNumber) for item in ds.SegmentSequence} - {0}
        assert described == {s.label_value for s in layer.segments}  # gaps kept, empty segments kept
        colors = segment_colors(ds)
        for segment in layer.segments:
            assert colors[segment.label_value] == segment.color
        if palette:
            assert all("RecommendedDisplayCIELabValue" not in item for item in ds.SegmentSequence)
            assert colors[0] == (0, 0, 0)  # background black
        series_uids.add(ds.SeriesInstanceUID)
    assert len(series_uids) == 1


@pytest.mark.parametrize("syntax", list(TransferSyntax))
def test_frames_of_32_pixels_and_more(tmp_path, large_series, syntax):
    paths, geometry = large_series
    segmentation = make_segmentation(geometry, layers=[[1, 2], [3, 400]])
    files = write_labelmap_seg(segmentation, paths, tmp_path, ExportOptions(transfer_syntax=syntax, palette_color=True))
    for path, layer in zip(files, segmentation.layers):
        assert dciodvfy_errors(path) == []
        assert_lossless(path, layer, geometry)


def test_terminology_modifiers_in_file(tmp_path, small_series):
    paths, geometry = small_series
    segmentation = make_segmentation(geometry, layers=[[1, 2, 3]])  # 2: type modifier, 3: region + modifier
    [path] = write_labelmap_seg(segmentation, paths, tmp_path)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    items = {int(item.SegmentNumber): item for item in ds.SegmentSequence}
    assert items[0].SegmentLabel == "Background"
    kidney = items[2]
    type_item = kidney.SegmentedPropertyTypeCodeSequence[0]
    assert type_item.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue == "7771000"
    assert kidney.AnatomicRegionSequence[0].CodeValue == "818981001"
    lesion = items[3]
    assert lesion.AnatomicRegionSequence[0].AnatomicRegionModifierSequence[0].CodeMeaning == "Right"
    assert items[1].SegmentLabel == "segment 1"
    assert items[1].SegmentDescription == "synthetic segment with label 1"


def test_series_attributes_from_options(tmp_path, small_series):
    paths, geometry = small_series
    uid = generate_uid()
    options = ExportOptions(
        transfer_syntax="rle",
        series_description="My segmentation",
        series_number=42,
        series_instance_uid=uid,
        content_label="liver seg-1 (v2) extra long",
        content_description="Liver by hand",
        content_creator_name="Doe^Jane",
        manufacturer="ACME",
        software_versions="9.9",
    )
    files = write_labelmap_seg(make_segmentation(geometry, layers=[[1], [2]]), paths, tmp_path, options)
    source = pydicom.dcmread(paths[0], stop_before_pixels=True)
    for number, path in enumerate(files, 1):
        assert path.name == f"42_{number}_{pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID}.dcm"
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.SeriesInstanceUID == uid and ds.SeriesNumber == 42
        assert ds.SeriesDescription == "My segmentation"
        assert ds.ContentLabel == "LIVER SEG_1 _V2"  # CS: upper case, [A-Z0-9 _], 16 characters, trimmed
        assert ds.ContentDescription == "Liver by hand" and str(ds.ContentCreatorName) == "Doe^Jane"
        assert ds.Manufacturer == "ACME" and ds.SoftwareVersions == "9.9"
        assert ds.StudyInstanceUID == source.StudyInstanceUID and ds.PatientID == source.PatientID
        assert ds.FrameOfReferenceUID == source.FrameOfReferenceUID
        instances = ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence
        referenced = {item.ReferencedSOPInstanceUID for item in instances}
        assert source.SOPInstanceUID in referenced
        assert dciodvfy_errors(path) == []


def test_create_datasets_without_writing(small_series):
    paths, geometry = small_series
    datasets = create_labelmap_datasets(make_segmentation(geometry, layers=[[1], [2], [3]]), paths,
                                        ExportOptions(transfer_syntax=TransferSyntax.DEFLATED))
    assert [int(ds.InstanceNumber) for ds in datasets] == [1, 2, 3]
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 1
    assert len({ds.SOPInstanceUID for ds in datasets}) == 3
    assert all(ds.file_meta.TransferSyntaxUID == TransferSyntax.DEFLATED.uid for ds in datasets)


def test_geometry_different_from_source_grid(tmp_path, small_series):
    """A cropped, finer grid inside the source volume: written on its own grid."""
    paths, source_geometry = small_series
    affine = source_geometry.affine.copy()
    affine[:3, 1:3] *= 0.5  # half the pixel spacing
    affine[:3, 3] = (source_geometry.affine @ np.array([1.0, 2.0, 3.0, 1.0]))[:3]
    geometry = Geometry((3, 10, 14), affine, source_geometry.frame_of_reference_uid)
    segmentation = make_segmentation(geometry, layers=[[1, 2]])
    [path] = write_labelmap_seg(segmentation, paths, tmp_path)
    assert dciodvfy_errors(path) == []
    ds = assert_lossless(path, segmentation.layers[0], geometry)
    spacing = [float(v) for v in ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing]
    assert np.allclose(spacing, geometry.spacing[1:], atol=1e-6)


def test_real_sources(tmp_path, data_dir):
    for name, folder in [("24x38x3", data_dir / "dcmqi" / "24x38x3" / "image"),
                         ("multiframe", data_dir / "dcmqi" / "24x38x3" / "multiframe" / "mf.dcm"),
                         ("ct_image", data_dir / "highdicom" / "ct_image.dcm"),
                         ("ct-3slice", data_dir / "dcmqi" / "ct-3slice")]:
        source = read_source_series(folder)
        geometry = geometry_from_source(source)
        segmentation = make_segmentation(geometry, layers=[[1, 2]])
        files = write_labelmap_seg(segmentation, folder, tmp_path / name)
        assert dciodvfy_errors(files[0]) == [], name
        ds = assert_lossless(files[0], segmentation.layers[0], geometry)
        assert ds.PatientID == source[0].PatientID


def test_source_without_slice_thickness(tmp_path):
    """Slice Thickness is Type 2 in CT but Type 1C in the SEG's Pixel Measures: filled from the grid."""
    paths = make_ct_series(tmp_path / "ct", blank=["SliceThickness"])
    geometry = geometry_from_source(read_source_series(paths))
    [path] = write_labelmap_seg(make_segmentation(geometry), paths, tmp_path / "seg")
    assert dciodvfy_errors(path) == []
    measures = pydicom.dcmread(path).SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SliceThickness) == pytest.approx(geometry.spacing[0])


def test_large_private_source_elements_are_never_loaded(tmp_path, monkeypatch):
    """Headers are read with deferred large values; the writer never touches private blobs."""
    import pydicom.filereader

    paths = make_ct_series(tmp_path / "ct")
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.private_block(0x0009, "BIGBLOB", create=True).add_new(0x01, "OB", b"\1" * (2 * 1024 * 1024))
        ds.save_as(path)

    def refuse(*args, **kwargs):
        raise AssertionError("a deferred (large) source element was loaded")

    monkeypatch.setattr(pydicom.filereader, "read_deferred_data_element", refuse)
    source = read_source_series(paths)
    [path] = write_labelmap_seg(make_segmentation(geometry_from_source(source)), source, tmp_path / "seg")
    assert dciodvfy_errors(path) == []


def test_non_ascii_names_switch_to_utf8(tmp_path, small_series):
    paths, geometry = small_series
    segmentation = make_segmentation(geometry, layers=[[1, 2]])
    segmentation.layers[0].segments[0] = Segment(1, "Leber Größe 肝", description="é 肝")
    [path] = write_labelmap_seg(segmentation, paths, tmp_path / "utf8")
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert ds.SegmentSequence[1].SegmentLabel == "Leber Größe 肝"
    assert ds.SegmentSequence[1].SegmentDescription == "é 肝"
    assert ds.PatientName == pydicom.dcmread(paths[0], stop_before_pixels=True).PatientName
    assert dciodvfy_errors(path) == []
    [plain] = write_labelmap_seg(make_segmentation(geometry), paths, tmp_path / "ascii")
    assert pydicom.dcmread(plain, stop_before_pixels=True).SpecificCharacterSet == "ISO_IR 100"  # the source's


def test_invalid_series_instance_uid_option():
    with pytest.raises(ValueError, match="not a valid UID"):
        ExportOptions(series_instance_uid="1.2.03.abc")
    with pytest.raises(ValueError, match="Unknown transfer syntax"):
        ExportOptions(transfer_syntax="webp")


def test_progress_reports_increasing_fractions(tmp_path, small_series):
    paths, geometry = small_series
    calls = []
    write_labelmap_seg(make_segmentation(geometry, layers=[[1], [2]]), paths, tmp_path,
                       progress=lambda fraction, message: calls.append((fraction, message)))
    fractions = [fraction for fraction, _ in calls]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert all(isinstance(message, str) and message for _, message in calls)


# --- atomicity ----------------------------------------------------------------------------------


def test_failure_while_saving_second_file_leaves_nothing(tmp_path, small_series, monkeypatch):
    paths, geometry = small_series
    (tmp_path / "unrelated.txt").write_text("keep me")
    original = Dataset.save_as
    calls = []

    def failing_save(self, filename, *args, **kwargs):
        calls.append(filename)
        if len(calls) == 2:
            Path(filename).write_bytes(b"half a file")
            raise OSError("No space left on device")
        return original(self, filename, *args, **kwargs)

    monkeypatch.setattr(Dataset, "save_as", failing_save)
    with pytest.raises(OSError, match="No space"):
        write_labelmap_seg(make_segmentation(geometry, layers=[[1], [2], [3]]), paths, tmp_path)
    assert len(calls) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unrelated.txt"]


def test_failure_while_encoding_second_layer_leaves_nothing(tmp_path, small_series, monkeypatch):
    paths, geometry = small_series
    original = writer_module._layer_dataset

    def failing_layer(layer, instance_number, *args, **kwargs):
        if instance_number == 2:
            raise InvalidSegmentationError("injected failure")
        return original(layer, instance_number, *args, **kwargs)

    monkeypatch.setattr(writer_module, "_layer_dataset", failing_layer)
    with pytest.raises(InvalidSegmentationError, match="injected"):
        write_labelmap_seg(make_segmentation(geometry, layers=[[1], [2]]), paths, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # the folder this call created is removed too


def test_interrupt_leaves_nothing(tmp_path, small_series, monkeypatch):
    paths, geometry = small_series

    def interrupt(fraction, message):
        if message.startswith("Wrote"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_labelmap_seg(make_segmentation(geometry, layers=[[1], [2]]), paths, tmp_path, progress=interrupt)
    assert list(tmp_path.iterdir()) == []


# --- typed errors -------------------------------------------------------------------------------


def _segmentation(geometry, labels, segments):
    return Segmentation(geometry, [Layer(labels, segments)])


def test_overlapping_segments(tmp_path, small_series):
    paths, geometry = small_series
    labels = np.ones(geometry.shape, np.uint8)
    segmentation = _segmentation(geometry, labels, [Segment(1, "a"), Segment(1, "b")])
    with pytest.raises(OverlappingSegmentsError, match="share label value"):
        write_labelmap_seg(segmentation, paths, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_too_many_labels(tmp_path, small_series):
    paths, geometry = small_series
    labels = np.zeros(geometry.shape, np.int32)
    labels[0, 0, 0] = 70000
    with pytest.raises(TooManyLabelsError, match="65535"):
        write_labelmap_seg(_segmentation(geometry, labels, [Segment(1, "a")]), paths, tmp_path)


def test_wide_integer_arrays_are_narrowed(tmp_path, small_series):
    paths, geometry = small_series
    labels = np.zeros(geometry.shape, np.int64)
    labels[1, 2, 3] = 300
    [path] = write_labelmap_seg(_segmentation(geometry, labels, [Segment(300, "a")]), paths, tmp_path)
    assert pydicom.dcmread(path).pixel_array.max() == 300


def test_undescribed_labels(tmp_path, small_series):
    paths, geometry = small_series
    labels = np.zeros(geometry.shape, np.uint8)
    labels[0, 0, :3] = [1, 2, 3]
    with pytest.raises(UndescribedLabelError, match="2, 3"):
        write_labelmap_seg(_segmentation(geometry, labels, [Segment(1, "a")]), paths, tmp_path)


def test_invalid_models(tmp_path, small_series):
    paths, geometry = small_series
    with pytest.raises(InvalidSegmentationError, match="no layers"):
        write_labelmap_seg(Segmentation(geometry, []), paths, tmp_path)
    with pytest.raises(InvalidSegmentationError, match="no segments"):
        write_labelmap_seg(_segmentation(geometry, np.zeros(geometry.shape, np.uint8), []), paths, tmp_path)
    with pytest.raises(InvalidSegmentationError, match="shape"):
        write_labelmap_seg(_segmentation(geometry, np.zeros((2, 2, 2), np.uint8), [Segment(1, "a")]), paths, tmp_path)
    with pytest.raises(InvalidSegmentationError, match="integers"):
        write_labelmap_seg(_segmentation(geometry, np.zeros(geometry.shape, np.float32), [Segment(1, "a")]),
                           paths, tmp_path)
    sheared = geometry.affine.copy()
    sheared[:3, 2] += 0.3 * sheared[:3, 1]
    with pytest.raises(InvalidSegmentationError, match="perpendicular"):
        write_labelmap_seg(make_segmentation(Geometry(geometry.shape, sheared)), paths, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_missing_codec(tmp_path, small_series, monkeypatch):
    paths, geometry = small_series
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "jpeg_ls" else real_find_spec(name, *a))
    with pytest.raises(MissingCodecError, match="pip install pyjpegls"):
        write_labelmap_seg(make_segmentation(geometry), paths, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_other_frame_of_reference(tmp_path, small_series):
    paths, geometry = small_series
    other = Geometry(geometry.shape, geometry.affine, generate_uid())
    with pytest.raises(GeometryMismatchError) as raised:
        write_labelmap_seg(make_segmentation(other), paths, tmp_path)
    message = str(raised.value)
    assert "frame of reference" in message and "Synthetic CT" in message and "Choose" in message


def test_no_overlap_with_source(tmp_path, small_series):
    paths, geometry = small_series
    far = geometry.affine.copy()
    far[:3, 3] += [500.0, 0, 0]
    with pytest.raises(GeometryMismatchError, match="does not overlap"):
        write_labelmap_seg(make_segmentation(Geometry(geometry.shape, far)), paths, tmp_path)


def test_partial_overlap_is_accepted(tmp_path, small_series):
    paths, geometry = small_series
    shifted = geometry.affine.copy()
    shifted[:3, 3] += 3 * geometry.affine[:3, 2]  # three columns to the side: still overlapping
    [path] = write_labelmap_seg(make_segmentation(Geometry(geometry.shape, shifted)), paths, tmp_path)
    assert dciodvfy_errors(path) == []


def test_blank_uid_source(tmp_path, data_dir, small_series):
    _, geometry = small_series
    source = data_dir / "totalsegmentator" / "example_ct_dicom"
    source_geometry = geometry_from_source(read_source_series(source, require_uids=False))
    with pytest.raises(SourceImageError, match="blank"):
        write_labelmap_seg(make_segmentation(source_geometry), source, tmp_path)


def test_segment_names_and_many_segments(tmp_path, small_series):
    """Long names are made valid LO; a few hundred segments in one layer are fine."""
    paths, geometry = small_series
    values = list(range(1, 301))
    segmentation = make_segmentation(geometry, layers=[values])
    long_named = Segment(301, "x" * 100, color=(1, 2, 3))
    segmentation.layers[0].segments.append(long_named)
    [path] = write_labelmap_seg(segmentation, paths, tmp_path, ExportOptions(palette_color=True))
    assert dciodvfy_errors(path) == []
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert len(ds.SegmentSequence) == 302  # + background
    assert int(ds.BitsAllocated) == 16
    assert segment_colors(ds)[301] == (1, 2, 3)


@pytest.mark.parametrize("values", [[1, 2], [1, 255], [3, 400], [1, 65535]])
def test_dark_palettes_stay_valid(tmp_path, small_series, values):
    """dciodvfy wants each LUT channel to reach half range: an unused value maps to white."""
    paths, geometry = small_series
    labels = np.zeros(geometry.shape, np.uint16 if max(values) > 255 else np.uint8)
    labels[0, 0, : len(values)] = values
    segments = [Segment(v, f"dark {v}", color=(10 * i, 20, 5)) for i, v in enumerate(values, 1)]
    [path] = write_labelmap_seg(_segmentation(geometry, labels, segments), paths, tmp_path,
                                ExportOptions(palette_color=True))
    assert dciodvfy_errors(path) == []
    ds = pydicom.dcmread(path)
    colors = segment_colors(ds)
    assert all(colors[s.label_value] == s.color for s in segments) and colors[0] == (0, 0, 0)
    assert np.array_equal(ds.pixel_array[frames_in_model_order(ds, geometry).argsort()], labels)


@pytest.mark.parametrize("flip", [False, True])
def test_frames_stored_in_model_slice_order_either_direction(tmp_path, small_series, flip):
    paths, geometry = small_series
    affine = geometry.affine.copy()
    if flip:  # same voxels, slice axis reversed
        affine[:3, 3] += (geometry.shape[0] - 1) * affine[:3, 0]
        affine[:3, 0] *= -1
    flipped = Geometry(geometry.shape, affine, geometry.frame_of_reference_uid)
    for syntax in (TransferSyntax.JPEG_LS, TransferSyntax.EXPLICIT):
        segmentation = make_segmentation(flipped, layers=[[1, 2]])
        [path] = write_labelmap_seg(segmentation, paths, tmp_path / syntax.value, ExportOptions(transfer_syntax=syntax))
        assert_lossless(path, segmentation.layers[0], flipped)
        assert dciodvfy_errors(path) == []


@pytest.mark.parametrize("palette", [False, True])
def test_round_trip_through_reader(tmp_path, small_series, palette):
    """Cross-check with the project's reader: same geometry, voxels, segments, terminology."""
    from DICOMLabelmapSegLib.dicom.reader import read_segmentation
    from DICOMLabelmapSegLib.model import differences

    paths, geometry = small_series
    segmentation = make_segmentation(geometry, layers=[[1, 2, 7], [300, 5]], empty=[2])
    files = write_labelmap_seg(segmentation, paths, tmp_path, ExportOptions(palette_color=palette))
    assert differences(segmentation, read_segmentation(files)) == []


def test_make_segment_is_deterministic():
    assert make_segment(5) == make_segment(5)


# --- algorithm identification -------------------------------------------------------------------


def test_automatic_and_semiautomatic_segments_without_algorithm_family(tmp_path, small_series):
    """No family: no identification sequence (Type 3); type and name survive; Background is MANUAL."""
    from DICOMLabelmapSegLib.dicom.reader import read_segmentation
    from DICOMLabelmapSegLib.model import Code, SegmentAlgorithmType, differences

    paths, geometry = small_series
    segmentation = make_segmentation(geometry, layers=[[1, 2, 3, 4], [5]])
    automatic, semi, manual = (SegmentAlgorithmType.AUTOMATIC, SegmentAlgorithmType.SEMIAUTOMATIC,
                               SegmentAlgorithmType.MANUAL)
    family = Code("113037", "DCM", "Artificial Intelligence")
    segmentation.layers[0].segments = [
        Segment(1, "auto", algorithm_type=automatic, algorithm_name="net"),
        Segment(2, "semi", algorithm_type=semi, algorithm_name="SlicerEditor"),
        Segment(3, "manual", algorithm_type=manual),
        Segment(4, "family", algorithm_type=automatic, algorithm_name="nn", algorithm_version="2",
                algorithm_family=family),
    ]
    segmentation.layers[1].segments = [Segment(5, "first has a family", algorithm_type=semi, algorithm_name="x",
                                               algorithm_version="1", algorithm_family=family)]
    files = write_labelmap_seg(segmentation, paths, tmp_path)
    assert differences(segmentation, read_segmentation(files)) == []
    for path in files:
        assert dciodvfy_errors(path) == []
    items = {int(i.SegmentNumber): i for i in pydicom.dcmread(files[0], stop_before_pixels=True).SegmentSequence}
    assert (items[0].SegmentAlgorithmType, "SegmentAlgorithmName" in items[0]) == ("MANUAL", False)
    assert (items[1].SegmentAlgorithmType, items[1].SegmentAlgorithmName) == ("AUTOMATIC", "net")
    assert "SegmentationAlgorithmIdentificationSequence" not in items[1]
    assert (items[2].SegmentAlgorithmType, items[2].SegmentAlgorithmName) == ("SEMIAUTOMATIC", "SlicerEditor")
    assert items[3].SegmentAlgorithmType == "MANUAL" and "SegmentAlgorithmName" not in items[3]
    identification = items[4].SegmentationAlgorithmIdentificationSequence[0]
    assert (identification.AlgorithmName, identification.AlgorithmVersion) == ("nn", "2")
    background = pydicom.dcmread(files[1], stop_before_pixels=True).SegmentSequence[0]
    assert background.SegmentAlgorithmType == "MANUAL" and "SegmentAlgorithmName" not in background


def test_automatic_segment_without_name_gets_the_required_name(tmp_path, small_series):
    """Segment Algorithm Name is Type 1C (required for AUTOMATIC/SEMIAUTOMATIC): written as 'unknown'."""
    from DICOMLabelmapSegLib.model import SegmentAlgorithmType

    paths, geometry = small_series
    segmentation = make_segmentation(geometry, layers=[[1]])
    segmentation.layers[0].segments = [Segment(1, "auto", algorithm_type=SegmentAlgorithmType.AUTOMATIC)]
    [path] = write_labelmap_seg(segmentation, paths, tmp_path)
    assert dciodvfy_errors(path) == []
    item = pydicom.dcmread(path, stop_before_pixels=True).SegmentSequence[1]
    assert (item.SegmentAlgorithmType, item.SegmentAlgorithmName) == ("AUTOMATIC", "unknown")


def test_dcmqi_labelmap_re_exports_losslessly(tmp_path, data_dir):
    """dcmqi's LABELMAP (a SEMIAUTOMATIC segment with only an algorithm name) read and written again."""
    from DICOMLabelmapSegLib.dicom.reader import read_segmentation
    from DICOMLabelmapSegLib.model import differences

    segmentation = read_segmentation(data_dir / "dcmqi" / "sparse-labelmap-ppv5.dcm")
    assert segmentation.segments[0].algorithm_family is None and segmentation.segments[0].algorithm_name
    [path] = write_labelmap_seg(segmentation, data_dir / "dcmqi" / "24x38x3" / "image", tmp_path)
    assert dciodvfy_errors(path) == []
    assert differences(segmentation, read_segmentation(path)) == []


# --- small frames -------------------------------------------------------------------------------


@pytest.mark.parametrize(("rows", "columns", "dtype"), [(1, 1, "uint8"), (1, 3, "uint8"), (4, 4, "uint8"),
                                                        (2, 2, "uint16"), (3, 5, "uint16"), (16, 16, "uint8")])
@pytest.mark.parametrize("syntax", [TransferSyntax.JPEG_LS, TransferSyntax.JPEG_2000])
def test_tiny_frames_are_encoded(tmp_path, small_series, rows, columns, dtype, syntax):
    """pyjpegls gives CharLS too small a buffer for frames under ~32 pixels; openjpeg needs 32-pixel sides."""
    paths, geometry = small_series
    affine = geometry.affine.copy()
    affine[:3, 3] = (geometry.affine @ np.array([1.0, 3.0, 4.0, 1.0]))[:3]
    tiny = Geometry((2, rows, columns), affine, geometry.frame_of_reference_uid)
    segmentation = make_segmentation(tiny, layers=[[1, 2] if dtype == "uint8" else [1, 300]], seed=rows * columns)
    [path] = write_labelmap_seg(segmentation, paths, tmp_path, ExportOptions(transfer_syntax=syntax))
    assert dciodvfy_errors(path) == []
    ds = assert_lossless(path, segmentation.layers[0], tiny)
    assert ds.file_meta.TransferSyntaxUID == syntax.uid


def test_jpeg_ls_frame_encoder_every_small_size():
    import jpeg_ls
    from DICOMLabelmapSegLib.dicom.codecs import jpeg_ls_frame

    rng = np.random.default_rng(5)
    for dtype in (np.uint8, np.uint16):
        for rows, columns in itertools.product([1, 2, 3, 5, 8, 17], repeat=2):
            frame = rng.integers(0, np.iinfo(dtype).max, size=(rows, columns), endpoint=True).astype(dtype)
            decoded = jpeg_ls.decode_buffer(jpeg_ls_frame(frame))
            pixels = np.frombuffer(bytes(decoded[0] if isinstance(decoded, tuple) else decoded), dtype=dtype)
            assert np.array_equal(pixels.reshape(rows, columns), frame), (rows, columns, dtype)


def test_jpeg_ls_tiny_frame_without_padded_encoder_is_a_typed_error(monkeypatch):
    """If pyjpegls' extension module changes, the error is ours and says what to do."""
    import _CharLS
    from DICOMLabelmapSegLib.dicom.codecs import jpeg_ls_frame

    monkeypatch.delattr(_CharLS, "_encode")
    with pytest.raises(InvalidSegmentationError, match=r"1 x 3 frame.*RLE"):
        jpeg_ls_frame(np.zeros((1, 3), np.uint8))


@pytest.mark.parametrize("pixel_spacing_of_source", [True, False])
def test_single_slice_keeps_its_slice_spacing(tmp_path, small_series, pixel_spacing_of_source):
    """highdicom derives 1.0 from a single frame position; the writer stores the grid's spacing."""
    from DICOMLabelmapSegLib.dicom.reader import read_segmentation
    from DICOMLabelmapSegLib.model import differences

    paths, geometry = small_series
    affine = geometry.affine.copy()
    affine[:3, 0] *= 1.7 / np.linalg.norm(affine[:3, 0])
    if not pixel_spacing_of_source:
        affine[:3, 1:3] *= 0.5
    single = Geometry((1, 6, 7), affine, geometry.frame_of_reference_uid)
    segmentation = make_segmentation(single, layers=[[1, 2]])
    [path] = write_labelmap_seg(segmentation, paths, tmp_path)
    assert dciodvfy_errors(path) == []
    measures = pydicom.dcmread(path).SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SpacingBetweenSlices) == pytest.approx(1.7)
    assert differences(segmentation, read_segmentation(path)) == []


# --- overlap check ------------------------------------------------------------------------------


@pytest.mark.parametrize("oblique", [False, True])
def test_overlap_check_with_non_square_source(tmp_path, oblique):
    """Columns (16 x 0.7 mm) and rows (12 x 0.8 mm) differ: each extent is checked along its own axis."""
    affine = make_affine(spacing=(2.5, 0.8, 0.7), oblique=oblique)
    paths = make_ct_series(tmp_path / "ct", shape=(4, 12, 16), affine=affine)
    frame_of_reference = pydicom.dcmread(paths[0], stop_before_pixels=True).FrameOfReferenceUID

    def grid_at(k: float, j: float, i: float) -> Geometry:
        grid = affine.copy()
        grid[:3, 3] = (affine @ [k, j, i, 1.0])[:3]
        return Geometry((2, 3, 3), grid, frame_of_reference)

    # Inside near the far column edge / far row edge (the old check rejected the first: 14.9 x 0.7 > 12 x 0.8).
    for index, inside in enumerate([grid_at(1, 2, 14.9), grid_at(1, 10.5, 2), grid_at(1, -2, -2)]):
        [path] = write_labelmap_seg(make_segmentation(inside), paths, tmp_path / f"in{index}")
        assert dciodvfy_errors(path) == []
    # Entirely beyond the last column / the last row (the old check accepted the second).
    for outside in [grid_at(1, 2, 18.6), grid_at(1, 14.6, 2), grid_at(1, 2, -3.6)]:
        with pytest.raises(GeometryMismatchError, match="does not overlap"):
            write_labelmap_seg(make_segmentation(outside), paths, tmp_path / "out")


# --- character sets -----------------------------------------------------------------------------


@pytest.mark.parametrize("segment_name", ["Leber Größe 肝", "plain"])
def test_latin1_source_text_survives_either_character_set(tmp_path, segment_name):
    """A Latin-1 (ISO_IR 100) source: the SEG keeps it for ASCII names, else UTF-8; the patient name survives both."""
    paths = make_ct_series(tmp_path / "ct", patient_name="Müller^Jörg")
    geometry = geometry_from_source(read_source_series(paths))
    segmentation = make_segmentation(geometry, layers=[[1]])
    segmentation.layers[0].segments[0] = Segment(1, segment_name, description=f"{segment_name}!")
    [path] = write_labelmap_seg(segmentation, paths, tmp_path / "seg")
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert ds.SpecificCharacterSet == ("ISO_IR 192" if segment_name != "plain" else "ISO_IR 100")
    assert str(ds.PatientName) == "Müller^Jörg"
    assert ds.SegmentSequence[1].SegmentLabel == segment_name
    assert ds.SegmentSequence[1].SegmentDescription == f"{segment_name}!"
    assert dciodvfy_errors(path) == []


def test_source_without_character_set_stays_default(tmp_path):
    paths = make_ct_series(tmp_path / "ct")
    for path in paths:
        ds = pydicom.dcmread(path)
        del ds.SpecificCharacterSet
        ds.save_as(path)
    [path] = write_labelmap_seg(make_segmentation(geometry_from_source(read_source_series(paths))), paths,
                                tmp_path / "seg")
    assert "SpecificCharacterSet" not in pydicom.dcmread(path, stop_before_pixels=True)
    assert dciodvfy_errors(path) == []


# --- fast paths change nothing ------------------------------------------------------------------

#: Attributes that differ between any two exports (new UIDs, creation times).
_PER_EXPORT = {"SOPInstanceUID", "MediaStorageSOPInstanceUID", "ContentDate", "ContentTime", "SeriesDate",
               "SeriesTime", "InstanceCreationDate", "InstanceCreationTime", "PaletteColorLookupTableUID",
               "ContributionDateTime", "DimensionOrganizationUID"}


def _header_differences(a: Dataset, b: Dataset, where: str = "") -> list[str]:
    """Element-by-element differences (recursing into sequences), Pixel Data compared decoded."""
    found = []
    for tag in sorted(set(a.keys()) | set(b.keys())):
        keyword = pydicom.datadict.keyword_for_tag(tag) or str(tag)
        if keyword in _PER_EXPORT or keyword == "PixelData":
            continue
        if tag not in a or tag not in b:
            found.append(f"{where}{keyword} only in {'first' if tag in a else 'second'}")
        elif a[tag].VR == "SQ":
            items_a, items_b = a[tag].value, b[tag].value
            if len(items_a) != len(items_b):
                found.append(f"{where}{keyword}: {len(items_a)} vs {len(items_b)} items")
            for index, (item_a, item_b) in enumerate(zip(items_a, items_b)):
                found += _header_differences(item_a, item_b, f"{where}{keyword}[{index}].")
        elif a[tag].value != b[tag].value:
            found.append(f"{where}{keyword}: {a[tag].value!r} vs {b[tag].value!r}")
    return found


def _export_both_ways(segmentation, source, options, monkeypatch, placeholders=False):
    uid = generate_uid()
    options = ExportOptions(**{**options.__dict__, "series_instance_uid": uid})
    with monkeypatch.context() as patch:
        if placeholders:  # also for the few voxels of these series (and of the fast path's two-slice instance)
            patch.setattr(writer_module, "_PLACEHOLDERS_FROM_VOXELS", 0)
        fast = create_labelmap_datasets(segmentation, source, options)
    with monkeypatch.context() as patch:  # highdicom does it all: matches positions, checks every voxel value
        patch.setattr(writer_module, "source_order_of_grid", lambda geometry, source: None)
        patch.setattr(writer_module, "_MAX_PLACEHOLDERS", 0)
        plain = create_labelmap_datasets(segmentation, source, options)
    return fast, plain


@pytest.mark.parametrize("case", ["source grid", "reversed slices", "uint16 palette", "other grid", "multiframe"])
@pytest.mark.parametrize("syntax", [TransferSyntax.JPEG_LS, TransferSyntax.EXPLICIT])
@pytest.mark.parametrize("placeholders", [False, True], ids=["no-placeholders", "placeholders"])
def test_fast_paths_write_what_highdicom_alone_writes(tmp_path, small_series, data_dir, monkeypatch, case, syntax,
                                                      placeholders):
    """Source-grid positions, placeholder segment numbers: the same headers and frames as without them."""
    paths, geometry = small_series
    source, palette, layers = paths, case == "uint16 palette", [[2, 5, 9], [1, 3]]  # gaps: placeholders
    if case == "reversed slices":
        affine = geometry.affine.copy()
        affine[:3, 3] += (geometry.shape[0] - 1) * affine[:3, 0]
        affine[:3, 0] *= -1
        geometry = Geometry(geometry.shape, affine, geometry.frame_of_reference_uid)
    elif case == "uint16 palette":
        layers = [[3, 300, 1000]]
    elif case == "other grid":
        affine = geometry.affine.copy()
        affine[:3, 1:3] *= 0.5
        geometry = Geometry((3, 10, 14), affine, geometry.frame_of_reference_uid)
    elif case == "multiframe":
        source = data_dir / "dcmqi" / "24x38x3" / "multiframe" / "mf.dcm"
        geometry = geometry_from_source(read_source_series(source))
    segmentation = make_segmentation(geometry, layers=layers, empty=[9])
    if case in ("source grid", "reversed slices", "multiframe"):
        assert writer_module.source_order_of_grid(geometry, read_source_series(source)) is not None
    fast, plain = _export_both_ways(segmentation, source, ExportOptions(transfer_syntax=syntax, palette_color=palette),
                                    monkeypatch, placeholders)
    for a, b, layer in zip(fast, plain, segmentation.layers):
        assert _header_differences(a, b) == []
        assert [int(i.SegmentNumber) for i in a.SegmentSequence] == [0, *(s.label_value for s in layer.segments)]
        assert a.PixelData == b.PixelData  # same frames, same order, same codestreams
        a.save_as(tmp_path / "a.dcm", enforce_file_format=True)
        assert dciodvfy_errors(tmp_path / "a.dcm") == []
        assert_lossless(tmp_path / "a.dcm", layer, geometry)


def test_source_order_of_grid(small_series):
    paths, geometry = small_series
    source = read_source_series(paths)
    order = writer_module.source_order_of_grid
    assert order(geometry, source) == [0, 1, 2, 3, 4]
    affine = geometry.affine.copy()
    affine[:3, 3] += 4 * affine[:3, 0]
    affine[:3, 0] *= -1
    assert order(Geometry(geometry.shape, affine), source) == [4, 3, 2, 1, 0]
    shifted = geometry.affine.copy()
    shifted[:3, 3] += 0.5 * shifted[:3, 0]
    for other in [Geometry(geometry.shape, shifted), Geometry((4, 12, 16), geometry.affine),
                  Geometry((5, 12, 15), geometry.affine)]:
        assert order(other, source) is None


@contextlib.contextmanager
def counting_parts(size: int):
    """Shrink the counting parts (and the histogram image width) so small arrays span several parts and a tail."""
    from DICOMLabelmapSegLib import model

    saved = model._COUNTING_PART, model._HISTOGRAM_WIDTH
    model._COUNTING_PART, model._HISTOGRAM_WIDTH = size, max(1, size // 16)
    try:
        yield
    finally:
        model._COUNTING_PART, model._HISTOGRAM_WIDTH = saved


@settings(max_examples=150, deadline=None)
@given(data=st.data(), dtype=st.sampled_from([np.uint8, np.uint16]), part=st.sampled_from([8, 24, 64, 1024]),
       offset=st.integers(0, 7))
def test_present_labels_equal_unique_for_runs_noise_and_any_part_size(data, dtype, part, offset):
    """present_labels counts covering samples (64-bit words that differ from the one before) in parts on
    threads: the distinct values are np.unique's for runs of any length, noise, odd sizes and unaligned starts."""
    from DICOMLabelmapSegLib import model

    high = 255 if dtype == np.uint8 else 65535
    runs = data.draw(st.lists(st.tuples(st.integers(0, high), st.integers(1, 40)), min_size=0, max_size=40))
    values = np.repeat(np.asarray([v for v, _ in runs], dtype=dtype),
                       [n for _, n in runs]).astype(dtype) if runs else np.zeros(0, dtype)
    buffer = np.zeros(values.size + offset, dtype)
    buffer[offset:] = values
    values = buffer[offset:]  # starts at any element: the word view need not be aligned
    with counting_parts(part):
        assert np.array_equal(model.present_labels(values.reshape(1, 1, -1)), np.unique(values))
        assert np.array_equal(model.label_counts(values) > 0,
                              np.bincount(values, minlength=high + 1) > 0)
        assert set(np.unique(model.covering_sample(values)).tolist()) == set(values.tolist())


@settings(max_examples=150, deadline=None)
@given(data=st.data(), dtype=st.sampled_from([np.uint8, np.uint16]), columns=st.sampled_from([4, 8, 12, 16, 20, 32]),
       part=st.sampled_from([16, 64, 1024]))
def test_covering_sample_by_rows_keeps_every_value(data, dtype, columns, part):
    """Words equal to the word one row before are dropped too: rows repeated, shifted or changed in one
    voxel (a region's edge from row to row), rows of whole and partial words, parts cutting rows."""
    from DICOMLabelmapSegLib import model

    high = 255 if dtype == np.uint8 else 65535
    values_st = st.sampled_from([0, 1, 2, high]) | st.integers(0, high)
    pool = data.draw(st.lists(st.lists(values_st, min_size=columns, max_size=columns), min_size=1, max_size=4))
    picks = data.draw(st.lists(st.tuples(st.integers(0, len(pool) - 1), st.integers(0, columns - 1), values_st),
                               min_size=1, max_size=30))
    rows = []
    for index, at, value in picks:
        row = list(pool[index])
        if data.draw(st.booleans()):
            row[at] = value  # one voxel differs from the pooled row
        rows.append(row)
    labels = np.asarray(rows, dtype=dtype)
    flat = labels.reshape(-1)
    assert set(model.covering_sample(flat, columns).tolist()) == set(flat.tolist())
    with counting_parts(part):
        assert np.array_equal(model.present_labels(labels.reshape(1, len(rows), columns)), np.unique(flat))
        assert np.array_equal(model.label_counts(flat, columns) > 0, np.bincount(flat, minlength=high + 1) > 0)


def test_present_labels_matches_unique():
    """The writer's voxel check (model.present_labels: uint8 by histogram parts, uint16 chunked) against np.unique."""
    from DICOMLabelmapSegLib.model import present_labels

    rng = np.random.default_rng(0)
    for dtype in (np.uint8, np.uint16):
        for size in (1, 2, 3, 1001, (1 << 18) + 3, (1 << 20) + 1, (1 << 22) + 4097, 3 << 22):
            for high in (1, 5, 255):
                values = rng.integers(0, high + 1, size=size).astype(dtype)
                values[-1] = high  # the odd last voxel of a uint8 array is counted too
                assert np.array_equal(present_labels(values.reshape(1, 1, -1)), np.unique(values)), (dtype, size)
    strided = np.zeros((3, 4, 5), np.uint8)[:, ::2, :]
    strided[2, 1, 4] = 9
    assert present_labels(strided).tolist() == [0, 9]


def test_segments_of_one_algorithm_share_one_identification_and_encode_as_without(tmp_path):
    """The writer builds one Segmentation Algorithm Identification Sequence per algorithm of an instance
    (segment_description's shared dict); every item still encodes exactly as when each builds its own."""
    import dataclasses

    from DICOMLabelmapSegLib.dicom.segment import segment_description
    from DICOMLabelmapSegLib.enums import SegmentAlgorithmType
    from DICOMLabelmapSegLib.model import Code

    family = Code("113037", "DCM", "Artificial Intelligence")
    tool = dict(algorithm_type=SegmentAlgorithmType.AUTOMATIC, algorithm_family=family, algorithm_name="TotalSeg",
                algorithm_version="2.4")
    segments = [dataclasses.replace(make_segment(1), **tool), dataclasses.replace(make_segment(2), **tool),
                dataclasses.replace(make_segment(3), **{**tool, "algorithm_version": "2.5"}), make_segment(4)]
    shared: dict = {}
    together = [segment_description(s, True, shared) for s in segments]
    alone = [segment_description(s) for s in segments]
    assert len([value for value in shared.values() if value is not None]) == 2  # one per algorithm

    def encoded(item: Dataset) -> bytes:
        buffer = pydicom.filebase.DicomBytesIO()
        buffer.is_little_endian, buffer.is_implicit_VR = True, False
        pydicom.filewriter.write_dataset(buffer, item)
        return buffer.getvalue()

    assert [encoded(a) for a in together] == [encoded(b) for b in alone]
    first, second = (item.SegmentationAlgorithmIdentificationSequence for item in together[:2])
    assert first[0] is second[0]
