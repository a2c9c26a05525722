"""Optimization proposal for the node -> LABELMAP SEG export, measured (a prototype; no library file changed).

The proposed changes are applied as run-time patches to the library so that their effect can
be measured on the real code path (``slicerlogic.exportSegmentation``) and their output checked
against the unpatched one:

P1  label scans in small chunks: ``mrml._present_values`` and ``model.present_labels`` call
    ``np.bincount`` on the whole array, which first converts it to int64 (8 bytes per voxel:
    700 MB and 0.3-1.6 s for 512x512x334). Bincount over 2^18-value chunks, uint8 voxels counted
    in pairs as uint16, gives the same answer in 0.065 s with 2 MB.
P2  no explicit plane positions when the grid is the source series' grid: ``writer`` passes
    ``plane_positions`` to highdicom, which then matches every plane against the source images;
    when the model's slices are the source slices, in the same order, highdicom can take the
    positions from the source images itself.
P4  consecutive segment numbers for highdicom: when a layer's label values have gaps (TotalSegmentator
    ids), highdicom checks the labels with np.setdiff1d (a full sort/hash of the volume); with
    segment numbers 1..max it only checks the maximum. The writer can describe the missing numbers
    with placeholder segments and drop them from the Segment Sequence afterwards (pixel data, frames
    and the remaining items are unchanged; our own label scan already proved no voxel uses them).
P6  no header copies: ``writer._highdicom_sources`` copies every element of every source header
    (converting each raw element) although the headers were just read by ``read_source_series``
    for this export only; completing them in place (the missing Type 2 attributes, Slice
    Thickness) gives highdicom the same input without the copy. (Datasets passed in by a caller
    would still be copied.)
P5  one label scan instead of two (behaviour change, shown separately): ``mrml`` scans each layer
    for values of no segment to drop them, then ``writer.prepare_layers`` scans again to refuse
    undescribed values. When all segments are exported, the writer's scan alone suffices (it would
    raise UndescribedLabelError instead of silently dropping stray voxels).
P3  both cores for encoding (measured, NOT proposed): pyjpegls holds the GIL while encoding, so
    ``ExportOptions(workers=ThreadPoolExecutor(2))`` is no faster; ``workers=2`` makes highdicom fork
    a process pool and pickle the frames to it, which costs more than it saves at 334 frames.

    .venv/bin/python bench/prototype_fast_export.py --case tsfull --reps 5

Prints the median time of each variant (interleaved in one process after a warm-up) and checks
that every variant writes the same frames (Pixel Data, frame positions) and reads back equal to
the truth.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR), str(BENCH_DIR.parent / "DICOMLabelmapSeg")]

import cases  # noqa: E402
import worker  # noqa: E402

CHUNK = 1 << 18  # values per bincount call: its int64 copy (2 MB) stays in the CPU cache


def chunked_counts(values: np.ndarray, bins: int) -> np.ndarray:
    """np.bincount of a flat uint8/uint16 array, chunk by chunk (bounded memory, cache friendly)."""
    counts = np.zeros(bins, dtype=np.int64)
    for start in range(0, values.size, CHUNK):
        counts += np.bincount(values[start:start + CHUNK], minlength=bins)
    return counts


def fast_present_labels(labels: np.ndarray) -> np.ndarray:
    """P1: the distinct values of a label array (sorted), like model.present_labels, in bounded memory.

    uint8 voxels are counted in pairs (viewed as uint16: half the elements, the reader's trick).
    """
    if labels.dtype not in (np.uint8, np.uint16) or not labels.size:
        return np.unique(labels)
    flat = np.ascontiguousarray(labels).reshape(-1)
    if labels.dtype == np.uint16:
        return np.flatnonzero(chunked_counts(flat, 65536))
    even = flat.size - flat.size % 2
    pairs = np.flatnonzero(chunked_counts(flat[:even].view(np.uint16), 65536))
    present = np.zeros(256, dtype=bool)
    present[pairs & 0xFF] = True
    present[pairs >> 8] = True
    if even < flat.size:
        present[flat[-1]] = True
    return np.flatnonzero(present)


def fast_present_values(region: np.ndarray) -> list[int]:
    if region.size == 0:
        return []
    if region.dtype.kind == "u" and region.dtype.itemsize <= 2:
        return fast_present_labels(np.ascontiguousarray(region)).tolist()
    return np.unique(region).tolist()


class Patches:
    """Install/remove the proposal's patches on the library modules."""

    def __init__(self) -> None:
        from DICOMLabelmapSegLib import model, mrml
        from DICOMLabelmapSegLib.dicom import writer
        self.model, self.mrml, self.writer = model, mrml, writer
        self.originals = {
            (model, "present_labels"): model.present_labels,
            (writer, "present_labels"): getattr(writer, "present_labels", None),
            (mrml, "_present_values"): mrml._present_values,
            (writer, "_spatial_metadata"): writer._spatial_metadata,
            (writer, "_highdicom_segmentation"): writer._highdicom_segmentation,
            (writer, "_highdicom_sources"): writer._highdicom_sources,
        }

    def apply(self, p1: bool, p2: bool, p4: bool = False, p6: bool = False, p5: bool = False) -> None:
        self.restore()
        if p6:
            self.writer._highdicom_sources = _sources_in_place(self.writer)
        if p4:
            self.writer._highdicom_segmentation = _dense_segment_numbers(
                self.originals[(self.writer, "_highdicom_segmentation")])
        if p5:
            self.mrml._present_values = lambda region: []
        if p1:
            for module, name in ((self.model, "present_labels"), (self.writer, "present_labels")):
                if getattr(module, name, None) is not None:
                    setattr(module, name, fast_present_labels)
            self.mrml._present_values = fast_present_values
        if p2:
            original = self.originals[(self.writer, "_spatial_metadata")]
            self.writer._spatial_metadata = _source_grid_spatial(original)

    def restore(self) -> None:
        for (module, name), value in self.originals.items():
            if value is not None:
                setattr(module, name, value)


_SOURCE_POSITIONS: list[np.ndarray] = []  # the source slice positions, sorted along the normal


def use_source_positions(files: list[str]) -> None:
    """Remember the positions of the source series (P2 compares the model's slices with them)."""
    import pydicom

    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    normal = np.cross(np.asarray(headers[0].ImageOrientationPatient[:3], dtype=float),
                      np.asarray(headers[0].ImageOrientationPatient[3:], dtype=float))
    positions = sorted((np.asarray(h.ImagePositionPatient, dtype=float) for h in headers), key=lambda p: p @ normal)
    _SOURCE_POSITIONS[:] = [np.array(positions)]


def _source_grid_spatial(original: Callable[..., Any]) -> Callable[..., Any]:
    """P2: (None, None, None) when the model's slices are the source slices in the same order."""
    from DICOMLabelmapSegLib.geometry import frame_positions

    def spatial(segmentation: Any, *args: Any, **kwargs: Any) -> Any:
        plane_positions, plane_orientation, pixel_measures = original(segmentation, *args, **kwargs)
        positions = frame_positions(segmentation.geometry.affine, segmentation.geometry.shape[0])
        if _SOURCE_POSITIONS and len(_SOURCE_POSITIONS[0]) == len(positions) and \
                np.allclose(_SOURCE_POSITIONS[0], positions, atol=1e-3):
            return None, plane_orientation, pixel_measures
        return plane_positions, plane_orientation, pixel_measures

    return spatial


def _sources_in_place(writer: Any) -> Callable[..., Any]:
    """P6: complete the freshly read header-only datasets in place instead of copying them."""

    def complete(source: list[Any], slice_thickness: float) -> list[Any]:
        for ds in source:
            for keyword in writer._COPIED_TYPE2:
                if keyword not in ds:
                    setattr(ds, keyword, "")
            if "ImagePositionPatient" in ds and ds.get("SliceThickness") in (None, ""):
                ds.SliceThickness = slice_thickness
            if not ds.get("SpecificCharacterSet"):
                ds.pop("SpecificCharacterSet", None)
        return list(source)

    return complete


def _dense_segment_numbers(original: Callable[..., Any]) -> Callable[..., Any]:
    """P4: describe 1..max to highdicom with placeholders, then drop the placeholders' items."""
    from DICOMLabelmapSegLib.model import Layer, Segment
    from pydicom.sequence import Sequence

    def build(layer: Any, *args: Any, **kwargs: Any) -> Any:
        values = {segment.label_value for segment in layer.segments}
        top = max(values)
        if len(values) == top:
            return original(layer, *args, **kwargs)
        placeholders = [Segment(value, f"unused {value}") for value in range(1, top + 1) if value not in values]
        dense = Layer(layer.labels, sorted([*layer.segments, *placeholders], key=lambda s: s.label_value))
        ds = original(dense, *args, **kwargs)
        unused = {segment.label_value for segment in placeholders}
        ds.SegmentSequence = Sequence([item for item in ds.SegmentSequence if int(item.SegmentNumber) not in unused])
        return ds

    return build


def frames_signature(path: Path) -> tuple[bytes, list[tuple[float, ...]], int]:
    """What must not change: pixel data, frame positions (in frame order), frame count, segment items."""
    import pydicom

    ds = pydicom.dcmread(path)
    positions = [tuple(round(float(v), 4) for v in item.PlanePositionSequence[0].ImagePositionPatient)
                 for item in ds.PerFrameFunctionalGroupsSequence]
    segments = [str(item) for item in ds.SegmentSequence]
    return bytes(ds.PixelData), positions, int(ds.NumberOfFrames), segments


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", default="tsfull")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)

    import peers
    import slicerenv
    from DICOMLabelmapSegLib import mrml
    from DICOMLabelmapSegLib.app import slicerlogic
    from DICOMLabelmapSegLib.dicom import writer
    from DICOMLabelmapSegLib.dicom.reader import read_segmentation
    from DICOMLabelmapSegLib.model import differences

    cache = BENCH_DIR / "results" / "cache"
    case = cases.prepare(args.case, cache)
    worker.warm_up(peers.all_formats()["ours-node-jpeg-ls"], cache, BENCH_DIR / "results" / "scratch")
    env = slicerenv.boot()
    truth = case.load_truth()
    node = mrml.node_from_segmentation(truth, env.scene, name=args.case)
    sources = [str(f) for f in case.source_files]
    use_source_positions(sources)
    highdicom = peers.Highdicom("LABELMAP")
    patches = Patches()
    variants = {  # name: (P1, P2, encoding workers, P4, P6, P5); workers "threads" = ThreadPoolExecutor(2)
        "current (library as is)": (False, False, 0),
        "P1 chunked label scans": (True, False, 0),
        "P1+P2 + source-grid planes": (True, True, 0),
        "P1+P2+P4 + consecutive numbers for highdicom": (True, True, 0, True),
        "P1+P2+P4+P6 + no header copies": (True, True, 0, True, True),
        "P1+P2+P4+P6, 2 encoding threads": (True, True, "threads", True, True),
        "P1+P2+P4+P6, 2 encoding processes": (True, True, 2, True, True),
        "P1-P6 + one label scan (behaviour change)": (True, True, 0, True, True, True),
    }
    times: dict[str, list[float]] = {name: [] for name in [*variants, "highdicom directly (peer)"]}
    signatures: dict[str, Any] = {}
    for rep in range(args.reps):
        for name, (p1, p2, workers, *more) in variants.items():
            patches.apply(p1, p2, *more)
            pool = ThreadPoolExecutor(2) if workers == "threads" else None
            options = writer.ExportOptions(workers=pool or workers)
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                files = slicerlogic.exportSegmentation(node, None, sources, tmp, options)
                times[name].append(time.perf_counter() - start)
                if pool is not None:
                    pool.shutdown()
                if rep == 0:
                    patches.restore()
                    signatures[name] = frames_signature(Path(files[0]))
                    found = differences(truth, read_segmentation(files))
                    assert not found, (name, found[:3])
        patches.restore()
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            highdicom.export(highdicom.setup_export(case, truth), Path(tmp))
            times["highdicom directly (peer)"].append(time.perf_counter() - start)
    reference = signatures["current (library as is)"]
    print(f"\n{args.case}: node -> JPEG-LS files, medians of {args.reps} interleaved runs "
          f"(load average {Path('/proc/loadavg').read_text().split()[0]})\n")
    print("| variant | seconds | vs current | vs highdicom | same frames as current |\n|---|---|---|---|---|")
    current = statistics.median(times["current (library as is)"])
    hd_time = statistics.median(times["highdicom directly (peer)"])
    for name, values in times.items():
        seconds = statistics.median(values)
        same = "-" if name not in signatures else ("yes" if signatures[name] == reference else "**NO**")
        print(f"| {name} | {seconds:.3f} | {seconds / current:.2f}x | {seconds / hd_time:.2f}x | {same} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
