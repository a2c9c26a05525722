"""One measurement in a fresh process: export or import one case in one format.

Usage (run.py does this)::

    python bench/worker.py '{"case": "tsfull", "format": "ours-node-jpeg-ls", "op": "export",
                             "out": "/tmp/x", "cache": "bench/results/cache"}'

Untimed setup first: a warm-up export+import of the tiny case (so that lazy imports and one-time
initialisation are not measured; ``"warm": false`` turns it off), then building the Slicer node
the user has or booting the scene. Then the peak-RSS high-water mark is reset
(``/proc/self/clear_refs``), the baseline RSS is read, and only the operation is timed. Peak
memory is the process high-water mark above that baseline; for external tools (dcmqi) the
largest peak RSS of a tool run during the operation is reported too (os.wait4). The import result is then
compared with the truth (untimed). The last stdout line is ``BENCH_RESULT {json}``.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR), str(BENCH_DIR.parent / "DICOMLabelmapSeg")]


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def warm_up(fmt, cache: Path, scratch: Path) -> None:  # noqa: ANN001
    """Export and import the tiny case once: lazy imports and one-time initialisation are not measured."""
    import shutil
    import tempfile

    import cases

    tiny = cases.prepare("tiny", cache)
    scratch.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="warm-", dir=scratch))
    try:
        state = fmt.setup_export(tiny, tiny.load_truth())
        files = fmt.export(state, folder)
        fmt.import_(fmt.setup_import(tiny), files)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class ThreadSampler:
    """Samples the process's thread count (/proc/self/status) while an operation runs."""

    def __init__(self, interval: float = 0.005) -> None:
        import threading

        self.interval = interval
        self.baseline = _status_kb("Threads")
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _status_kb("Threads"))
            self._stop.wait(self.interval)

    def __enter__(self) -> ThreadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def extra(self) -> int:
        """Threads the operation started (the sampler itself not counted)."""
        return max(self.peak - self.baseline - 1, 0)


def measure(spec: dict) -> dict:
    import cases
    import peers

    case = cases.PreparedCase(spec["case"], "", Path(spec["cache"]) / spec["case"], True)
    fmt = peers.all_formats()[spec["format"]]
    out_dir = Path(spec["out"])
    result: dict = {"case": spec["case"], "format": spec["format"], "op": spec["op"], "rep": spec.get("rep", 0)}
    reason = fmt.available()
    if reason:
        return {**result, "status": "unavailable", "error": reason}
    if spec.get("warm", True):
        warm_up(fmt, Path(spec["cache"]), out_dir.parent)
    try:
        if spec["op"] == "export":
            for source in case.source_files:  # as after loading the series in Slicer: files in the page cache
                source.read_bytes()
            truth = case.load_truth()
            state = fmt.setup_export(case, truth)
            out_dir.mkdir(parents=True, exist_ok=True)
        else:
            files = [Path(p) for p in json.loads((out_dir / "files.json").read_text())]
            state = fmt.setup_import(case)
            if spec["op"] == "remove":  # untimed: the import whose result is then removed
                if not fmt.removes:
                    raise peers.NotApplicable("nothing to remove")
                imported = [fmt.import_(state, files)]
    except peers.NotApplicable as reason:
        return {**result, "status": "n/a", "error": str(reason)}
    if spec.get("gc", True):
        gc.collect()
    reset = _reset_peak()
    peers.CHILD_PEAK_KB[0] = 0
    baseline = _status_kb("VmRSS")
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    if spec.get("profile"):
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    sampler = ThreadSampler()
    try:
        with sampler:
            if spec["op"] == "export":
                output = fmt.export(state, out_dir)
            elif spec["op"] == "remove":
                output = fmt.remove(state, imported)
            else:
                output = fmt.import_(state, files)
    finally:
        fmt.teardown()
    if spec.get("profile"):
        profiler.disable()
        profiler.dump_stats(spec["profile"])
    seconds = time.perf_counter() - start
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak = _status_kb("VmHWM")
    child_peak_kb = peers.CHILD_PEAK_KB[0]
    result.update(
        status="ok",
        seconds=seconds,
        cpu_seconds=(usage1.ru_utime + usage1.ru_stime - usage0.ru_utime - usage0.ru_stime
                     + children1.ru_utime + children1.ru_stime - children0.ru_utime - children0.ru_stime),
        baseline_mb=baseline / 1024,
        peak_above_baseline_mb=(peak - baseline) / 1024 if reset else None,
        child_peak_mb=child_peak_kb / 1024,
        extra_threads=sampler.extra,
        load=float(Path("/proc/loadavg").read_text().split()[0]),
    )
    if spec["op"] == "export":
        files = [str(p) for p in output]
        (out_dir / "files.json").write_text(json.dumps(files))
        result["bytes"] = peers.total_size(output)
        result["files"] = len(files)
    elif spec["op"] == "import":
        check = fmt.check(case.load_truth(), output)
        result.update(lossless=check.voxels, metadata=check.metadata, check_detail=check.detail)
    return result


def main() -> int:
    spec = json.loads(sys.argv[1])
    try:
        result = measure(spec)
    except Exception as error:  # report, do not crash the harness
        result = {"case": spec["case"], "format": spec["format"], "op": spec["op"], "rep": spec.get("rep", 0),
                  "status": "error", "error": f"{type(error).__name__}: {error}"[:2000],
                  "traceback": traceback.format_exc()[-3000:]}
    sys.stdout.flush()
    print("BENCH_RESULT " + json.dumps(result), flush=True)
    os._exit(0)  # skip interpreter teardown (VTK/MRML destructors): not part of any measurement


if __name__ == "__main__":
    sys.exit(main())
