"""The hostile-input suite (hostile.py) through the command line, each case capped in a subprocess.

Every case must give its promised outcome: a typed one-line error (exit 1; exit 2 for a refused
argument) and nothing written, or success with the exact voxels. CI runs the first case of every
class; the whole corpus runs with the ``slow`` marker (``pytest -m slow Testing/test_hostile.py``).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hostile import HERE, HostileCase, capped_environment, hostile_cases, limits, run_case

CASES = hostile_cases()
REPRESENTATIVE = {next(c.name for c in CASES if c.group == group) for group in dict.fromkeys(c.group for c in CASES)}


def _params() -> list:
    return [
        pytest.param(
            case, id=case.name, marks=() if case.name in REPRESENTATIVE and not case.slow else pytest.mark.slow
        )
        for case in CASES
    ]


@pytest.mark.parametrize("case", _params())
def test_hostile_input_gives_the_promised_outcome(case: HostileCase, tmp_path: Path) -> None:
    result, problems = run_case(case, tmp_path / case.name)
    assert not problems, f"{case.name}: {'; '.join(problems)}"


def test_every_class_of_issue_13_has_cases() -> None:
    groups = {case.group for case in CASES}
    expected = {"duplicates", "temporaries", "pixel-attributes", "grids", "devices", "arguments", "nesting",
                "code-vr", "unknown-keys", "unbounded", "paths", "numbers", "sizes", "reference", "faults"}  # fmt: skip
    assert expected <= groups, expected - groups
    assert len(CASES) >= 40


# ---------------------------------------------------------------- the format fuzz targets, a short slice


def _mutations(seed: bytes, count: int, rng: random.Random) -> list[bytes]:
    """Byte flips, truncations, duplicated and inserted runs, and header-field edits of ``seed``."""
    out = []
    for _ in range(count):
        data = bytearray(seed)
        for _ in range(rng.randint(1, 4)):
            kind = rng.random()
            at = rng.randrange(max(len(data), 1))
            if kind < 0.4 and data:
                data[at] = rng.randrange(256)
            elif kind < 0.55:
                del data[at:]
            elif kind < 0.75:
                data[at:at] = data[at : at + rng.randint(1, 64)] * rng.randint(1, 8)
            else:
                data[at:at] = rng.choice([b"nan", b"-1", b"99999999999", b"\n\n", b"[[[[", b"\x00", b": ", b"1e400"])
        out.append(bytes(data))
    return out


@pytest.mark.parametrize("target", ["nrrd", "nifti", "labeltable"])
def test_format_fuzz_targets_short(target: str, tmp_path: Path) -> None:
    """A few hundred mutated NRRD / NIfTI / label-table inputs: a read or a clear LabelmapSegError each.

    Checked in one subprocess under an address-space limit and a time bound (``make fuzz`` runs the
    coverage-guided version of the same target with atheris).
    """
    from fuzz_formats import write_seeds

    rng = random.Random(f"{target}-13")
    inputs = []
    for seed in write_seeds(target, tmp_path / "seeds"):
        for index, data in enumerate(_mutations(seed.read_bytes(), 150, rng)):
            path = tmp_path / "inputs" / f"{seed.name}.{index}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            inputs.append(str(path))
    process = subprocess.run(
        [sys.executable, str(HERE / "fuzz_formats.py"), "--check", target, *inputs],
        capture_output=True,
        text=True,
        timeout=300,
        env=capped_environment(),
        preexec_fn=limits(),
    )
    findings = [json.loads(line) for line in process.stdout.splitlines() if line.startswith("{")]
    assert process.returncode in (0, 1), process.stderr[-2000:]
    assert not findings, "\n".join(f"{f['input']}: {f['error']}" for f in findings[:10])


# ---------------------------------------------------------------- the library side of the same promises


def test_same_sop_instance_uid_with_different_content_names_both_files(tmp_path: Path) -> None:
    from DICOMLabelmapSegLib.dicom.reader import read_segmentation
    from DICOMLabelmapSegLib.errors import InvalidDicomFileError
    from hostile import _exported, reference_series

    _, labels = reference_series(tmp_path / "ct")
    first, second = _exported(tmp_path, labels, layers=2)
    import pydicom

    ds = pydicom.dcmread(second)
    ds.SOPInstanceUID = pydicom.dcmread(first, stop_before_pixels=True).SOPInstanceUID
    ds.save_as(second, enforce_file_format=False)
    with pytest.raises(InvalidDicomFileError, match="same SOP Instance UID") as raised:
        read_segmentation(tmp_path / "seg")
    assert first.name in str(raised.value) and second.name in str(raised.value)
    copy = tmp_path / "copies"
    copy.mkdir()
    (copy / "a.dcm").write_bytes(first.read_bytes())
    (copy / "b.dcm").write_bytes(first.read_bytes())  # a byte-identical copy is one instance
    assert len(read_segmentation(copy).layers) == 1


@pytest.mark.parametrize("threshold", [float("nan"), 0.0, -1.0, 2.0, float("inf")])
def test_nonsense_fractional_threshold_is_refused(threshold: float, tmp_path: Path) -> None:
    from DICOMLabelmapSegLib.dicom.reader import read_segmentation

    with pytest.raises(ValueError, match="fractional threshold"):
        read_segmentation(tmp_path, fractional_threshold=threshold)


def test_codes_that_do_not_fit_their_vr_are_refused_and_meanings_cleaned(caplog: pytest.LogCaptureFixture) -> None:
    from DICOMLabelmapSegLib.dicom.segment import coded_concept
    from DICOMLabelmapSegLib.errors import InvalidSegmentationError
    from DICOMLabelmapSegLib.model import Code

    for code, field in [
        (Code("10200004", "S" * 17, "Liver"), "Coding Scheme Designator"),
        (Code("1020\n0004", "SCT", "Liver"), "Code Value"),
        (Code("1020\\0004", "SCT", "Liver"), "Code Value"),
        (Code("10200004", "SCT", "Liver", "v" * 17), "Coding Scheme Version"),
        (Code("10200004", "S\x1bCT", "Liver"), "Coding Scheme Designator"),
    ]:
        with pytest.raises(InvalidSegmentationError, match=field):
            coded_concept(code)
    with caplog.at_level("WARNING"):
        item = coded_concept(Code("10200004", "SCT", "Li\x1b[31mver\x07\tleft"))
    assert item.CodeMeaning == "Li[31mver left" and "Code meaning" in caplog.text
    assert coded_concept(Code("x" * 40, "SCT", "long value")).LongCodeValue == "x" * 40  # UC is fine


def test_bounded_reads_refuse_devices_and_fifos_without_blocking(tmp_path: Path) -> None:
    import os

    from DICOMLabelmapSegLib.inputs import InputFileError, parse_json, read_bounded

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in ("/dev/zero", fifo, tmp_path):
        with pytest.raises(InputFileError, match="not a regular file"):
            read_bounded(path, 100, "Manifest")
    big = tmp_path / "big.json"
    big.write_bytes(b" " * 101)
    with pytest.raises(InputFileError, match="larger than 100 bytes"):
        read_bounded(big, 100, "Manifest")
    with pytest.raises(InputFileError, match="nested too deeply"):
        parse_json("[" * 100_000 + "]" * 100_000, "Manifest")


def test_sigterm_and_sighup_raise_terminated_and_handlers_are_restored() -> None:
    import os
    import signal

    from DICOMLabelmapSegLib.interrupts import Terminated, signals_as_interrupts

    before = signal.getsignal(signal.SIGTERM)
    for number in (signal.SIGTERM, signal.SIGHUP):
        with pytest.raises(Terminated) as raised, signals_as_interrupts():
            os.kill(os.getpid(), number)  # the handler runs at the next bytecode
            for _ in range(1000):
                pass
        assert isinstance(raised.value, KeyboardInterrupt) and raised.value.exit_code == 128 + number
    assert signal.getsignal(signal.SIGTERM) is before


def test_stale_temporaries_are_removed_but_live_ones_kept(tmp_path: Path) -> None:
    from DICOMLabelmapSegLib.atomic import AtomicFiles, remove_stale_temporaries

    stale = tmp_path / ".old.dcm.0a1b2c3d.partial"
    stale.write_bytes(b"half a file of a killed export")
    with AtomicFiles() as files:
        live = files.temporary(tmp_path / "new.dcm")  # its folder was cleaned first: the stale file is gone
        assert not stale.exists() and live.exists()
        stale.write_bytes(b"another killed writer")
        assert remove_stale_temporaries(tmp_path) == [stale]
        assert live.exists(), "a temporary being written was taken for stale"
        live.write_bytes(b"content")
    assert (tmp_path / "new.dcm").read_bytes() == b"content"
