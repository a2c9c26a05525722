"""Throughput of ``convert`` (BINARY SEG -> LABELMAP SEG) locally and on a Dask cluster; IDC projection.

Input: N copies (new UIDs) of one BINARY SEG -- by default the one ``make demo`` writes
(out/demo/binary/seg.dcm: TotalSegmentator's 31 segments on its 20-slice 512 x 512 CT, written by
highdicom). Runs: local ``-j 1``, ``-j 2``, and Dask with 1 and 2 worker processes (a real
``dask scheduler`` and ``dask worker`` on loopback). Prints series/s and s/series, and the
projected cost of converting the IDC TotalSegmentator collection (126,088 series) from the
measured per-series cost, scaled by slices per series (``--idc-slices``, an assumption).

    python bench/convert_throughput.py [--input SEG] [--series 12] [--idc-slices 300]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

REPO = Path(__file__).resolve().parent.parent
IDC_SERIES = 126_088
CLI = [sys.executable, "-m", "DICOMLabelmapSegLib.cli"]


def make_inputs(source: Path, folder: Path, count: int) -> int:
    ds = pydicom.dcmread(source)
    for index in range(count):
        ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        target = folder / f"series{index:04d}"
        target.mkdir(parents=True)
        ds.save_as(target / "seg.dcm", enforce_file_format=True)
    return len({(float(p.PlanePositionSequence[0].ImagePositionPatient[2]))
                for p in ds.PerFrameFunctionalGroupsSequence})


def timed_run(inputs: Path, out: Path, extra: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([*CLI, "convert", str(inputs), "-o", str(out), "-q", *extra], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dask_run(inputs: Path, out: Path, workers: int, scratch: Path) -> float:
    from distributed import Client

    dask = shutil.which("dask", path=str(Path(sys.executable).parent)) or "dask"
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--dashboard-address", ":0", "--no-show"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        procs.append(subprocess.Popen([dask, "worker", address, "--nworkers", str(workers), "--nthreads", "1",
                                       "--no-dashboard", "--local-directory", str(scratch)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        with Client(address, timeout="30s") as client:
            while len(client.scheduler_info()["workers"]) < workers:
                time.sleep(0.2)
            # warm the workers (imports, highdicom's standard tables) like a long run would be
            client.run(lambda: __import__("DICOMLabelmapSegLib.app.convert"))
        return timed_run(inputs, out, ["--dask-scheduler", address])
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", default=str(REPO / "out" / "demo" / "binary" / "seg.dcm"))
    parser.add_argument("--series", type=int, default=12)
    parser.add_argument("--idc-slices", type=int, default=300, help="assumed mean slices per IDC series")
    args = parser.parse_args()
    source = Path(args.input)
    if not source.is_file():
        print(f"{source} not found: run `make demo` first or give --input", file=sys.stderr)
        return 2
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        slices = make_inputs(source, root / "in", args.series)
        for name, run in (
            ("local -j 1", lambda out: timed_run(root / "in", out, ["-j", "1"])),
            ("local -j 2", lambda out: timed_run(root / "in", out, ["-j", "2"])),
            ("dask 1 worker", lambda out: dask_run(root / "in", out, 1, root)),
            ("dask 2 workers", lambda out: dask_run(root / "in", out, 2, root)),
        ):
            seconds = run(root / name.replace(" ", "_"))
            results[name] = seconds
            print(f"{name:<15} {args.series} series in {seconds:6.1f} s: {args.series / seconds:5.2f} series/s, "
                  f"{seconds / args.series:5.2f} s/series (wall clock, incl. start-up)")
    best = min(results.values()) / args.series
    per_slice = best / slices
    projected = IDC_SERIES * per_slice * args.idc_slices
    print(f"\ninput: {source.name}, {slices} slices; best wall-clock cost {best:.2f} s/series "
          f"({per_slice * 1000:.0f} ms per slice)")
    hours = projected / 3600
    print(f"IDC projection: {IDC_SERIES:,} series x {args.idc_slices} slices (assumed) x {per_slice * 1000:.0f} ms "
          f"= {hours:,.0f} h wall clock on this 2-core machine = {hours * 2:,.0f} core-hours "
          "(n cores: about core-hours / n)")
    print(json.dumps({"series": args.series, "slices": slices, "seconds": results, "idc_hours": projected / 3600}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
