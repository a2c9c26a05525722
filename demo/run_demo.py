"""Demo: a real segmentation as DICOM LABELMAP SEG in every transfer syntax, read back, measured.

The case is TotalSegmentator's own example: a real CT series (20 axial slices, 512 x 512,
JPEG 2000) and the label map TotalSegmentator produced for it (31 of its 117 classes, NIfTI).
For each transfer syntax the label map is exported as a LABELMAP SEG with this library,
read back, and compared voxel for voxel and segment for segment with what was exported.
For comparison the same segments are also written as a classic BINARY SEG (one 1-bit frame
per segment per slice) with highdicom.

Usage::

    python demo/run_demo.py [--data SHARED_DATA_DIR] [--out OUT_DIR]
    python demo/run_demo.py --reference CT_DIR --labelmap LABELS.nii.gz [--labels TABLE.json]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "DICOMLabelmapSeg"))  # works from a clone without `pip install -e .`

from DICOMLabelmapSegLib import (  # noqa: E402
    DEFAULT_TERMINOLOGY,
    LabelmapSegError,
    Segmentation,
    TransferSyntax,
    differences,
)
from DICOMLabelmapSegLib.dicom.options import ExportOptions  # noqa: E402
from DICOMLabelmapSegLib.dicom.reader import read_segmentation  # noqa: E402
from DICOMLabelmapSegLib.dicom.source import read_source_series  # noqa: E402
from DICOMLabelmapSegLib.dicom.writer import write_labelmap_seg  # noqa: E402
from DICOMLabelmapSegLib.formats.fileio import read_segmentation_file  # noqa: E402
from DICOMLabelmapSegLib.formats.labeltable import (  # noqa: E402
    apply_terminology_lookup,
    read_label_table,
    terminology_lookup_from_slicer_json,
)

#: Folder (in the output folder) of the repaired copy of a reference series with blank UIDs.
REPAIRED_CT = "ct"

#: UIDs that the TotalSegmentator example CT has blank (it was de-identified by emptying them).
_BLANK_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")


@dataclass(frozen=True)
class Case:
    name: str
    reference: Path  # source image series (folder)
    labelmap: Path  # NIfTI/NRRD/.seg.nrrd
    labels: Path | None  # label table (class map) or None
    terminology: tuple[Path, ...] = ()  # Slicer *.term.json files giving names their codes and colors


@dataclass(frozen=True)
class Row:
    kind: str
    syntax: str
    files: int
    frames: int
    size: int
    export_seconds: float
    import_seconds: float
    lossless: str


def find_data_dir(explicit: str | None) -> Path | None:
    """The shared data folder: --data, $DICOMLABELMAPSEG_TEST_DATA, or shared/data beside the clone."""
    candidates = [Path(explicit)] if explicit else []
    if os.environ.get("DICOMLABELMAPSEG_TEST_DATA"):
        candidates.append(Path(os.environ["DICOMLABELMAPSEG_TEST_DATA"]))
    candidates += [parent / "shared" / "data" for parent in REPO.parents]
    return next((c for c in candidates if (c / "totalsegmentator" / "example_ct_dicom").is_dir()), None)


def repair_uids(source_dir: Path, target_dir: Path) -> int:
    """Copy a series, filling blank Study/Series/SOP Instance UIDs and SOP Class UID.

    A SEG must reference its source images by Study, Series and SOP Instance UID (and SOP
    Class UID); the example CT was de-identified by emptying them, so no tool can reference
    it (highdicom fails with ``KeyError: ''``, and this library's ``read_source_series``
    refuses it with a SourceImageError that says so). The copy gets UIDs derived from the
    file names, so every demo run uses the same ones; the SOP Class UID comes from the file
    meta information, which kept it. Pixel data is copied as is (still JPEG 2000).

    Returns
    -------
    int
        How many UID values were filled in.
    """
    target_dir.mkdir(parents=True, exist_ok=True)
    study_uid = generate_uid(entropy_srcs=["demo study", source_dir.name])
    series_uid = generate_uid(entropy_srcs=["demo series", source_dir.name])
    filled = 0
    for path in sorted(p for p in source_dir.iterdir() if p.is_file()):
        ds = pydicom.dcmread(path)
        values = {
            "StudyInstanceUID": study_uid,
            "SeriesInstanceUID": series_uid,
            "SOPInstanceUID": generate_uid(entropy_srcs=["demo instance", path.name]),
            "SOPClassUID": ds.file_meta.MediaStorageSOPClassUID,
        }
        for keyword in _BLANK_UIDS:
            if not str(ds.get(keyword, "") or "").strip():
                setattr(ds, keyword, values[keyword])
                filled += 1
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(target_dir / path.name, enforce_file_format=True)
    return filled


#: Each export and import is timed this many times and the best time is shown (``--repeats``).
REPEATS = 3


def timed(function: Callable[[], object], repeats: int) -> tuple[object, float]:
    """Run ``function`` ``repeats`` times; return its last result and the best wall time."""
    best = float("inf")
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return result, best


def folder_size(paths: Sequence[Path]) -> int:
    return sum(Path(p).stat().st_size for p in paths)


def frame_count(paths: Sequence[Path]) -> int:
    return sum(int(pydicom.dcmread(p, stop_before_pixels=True).get("NumberOfFrames", 1)) for p in paths)


def export_labelmap(segmentation: Segmentation, source: list, out: Path, repeats: int) -> list[Row]:
    """Export and re-import the segmentation once per transfer syntax."""
    rows = []
    for syntax in TransferSyntax:
        options = ExportOptions(transfer_syntax=syntax, series_description=f"Demo LABELMAP {syntax.value}")
        files, export_seconds = timed(
            partial(write_labelmap_seg, segmentation, source, out / syntax.value, options), repeats
        )
        back, import_seconds = timed(partial(read_segmentation, files), repeats)
        problems = differences(segmentation, back)
        lossless = "yes" if not problems else verdict(segmentation, back, problems)
        rows.append(
            Row(
                "LABELMAP",
                syntax.value,
                len(files),
                frame_count(files),
                folder_size(files),
                export_seconds,
                import_seconds,
                lossless,
            )
        )
    return rows


def verdict(expected: Segmentation, actual: Segmentation, problems: list[str]) -> str:
    """A one-line reason why a round trip was not lossless."""
    reversed_axes = _reversed_axes(expected, actual)
    if reversed_axes:
        names = ", ".join(("slices", "rows", "columns")[axis] for axis in reversed_axes)
        return f"NO: same voxels in space, but {names} reversed"
    more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"NO: {problems[0].splitlines()[0]}{more}"


def _reversed_axes(expected: Segmentation, actual: Segmentation) -> list[int]:
    """Axes along which ``actual`` is ``expected`` stored backwards (empty if that does not explain it)."""
    import numpy as np

    a, b = expected.geometry.affine, actual.geometry.affine
    if expected.geometry.shape != actual.geometry.shape or len(expected.layers) != len(actual.layers):
        return []
    axes = [axis for axis in range(3) if np.allclose(a[:3, axis], -b[:3, axis], atol=1e-4)]
    if not axes or any(not np.allclose(a[:3, x], b[:3, x], atol=1e-4) for x in range(3) if x not in axes):
        return []
    same = all(
        np.array_equal(np.flip(y.labels, axis=tuple(axes)), x.labels) for x, y in zip(expected.layers, actual.layers)
    )
    return axes if same else []


def export_binary(segmentation: Segmentation, source_dir: Path, out: Path, repeats: int) -> list[Row]:
    """The same segments as a classic BINARY SEG (highdicom; uncompressed, then Deflated), for comparison."""
    try:
        import highdicom as hd
        from DICOMLabelmapSegLib.dicom.segment import segment_description
        from pydicom.uid import DeflatedExplicitVRLittleEndian
    except ImportError as error:
        print(f"(BINARY comparison skipped: {error})")
        return []
    layer = segmentation.layers[0]
    source = _sorted_like([pydicom.dcmread(p) for p in sorted(source_dir.iterdir())], segmentation)
    # BINARY segment numbers must be 1..N: the model's label values cannot be kept.
    labels = layer.labels.copy()
    descriptions = []
    for number, segment in enumerate(layer.segments, start=1):
        labels[layer.labels == segment.label_value] = number
        descriptions.append(segment_description(_renumbered(segment, number)))

    def write(deflated: bool) -> list[Path]:
        seg = hd.seg.Segmentation(
            source_images=source,
            pixel_array=labels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(),
            series_number=301,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="DICOMLabelmapSeg demo",
            manufacturer_model_name="highdicom BINARY",
            software_versions=hd.__version__,
            device_serial_number="1",
        )
        path = out / ("binary-deflated" if deflated else "binary") / "seg.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        if deflated:
            seg.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        seg.save_as(path, enforce_file_format=True)
        return [path]

    rows = []
    for deflated in (False, True):
        files, export_seconds = timed(partial(write, deflated), repeats)
        _, import_seconds = timed(partial(read_segmentation, files), repeats)
        syntax = "deflated" if deflated else "explicit"
        rows.append(
            Row(
                "BINARY",
                syntax,
                len(files),
                frame_count(files),
                folder_size(files),
                export_seconds,
                import_seconds,
                "label values lost (1..N)",
            )
        )
    return rows


def _renumbered(segment, number: int):  # noqa: ANN001, ANN202 - model.Segment, kept loose for the demo
    from dataclasses import replace

    return replace(segment, label_value=number)


def _sorted_like(source: list, segmentation: Segmentation) -> list:
    """Source datasets in the model's slice order (highdicom matches frames to them by position)."""
    import numpy as np

    affine = segmentation.geometry.affine
    normal = affine[:3, 0] / np.linalg.norm(affine[:3, 0])
    return sorted(source, key=lambda ds: float(np.dot(normal, [float(v) for v in ds.ImagePositionPatient])))


def label_table(case: Case):  # noqa: ANN201 - a labeltable.LabelTable or None
    """The case's label table, with codes and colors from Slicer's terminology files for known names."""
    if case.labels is None:
        return None
    table = read_label_table(case.labels)
    if case.terminology:
        table = apply_terminology_lookup(table, terminology_lookup_from_slicer_json(case.terminology))
    return table


def print_table(case: Case, segmentation: Segmentation, rows: list[Row], repeats: int) -> None:
    shape = segmentation.geometry.shape
    segments = sum(len(layer.segments) for layer in segmentation.layers)
    binary = next((row for row in rows if row.kind == "BINARY" and row.syntax == "explicit"), None)
    print()
    layers = len(segmentation.layers)
    coded = sum(1 for s in segmentation.segments if s.terminology != DEFAULT_TERMINOLOGY)
    print(f"{case.name}: {shape[0]} slices x {shape[1]} x {shape[2]}, {segments} segments, {layers} layer(s)")
    print(f"{coded} of {segments} segments carry anatomy codes (SNOMED CT) from Slicer's terminology, the rest Tissue.")
    header = (
        f"{'format':<9} {'syntax':<13} {'files':>5} {'frames':>6} {'bytes':>11} {'vs BINARY':>9} "
        f"{'export s':>8} {'import s':>8}  lossless"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        ratio = f"{row.size / binary.size:8.1%}" if binary else "-"
        print(
            f"{row.kind:<9} {row.syntax:<13} {row.files:>5} {row.frames:>6} {row.size:>11,} {ratio:>9} "
            f"{row.export_seconds:>8.2f} {row.import_seconds:>8.2f}  {row.lossless}"
        )


def run(case: Case, out: Path, repeats: int = REPEATS) -> int:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    reference = case.reference
    try:
        source = read_source_series(reference)
    except LabelmapSegError as error:
        print(f"The reference series cannot be used as is: {error}")
        reference = out / REPAIRED_CT
        filled = repair_uids(case.reference, reference)
        print(f"-> repaired it in a copy, {reference} ({filled} blank UID values filled in; originals untouched;"
              " the README's commands use this copy).")
        source = read_source_series(reference)
    segmentation = read_segmentation_file(case.labelmap, labels=label_table(case))
    rows = export_labelmap(segmentation, source, out, repeats)
    rows += export_binary(segmentation, reference, out, repeats)
    print_table(case, segmentation, rows, repeats)
    print(f"\nTimes are the best of {repeats} run(s). 'vs BINARY' compares with the uncompressed BINARY SEG.")
    print(f"Files are in {out}")
    failed = [row for row in rows if row.kind == "LABELMAP" and row.lossless != "yes"]
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="shared data folder (default: $DICOMLABELMAPSEG_TEST_DATA or shared/data)")
    parser.add_argument("--out", default=str(REPO / "out" / "demo"), help="output folder (replaced)")
    parser.add_argument("--reference", help="your own source image series folder (with --labelmap)")
    parser.add_argument("--labelmap", help="your own label map on that series (NIfTI, NRRD, .seg.nrrd)")
    parser.add_argument("--labels", help="label table JSON for --labelmap")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="time each step this many times, show the best")
    args = parser.parse_args(argv)

    if args.reference or args.labelmap:
        if not (args.reference and args.labelmap):
            parser.error("--reference and --labelmap go together")
        case = Case("Your case", Path(args.reference), Path(args.labelmap), Path(args.labels) if args.labels else None)
    else:
        data = find_data_dir(args.data)
        if data is None:
            print(
                "The demo data was not found. It is the public TotalSegmentator example (see shared/data/README.md):\n"
                "  shared/data/totalsegmentator/example_ct_dicom/  and  example_seg_dicom.nii.gz\n"
                "Put the shared data folder beside the clone, set DICOMLABELMAPSEG_TEST_DATA, pass --data DIR,\n"
                "or run the demo on your own files with --reference CT_DIR --labelmap LABELS.nii.gz.",
                file=sys.stderr,
            )
            return 2
        case = Case(
            "TotalSegmentator example (real CT + its 'total' label map)",
            data / "totalsegmentator" / "example_ct_dicom",
            data / "totalsegmentator" / "example_seg_dicom.nii.gz",
            data / "totalsegmentator_total_classes.json",
            tuple(sorted((data / "slicer").glob("SegmentationCategoryTypeModifier-*.term.json"))),
        )
    try:
        return run(case, Path(args.out), args.repeats)
    except LabelmapSegError as error:
        print(f"Demo failed: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
