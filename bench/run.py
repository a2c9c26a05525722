"""Benchmark: file size, export/import time and peak memory of LABELMAP SEG against its peers.

Run ``make bench`` (or ``.venv/bin/python bench/run.py``). Every measurement runs in a fresh
process (bench/worker.py). Repetitions are interleaved: each round runs every case in every
format before the next round starts, with the format order rotated, so that machine noise hits
all formats alike; the report gives medians. The slow peer (Slicer's built-in dcmqi BINARY path)
runs once per case, on the cases that allow it.

Examples::

    python bench/run.py                          # full run: updates BENCHMARK.md and bench/benchmark.png
    python bench/run.py --quick                  # small cases + 3 small scaling cases, 1 round, under bench/results/
    python bench/run.py --cases tsfull --formats 'ours-node-*,highdicom-*' --reps 5
    python bench/run.py --skip-slow-peers        # without the ~90 s / ~11 GB dcmqi BINARY export
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
sys.path[:0] = [str(BENCH_DIR), str(REPO_DIR / "DICOMLabelmapSeg")]

import cases  # noqa: E402
import peers  # noqa: E402
import report  # noqa: E402

DEFAULT_CASES = ["tsfull", "ts20", "synth120", "synth300", "overlap3"]
QUICK_CASES = ["ts20", "overlap3"]
#: The formats measured on the scaling cases (cases.SCALING) that are not default cases.
SCALING_FORMATS = ["ours-node-jpeg-ls", "highdicom-labelmap-jpeg-ls", "codec-jpeg-ls-1t"]
QUICK_SCALING = ["grid128", "seg10", "layers3"]


#: Rounds of tsfull (the case the targets are on): a fresh process's import spends a varying share of its time
#: in the kernel supplying new memory, so a median of five is steadier than one of three.
DEFAULT_REPS = 5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small cases (ts20, overlap3), 1 round")
    parser.add_argument("--cases", help=f"comma-separated case names (default: {','.join(DEFAULT_CASES)}; "
                        f"all: {','.join(cases.CASES)})")
    parser.add_argument("--formats", help="comma-separated format names or globs (default: all); "
                        f"formats: {', '.join(peers.all_formats())}")
    parser.add_argument("--reps", type=int, help=f"rounds (default {DEFAULT_REPS}; --quick: 1)")
    parser.add_argument("--other-reps", type=int, default=1,
                        help="rounds for the cases other than tsfull (default 1; the targets are on tsfull)")
    parser.add_argument("--skip-slow-peers", action="store_true",
                        help="skip Slicer's built-in dcmqi BINARY path (the tsfull export takes ~90 s and ~11 GB)")
    parser.add_argument("--no-scaling", action="store_true",
                        help="skip the scaling cases (grid size, segment and layer counts; 512x512x1000 included)")
    parser.add_argument("--scaling-reps", type=int, default=1, help="rounds for the scaling cases (default 1)")
    parser.add_argument("--cold", action="store_true", help="no warm-up: include lazy imports/initialisation")
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "results", help="output folder (gitignored)")
    parser.add_argument("--update-docs", action="store_true",
                        help="write BENCHMARK.md and bench/benchmark.png even for a partial run")
    parser.add_argument("--no-docs", action="store_true", help="never write BENCHMARK.md / bench/benchmark.png")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per measurement")
    parser.add_argument("--in-process", action="store_true",
                        help="measure in this process (for the smoke test: fast, but times and peaks are not clean)")
    return parser.parse_args(argv)


def select_formats(pattern: str | None) -> list[peers.Format]:
    formats = peers.all_formats()
    if not pattern:
        return list(formats.values())
    chosen = []
    for name, fmt in formats.items():
        if any(fnmatch.fnmatch(name, p.strip()) for p in pattern.split(",")):
            chosen.append(fmt)
    if not chosen:
        raise SystemExit(f"No format matches {pattern!r}; formats: {', '.join(formats)}")
    return chosen


def run_worker(spec: dict, timeout: float, log: Path, in_process: bool = False) -> dict:
    """Run one measurement in a fresh interpreter (or here); return its result row."""
    if in_process:
        import worker

        try:
            return worker.measure(spec)
        except Exception as error:
            return {**_key(spec), "status": "error", "error": f"{type(error).__name__}: {error}"}
    command = [sys.executable, str(BENCH_DIR / "worker.py"), json.dumps(spec)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO_DIR)
    except subprocess.TimeoutExpired:
        return {**_key(spec), "status": "error", "error": f"timed out after {timeout:.0f} s"}
    with open(log, "a") as f:
        f.write(f"### {json.dumps(spec)}\n{done.stdout[-5000:]}\n{done.stderr[-5000:]}\n")
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("BENCH_RESULT "):
            return json.loads(line[len("BENCH_RESULT "):])
    return {**_key(spec), "status": "error", "error": f"worker died (exit {done.returncode}): {done.stderr[-500:]}"}


def _key(spec: dict) -> dict:
    return {k: spec[k] for k in ("case", "format", "op", "rep")}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    case_names = args.cases.split(",") if args.cases else list(QUICK_CASES if args.quick else DEFAULT_CASES)
    scaling_only: set[str] = set()
    if not args.cases and not args.no_scaling:
        wanted = QUICK_SCALING if args.quick else [c for study in cases.SCALING.values() for c in study]
        scaling_only = {c for c in wanted if c not in case_names}
        case_names += [c for c in wanted if c not in case_names]
    unknown = [c for c in case_names if c not in cases.CASES]
    if unknown:
        raise SystemExit(f"Unknown case(s) {unknown}; cases: {', '.join(cases.CASES)}")
    formats = select_formats(args.formats)
    reps = args.reps or (1 if args.quick else DEFAULT_REPS)
    partial = bool(args.quick or args.cases or args.formats or (args.reps is not None and args.reps < 3))
    results_dir = args.results.resolve()
    cache = results_dir / "cache"
    scratch = results_dir / "scratch"
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    log = results_dir / f"log-{stamp}.txt"
    results_dir.mkdir(parents=True, exist_ok=True)

    started = time.time()
    machine = report.machine_info()
    print(f"Preparing cases {case_names} in {cache} ...", flush=True)
    prepared = {name: cases.prepare(name, cache) for name in case_names}
    cases.prepare("tiny", cache)  # for the workers' warm-up

    rows: list[dict] = []

    def measure(name: str, fmt, rep: int) -> None:  # noqa: ANN001 - a peers format
        out = scratch / name / fmt.name / f"rep{rep}"
        shutil.rmtree(out, ignore_errors=True)
        base = {"case": name, "format": fmt.name, "rep": rep, "out": str(out), "cache": str(cache),
                "warm": not (args.cold or args.in_process), "gc": not args.in_process}
        exported = run_worker({**base, "op": "export"}, args.timeout, log, args.in_process)
        rows.append(exported)
        _print(exported)
        if exported.get("status") == "ok":
            imported = run_worker({**base, "op": "import"}, args.timeout, log, args.in_process)
            rows.append(imported)
            _print(imported)
            if fmt.removes and imported.get("status") == "ok" and not args.in_process:
                removed = run_worker({**base, "op": "remove"}, args.timeout, log, args.in_process)
                rows.append(removed)
                _print(removed)
        shutil.rmtree(out, ignore_errors=True)

    for rep in range(reps):
        order = formats[rep % len(formats):] + formats[:rep % len(formats)]
        for name in case_names:
            if name != "tsfull" and args.other_reps is not None and rep >= args.other_reps:
                continue
            if name in scaling_only and rep >= args.scaling_reps:
                continue
            for fmt in order:
                if fmt.slow or (name in scaling_only and fmt.name not in SCALING_FORMATS):
                    continue
                measure(name, fmt, rep)
    # The slow peer last, once per case: its ~11 GB on tsfull leave the memory of this VM slow to hand out
    # for minutes (imports of every format took up to 2x longer in the rounds after it).
    for name in case_names:
        for fmt in formats:
            if fmt.slow and prepared[name].slow_peers and not args.skip_slow_peers and name not in scaling_only:
                measure(name, fmt, 0)
    machine["load_after"] = report.load_average()
    machine["duration_s"] = round(time.time() - started)

    raw = {"machine": machine, "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
           "cases": {name: prepared[name].summary() for name in case_names}, "scaling_only": sorted(scaling_only),
           "formats": {name: fmt.family for name, fmt in peers.all_formats().items()}}
    (results_dir / f"raw-{stamp}.json").write_text(json.dumps(raw, indent=1))
    (results_dir / "latest.json").write_text(json.dumps(raw, indent=1))
    write_docs = (not partial or args.update_docs) and not args.no_docs
    markdown_path = REPO_DIR / "BENCHMARK.md" if write_docs else results_dir / "report.md"
    plot_path = BENCH_DIR / "benchmark.png" if write_docs else results_dir / "benchmark.png"
    scaling_path = plot_path.with_name("scaling.png")
    scaling_name = None
    try:
        import plot

        plot.plot(raw, plot_path)
        if plot.plot_scaling(raw, scaling_path) is not None:
            scaling_name = str(scaling_path.relative_to(REPO_DIR)) if write_docs else scaling_path.name
    except Exception as error:  # a missing matplotlib must not lose the results
        print(f"plot failed: {error}", file=sys.stderr)
    text = report.render(raw, str(plot_path.relative_to(REPO_DIR)) if write_docs else plot_path.name, scaling_name)
    report.write_markdown(markdown_path, text)
    print(f"\nReport: {markdown_path}\nPlot: {plot_path}\nRaw: {results_dir / f'raw-{stamp}.json'}")
    print(report.summary_text(raw))
    return 0


def _print(row: dict) -> None:
    head = f"{row['case']:9s} {row['format']:28s} {row['op']:6s} rep{row.get('rep', 0)}"
    if row.get("status") != "ok":
        print(f"{head} {row.get('status')}: {str(row.get('error', ''))[:150]}", flush=True)
        return
    extra = f" {row['bytes'] / 1e6:9.3f} MB" if row["op"] == "export" else \
        f" lossless={row.get('lossless')} meta={row.get('metadata')}" if row["op"] == "import" else ""
    peak = max(row.get("peak_above_baseline_mb") or 0, row.get("child_peak_mb") or 0)
    print(f"{head} {row['seconds']:8.3f} s  peak {peak:8.1f} MB{extra}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
