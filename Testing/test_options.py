"""ExportOptions: the one set of export defaults and the validation every shell goes through."""

from __future__ import annotations

import dataclasses
import pickle

import pydicom
import pytest
from DICOMLabelmapSegLib.dicom import options as options_module
from DICOMLabelmapSegLib.dicom.options import DEFAULT_SERIES_NUMBER, MAX_SERIES_NUMBER, ExportOptions
from DICOMLabelmapSegLib.dicom.source import geometry_from_source, read_source_series
from DICOMLabelmapSegLib.dicom.syntax import TransferSyntax
from DICOMLabelmapSegLib.dicom.writer import write_labelmap_seg
from synthetic import make_ct_series, make_segmentation


def test_defaults():
    options = ExportOptions()
    assert options.transfer_syntax is TransferSyntax.JPEG_LS
    assert options.series_number == DEFAULT_SERIES_NUMBER == 300
    assert options.series_description == options_module.DEFAULT_SERIES_DESCRIPTION == "Segmentation"
    assert options.content_label == options_module.DEFAULT_CONTENT_LABEL == "SEGMENTATION"
    assert options.palette_color is False and options.series_instance_uid is None


@pytest.mark.parametrize("given", ["rle", TransferSyntax.RLE.uid, TransferSyntax.RLE])
def test_transfer_syntax_by_name_uid_or_member_is_stored_as_the_member(given):
    options = ExportOptions(transfer_syntax=given)
    assert options.transfer_syntax is TransferSyntax.RLE
    assert options == ExportOptions(transfer_syntax=TransferSyntax.RLE)
    assert hash(options) == hash(ExportOptions(transfer_syntax=TransferSyntax.RLE))


def test_unknown_transfer_syntax_is_refused():
    with pytest.raises(ValueError, match="Unknown transfer syntax"):
        ExportOptions(transfer_syntax="jpeg-2001")


@pytest.mark.parametrize("number", [1, 300, MAX_SERIES_NUMBER])
def test_series_numbers_in_range(number):
    assert ExportOptions(series_number=number).series_number == number


@pytest.mark.parametrize("number", [0, -5, MAX_SERIES_NUMBER + 1])
def test_series_number_outside_1_to_2_31_is_refused_clearly(number):
    """Issue 9: 0 was accepted and failed later ("Layer 1 could not be encoded"); -5 was an internal error."""
    with pytest.raises(ValueError, match=rf"Series number {number} is out of range; use 1 to {MAX_SERIES_NUMBER}"):
        ExportOptions(series_number=number)


@pytest.mark.parametrize("number", ["300", 3.0, True, None])
def test_series_number_must_be_a_whole_number(number):
    with pytest.raises(ValueError, match="is not a whole number"):
        ExportOptions(series_number=number)  # type: ignore[arg-type]


def test_invalid_series_instance_uid():
    with pytest.raises(ValueError, match="not a valid UID"):
        ExportOptions(series_instance_uid="1.2.03.abc")


def test_options_are_frozen_and_copy_like_a_dataclass():
    options = ExportOptions(transfer_syntax="deflated", series_number=7)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.series_number = 8  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.transfer_syntax = "rle"  # type: ignore[misc]
    assert [f.name for f in dataclasses.fields(ExportOptions)][0] == "transfer_syntax"
    assert ExportOptions(**options.__dict__) == options
    assert dataclasses.replace(options, transfer_syntax="rle").transfer_syntax is TransferSyntax.RLE
    with pytest.raises(ValueError, match="out of range"):
        dataclasses.replace(options, series_number=0)
    assert pickle.loads(pickle.dumps(options)) == options
    assert "TransferSyntax.DEFLATED" in repr(options)


def test_writer_uses_series_number_1(tmp_path):
    sources = make_ct_series(tmp_path / "ct", shape=(2, 6, 6))
    segmentation = make_segmentation(geometry_from_source(read_source_series(sources)), layers=[[1]])
    [path] = write_labelmap_seg(segmentation, sources, tmp_path / "seg", ExportOptions(series_number=1))
    assert pydicom.dcmread(path, stop_before_pixels=True).SeriesNumber == 1
    assert path.name.startswith("1_1_")


def test_options_module_is_light_for_slicer_start_up():
    """The shell reads the defaults when Slicer starts: no pydicom/highdicom at import time."""
    import subprocess
    import sys
    from pathlib import Path

    library = Path(__file__).resolve().parents[1] / "DICOMLabelmapSeg"
    script = (
        f"import sys; sys.path.insert(0, {str(library)!r})\n"
        "sys.modules['pydicom'] = sys.modules['highdicom'] = None\n"
        "from DICOMLabelmapSegLib.dicom.options import DEFAULT_SERIES_NUMBER, ExportOptions\n"
        "print(DEFAULT_SERIES_NUMBER)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "300", done.stderr[-2000:]
