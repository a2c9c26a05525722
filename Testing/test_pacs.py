"""PACS in and out against a real Orthanc (Debian's orthanc + orthanc-dicomweb), started on loopback ports.

Orthanc 1.10 (DCMTK 3.6.7) does not know the LABELMAP SOP Class: its C-STORE refuses it (the
fallback test), its STOW-RS accepts it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pydicom
import pytest
import validators
from DICOMLabelmapSegLib.app.convert import ConvertSettings, convert_series
from DICOMLabelmapSegLib.cli import main as cli
from DICOMLabelmapSegLib.dicom.reader import read_segmentation
from DICOMLabelmapSegLib.pacs import parse_receiver, send_files
from DICOMLabelmapSegLib.pacs.send import SendError

pytestmark = pytest.mark.services

PLUGIN_CANDIDATES = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so",)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _dicomweb_plugin() -> str | None:
    for candidate in PLUGIN_CANDIDATES:
        if Path(candidate).is_file():
            return candidate
    if shutil.which("dpkg"):
        listed = subprocess.run(["dpkg", "-L", "orthanc-dicomweb"], capture_output=True, text=True).stdout.split()
        return next((p for p in listed if p.endswith(".so") and "DicomWeb" in p), None)
    return None


@contextlib.contextmanager
def _running_orthanc(root: Path, **settings):
    """Start Orthanc with a generated config in ``root`` (free loopback ports); stop it afterwards."""
    binary = validators.tool_path("Orthanc") or (shutil.which("Orthanc", path="/usr/sbin:/usr/bin"))
    plugin = _dicomweb_plugin()
    if binary is None or plugin is None:
        validators.unavailable("Orthanc with its DICOMweb plugin not found: apt-get install orthanc orthanc-dicomweb")
    http_port, dicom_port = _free_port(), _free_port()
    config = {
        "Name": "test", "StorageDirectory": str(root / "db"), "IndexDirectory": str(root / "db"),
        "HttpPort": http_port, "DicomPort": dicom_port, "DicomAet": "ORTHANC", "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "HttpServerEnabled": True, "DicomServerEnabled": True,
        "Plugins": [plugin], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}, "DicomAlwaysAllowStore": True,
        **settings,
    }
    (root / "orthanc.json").write_text(json.dumps(config))
    log = open(root / "orthanc.log", "w")  # noqa: SIM115 - closed at teardown
    process = subprocess.Popen([binary, str(root / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{http_port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/system", timeout=1).read()
                break
            except OSError:
                if process.poll() is not None:
                    pytest.fail(f"Orthanc exited: {(root / 'orthanc.log').read_text()[-2000:]}")
                time.sleep(0.1)
        else:
            pytest.fail("Orthanc did not start within 10 s")
        yield {"http": base, "dicomweb": f"dicomweb+{base}/dicom-web", "dimse": f"dimse://ORTHANC@127.0.0.1:{dicom_port}"}
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    """A running Orthanc: http base URL, dicomweb and dimse receiver URLs."""
    with _running_orthanc(tmp_path_factory.mktemp("orthanc")) as urls:
        yield urls


@pytest.fixture(scope="module")
def labelmap(tmp_path_factory, data_dir: Path) -> list[Path]:
    """partial_overlaps.dcm (dcmqi, 5 overlapping BINARY segments) converted to a 3-layer JPEG-LS LABELMAP."""
    out = tmp_path_factory.mktemp("labelmap")
    return convert_series([data_dir / "dcmqi" / "partial_overlaps.dcm"], out, ConvertSettings())


def _masks(segmentation) -> dict[str, np.ndarray]:
    return {s.name: layer.labels == s.label_value for layer in segmentation.layers for s in layer.segments}


def _instances(base: str) -> list[str]:
    return json.loads(urllib.request.urlopen(base + "/instances", timeout=5).read())


def test_receiver_urls() -> None:
    assert parse_receiver("dimse://PACS@host:11112").port == 11112
    assert parse_receiver("dicomweb+http://h:8042/dicom-web").url == "http://h:8042/dicom-web"
    for bad in ("http://h/x", "dimse://host:104", "dimse://A@h:notaport"):
        with pytest.raises(ValueError):
            parse_receiver(bad)


def test_stow_rs_accepts_labelmap_and_convert_from_dicomweb_round_trips(orthanc, labelmap, data_dir, tmp_path):
    report = send_files(labelmap, orthanc["dicomweb"])
    assert [how for _, how in report.sent] == ["as is"] * 3
    stored = pydicom.dcmread(labelmap[0], stop_before_pixels=True)
    # QIDO-RS + WADO-RS: fetch the LABELMAP series back and convert it again (LABELMAP -> LABELMAP)
    code = cli.main(["convert", "--from", orthanc["dicomweb"], "--series", str(stored.SeriesInstanceUID),
                     "-o", str(tmp_path / "again"), "-q", "-j", "1"])
    assert code == 0
    again = read_segmentation(sorted((tmp_path / "again").glob("*.dcm")))
    expected = _masks(read_segmentation(data_dir / "dcmqi" / "partial_overlaps.dcm"))
    actual = _masks(again)
    assert sorted(actual) == sorted(expected)
    assert all(np.array_equal(actual[name], expected[name]) for name in expected)


def test_c_store_refuses_labelmap_without_fallback(orthanc, labelmap) -> None:
    before = len(_instances(orthanc["http"]))
    with pytest.raises(SendError, match="--fallback binary"):
        send_files(labelmap, orthanc["dimse"])
    assert len(_instances(orthanc["http"])) == before


def test_c_store_falls_back_to_binary_with_the_same_segments(orthanc, labelmap, data_dir, tmp_path) -> None:
    report = send_files(labelmap[:1], orthanc["dimse"], fallback="binary")
    assert [how for _, how in report.sent] == ["as BINARY SEG (LABELMAP refused)"]
    binary_uid = None
    for instance in _instances(orthanc["http"]):
        tags = json.loads(urllib.request.urlopen(f"{orthanc['http']}/instances/{instance}/simplified-tags").read())
        if tags.get("SOPClassUID") == "1.2.840.10008.5.1.4.1.1.66.4":
            binary_uid = instance
    assert binary_uid is not None
    data = urllib.request.urlopen(f"{orthanc['http']}/instances/{binary_uid}/file").read()
    (tmp_path / "binary.dcm").write_bytes(data)
    assert validators.dciodvfy_errors(tmp_path / "binary.dcm") == []
    first_layer = read_segmentation(labelmap[:1])
    back = _masks(read_segmentation(tmp_path / "binary.dcm"))
    expected = _masks(first_layer)
    assert sorted(back) == sorted(expected)
    assert all(np.array_equal(back[name], expected[name]) for name in expected)


def test_cli_send_exit_codes(orthanc, labelmap, capsys) -> None:
    assert cli.main(["send", str(labelmap[0]), "--to", orthanc["dimse"]]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--fallback binary" in err
    assert cli.main(["send", str(labelmap[0]), "--to", "ftp://nowhere"]) == 1
    assert cli.main(["send", str(labelmap[0]), "--to", orthanc["dicomweb"]]) == 0


def test_convert_then_send_reports_what_was_sent(orthanc, data_dir, tmp_path, capsys) -> None:
    code = cli.main(["convert", str(data_dir / "dcmqi" / "liver.dcm"), "-o", str(tmp_path / "out"),
                     "--send", orthanc["dimse"], "--fallback", "binary", "-j", "1"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "sent 1 file(s) to dimse://ORTHANC@" in err and "as BINARY SEG (LABELMAP refused)" in err
    code = cli.main(["convert", str(data_dir / "dcmqi" / "liver.dcm"), "-o", str(tmp_path / "out"),
                     "--send", orthanc["dimse"], "-j", "1"])
    err = capsys.readouterr().err
    assert code == 1 and "--fallback binary" in err


def test_export_then_send_over_stow_rs(orthanc, tmp_path, capsys) -> None:
    from DICOMLabelmapSegLib.dicom.source import geometry_from_source, read_source_series
    from DICOMLabelmapSegLib.formats import fileio
    from DICOMLabelmapSegLib.model import Geometry
    from synthetic import make_affine, make_ct_series, make_segmentation

    make_ct_series(tmp_path / "ct", shape=(3, 8, 9), affine=make_affine())
    geometry = geometry_from_source(read_source_series(tmp_path / "ct"))
    seg = fileio.write_seg_nrrd(make_segmentation(Geometry(geometry.shape, geometry.affine), layers=[[1, 2]], seed=1),
                                tmp_path / "s.seg.nrrd")
    before = len(_instances(orthanc["http"]))
    code = cli.main(["export", str(seg), "-r", str(tmp_path / "ct"), "-o", str(tmp_path / "out"),
                     "--send", orthanc["dicomweb"]])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "sent 1 file(s) to http://127.0.0.1" in err and len(_instances(orthanc["http"])) == before + 1


def test_c_store_sends_uncompressed_when_the_syntax_is_refused(data_dir, tmp_path) -> None:
    """An Orthanc that refuses RLE: the RLE file goes uncompressed, the same pixels arrive."""
    from pydicom.uid import RLELossless

    ds = pydicom.dcmread(data_dir / "highdicom" / "ct_image.dcm")
    original = ds.pixel_array.copy()
    ds.compress(RLELossless)
    ds.save_as(tmp_path / "ct_rle.dcm", enforce_file_format=True)
    with _running_orthanc(tmp_path, RleTransferSyntaxAccepted=False) as server:
        report = send_files([tmp_path / "ct_rle.dcm"], server["dimse"])
        assert [how for _, how in report.sent] == ["uncompressed (its transfer syntax was refused)"]
        (instance,) = _instances(server["http"])
        stored = urllib.request.urlopen(f"{server['http']}/instances/{instance}/file").read()
    (tmp_path / "stored.dcm").write_bytes(stored)
    back = pydicom.dcmread(tmp_path / "stored.dcm")
    assert not back.file_meta.TransferSyntaxUID.is_compressed
    assert np.array_equal(back.pixel_array, original)
