"""Fuzz target for the reader: mutated bytes of valid SEG files -> ``reader.read_segmentation``.

The only acceptable outcomes are a successful read or a :class:`LabelmapSegError` whose
message is a clear sentence (see ``corruptions.message_problems``); any other exception is
a finding. With atheris (coverage-guided libFuzzer):

    python Testing/fuzz_reader.py -max_total_time=600          # long, on demand
    python Testing/fuzz_reader.py CORPUS_DIR -runs=100000      # keep and grow a corpus

Without a corpus directory the seeds (small valid SEG files: ours in every transfer
syntax, dcmqi's and highdicom's LABELMAP samples) are written to a temporary folder.
The test suite runs a short slice of this (test_robustness.py) and, when atheris is not
installed, a hypothesis-driven byte-mutation fuzz of the same target.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "DICOMLabelmapSeg")]

from corruptions import message_problems, write_seeds  # noqa: E402

#: libFuzzer options used when the caller gives none of them.
DEFAULT_OPTIONS = ("-timeout=10", "-rss_limit_mb=3072", "-max_len=65536")


class UnclearErrorMessage(AssertionError):
    """A LabelmapSegError whose message is not a clear sentence for a user."""


def check_one_input(data: bytes, scratch: Path) -> None:
    """Write ``data`` to ``scratch`` and read it; raise anything but a clear LabelmapSegError."""
    from DICOMLabelmapSegLib import LabelmapSegError
    from DICOMLabelmapSegLib.dicom import reader

    scratch.write_bytes(data)
    try:
        reader.read_segmentation(scratch)
    except LabelmapSegError as error:
        problems = message_problems(str(error))
        if problems:
            shown = str(error) if len(str(error)) <= 400 else f"{str(error)[:400]}... ({len(str(error))} characters)"
            raise UnclearErrorMessage(f"{type(error).__name__}: {shown!r}: {'; '.join(problems)}") from error


def main(argv: list[str]) -> None:
    """Run atheris on the reader (libFuzzer arguments in ``argv``)."""
    import atheris

    with atheris.instrument_imports(include=["DICOMLabelmapSegLib", "pydicom"]):
        import pydicom  # noqa: F401
        from DICOMLabelmapSegLib.dicom import reader  # noqa: F401

    import warnings

    warnings.simplefilter("ignore")
    # libFuzzer ends the process with exit(): put scratch files where the caller (or the OS) cleans up.
    scratch_dir = Path(os.environ.get("FUZZ_SCRATCH_DIR") or tempfile.mkdtemp(prefix="fuzz-reader-"))
    scratch_dir.mkdir(parents=True, exist_ok=True)
    scratch = scratch_dir / "input.dcm"
    args = [argv[0], *argv[1:]]
    if not any(not a.startswith("-") for a in argv[1:]):
        corpus = scratch_dir / "corpus"
        corpus.mkdir(exist_ok=True)
        for label, seed in write_seeds(scratch_dir / "seeds").items():
            shutil.copy(seed, corpus / f"{label}.dcm")  # only the seeds: libFuzzer reads folders recursively
        args.append(str(corpus))
    for option in DEFAULT_OPTIONS:
        if not any(a.startswith(option.split("=")[0] + "=") for a in args):
            args.insert(1, option)

    def test_one_input(data: bytes) -> None:
        check_one_input(data, scratch)

    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
