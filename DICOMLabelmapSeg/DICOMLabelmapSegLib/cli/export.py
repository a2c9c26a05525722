"""``export``: a segmentation file (label map, masks, .seg.nrrd) + its DICOM series -> a LABELMAP SEG series."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..dicom.syntax import TransferSyntax
from ..errors import LabelmapSegError
from .common import Formatter, series_number, unique_names

NAME = "export"

#: Manufacturer written by this tool (the writer's default); --overwrite replaces only such series.
OWN_MANUFACTURER = "DICOMLabelmapSeg"


def add_parser(subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
    from .main import MAIN_EPILOG

    text = "Write a LABELMAP SEG series from a segmentation file and the DICOM series it was made on."
    parser = subparsers.add_parser(
        NAME, parents=list(parents), help=text, epilog=MAIN_EPILOG, formatter_class=Formatter,
        description=text
        + " The segmentation may use another grid than the series (a NIfTI in RAS axis order, a cropped "
        "volume): the SEG keeps the segmentation's own voxel grid, references the series, and must overlap it "
        "in patient space.",
    )
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT",
        help="Segmentation(s): a 3D Slicer .seg.nrrd (names, colors, terminology and layers are kept); a label "
        "map .nii/.nii.gz/.nrrd (4D = one layer per volume) whose labels are explained by --labels; or a folder "
        "of binary masks, one segment per file named after it (TotalSegmentator's default output; with "
        "--labels, names are matched to the table's label values). Several inputs are several cases, written "
        "to OUT_DIR/<input name>/.",
    )
    parser.add_argument(
        "-r", "--reference", action="append", required=True, metavar="DICOM_DIR",
        help="Folder (or file) of the DICOM image series the segmentation belongs to. Give it once for all "
        "inputs, or once per input in the same order.",
    )
    parser.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="Folder for the SEG file(s).")
    add_export_options(parser)
    parser.add_argument("--send", metavar="URL", help="Send the written series to this receiver (see 'send').")
    parser.add_argument("--fallback", choices=["none", "binary"], default="none",
                        help="If the receiver refuses LABELMAP: 'binary' sends a BINARY SEG of the same segments.")
    return parser


def add_export_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("export options")
    syntax_help = " ".join(f"'{s.value}': {s.explanation}" for s in TransferSyntax)
    group.add_argument(
        "--syntax", default=TransferSyntax.JPEG_LS.value, choices=[s.value for s in TransferSyntax],
        help=f"Transfer syntax (compression) of the SEG files. {syntax_help}",
    )
    group.add_argument(
        "--palette", action="store_true",
        help="Add a palette color lookup table so that viewers without segmentation support show the "
        "segments in their colors.",
    )
    group.add_argument(
        "--labels", metavar="TABLE.json",
        help="Label table for label map inputs: TotalSegmentator's class map {\"1\": \"spleen\", ...}, "
        "{\"1\": {\"name\": ..., \"color\": [r, g, b], \"terminology\": ...}}, a table written by 'import', or "
        "dcmqi segmentation metadata. Without it, labels are named Segment_<label>.",
    )
    group.add_argument(
        "--terminology-json", action="append", metavar="FILE.term.json",
        help="3D Slicer terminology file(s) (e.g. SegmentationCategoryTypeModifier-SlicerGeneralAnatomy.term.json): "
        "segments of --labels without codes whose names match an entry ('kidney_right' = Kidney, Right) get its "
        "codes and recommended color. Repeatable.",
    )
    group.add_argument(
        "--terminology-map", metavar="MAPPING.csv",
        help="TotalSegmentator's structure -> SNOMED CT mapping (totalsegmentator_snomed_mapping.csv). A --labels "
        "class map of TotalSegmentator names gets its codes and colors and algorithm AUTOMATIC 'TotalSegmentator'. "
        "Default: $DICOMLABELMAPSEG_TOTALSEGMENTATOR_MAP, else the file of an installed totalsegmentator package.",
    )
    group.add_argument("--series-description", metavar="TEXT",
                       help="Series Description of the SEG series (default: the writer's, 'Segmentation').")
    group.add_argument("--series-number", type=series_number, metavar="N",
                       help="Series Number of the SEG series, 1 to 2147483647 (default: the writer's, 300).")
    group.add_argument("--algorithm-type", choices=["AUTOMATIC", "SEMIAUTOMATIC", "MANUAL"], type=str.upper,
                       help="Segment Algorithm Type of every segment (default: what the input says, else MANUAL).")
    group.add_argument("--algorithm-name", metavar="NAME",
                       help="Segment Algorithm Name of every segment (e.g. TotalSegmentator); needed with "
                       "AUTOMATIC or SEMIAUTOMATIC.")
    group.add_argument("--overwrite", action="store_true",
                       help="If OUT_DIR already holds a SEG series written by this tool, replace it (without this, "
                       "a folder holding a SEG series is refused).")


def run(args: argparse.Namespace) -> int:
    from .batch import ExportCase, finish, run_cases
    from .report import Reporter

    inputs = [str(path) for path in args.inputs]
    references = [str(path) for path in args.reference]
    if len(references) not in (1, len(inputs)):
        args.parser.error(
            f"give --reference once (one series for all inputs) or once per input ({len(inputs)} times), "
            f"not {len(references)} times"
        )
    cases = []
    for index, (input_path, name) in enumerate(zip(inputs, unique_names(inputs))):
        reference = references[0] if len(references) == 1 else references[index]
        output_dir = Path(args.output) if len(inputs) == 1 else Path(args.output) / name
        cases.append(ExportCase(
            name=name, inputs=(input_path,), reference=(reference,), output_dir=str(output_dir),
            labels=args.labels, terminology_json=tuple(args.terminology_json or ()), syntax=args.syntax,
            palette=args.palette, series_description=args.series_description, series_number=args.series_number,
            algorithm_type=args.algorithm_type, algorithm_name=args.algorithm_name, overwrite=args.overwrite,
            terminology_map=args.terminology_map, send=args.send,
            fallback=None if args.fallback == "none" else args.fallback,
        ))
    reporter = Reporter(quiet=args.quiet, debug=args.debug)
    return finish(run_cases(cases, args.jobs, reporter, args.debug), reporter)


def existing_seg_series(folder: Path) -> dict[str, tuple[list[Path], bool]]:
    """SEG series directly in ``folder``: Series Instance UID -> (files, written by this tool)."""
    import pydicom

    from ..atomic import is_temporary_name

    found: dict[str, tuple[list[Path], bool]] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.iterdir()):
        if not path.is_file() or is_temporary_name(path.name):
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True,
                                 specific_tags=["Modality", "SeriesInstanceUID", "Manufacturer"])
        except Exception:  # noqa: BLE001 - not DICOM: not a series
            continue
        if str(ds.get("Modality", "")) != "SEG":
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        if not uid:  # truncated before its UID: replaced when a file of the same name is written
            continue
        files, ours = found.get(uid, ([], True))
        files.append(path)
        found[uid] = (files, ours and str(ds.get("Manufacturer", "")) == OWN_MANUFACTURER)
    return found


def check_output_folder(folder: Path, overwrite: bool, keep_series: str | None = None) -> list[Path]:
    """Refuse a folder holding a SEG series (unless ``overwrite`` and it is ours); return the files to replace."""
    series = {uid: value for uid, value in existing_seg_series(folder).items() if uid != keep_series}
    if not series:
        return []
    foreign = [uid for uid, (_, ours) in series.items() if not ours]
    count = sum(len(files) for files, _ in series.values())
    if not overwrite:
        raise LabelmapSegError(
            f"{folder} already holds {len(series)} SEG series ({count} files); a second series there would make "
            "the folder ambiguous to import. Choose an empty folder, or add --overwrite to replace the series "
            "this tool wrote there."
        )
    if foreign:
        raise LabelmapSegError(
            f"{folder} holds {len(foreign)} SEG series not written by this tool (e.g. {foreign[0]}); --overwrite "
            "replaces only series this tool wrote. Choose another folder."
        )
    return [path for files, _ in series.values() for path in files]


def run_export_case(case: Any, progress: Any) -> list[Any]:
    from ..app.options import export_options
    from ..dicom.source import read_source_series
    from ..dicom.writer import write_labelmap_seg
    from ..formats.fileio import read_segmentation_file
    from ..formats.labeltable import apply_terminology_lookup, read_label_table, terminology_lookup_from_slicer_json

    if len(case.inputs) != 1:
        raise LabelmapSegError(f"{case.name}: export takes one segmentation file per case, got {len(case.inputs)}.")
    replaced = check_output_folder(Path(case.output_dir), case.overwrite)
    table = read_label_table(case.labels) if case.labels else None
    if table is not None:
        from ..formats.totalsegmentator import apply_totalsegmentator

        table = apply_totalsegmentator(table, case.terminology_map)
    if table is not None and case.terminology_json:
        table = apply_terminology_lookup(table, terminology_lookup_from_slicer_json(case.terminology_json))
    segmentation = read_segmentation_file(case.inputs[0], table)
    if case.algorithm_type or case.algorithm_name:
        from ..app.convert import ConvertSettings, _with_algorithm

        segmentation = _with_algorithm(segmentation, ConvertSettings(algorithm_type=case.algorithm_type,
                                                                     algorithm_name=case.algorithm_name))
    reference: Any = case.reference[0] if len(case.reference) == 1 else list(case.reference)
    source_images = read_source_series(reference)
    options = export_options(
        transfer_syntax=TransferSyntax.parse(case.syntax), palette_color=case.palette,
        series_description=case.series_description, series_number=case.series_number,
    )
    written = list(write_labelmap_seg(segmentation, source_images, case.output_dir, options, progress=progress))
    for path in replaced:
        if path not in written:
            path.unlink(missing_ok=True)
    return written
