"""Units of work (cases), running them in parallel (processes, or a Dask cluster), and the ``batch`` command.

* A case is a small picklable dataclass: :class:`ExportCase`, :class:`ImportCase`, :class:`ConvertCase`.
  :func:`run_case` turns every exception into a :class:`CaseResult` (safe in a worker).
* :func:`run_cases` runs cases over ``jobs`` worker processes (or a Dask scheduler), in dependency
  order: a case whose input lies inside another case's output starts after that case finished.
  Ctrl-C stops the workers, removes the temporary files of the cases that were running and ends
  with one line (exit 130).
* ``batch MANIFEST``: many export/import/convert cases from a CSV or JSON manifest.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import signal
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from ..dicom.syntax import TransferSyntax
from ..errors import LabelmapSegError
from .common import (
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    PROGRAM,
    Formatter,
    classify_error,
    series_number_problem,
    unique_names,
)

NAME = "batch"

Progress = Callable[[float, str], None]

#: Cases a worker process runs before it is replaced by a fresh one (bounds memory that leaks or fragments).
MAX_CASES_PER_WORKER = 64


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
    algorithm_type: str | None = None
    algorithm_name: str | None = None
    overwrite: bool = False
    terminology_map: str | None = None
    send: str | None = None
    fallback: str | None = None

    @property
    def output_paths(self) -> tuple[str, ...]:
        return (self.output_dir,)


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
    max_bytes: int | None = None  # reader sanity bounds (None: the reader's defaults)
    max_slices: int | None = None

    @property
    def output_paths(self) -> tuple[str, ...]:
        return (self.output,)


@dataclasses.dataclass(frozen=True)
class ConvertCase:
    """One ``convert`` unit of work: the files of one SEG series -> one LABELMAP series in ``output_dir``."""

    name: str
    inputs: tuple[str, ...]
    output_dir: str
    settings: Any = None  # app.convert.ConvertSettings (picklable)
    overwrite: bool = False
    resume: bool = True
    send: str | None = None
    fallback: str | None = None

    @property
    def output_paths(self) -> tuple[str, ...]:
        return (self.output_dir,)


Case = ExportCase | ImportCase | ConvertCase


@dataclasses.dataclass(frozen=True)
class CaseResult:
    """What became of one case."""

    name: str
    outputs: tuple[str, ...] = ()
    error: str | None = None
    error_kind: str | None = None  # "input" (exit 1) or "internal" (exit 3)
    details: str | None = None  # traceback, shown with --debug
    seconds: float = 0.0
    skipped: bool = False  # resumed: the output was already complete
    inputs: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # e.g. what was sent where

    @property
    def ok(self) -> bool:
        return self.error is None


def run_case(case: Case, debug: bool = False, progress: Progress | None = None) -> CaseResult:
    """Run one case, turning every exception into a :class:`CaseResult` (safe in a worker process)."""
    start = time.monotonic()
    try:
        notes: list[str] = []
        skipped = False
        if isinstance(case, ExportCase):
            from .export import run_export_case

            outputs = run_export_case(case, progress)
        elif isinstance(case, ImportCase):
            from .importcmd import run_import_case

            outputs = run_import_case(case, progress)
        else:
            from .convert import run_convert_case

            outputs, skipped = run_convert_case(case, progress)
        if not isinstance(case, ImportCase) and case.send:
            from ..pacs import send_files

            notes.append(send_files([str(p) for p in outputs], case.send, fallback=case.fallback).summary())
        return CaseResult(
            case.name, tuple(str(p) for p in outputs), seconds=time.monotonic() - start, skipped=skipped,
            inputs=case.inputs, notes=tuple(notes),
        )
    except Exception as error:  # noqa: BLE001 - classified; never a traceback by default
        kind, message = classify_error(error)
        return CaseResult(
            case.name,
            error=message,
            error_kind=kind,
            details=traceback.format_exc() if debug else None,
            seconds=time.monotonic() - start,
            inputs=case.inputs,
        )


def exit_code(results: Iterable[CaseResult]) -> int:
    """0 if all succeeded, 3 if any failed unexpectedly, else 1."""
    kinds = {result.error_kind for result in results if not result.ok}
    if not kinds:
        return EXIT_OK
    return EXIT_INTERNAL if "internal" in kinds else EXIT_FAILED


# =========================================================================== running


class Interrupted(Exception):
    """Ctrl-C during :func:`run_cases`; carries what was finished."""

    def __init__(self, done: int, total: int, running: int) -> None:
        super().__init__(f"interrupted: {done} of {total} cases finished, {running} stopped")
        self.done, self.total, self.running = done, total, running


def dependencies(cases: Sequence[Case]) -> list[set[int]]:
    """For each case, the indices of earlier-listed or later-listed cases whose output it reads."""
    outputs = [[Path(os.path.abspath(p)) for p in case.output_paths] for case in cases]
    result: list[set[int]] = []
    for index, case in enumerate(cases):
        needs = set()
        for source in (Path(os.path.abspath(p)) for p in case.inputs):
            for other, produced in enumerate(outputs):
                if other != index and any(source == out or out in source.parents for out in produced):
                    needs.add(other)
        result.append(needs)
    return result


def _ignore_interrupts() -> None:
    """Worker initializer: Ctrl-C is handled by the parent, which stops the workers itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_case_in_worker(case: Case, debug: bool) -> CaseResult:
    """:func:`run_case` in a worker process: the parent's SIGTERM unwinds it, discarding its temporaries."""
    from ..interrupts import signals_as_interrupts

    with signals_as_interrupts():
        return run_case(case, debug)


def run_cases(
    cases: Sequence[Case],
    jobs: int,
    reporter: Any,
    debug: bool = False,
    scheduler: str | None = None,
) -> list[CaseResult]:
    """Run cases over ``jobs`` processes (or the Dask ``scheduler``), dependencies first; keep input order.

    Raises :class:`Interrupted` on Ctrl-C after stopping the workers and removing their temporary files.
    """
    needs = dependencies(cases)
    reporter.start(len(cases))
    if scheduler:
        from .cluster import run_on_dask

        results = run_on_dask(cases, needs, scheduler, reporter, debug)
        reporter.finish()
        return results
    results_by_index: dict[int, CaseResult] = {}
    if len(cases) == 1 or jobs <= 1:
        try:
            for index in _in_dependency_order(needs):
                progress = reporter.case_progress(cases[index].name) if len(cases) == 1 else None
                result = _blocked(cases, index, needs, results_by_index) or run_case(cases[index], debug, progress)
                results_by_index[index] = result
                reporter.case_done(len(results_by_index), len(cases), result)
        except KeyboardInterrupt:
            reporter.finish()
            _clean_temporaries([c for i, c in enumerate(cases) if i not in results_by_index])
            raise Interrupted(len(results_by_index), len(cases), 1) from None
        reporter.finish()
        return [results_by_index[index] for index in range(len(cases))]
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(cases)), initializer=_ignore_interrupts,
                               **_max_tasks_option())
    running: dict[Future[CaseResult], int] = {}
    try:
        waiting = list(range(len(cases)))
        while waiting or running:
            for index in list(waiting):
                if needs[index] <= set(results_by_index):
                    waiting.remove(index)
                    blocked = _blocked(cases, index, needs, results_by_index)
                    if blocked:
                        results_by_index[index] = blocked
                        reporter.case_done(len(results_by_index), len(cases), blocked)
                    else:
                        running[pool.submit(_run_case_in_worker, cases[index], debug)] = index
            if not running:
                if waiting:  # a dependency cycle: run the rest as listed
                    needs = [set() for _ in needs]
                continue
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                index = running.pop(future)
                try:
                    result = future.result()
                except BrokenProcessPool:
                    result = CaseResult(
                        cases[index].name,
                        error="the worker process died (out of memory?); retry with fewer --jobs",
                        error_kind="input",
                        inputs=cases[index].inputs,
                    )
                    pool.shutdown(wait=False, cancel_futures=True)
                    pool = ProcessPoolExecutor(max_workers=min(jobs, len(cases)), initializer=_ignore_interrupts,
                                               **_max_tasks_option())
                    for other_future, other in list(running.items()):
                        running.pop(other_future)
                        running[pool.submit(_run_case_in_worker, cases[other], debug)] = other
                results_by_index[index] = result
                reporter.case_done(len(results_by_index), len(cases), result)
    except KeyboardInterrupt:
        reporter.finish()
        stopped = [cases[index] for index in running.values()]
        _stop_pool(pool)
        _clean_temporaries(stopped)
        raise Interrupted(len(results_by_index), len(cases), len(stopped)) from None
    pool.shutdown()
    reporter.finish()
    return [results_by_index[index] for index in range(len(cases))]


def _max_tasks_option() -> dict[str, Any]:
    import sys

    if sys.version_info >= (3, 11):
        import multiprocessing

        # max_tasks_per_child needs a start method other than fork.
        return {"max_tasks_per_child": MAX_CASES_PER_WORKER, "mp_context": multiprocessing.get_context("spawn")}
    return {}


def _blocked(
    cases: Sequence[Case], index: int, needs: list[set[int]], done: dict[int, CaseResult]
) -> CaseResult | None:
    failed = [cases[i].name for i in sorted(needs[index]) if i in done and not done[i].ok]
    if not failed:
        return None
    return CaseResult(cases[index].name, error=f"not run: it reads the output of failed case(s) {', '.join(failed)}",
                      error_kind="input", inputs=cases[index].inputs)


def _in_dependency_order(needs: list[set[int]]) -> list[int]:
    order: list[int] = []
    placed: set[int] = set()
    remaining = list(range(len(needs)))
    while remaining:
        ready = [i for i in remaining if needs[i] <= placed] or remaining[:1]  # a cycle: as listed
        for i in ready:
            order.append(i)
            placed.add(i)
            remaining.remove(i)
    return order


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Terminate the worker processes now (they ignore SIGINT) and wait for them."""
    processes = list(getattr(pool, "_processes", {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
            process.join(timeout=5)


def _clean_temporaries(cases: Iterable[Case]) -> None:
    """Remove temporaries that stopped cases left in their output folders (no writer is running there)."""
    from ..atomic import remove_stale_temporaries

    for case in cases:
        for output in case.output_paths:
            path = Path(output)
            folder = path if path.is_dir() else path.parent
            if folder.is_dir():
                remove_stale_temporaries(folder)


# =========================================================================== manifest


class ManifestError(LabelmapSegError, ValueError):
    """The batch manifest cannot be used."""


#: Largest manifest read (bytes): a million cases fit; a bigger file is a mistake.
MAX_MANIFEST_BYTES = 256 * 1024 * 1024


def read_manifest(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV or JSON batch manifest as dicts of strings (see ``batch --help``)."""
    try:
        if not path.is_file():
            raise ManifestError(f"Manifest {path} is not a regular file.")
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ManifestError(f"Manifest {path} is larger than {MAX_MANIFEST_BYTES // 2**20} MB.")
        text = path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise ManifestError(f"Cannot read manifest {path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ManifestError(f"Manifest {path} is not UTF-8 text.") from None
    if path.suffix.lower() == ".json" or text.lstrip().startswith(("[", "{")):
        try:
            document = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as error:
            raise ManifestError(f"Manifest {path} is not valid JSON: {error}") from None
        if isinstance(document, dict):
            document = document.get("cases")
        if not isinstance(document, list) or not all(isinstance(row, dict) for row in document):
            raise ManifestError(f"Manifest {path}: expected a list of case objects (or {{\"cases\": [...]}}).")
        for row in document:
            for key, value in row.items():
                if isinstance(value, (dict, list)):
                    raise ManifestError(
                        f"Manifest {path}: '{key}' must be a text or a number, not a {type(value).__name__}."
                    )
        rows = [{str(k): "" if v is None else str(v) for k, v in row.items()} for row in document]
    else:
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames or "input" not in [name.strip() for name in reader.fieldnames]:
            raise ManifestError(f"Manifest {path}: the first row must name the columns, including 'input'.")
        rows = [{(k or "").strip(): (v or "").strip() if isinstance(v, str) else "" for k, v in row.items()}
                for row in reader]
        rows = [row for row in rows if any(row.values())]
    if not rows:
        raise ManifestError(f"Manifest {path} lists no cases.")
    return rows


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
    raise ManifestError(f"{where}: '{value}' is not true or false.")


def _integer(value: str | None, default: int | None, where: str) -> int | None:
    if value is None or value.strip() == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ManifestError(f"{where}: '{value}' is not a whole number.") from None


def _number(value: str | None, default: float, where: str) -> float:
    if value is None or value.strip() == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise ManifestError(f"{where}: '{value}' is not a number.") from None
    if not 0.0 < number <= 1.0:
        raise ManifestError(f"{where}: fractional threshold {value} must be a number in (0, 1].")
    return number


def cases_from_manifest(args: argparse.Namespace) -> list[Case]:
    """The cases of ``args.manifest``, empty cells filled from the command-line options."""
    from .importcmd import OUTPUT_SUFFIXES, is_directory_target

    rows = read_manifest(Path(args.manifest))
    base = Path(args.manifest).resolve().parent
    names = unique_names([row.get("output") or row.get("input") or f"case{i + 1}" for i, row in enumerate(rows)])
    cases: list[Case] = []
    for number, (row, name) in enumerate(zip(rows, names), 1):
        where = f"{args.manifest} case {number}"
        inputs = tuple(str(_resolve(base, part)) for part in _split(row.get("input")))
        if not inputs:
            raise ManifestError(f"{where}: 'input' is empty.")
        if not row.get("output"):
            raise ManifestError(f"{where}: 'output' is empty.")
        output = str(_resolve(base, row["output"]))
        command = (row.get("command") or ("export" if row.get("reference") else "import")).strip().lower()
        syntax = row.get("syntax") or args.syntax
        try:
            syntax = TransferSyntax.parse(syntax).value
        except ValueError as error:
            raise ManifestError(f"{where}: {error}") from None
        series_number = _integer(row.get("series_number"), args.series_number, where)
        if series_number is not None and series_number_problem(series_number):
            raise ManifestError(f"{where}: {series_number_problem(series_number)}.")
        if command == "export":
            references = tuple(str(_resolve(base, part)) for part in _split(row.get("reference")))
            if not references:
                raise ManifestError(f"{where}: an export case needs 'reference' (the DICOM series folder).")
            labels = row.get("labels") or args.labels
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
                    series_number=series_number,
                    algorithm_type=row.get("algorithm_type") or args.algorithm_type,
                    algorithm_name=row.get("algorithm_name") or args.algorithm_name,
                    overwrite=_boolean(row.get("overwrite"), args.overwrite, where),
                    terminology_map=args.terminology_map,
                )
            )
        elif command == "import":
            if not is_directory_target(output) and not output.lower().endswith(OUTPUT_SUFFIXES):
                raise ManifestError(f"{where}: output '{row['output']}' is not .seg.nrrd, .nii.gz, .nii or a folder.")
            cases.append(
                ImportCase(
                    name=name,
                    inputs=inputs,
                    output=output,
                    output_is_dir=is_directory_target(output),
                    output_format=args.format,
                    fractional_threshold=_number(row.get("fractional_threshold"), args.fractional_threshold, where),
                    workers=args.threads,
                )
            )
        elif command == "convert":
            from ..app.convert import ConvertSettings

            settings = ConvertSettings(
                transfer_syntax=syntax,
                fractional_threshold=_number(row.get("fractional_threshold"), args.fractional_threshold, where),
                series_description=row.get("series_description") or args.series_description,
                series_number=series_number,
                palette_color=_boolean(row.get("palette"), args.palette, where),
                algorithm_type=row.get("algorithm_type") or args.algorithm_type,
                algorithm_name=row.get("algorithm_name") or args.algorithm_name,
            )
            cases.append(ConvertCase(name=name, inputs=inputs, output_dir=output, settings=settings,
                                     overwrite=_boolean(row.get("overwrite"), args.overwrite, where)))
        else:
            raise ManifestError(f"{where}: command '{command}' is not 'export', 'import' or 'convert'.")
    return cases


# =========================================================================== the command

EPILOG = (
    """\
manifest formats (relative paths are relative to the manifest's folder):

  CSV, one case per row, a header row naming the columns:
    command,input,reference,output,labels,syntax
    export,case1/seg.nii.gz,case1/ct,out/case1,,
    export,case2/seg.nii.gz,case2/ct,out/case2,classes.json,rle
    import,out/case1,,case1.seg.nrrd,,
    convert,case3/binary_seg.dcm,,out/case3,,

  JSON, a list of objects with the same keys (or {"cases": [...]}):
    [{"command": "export", "input": "case1/seg.nii.gz", "reference": "case1/ct",
      "output": "out/case1"}]

  columns: command (export, import or convert; default: export if 'reference' is set,
  else import), input (file or folder; several separated by ';'), reference (export
  only), output, and optionally labels, syntax, palette (true/false), series_description,
  series_number, fractional_threshold, algorithm_type, algorithm_name, overwrite. Empty
  cells take the value of the matching command-line option given to 'batch' (e.g.
  --syntax rle applies to every row without one).

  Rows that depend on each other run in order: a row whose input is (inside) another
  row's output starts when that row has finished (above, 'import out/case1' waits for
  the export to out/case1), and is not run if that row failed. Other rows run in parallel.

example:
  dicom-labelmap-seg batch cases.csv --jobs 4 --syntax jpeg-ls --report report.jsonl

"""
    + EXIT_CODES_HELP
)


def add_parser(subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
    from .export import add_export_options
    from .importcmd import add_import_options

    text = "Run many export/import/convert cases listed in a CSV or JSON manifest, in parallel."
    parser = subparsers.add_parser(
        NAME, parents=list(parents), help=text, formatter_class=Formatter, epilog=EPILOG,
        description=text + " A failing case is reported and the others continue; a summary ends the run.",
    )
    parser.add_argument("manifest", metavar="MANIFEST", help="CSV or JSON file listing the cases (see below).")
    add_export_options(parser)
    add_import_options(parser)
    add_run_options(parser)
    return parser


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """--report and --dask-scheduler (shared by batch and convert)."""
    group = parser.add_argument_group("run options")
    group.add_argument("--report", metavar="FILE.jsonl",
                       help="Append one JSON line per case (input, outputs, bytes, seconds, status, error).")
    group.add_argument("--dask-scheduler", metavar="tcp://HOST:PORT",
                       help="Run the cases on this dask.distributed scheduler instead of local processes "
                       "(inputs and outputs must be on a file system the workers share; needs the [dask] extra).")


def run(args: argparse.Namespace) -> int:
    from .report import Reporter

    cases = cases_from_manifest(args)
    reporter = Reporter(quiet=args.quiet, debug=args.debug, report_path=args.report)
    return finish(run_cases(cases, args.jobs, reporter, args.debug, args.dask_scheduler), reporter)


def finish(results: Sequence[CaseResult], reporter: Any) -> int:
    """Print the outputs (stdout) and the summary; the exit code of the results."""
    import sys

    for result in results:
        for output in result.outputs:
            sys.stdout.write(f"{output}\n")
    sys.stdout.flush()
    reporter.summary(results)
    return exit_code(results)


def interrupted_line(error: Interrupted) -> str:
    return (f"{PROGRAM}: interrupted: {error.done} of {error.total} cases finished; {error.running} stopped "
            "(their partial files were removed)")


EXIT_ON_INTERRUPT = EXIT_INTERRUPTED
