"""Hostile inputs for the command line, generated (never committed), and a capped way to run them.

Each :class:`HostileCase` builds its input files in a scratch folder and names the command line to
run on them and the promised outcome: a typed one-line error (exit 1, or 2 for a refused
argument), or success with exact voxels. :func:`run_cli` runs the console script's module in a
subprocess with an address-space limit (``RLIMIT_AS``), a file-size limit when asked (a full
disk) and a time bound, so that a hang, a crash or a huge allocation is observed instead of taking
the test run down.

The classes (issue 13): duplicate SOP Instance UIDs, pixel attributes a segmentation type does not
allow, absurd and sparse grids, hostile NRRD headers (``line skip``, detached data that is a FIFO,
a device, or outside the header's folder, NaN origins, gzip bombs), hostile label tables (devices,
deep nesting, codes that do not fit their VR, unknown keys), junk in the reference folder, our own
temporary files beside good outputs, nonsense arguments, and a full disk.

``python hostile.py OUT_DIR`` writes the whole corpus to OUT_DIR and prints one line per case.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom

HERE = Path(__file__).resolve().parent
LIBRARY_DIR = HERE.parent / "DICOMLabelmapSeg"
sys.path[:0] = [p for p in (str(HERE), str(LIBRARY_DIR)) if p not in sys.path]

from corruptions import message_problems  # noqa: E402

#: Exit codes of the command line (cli/main.py).
EXIT_OK, EXIT_INPUT, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
#: Hard address-space limit of one case (the interpreter with numpy, pydicom and highdicom maps ~1 GB).
ADDRESS_SPACE_MB = 2048
#: Seconds one case may take (tiny files: a correct program needs about two, mostly imports).
TIME_BOUND = 60.0
#: Shape (slices, rows, columns) of the reference CT series of the cases.
SHAPE = (4, 10, 12)


@dataclass
class Result:
    """What one command did."""

    code: int | None  # None: killed after the time bound
    stdout: str
    stderr: str
    seconds: float

    @property
    def error_lines(self) -> list[str]:
        """The stderr lines that are not warnings or progress (the error a user reads)."""
        return [line for line in self.stderr.splitlines() if line.strip() and "warning" not in line.lower()]


def cli_command(*args: str | os.PathLike[str]) -> list[str]:
    """The command line of the console script (``dicom-labelmap-seg``) with ``args``."""
    return [sys.executable, "-m", "DICOMLabelmapSegLib.cli", *(os.fspath(a) for a in args)]


def capped_environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(LIBRARY_DIR), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    env["PYTHONWARNINGS"] = "ignore"
    return env


def limits(address_space_mb: int = ADDRESS_SPACE_MB, file_size: int | None = None) -> Callable[[], None]:
    """A ``preexec_fn`` setting the address-space limit (and a file-size limit: writes beyond it fail)."""

    def apply() -> None:
        import resource

        space = address_space_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (space, space))
        if file_size is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write beyond the limit fails with EFBIG instead
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))

    return apply


def run_cli(
    args: Sequence[str | os.PathLike[str]],
    cwd: Path | None = None,
    timeout: float = TIME_BOUND,
    address_space_mb: int = ADDRESS_SPACE_MB,
    file_size: int | None = None,
) -> Result:
    """Run the command line with ``args`` under the caps; a hang is killed and reported as code None."""
    start = time.monotonic()
    process = subprocess.Popen(
        cli_command(*args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=capped_environment(),
        preexec_fn=limits(address_space_mb, file_size),
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
        code: int | None = process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        code = None
    return Result(code, stdout, stderr, time.monotonic() - start)


def outcome_problems(result: Result, expect: str, must_mention: Sequence[str] = ()) -> list[str]:
    """Why ``result`` is not the promised outcome (empty: it is).

    ``expect`` is ``"error"`` (exit 1 with one clear line), ``"report"`` (exit 1, findings on stdout),
    ``"usage"`` (exit 2, argparse's message),
    ``"ok"`` (exit 0) or ``"ok-warned"`` (exit 0 and a warning on stderr). ``must_mention`` are words
    the error or warning must contain (e.g. both file names).
    """
    problems: list[str] = []
    if result.code is None:
        return [f"hung: killed after {result.seconds:.0f} s"]
    if result.code < 0 or result.code > 3:
        return [f"crashed with code {result.code}: {result.stderr[-300:]!r}"]
    wanted = {"error": EXIT_INPUT, "report": EXIT_INPUT, "usage": EXIT_USAGE, "ok": EXIT_OK, "ok-warned": EXIT_OK}[
        expect
    ]
    if result.code != wanted:
        problems.append(f"exit {result.code}, expected {wanted}: {result.stderr[-600:]!r}")
    if expect == "error":
        lines = result.error_lines
        if len(lines) != 1:
            problems.append(f"{len(lines)} error lines instead of one: {result.stderr[-600:]!r}")
        for line in lines[:1]:
            problems.extend(message_problems(line))
    if expect == "ok-warned" and "warning" not in result.stderr.lower():
        problems.append(f"no warning on stderr: {result.stderr!r}")
    text = (result.stderr + result.stdout).lower()
    problems.extend(
        f"does not mention {word!r}: {result.stderr[-400:]!r}" for word in must_mention if word.lower() not in text
    )
    if "Traceback" in result.stderr:
        problems.append("printed a traceback")
    return problems


# ---------------------------------------------------------------------------------------- inputs


def write_nrrd(
    path: Path, labels: np.ndarray, fields: dict[str, str] | None = None, payload: bytes | None = None
) -> Path:
    """A raw, attached NRRD label map (axes i, j, k fastest first) with optional extra or replaced fields."""
    header = {
        "type": {1: "uint8", 2: "uint16"}[labels.dtype.itemsize],
        "dimension": "3",
        "space": "left-posterior-superior",
        "sizes": f"{labels.shape[2]} {labels.shape[1]} {labels.shape[0]}",
        "space directions": "(1,0,0) (0,1,0) (0,0,2)",
        "kinds": "domain domain domain",
        "endian": "little",
        "encoding": "raw",
        "space origin": "(0,0,0)",
    }
    header.update(fields or {})
    text = "NRRD0004\n" + "".join(f"{key}: {value}\n" for key, value in header.items() if value is not None) + "\n"
    data = labels.astype(labels.dtype.newbyteorder("<")).tobytes() if payload is None else payload
    path.write_bytes(text.encode("ascii") + (b"" if "data file" in header else data))
    return path


def reference_series(folder: Path) -> tuple[Path, np.ndarray]:
    """A CT series on the grid of :func:`write_nrrd` (1 x 1 x 2 mm, origin 0) and a label map on it."""
    from synthetic import make_ct_series

    # index (k, j, i) -> LPS: x = i, y = j, z = 2 k
    affine = np.zeros((4, 4))
    affine[0, 2], affine[1, 1], affine[2, 0], affine[3, 3] = 1.0, 1.0, 2.0, 1.0
    make_ct_series(folder, shape=SHAPE, affine=affine)
    rng = np.random.default_rng(13)
    labels = rng.integers(0, 3, size=SHAPE).astype(np.uint8)
    labels[0, 0, 0], labels[1, 1, 1] = 1, 2
    return folder, labels


def label_table(entries: dict[str, object] | None = None, **extra: object) -> dict[str, object]:
    """A label table for labels 1 and 2 (our JSON form), entry 1 updated with ``entries``."""
    first: dict[str, object] = {"label": 1, "name": "liver", "color": [200, 100, 50]}
    first.update(entries or {})
    return {"segments": [first, {"label": 2, "name": "spleen", "color": [20, 100, 250]}], **extra}


@dataclass
class HostileCase:
    """One hostile input: ``build(scratch)`` writes it and returns the command-line arguments."""

    name: str
    group: str
    build: Callable[[Path], list[str]]
    expect: str = "error"  # see outcome_problems
    must_mention: tuple[str, ...] = ()
    file_size: int | None = None
    check: Callable[[Path, Result], list[str]] | None = None  # extra checks of what is on disk
    slow: bool = False
    notes: str = field(default="")


def _export_args(scratch: Path, labels_path: Path, table: object | None = None, *more: str) -> list[str]:
    reference = scratch / "ct"
    args = ["export", str(labels_path), "-r", str(reference), "-o", str(scratch / "out"), "-j", "1", "-q"]
    if table is not None:
        table_path = scratch / "labels.json"
        table_path.write_text(json.dumps(table) if not isinstance(table, str) else table)
        args += ["--labels", str(table_path)]
    return args + list(more)


def _with_reference(build: Callable[[Path, np.ndarray], list[str]]) -> Callable[[Path], list[str]]:
    def wrapped(scratch: Path) -> list[str]:
        _, labels = reference_series(scratch / "ct")
        return build(scratch, labels)

    return wrapped


def _exported(scratch: Path, labels: np.ndarray, layers: int = 1) -> list[Path]:
    """A valid export of ``labels`` (``layers`` copies as layers) made with the library, for import cases."""
    from DICOMLabelmapSegLib.dicom.source import geometry_from_source, read_source_series
    from DICOMLabelmapSegLib.dicom.writer import write_labelmap_seg
    from synthetic import make_segmentation

    source = read_source_series(scratch / "ct")
    segmentation = make_segmentation(geometry_from_source(source), layers=[[1, 2]] * layers)
    return write_labelmap_seg(segmentation, source, scratch / "seg")


def _edited(path: Path, edit: Callable[[pydicom.Dataset], None], out: Path | None = None) -> Path:
    ds = pydicom.dcmread(path)
    edit(ds)
    out = out or path
    ds.save_as(out, enforce_file_format=False)
    return out


def _written(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _clean_meanings(scratch: Path, result: Result) -> list[str]:
    """Every Code Meaning of the exported SEG is free of control characters."""
    files = sorted((scratch / "out").rglob("*.dcm"))
    if not files:
        return ["no SEG written"]
    meanings: list[str] = []

    def collect(dataset: pydicom.Dataset) -> None:
        for element in dataset:
            if element.keyword == "CodeMeaning":
                meanings.append(str(element.value))
            elif element.VR == "SQ":
                for item in element.value:
                    collect(item)

    collect(pydicom.dcmread(files[0], stop_before_pixels=True))
    dirty = [m for m in meanings if any(ord(c) < 32 or ord(c) == 127 for c in m)]
    return [f"control characters written in Code Meaning {dirty}"] if dirty else []


def _no_output(scratch: Path, result: Result) -> list[str]:
    out = scratch / "out"
    left = [str(p.relative_to(scratch)) for p in out.rglob("*") if p.is_file()] if out.exists() else []
    return [f"left files behind: {left}"] if left else []


# ------------------------------------------------------------------------------- case builders


def _import_cases() -> list[HostileCase]:
    def import_of(edit: Callable[[pydicom.Dataset], None], layers: int = 1) -> Callable[[Path], list[str]]:
        def build(scratch: Path, labels: np.ndarray) -> list[str]:
            files = _exported(scratch, labels, layers)
            _edited(files[0], edit)
            return ["import", str(scratch / "seg"), "-o", str(scratch / "out" / "x.seg.nrrd"), "-q"]

        return _with_reference(build)

    def setter(**values: object) -> Callable[[pydicom.Dataset], None]:
        def edit(ds: pydicom.Dataset) -> None:
            for keyword, value in values.items():
                setattr(ds, keyword, value)

        return edit

    def same_uid_different_content(scratch: Path, labels: np.ndarray) -> list[str]:
        files = _exported(scratch, labels, layers=2)
        uid = pydicom.dcmread(files[0], stop_before_pixels=True).SOPInstanceUID
        _edited(files[1], setter(SOPInstanceUID=uid))
        return ["import", str(scratch / "seg"), "-o", str(scratch / "out" / "x.seg.nrrd"), "-q"]

    def identical_copy(scratch: Path, labels: np.ndarray) -> list[str]:
        files = _exported(scratch, labels, layers=1)
        (scratch / "seg" / "copy").mkdir()
        (scratch / "seg" / "copy" / files[0].name).write_bytes(files[0].read_bytes())
        return ["import", str(scratch / "seg"), "-o", str(scratch / "out" / "x.nii.gz"), "-q"]

    def stale_temporary_beside_export(scratch: Path, labels: np.ndarray) -> list[str]:
        files = _exported(scratch, labels, layers=1)
        # a killed export's temporary: the first half of a SEG file, named the way atomic.py names them
        data = files[0].read_bytes()
        (scratch / "seg" / f".{files[0].name}.0a1b2c3d.partial").write_bytes(data[: len(data) // 2])
        return ["import", str(scratch / "seg"), "-o", str(scratch / "out" / "x.nii.gz"), "-q"]

    def sparse(slices: int = 6_700_000, *more: str) -> Callable[[Path, np.ndarray], list[str]]:
        def build(scratch: Path, labels: np.ndarray) -> list[str]:
            files = _exported(scratch, labels)
            ds = pydicom.dcmread(files[0])
            item = ds.PerFrameFunctionalGroupsSequence[-1].PlanePositionSequence[0]
            position = [float(v) for v in item.ImagePositionPatient]
            item.ImagePositionPatient = [position[0], position[1], position[2] + 2.0 * slices]
            ds.save_as(files[0], enforce_file_format=False)
            return ["import", str(scratch / "seg"), "-o", str(scratch / "out" / "x.seg.nrrd"), "-q", *more]

        return build

    def normal(*more: str) -> Callable[[Path, np.ndarray], list[str]]:
        def build(scratch: Path, labels: np.ndarray) -> list[str]:
            _exported(scratch, labels)
            return ["import", str(scratch / "seg"), "-o", str(scratch / "out" / "x.seg.nrrd"), "-q", *more]

        return build

    def slices_of_output(expected: int) -> Callable[[Path, Result], list[str]]:
        def check(scratch: Path, result: Result) -> list[str]:
            from DICOMLabelmapSegLib.formats.fileio import read_seg_nrrd

            written = scratch / "out" / "x.seg.nrrd"
            if not written.exists():
                return ["no output written"]
            shape = read_seg_nrrd(written).geometry.shape
            return [] if shape[0] == expected else [f"{shape[0]} slices, expected {expected}"]

        return check

    def giant_frames(scratch: Path, labels: np.ndarray) -> list[str]:
        # eight frames that claim 16384 x 16384 pixels each (2 GiB of labels) in a file of a few KB
        files = _exported(scratch, labels)
        ds = pydicom.dcmread(files[0])
        ds.Rows = ds.Columns = 16384
        ds.save_as(files[0], enforce_file_format=False)
        return ["import", str(scratch / "seg"), "-o", str(scratch / "out" / "x.seg.nrrd"), "-q"]

    def exact_voxels(expected_layers: int) -> Callable[[Path, Result], list[str]]:
        def check(scratch: Path, result: Result) -> list[str]:
            from DICOMLabelmapSegLib.dicom.reader import read_segmentation

            written = sorted((scratch / "out").glob("x.*"))
            if not written:
                return ["no output written"]
            reference = read_segmentation(sorted((scratch / "seg").glob("*.dcm"))[0])
            import nibabel

            image = nibabel.load(str(next(p for p in written if p.name.endswith(".nii.gz"))))
            array = np.asarray(image.dataobj)
            expected = reference.layers[0].labels.transpose(2, 1, 0)  # (k, j, i) -> NIfTI i, j, k
            if array.shape[:3] != expected.shape or array.ndim - 3 != expected_layers - 1:
                return [f"shape {array.shape}, expected {expected.shape} x {expected_layers} layer(s)"]
            # NIfTI is RAS: i and j are flipped relative to LPS
            flipped = expected[::-1, ::-1, :]
            return [] if np.array_equal(array, flipped) or np.array_equal(array, expected) else ["voxels differ"]

        return check

    return [
        HostileCase(
            "same-sop-uid-different-content",
            "duplicates",
            _with_reference(same_uid_different_content),
            must_mention=("same SOP Instance UID",),
            check=_no_output,
        ),
        HostileCase(
            "same-sop-uid-identical-copy", "duplicates", _with_reference(identical_copy), "ok", check=exact_voxels(1)
        ),
        HostileCase(
            "stale-temporary-beside-export",
            "temporaries",
            _with_reference(stale_temporary_beside_export),
            "ok",
            check=exact_voxels(1),
        ),
        HostileCase(
            "labelmap-pixel-representation-1",
            "pixel-attributes",
            import_of(setter(PixelRepresentation=1)),
            must_mention=("Pixel Representation",),
            check=_no_output,
        ),
        HostileCase(
            "labelmap-bits-stored-7",
            "pixel-attributes",
            import_of(setter(BitsStored=7, HighBit=6)),
            must_mention=("Bits Stored",),
            check=_no_output,
        ),
        HostileCase(
            "labelmap-high-bit-0",
            "pixel-attributes",
            import_of(setter(HighBit=0)),
            must_mention=("High Bit",),
            check=_no_output,
        ),
        HostileCase(
            "labelmap-monochrome1",
            "pixel-attributes",
            import_of(setter(PhotometricInterpretation="MONOCHROME1")),
            must_mention=("Photometric",),
            check=_no_output,
        ),
        HostileCase(
            "labelmap-rgb",
            "pixel-attributes",
            import_of(setter(PhotometricInterpretation="RGB", SamplesPerPixel=3)),
            check=_no_output,
        ),
        HostileCase(
            "frames-millions-of-slices-apart",
            "grids",
            _with_reference(sparse()),
            must_mention=("slices", "--max-slices"),
            check=_no_output,
        ),
        # a raised slice limit still meets the memory bound (15 million slices of 10 x 12 bytes: 1.8 GB)
        HostileCase(
            "frames-millions-of-slices-apart-raised-limit",
            "grids",
            _with_reference(sparse(15_000_000, "--max-slices", "100000000")),
            must_mention=("GiB", "--max-memory"),
            check=_no_output,
        ),
        # what the limits refuse, they allow when raised: 20,000 slices apart with --max-slices 30000
        HostileCase(
            "frames-20000-slices-apart-with-raised-limit",
            "grids",
            _with_reference(sparse(20_000, "--max-slices", "30000")),
            "ok",
            check=slices_of_output(SHAPE[0] + 20_000),
        ),
        HostileCase(
            "import-under-a-tiny-memory-limit",
            "grids",
            _with_reference(normal("--max-memory", "100")),
            must_mention=("the given limit",),
            check=_no_output,
        ),
        HostileCase("frames-claiming-16384-squared", "grids", _with_reference(giant_frames), check=_no_output),
        HostileCase(
            "import-dev-zero",
            "devices",
            lambda scratch: ["import", "/dev/zero", "-o", str(scratch / "out" / "x.seg.nrrd")],
            check=_no_output,
        ),
        *(
            HostileCase(
                f"fractional-threshold-{value}",
                "arguments",
                lambda scratch, value=value: [
                    "import",
                    str(scratch),
                    "-o",
                    str(scratch / "out" / "x.nii.gz"),
                    "--fractional-threshold",
                    value,
                ],
                "usage",
            )
            for value in ("nan", "2", "-1", "0", "inf")
        ),
    ]


def _fractional_pixel_representation() -> HostileCase:
    """FRACTIONAL with signed pixels: values >= 128 would turn negative and the segment come back empty."""

    def build(scratch: Path) -> list[str]:
        shared = Path(os.environ.get("DICOMLABELMAPSEG_TEST_DATA", HERE.parent.parent / "shared" / "data"))
        sample = shared / "highdicom" / "seg_image_ct_true_fractional.dcm"
        (scratch / "seg").mkdir()
        if sample.exists():
            _edited(sample, lambda ds: setattr(ds, "PixelRepresentation", 1), scratch / "seg" / "fractional.dcm")
        else:  # no shared data: the label map edited the same way still has to be refused
            _, labels = reference_series(scratch / "ct")
            files = _exported(scratch, labels)
            _edited(files[0], lambda ds: setattr(ds, "PixelRepresentation", 1))
        return ["import", str(scratch / "seg"), "-o", str(scratch / "out" / "x.seg.nrrd"), "-q"]

    return HostileCase(
        "fractional-pixel-representation-1",
        "pixel-attributes",
        build,
        must_mention=("Pixel Representation",),
        check=_no_output,
    )


def _label_table_cases() -> list[HostileCase]:
    def export_with(table: object, expect: str = "error", mention: tuple[str, ...] = (), **kwargs: object) -> dict:
        def build(scratch: Path, labels: np.ndarray) -> list[str]:
            return _export_args(scratch, write_nrrd(scratch / "labels.nrrd", labels), table)

        return {"build": _with_reference(build), "expect": expect, "must_mention": mention, **kwargs}

    nested = '{"segments": ' + "[" * 100_000 + "]" * 100_000 + "}"
    code = {"CodeValue": "10200004", "CodingSchemeDesignator": "SCT", "CodeMeaning": "Liver"}
    category = {"CodeValue": "123037004", "CodingSchemeDesignator": "SCT", "CodeMeaning": "Anatomical Structure"}

    def typed(**changes: str) -> dict[str, object]:
        return {"terminology": {"category": category, "type": {**code, **changes}}}

    return [
        HostileCase(
            "labels-dev-zero",
            "devices",
            **{
                **export_with(None),
                "build": _with_reference(
                    lambda scratch, labels: (
                        _export_args(scratch, write_nrrd(scratch / "l.nrrd", labels)) + ["--labels", "/dev/zero"]
                    )
                ),
            },
            check=_no_output,
        ),
        HostileCase("labels-deeply-nested", "nesting", **export_with(nested), check=_no_output),
        *(
            HostileCase(
                f"terminology-json-{name}",
                group,
                _with_reference(
                    lambda scratch, labels, make=make: (
                        _export_args(scratch, write_nrrd(scratch / "l.nrrd", labels), label_table())
                        + ["--terminology-json", make(scratch)]
                    )
                ),
                check=_no_output,
            )
            for name, group, make in (
                ("dev-zero", "devices", lambda scratch: "/dev/zero"),
                ("deeply-nested", "nesting", lambda scratch: _written(scratch / "t.term.json", nested)),
            )
        ),
        HostileCase(
            "labels-huge",
            "sizes",
            **export_with('{"segments": [' + " " * (80 << 20) + "]}"),
            check=_no_output,
            slow=True,
        ),
        HostileCase(
            "labels-scheme-designator-40-characters",
            "code-vr",
            **export_with(label_table(typed(CodingSchemeDesignator="S" * 40)), mention=("Coding Scheme Designator",)),
            check=_no_output,
        ),
        HostileCase(
            "labels-code-value-newline",
            "code-vr",
            **export_with(label_table(typed(CodeValue="1020\n0004")), mention=("Code Value",)),
            check=_no_output,
        ),
        HostileCase(
            "labels-code-meaning-control-characters",
            "code-vr",
            **export_with(label_table(typed(CodeMeaning="Li\x1b[31mver\x07")), "ok-warned"),
            check=_clean_meanings,
        ),
        HostileCase(
            "labels-unknown-keys",
            "unknown-keys",
            **export_with(label_table({"nmae": "liver", "colour": [1, 2, 3]}), "ok-warned", ("nmae", "colour")),
        ),
    ]


def _nrrd_cases() -> list[HostileCase]:
    def nrrd(
        fields: dict[str, str],
        payload: bytes | None = None,
        prepare: Callable[[Path], None] | None = None,
        expect: str = "error",
        mention: tuple[str, ...] = (),
    ) -> dict:
        def build(scratch: Path, labels: np.ndarray) -> list[str]:
            if prepare is not None:
                prepare(scratch)
            path = write_nrrd(scratch / "labels.nhdr", labels, fields, payload)
            return _export_args(scratch, path, label_table())

        return {"build": _with_reference(build), "expect": expect, "must_mention": mention, "check": _no_output}

    def fifo(scratch: Path) -> None:
        os.mkfifo(scratch / "data.raw")

    def outside(scratch: Path) -> None:
        (scratch / "secret").mkdir()
        (scratch / "secret" / "data.raw").write_bytes(bytes(np.prod(SHAPE)))
        (scratch / "inside").mkdir()

    def gzip_bomb() -> bytes:
        return gzip.compress(bytes(1 << 30), compresslevel=1)  # 1 GiB of zeros in ~1 MB for a 480-byte volume

    return [
        HostileCase("nrrd-line-skip-huge", "unbounded", **nrrd({"line skip": "1000000000000"})),
        HostileCase("nrrd-byte-skip-huge", "unbounded", **nrrd({"byte skip": "1000000000000"})),
        HostileCase("nrrd-data-file-fifo", "devices", **nrrd({"data file": "data.raw"}, prepare=fifo)),
        HostileCase("nrrd-data-file-dev-zero", "devices", **nrrd({"data file": "/dev/zero"})),
        HostileCase("nrrd-data-file-absolute", "paths", **nrrd({"data file": "/etc/hostname"})),
        HostileCase("nrrd-data-file-parent", "paths", **nrrd({"data file": "secret/../../etc/hostname"})),
        HostileCase("nrrd-data-file-list", "paths", **nrrd({"data file": "LIST\n/etc/hostname"})),
        HostileCase("nrrd-origin-nan", "numbers", **nrrd({"space origin": "(nan,nan,nan)"})),
        HostileCase("nrrd-direction-inf", "numbers", **nrrd({"space directions": "(inf,0,0) (0,1,0) (0,0,2)"})),
        HostileCase("nrrd-sizes-giant", "sizes", **nrrd({"sizes": "65535 65535 65535"})),
        # 1 GiB of zeros behind a 480-byte volume: only the declared bytes are decompressed (exact voxels: zeros)
        HostileCase(
            "nrrd-gzip-bomb",
            "sizes",
            **{**nrrd({"encoding": "gzip"}, payload=gzip_bomb()), "expect": "ok", "check": None},
        ),
        HostileCase("nifti-declares-2-gib", "sizes", _with_reference(_nifti_bomb), check=_no_output),
    ]


def _nifti_bomb(scratch: Path, labels: np.ndarray) -> list[str]:
    """A 3 KB .nii.gz whose header declares 512 x 512 x 1000 float64 voxels (2 GiB); the data is missing."""
    import nibabel

    header = nibabel.Nifti1Header()
    header.set_data_dtype(np.float64)
    header.set_data_shape((512, 512, 1000))
    header["vox_offset"] = 352
    block = header.binaryblock + bytes(4) + bytes(4096)
    path = scratch / "bomb.nii.gz"
    path.write_bytes(gzip.compress(block))
    return _export_args(scratch, path, label_table())


def _reference_cases() -> list[HostileCase]:
    def junk(write: Callable[[Path], None], expect: str = "ok") -> Callable[[Path], list[str]]:
        def build(scratch: Path, labels: np.ndarray) -> list[str]:
            write(scratch / "ct")
            return _export_args(scratch, write_nrrd(scratch / "labels.nrrd", labels), label_table())

        return _with_reference(build)

    def deep_nesting(folder: Path) -> None:
        """A DICOM file whose only element is a sequence nested 5000 deep (pydicom recurses per level)."""
        body = b""
        for _ in range(5000):
            item = b"\xfe\xff\x00\xe0" + len(body).to_bytes(4, "little") + body if body else b"\xfe\xff\x00\xe0\0\0\0\0"
            body = b"\x08\x00\x15\x11" + b"SQ\0\0" + len(item).to_bytes(4, "little") + item
        (folder / "junk-nested.dcm").write_bytes(bytes(128) + b"DICM" + _meta() + body)

    def short_rows(folder: Path) -> None:
        first = sorted(folder.glob("*.dcm"))[0]
        ds = pydicom.dcmread(first)
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(folder / "junk-rows.dcm", enforce_file_format=False)
        data = (folder / "junk-rows.dcm").read_bytes()
        tag = b"\x28\x00\x10\x00US\x02\x00"  # Rows, explicit VR: length 2 -> 3
        at = data.index(tag)
        (folder / "junk-rows.dcm").write_bytes(
            data[:at] + b"\x28\x00\x10\x00US\x03\x00" + data[at + 8 : at + 10] + b"\0" + data[at + 10 :]
        )

    def nan_position(folder: Path) -> None:
        first = sorted(folder.glob("*.dcm"))[0]
        ds = pydicom.dcmread(first)
        ds.ImagePositionPatient = ["nan", "nan", "nan"]
        ds.save_as(first, enforce_file_format=False)

    return [
        HostileCase("reference-junk-deeply-nested", "reference", junk(deep_nesting), "ok"),
        HostileCase("reference-junk-3-byte-rows", "reference", junk(short_rows), "ok"),
        HostileCase(
            "reference-slice-at-nan",
            "reference",
            junk(nan_position),
            "error",
            must_mention=("position",),
            check=_no_output,
        ),
    ]


def _meta() -> bytes:
    """A minimal explicit VR little endian file meta group."""
    syntax = b"1.2.840.10008.1.2.1\0"
    element = b"\x02\x00\x10\x00UI" + len(syntax).to_bytes(2, "little") + syntax
    return b"\x02\x00\x00\x00UL\x04\x00" + len(element).to_bytes(4, "little") + element


def _fault_cases() -> list[HostileCase]:
    def full_disk(scratch: Path, labels: np.ndarray) -> list[str]:
        return _export_args(scratch, write_nrrd(scratch / "labels.nrrd", labels), label_table(), "--syntax", "explicit")

    def import_full_disk(scratch: Path, labels: np.ndarray) -> list[str]:
        _exported(scratch, labels)
        return ["import", str(scratch / "seg"), "-o", str(scratch / "out" / "x.nii"), "-q"]

    def batch_dev_zero(scratch: Path) -> list[str]:
        return ["batch", "/dev/zero"]

    def batch_nested(scratch: Path) -> list[str]:
        (scratch / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
        return ["batch", str(scratch / "manifest.json")]

    return [
        # the SEG of this case is ~6 KB: writes beyond 2 KB fail the way a full disk does (EFBIG, not ENOSPC)
        HostileCase("export-full-disk", "faults", _with_reference(full_disk), file_size=2048, check=_no_output,
                    must_mention=("writing", "failed", "disk space")),
        # an uncompressed NIfTI of 480 voxels is 832 bytes: writes beyond 600 bytes fail like a full disk
        HostileCase("import-full-disk", "faults", _with_reference(import_full_disk), file_size=600, check=_no_output,
                    must_mention=("writing", "failed", "disk space")),
        HostileCase("batch-dev-zero", "devices", batch_dev_zero),
        HostileCase("info-dev-zero", "devices", lambda scratch: ["info", "/dev/zero"]),
        # `check` reports findings on stdout (exit 1 for an error finding)
        HostileCase(
            "check-dev-zero",
            "devices",
            lambda scratch: ["check", "/dev/zero"],
            "report",
            must_mention=("not a regular file",),
        ),
        HostileCase("batch-deeply-nested", "nesting", batch_nested),
    ]


def hostile_cases() -> list[HostileCase]:
    """Every hostile case (see the module docstring for the classes)."""
    return [
        *_import_cases(),
        _fractional_pixel_representation(),
        *_label_table_cases(),
        *_nrrd_cases(),
        *_reference_cases(),
        *_fault_cases(),
    ]


def run_case(case: HostileCase, scratch: Path) -> tuple[Result, list[str]]:
    """Build and run one case in ``scratch``; return the result and what is wrong with it."""
    scratch.mkdir(parents=True, exist_ok=True)
    args = case.build(scratch)
    if case.expect == "ok-warned":  # --quiet shows only errors
        args = [a for a in args if a != "-q"]
    result = run_cli(args, cwd=scratch, file_size=case.file_size)
    problems = outcome_problems(result, case.expect, case.must_mention)
    if case.check is not None and result.code is not None:
        problems.extend(case.check(scratch, result))
    return result, problems


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "hostile-out")
    failures = 0
    pattern = sys.argv[2] if len(sys.argv) > 2 else ""
    for case in (c for c in hostile_cases() if pattern in c.name):
        result, problems = run_case(case, out / case.name)
        failures += bool(problems)
        print(
            f"{'FAIL' if problems else 'ok  '} {case.name:45} exit {result.code} {result.seconds:5.1f}s "
            f"{'; '.join(problems)[:300] if problems else (result.error_lines or [''])[0][:160]}"
        )
    sys.exit(1 if failures else 0)
