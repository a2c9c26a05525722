"""Hostile and broken input: damaged SEG files, fuzzed bytes, interrupted exports.

The corpus (``corruptions.py``) is made from valid files (ours in every transfer syntax,
dcmqi's and highdicom's samples) and read in a guarded worker subprocess: every file
must give a typed LabelmapSegError with a clear one-sentence message (or load, where the
damage is undetectable), within a time bound and a memory bound, without crashing it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import DATA_DIR
from corruptions import (
    Corruption,
    GuardedReader,
    Outcome,
    generate_corpus,
    message_problems,
    write_our_seeds,
    write_shared_seeds,
)
from DICOMLabelmapSegLib import model
from DICOMLabelmapSegLib.dicom.options import ExportOptions
from DICOMLabelmapSegLib.dicom.reader import read_segmentation
from DICOMLabelmapSegLib.dicom.source import geometry_from_source, read_source_series
from DICOMLabelmapSegLib.dicom.writer import write_labelmap_seg
from DICOMLabelmapSegLib.errors import InvalidDicomFileError, LabelmapSegError, UndescribedLabelError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from synthetic import make_ct_series, make_segmentation

HERE = Path(__file__).resolve().parent

#: Seconds one damaged file may take to be rejected (files are tiny: a correct reader needs milliseconds).
TIME_BOUND = 10.0
#: Peak traced (Python + numpy) memory in MB reading one damaged file may reach; valid seeds need < 5 MB.
MEMORY_BOUND_MB = 200.0
#: Peak resident memory of the worker in MB (the interpreter with numpy, pydicom, highdicom takes ~100 MB).
RESIDENT_BOUND_MB = 400.0
#: Hard address-space limit of the worker process: a huge allocation fails there, not on this machine.
ADDRESS_SPACE_MB = 3072
#: Seeds that also get every header edit (the others get truncations and frame damage).
HEADER_SEEDS = ("ours-explicit-u8", "ours-jpegls-palette", "ours-rle-u16", "dcmqi-ppv5", "highdicom-binary")


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Valid seed files: our outputs in every transfer syntax, plus the shared samples when present."""
    out = tmp_path_factory.mktemp("seeds")
    return {**write_our_seeds(out / "ours"), **write_shared_seeds(out / "shared", DATA_DIR)}


@pytest.fixture(scope="module")
def corpus(seeds: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> list[Corruption]:
    """The damaged files."""
    other_dicom = next((seeds["ours-explicit-u8"].parent / "ct").glob("*.dcm"))
    return generate_corpus(seeds, tmp_path_factory.mktemp("corpus"), HEADER_SEEDS, other_dicom)


@pytest.fixture(scope="module")
def guarded() -> GuardedReader:
    """One guarded reader worker for the module."""
    with GuardedReader(timeout=TIME_BOUND, address_space_mb=ADDRESS_SPACE_MB) as reader:
        yield reader


@pytest.fixture(scope="module")
def outcomes(corpus: list[Corruption], guarded: GuardedReader) -> list[tuple[Corruption, Outcome]]:
    """What reading each damaged file did."""
    return [(item, guarded.read(item.path, trace=item.about_sizes)) for item in corpus]


def _report(failures: list[str]) -> str:
    return f"{len(failures)} damaged inputs mishandled:\n" + "\n".join(failures)


# ---------------------------------------------------------------- the seeds and the corpus


def test_seeds_are_valid_and_read(seeds: dict[str, Path], guarded: GuardedReader) -> None:
    """Every seed reads cleanly: damage, not the seed, is what the corpus tests."""
    assert len(seeds) >= 6
    for label, path in seeds.items():
        outcome = guarded.read(path)
        assert outcome.status == "ok", f"seed {label}: {outcome}"


def test_corpus_is_large_and_covers_every_kind_of_damage(corpus: list[Corruption]) -> None:
    assert len(corpus) >= 40
    kinds = Counter(item.name.split("/", 1)[1].split("-", 1)[0] for item in corpus)
    for kind in (
        "truncated", "frame", "missing", "giant", "frames", "positions", "segment", "sop", "empty", "swallowing"
    ):
        assert kinds[kind] > 0, f"no '{kind}' damage in the corpus: {sorted(kinds)}"
    must_fail = [item for item in corpus if not item.may_load]
    assert len(must_fail) >= 40


# ---------------------------------------------------------------- every damaged file is rejected cleanly


def test_damaged_files_raise_typed_errors(outcomes: list[tuple[Corruption, Outcome]]) -> None:
    """Each damaged file raises one of its expected LabelmapSegError subclasses (or loads where tolerable)."""
    failures = []
    for item, outcome in outcomes:
        if outcome.status == "ok" and item.may_load:
            continue
        if not outcome.is_error(item.expected) or "LabelmapSegError" not in outcome.error_mro:
            failures.append(
                f"{item.name}: {outcome.status} {outcome.error_type or ''} {outcome.message[:200]!r} "
                f"(expected {' or '.join(item.expected)})"
            )
    assert not failures, _report(failures)


def test_error_messages_are_one_clear_sentence(outcomes: list[tuple[Corruption, Outcome]]) -> None:
    failures = [
        f"{item.name}: {outcome.error_type}: {outcome.message!r}: {'; '.join(problems)}"
        for item, outcome in outcomes
        if outcome.status == "error" and (problems := message_problems(outcome.message))
    ]
    assert not failures, _report(failures)


def test_no_crash_no_hang(outcomes: list[tuple[Corruption, Outcome]]) -> None:
    failures = [
        f"{item.name}: {outcome.status} {outcome.message} after {outcome.seconds:.1f} s"
        for item, outcome in outcomes
        if outcome.status in ("crash", "hang") or outcome.seconds > TIME_BOUND
    ]
    assert not failures, _report(failures)


def test_no_huge_allocation(outcomes: list[tuple[Corruption, Outcome]]) -> None:
    """Lying headers (65535 x 65535 x 2e9 frames) never make the reader allocate what they claim."""
    failures = [
        f"{item.name}: peak {outcome.peak_mb:.0f} MB allocated, {outcome.rss_mb:.0f} MB resident"
        for item, outcome in outcomes
        if outcome.peak_mb > MEMORY_BOUND_MB or outcome.rss_mb > RESIDENT_BOUND_MB
    ]
    assert any(item.about_sizes and outcome.peak_mb > 0 for item, outcome in outcomes), "nothing was traced"
    failures += [
        f"{item.name}: {outcome.error_type} {outcome.message[:150]!r}"
        for item, outcome in outcomes
        if outcome.error_type == "MemoryError" or "MemoryError" in outcome.error_mro
    ]
    assert not failures, _report(failures)


def test_giant_headers_are_rejected_before_decoding(outcomes: list[tuple[Corruption, Outcome]]) -> None:
    """Gigantic Rows/Columns: implausible or not matching the pixel data; gigantic frame counts may
    also be caught by the per-frame functional groups not matching. Never a load, and quickly."""
    giant = [(item, outcome) for item, outcome in outcomes if "/giant-" in item.name and "bytes/" not in item.name]
    assert giant
    for item, outcome in giant:
        expected = ("ImplausibleSizeError", "CorruptPixelDataError")
        if "frames" in item.name or "all" in item.name:
            expected += ("InvalidDicomFileError",)
        assert outcome.is_error(expected), (item.name, outcome)
        assert outcome.seconds < 1.0, (item.name, outcome.seconds)


def test_wrong_sop_class_is_unsupported_not_invalid(outcomes: list[tuple[Corruption, Outcome]]) -> None:
    wrong = [(item, outcome) for item, outcome in outcomes if "/sop-class-" in item.name]
    assert wrong
    for item, outcome in wrong:
        assert outcome.is_error(("UnsupportedSegmentationError",)), (item.name, outcome)
        assert "Segmentation" in outcome.message


@pytest.mark.parametrize(
    ("message", "clear"),
    [
        ("'a.dcm' is truncated or damaged and cannot be parsed as DICOM (unexpected end). Copy it again.", True),
        ("'a.dcm' has a damaged header (unpack requires a buffer of 4 bytes); export the file again.", True),
        ("'NoneType' object has no attribute 'SegmentSequence'", False),
        ("list index out of range", False),
        ("KeyError: (0062, 0002)", False),
        ("Bad file.", False),
        ("'a.dcm' has Segmentation Type '" + "S" * 2000 + "'.", False),
        ("Traceback (most recent call last):\n  File ...\n  File ...\nValueError: x", False),
    ],
)
def test_message_check_tells_clear_sentences_from_raw_exceptions(message: str, clear: bool) -> None:
    assert (message_problems(message) == []) == clear


def test_guard_detects_hangs_and_crashes(tmp_path: Path) -> None:
    """The guard itself works: a worker that sleeps is reported as a hang, one that dies as a crash."""
    probe = tmp_path / "probe.dcm"
    probe.write_bytes(b"")
    with GuardedReader(timeout=0.5, startup_grace=0.0) as reader:
        reader._process = subprocess.Popen(  # noqa: SLF001 - replace the worker by a misbehaving one
            [sys.executable, "-c", "import time; time.sleep(30)"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert reader.read(probe).status == "hang"
        reader._process = subprocess.Popen(  # noqa: SLF001
            [sys.executable, "-c", "import sys; sys.stdin.readline(); sys.exit(3)"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        crash = reader.read(probe)
        assert crash.status == "crash" and "3" in crash.message
        reader.startup_grace = 10.0  # a fresh worker takes over (and first imports the library)
        assert reader.read(probe).is_error(("InvalidDicomFileError",))


# ---------------------------------------------------------------- fuzzing


_MUTATIONS = st.lists(
    st.tuples(
        st.sampled_from(["flip", "set", "delete", "insert", "duplicate", "truncate"]),
        st.floats(0.0, 1.0),
        st.integers(0, 255),
        st.integers(1, 64),
        st.booleans(),
    ),
    min_size=1,
    max_size=6,
)


def _mutate(data: bytes, mutations: list[tuple[str, float, int, int, bool]], header_end: int) -> bytes:
    """Apply byte-level mutations; ``in_header`` ones hit the header (before Pixel Data), where parsing happens."""
    buffer = bytearray(data)
    for operation, where, value, length, in_header in mutations:
        if not buffer:
            break
        end = min(header_end, len(buffer)) if in_header else len(buffer)
        position = int(where * max(end - 1, 0))
        if operation == "flip":
            buffer[position] ^= 1 << (value % 8)
        elif operation == "set":
            buffer[position] = value
        elif operation == "delete":
            del buffer[position : position + length]
        elif operation == "insert":
            buffer[position:position] = bytes([value]) * length
        elif operation == "duplicate":
            buffer[position:position] = buffer[position : position + length]
        else:
            del buffer[position:]
    return bytes(buffer)


@pytest.fixture(scope="module")
def fuzz_seeds(seeds: dict[str, Path]) -> list[tuple[str, bytes, int]]:
    """(label, bytes, end of header) of the small seeds."""
    chosen = []
    for label, path in seeds.items():
        data = path.read_bytes()
        if len(data) <= 65536:
            offset = data.rfind(b"\xe0\x7f\x10\x00")
            chosen.append((label, data, offset if offset > 132 else len(data)))
    return chosen


def _check_fuzz_outcome(outcome: Outcome, what: str) -> None:
    assert outcome.status in ("ok", "error"), f"{what}: {outcome.status} {outcome.message}"
    if outcome.status == "error":
        assert "LabelmapSegError" in outcome.error_mro, f"{what}: raw {outcome.error_type}: {outcome.message[:300]!r}"
        assert not message_problems(outcome.message), f"{what}: unclear message {outcome.message!r}"
    assert outcome.seconds < TIME_BOUND, f"{what}: {outcome.seconds:.1f} s"
    assert outcome.rss_mb < RESIDENT_BOUND_MB, f"{what}: {outcome.rss_mb:.0f} MB resident"


def _fuzz_with_hypothesis(fuzz_seeds, guarded, scratch: Path, examples: int) -> None:  # noqa: ANN001
    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=examples <= 500,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(seed_index=st.integers(0, len(fuzz_seeds) - 1), mutations=_MUTATIONS)
    def run(seed_index: int, mutations: list) -> None:
        label, data, header_end = fuzz_seeds[seed_index]
        scratch.write_bytes(_mutate(data, mutations, header_end))
        _check_fuzz_outcome(guarded.read(scratch), f"{label} mutated by {mutations}")

    run()


def test_fuzz_reader_byte_mutations(fuzz_seeds, guarded: GuardedReader, tmp_path: Path) -> None:  # noqa: ANN001
    """Hypothesis-driven byte mutations of the seeds (deterministic): only clear LabelmapSegErrors."""
    _fuzz_with_hypothesis(fuzz_seeds, guarded, tmp_path / "mutated.dcm", examples=150)


def test_sop_class_uid_damaged_into_a_sequence_is_refused_clearly(tmp_path: Path) -> None:
    """Found by the atheris fuzzer: SOP Class UID with VR SQ, its item holding a VR pydicom does not know.

    Turning that value into text made pydicom convert the item and raise NotImplementedError.
    """
    syntax = b"1.2.840.10008.1.2.1\0"
    element = b"\x02\x00\x10\x00UI" + len(syntax).to_bytes(2, "little") + syntax
    meta = b"\x02\x00\x00\x00UL\x04\x00" + len(element).to_bytes(4, "little") + element
    inner = b"\x45\x44\x5c\x50RI\x02\x00ab"  # (4445,505C), VR 'RI'
    item = b"\xfe\xff\x00\xe0" + len(inner).to_bytes(4, "little") + inner
    sop_class = b"\x08\x00\x16\x00SQ\x00\x00" + len(item).to_bytes(4, "little") + item
    path = tmp_path / "damaged.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + meta + sop_class)
    with pytest.raises(InvalidDicomFileError, match="has no valid SOP Class UID"):
        read_segmentation(path)


def _atheris_available() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def _run_atheris(tmp_path: Path, seconds: int) -> None:
    env = dict(os.environ, FUZZ_SCRATCH_DIR=str(tmp_path / "scratch"), PYTHONWARNINGS="ignore")
    command = [sys.executable, str(HERE / "fuzz_reader.py"), f"-max_total_time={seconds}", "-print_final_stats=1"]
    command.append(f"-artifact_prefix={tmp_path}/")  # a failing input is kept there, to replay it:
    # python Testing/fuzz_reader.py <that file>
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        env=env,
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    findings = [line[:600] for line in output.splitlines() if "Uncaught Python exception" in line or "Error" in line]
    summary = "\n".join(findings[-10:] + output.splitlines()[-8:])
    assert result.returncode == 0, f"atheris found a failing input:\n{summary}"
    assert "stat::number_of_executed_units" in output
    executed = int(output.split("stat::number_of_executed_units:")[1].split()[0])
    assert executed > 100, f"only {executed} inputs ran in {seconds} s"


@pytest.mark.skipif(not _atheris_available(), reason="atheris not installed (pip install atheris)")
def test_fuzz_reader_atheris_short(tmp_path: Path) -> None:
    """A short coverage-guided slice of the atheris target (the long one: FUZZ_SECONDS, marked slow)."""
    _run_atheris(tmp_path, seconds=int(os.environ.get("FUZZ_SHORT_SECONDS", "15")))


@pytest.mark.slow
def test_fuzz_reader_long(fuzz_seeds, guarded: GuardedReader, tmp_path: Path) -> None:  # noqa: ANN001
    """On demand (``make fuzz`` / ``-m slow``): FUZZ_SECONDS of atheris, or many hypothesis mutations without it."""
    seconds = int(os.environ.get("FUZZ_SECONDS", "600"))
    if _atheris_available():
        _run_atheris(tmp_path, seconds)
    else:
        _fuzz_with_hypothesis(fuzz_seeds, guarded, tmp_path / "mutated.dcm", examples=max(1000, seconds * 20))


# ---------------------------------------------------------------- interrupted export leaves nothing behind


@pytest.fixture(scope="module")
def export_case(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A CT series and a three-layer segmentation on its grid."""
    ct = make_ct_series(tmp_path_factory.mktemp("export-ct"), shape=(4, 10, 12))
    source = read_source_series(ct)
    segmentation = make_segmentation(geometry_from_source(source), layers=[[1, 2], [3], [4, 300]])
    return segmentation, source


def _listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class _Interrupted(RuntimeError):
    pass


@pytest.mark.parametrize("syntax", ["explicit", "jpeg-ls"])
@pytest.mark.parametrize("workers", [0, 2])
def test_export_cancelled_during_second_layer_leaves_no_file(
    export_case, tmp_path: Path, syntax: str, workers: int  # noqa: ANN001
) -> None:
    """The progress callback raising (a user cancelling) while layer 2 is encoded: no file remains."""
    segmentation, source = export_case
    output = tmp_path / "out"
    output.mkdir()
    (output / "unrelated.txt").write_bytes(b"keep me")
    before = _listing(output)
    calls: list[str] = []

    def progress(fraction: float, message: str) -> None:
        calls.append(message)
        if fraction >= 1 / 3 and len(calls) >= 2:
            raise _Interrupted("cancelled by the user")

    with pytest.raises(_Interrupted):
        write_labelmap_seg(
            segmentation, source, output, ExportOptions(transfer_syntax=syntax, workers=workers), progress=progress
        )
    assert _listing(output) == before, f"left behind after {calls}"


def test_export_failing_to_write_second_file_leaves_no_file(
    export_case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001
) -> None:
    """Disk full while the 2nd instance is saved (half of it written): neither instance remains."""
    segmentation, source = export_case
    output = tmp_path / "out"
    previous = write_labelmap_seg(segmentation, source, output)  # an earlier export in the same folder
    before = _listing(output)
    original = pydicom.dataset.Dataset.save_as
    saved: list[str] = []

    def save_then_fail(self, filename, *args, **kwargs):  # noqa: ANN001, ANN202
        saved.append(str(filename))
        if len(saved) == 2:
            partial = b"\0" * 128 + b"DICM" + b"partial"
            if hasattr(filename, "write"):  # the writer may save to an open stream or to a path
                filename.write(partial)
            else:
                Path(filename).write_bytes(partial)
            raise OSError(28, "No space left on device")
        return original(self, filename, *args, **kwargs)

    monkeypatch.setattr(pydicom.dataset.Dataset, "save_as", save_then_fail)
    with pytest.raises((OSError, LabelmapSegError)):
        write_labelmap_seg(segmentation, source, output)
    monkeypatch.undo()
    assert len(saved) == 2
    assert _listing(output) == before
    assert read_segmentation(previous).layers[2].labels.max() == 300  # the earlier export is intact


def test_export_of_invalid_model_writes_nothing(export_case, tmp_path: Path) -> None:  # noqa: ANN001
    """An undescribed label in the last layer is found before anything is written."""
    segmentation, source = export_case
    broken_labels = segmentation.layers[2].labels.copy()
    broken_labels[0, 0, 0] = 77
    last = model.Layer(broken_labels, segmentation.layers[2].segments)
    broken = segmentation.with_layers([*segmentation.layers[:2], last])
    output = tmp_path / "out"
    with pytest.raises(UndescribedLabelError):
        write_labelmap_seg(broken, source, output)
    assert not output.exists() or not _listing(output)


def test_corrupt_source_series_is_a_clear_error(export_case, tmp_path: Path) -> None:  # noqa: ANN001
    """A truncated source image: the export fails with a typed error and writes nothing."""
    segmentation, _ = export_case
    ct = make_ct_series(tmp_path / "ct", shape=(4, 10, 12), affine=segmentation.geometry.affine)
    data = ct[1].read_bytes()
    ct[1].write_bytes(data[: len(data) // 5])
    output = tmp_path / "out"
    with pytest.raises(LabelmapSegError) as raised:
        write_labelmap_seg(segmentation, ct, output)
    assert not message_problems(str(raised.value)), str(raised.value)
    assert not output.exists() or not _listing(output)


def test_damaged_layer_of_a_series_names_the_file(export_case, tmp_path: Path) -> None:  # noqa: ANN001
    """A series folder in which one of three layers is truncated: the error names that file."""
    segmentation, source = export_case
    folder = tmp_path / "series"
    files = write_labelmap_seg(segmentation, source, folder, ExportOptions(transfer_syntax="jpeg-ls"))
    data = files[1].read_bytes()
    files[1].write_bytes(data[: len(data) - 40])
    with pytest.raises(LabelmapSegError) as raised:
        read_segmentation(folder)
    assert files[1].name in str(raised.value)
    assert not message_problems(str(raised.value))


def test_reading_does_not_modify_the_input(seeds: dict[str, Path]) -> None:
    """Reading never writes to its input (files are opened read-only; damaged ones too)."""
    path = seeds["ours-rle-u16"]
    before = path.read_bytes()
    segmentation = read_segmentation(path)
    assert path.read_bytes() == before
    assert int(np.max(segmentation.layers[0].labels)) == 300
