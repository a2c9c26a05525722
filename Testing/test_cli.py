"""The ``dicom-labelmap-seg`` command: in-process through ``main([...])`` and one real subprocess.

End to end: NIfTI/.seg.nrrd + a synthetic CT series (real pydicom files) -> export in every
transfer syntax -> import -> the same labels, names, colors, layers, terminology and geometry.
Bad inputs give exit code 1 and one line on stderr.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import DICOMLabelmapSegLib.cli.main as cli
import numpy as np
import pytest
from DICOMLabelmapSegLib.dicom.source import geometry_from_source, read_source_series
from DICOMLabelmapSegLib.dicom.syntax import TransferSyntax
from DICOMLabelmapSegLib.formats import fileio
from DICOMLabelmapSegLib.formats.labeltable import read_label_table
from DICOMLabelmapSegLib.model import Geometry, Layer, Segmentation, differences
from spatial import assert_same_labels_in_space
from synthetic import make_affine, make_ct_series, make_segmentation

PACKAGE_DIR = Path(cli.__file__).resolve().parents[1]  # the folder holding DICOMLabelmapSegLib


@pytest.fixture(scope="module")
def case(tmp_path_factory, data_dir: Path) -> dict[str, Path]:
    """A synthetic oblique CT series and, on its grid, a NIfTI label map stored with flipped rows
    (like TotalSegmentator's LAS output) plus a two-layer .seg.nrrd."""
    root = tmp_path_factory.mktemp("cli_case")
    make_ct_series(root / "ct", shape=(4, 10, 12), affine=make_affine(oblique=True))
    geometry = geometry_from_source(read_source_series(root / "ct"))
    rng = np.random.default_rng(7)
    labels = rng.choice(np.array([0, 1, 5, 117], dtype=np.uint8), size=geometry.shape, p=[0.4, 0.2, 0.2, 0.2])
    flipped = geometry.affine.copy()
    flipped[:3, 3] += flipped[:3, 1] * (geometry.shape[1] - 1)
    flipped[:3, 1] *= -1
    labelmap = Segmentation(
        Geometry(geometry.shape, flipped), [Layer(np.ascontiguousarray(labels[:, ::-1, :]), [])]
    )
    nifti = root / "seg.nii.gz"
    fileio.write_nifti(_described(labelmap), nifti, sidecar=False)
    layered = make_segmentation(Geometry(geometry.shape, geometry.affine), layers=[[1, 2, 3], [4]], seed=3)
    seg_nrrd = fileio.write_seg_nrrd(layered, root / "layered.seg.nrrd")
    return {
        "root": root,
        "ct": root / "ct",
        "nifti": nifti,
        "seg_nrrd": seg_nrrd,
        "classes": data_dir / "totalsegmentator_total_classes.json",
    }


def _described(segmentation: Segmentation) -> Segmentation:
    from DICOMLabelmapSegLib.formats.labeltable import default_segment
    from DICOMLabelmapSegLib.model import present_labels

    layer = segmentation.layers[0]
    segments = [default_segment(int(v)) for v in present_labels(layer.labels) if v]
    return segmentation.with_layers([Layer(layer.labels, segments)])


def assert_same_physical(expected: Segmentation, actual: Segmentation) -> None:
    """Same segments, and the same label at every physical voxel centre (axis order/direction may differ)."""
    assert sorted(expected.geometry.shape) == sorted(actual.geometry.shape)
    assert len(expected.layers) == len(actual.layers)
    for index, (expected_layer, actual_layer) in enumerate(zip(expected.layers, actual.layers)):
        assert_same_labels_in_space(
            expected_layer.labels,
            expected.geometry.affine,
            actual_layer.labels,
            actual.geometry.affine,
            f"layer {index}",
        )
        assert len(expected_layer.segments) == len(actual_layer.segments)
        for a, b in zip(expected_layer.segments, actual_layer.segments):
            assert replace(a, terminology=b.terminology) == b and a.terminology.same_codes(b.terminology)


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --------------------------------------------------------------------------- help and usage


def _parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_every_option_and_argument_has_help() -> None:
    for parser in _parsers(cli.build_parser()):
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                continue
            assert action.help and len(action.help) > 15, f"{parser.prog}: {action.dest} has no useful help"


@pytest.mark.parametrize("command", [[], ["export"], ["import"], ["info"], ["batch"]])
def test_help_has_examples_and_exit_codes(capsys, command: list[str]) -> None:
    code, out, _ = run([*command, "--help"], capsys)
    assert code == 0
    assert "examples:" in out or "example:" in out
    assert "exit codes:" in out and "130" in out


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["export", "x.nii.gz"],  # no --reference / -o
        ["export", "a.nii.gz", "b.nii.gz", "c.nii.gz", "-r", "r1", "-r", "r2", "-o", "out"],
        ["export", "x.nii.gz", "-r", "ct", "-o", "out", "--syntax", "jpeg-xr"],
        ["import", "x.dcm", "-o", "out.seg.nrrd", "--jobs", "0"],
        ["import", "x.dcm", "-o", "out.mha"],
    ],
)
def test_usage_errors_exit_2(capsys, argv: list[str]) -> None:
    code, _, err = run(argv, capsys)
    assert code == 2
    assert "usage:" in err or "error:" in err


def test_version(capsys) -> None:
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and cli.PROGRAM in out


# --------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("syntax", [s.value for s in TransferSyntax])
def test_nifti_export_import_round_trip_in_each_syntax(case, tmp_path: Path, capsys, syntax: str) -> None:
    out = tmp_path / "seg"
    code, stdout, err = run(
        ["export", str(case["nifti"]), "-r", str(case["ct"]), "-o", str(out), "--syntax", syntax,
         "--labels", str(case["classes"]), "-q"],
        capsys,
    )
    missing = TransferSyntax.parse(syntax).missing_encoder_packages()
    if missing:  # e.g. the Slicer 5.12 compatibility environment: one line naming the package, nothing written
        assert code == 1 and err.count("\n") == 1 and missing[0] in err, err
        assert not out.exists() or not list(out.iterdir())
        return
    assert code == 0, err
    written = [Path(line) for line in stdout.split()]
    assert written and all(p.is_file() and p.parent == out for p in written)

    code, stdout, err = run(["import", str(out), "-o", str(tmp_path / "back.seg.nrrd"), "-q"], capsys)
    assert code == 0, err
    expected = fileio.read_labelmap(case["nifti"], read_label_table(case["classes"]))
    back = fileio.read_seg_nrrd(tmp_path / "back.seg.nrrd")
    classes = json.loads(case["classes"].read_text())
    assert [s.name for s in back.segments] == [classes["1"], classes["5"], classes["117"]]
    assert_same_physical(expected, back)


def test_seg_nrrd_layers_survive_export_and_import_to_nifti(case, tmp_path: Path, capsys) -> None:
    out = tmp_path / "seg"
    code, _, err = run(
        ["export", str(case["seg_nrrd"]), "-r", str(case["ct"]), "-o", str(out), "--syntax", "rle",
         "--series-description", "Layered", "--series-number", "77", "-q"],
        capsys,
    )
    assert code == 0, err
    assert len(list(out.glob("*.dcm"))) == 2, "one LABELMAP instance per layer"
    code, stdout, err = run(["import", str(out), "-o", str(tmp_path / "back.nii.gz")], capsys)
    assert code == 0, err
    assert {Path(p).name for p in stdout.split()} == {"back.nii.gz", "back.json"}
    expected = fileio.read_seg_nrrd(case["seg_nrrd"])
    assert_same_physical(expected, fileio.read_segmentation_file(tmp_path / "back.nii.gz"))

    code, text, _ = run(["info", str(out)], capsys)
    assert code == 0
    assert "Layered #77" in text and "LABELMAP" in text and "layer 1:" in text
    code, text, _ = run(["info", str(out), "--json"], capsys)
    description = json.loads(text)[0]
    assert description["series_number"] == 77 and len(description["layers"]) == 2
    assert [s["name"] for s in description["layers"][1]["segments"]] == [expected.layers[1].segments[0].name]


def test_palette_color_export_imports_back(case, tmp_path: Path, capsys) -> None:
    out = tmp_path / "seg"
    code, _, err = run(
        ["export", str(case["seg_nrrd"]), "-r", str(case["ct"]), "-o", str(out), "--palette", "-q"], capsys
    )
    assert code == 0, err
    code, _, err = run(["import", str(out), "-o", str(tmp_path / "back.seg.nrrd")], capsys)
    assert code == 0, err
    assert_same_physical(fileio.read_seg_nrrd(case["seg_nrrd"]), fileio.read_seg_nrrd(tmp_path / "back.seg.nrrd"))
    code, text, _ = run(["info", str(out)], capsys)
    assert "palette color" in text


def test_several_inputs_run_in_parallel_into_subfolders(case, tmp_path: Path, capsys) -> None:
    second = tmp_path / "again.nii.gz"
    shutil.copy(case["nifti"], second)
    code, stdout, err = run(
        ["export", str(case["nifti"]), str(second), "-r", str(case["ct"]), "-o", str(tmp_path / "out"),
         "--jobs", "2", "--syntax", "explicit"],
        capsys,
    )
    assert code == 0, err
    assert {Path(p).parent.name for p in stdout.split()} == {"seg", "again"}
    assert "2 of 2 cases succeeded" in err


def test_import_into_a_folder_writes_one_file_per_input(case, tmp_path: Path, capsys) -> None:
    seg_dir = tmp_path / "dicom"
    assert run(["export", str(case["seg_nrrd"]), "-r", str(case["ct"]), "-o", str(seg_dir), "-q"], capsys)[0] == 0
    out = tmp_path / "converted"
    code, stdout, err = run(["import", str(seg_dir), "-o", f"{out}/", "--format", "nii.gz", "-q"], capsys)
    assert code == 0, err
    assert (out / "dicom.nii.gz").is_file() and (out / "dicom.json").is_file()


# --------------------------------------------------------------------------- failures


def _assert_one_line_error(err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{cli.PROGRAM}: error:"), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), err


def test_missing_reference_folder(case, tmp_path: Path, capsys) -> None:
    code, _, err = run(["export", str(case["nifti"]), "-r", str(tmp_path / "nowhere"), "-o", str(tmp_path)], capsys)
    assert code == 1
    _assert_one_line_error(err, "nowhere", "does not exist")


def test_blank_uid_series_is_refused_with_advice(data_dir: Path, tmp_path: Path, capsys) -> None:
    ts = data_dir / "totalsegmentator"
    code, _, err = run(
        ["export", str(ts / "example_seg_dicom.nii.gz"), "-r", str(ts / "example_ct_dicom"), "-o", str(tmp_path),
         "--labels", str(data_dir / "totalsegmentator_total_classes.json")],
        capsys,
    )
    assert code == 1
    _assert_one_line_error(err, "UID", "blank")
    assert not list(tmp_path.iterdir()), "nothing written on failure"


def test_corrupt_seg_file(case, tmp_path: Path, capsys) -> None:
    seg_dir = tmp_path / "dicom"
    assert run(["export", str(case["seg_nrrd"]), "-r", str(case["ct"]), "-o", str(seg_dir), "-q"], capsys)[0] == 0
    first = sorted(seg_dir.glob("*.dcm"))[0]
    corrupt = tmp_path / "corrupt.dcm"
    corrupt.write_bytes(first.read_bytes()[: first.stat().st_size // 2])
    code, _, err = run(["import", str(corrupt), "-o", str(tmp_path / "x.seg.nrrd")], capsys)
    assert code == 1
    _assert_one_line_error(err, "corrupt.dcm")
    assert not (tmp_path / "x.seg.nrrd").exists()
    code, _, err = run(["info", str(corrupt)], capsys)
    assert code == 1 and "Traceback" not in err


def test_debug_adds_the_traceback(tmp_path: Path, case, capsys) -> None:
    code, _, err = run(["export", str(case["nifti"]), "-r", str(tmp_path / "nowhere"), "-o", str(tmp_path),
                        "--debug"], capsys)
    assert code == 1 and "Traceback" in err and "SourceImageError" in err


def test_unexpected_errors_exit_3_with_one_line(case, tmp_path: Path, capsys, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("something nobody expected")

    monkeypatch.setattr(fileio, "read_segmentation_file", broken)
    code, _, err = run(["export", str(case["nifti"]), "-r", str(case["ct"]), "-o", str(tmp_path)], capsys)
    assert code == 3
    assert "unexpected RuntimeError: something nobody expected" in err and "Traceback" not in err


def test_batch_with_one_failing_case(case, tmp_path: Path, capsys) -> None:
    manifest = tmp_path / "cases.csv"
    shutil.copy(case["nifti"], tmp_path / "a.nii.gz")
    manifest.write_text(
        "command,input,reference,output,labels,syntax\n"
        f"export,a.nii.gz,{case['ct']},out/a,{case['classes']},rle\n"
        f"export,a.nii.gz,missing_ct,out/b,,\n"
        f"export,{case['seg_nrrd']},{case['ct']},out/c,,\n"
    )
    code, stdout, err = run(["batch", str(manifest), "--jobs", "2", "--syntax", "explicit"], capsys)
    assert code == 1
    assert "2 of 3 cases succeeded, 1 failed" in err
    assert "failed: b:" in err and "missing_ct" in err
    assert len(list((tmp_path / "out" / "a").glob("*.dcm"))) == 1
    assert len(list((tmp_path / "out" / "c").glob("*.dcm"))) == 2
    assert not (tmp_path / "out" / "b").exists()
    written = [Path(p) for p in stdout.split()]
    assert len(written) == 3 and all(p.is_file() for p in written)


def test_batch_json_manifest_with_import(case, tmp_path: Path, capsys) -> None:
    seg_dir = tmp_path / "dicom"
    assert run(["export", str(case["seg_nrrd"]), "-r", str(case["ct"]), "-o", str(seg_dir), "-q"], capsys)[0] == 0
    manifest = tmp_path / "cases.json"
    manifest.write_text(json.dumps({"cases": [{"input": "dicom", "output": "layered.seg.nrrd"}]}))
    code, _, err = run(["batch", str(manifest), "-q"], capsys)
    assert code == 0, err
    assert_same_physical(fileio.read_seg_nrrd(case["seg_nrrd"]), fileio.read_seg_nrrd(tmp_path / "layered.seg.nrrd"))


@pytest.mark.parametrize(
    "name",
    [
        "seg_nrrd",
        "nifti",
    ],
)
def test_export_import_is_voxel_for_voxel_identical(case, tmp_path: Path, capsys, name: str) -> None:
    out = tmp_path / "seg"
    code, _, err = run(["export", str(case[name]), "-r", str(case["ct"]), "-o", str(out), "-q"], capsys)
    assert code == 0, err
    assert run(["import", str(out), "-o", str(tmp_path / "back.seg.nrrd"), "-q"], capsys)[0] == 0
    expected = fileio.read_segmentation_file(case[name])
    assert differences(expected, fileio.read_seg_nrrd(tmp_path / "back.seg.nrrd"), atol=1e-3) == []


@pytest.mark.parametrize(
    "content, message",
    [
        ("input,output\n", "lists no cases"),
        ("name,thing\nx,y\n", "'input'"),
        ("command,input,output\nfrobnicate,a,b\n", "is not 'export', 'import' or 'convert'"),
        ("input,reference,output,syntax\na,ct,out,jpeg-xr\n", "Unknown transfer syntax"),
        ("input,output\nseg,out.mha\n", "is not .seg.nrrd"),
    ],
)
def test_bad_manifests_exit_1(tmp_path: Path, capsys, content: str, message: str) -> None:
    manifest = tmp_path / "cases.csv"
    manifest.write_text(content)
    code, _, err = run(["batch", str(manifest)], capsys)
    assert code == 1
    _assert_one_line_error(err, message)


# --------------------------------------------------------------------------- progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal_and_not_when_quiet() -> None:
    terminal = _Terminal()
    progress = cli.Reporter(terminal).case_progress("case")
    assert progress is not None
    progress(0.5, "encoding")
    assert " 50% encoding" in terminal.getvalue()
    assert cli.Reporter(io.StringIO()).case_progress("case") is None
    assert cli.Reporter(_Terminal(), quiet=True).case_progress("case") is None


def test_exit_code_rules() -> None:
    ok, bad, boom = cli.CaseResult("a"), cli.CaseResult("b", error="x", error_kind="input"), cli.CaseResult(
        "c", error="y", error_kind="internal"
    )
    assert cli.exit_code([ok]) == 0 and cli.exit_code([ok, bad]) == 1 and cli.exit_code([bad, boom]) == 3


# --------------------------------------------------------------------------- the real command


def _command() -> tuple[list[str], dict[str, str]]:
    """The installed console script if there is one, else ``python -m DICOMLabelmapSegLib.cli``."""
    env = dict(os.environ)
    script = Path(sys.executable).with_name("dicom-labelmap-seg")
    if script.is_file():
        return [str(script)], env
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_DIR), env.get("PYTHONPATH")]))
    return [sys.executable, "-m", "DICOMLabelmapSegLib.cli"], env


def test_command_in_a_subprocess(case, tmp_path: Path) -> None:
    command, env = _command()
    out = tmp_path / "seg"
    done = subprocess.run(
        [*command, "export", str(case["nifti"]), "-r", str(case["ct"]), "-o", str(out), "--labels",
         str(case["classes"])],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", "not a terminal: no progress output"
    assert [Path(p).parent for p in done.stdout.split()] == [out]
    done = subprocess.run([*command, "import", str(tmp_path / "missing"), "-o", str(tmp_path / "x.seg.nrrd")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1
    _assert_one_line_error(done.stderr)


# --------------------------------------------------------------------------- the real TotalSegmentator case


@pytest.mark.slow
def test_totalsegmentator_output_on_its_real_ct(data_dir: Path, tmp_path: Path, capsys) -> None:
    """example_seg_dicom.nii.gz (LAS, 31 labels) on its real 20-slice CT, UIDs repaired in a copy."""
    import pydicom
    from pydicom.uid import generate_uid

    ct = tmp_path / "ct"
    ct.mkdir()
    study, series = generate_uid(), generate_uid()
    for number, source in enumerate(sorted((data_dir / "totalsegmentator" / "example_ct_dicom").iterdir())):
        ds = pydicom.dcmread(source)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientID = ds.PatientID or "TS-EXAMPLE"
        ds.save_as(ct / f"{number:03d}.dcm", enforce_file_format=True)
    nifti = data_dir / "totalsegmentator" / "example_seg_dicom.nii.gz"
    classes = data_dir / "totalsegmentator_total_classes.json"
    code, _, err = run(["export", str(nifti), "-r", str(ct), "-o", str(tmp_path / "seg"), "--labels", str(classes),
                        "-q"], capsys)
    assert code == 0, err
    code, _, err = run(["import", str(tmp_path / "seg"), "-o", str(tmp_path / "back.seg.nrrd"), "-q"], capsys)
    assert code == 0, err
    expected = fileio.read_labelmap(nifti, read_label_table(classes))
    back = fileio.read_seg_nrrd(tmp_path / "back.seg.nrrd")
    assert len(back.segments) == 31
    assert_same_physical(expected, back)


def test_folder_with_two_series_needs_a_folder_output(case, tmp_path: Path, capsys) -> None:
    seg_dir = tmp_path / "dicom"
    for number, source in ((11, case["seg_nrrd"]), (12, case["nifti"])):
        code, _, err = run(["export", str(source), "-r", str(case["ct"]), "-o", str(seg_dir / str(number)),
                            "--series-number", str(number), "-q"], capsys)
        assert code == 0, err
    code, _, err = run(["import", str(seg_dir), "-o", str(tmp_path / "one.seg.nrrd")], capsys)
    assert code == 1
    _assert_one_line_error(err, "2 segmentation series", "-o a folder")
    code, stdout, err = run(["import", str(seg_dir), "-o", str(tmp_path / "all") + "/", "-q"], capsys)
    assert code == 0, err
    assert sorted(Path(p).name for p in stdout.split()) == ["dicom_series11.seg.nrrd", "dicom_series12.seg.nrrd"]
    code, text, _ = run(["info", str(seg_dir), "--json"], capsys)
    assert code == 0 and sorted(d["series_number"] for d in json.loads(text)) == [11, 12]


# --------------------------------------------------------------------------- TotalSegmentator, re-runs, exit codes


def test_totalsegmentator_class_map_gets_snomed_codes_and_automatic(case, data_dir: Path, tmp_path: Path, capsys,
                                                                     monkeypatch) -> None:
    import pydicom

    mapping = data_dir / "totalsegmentator" / "totalsegmentator_snomed_mapping.csv"
    monkeypatch.setenv("DICOMLABELMAPSEG_TOTALSEGMENTATOR_MAP", str(mapping))
    out = tmp_path / "seg"
    code, _, err = run(["export", str(case["nifti"]), "-r", str(case["ct"]), "-o", str(out), "--labels",
                        str(case["classes"]), "-q"], capsys)
    assert code == 0, err
    ds = pydicom.dcmread(next(out.glob("*.dcm")), stop_before_pixels=True)
    spleen = next(item for item in ds.SegmentSequence if item.SegmentLabel == "spleen")
    assert spleen.SegmentedPropertyTypeCodeSequence[0].CodeValue == "78961009"  # SNOMED CT Spleen
    assert spleen.SegmentAlgorithmType == "AUTOMATIC" and spleen.SegmentAlgorithmName == "TotalSegmentator"
    # explicit flags win
    code, _, err = run(["export", str(case["nifti"]), "-r", str(case["ct"]), "-o", str(tmp_path / "b"), "--labels",
                        str(case["classes"]), "--algorithm-type", "semiautomatic", "--algorithm-name", "me", "-q"],
                       capsys)
    assert code == 0, err
    ds = pydicom.dcmread(next((tmp_path / "b").glob("*.dcm")), stop_before_pixels=True)
    algorithms = {(i.SegmentAlgorithmType, i.SegmentAlgorithmName) for i in ds.SegmentSequence[1:]}
    assert algorithms == {("SEMIAUTOMATIC", "me")}


def test_export_into_a_folder_holding_a_series_needs_overwrite(case, tmp_path: Path, capsys) -> None:
    out = tmp_path / "seg"
    argv = ["export", str(case["nifti"]), "-r", str(case["ct"]), "-o", str(out), "-q"]
    assert run(argv, capsys)[0] == 0
    first = sorted(out.glob("*.dcm"))
    code, _, err = run(argv, capsys)
    assert code == 1 and "--overwrite" in err and sorted(out.glob("*.dcm")) == first
    code, _, err = run([*argv, "--overwrite"], capsys)
    assert code == 0, err
    again = sorted(out.glob("*.dcm"))
    assert len(again) == len(first) and not set(again) & set(first)
    assert run(["import", str(out), "-o", str(tmp_path / "back.seg.nrrd"), "-q"], capsys)[0] == 0


@pytest.mark.parametrize("number", ["0", "-5", "-1", "4294967296", "x"])
def test_out_of_range_series_number_is_a_usage_error(case, tmp_path: Path, capsys, number: str) -> None:
    code, _, err = run(["export", str(case["nifti"]), "-r", str(case["ct"]), "-o", str(tmp_path / "o"),
                        f"--series-number={number}"], capsys)
    assert code == 2 and "internal" not in err and not (tmp_path / "o").exists()


def test_manifest_series_number_out_of_range_is_bad_input(case, tmp_path: Path, capsys) -> None:
    manifest = tmp_path / "cases.csv"
    manifest.write_text(f"command,input,reference,output,series_number\nexport,{case['nifti']},{case['ct']},o,-1\n")
    code, _, err = run(["batch", str(manifest)], capsys)
    assert code == 1 and "series number" in err and "internal" not in err


def test_missing_optional_package_names_the_extra(case, tmp_path: Path, capsys, monkeypatch) -> None:
    def missing(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'nibabel'", name="nibabel")

    monkeypatch.setattr(fileio, "read_segmentation_file", missing)
    code, _, err = run(["export", str(case["nifti"]), "-r", str(case["ct"]), "-o", str(tmp_path / "o")], capsys)
    assert code == 1 and "dicom-labelmap-seg[files]" in err and "internal" not in err


def test_dependent_manifest_rows_run_in_order(case, tmp_path: Path, capsys) -> None:
    manifest = tmp_path / "cases.csv"
    manifest.write_text(
        "command,input,reference,output\n"
        "import,out/case1,,case1.seg.nrrd\n"
        f"export,{case['seg_nrrd']},{case['ct']},out/case1\n"
        "import,out/missing,,never.seg.nrrd\n"
        f"export,{tmp_path / 'nothing.nii.gz'},{case['ct']},out/missing\n"
    )
    code, _, err = run(["batch", str(manifest), "-j", "2", "--report", str(tmp_path / "r.jsonl")], capsys)
    assert code == 1
    assert (tmp_path / "case1.seg.nrrd").is_file()
    assert "not run: it reads the output of failed case(s)" in err
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 4


def test_progress_bar_over_cases_shows_rate_and_eta_on_a_terminal() -> None:
    terminal = _Terminal()
    reporter = cli.Reporter(terminal)
    reporter.start(3)
    for number in (1, 2):
        reporter.case_done(number, 3, cli.CaseResult(f"c{number}", seconds=0.1))
    reporter.finish()
    text = terminal.getvalue()
    assert "2/3" in text and "case/s" in text and "<" in text  # tqdm: count, rate, elapsed<remaining
    quiet = io.StringIO()
    reporter = cli.Reporter(quiet)
    reporter.start(3)
    reporter.case_done(1, 3, cli.CaseResult("c1"))
    reporter.finish()
    assert quiet.getvalue() == ""
