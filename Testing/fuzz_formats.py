"""Fuzz targets for the file-format readers: NRRD (attached and detached), NIfTI, label tables.

The only acceptable outcomes are a successful read or a :class:`LabelmapSegError` whose
message is a clear sentence (``corruptions.message_problems``); any other exception is a
finding. With atheris (coverage-guided libFuzzer), one target per run:

    python Testing/fuzz_formats.py nrrd -max_total_time=300
    python Testing/fuzz_formats.py nifti -max_total_time=300
    python Testing/fuzz_formats.py labeltable -max_total_time=300

``make fuzz`` runs the reader's target (fuzz_reader.py) and these three. The seeds are small
valid files written by :func:`write_seeds`. The test suite runs a short hypothesis-driven slice
of :func:`check_one_input` for each target (test_hostile.py).
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [p for p in (str(HERE), str(HERE.parent / "DICOMLabelmapSeg")) if p not in sys.path]

from corruptions import message_problems  # noqa: E402

#: The targets and the file name each input is written to.
TARGETS = {"nrrd": "input.nrrd", "nifti": "input.nii.gz", "labeltable": "input.json"}
DEFAULT_OPTIONS = ("-timeout=10", "-rss_limit_mb=3072", "-max_len=16384")


class UnclearErrorMessage(AssertionError):
    """A LabelmapSegError whose message is not a clear sentence for a user."""


def write_seeds(target: str, folder: Path) -> list[Path]:
    """Small valid inputs for ``target`` in ``folder``."""
    import numpy as np
    from DICOMLabelmapSegLib.formats.fileio import write_nifti, write_seg_nrrd
    from DICOMLabelmapSegLib.formats.labeltable import write_label_table
    from synthetic import make_segmentation

    folder.mkdir(parents=True, exist_ok=True)
    from DICOMLabelmapSegLib.model import Geometry
    from synthetic import make_affine

    small = make_segmentation(Geometry((3, 5, 6), make_affine(), None), layers=[[1, 2], [3]], seed=5)
    if target == "nrrd":
        seeds = [write_seg_nrrd(small, folder / "seed.seg.nrrd")]
        raw = np.arange(24, dtype=np.uint8).reshape(2, 3, 4) % 3
        header = (
            "NRRD0004\ntype: uint8\ndimension: 3\nspace: left-posterior-superior\nsizes: 4 3 2\n"
            "space directions: (1,0,0) (0,1,0) (0,0,2)\nkinds: domain domain domain\nencoding: gzip\n"
            "space origin: (0,0,0)\n\n"
        )
        (folder / "plain.nrrd").write_bytes(header.encode() + gzip.compress(raw.tobytes()))
        seeds.append(folder / "plain.nrrd")
        return seeds
    if target == "nifti":
        return [write_nifti(small, folder / "seed.nii.gz", sidecar=False)[0]]
    if target == "labeltable":
        path = write_label_table([layer.segments for layer in small.layers], folder / "seed.json")
        (folder / "map.json").write_text(json.dumps({"1": "liver", "2": {"name": "spleen", "color": "#ff0000"}}))
        return [path, folder / "map.json"]
    raise ValueError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")


def check_one_input(target: str, data: bytes, scratch: Path) -> None:
    """Write ``data`` as the target's input in ``scratch`` and read it; raise anything but a clear error."""
    from DICOMLabelmapSegLib import LabelmapSegError
    from DICOMLabelmapSegLib.formats.fileio import read_segmentation_file
    from DICOMLabelmapSegLib.formats.labeltable import read_label_table

    path = scratch / TARGETS[target]
    path.write_bytes(data)
    try:
        if target == "labeltable":
            read_label_table(path)
        else:
            read_segmentation_file(path)
    except LabelmapSegError as error:
        problems = message_problems(str(error))
        if problems:
            raise UnclearErrorMessage(f"{type(error).__name__}: {str(error)[:400]!r}: {'; '.join(problems)}") from error


def main(argv: list[str]) -> None:
    """Run atheris on one target: ``fuzz_formats.py TARGET [libFuzzer options] [CORPUS_DIR]``."""
    import atheris

    if len(argv) < 2 or argv[1] not in TARGETS:
        sys.exit(f"usage: {argv[0]} {{{','.join(TARGETS)}}} [libFuzzer options] [CORPUS_DIR]")
    target = argv[1]
    with atheris.instrument_imports(include=["DICOMLabelmapSegLib", "nibabel"]):
        from DICOMLabelmapSegLib.formats import fileio, labeltable  # noqa: F401

    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    scratch = Path(os.environ.get("FUZZ_SCRATCH_DIR") or tempfile.mkdtemp(prefix=f"fuzz-{target}-"))
    scratch.mkdir(parents=True, exist_ok=True)
    args = [argv[0], *argv[2:]]
    if not any(not a.startswith("-") for a in argv[2:]):
        corpus = scratch / "corpus"
        write_seeds(target, corpus)
        args.append(str(corpus))
    for option in DEFAULT_OPTIONS:
        if not any(a.startswith(option.split("=")[0] + "=") for a in args):
            args.insert(1, option)
    work = scratch / "work"
    work.mkdir(exist_ok=True)

    def test_one_input(data: bytes) -> None:
        check_one_input(target, data, work)

    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


def check_files(target: str, paths: list[str]) -> int:
    """Check saved inputs (``--check TARGET FILE...``): one JSON line per finding; the number of findings."""
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    findings = 0
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{target}-") as scratch:
        for path in paths:
            try:
                check_one_input(target, Path(path).read_bytes(), Path(scratch))
            except Exception as error:  # noqa: BLE001 - every other exception is a finding
                findings += 1
                print(json.dumps({"input": path, "error": f"{type(error).__name__}: {str(error)[:300]}"}), flush=True)
    return findings


if __name__ == "__main__":
    if sys.argv[1:2] == ["--check"]:
        sys.exit(1 if check_files(sys.argv[2], sys.argv[3:]) else 0)
    main(sys.argv)
