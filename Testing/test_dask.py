"""``--dask-scheduler``: the same conversion on a real dask.distributed cluster (a scheduler and two
worker processes started here on loopback) gives files identical to the local run."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest
import validators
from DICOMLabelmapSegLib.cli import main as cli

pytestmark = pytest.mark.services


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """tcp://127.0.0.1:PORT of a running scheduler with two single-threaded worker processes."""
    dask = validators.tool_path("dask")
    if dask is None:
        validators.unavailable("'dask' CLI not found: pip install 'dicom-labelmap-seg[dask]'")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    logs = tmp_path_factory.mktemp("dask")
    processes = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                   "--dashboard-address", ":0", "--no-show"],
                                  stdout=open(logs / "scheduler.log", "w"), stderr=subprocess.STDOUT)]  # noqa: SIM115
    try:
        from distributed import Client

        processes.append(subprocess.Popen(
            [dask, "worker", address, "--nworkers", "2", "--nthreads", "1", "--host", "127.0.0.1",
             "--no-dashboard", "--local-directory", str(logs)],
            stdout=open(logs / "worker.log", "w"), stderr=subprocess.STDOUT))  # noqa: SIM115
        deadline = time.monotonic() + 60
        with Client(address, timeout="30s") as client:
            while len(client.scheduler_info()["workers"]) < 2:
                if time.monotonic() > deadline:
                    pytest.fail(f"dask workers did not start: {(logs / 'worker.log').read_text()[-2000:]}")
                time.sleep(0.2)
        yield address
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()


def test_dask_run_equals_local_run(scheduler, data_dir: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    names = ["dcmqi/partial_overlaps.dcm", "dcmqi/liver.dcm", "highdicom/seg_image_ct_binary_overlap.dcm"]
    for name in names:
        (inputs / Path(name).name).write_bytes((data_dir / name).read_bytes())
    assert cli.main(["convert", str(inputs), "-o", str(tmp_path / "local"), "-q", "-j", "1"]) == 0
    report = tmp_path / "dask.jsonl"
    assert cli.main(["convert", str(inputs), "-o", str(tmp_path / "dask"), "-q", "--dask-scheduler", scheduler,
                     "--report", str(report)]) == 0
    local = {p.relative_to(tmp_path / "local"): p.read_bytes() for p in (tmp_path / "local").rglob("*.dcm")}
    remote = {p.relative_to(tmp_path / "dask"): p.read_bytes() for p in (tmp_path / "dask").rglob("*.dcm")}
    assert len(local) == 6 and remote == local
    assert len(report.read_text().splitlines()) == 3


def test_unreachable_scheduler_is_one_line_exit_1(tmp_path: Path, data_dir: Path, capsys) -> None:
    code = cli.main(["convert", str(data_dir / "dcmqi" / "liver.dcm"), "-o", str(tmp_path / "o"),
                     "--dask-scheduler", f"tcp://127.0.0.1:{_free_port()}"])
    assert code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Dask scheduler" in err


