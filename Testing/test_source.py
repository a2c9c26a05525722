"""Reading and checking source image series: real data and synthetic series."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
from DICOMLabelmapSegLib.dicom.source import geometry_from_source, read_source_series
from DICOMLabelmapSegLib.errors import SourceImageError
from synthetic import make_affine, make_ct_series


def test_dcmqi_ct_3slice(data_dir):
    series = read_source_series(data_dir / "dcmqi" / "ct-3slice")
    assert len(series) == 3
    assert all("PixelData" not in ds for ds in series)  # headers only
    z = [float(ds.ImagePositionPatient[2]) for ds in series]
    assert z == sorted(z)  # sorted along the normal (+z for axial)
    geometry = geometry_from_source(series)
    assert geometry.shape == (3, 512, 512)
    assert np.allclose(geometry.spacing, [1.0, 0.810547, 0.810547])
    assert np.allclose(geometry.origin, [-235.199997, -226.800003, -128.690002])
    assert geometry.frame_of_reference_uid == series[0].FrameOfReferenceUID


def test_dcmqi_24x38x3_files_and_multiframe_agree(data_dir):
    files = sorted((data_dir / "dcmqi" / "24x38x3" / "image").glob("*.dcm"), reverse=True)
    series = read_source_series(files)
    single = geometry_from_source(series)
    assert single.shape == (3, 38, 24)
    assert np.allclose(single.spacing, [2.5, 0.7, 0.7])
    multiframe = geometry_from_source(read_source_series(data_dir / "dcmqi" / "24x38x3" / "multiframe" / "mf.dcm"))
    assert multiframe.same_as(single)


def test_single_file(data_dir):
    series = read_source_series(data_dir / "highdicom" / "ct_image.dcm")
    geometry = geometry_from_source(series)
    assert geometry.shape == (1, 128, 128)
    assert np.isclose(geometry.spacing[0], float(series[0].SliceThickness))


def test_blank_uids_are_refused_with_advice(data_dir):
    with pytest.raises(SourceImageError) as raised:
        read_source_series(data_dir / "totalsegmentator" / "example_ct_dicom")
    message = str(raised.value)
    assert "blank" in message and "SOP Instance UID" in message and "Series Instance UID" in message
    assert "Re-export" in message or "repair" in message


def test_blank_uid_series_geometry_still_readable(data_dir):
    series = read_source_series(data_dir / "totalsegmentator" / "example_ct_dicom", require_uids=False)
    geometry = geometry_from_source(series)
    assert geometry.shape == (20, 512, 512)
    assert np.allclose(geometry.spacing, [2.0, 0.9765625, 0.9765625])


def test_several_series_named_in_error(tmp_path):
    make_ct_series(tmp_path / "a", series_number=3, series_description="Arterial")
    make_ct_series(tmp_path / "b", series_number=4, series_description="Venous")
    with pytest.raises(SourceImageError) as raised:
        read_source_series(tmp_path)
    message = str(raised.value)
    assert "2 image series" in message and "Arterial" in message and "Venous" in message
    assert "exactly one series" in message


def test_no_dicom(tmp_path):
    (tmp_path / "notes.txt").write_text("not DICOM")
    with pytest.raises(SourceImageError, match="No DICOM image"):
        read_source_series(tmp_path)
    with pytest.raises(SourceImageError, match="does not exist"):
        read_source_series(tmp_path / "missing")


def test_non_images_and_junk_are_skipped(tmp_path, data_dir):
    paths = make_ct_series(tmp_path)
    shutil.copy(data_dir / "dcmqi" / "liver.dcm", tmp_path / "seg.dcm")  # a SEG of another series
    (tmp_path / "readme.txt").write_text("hello")
    assert len(read_source_series(tmp_path)) == len(paths)


@pytest.mark.parametrize("oblique", [False, True])
@pytest.mark.parametrize("flip", [False, True])
def test_synthetic_geometry_is_recovered(tmp_path, oblique, flip):
    affine = make_affine(oblique=oblique, flip_slices=flip)
    paths = make_ct_series(tmp_path, shape=(5, 12, 16), affine=affine)
    series = read_source_series(list(reversed(paths)))
    # Sorted along the slice normal: a slice step against the normal comes back reversed.
    expected_order = paths[::-1] if flip else paths
    assert [str(ds.filename) for ds in series] == [str(p) for p in expected_order]
    geometry = geometry_from_source(series)
    assert geometry.shape == (5, 12, 16)
    expected = affine.copy()
    if flip:
        expected[:3, 3] = affine[:3, 3] + 4 * affine[:3, 0]
        expected[:3, 0] *= -1
    assert np.allclose(geometry.affine, expected, atol=1e-6)


@pytest.mark.parametrize("keyword", ["SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID"])
def test_each_blank_uid_is_named(tmp_path, keyword):
    make_ct_series(tmp_path, blank=[keyword])
    with pytest.raises(SourceImageError) as raised:
        read_source_series(tmp_path)
    spaced = {"SOPInstanceUID": "SOP Instance UID", "StudyInstanceUID": "Study Instance UID",
              "SeriesInstanceUID": "Series Instance UID", "SOPClassUID": "SOP Class UID"}[keyword]
    assert spaced in str(raised.value)


def test_missing_frame_of_reference(tmp_path):
    make_ct_series(tmp_path, blank=["FrameOfReferenceUID"])
    with pytest.raises(SourceImageError, match="Frame of Reference"):
        read_source_series(tmp_path)


def _rewrite(path, **changes):
    ds = pydicom.dcmread(path)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    ds.save_as(path)


def test_inconsistent_orientation(tmp_path):
    paths = make_ct_series(tmp_path)
    _rewrite(paths[2], ImageOrientationPatient=[1, 0, 0, 0, 0.8, 0.6])
    with pytest.raises(SourceImageError, match="different orientations"):
        read_source_series(tmp_path)


def test_inconsistent_pixel_spacing(tmp_path):
    paths = make_ct_series(tmp_path)
    _rewrite(paths[1], PixelSpacing=[0.5, 0.5])
    with pytest.raises(SourceImageError, match="pixel spacing"):
        read_source_series(tmp_path)


def test_inconsistent_size(tmp_path):
    paths = make_ct_series(tmp_path)
    _rewrite(paths[1], Rows=10, PixelData=b"\0" * (10 * 16 * 2))
    with pytest.raises(SourceImageError, match="differ in size"):
        read_source_series(tmp_path)


def test_duplicate_positions(tmp_path):
    paths = make_ct_series(tmp_path)
    first = pydicom.dcmread(paths[0])
    _rewrite(paths[1], ImagePositionPatient=first.ImagePositionPatient)
    with pytest.raises(SourceImageError, match="same position"):
        read_source_series(tmp_path)


def test_irregular_spacing(tmp_path):
    paths = make_ct_series(tmp_path, shape=(5, 12, 16))
    paths[2].unlink()  # a missing slice
    series = read_source_series(tmp_path)
    with pytest.raises(SourceImageError, match="not equally spaced"):
        geometry_from_source(series)


def test_missing_plane_attributes(tmp_path):
    paths = make_ct_series(tmp_path)
    for path in paths:
        ds = pydicom.dcmread(path)
        del ds.ImageOrientationPatient
        ds.save_as(path)
    with pytest.raises(SourceImageError, match="Image Orientation"):
        read_source_series(tmp_path)


def test_duplicate_copies_are_ignored(tmp_path):
    paths = make_ct_series(tmp_path / "a")
    shutil.copy(paths[0], tmp_path / "a" / "copy.dcm")
    assert len(read_source_series(tmp_path / "a")) == len(paths)


def test_accepts_datasets(tmp_path):
    paths = make_ct_series(tmp_path)
    datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    assert len(read_source_series(datasets[::-1])) == len(paths)


def _with_undefined_length_sequence(ds: pydicom.Dataset) -> None:
    """Add a nested sequence written with undefined lengths (as many scanners write them) before the geometry."""
    inner = pydicom.Dataset()
    inner.CodeValue, inner.CodingSchemeDesignator, inner.CodeMeaning = "T-D0050", "SRT", "Tissue"
    item = pydicom.Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = "1.2.3", "1.2.3.4"
    item.PurposeOfReferenceCodeSequence = [inner]
    ds.ReferencedImageSequence = [item]
    for element in (ds["ReferencedImageSequence"], item["PurposeOfReferenceCodeSequence"]):
        element.is_undefined_length = True
        for nested in element.value:
            nested.is_undefined_length_sequence_item = True


@pytest.mark.parametrize("implicit", [False, True])
def test_slice_reader_reads_what_pydicom_reads(tmp_path, implicit):
    """The fast slice header reader (middle slices) gives the same values as pydicom; the ends are read in full."""
    from DICOMLabelmapSegLib.dicom import source as source_module

    paths = make_ct_series(tmp_path / "ct", (5, 8, 9), make_affine(oblique=True))
    for path in paths:
        ds = pydicom.dcmread(path)
        _with_undefined_length_sequence(ds)
        ds.PatientName = "Müller^Jörg"
        ds.SpecificCharacterSet = "ISO_IR 100"
        if implicit:
            ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
        ds.save_as(path, implicit_vr=implicit, little_endian=True, enforce_file_format=True)
    series = read_source_series(tmp_path / "ct")
    assert [getattr(ds, "_slice_tags_only", False) for ds in series] == [False, True, True, True, False]
    for ds in series:
        full = pydicom.dcmread(ds.filename, stop_before_pixels=True)
        for tag in source_module._SLICE_TAGS:
            if tag in full:
                assert ds[tag].value == full[tag].value, (ds.filename, ds[tag], full[tag])
                assert ds[tag].VR == full[tag].VR
        if getattr(ds, "_slice_tags_only", False):
            assert "ReferencedImageSequence" not in ds and "StudyDescription" not in ds
        else:
            assert set(full.keys()) == set(ds.keys())
    assert str(series[2].PatientName) == "Müller^Jörg"


def test_slice_reader_leaves_other_files_to_pydicom(data_dir):
    """A multi-frame image is read by pydicom (its functional groups are needed)."""
    multiframe = read_source_series(data_dir / "dcmqi" / "24x38x3" / "multiframe" / "mf.dcm")
    assert "PerFrameFunctionalGroupsSequence" in multiframe[0]
    assert not getattr(multiframe[0], "_slice_tags_only", False)
