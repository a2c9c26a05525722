"""Where the time of our node -> LABELMAP SEG export and SEG -> node import goes.

Runs the public paths the Slicer plugin runs (``app.export.exportSegmentation``, then
``segmentationFromFiles`` + ``nodeFromSegmentation``) in one fresh process after a warm-up on
the tiny case, with a clock wrapped around named library and highdicom/pydicom functions (the
wrappers are installed at run time; no library file is touched). Times are inclusive (a stage
contains the stages it calls) and summed over calls; shares are of the whole export (import).
Functions that do not exist (any more) are skipped.

    .venv/bin/python bench/breakdown.py --case tsfull [--syntax jpeg-ls] [--reps 3]
"""

from __future__ import annotations

import argparse
import functools
import gc
import importlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR), str(BENCH_DIR.parent / "DICOMLabelmapSeg")]

import cases  # noqa: E402
import worker  # noqa: E402

EXPORT_STAGES = [
    "DICOMLabelmapSegLib.app.export:exportSegmentation",
    "DICOMLabelmapSegLib.mrml:segmentation_from_node",
    "DICOMLabelmapSegLib.mrml:_has_stray_labels",
    "DICOMLabelmapSegLib.dicom.writer:write_labelmap_seg",
    "DICOMLabelmapSegLib.dicom.writer:prepare_layers",
    "DICOMLabelmapSegLib.model:present_labels",
    "DICOMLabelmapSegLib.dicom.source:read_source_series",
    "DICOMLabelmapSegLib.dicom.source:_read_headers",
    "DICOMLabelmapSegLib.dicom.writer:source_order_of_grid",
    "DICOMLabelmapSegLib.dicom.writer:check_geometry",
    "DICOMLabelmapSegLib.dicom.writer:_highdicom_sources",
    "DICOMLabelmapSegLib.dicom.writer:_spatial_metadata",
    "DICOMLabelmapSegLib.dicom.writer:_cloned_layer_dataset",
    "DICOMLabelmapSegLib.dicom.writer:_layer_dataset",
    "DICOMLabelmapSegLib.dicom.writer:_highdicom_segmentation",
    "DICOMLabelmapSegLib.dicom.segment:segment_description",
    "DICOMLabelmapSegLib.dicom.writer:_spacing_of_all_slices",
    "DICOMLabelmapSegLib.dicom.frameclone:clone_frames",
    "DICOMLabelmapSegLib.dicom.codecs:encode_frames",
    "pydicom.encaps:encapsulate",
    "DICOMLabelmapSegLib.dicom.compat:warn_at_export",
    "DICOMLabelmapSegLib.dicom.check:self_check",
    "highdicom.seg.sop:Segmentation._check_and_cast_pixel_array",
    "highdicom.image:_Image._prepare_spatial_metadata",
    "highdicom.frame:encode_frame",
    "DICOMLabelmapSegLib.dicom.writer:order_frames",
    "pydicom.dataset:Dataset.save_as",
]
IMPORT_STAGES = [
    "DICOMLabelmapSegLib.app.load:segmentationFromFiles",
    "DICOMLabelmapSegLib.dicom.reader:read_segmentation",
    "pydicom.filereader:dcmread",
    "DICOMLabelmapSegLib.dicom.pixels:decode_labelmap_frames",
    "DICOMLabelmapSegLib.model:present_labels",
    "DICOMLabelmapSegLib.app.load:nodeFromSegmentation",
    "DICOMLabelmapSegLib.mrml:node_from_segmentation",
    "DICOMLabelmapSegLib.mrml:_oriented_image",
]

TIMES: dict[str, list[float]] = {}


def _timed(name: str, function: Any) -> Any:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            TIMES.setdefault(name, []).append(time.perf_counter() - start)

    wrapper.__wrapped_for_bench__ = True
    return wrapper


def install(targets: list[str]) -> list[str]:
    """Wrap each ``module:qualname`` (and every module-level alias of it); return the ones found."""
    found = []
    for target in targets:
        module_name, qualname = target.split(":")
        try:
            owner: Any = importlib.import_module(module_name)
        except ImportError:
            continue
        parts = qualname.split(".")
        for part in parts[:-1]:
            owner = getattr(owner, part, None)
        original = getattr(owner, parts[-1], None) if owner is not None else None
        if original is None or getattr(original, "__wrapped_for_bench__", False):
            continue
        wrapper = _timed(qualname, original)
        raw = vars(owner).get(parts[-1]) if isinstance(owner, type) else None
        if isinstance(raw, staticmethod):
            setattr(owner, parts[-1], staticmethod(wrapper))
        elif isinstance(raw, classmethod):
            setattr(owner, parts[-1], classmethod(_timed(qualname, raw.__func__)))
        else:
            setattr(owner, parts[-1], wrapper)
        if len(parts) == 1:  # rebind "from x import f" aliases in our and highdicom's modules
            for module in list(sys.modules.values()):
                name = getattr(module, "__name__", "") or ""
                if name.startswith(("DICOMLabelmapSegLib", "highdicom")) and getattr(module, parts[-1], None) \
                        is original:
                    setattr(module, parts[-1], wrapper)
        found.append(qualname)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", default="tsfull")
    parser.add_argument("--syntax", default="jpeg-ls")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)

    import peers
    import slicerenv
    from DICOMLabelmapSegLib import mrml
    from DICOMLabelmapSegLib.dicom import writer
    cache = BENCH_DIR / "results" / "cache"
    case = cases.prepare(args.case, cache)
    fmt = peers.all_formats()[f"ours-node-{args.syntax}"]
    worker.warm_up(fmt, cache, BENCH_DIR / "results" / "scratch")
    env = slicerenv.boot()
    node = mrml.node_from_segmentation(case.load_truth(), env.scene, name=args.case)
    sources = [str(f) for f in case.source_files]
    options = writer.ExportOptions(transfer_syntax=writer.TransferSyntax.parse(args.syntax))
    install(EXPORT_STAGES + IMPORT_STAGES)
    results: dict[str, dict[str, list[float]]] = {"export": {}, "import": {}}
    for _ in range(args.reps):
        with tempfile.TemporaryDirectory() as tmp:
            for op in ("export", "import"):
                gc.collect()
                TIMES.clear()
                start = time.perf_counter()
                if op == "export":
                    fmt.export((node, sources, options), Path(tmp))
                else:
                    files = sorted(Path(tmp).glob("*.dcm"))
                    fmt.import_(env, files)
                results[op].setdefault("total", []).append(time.perf_counter() - start)
                for name, values in TIMES.items():
                    results[op].setdefault(name, []).append(sum(values))
                    results[op].setdefault(f"{name} (calls)", []).append(len(values))
    for op, stages in (("export", EXPORT_STAGES), ("import", IMPORT_STAGES)):
        rows = results[op]
        names = [t.split(":")[1] for t in stages if t.split(":")[1] in rows]
        total = statistics.median(rows["total"])
        print(f"\n{args.case} {op} ({args.syntax}): median of {args.reps}, total {total:.3f} s "
              f"(load average {Path('/proc/loadavg').read_text().split()[0]})")
        print("| function (inclusive, summed over calls) | calls | seconds | share of total |\n|---|---|---|---|")
        for name in names:
            seconds = statistics.median(rows[name])
            calls = int(statistics.median(rows[f"{name} (calls)"]))
            print(f"| `{name}` | {calls} | {seconds:.3f} | {100 * seconds / total:.0f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
