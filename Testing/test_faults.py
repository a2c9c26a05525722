"""Real signals sent to a running export and import (the command line in a subprocess).

At several points (while the interpreter starts, when the first temporary appears, when the
second layer's temporary appears) SIGTERM, SIGINT or SIGHUP must leave the output folder as it
was (an earlier export in it intact, no temporaries, exit 128 + N, one line) or, if the process
won the race, complete; SIGKILL may leave temporaries, but the folder still imports and the
next export removes them. A NIfTI + JSON pair is replaced as a pair, and a JSON left beside
another NIfTI is refused.
"""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest
from faults import listing, signal_when, temporaries
from hostile import run_cli

SHAPE = (40, 128, 128)


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CT series and a three-layer .seg.nrrd on its grid (three SEG instances when exported)."""
    from DICOMLabelmapSegLib.dicom.source import geometry_from_source, read_source_series
    from DICOMLabelmapSegLib.formats.fileio import write_seg_nrrd
    from synthetic import make_ct_series, make_segmentation

    folder = tmp_path_factory.mktemp("faults")
    make_ct_series(folder / "ct", shape=SHAPE)
    source = read_source_series(folder / "ct")
    segmentation = make_segmentation(geometry_from_source(source), layers=[[1, 2], [3], [4, 300]])
    write_seg_nrrd(segmentation, folder / "case.seg.nrrd")
    return folder


def _export_args(case: Path, out: Path, *more: str) -> list[str]:
    return ["export", str(case / "case.seg.nrrd"), "-r", str(case / "ct"), "-o", str(out), "-j", "1", "-q",
            "--syntax", "jpeg-ls", *more]  # fmt: skip


def _earlier_export(case: Path, out: Path) -> dict[str, bytes]:
    result = run_cli(_export_args(case, out))
    assert result.code == 0, result.stderr
    return listing(out)


def _has_temporaries(folder: Path, count: int = 1):  # noqa: ANN202
    return lambda: len(temporaries(folder)) >= count


def _exit_code(signal_number: int) -> int:
    return 130 if signal_number == signal.SIGINT else 128 + signal_number


def _assert_one_line(stderr: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr


def _imports(folder: Path) -> None:
    result = run_cli(["import", str(folder), "-o", str(folder.parent / "check" / "x.nii.gz"), "-q"])
    assert result.code == 0, result.stderr


POINTS = {"first temporary": 1, "second layer": 2}


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
@pytest.mark.parametrize("point", list(POINTS))
def test_signal_during_export_leaves_the_folder_as_it_was(
    case: Path, tmp_path: Path, signal_number: int, point: str
) -> None:
    out = tmp_path / "out"
    before = _earlier_export(case, out)
    run = signal_when(_export_args(case, out, "--overwrite"), signal_number, _has_temporaries(out, POINTS[point]))
    after = listing(out)
    assert not temporaries(out), f"left behind: {temporaries(out)}"
    if run.code == 0:  # the export finished before the signal was handled: the new series replaced the old
        assert len(after) == 3 and not set(before) & set(after)
    else:
        assert run.sent
        assert run.code == _exit_code(signal_number), run.stderr
        _assert_one_line(run.stderr)
        assert after == before, "the interrupted export left files or changed the earlier export"
    _imports(out)


def test_sigterm_while_starting_writes_nothing(case: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = signal_when(_export_args(case, out), signal.SIGTERM, 0.05)
    assert run.sent and run.code != 0
    assert not listing(out) and not temporaries(out)


def test_sigkill_during_export_leaves_only_temporaries_that_are_skipped_and_removed(case: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    before = _earlier_export(case, out)
    run = signal_when(_export_args(case, out, "--overwrite"), signal.SIGKILL, _has_temporaries(out, 2))
    if run.code == 0:
        pytest.skip("the export finished before SIGKILL")
    assert run.code == -signal.SIGKILL
    left = temporaries(out)
    assert left, "SIGKILL cannot be cleaned up after: temporaries were expected"
    assert listing(out) == before
    _imports(out)  # the reader skips the temporaries: the earlier export still imports
    again = run_cli(_export_args(case, out, "--overwrite"))
    assert again.code == 0, again.stderr
    assert not temporaries(out), "the next export did not remove the stale temporaries"
    assert len(listing(out)) == 3 and not set(before) & set(listing(out))


def _import_args(case: Path, out: Path) -> list[str]:
    return ["import", str(case / "seg"), "-o", str(out / "x.nii.gz"), "-j", "1", "-q"]


@pytest.fixture(scope="module")
def exported(case: Path) -> Path:
    result = run_cli(_export_args(case, case / "seg"))
    assert result.code == 0, result.stderr
    return case / "seg"


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_signal_during_import_keeps_the_earlier_pair(
    case: Path, exported: Path, tmp_path: Path, signal_number: int
) -> None:
    out = tmp_path / "out"
    first = run_cli(_import_args(case, out))
    assert first.code == 0, first.stderr
    before = listing(out)
    assert set(before) == {"x.nii.gz", "x.json"}
    run = signal_when(_import_args(case, out), signal_number, _has_temporaries(out))
    assert not temporaries(out), f"left behind: {temporaries(out)}"
    if run.code != 0:
        assert run.sent and run.code == _exit_code(signal_number), run.stderr
        _assert_one_line(run.stderr)
    assert set(listing(out)) == {"x.nii.gz", "x.json"}
    _reads_as_pair(out / "x.nii.gz")


def test_sigkill_during_import_leaves_a_readable_pair(case: Path, exported: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_cli(_import_args(case, out)).code == 0
    run = signal_when(_import_args(case, out), signal.SIGKILL, _has_temporaries(out))
    if run.code == 0:
        pytest.skip("the import finished before SIGKILL")
    assert set(listing(out)) == {"x.nii.gz", "x.json"}
    _reads_as_pair(out / "x.nii.gz")
    assert run_cli(_import_args(case, out)).code == 0
    assert not temporaries(out), "the next import did not remove the stale temporaries"


def _reads_as_pair(path: Path) -> None:
    from DICOMLabelmapSegLib.formats.fileio import read_labelmap

    segmentation = read_labelmap(path)
    assert {s.label_value for layer in segmentation.layers for s in layer.segments} == {1, 2, 3, 4, 300}
    assert any(s.name == "segment 300" for layer in segmentation.layers for s in layer.segments)


def test_label_table_left_beside_another_nifti_is_refused(tmp_path: Path) -> None:
    """The second rename of a pair failed (or a user copied one file): the JSON belongs to another image."""
    from DICOMLabelmapSegLib.formats.fileio import read_labelmap, write_nifti
    from DICOMLabelmapSegLib.formats.labeltable import LabelFileError
    from synthetic import make_segmentation

    first = make_segmentation(layers=[[1, 2]], seed=1)
    second = make_segmentation(layers=[[1, 2]], seed=2)
    write_nifti(first, tmp_path / "a" / "x.nii.gz")
    write_nifti(second, tmp_path / "b" / "x.nii.gz")
    (tmp_path / "a" / "x.json").write_bytes((tmp_path / "b" / "x.json").read_bytes())  # a stale sidecar
    with pytest.raises(LabelFileError, match="another version"):
        read_labelmap(tmp_path / "a" / "x.nii.gz")
    labels = read_labelmap(tmp_path / "b" / "x.nii.gz").layers[0].labels
    assert np.array_equal(labels, second.layers[0].labels)
