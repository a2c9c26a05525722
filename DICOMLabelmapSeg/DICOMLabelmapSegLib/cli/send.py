"""``send``: SEG files to a PACS (DICOMweb STOW-RS or DIMSE C-STORE), aware of what the receiver accepts."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from ..errors import LabelmapSegError
from .common import EXIT_OK, PROGRAM, Formatter

NAME = "send"


def add_parser(subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
    text = "Send DICOM files (e.g. a LABELMAP SEG series) to a PACS by DICOMweb STOW-RS or DIMSE C-STORE."
    parser = subparsers.add_parser(
        NAME, parents=list(parents), help=text, formatter_class=Formatter,
        description=text + " The receiver is asked first what it accepts: a refused transfer syntax is replaced by "
        "an uncompressed one (lossless); a refused LABELMAP SOP Class fails unless --fallback binary. Needs the "
        "[pacs] extra.",
    )
    parser.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR", help="DICOM files or folders (recursive).")
    parser.add_argument("--to", required=True, metavar="URL",
                        help="dicomweb+http://HOST:PORT/PATH (STOW-RS) or dimse://AET@HOST:PORT (C-STORE).")
    parser.add_argument("--fallback", choices=["none", "binary"], default="none",
                        help="If LABELMAP is refused: 'binary' sends a BINARY SEG of the same segments instead.")
    return parser


def run(args: argparse.Namespace) -> int:
    from ..pacs import send_files
    from .convert import expand_inputs

    files = [str(p) for p in expand_inputs([str(p) for p in args.inputs])]
    if not files:
        raise LabelmapSegError(f"No files were found in {', '.join(map(str, args.inputs))}.")
    report = send_files(files, args.to, fallback=None if args.fallback == "none" else args.fallback)
    for path, how in report.sent:
        sys.stdout.write(f"{path}\t{how}\n")
    if not args.quiet:
        sys.stderr.write(f"{PROGRAM}: {report.summary()}\n")
    return EXIT_OK
