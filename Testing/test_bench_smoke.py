"""Smoke test of the benchmark harness (bench/run.py) on the tiny case: one round, every format.

No timing assertions: it checks that the harness produces an export and an import row for every
format, that every format that can run here is lossless, that our LABELMAP files carry every
segment field exactly, and that the report and the plot are written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"

pytestmark = pytest.mark.mrml


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[Path, list[dict]]:
    pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
    for path in (str(BENCH_DIR), str(BENCH_DIR.parent / "DICOMLabelmapSeg")):
        if path not in sys.path:
            sys.path.insert(0, path)
    import run

    results = tmp_path_factory.mktemp("bench")
    assert run.main(["--cases", "tiny", "--reps", "1", "--in-process", "--no-docs", "--results", str(results)]) == 0
    return results, json.loads((results / "latest.json").read_text())["rows"]


def test_every_format_exports_and_imports_losslessly(bench_run: tuple[Path, list[dict]]) -> None:
    import peers

    _, rows_all = bench_run
    for name, fmt in peers.all_formats().items():
        rows = {row["op"]: row for row in rows_all if row["format"] == name}
        assert "export" in rows, f"no export row for {name}"
        if rows["export"]["status"] == "unavailable":  # e.g. dcmqi not installed: the row says why
            assert rows["export"]["error"], name
            continue
        assert rows["export"]["status"] == "ok", (name, rows["export"].get("error"))
        assert rows["export"]["bytes"] > 0, name
        assert rows["import"]["status"] == "ok", (name, rows["import"].get("error"))
        assert rows["import"]["lossless"] is True, (name, rows["import"].get("check_detail"))
        if fmt.family.startswith("ours") or fmt.family == "prototype":
            assert rows["import"]["metadata"] == "exact", (name, rows["import"].get("check_detail"))


def test_our_formats_ran(bench_run: tuple[Path, list[dict]]) -> None:
    _, rows = bench_run
    ours = {row["format"] for row in rows if row["format"].startswith("ours-") and row["status"] == "ok"}
    assert {"ours-node-jpeg-ls", "ours-node-rle", "ours-node-jpeg2000", "ours-node-deflated",
            "ours-node-explicit", "ours-numpy-jpeg-ls"} <= ours


def test_report_and_plot_written(bench_run: tuple[Path, list[dict]]) -> None:
    import peers

    results, _ = bench_run
    text = (results / "report.md").read_text()
    for name in peers.all_formats():
        assert f"(`{name}`)" in text, name
    assert (results / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_chunked_label_scan_equals_unique() -> None:
    """The proposal's P1 scan finds exactly the values np.unique finds (odd sizes, both dtypes)."""
    import numpy as np
    import prototype_fast_export as proto

    rng = np.random.default_rng(5)
    for dtype, high in ((np.uint8, 256), (np.uint16, 65536)):
        for size in (1, 2, 7, proto.CHUNK + 3, 3 * proto.CHUNK):
            labels = rng.integers(0, high, size).astype(dtype)
            labels[: size // 2] = 0
            assert np.array_equal(proto.fast_present_labels(labels.reshape(size, 1, 1)), np.unique(labels))


def test_proposal_writes_the_same_frames(bench_run: tuple[Path, list[dict]], tmp_path: Path) -> None:
    """P1, P2, P4 and P6 change nothing in the written frames and segment items (tiny case: gaps in labels)."""
    import cases
    import prototype_fast_export as proto
    import slicerenv
    from DICOMLabelmapSegLib import mrml
    from DICOMLabelmapSegLib.app import slicerlogic
    from DICOMLabelmapSegLib.dicom import writer
    results, _ = bench_run
    case = cases.prepare("tiny", results / "cache")
    env = slicerenv.boot()
    node = mrml.node_from_segmentation(case.load_truth(), env.scene, name="tiny")
    sources = [str(f) for f in case.source_files]
    proto.use_source_positions(sources)
    patches = proto.Patches()
    signatures = []
    for patched in (False, True):
        patches.apply(patched, patched, patched, patched)
        try:
            files = slicerlogic.exportSegmentation(node, None, sources, tmp_path / str(patched), writer.ExportOptions())
        finally:
            patches.restore()
        signatures.append(proto.frames_signature(Path(files[0])))
    assert signatures[0] == signatures[1]
