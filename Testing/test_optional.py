"""Optional dependencies: a missing extra is one clear error naming the feature and the pip extra;
reading SEG files does not import highdicom."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from DICOMLabelmapSegLib.dicom.source import geometry_from_source, read_source_series
from DICOMLabelmapSegLib.dicom.writer import write_labelmap_seg
from DICOMLabelmapSegLib.errors import LabelmapSegError, MissingDependencyError
from DICOMLabelmapSegLib.formats import fileio
from DICOMLabelmapSegLib.optional import import_optional
from synthetic import make_ct_series, make_segmentation

LIBRARY_DIR = Path(__file__).resolve().parents[1] / "DICOMLabelmapSeg"


def test_import_optional_returns_the_module():
    assert import_optional("json", "Anything", "files").dumps([1]) == "[1]"


def test_missing_module_names_feature_package_and_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "nrrd", None)  # as if not installed
    with pytest.raises(MissingDependencyError) as caught:
        import_optional("nrrd", "Reading NRRD with pynrrd", "files", package="pynrrd")
    error = caught.value
    assert isinstance(error, ImportError) and isinstance(error, LabelmapSegError)
    assert str(error) == (
        "Reading NRRD with pynrrd needs the Python package 'pynrrd', which is not installed: "
        'pip install "dicom-labelmap-seg[files]"'
    )
    assert error.name == "nrrd" and error.extra == "files"


def test_nifti_without_nibabel_says_which_extra(tmp_path, monkeypatch):
    """Issue 9: a missing nibabel ended in 'internal error' (exit 3); now it names the extra."""
    segmentation = make_segmentation(layers=[[1]])
    monkeypatch.setitem(sys.modules, "nibabel", None)
    with pytest.raises(MissingDependencyError, match=r"Writing NIfTI files needs .*'nibabel'.*\[files\]"):
        fileio.write_segmentation_file(segmentation, tmp_path / "x.nii.gz")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "y.nii.gz").write_bytes(b"not read")
    with pytest.raises(MissingDependencyError, match=r"Reading NIfTI files needs .*\[files\]"):
        fileio.read_segmentation_file(tmp_path / "y.nii.gz")


def test_reading_seg_files_does_not_import_highdicom(tmp_path):
    sources = make_ct_series(tmp_path / "ct", shape=(2, 6, 6))
    segmentation = make_segmentation(geometry_from_source(read_source_series(sources)), layers=[[1, 2]])
    [path] = write_labelmap_seg(segmentation, sources, tmp_path / "seg")
    script = (
        "import sys\n"
        f"sys.path.insert(0, {str(LIBRARY_DIR)!r})\n"
        "sys.modules['highdicom'] = None  # importing it now fails\n"
        "from DICOMLabelmapSegLib.dicom.reader import describe, read_segmentation\n"
        f"seg = read_segmentation({str(path)!r})\n"
        f"[d] = describe({str(path)!r})\n"
        "print(sorted(s.label_value for s in seg.segments), d.problem)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[1, 2] None"
