"""Smoke test of the benchmark harness (bench/run.py) on the tiny case: one round, every format.

No timing assertions: it checks that the harness produces an export and an import row for every
format, that every format that can run here is lossless, that our LABELMAP files carry every
segment field exactly, and that the report and the plot are written.

The harness runs as a program (``python bench/run.py``), as users run it: bench/ and Testing/
do not import each other. The formats it knows come from its ``latest.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"

pytestmark = pytest.mark.mrml


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[Path, dict]:
    pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
    results = tmp_path_factory.mktemp("bench")
    command = [sys.executable, str(BENCH_DIR / "run.py"), "--cases", "tiny", "--reps", "1", "--in-process",
               "--no-docs", "--results", str(results)]
    done = subprocess.run(command, env={**os.environ, "DICOMLABELMAPSEG_TEST_DATA": str(data_dir)},
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return results, json.loads((results / "latest.json").read_text())


def test_every_format_exports_and_imports_losslessly(bench_run: tuple[Path, dict]) -> None:
    _, raw = bench_run
    rows_all = raw["rows"]
    assert raw["formats"]
    for name, family in raw["formats"].items():
        rows = {row["op"]: row for row in rows_all if row["format"] == name}
        assert "export" in rows, f"no export row for {name}"
        if rows["export"]["status"] == "unavailable":  # e.g. dcmqi not installed: the row says why
            assert rows["export"]["error"], name
            continue
        assert rows["export"]["status"] == "ok", (name, rows["export"].get("error"))
        assert rows["export"]["bytes"] > 0, name
        assert rows["import"]["status"] == "ok", (name, rows["import"].get("error"))
        assert rows["import"]["lossless"] is True, (name, rows["import"].get("check_detail"))
        if family.startswith("ours"):
            assert rows["import"]["metadata"] == "exact", (name, rows["import"].get("check_detail"))


def test_our_formats_ran(bench_run: tuple[Path, dict]) -> None:
    rows = bench_run[1]["rows"]
    ours = {row["format"] for row in rows if row["format"].startswith("ours-") and row["status"] == "ok"}
    assert {"ours-node-jpeg-ls", "ours-node-rle", "ours-node-jpeg2000", "ours-node-deflated",
            "ours-node-explicit", "ours-numpy-jpeg-ls"} <= ours


def test_report_and_plot_written(bench_run: tuple[Path, dict]) -> None:
    results, raw = bench_run
    text = (results / "report.md").read_text()
    for name in raw["formats"]:
        assert f"(`{name}`)" in text, name
    assert (results / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
