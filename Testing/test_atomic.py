"""The one "write these files or none" helper: temporary names, umask permissions, sets as a unit."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from DICOMLabelmapSegLib import atomic
from DICOMLabelmapSegLib.atomic import AtomicFiles, is_temporary_name, remove_stale_temporaries, write_atomically
from DICOMLabelmapSegLib.dicom.source import geometry_from_source, read_source_series
from DICOMLabelmapSegLib.dicom.writer import write_labelmap_seg
from DICOMLabelmapSegLib.formats.fileio import write_nifti, write_seg_nrrd
from DICOMLabelmapSegLib.formats.labeltable import write_label_table
from synthetic import make_ct_series, make_segmentation


@pytest.fixture
def umask():
    """Set the process umask for one test (restored afterwards)."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_temporary_names():
    name = atomic.temporary_name("1_1_1.2.3.dcm")
    assert name.startswith(".1_1_1.2.3.dcm.") and name.endswith(".partial")
    assert is_temporary_name(name) and is_temporary_name(Path("/some/folder") / name)
    assert atomic.temporary_name("x") != atomic.temporary_name("x")
    for ordinary in ("case.dcm", "case.partial", ".hidden", ".partial", "a.partial.dcm"):
        assert not is_temporary_name(ordinary), ordinary


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_files_get_the_umask_permissions(tmp_path, umask, mask):
    umask(mask)
    [path] = write_atomically({tmp_path / "a.bin": b"data"})
    assert path.read_bytes() == b"data"
    assert mode(path) == 0o666 & ~mask


def test_every_writer_gives_umask_permissions(tmp_path, umask):
    """Issue 13 item 15: mkstemp made every output 0600; now 0666 & ~umask as any other program's files."""
    umask(0o002)
    sources = make_ct_series(tmp_path / "ct", shape=(3, 8, 10))
    segmentation = make_segmentation(geometry_from_source(read_source_series(sources)), layers=[[1, 2]])
    written = write_labelmap_seg(segmentation, sources, tmp_path / "seg")
    written.append(write_seg_nrrd(segmentation, tmp_path / "x.seg.nrrd"))
    written += write_nifti(segmentation, tmp_path / "x.nii.gz")
    written.append(write_label_table([segmentation.layers[0].segments], tmp_path / "table.json"))
    assert len(written) == 5
    for path in written:
        assert mode(path) == 0o664, path.name
    assert not [p for p in tmp_path.rglob("*") if is_temporary_name(p.name)]


def test_a_set_is_renamed_only_after_every_file_is_written(tmp_path):
    files = AtomicFiles()
    files.write_bytes(tmp_path / "a.nii", b"image")
    files.write_bytes(tmp_path / "a.json", b"table")
    assert sorted(p.name for p in tmp_path.iterdir() if not is_temporary_name(p.name)) == []
    assert files.commit() == [tmp_path / "a.nii", tmp_path / "a.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.nii"]


def test_failure_while_writing_leaves_nothing_new(tmp_path):
    (tmp_path / "a.json").write_bytes(b"old table")
    with pytest.raises(OSError, match="disk full"), AtomicFiles() as files:
        files.write_bytes(tmp_path / "a.json", b"new table")
        files.write_bytes(tmp_path / "deeper" / "folder" / "a.nii", b"image")
        raise OSError("disk full")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]  # created folders removed too
    assert (tmp_path / "a.json").read_bytes() == b"old table"


def test_interrupt_leaves_nothing_new(tmp_path):
    with pytest.raises(KeyboardInterrupt), AtomicFiles() as files:
        files.write_bytes(tmp_path / "a.nii", b"image")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_failed_rename_restores_replaced_files(tmp_path, monkeypatch):
    (tmp_path / "a.nii").write_bytes(b"old image")
    (tmp_path / "a.json").write_bytes(b"old table")
    real_replace = os.replace
    calls = []

    def replace(source, destination):
        calls.append(destination)
        if len(calls) == 2:
            raise OSError("rename failed")
        real_replace(source, destination)

    monkeypatch.setattr(atomic.os, "replace", replace)
    files = AtomicFiles()
    files.write_bytes(tmp_path / "a.nii", b"new image")
    files.write_bytes(tmp_path / "b.nii", b"new file")
    files.write_bytes(tmp_path / "a.json", b"new table")
    with pytest.raises(OSError, match="rename failed"):
        files.commit()
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.nii"]
    assert (tmp_path / "a.nii").read_bytes() == b"old image"
    assert (tmp_path / "a.json").read_bytes() == b"old table"


def test_committed_files_are_flushed_before_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b)))
    write_atomically({tmp_path / "a": b"1", tmp_path / "b": b"2"})
    assert events[:4] == ["fsync", "fsync", "replace", "replace"]


def test_the_same_final_path_twice_is_refused(tmp_path):
    with pytest.raises(ValueError, match="already part"), AtomicFiles() as files:
        files.temporary(tmp_path / "a")
        files.temporary(tmp_path / "a")
    assert list(tmp_path.iterdir()) == []


def test_remove_stale_temporaries(tmp_path):
    stale = tmp_path / atomic.temporary_name("1_1_1.2.3.dcm")
    stale.write_bytes(b"half a file")
    (tmp_path / "keep.dcm").write_bytes(b"x")
    (tmp_path / ".hidden").write_bytes(b"x")
    (tmp_path / atomic.temporary_name("folder")).mkdir()
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.is_dir()) == [".hidden", "keep.dcm"]
