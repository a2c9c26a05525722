"""``import``: DICOM SEG file(s) -> a 3D Slicer .seg.nrrd, or a NIfTI label map with its JSON label table."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import LabelmapSegError
from ..formats.registry import WRITABLE_SUFFIXES
from .common import Formatter, case_name, positive_int, unique_names

NAME = "import"

OUTPUT_SUFFIXES = WRITABLE_SUFFIXES


def add_parser(subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
    from .main import MAIN_EPILOG

    text = "Read DICOM SEG file(s) and write a 3D Slicer .seg.nrrd or a NIfTI label map with a label table."
    parser = subparsers.add_parser(
        NAME, parents=list(parents), help=text, epilog=MAIN_EPILOG, formatter_class=Formatter,
        description=text + " LABELMAP, BINARY and FRACTIONAL SEGs are read; overlapping segments become separate "
        "layers.",
    )
    parser.add_argument("inputs", nargs="+", metavar="SEG_FILE_OR_DIR",
                        help="SEG files or folders (searched recursively). With a file name as -o they must hold "
                        "one series.")
    parser.add_argument(
        "-o", "--output", required=True, metavar="OUT",
        help="Output file: NAME.seg.nrrd (3D Slicer; several layers become a 4D volume) or NAME.nii.gz "
        "(NIfTI label map, 4D if several layers, plus NAME.json label table with names, colors and "
        "terminology). An existing folder or a name ending in '/' writes one file per input and series.",
    )
    add_import_options(parser)
    return parser


def fractional_threshold(text: str) -> float:
    """argparse type: a threshold in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not 0.0 < value <= 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text} is not in (0, 1]: a voxel belongs to a segment when its "
                                         "fraction is at least T")
    return value


def add_import_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("import options")
    group.add_argument("--format", default="seg.nrrd", choices=["seg.nrrd", "nii.gz", "nii"],
                       help="File type written when the output is a folder.")
    group.add_argument("--threads", type=positive_int, default=1, metavar="N",
                       help="Frame decoding threads per case (separate from --jobs, the parallel cases).")
    group.add_argument("--fractional-threshold", type=fractional_threshold, default=0.5, metavar="T",
                       help="FRACTIONAL SEGs: a voxel belongs to a segment when its fraction is at least T (0-1].")
    group.add_argument("--max-memory", type=memory_size, default=None, metavar="SIZE",
                       help="Memory one case may allocate, e.g. 8G or 500M (default: 75%% of what is available). "
                            "Raise it for really large segmentations; damaged headers are refused below it.")
    group.add_argument("--max-slices", type=positive_int, default=None, metavar="N",
                       help="Slices the grid may have (default: max(10000, 100 x the slices with frames)), so that "
                            "a few frames millions of slices apart (a damaged position) are refused.")


def memory_size(text: str) -> int:
    """argparse type: bytes, with an optional K/M/G/T suffix (powers of 1024)."""
    units = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    number, unit = text.strip().upper().rstrip("B"), ""
    if number and number[-1] in units:
        number, unit = number[:-1], number[-1]
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a size such as 8G or 500M") from None
    if not 0 < value < 2**63:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"'{text}' must be a positive size")
    return int(value)


def is_directory_target(output: str) -> bool:
    """True for an existing folder, a name ending in '/', or a name without any extension."""
    if output.endswith(("/", os.sep)) or Path(output).is_dir():
        return True
    return not output.lower().endswith(OUTPUT_SUFFIXES) and not Path(output).suffix


def run(args: argparse.Namespace) -> int:
    from .batch import ImportCase, finish, run_cases
    from .report import Reporter

    inputs = [str(path) for path in args.inputs]
    output = str(args.output)
    output_is_dir = is_directory_target(output)
    if not output_is_dir and not output.lower().endswith(OUTPUT_SUFFIXES):
        args.parser.error(
            f"-o {output}: unknown file type; name the output NAME.seg.nrrd, NAME.nii.gz or NAME.nii, "
            "or give a folder (ending in '/')"
        )
    if not output_is_dir:
        cases = [ImportCase(name=case_name(inputs[0]), inputs=tuple(inputs), output=output,
                            fractional_threshold=args.fractional_threshold, workers=args.threads,
                            max_bytes=args.max_memory, max_slices=args.max_slices)]
    else:
        cases = [
            ImportCase(name=name, inputs=(input_path,), output=output, output_is_dir=True, output_format=args.format,
                       fractional_threshold=args.fractional_threshold, workers=args.threads,
                       max_bytes=args.max_memory, max_slices=args.max_slices)
            for input_path, name in zip(inputs, unique_names(inputs))
        ]
    reporter = Reporter(quiet=args.quiet, debug=args.debug)
    return finish(run_cases(cases, args.jobs, reporter, args.debug), reporter)


def no_segmentation_message(inputs: Any) -> str:
    """The error when no SEG was found: names the inputs."""
    names = [str(name) for name in inputs]
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return f"No DICOM Segmentation files were found in {shown}."


def run_import_case(case: Any, progress: Any) -> list[Any]:
    from ..dicom.reader import read_segmentations
    from ..formats.fileio import write_segmentation_file

    if progress:
        progress(0.0, "reading")
    sources: Any = case.inputs[0] if len(case.inputs) == 1 else list(case.inputs)
    segmentations = read_segmentations(sources, fractional_threshold=case.fractional_threshold, workers=case.workers,
                                       max_bytes=getattr(case, "max_bytes", None),
                                       max_slices=getattr(case, "max_slices", None))
    if not segmentations:
        raise LabelmapSegError(no_segmentation_message(case.inputs))
    if not case.output_is_dir and len(segmentations) > 1:
        raise LabelmapSegError(
            f"{', '.join(case.inputs)} holds {len(segmentations)} segmentation series; give -o a folder "
            "(e.g. -o out/) to write one file per series, or pass the files of one series."
        )
    written: list[Any] = []
    labels = [series_label(segmentation, index) for index, segmentation in enumerate(segmentations)]
    stems = unique_names([case.name] if len(segmentations) == 1 else [f"{case.name}_{label}" for label in labels])
    for index, (segmentation, stem) in enumerate(zip(segmentations, stems)):
        if progress:
            progress((index + 0.5) / len(segmentations), "writing")
        target = Path(case.output) / f"{stem}.{case.output_format}" if case.output_is_dir else Path(case.output)
        written += write_segmentation_file(segmentation, target)
    return written


def series_label(segmentation: Any, index: int) -> str:
    """'series<Series Number>', or 'series<index + 1>' when the series has no number."""
    info = getattr(segmentation, "series_info", None)
    number = getattr(info, "series_number", None)
    return f"series{number}" if number is not None else f"series{index + 1}"
