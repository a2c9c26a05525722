"""The ``dicom-labelmap-seg`` command: DICOM LABELMAP Segmentations from and to files, headless.

Subcommands, one module each in this folder (``SUBCOMMAND_MODULES``): ``export`` (label map or
.seg.nrrd + DICOM series -> SEG), ``import`` (SEG -> .seg.nrrd / NIfTI), ``info`` (what a SEG
holds), ``convert`` (any SEG -> LABELMAP SEG), ``send`` (to a PACS), ``batch`` (many cases from a
manifest), ``check`` (conformance). A subcommand module has ``add_parser(subparsers, common)`` and
``run(args) -> int``; a new subcommand is a new module plus its name in ``SUBCOMMAND_MODULES``.
Cases run in parallel (``--jobs``); one failing case does not stop the others.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
import warnings
from collections.abc import Sequence
from typing import Any

from .. import __version__
from ..interrupts import Terminated, signals_as_interrupts
from .batch import CaseResult, ExportCase, ImportCase, Interrupted, exit_code, interrupted_line, run_case, run_cases
from .common import (
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    PROGRAM,
    classify_error,
    default_jobs,
    positive_int,
)
from .info import format_description
from .report import Reporter
from .text import printable

__all__ = [
    "EXIT_FAILED", "EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "PROGRAM", "CaseResult",
    "ExportCase", "ImportCase", "Reporter", "build_parser", "exit_code", "format_description", "main",
    "run_case", "run_cases",
]

logger = logging.getLogger(__name__)

#: Subcommand modules of this package, in --help order (module name; the command is its NAME).
SUBCOMMAND_MODULES = ("export", "importcmd", "convert", "info", "check", "send", "batch")

MAIN_EPILOG = (
    """\
examples:
  # TotalSegmentator output on the CT it was computed from -> one LABELMAP SEG
  dicom-labelmap-seg export seg.nii.gz --reference ct_dicom/ -o out/ \\
      --labels totalsegmentator_total_classes.json

  # a folder of TotalSegmentator masks (liver.nii.gz, spleen.nii.gz, ...) -> SEG
  dicom-labelmap-seg export masks/ --reference ct_dicom/ -o out/ --labels totalsegmentator_total_classes.json

  # a 3D Slicer segmentation -> SEG (RLE, readable by almost every viewer)
  dicom-labelmap-seg export Segmentation.seg.nrrd --reference ct_dicom/ -o out/ --syntax rle

  # BINARY/FRACTIONAL SEGs (e.g. a whole collection) -> LABELMAP SEGs, all cores, resumable
  dicom-labelmap-seg convert segs/ -o labelmaps/ --report report.jsonl

  # SEG -> 3D Slicer segmentation, or NIfTI label map + JSON label table
  dicom-labelmap-seg import out/ -o Segmentation.seg.nrrd
  dicom-labelmap-seg import out/ -o labels.nii.gz

  # what a SEG holds (JSON for scripts)
  dicom-labelmap-seg info out/ --json

  # to a PACS (DICOMweb STOW-RS or DIMSE C-STORE)
  dicom-labelmap-seg send out/ --to dicomweb+http://localhost:8042/dicom-web
  dicom-labelmap-seg send out/ --to dimse://ORTHANC@localhost:4242 --fallback binary

  # many cases, all cores
  dicom-labelmap-seg batch cases.csv --jobs 8

"""
    + EXIT_CODES_HELP
)


def _subcommand_modules() -> list[Any]:
    modules = []
    for name in SUBCOMMAND_MODULES:
        try:
            modules.append(importlib.import_module(f"{__package__}.{name}"))
        except ModuleNotFoundError as error:
            if error.name != f"{__package__}.{name}":
                raise
    return modules


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``dicom-labelmap-seg`` (all subcommands)."""
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description=(
            "Convert segmentations to and from DICOM LABELMAP Segmentation objects (Label Map Segmentation "
            "Storage, SOP Class 1.2.840.10008.5.1.4.1.1.66.7): one label value per voxel, every segment with "
            "its name, color and coded meaning, losslessly."
        ),
        epilog=MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("general options")
    group.add_argument(
        "-j", "--jobs", type=positive_int, default=default_jobs(),
        help="Number of cases processed in parallel (worker processes). One case uses one process.",
    )
    group.add_argument("-q", "--quiet", action="store_true", help="No progress and no summary; errors are still shown.")
    group.add_argument("--debug", action="store_true", help="Show Python tracebacks and debug logging for errors.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _subcommand_modules():
        sub = module.add_parser(commands, [common])
        sub.set_defaults(run=module.run, parser=sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (see ``--help``)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse: --help/--version (0) or usage errors (2)
        return int(exit_.code) if isinstance(exit_.code, int) else EXIT_USAGE
    library, handler, previous_level = _configure_logging(args.quiet, args.debug)
    try:
        with warnings.catch_warnings(), signals_as_interrupts():  # SIGTERM/SIGHUP clean up like Ctrl-C
            warnings.showwarning = _warning_to_log  # pydicom/numpy/our warnings: one line, no file:line
            return _run(args)
    finally:
        library.removeHandler(handler)
        library.setLevel(previous_level)


def _warning_to_log(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    """``warnings.showwarning`` for the command line: the warning goes through our logging (stderr handler)."""
    logging.getLogger("DICOMLabelmapSegLib.warnings").warning("%s", " ".join(str(message).split()))


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.run(args))
    except Interrupted as error:
        sys.stderr.write(interrupted_line(error) + "\n")
        cause = error.__context__  # Terminated (SIGTERM/SIGHUP): exit 128 + N like a shell, Ctrl-C: 130
        return cause.exit_code if isinstance(cause, Terminated) else EXIT_INTERRUPTED
    except Terminated as error:  # SIGTERM/SIGHUP: outputs were discarded like on Ctrl-C
        sys.stderr.write(f"{PROGRAM}: {error}; nothing was left half-written\n")
        return error.exit_code
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROGRAM}: interrupted\n")
        return EXIT_INTERRUPTED
    except SystemExit as exit_:  # parser.error() inside a command
        return int(exit_.code) if isinstance(exit_.code, int) else EXIT_USAGE
    except Exception as error:  # noqa: BLE001 - classified: bad input is exit 1, a bug exit 3
        kind, message = classify_error(error)
        if kind == "internal":
            sys.stderr.write(f"{PROGRAM}: internal error: {message.removeprefix('unexpected ')}\n")
        else:
            sys.stderr.write(f"{PROGRAM}: error: {message}\n")
        if args.debug:
            traceback.print_exc()
        return EXIT_INTERNAL if kind == "internal" else EXIT_FAILED


class _StderrHandler(logging.Handler):
    """Log records as ``dicom-labelmap-seg: warning: ...`` on the current ``sys.stderr``."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(f"{PROGRAM}: {record.levelname.lower()}: {printable(record.getMessage())}\n")
        except Exception:  # noqa: BLE001 - logging must never break the command
            self.handleError(record)


def _configure_logging(quiet: bool, debug: bool) -> tuple[logging.Logger, logging.Handler, int]:
    """Send the library's warnings (or everything with --debug, only errors with --quiet) to stderr."""
    level = logging.DEBUG if debug else logging.ERROR if quiet else logging.WARNING
    library = logging.getLogger("DICOMLabelmapSegLib")
    handler = _StderrHandler(level)
    previous_level = library.level
    library.setLevel(level)
    library.addHandler(handler)
    return library, handler, previous_level


if __name__ == "__main__":
    sys.exit(main())
