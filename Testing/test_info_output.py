"""What the command line prints from untrusted files (issue 13 item 17) and compatibility warnings at export (issue 14).

* ``info``: control characters in header strings (ANSI/OSC escapes, newlines that would forge table rows)
  are shown escaped; library warnings (pydicom's, ours) arrive as one ``dicom-labelmap-seg: warning:`` line,
  never as ``file.py:123: UserWarning``.
* ``export --palette`` of labels above 255: one line per misreading consumer, naming it and the alternative.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from DICOMLabelmapSegLib.cli.main import main
from DICOMLabelmapSegLib.dicom.source import geometry_from_source, read_source_series
from DICOMLabelmapSegLib.dicom.writer import write_labelmap_seg
from DICOMLabelmapSegLib.formats.fileio import write_seg_nrrd
from synthetic import make_ct_series, make_segmentation


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    root = tmp_path_factory.mktemp("case")
    paths = make_ct_series(root / "ct", shape=(3, 12, 10))
    source = read_source_series(paths)
    return root, source, geometry_from_source(source)


def test_info_escapes_control_characters_and_routes_warnings(case, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    root, source, geometry = case
    path = write_labelmap_seg(make_segmentation(geometry, layers=[[1, 2]]), source, tmp_path / "seg")[0]
    ds = pydicom.dcmread(path)
    item = next(item for item in ds.SegmentSequence if int(item.SegmentNumber) == 1)
    item.SegmentLabel = "liver\x1b[2J\x1b]0;pwned\x07\n    0      9      forged"
    item.SegmentedPropertyCategoryCodeSequence[0].CodingSchemeDesignator = "S" * 40  # pydicom warns on access
    ds.SeriesDescription = "CT\x1b[31m red"
    ds.save_as(path)
    capsys.readouterr()
    assert main(["info", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "\x1b" not in out and "\x07" not in out
    assert "liver\\x1b[2J\\x1b]0;pwned\\x07\\x0a" in out
    assert not any(line.lstrip().startswith("0      9") for line in out.splitlines())
    assert "CT\\x1b[31m red" in out
    assert "exceeds the maximum length" in err  # pydicom's warning, routed
    assert "Warning:" not in err and ".py:" not in err, err
    assert all(line.startswith("dicom-labelmap-seg: ") for line in err.splitlines()), err


def test_export_warns_about_misreading_consumers_in_one_line_each(case, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    root, source, geometry = case
    nrrd = write_seg_nrrd(make_segmentation(geometry, layers=[[1, 300]]), tmp_path / "wide.seg.nrrd")
    capsys.readouterr()
    code = main(["export", str(nrrd), "-r", str(root / "ct"), "-o", str(tmp_path / "out"), "--palette", "-j", "1",
                 "--syntax", "rle"])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = [line for line in err.splitlines() if "misreads this file" in line]
    assert len(lines) == 3, err
    assert all(line.startswith("dicom-labelmap-seg: warning: ") for line in lines)
    assert sum("cornerstone3D" in line for line in lines) == 2 and sum("highdicom" in line for line in lines) == 1
    assert ".py:" not in err
