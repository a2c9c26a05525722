"""``dicom-labelmap-seg check``: conformance findings and consumer compatibility of SEG files."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from ..dicom.check import Finding, Severity, check_file, worst_severity
from .common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, PROGRAM, Formatter

#: Exit code when the worst finding is a warning (errors give EXIT_FAILED, 1).
EXIT_WARNINGS = 4

CHECK_HELP = "Check DICOM SEG files (LABELMAP, BINARY, FRACTIONAL; ours or others') against the standard."
CHECK_EPILOG = f"""\
The rules are those of the Segmentation IODs (PS3.3, Sup 243 for LABELMAP) that dciodvfy does not
check: every pixel value is a described segment, Pixel Padding Value and segment 0, frame positions
(present, coplanar, regular or explained), dimension indices, pixel format per segmentation type,
palette color tables, CIELab with PALETTE COLOR, lossy compression of labels, code values within
their VRs. Each finding has a severity (error, warning, info) and a one-line explanation.
The compatibility section lists known consumers (OHIF/cornerstone3D, highdicom, dcmqi, GDCM,
dciodvfy, ...) that misread or refuse the file, and what to do instead; it does not change the exit code.

examples:
  {PROGRAM} check out/                 # every file in a folder (recursively)
  {PROGRAM} check seg.dcm --json       # for pipelines

exit codes:
  0    no errors and no warnings in any file (info findings may be shown)
  1    at least one file has an error, a named file is not a readable DICOM Segmentation,
       or a folder holds none
  2    usage error (unknown option, missing argument)
  3    unexpected internal error (a bug: please report it with the output of --debug)
  {EXIT_WARNINGS}    warnings but no errors
  130  interrupted (Ctrl-C)
"""


def add_parser(commands: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
    """Add the ``check`` subparser to ``commands`` (the object of ``add_subparsers``)."""
    parser = commands.add_parser(
        "check",
        parents=list(parents),
        help=CHECK_HELP,
        description=CHECK_HELP,
        epilog=CHECK_EPILOG,
        formatter_class=Formatter,
    )
    configure(parser)
    return parser


def configure(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``check``."""
    parser.add_argument("inputs", nargs="+", metavar="SEG_FILE_OR_DIR", help="SEG files or folders (recursive).")
    parser.add_argument("--json", action="store_true", help="Print JSON (one object per file) for pipelines.")
    parser.add_argument(
        "--no-pixels", action="store_true", help="Check headers only (skip the rules that decode pixel data)."
    )
    parser.add_argument("--no-compatibility", action="store_true", help="Leave out the compatibility section.")


def _is_segmentation(path: Path) -> bool:
    """True if ``path`` is a DICOM file of a Segmentation SOP class (header only)."""
    import pydicom

    from ..dicom.check import LABELMAP_SEGMENTATION_STORAGE, SEGMENTATION_STORAGE

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:  # noqa: BLE001 - not DICOM: not a SEG
        return False
    return str(ds.get("SOPClassUID", "")) in (LABELMAP_SEGMENTATION_STORAGE, SEGMENTATION_STORAGE)


def _files(inputs: Sequence[str]) -> tuple[list[Path], int]:
    """Files named on the command line (checked whatever they are), and the SEGs inside folders.

    Returns the files and how many files in folders were skipped (not DICOM Segmentations,
    or temporary files of an export in progress).
    """
    from ..atomic import is_temporary_name

    found: list[Path] = []
    skipped = 0
    for source in inputs:
        path = Path(source)
        if not path.is_dir():
            found.append(path)
            continue
        for candidate in sorted(p for p in path.rglob("*") if p.is_file()):
            if not is_temporary_name(candidate.name) and _is_segmentation(candidate):
                found.append(candidate)
            else:
                skipped += 1
    return found, skipped


def check_paths(paths: Sequence[Path], decode_pixels: bool = True, compatibility: bool = True) -> list[dict[str, Any]]:
    """One result per file: ``path``, ``findings`` (dicts) and ``compatibility`` (dicts)."""
    import pydicom

    from ..dicom.compat import consumer_issues

    results = []
    for path in paths:
        findings: list[Finding] = check_file(path, decode_pixels=decode_pixels)
        issues = []
        if compatibility and not any(f.rule.value == "readable" for f in findings):
            issues = [issue.to_dict() for issue in consumer_issues(pydicom.dcmread(str(path), stop_before_pixels=True))]
        worst = worst_severity(findings)
        results.append(
            {
                "path": str(path),
                "worst": worst.value if worst else None,
                "findings": [finding.to_dict() for finding in findings],
                "compatibility": issues,
            }
        )
    return results


def format_result(result: dict[str, Any]) -> str:
    """Text for people: the file, its findings one per line, then the compatibility section."""
    from .text import printable  # noqa: PLC0415 - small, shared with info

    errors = sum(1 for f in result["findings"] if f["severity"] == Severity.ERROR.value)
    warnings = sum(1 for f in result["findings"] if f["severity"] == Severity.WARNING.value)
    verdict = "OK" if not errors and not warnings else f"{errors} error(s), {warnings} warning(s)"
    lines = [f"{printable(result['path'])}: {verdict}"]
    for finding in result["findings"]:
        lines.append(f"  {finding['severity'].upper():<7} {finding['rule']}: {printable(finding['message'])}")
    if result["compatibility"]:
        lines.append("  compatibility:")
        for issue in result["compatibility"]:
            lines.append(f"    {issue['consumer']} {issue['effect']}: {issue['reason']}; {issue['alternative']}")
    return "\n".join(lines)


def run(args: argparse.Namespace, stdout: TextIO | None = None) -> int:
    """Run ``check`` for parsed arguments; the exit code follows the worst severity (see the epilog)."""
    stdout = stdout or sys.stdout
    paths, skipped = _files(args.inputs)
    if not paths:
        sys.stderr.write(f"{PROGRAM}: error: no DICOM Segmentation found in {', '.join(args.inputs)}\n")
        return EXIT_FAILED
    if skipped and not getattr(args, "quiet", False):
        sys.stderr.write(f"{PROGRAM}: {skipped} file(s) in folders skipped: not DICOM Segmentations\n")
    results = check_paths(paths, decode_pixels=not args.no_pixels, compatibility=not args.no_compatibility)
    if args.json:
        json.dump(results, stdout, indent=2, ensure_ascii=False)
        stdout.write("\n")
    else:
        for result in results:
            stdout.write(format_result(result) + "\n")
    worst = {result["worst"] for result in results}
    if Severity.ERROR.value in worst:
        return EXIT_FAILED
    if Severity.WARNING.value in worst:
        return EXIT_WARNINGS
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """``check`` on its own (``python -m DICOMLabelmapSegLib.cli.check FILE...``)."""
    parser = argparse.ArgumentParser(
        prog=f"{PROGRAM} check", description=CHECK_HELP, epilog=CHECK_EPILOG, formatter_class=Formatter
    )
    configure(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code) if isinstance(exit_.code, int) else EXIT_USAGE
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
