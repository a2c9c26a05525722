"""``convert``: foreign SEGs (dcmqi, highdicom) -> LABELMAP, compared segment mask by segment mask;
deterministic, resumable, refusing folders that hold other series; CLI exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import validators
from DICOMLabelmapSegLib.app.convert import ConvertSettings, convert_series
from DICOMLabelmapSegLib.cli import main as cli
from DICOMLabelmapSegLib.dicom.reader import read_segmentation
from DICOMLabelmapSegLib.dicom.syntax import TransferSyntax

LABELMAP = "1.2.840.10008.5.1.4.1.1.66.7"

FOREIGN = [
    "dcmqi/partial_overlaps.dcm",
    "dcmqi/liver.dcm",
    "highdicom/seg_image_ct_binary.dcm",
    "highdicom/seg_image_ct_binary_overlap.dcm",
    "highdicom/seg_image_ct_binary_fractional.dcm",
    "highdicom/seg_image_ct_true_fractional.dcm",
    "highdicom/seg_image_cr_binary.dcm",
]


def _segments(segmentation) -> dict[int, tuple]:
    """Segment number -> (mask, name, color, terminology, algorithm) over all layers."""
    return {
        s.label_value: (layer.labels == s.label_value, s.name, s.color, s.terminology, s.algorithm_type,
                        s.algorithm_name)
        for layer in segmentation.layers for s in layer.segments
    }


@pytest.mark.parametrize("name", FOREIGN)
def test_foreign_seg_converts_losslessly(data_dir: Path, tmp_path: Path, name: str) -> None:
    source = data_dir / name
    written = convert_series([source], tmp_path, ConvertSettings(transfer_syntax="rle"))
    original, converted = read_segmentation(source), read_segmentation(written)
    assert converted.geometry.same_as(original.geometry)
    expected, actual = _segments(original), _segments(converted)
    assert sorted(actual) == sorted(expected)
    for number, (mask, *attributes) in expected.items():
        assert np.array_equal(actual[number][0], mask), f"segment {number}"
        assert actual[number][1:] == tuple(attributes)
    ds = pydicom.dcmread(written[0], stop_before_pixels=True)
    src = pydicom.dcmread(source, stop_before_pixels=True)
    assert ds.SOPClassUID == LABELMAP and ds.SeriesInstanceUID != src.SeriesInstanceUID
    assert str(src.SOPInstanceUID) in ds.ContentDescription
    referenced = {item.SeriesInstanceUID: {i.ReferencedSOPInstanceUID for i in item.ReferencedInstanceSequence}
                  for item in ds.ReferencedSeriesSequence}
    for item in src.ReferencedSeriesSequence:  # the same source images, plus the input SEG itself
        instances = {i.ReferencedSOPInstanceUID for i in item.ReferencedInstanceSequence}
        assert instances <= referenced[item.SeriesInstanceUID]
    assert referenced[src.SeriesInstanceUID] == {src.SOPInstanceUID}
    from DICOMLabelmapSegLib.dicom.check import Severity, check_file

    for path in written:  # independent IOD check, and our own
        assert validators.dciodvfy_errors(path) == [], path
        problems = [f for f in check_file(path) if f.severity == Severity.ERROR]
        assert problems == [], problems


def test_partial_overlaps_packs_five_segments_into_three_layers(data_dir: Path, tmp_path: Path) -> None:
    written = convert_series([data_dir / "dcmqi" / "partial_overlaps.dcm"], tmp_path)
    assert len(written) == 3
    frame_sources = set()
    for path in written:
        for item in pydicom.dcmread(path, stop_before_pixels=True).PerFrameFunctionalGroupsSequence:
            for derivation in item.DerivationImageSequence:
                frame_sources |= {s.ReferencedSOPInstanceUID for s in derivation.SourceImageSequence}
    src = pydicom.dcmread(data_dir / "dcmqi" / "partial_overlaps.dcm", stop_before_pixels=True)
    expected = {s.ReferencedSOPInstanceUID for item in src.PerFrameFunctionalGroupsSequence
                for d in item.DerivationImageSequence for s in d.SourceImageSequence}
    assert frame_sources == expected


def test_deterministic_resumable_and_refusing(data_dir: Path, tmp_path: Path, capsys) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("partial_overlaps.dcm", "liver.dcm"):
        (inputs / name).write_bytes((data_dir / "dcmqi" / name).read_bytes())
    out, report = tmp_path / "out", tmp_path / "report.jsonl"
    assert cli.main(["convert", str(inputs), "-o", str(out), "-q", "-j", "2", "--report", str(report)]) == 0
    first = {p.relative_to(out): p.read_bytes() for p in out.rglob("*.dcm")}
    assert len(first) == 4 and len({p.parent for p in first}) == 2
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert [line["status"] for line in lines] == ["ok", "ok"] and all(line["output_bytes"] > 0 for line in lines)
    # re-run: both skipped, nothing rewritten; a damaged output is redone, identically
    damaged = sorted(out.rglob("*.dcm"))[0]
    damaged.write_bytes(damaged.read_bytes()[:1000])
    assert cli.main(["convert", str(inputs), "-o", str(out), "-q", "-j", "1", "--report", str(report)]) == 0
    statuses = sorted(json.loads(line)["status"] for line in report.read_text().splitlines()[2:])
    assert statuses == ["ok", "skipped"]
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*.dcm")} == first
    # another option is another series: refused in a folder holding one, replaced with --overwrite
    single = out / "single"
    source = inputs / "liver.dcm"
    assert cli.main(["convert", str(source), "-o", str(single), "-q"]) == 0
    assert cli.main(["convert", str(source), "-o", str(single), "--syntax", "rle", "-q"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert cli.main(["convert", str(source), "-o", str(single), "--syntax", "rle", "--overwrite", "-q"]) == 0
    remaining = [pydicom.dcmread(p, stop_before_pixels=True) for p in single.glob("*.dcm")]
    assert len(remaining) == 1 and remaining[0].file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.5"
    assert cli.main(["convert", str(source), "-o", str(tmp_path / "x"), "--series-number", "0"]) == 2
    assert cli.main(["convert", str(source), "-o", str(tmp_path / "x"), "--series-number", "4294967296"]) == 2
    assert cli.main(["convert", str(tmp_path / "missing"), "-o", str(tmp_path / "x")]) == 1


def test_no_seg_found_names_the_folder(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "nothing_here"
    empty.mkdir()
    assert cli.main(["convert", str(empty), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No DICOM Segmentation files were found in" in err and "nothing_here" in err


def test_ctrl_c_on_a_parallel_run_stops_cleanly(data_dir: Path, tmp_path: Path) -> None:
    """SIGINT to the process group (what a terminal's Ctrl-C does) while two workers convert."""
    import os
    import signal
    import subprocess
    import sys
    import time

    inputs = tmp_path / "in"
    for index in range(8):
        folder = inputs / f"case{index:02d}"
        folder.mkdir(parents=True)
        ds = pydicom.dcmread(data_dir / "dcmqi" / "partial_overlaps.dcm")
        ds.SeriesInstanceUID = pydicom.uid.generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(folder / "seg.dcm")
    report = tmp_path / "report.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "DICOMLabelmapSegLib.cli", "convert", str(inputs), "-o", str(tmp_path / "out"),
         "-j", "2", "--report", str(report), "--syntax", "jpeg2000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while not (report.exists() and report.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert err.count("\n") == 1 and "interrupted" in err and "Traceback" not in err, err
    leftovers = [p for p in (tmp_path / "out").rglob("*") if p.name.endswith(".partial")]
    assert leftovers == []
    done = len(report.read_text().splitlines())
    assert 1 <= done < 8
    # the rest is done by a re-run, the finished cases are skipped
    process = subprocess.run(
        [sys.executable, "-m", "DICOMLabelmapSegLib.cli", "convert", str(inputs), "-o", str(tmp_path / "out"),
         "-j", "2", "--report", str(report), "--syntax", "jpeg2000", "-q"], capture_output=True, text=True, timeout=120)
    assert process.returncode == 0, process.stderr
    statuses = [json.loads(line)["status"] for line in report.read_text().splitlines()[done:]]
    assert statuses.count("skipped") >= done and len(statuses) == 8


@pytest.mark.parametrize("syntax", [s.value for s in TransferSyntax])
def test_convert_in_every_syntax(data_dir: Path, tmp_path: Path, syntax: str) -> None:
    source = data_dir / "dcmqi" / "partial_overlaps.dcm"
    if TransferSyntax.parse(syntax).missing_encoder_packages():
        code = cli.main(["convert", str(source), "-o", str(tmp_path), "--syntax", syntax, "-q"])
        assert code == 1 and not list(tmp_path.glob("*.dcm"))
        return
    written = convert_series([source], tmp_path, ConvertSettings(transfer_syntax=syntax))
    assert {str(pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID) for p in written} == {
        TransferSyntax.parse(syntax).uid}
    expected, actual = _segments(read_segmentation(source)), _segments(read_segmentation(written))
    assert sorted(actual) == sorted(expected)
    assert all(np.array_equal(actual[n][0], expected[n][0]) for n in expected)


def test_list_file_and_batch_manifest_inputs(data_dir: Path, tmp_path: Path, capsys) -> None:
    listing = tmp_path / "inputs.txt"
    names = [data_dir / "dcmqi" / "liver.dcm", data_dir / "highdicom" / "seg_image_ct_binary.dcm"]
    listing.write_text("# two series\n" + "".join(f"{name}\n" for name in names))
    assert cli.main(["convert", str(listing), "-o", str(tmp_path / "from_list"), "-q", "-j", "1"]) == 0
    assert len([p for p in (tmp_path / "from_list").iterdir() if p.is_dir()]) == 2
    manifest = tmp_path / "cases.csv"
    manifest.write_text(
        "command,input,output,syntax\n"
        f"convert,{data_dir / 'dcmqi' / 'liver.dcm'},out/liver,rle\n"
        "import,out/liver,liver.seg.nrrd,\n"
    )
    code = cli.main(["batch", str(manifest), "-q", "-j", "1"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "liver.seg.nrrd").is_file()
    ds = pydicom.dcmread(next((tmp_path / "out" / "liver").glob("*.dcm")), stop_before_pixels=True)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.5"


@pytest.mark.services  # fsspec comes with the dask extra
def test_fsspec_urls_in_and_out(data_dir: Path, tmp_path: Path) -> None:
    """Object-store style paths (fsspec's in-memory file system here): same files as a local run, resumable."""
    import fsspec

    fs = fsspec.filesystem("memory")
    for name in ("partial_overlaps.dcm", "liver.dcm"):
        fs.pipe(f"/hpipe-in/{name[:-4]}/seg.dcm", (data_dir / "dcmqi" / name).read_bytes())
        (tmp_path / "in" / name[:-4]).mkdir(parents=True)
        (tmp_path / "in" / name[:-4] / "seg.dcm").write_bytes((data_dir / "dcmqi" / name).read_bytes())
    try:
        assert cli.main(["convert", "memory://hpipe-in", "-o", "memory://hpipe-out", "-q", "-j", "1"]) == 0
        assert cli.main(["convert", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-q", "-j", "1"]) == 0
        local = {p.relative_to(tmp_path / "out").as_posix(): p.read_bytes() for p in (tmp_path / "out").rglob("*.dcm")}
        remote = {path.removeprefix("/hpipe-out/"): fs.cat(path) for path in fs.find("/hpipe-out")}
        assert len(local) == 4 and remote == local
        report = tmp_path / "r.jsonl"
        code = cli.main(["convert", "memory://hpipe-in", "-o", "memory://hpipe-out", "-q", "-j", "1",
                         "--report", str(report)])
        assert code == 0
        assert [json.loads(line)["status"] for line in report.read_text().splitlines()] == ["skipped", "skipped"]
    finally:
        for folder in ("/hpipe-in", "/hpipe-out"):
            if fs.exists(folder):
                fs.rm(folder, recursive=True)
