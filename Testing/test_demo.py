"""`make demo` end to end: the real TotalSegmentator case in every transfer syntax.

Runs demo/run_demo.py once (one timing repeat) and checks its verdicts, then has the
independent validators look at the LABELMAP files it wrote.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import validators
from DICOMLabelmapSegLib.dicom.syntax import TransferSyntax
from spatial import assert_same_labels_in_space

REPO = Path(__file__).resolve().parent.parent
#: The demo exports every row of the codec registry, in its order.
SYNTAX_NAMES = tuple(syntax.value for syntax in TransferSyntax)
#: What Debian's DCMTK 3.6.7 decodes.
DCMTK_DECODES = {"jpeg-ls", "rle", "jpeg2000", "deflated", "explicit"}


def _load_demo():  # noqa: ANN202 - returns the demo module
    spec = importlib.util.spec_from_file_location("run_demo", REPO / "demo" / "run_demo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_demo"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def demo_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, Path]:
    """(exit code, printed output, output folder) of one demo run."""
    if not (data_dir / "totalsegmentator" / "example_ct_dicom").is_dir():
        pytest.skip("TotalSegmentator example not in the data folder")
    demo = _load_demo()
    out = tmp_path_factory.mktemp("demo") / "out"
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = demo.main(["--data", str(data_dir), "--out", str(out), "--repeats", "1"])
    return code, buffer.getvalue(), out


def test_demo_round_trips_every_syntax_losslessly(demo_run: tuple[int, str, Path]) -> None:
    code, output, _ = demo_run
    rows = [line.split() for line in output.splitlines() if line.startswith("LABELMAP ")]
    assert [row[1] for row in rows] == list(SYNTAX_NAMES), output
    assert all(row[-1] == "yes" for row in rows), f"not lossless:\n{output}"
    assert code == 0, output


def test_demo_explains_the_uid_repair(demo_run: tuple[int, str, Path]) -> None:
    _, output, out = demo_run
    assert "blank" in output and f"repaired it in a copy, {out / 'ct'}" in output, output
    from DICOMLabelmapSegLib.dicom.source import read_source_series

    assert len(read_source_series(out / "ct")) == 20  # the README's commands use this copy


def test_demo_labelmap_is_smaller_than_binary(demo_run: tuple[int, str, Path]) -> None:
    _, _, out = demo_run
    labelmap = (out / "jpeg-ls").glob("*.dcm")
    binary = (out / "binary").glob("*.dcm")
    assert sum(p.stat().st_size for p in labelmap) * 10 < sum(p.stat().st_size for p in binary)


@pytest.mark.parametrize("syntax", SYNTAX_NAMES)
def test_demo_files_pass_independent_validators(demo_run: tuple[int, str, Path], syntax: str) -> None:
    _, _, out = demo_run
    files = sorted((out / syntax).glob("*.dcm"))
    assert files, f"no files written for {syntax}"
    for path in files:
        assert validators.dciodvfy_errors(path) == []
        ds = pydicom.dcmread(path)
        frames = validators.independent_frames(ds)  # pydicom's plugins, zlib, or pillow-jxl-plugin
        if syntax in DCMTK_DECODES:
            np.testing.assert_array_equal(validators.dcmtk_decode(path).reshape(frames.shape), frames)
        else:  # DCMTK 3.6.7 decodes neither HTJ2K, JPEG XL nor Sup 244: our reader against the independent one
            from DICOMLabelmapSegLib.dicom.reader import read_segmentation

            np.testing.assert_array_equal(read_segmentation(path).layers[0].labels, frames)
        summary = validators.dcmjs_parse(path)
        assert summary["sopClassUID"] == "1.2.840.10008.5.1.4.1.1.66.7"
        assert summary["numberOfFrames"] == int(ds.NumberOfFrames)


def test_dcmqi_reads_the_demo_labelmap_like_our_reader(demo_run: tuple[int, str, Path], tmp_path: Path) -> None:
    from DICOMLabelmapSegLib.dicom.reader import read_segmentation

    _, _, out = demo_run
    path = sorted((out / "rle").glob("*.dcm"))[0]
    images, meta = validators.dcmqi_read(path, tmp_path)
    ours = read_segmentation(path)
    assert len(images) == 1
    labels, affine = validators.read_nrrd_kji(images[0])
    # dcmqi orders slices along the frame normal; we keep the exported grid's slice order.
    assert_same_labels_in_space(ours.layers[0].labels, ours.geometry.affine, labels, affine, "dcmqi vs ours")
    assert sorted(labels.shape) == sorted(ours.layers[0].labels.shape)
    names = {item["labelID"]: item["SegmentLabel"] for item in meta["segmentAttributes"][0]}
    assert names == {segment.label_value: segment.name for segment in ours.segments}
