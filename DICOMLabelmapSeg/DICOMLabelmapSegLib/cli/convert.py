"""``convert``: DICOM SEG series (BINARY, FRACTIONAL, LABELMAP) -> LABELMAP SEG series, at collection scale.

One output series per input series; resumable (an output that is already complete is skipped) and
idempotent (UIDs derived from the input's, unless ``--random-uids``). See :mod:`..app.convert`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import LabelmapSegError
from .common import Formatter, series_number

NAME = "convert"

EPILOG = """\
examples:
  # one BINARY SEG (dcmqi, highdicom, TotalSegmentator in IDC) -> one LABELMAP SEG series in out/
  dicom-labelmap-seg convert seg.dcm -o out/

  # a whole collection: one output folder per input series (out/<input Series Instance UID>/),
  # all cores, a JSON-lines report; re-running skips what is already complete
  dicom-labelmap-seg convert collection/ -o out/ --report report.jsonl

  # from a DICOMweb server (QIDO-RS search, WADO-RS retrieve) and back to it (STOW-RS)
  dicom-labelmap-seg convert --from dicomweb+http://localhost:8042/dicom-web --study 1.2.3 -o out/ \\
      --send dicomweb+http://localhost:8042/dicom-web
"""


def add_parser(subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
    from .batch import add_run_options
    from .common import EXIT_CODES_HELP
    from .importcmd import fractional_threshold

    text = "Convert DICOM SEG series (BINARY, FRACTIONAL or LABELMAP) into LABELMAP SEG series."
    parser = subparsers.add_parser(
        NAME, parents=list(parents), help=text, formatter_class=Formatter, epilog=EPILOG + "\n" + EXIT_CODES_HELP,
        description=text + " Overlapping segments go to separate layers (one instance each), the others share "
        "layers; numbers, names, colors, terminology, algorithm and source image references are kept. No image "
        "series is needed: the SEG's own geometry and references are used.",
    )
    parser.add_argument("inputs", nargs="*", metavar="SEG_FILE_OR_DIR",
                        help="SEG files or folders (searched recursively); a .txt file lists one path per line.")
    parser.add_argument("-o", "--output", required=True, metavar="OUT_DIR",
                        help="Output folder; with several input series, one subfolder per input Series Instance UID.")
    parser.add_argument("--from", dest="source_url", metavar="dicomweb+http://HOST:PORT/PATH",
                        help="Fetch the SEG series from a DICOMweb server (QIDO-RS, WADO-RS) instead of files.")
    parser.add_argument("--study", action="append", metavar="UID", help="With --from: only this study (repeatable).")
    parser.add_argument("--series", action="append", metavar="UID", help="With --from: only this series (repeatable).")
    group = parser.add_argument_group("convert options")
    from ..dicom.syntax import TransferSyntax

    group.add_argument("--syntax", default=TransferSyntax.JPEG_LS.value, choices=[s.value for s in TransferSyntax],
                       help="Transfer syntax of the LABELMAP files.")
    group.add_argument("--fractional-threshold", type=fractional_threshold, default=0.5, metavar="T",
                       help="FRACTIONAL inputs: a voxel belongs to a segment when its fraction is at least T.")
    group.add_argument("--series-description", metavar="TEXT", help="Series Description (default: the input's).")
    group.add_argument("--series-number", type=series_number, metavar="N", help="Series Number (default: the input's).")
    group.add_argument("--palette", action="store_true", help="Add a palette color lookup table.")
    group.add_argument("--algorithm-type", choices=["AUTOMATIC", "SEMIAUTOMATIC", "MANUAL"], type=str.upper,
                       help="Replace every segment's Segment Algorithm Type (default: keep the input's).")
    group.add_argument("--algorithm-name", metavar="NAME", help="Replace every segment's Segment Algorithm Name.")
    group.add_argument("--random-uids", action="store_true",
                       help="New random UIDs and timestamps (default: derived from the input, so re-runs give the "
                       "same files).")
    group.add_argument("--overwrite", action="store_true",
                       help="Replace SEG series this tool wrote in the output folder (default: refuse such a folder, "
                       "but skip an output that is already complete).")
    group.add_argument("--no-resume", action="store_true", help="Convert again even if the output is complete.")
    group.add_argument("--send", metavar="URL", help="Send each converted series to this receiver (see 'send').")
    group.add_argument("--fallback", choices=["none", "binary"], default="none",
                       help="If the receiver refuses LABELMAP: 'binary' sends a BINARY SEG of the same segments.")
    add_run_options(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..app.convert import ConvertSettings
    from .batch import ConvertCase, finish, run_cases
    from .report import Reporter

    inputs = [str(p) for p in args.inputs]
    if args.source_url:
        from ..pacs import fetch_seg_series

        download = Path(args.output) / ".downloads"
        inputs += [str(p) for p in fetch_seg_series(args.source_url, download, args.study, args.series)]
        if len(inputs) == 0:
            raise LabelmapSegError(f"{args.source_url} has no SEG series matching the given study/series.")
    if not inputs:
        args.parser.error("give SEG files or folders, or --from URL")
    groups = group_by_series(expand_inputs(inputs))
    if not groups:
        from .importcmd import no_segmentation_message

        raise LabelmapSegError(no_segmentation_message(inputs))
    settings = ConvertSettings(
        transfer_syntax=args.syntax, fractional_threshold=args.fractional_threshold,
        series_description=args.series_description, series_number=args.series_number, palette_color=args.palette,
        deterministic=not args.random_uids, algorithm_type=args.algorithm_type, algorithm_name=args.algorithm_name,
    )
    output = args.output
    cases = [
        ConvertCase(name=uid, inputs=tuple(files), output_dir=output if len(groups) == 1 else _join(output, uid),
                    settings=settings, overwrite=args.overwrite, resume=not args.no_resume and not args.random_uids,
                    send=args.send, fallback=None if args.fallback == "none" else args.fallback)
        for uid, files in groups.items()
    ]
    reporter = Reporter(quiet=args.quiet, debug=args.debug, report_path=args.report)
    return finish(run_cases(cases, args.jobs, reporter, args.debug, args.dask_scheduler), reporter)


def is_url(text: str) -> bool:
    """Whether ``text`` is an fsspec URL (``s3://...``, ``gs://...``, ``memory://...``) rather than a local path."""
    return "://" in str(text)


def _filesystem(url: str) -> tuple[Any, str]:
    import fsspec

    return fsspec.core.url_to_fs(url)


def _join(folder: str, name: str) -> str:
    return folder.rstrip("/") + "/" + name if is_url(folder) else str(Path(folder) / name)


def expand_inputs(inputs: list[str]) -> list[str]:
    """Files of the inputs: folders recursively, ``.txt`` lists one path per line (relative to the list).

    fsspec URLs (``s3://bucket/segs/``) are listed and read through fsspec (the ``dask`` extra).
    """
    from ..atomic import is_temporary_name

    files: list[str] = []
    for text in inputs:
        if is_url(text):
            fs, root = _filesystem(text)
            if fs.isdir(root):
                files += [fs.unstrip_protocol(p) for p in sorted(fs.find(root)) if not is_temporary_name(p)]
            elif fs.isfile(root):
                files.append(text)
            else:
                raise LabelmapSegError(f"{text}: no such file or folder.")
            continue
        path = Path(text)
        if path.is_dir():
            files += sorted(str(p) for p in path.rglob("*") if p.is_file() and not is_temporary_name(p.name))
        elif path.suffix.lower() == ".txt" and path.is_file():
            lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
            files += expand_inputs([str(path.parent / line) for line in lines if line and not line.startswith("#")])
        elif path.is_file():
            files.append(str(path))
        else:
            raise LabelmapSegError(f"{path}: no such file or folder.")
    return files


def group_by_series(files: list[str]) -> dict[str, list[str]]:
    """SEG files grouped by Series Instance UID (in the order first met); other files are skipped."""
    import pydicom

    groups: dict[str, list[str]] = {}
    tags = ["Modality", "SeriesInstanceUID"]
    for path in files:
        try:
            if is_url(path):
                import fsspec

                with fsspec.open(path, "rb") as stream:
                    ds = pydicom.dcmread(stream, stop_before_pixels=True, specific_tags=tags)
            else:
                ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=tags)
        except ImportError:
            raise
        except Exception:  # noqa: BLE001 - not DICOM: skipped
            continue
        if str(ds.get("Modality", "")) == "SEG" and ds.get("SeriesInstanceUID"):
            groups.setdefault(str(ds.SeriesInstanceUID), []).append(str(path))
    return groups


def complete_series(files: list[Path]) -> bool:
    """Whether ``files`` (one series) are all readable to the end, with Instance Numbers 1..n."""
    import pydicom

    numbers = []
    for path in files:
        try:
            ds = pydicom.dcmread(path)
            if "PixelData" not in ds or not ds.PixelData:
                return False
            numbers.append(int(ds.InstanceNumber))
        except Exception:  # noqa: BLE001 - damaged or truncated: not complete
            return False
    return sorted(numbers) == list(range(1, len(numbers) + 1))


def run_convert_case(case: Any, progress: Any) -> tuple[list[Path], bool]:
    """Convert one series (or skip it when its output is complete): (files, skipped)."""
    from ..app.convert import convert_series, expected_series_uid
    from .export import check_output_folder, existing_seg_series

    if is_url(case.output_dir) or any(is_url(path) for path in case.inputs):
        return _run_staged(case, progress)
    output = Path(case.output_dir)
    expected = expected_series_uid(case.inputs, case.settings) if case.settings.deterministic else None
    existing = existing_seg_series(output)
    if expected and expected in existing and case.resume and complete_series(existing[expected][0]):
        written, skipped = existing[expected][0], True
    else:
        replaced = check_output_folder(output, case.overwrite, keep_series=expected)
        if expected in existing:
            replaced += existing[expected][0]  # an incomplete earlier run of this very conversion
        written, skipped = convert_series(case.inputs, output, case.settings, progress), False
        for path in replaced:
            if path not in written:
                path.unlink(missing_ok=True)
    return written, skipped


def _run_staged(case: Any, progress: Any) -> tuple[list[Any], bool]:
    """A case with fsspec URLs: inputs and the output folder are staged in a local temporary folder.

    The output folder's current files are fetched first (so resuming and --overwrite see them),
    new files are uploaded (one PUT per file) and files the conversion replaced are deleted.
    """
    import dataclasses
    import tempfile

    with tempfile.TemporaryDirectory(prefix="dicom-labelmap-seg-") as tmp:
        staged = Path(tmp)
        inputs = []
        for index, source in enumerate(case.inputs):
            if is_url(source):
                fs, path = _filesystem(source)
                local = staged / "in" / f"{index}.dcm"
                local.parent.mkdir(parents=True, exist_ok=True)
                fs.get(path, str(local))
                inputs.append(str(local))
            else:
                inputs.append(source)
        if not is_url(case.output_dir):
            return run_convert_case(dataclasses.replace(case, inputs=tuple(inputs)), progress)
        fs, root = _filesystem(case.output_dir)
        local_out = staged / "out"
        local_out.mkdir()
        before = set()
        if fs.isdir(root):
            for remote in fs.ls(root, detail=False):
                name = remote.rstrip("/").rsplit("/", 1)[-1]
                if fs.isfile(remote):
                    fs.get(remote, str(local_out / name))
                    before.add(name)
        written, skipped = run_convert_case(
            dataclasses.replace(case, inputs=tuple(inputs), output_dir=str(local_out)), progress
        )
        targets = []
        for file in written:
            target = root.rstrip("/") + "/" + file.name
            if not skipped:
                fs.put(str(file), target)
            targets.append(fs.unstrip_protocol(target))
        for name in before - {p.name for p in local_out.iterdir()}:
            fs.rm(root.rstrip("/") + "/" + name)
        return targets, skipped
