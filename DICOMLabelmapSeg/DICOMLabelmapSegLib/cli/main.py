"""The ``dicom-labelmap-seg`` command: DICOM LABELMAP Segmentations from and to files, headless.

Subcommands: ``export`` (label map or .seg.nrrd + DICOM series -> SEG), ``import`` (SEG ->
.seg.nrrd / NIfTI), ``info`` (what a SEG holds), ``batch`` (many cases from a manifest).
Cases run in parallel (``--jobs``); one failing case does not stop the others.
Run ``dicom-labelmap-seg <command> --help`` for details.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import enum
import json
import logging
import math
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, TextIO

from .. import __version__
from ..dicom.syntax import TransferSyntax
from ..errors import LabelmapSegError

logger = logging.getLogger(__name__)

PROGRAM = "dicom-labelmap-seg"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\
exit codes:
  0    success (every case succeeded)
  1    an input could not be processed: invalid or missing file, series that cannot be
       referenced, unsupported SEG, ... (the reason is printed on stderr in one line;
       --debug adds the traceback)
  2    usage error (unknown option, missing argument)
  3    unexpected internal error (please report it with the output of --debug)
  130  interrupted (Ctrl-C)
"""

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

  # SEG -> 3D Slicer segmentation, or NIfTI label map + JSON label table
  dicom-labelmap-seg import out/ -o Segmentation.seg.nrrd
  dicom-labelmap-seg import out/ -o labels.nii.gz

  # what a SEG holds (JSON for scripts)
  dicom-labelmap-seg info out/ --json

  # many cases, all cores
  dicom-labelmap-seg batch cases.csv --jobs 8

"""
    + EXIT_CODES_HELP
)

BATCH_EPILOG = (
    """\
manifest formats (relative paths are relative to the manifest's folder):

  CSV, one case per row, a header row naming the columns:
    command,input,reference,output,labels,syntax
    export,case1/seg.nii.gz,case1/ct,out/case1,,
    export,case2/seg.nii.gz,case2/ct,out/case2,classes.json,rle
    import,out/case1,,case1.seg.nrrd,,

  JSON, a list of objects with the same keys (or {"cases": [...]}):
    [{"command": "export", "input": "case1/seg.nii.gz", "reference": "case1/ct",
      "output": "out/case1"}]

  columns: command (export or import; default: export if 'reference' is set, else import),
  input (file or folder; several separated by ';'), reference (export only), output,
  and optionally labels, syntax, palette (true/false), series_description,
  series_number, fractional_threshold. Empty cells take the value of the matching
  command-line option given to 'batch' (e.g. --syntax rle applies to every row without one).

example:
  dicom-labelmap-seg batch cases.csv --jobs 4 --syntax jpeg-ls

"""
    + EXIT_CODES_HELP
)


# =========================================================================== cases and results


@dataclasses.dataclass(frozen=True)
class ExportCase:
    """One ``export`` unit of work (picklable, sent to worker processes)."""

    name: str
    inputs: tuple[str, ...]
    reference: tuple[str, ...]
    output_dir: str
    labels: str | None = None
    terminology_json: tuple[str, ...] = ()
    syntax: str = TransferSyntax.JPEG_LS.value
    palette: bool = False
    series_description: str | None = None
    series_number: int | None = None


@dataclasses.dataclass(frozen=True)
class ImportCase:
    """One ``import`` unit of work: SEG files of one or more series -> segmentation file(s)."""

    name: str
    inputs: tuple[str, ...]
    output: str
    output_is_dir: bool = False
    output_format: str = "seg.nrrd"
    fractional_threshold: float = 0.5
    workers: int = 0


@dataclasses.dataclass(frozen=True)
class CaseResult:
    """What became of one case."""

    name: str
    outputs: tuple[str, ...] = ()
    error: str | None = None
    error_kind: str | None = None  # "input" (exit 1) or "internal" (exit 3)
    details: str | None = None  # traceback, shown with --debug
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


Progress = Callable[[float, str], None]


def run_case(case: ExportCase | ImportCase, debug: bool = False, progress: Progress | None = None) -> CaseResult:
    """Run one case, turning every exception into a :class:`CaseResult` (safe in a worker process)."""
    start = time.monotonic()
    try:
        if isinstance(case, ExportCase):
            outputs = _export(case, progress)
        else:
            outputs = _import(case, progress)
        return CaseResult(case.name, tuple(str(p) for p in outputs), seconds=time.monotonic() - start)
    except (LabelmapSegError, OSError, ValueError) as error:
        kind = "input" if isinstance(error, (LabelmapSegError, OSError)) else "internal"
        return CaseResult(
            case.name,
            error=_one_line(_describe_error(error)),
            error_kind=kind,
            details=traceback.format_exc() if debug else None,
            seconds=time.monotonic() - start,
        )
    except Exception as error:  # noqa: BLE001 - reported as an internal error, never a traceback by default
        return CaseResult(
            case.name,
            error=_one_line(f"unexpected {type(error).__name__}: {error}"),
            error_kind="internal",
            details=traceback.format_exc() if debug else None,
            seconds=time.monotonic() - start,
        )


def _export(case: ExportCase, progress: Progress | None) -> list[Any]:
    from ..dicom.source import read_source_series
    from ..dicom.options import ExportOptions
    from ..dicom.writer import write_labelmap_seg
    from ..formats.fileio import read_segmentation_file
    from ..formats.labeltable import apply_terminology_lookup, read_label_table, terminology_lookup_from_slicer_json

    if len(case.inputs) != 1:
        raise LabelmapSegError(f"{case.name}: export takes one segmentation file per case, got {len(case.inputs)}.")
    table = read_label_table(case.labels) if case.labels else None
    if table is not None and case.terminology_json:
        table = apply_terminology_lookup(table, terminology_lookup_from_slicer_json(case.terminology_json))
    segmentation = read_segmentation_file(case.inputs[0], table)
    reference: Any = case.reference[0] if len(case.reference) == 1 else list(case.reference)
    source_images = read_source_series(reference)
    option_values: dict[str, Any] = {
        "transfer_syntax": TransferSyntax.parse(case.syntax),
        "palette_color": case.palette,
    }
    if case.series_description is not None:
        option_values["series_description"] = case.series_description
    if case.series_number is not None:
        option_values["series_number"] = case.series_number
    options = ExportOptions(**option_values)
    return list(write_labelmap_seg(segmentation, source_images, case.output_dir, options, progress=progress))


def _import(case: ImportCase, progress: Progress | None) -> list[Any]:
    from ..dicom.reader import read_segmentations
    from ..formats.fileio import write_segmentation_file

    if progress:
        progress(0.0, "reading")
    sources: Any = case.inputs[0] if len(case.inputs) == 1 else list(case.inputs)
    segmentations = read_segmentations(sources, fractional_threshold=case.fractional_threshold, workers=case.workers)
    if not segmentations:
        raise LabelmapSegError(f"No DICOM Segmentation was found in {', '.join(case.inputs)}.")
    if not case.output_is_dir and len(segmentations) > 1:
        raise LabelmapSegError(
            f"{', '.join(case.inputs)} holds {len(segmentations)} segmentation series; give -o a folder "
            "(e.g. -o out/) to write one file per series, or pass the files of one series."
        )
    written: list[Any] = []
    labels = [_series_label(segmentation, index) for index, segmentation in enumerate(segmentations)]
    stems = _unique_names([case.name] if len(segmentations) == 1 else [f"{case.name}_{label}" for label in labels])
    for index, (segmentation, stem) in enumerate(zip(segmentations, stems)):
        if progress:
            progress((index + 0.5) / len(segmentations), "writing")
        if case.output_is_dir:
            target = Path(case.output) / f"{stem}.{case.output_format}"
        else:
            target = Path(case.output)
        written += write_segmentation_file(segmentation, target)
    return written


def _series_label(segmentation: Any, index: int) -> str:
    info = getattr(segmentation, "series_info", None)
    number = getattr(info, "series_number", None)
    return f"series{number}" if number is not None else f"series{index + 1}"


def run_cases(
    cases: Sequence[ExportCase | ImportCase], jobs: int, reporter: Reporter, debug: bool = False
) -> list[CaseResult]:
    """Run cases, in parallel over ``jobs`` processes when there are several; keep input order."""
    if len(cases) == 1 or jobs <= 1:
        results = []
        for number, case in enumerate(cases, 1):
            progress = reporter.case_progress(case.name) if len(cases) == 1 else None
            result = run_case(case, debug, progress)
            reporter.case_done(number, len(cases), result)
            results.append(result)
        return results
    results_by_index: dict[int, CaseResult] = {}
    with ProcessPoolExecutor(max_workers=min(jobs, len(cases))) as pool:
        futures = {pool.submit(run_case, case, debug): index for index, case in enumerate(cases)}
        for done, future in enumerate(as_completed(futures), 1):
            index = futures[future]
            try:
                result = future.result()
            except BrokenProcessPool:
                result = CaseResult(
                    cases[index].name,
                    error="the worker process died (out of memory?); retry with fewer --jobs",
                    error_kind="internal",
                )
            results_by_index[index] = result
            reporter.case_done(done, len(cases), result)
    return [results_by_index[index] for index in range(len(cases))]


# =========================================================================== progress and summary


class Reporter:
    """Progress on stderr (only on a terminal, never with --quiet), errors and the summary."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False, debug: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.debug = debug
        self.interactive = not quiet and bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_draw = 0.0
        self._drawn = 0  # length of the progress line on screen

    def case_progress(self, name: str) -> Progress | None:
        """A ``progress(fraction, message)`` callback drawing one updating line, or None."""
        if not self.interactive:
            return None

        def progress(fraction: float, message: str) -> None:
            now = time.monotonic()
            if fraction < 1.0 and now - self._last_draw < 0.1:
                return
            self._last_draw = now
            width = max(20, shutil.get_terminal_size((80, 24)).columns - 1)
            text = f"{name}: {max(0.0, min(1.0, fraction)) * 100:3.0f}% {message}"[:width]
            self.stream.write("\r" + text.ljust(self._drawn))
            self._drawn = len(text)
            self.stream.flush()

        return progress

    def case_done(self, number: int, total: int, result: CaseResult) -> None:
        """Report a finished case: errors always, successes only on a terminal."""
        if self.interactive and self._drawn:
            self.stream.write("\r" + " " * self._drawn + "\r")
            self._drawn = 0
        if not result.ok:
            prefix = f"[{number}/{total}] " if total > 1 else ""
            self.stream.write(f"{PROGRAM}: error: {prefix}{result.name}: {result.error}\n")
            if self.debug and result.details:
                self.stream.write(result.details)
        elif self.interactive and total > 1:
            self.stream.write(f"[{number}/{total}] {result.name}: ok ({result.seconds:.1f} s)\n")
        self.stream.flush()

    def summary(self, results: Sequence[CaseResult]) -> None:
        """One line (plus the failed cases) at the end of a multi-case run."""
        if len(results) < 2 or self.quiet:
            return
        failed = [result for result in results if not result.ok]
        seconds = sum(result.seconds for result in results)
        self.stream.write(
            f"{PROGRAM}: {len(results) - len(failed)} of {len(results)} cases succeeded, "
            f"{len(failed)} failed ({seconds:.1f} s of work)\n"
        )
        for result in failed:
            self.stream.write(f"  failed: {result.name}: {result.error}\n")
        self.stream.flush()


def exit_code(results: Iterable[CaseResult]) -> int:
    """0 if all succeeded, 3 if any failed unexpectedly, else 1."""
    kinds = {result.error_kind for result in results if not result.ok}
    if not kinds:
        return EXIT_OK
    return EXIT_INTERNAL if "internal" in kinds else EXIT_FAILED


# =========================================================================== commands


def _command_export(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[ExportCase]:
    inputs = [str(path) for path in args.inputs]
    references = [str(path) for path in args.reference]
    if len(references) not in (1, len(inputs)):
        parser.error(
            f"give --reference once (one series for all inputs) or once per input ({len(inputs)} times), "
            f"not {len(references)} times"
        )
    names = _unique_names(inputs)
    cases = []
    for index, (input_path, name) in enumerate(zip(inputs, names)):
        reference = references[0] if len(references) == 1 else references[index]
        output_dir = Path(args.output) if len(inputs) == 1 else Path(args.output) / name
        cases.append(
            ExportCase(
                name=name,
                inputs=(input_path,),
                reference=(reference,),
                output_dir=str(output_dir),
                labels=args.labels,
                terminology_json=tuple(args.terminology_json or ()),
                syntax=args.syntax,
                palette=args.palette,
                series_description=args.series_description,
                series_number=args.series_number,
            )
        )
    return cases


def _command_import(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[ImportCase]:
    inputs = [str(path) for path in args.inputs]
    output = str(args.output)
    output_is_dir = _is_directory_target(output)
    if not output_is_dir and not output.lower().endswith(OUTPUT_SUFFIXES):
        parser.error(
            f"-o {output}: unknown file type; name the output NAME.seg.nrrd, NAME.nii.gz or NAME.nii, "
            "or give a folder (ending in '/')"
        )
    if not output_is_dir:
        return [
            ImportCase(
                name=_case_name(inputs[0]),
                inputs=tuple(inputs),
                output=output,
                fractional_threshold=args.fractional_threshold,
                workers=args.jobs,
            )
        ]
    return [
        ImportCase(
            name=name,
            inputs=(input_path,),
            output=output,
            output_is_dir=True,
            output_format=args.format,
            fractional_threshold=args.fractional_threshold,
            workers=args.jobs if len(inputs) == 1 else 1,
        )
        for input_path, name in zip(inputs, _unique_names(inputs))
    ]


def _command_info(args: argparse.Namespace, stdout: TextIO) -> int:
    from ..dicom.reader import describe

    failures = 0
    everything: list[dict[str, Any]] = []
    for source in args.inputs:
        try:
            descriptions = [_description_dict(item) for item in describe(str(source))]
        except (LabelmapSegError, OSError) as error:
            sys.stderr.write(f"{PROGRAM}: error: {source}: {_one_line(_describe_error(error))}\n")
            if args.debug:
                traceback.print_exc()
            failures += 1
            continue
        for description in descriptions:
            description.setdefault("source", str(source))
        everything += descriptions
    if args.json:
        json.dump(everything, stdout, indent=2, ensure_ascii=False, default=str)
        stdout.write("\n")
    else:
        for description in everything:
            stdout.write(format_description(description) + "\n")
    return EXIT_FAILED if failures else EXIT_OK


def _command_batch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[ExportCase | ImportCase]:
    try:
        rows = read_manifest(Path(args.manifest))
    except LabelmapSegError as error:
        raise _ManifestError(str(error)) from None
    base = Path(args.manifest).resolve().parent
    names = _unique_names([row.get("output") or row.get("input") or f"case{i + 1}" for i, row in enumerate(rows)])
    cases: list[ExportCase | ImportCase] = []
    for number, (row, name) in enumerate(zip(rows, names), 1):
        where = f"{args.manifest} case {number}"
        inputs = tuple(str(_resolve(base, part)) for part in _split(row.get("input")))
        if not inputs:
            raise _ManifestError(f"{where}: 'input' is empty.")
        if not row.get("output"):
            raise _ManifestError(f"{where}: 'output' is empty.")
        output = str(_resolve(base, row["output"]))
        command = (row.get("command") or ("export" if row.get("reference") else "import")).strip().lower()
        if command == "export":
            references = tuple(str(_resolve(base, part)) for part in _split(row.get("reference")))
            if not references:
                raise _ManifestError(f"{where}: an export case needs 'reference' (the DICOM series folder).")
            labels = row.get("labels") or args.labels
            syntax = row.get("syntax") or args.syntax
            try:
                syntax = TransferSyntax.parse(syntax).value
            except ValueError as error:
                raise _ManifestError(f"{where}: {error}") from None
            cases.append(
                ExportCase(
                    name=name,
                    inputs=inputs,
                    reference=references,
                    output_dir=output,
                    labels=str(_resolve(base, labels)) if labels else None,
                    terminology_json=tuple(args.terminology_json or ()),
                    syntax=syntax,
                    palette=_boolean(row.get("palette"), args.palette, where),
                    series_description=row.get("series_description") or args.series_description,
                    series_number=_integer(row.get("series_number"), args.series_number, where),
                )
            )
        elif command == "import":
            if not _is_directory_target(output) and not output.lower().endswith(OUTPUT_SUFFIXES):
                raise _ManifestError(f"{where}: output '{row['output']}' is not .seg.nrrd, .nii.gz, .nii or a folder.")
            cases.append(
                ImportCase(
                    name=name,
                    inputs=inputs,
                    output=output,
                    output_is_dir=_is_directory_target(output),
                    output_format=args.format,
                    fractional_threshold=_number(row.get("fractional_threshold"), args.fractional_threshold, where),
                    workers=1,
                )
            )
        else:
            raise _ManifestError(f"{where}: command '{command}' is not 'export' or 'import'.")
    return cases


class _ManifestError(LabelmapSegError, ValueError):
    """The batch manifest cannot be used."""


def read_manifest(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV or JSON batch manifest as dicts of strings (see ``batch --help``)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise _ManifestError(f"Cannot read manifest {path}: {error.strerror or error}") from None
    if path.suffix.lower() == ".json" or text.lstrip().startswith(("[", "{")):
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise _ManifestError(f"Manifest {path} is not valid JSON: {error}") from None
        if isinstance(document, dict):
            document = document.get("cases")
        if not isinstance(document, list) or not all(isinstance(row, dict) for row in document):
            raise _ManifestError(f"Manifest {path}: expected a list of case objects (or {{\"cases\": [...]}}).")
        rows = [{str(k): "" if v is None else str(v) for k, v in row.items()} for row in document]
    else:
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames or "input" not in [name.strip() for name in reader.fieldnames]:
            raise _ManifestError(f"Manifest {path}: the first row must name the columns, including 'input'.")
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
        rows = [row for row in rows if any(row.values())]
    if not rows:
        raise _ManifestError(f"Manifest {path} lists no cases.")
    return rows


# =========================================================================== argument parsing


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's layout and appends '(default: X)' where a default means something."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        meaningful = action.default not in (None, False, argparse.SUPPRESS) and bool(action.option_strings)
        if meaningful and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


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
        "-j",
        "--jobs",
        type=_positive_int,
        default=os.cpu_count() or 1,
        help="Number of cases processed in parallel (worker processes). One case uses one process.",
    )
    group.add_argument("-q", "--quiet", action="store_true", help="No progress and no summary; errors are still shown.")
    group.add_argument("--debug", action="store_true", help="Show Python tracebacks and debug logging for errors.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    export_help = "Write a LABELMAP SEG series from a segmentation file and the DICOM series it was made on."
    export = commands.add_parser(
        "export",
        parents=[common],
        help=export_help,
        description=export_help
        + " The segmentation may use another grid than the series (a NIfTI in RAS axis order, a cropped "
        "volume): the SEG keeps the segmentation's own voxel grid, references the series, and must overlap it "
        "in patient space.",
        epilog=MAIN_EPILOG,
        formatter_class=_Formatter,
    )
    export.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="Segmentation(s): a 3D Slicer .seg.nrrd (names, colors, terminology and layers are kept); a label "
        "map .nii/.nii.gz/.nrrd (4D = one layer per volume) whose labels are explained by --labels; or a folder "
        "of binary masks, one segment per file named after it (TotalSegmentator's default output; with "
        "--labels, names are matched to the table's label values). Several inputs are several cases, written "
        "to OUT_DIR/<input name>/.",
    )
    export.add_argument(
        "-r",
        "--reference",
        action="append",
        required=True,
        metavar="DICOM_DIR",
        help="Folder (or file) of the DICOM image series the segmentation belongs to. Give it once for all "
        "inputs, or once per input in the same order.",
    )
    export.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="Folder for the SEG file(s).")
    _add_export_options(export)

    import_help = "Read DICOM SEG file(s) and write a 3D Slicer .seg.nrrd or a NIfTI label map with a label table."
    import_ = commands.add_parser(
        "import",
        parents=[common],
        help=import_help,
        description=import_help
        + " LABELMAP, BINARY and FRACTIONAL SEGs are read; overlapping segments become separate layers.",
        epilog=MAIN_EPILOG,
        formatter_class=_Formatter,
    )
    import_.add_argument(
        "inputs",
        nargs="+",
        metavar="SEG_FILE_OR_DIR",
        help="SEG files or folders (searched recursively). With a file name as -o they must hold one series.",
    )
    import_.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="Output file: NAME.seg.nrrd (3D Slicer; several layers become a 4D volume) or NAME.nii.gz "
        "(NIfTI label map, 4D if several layers, plus NAME.json label table with names, colors and "
        "terminology). An existing folder or a name ending in '/' writes one file per input and series.",
    )
    _add_import_options(import_)

    info_help = "Describe DICOM SEG file(s): type, transfer syntax, segments, layers, geometry, references."
    info = commands.add_parser(
        "info",
        parents=[common],
        help=info_help,
        description=info_help + " Reads headers only (no pixel data is decoded).",
        epilog=MAIN_EPILOG,
        formatter_class=_Formatter,
    )
    info.add_argument("inputs", nargs="+", metavar="SEG_FILE_OR_DIR", help="SEG files or folders.")
    info.add_argument("--json", action="store_true", help="Print JSON (a list, one object per series) for scripts.")

    batch_help = "Run many export/import cases listed in a CSV or JSON manifest, in parallel."
    batch = commands.add_parser(
        "batch",
        parents=[common],
        help=batch_help,
        description=batch_help + " A failing case is reported and the others continue; a summary ends the run.",
        epilog=BATCH_EPILOG,
        formatter_class=_Formatter,
    )
    batch.add_argument("manifest", metavar="MANIFEST", help="CSV or JSON file listing the cases (see below).")
    _add_export_options(batch)
    _add_import_options(batch)
    return parser


def _add_export_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("export options")
    syntax_help = " ".join(f"'{s.value}': {s.explanation}" for s in TransferSyntax)
    group.add_argument(
        "--syntax",
        default=TransferSyntax.JPEG_LS.value,
        choices=[s.value for s in TransferSyntax],
        help=f"Transfer syntax (compression) of the SEG files. {syntax_help}",
    )
    group.add_argument(
        "--palette",
        action="store_true",
        help="Add a palette color lookup table so that viewers without segmentation support show the "
        "segments in their colors.",
    )
    group.add_argument(
        "--labels",
        metavar="TABLE.json",
        help="Label table for label map inputs: TotalSegmentator's class map {\"1\": \"spleen\", ...}, "
        "{\"1\": {\"name\": ..., \"color\": [r, g, b], \"terminology\": ...}}, a table written by 'import', or "
        "dcmqi segmentation metadata. Without it, labels are named Segment_<label>.",
    )
    group.add_argument(
        "--terminology-json",
        action="append",
        metavar="FILE.term.json",
        help="3D Slicer terminology file(s) (e.g. SegmentationCategoryTypeModifier-SlicerGeneralAnatomy.term.json): "
        "segments of --labels without codes whose names match an entry ('kidney_right' = Kidney, Right) get its "
        "codes and recommended color. Repeatable.",
    )
    group.add_argument(
        "--series-description",
        metavar="TEXT",
        help="Series Description of the SEG series (default: the writer's, 'Segmentation').",
    )
    group.add_argument(
        "--series-number",
        type=int,
        metavar="N",
        help="Series Number of the SEG series (default: the writer's, 300).",
    )


def _add_import_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("import options")
    group.add_argument(
        "--format",
        default="seg.nrrd",
        choices=["seg.nrrd", "nii.gz", "nii"],
        help="File type written when the output is a folder.",
    )
    group.add_argument(
        "--fractional-threshold",
        type=_fraction,
        default=0.5,
        metavar="T",
        help="FRACTIONAL SEGs: a voxel belongs to a segment when its fraction is at least T (0-1).",
    )


def _fraction(text: str) -> float:
    """A number in (0, 1] (NaN, 0, negatives and numbers above 1 would keep everything or nothing)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not (math.isfinite(value) and 0 < value <= 1):
        raise argparse.ArgumentTypeError(f"'{text}' must be greater than 0 and at most 1")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


# =========================================================================== main


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (see ``--help``)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse: --help/--version (0) or usage errors (2)
        return int(exit_.code) if isinstance(exit_.code, int) else EXIT_USAGE
    library, handler, previous_level = _configure_logging(args.quiet, args.debug)
    try:
        return _run(args, parser)
    finally:
        library.removeHandler(handler)
        library.setLevel(previous_level)


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    reporter = Reporter(quiet=args.quiet, debug=args.debug)
    try:
        if args.command == "info":
            return _command_info(args, sys.stdout)
        if args.command == "export":
            cases: list[Any] = _command_export(args, parser)
        elif args.command == "import":
            cases = _command_import(args, parser)
        else:
            cases = _command_batch(args, parser)
        results = run_cases(cases, args.jobs, reporter, debug=args.debug)
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROGRAM}: interrupted\n")
        return EXIT_INTERRUPTED
    except SystemExit as exit_:  # parser.error() inside a command
        return int(exit_.code) if isinstance(exit_.code, int) else EXIT_USAGE
    except (LabelmapSegError, OSError) as error:
        sys.stderr.write(f"{PROGRAM}: error: {_one_line(_describe_error(error))}\n")
        if args.debug:
            traceback.print_exc()
        return EXIT_FAILED
    except Exception as error:  # noqa: BLE001
        sys.stderr.write(f"{PROGRAM}: internal error: {_one_line(f'{type(error).__name__}: {error}')}\n")
        if args.debug:
            traceback.print_exc()
        return EXIT_INTERNAL
    for result in results:
        for output in result.outputs:
            sys.stdout.write(f"{output}\n")
    sys.stdout.flush()
    reporter.summary(results)
    return exit_code(results)


class _StderrHandler(logging.Handler):
    """Log records as ``dicom-labelmap-seg: warning: ...`` on the current ``sys.stderr``."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(f"{PROGRAM}: {record.levelname.lower()}: {record.getMessage()}\n")
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


# =========================================================================== small helpers


def format_description(description: dict[str, Any]) -> str:
    """Human-readable text of one ``info`` result (the dict of ``SeriesDescription.to_dict``)."""
    get = description.get
    title = get("series_description") or "(no series description)"
    number = f" #{get('series_number')}" if get("series_number") is not None else ""
    lines = [f"{get('source', '')}".strip() or "SEG series"]
    lines.append(f"  series:      {title}{number}  {get('series_instance_uid', '')}")
    kind = get("segmentation_type", "?")
    lines.append(f"  type:        {kind}{', palette color' if get('palette_color') else ''}")
    for key, label in (
        ("patient_name", "patient"),
        ("patient_id", "patient id"),
        ("study_instance_uid", "study"),
        ("content_label", "content"),
        ("content_description", "description"),
        ("content_creator_name", "creator"),
    ):
        if get(key):
            lines.append(f"  {label + ':':<12} {get(key)}")
    geometry = get("geometry")
    if geometry:
        shape = " x ".join(str(n) for n in geometry.get("shape", []))
        spacing = " x ".join(f"{v:g}" for v in geometry.get("spacing", []))
        origin = ", ".join(f"{v:g}" for v in geometry.get("origin", []))
        lines.append(f"  grid:        {shape} (slices x rows x columns), spacing {spacing} mm, origin ({origin}) LPS")
        if geometry.get("frame_of_reference_uid"):
            lines.append(f"  frame of reference: {geometry['frame_of_reference_uid']}")
    referenced = get("referenced_series")
    if referenced:
        lines.append(
            f"  references:  series {referenced.get('series_instance_uid')} ({referenced.get('instances', 0)} images)"
        )
    if get("problem"):
        lines.append(f"  NOT READABLE: {get('problem')}")
    rows: list[list[str]] = []
    for index, layer in enumerate(get("layers") or []):
        where = f", {layer['path']}" if layer.get("path") else ""
        lines.append(
            f"  layer {index}:     {layer.get('frames')} frames {layer.get('rows')}x{layer.get('columns')}, "
            f"{layer.get('bits_allocated')} bit, {layer.get('transfer_syntax')}{where}"
        )
        for segment in layer.get("segments") or []:
            meaning = _cell(segment.get("type"))
            if segment.get("type_modifier"):
                meaning += f" ({_cell(segment.get('type_modifier'))})"
            if segment.get("region"):
                meaning += f" in {_cell(segment.get('region'))}"
            algorithm = segment.get("algorithm_type") or ""
            if segment.get("algorithm_name"):
                algorithm += f" {segment['algorithm_name']}"
            rows.append(
                [str(index), str(segment.get("label_value")), str(segment.get("name")), _cell(segment.get("color")),
                 meaning, algorithm]
            )
    if rows:
        header = ["layer", "label", "name", "color", "meaning", "algorithm"]
        widths = [max(len(header[i]), *(len(row[i]) for row in rows)) for i in range(len(header))]
        lines.append(f"  segments ({len(rows)}):")
        for row in [header, *rows]:
            lines.append("    " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("meaning") or value.get("value") or "")
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return "" if value is None else str(value)


def _description_dict(item: Any) -> dict[str, Any]:
    to_dict = getattr(item, "to_dict", None)
    return dict(to_dict()) if callable(to_dict) else dict(_jsonable(item))


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def _describe_error(error: BaseException) -> str:
    if isinstance(error, OSError) and not isinstance(error, LabelmapSegError):
        where = f" {error.filename}" if getattr(error, "filename", None) else ""
        return f"cannot access{where}: {error.strerror or error}"
    return str(error)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _case_name(path: str) -> str:
    name = Path(path.rstrip("/\\")).name or "segmentation"
    for suffix in (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".nhdr", ".dcm"):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def _unique_names(paths: Sequence[str]) -> list[str]:
    names: list[str] = []
    for path in paths:
        name = _case_name(path)
        candidate, number = name, 2
        while candidate in names:
            candidate, number = f"{name}_{number}", number + 1
        names.append(candidate)
    return names


OUTPUT_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nii")


def _is_directory_target(output: str) -> bool:
    """True for an existing folder, a name ending in '/', or a name without any extension."""
    if output.endswith(("/", os.sep)) or Path(output).is_dir():
        return True
    return not output.lower().endswith(OUTPUT_SUFFIXES) and not Path(output).suffix


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(";") if part.strip()]


def _resolve(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _boolean(value: str | None, default: bool, where: str) -> bool:
    if value is None or value.strip() == "":
        return default
    text = value.strip().lower()
    if text in ("1", "true", "yes", "y"):
        return True
    if text in ("0", "false", "no", "n"):
        return False
    raise _ManifestError(f"{where}: '{value}' is not true or false.")


def _integer(value: str | None, default: int | None, where: str) -> int | None:
    if value is None or value.strip() == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise _ManifestError(f"{where}: '{value}' is not a whole number.") from None


def _number(value: str | None, default: float, where: str) -> float:
    if value is None or value.strip() == "":
        return default
    try:
        return float(value)
    except ValueError:
        raise _ManifestError(f"{where}: '{value}' is not a number.") from None


if __name__ == "__main__":
    sys.exit(main())
