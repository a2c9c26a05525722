"""Send SEG files to a receiver, aware of what it accepts; fetch SEG series from a DICOMweb server.

DIMSE: presentation contexts are negotiated first (each file's SOP Class with its own transfer
syntax and the uncompressed ones). A file whose syntax is refused is sent uncompressed (decoded
losslessly first); a LABELMAP whose SOP Class is refused is sent as a BINARY SEG of the same
segments only with ``fallback='binary'``, otherwise it is reported as refused.
DICOMweb: STOW-RS; a refused instance is retried uncompressed, then (``fallback='binary'``) as BINARY.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from ..enums import SopClass
from ..errors import LabelmapSegError
from .url import Receiver, parse_receiver

logger = logging.getLogger(__name__)

LABELMAP_SOP_CLASS = SopClass.LABELMAP_SEGMENTATION_STORAGE.value
SEGMENTATION_SOP_CLASS = SopClass.SEGMENTATION_STORAGE.value
_NATIVE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
CALLING_AE_TITLE = "DICOMLABELMAPSEG"


class SendError(LabelmapSegError):
    """The receiver refused (some of) the files, or cannot be reached."""


@dataclasses.dataclass
class SendReport:
    """What was sent: per file, how (as is, uncompressed, as BINARY) or why not."""

    receiver: str
    sent: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (file, how)

    def summary(self) -> str:
        how: dict[str, int] = {}
        for _, way in self.sent:
            how[way] = how.get(way, 0) + 1
        parts = ", ".join(f"{count} {way}" for way, count in sorted(how.items()))
        return f"sent {len(self.sent)} file(s) to {self.receiver}: {parts}"


def send_files(files: Sequence[str | os.PathLike[str]], to: str, fallback: str | None = None) -> SendReport:
    """Send ``files`` to the receiver URL ``to``; raise :class:`SendError` if any is refused."""
    receiver = parse_receiver(to)
    # Headers first (what to negotiate); each file is read whole only when it is sent.
    datasets: list[tuple[str, Dataset]] = [
        (str(f), pydicom.dcmread(os.fspath(f), stop_before_pixels=True)) for f in files
    ]
    if receiver.kind == "dimse":
        return _send_dimse(datasets, receiver, fallback)
    return _send_dicomweb(datasets, receiver, fallback)


def _native_copy(ds: Dataset) -> Dataset:
    """``ds`` (read whole) with its pixel data decoded (lossless) into Explicit VR Little Endian."""
    copy = ds
    if copy.file_meta.TransferSyntaxUID in _NATIVE:
        return copy
    if copy.file_meta.TransferSyntaxUID == pydicom.uid.DeflatedExplicitVRLittleEndian:
        copy.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        return copy
    copy.decompress()
    return copy


def _binary_copy(path: str) -> Dataset:
    from ..app.convert import binary_dataset

    return binary_dataset([path])


def _send_dimse(datasets: list[tuple[str, Dataset]], receiver: Receiver, fallback: str | None) -> SendReport:
    from pynetdicom import AE

    ae = AE(ae_title=CALLING_AE_TITLE)
    wanted: dict[str, set[str]] = {}
    for _, ds in datasets:
        syntaxes = wanted.setdefault(str(ds.SOPClassUID), set(_NATIVE))
        syntaxes.add(str(ds.file_meta.TransferSyntaxUID))
    if fallback == "binary" and LABELMAP_SOP_CLASS in wanted:
        wanted.setdefault(SEGMENTATION_SOP_CLASS, set(_NATIVE))
    for sop_class, syntaxes in wanted.items():
        for syntax in sorted(syntaxes):
            ae.add_requested_context(sop_class, syntax)
    assoc = ae.associate(receiver.host, receiver.port, ae_title=receiver.ae_title)
    if not assoc.is_established:
        if assoc.is_aborted and not assoc.is_rejected:  # it answered, but accepted none of our contexts
            refused = ", ".join(sorted(wanted))
            hint = " (add --fallback binary to send a BINARY SEG instead)" if LABELMAP_SOP_CLASS in wanted else ""
            raise SendError(f"{receiver} does not accept SOP Class {refused}{hint}.")
        raise SendError(f"{receiver}: no association (is the server running, is the AE title right?).")
    report = SendReport(str(receiver))
    try:
        accepted: dict[str, set[str]] = {}
        for context in assoc.accepted_contexts:
            accepted.setdefault(str(context.abstract_syntax), set()).add(str(context.transfer_syntax[0]))
        for path, header in datasets:
            sop_class, syntax = str(header.SOPClassUID), str(header.file_meta.TransferSyntaxUID)
            ds, how = pydicom.dcmread(path), "as is"
            if sop_class not in accepted:
                if sop_class == LABELMAP_SOP_CLASS and fallback == "binary" and SEGMENTATION_SOP_CLASS in accepted:
                    ds, how = _binary_copy(path), "as BINARY SEG (LABELMAP refused)"
                    sop_class, syntax = SEGMENTATION_SOP_CLASS, str(ds.file_meta.TransferSyntaxUID)
                else:
                    hint = ""
                    if sop_class == LABELMAP_SOP_CLASS:
                        hint = " (add --fallback binary to send a BINARY SEG instead)"
                    raise SendError(f"{receiver} does not accept SOP Class {sop_class} ({path}){hint}.")
            if syntax not in accepted[sop_class]:
                ds, how = _native_copy(ds), "uncompressed (its transfer syntax was refused)" if how == "as is" else how
            status = assoc.send_c_store(ds)
            code = getattr(status, "Status", None)
            if code is None or code not in (0x0000, 0xB000, 0xB007, 0xB006):
                raise SendError(f"{receiver} refused {path} (C-STORE status 0x{code or 0:04X}).")
            report.sent.append((path, how))
    finally:
        assoc.release()
    return report


def _dicomweb_client(receiver: Receiver) -> Any:
    from dicomweb_client.api import DICOMwebClient

    return DICOMwebClient(url=receiver.url)


def _send_dicomweb(datasets: list[tuple[str, Dataset]], receiver: Receiver, fallback: str | None) -> SendReport:
    import requests

    client = _dicomweb_client(receiver)
    report = SendReport(str(receiver))
    for path, header in datasets:
        attempts = [("as is", lambda path=path: pydicom.dcmread(path)),
                    ("uncompressed", lambda path=path: _native_copy(pydicom.dcmread(path)))]
        if fallback == "binary" and str(header.SOPClassUID) == LABELMAP_SOP_CLASS:
            attempts.append(("as BINARY SEG (LABELMAP refused)", lambda path=path: _binary_copy(path)))
        problem = ""
        for how, make in attempts:
            try:
                response = client.store_instances(datasets=[make()])
            except requests.exceptions.ConnectionError as error:
                raise SendError(f"{receiver}: cannot connect ({type(error).__name__}).") from None
            except requests.exceptions.HTTPError as error:
                problem = str(error)
                continue
            if response is not None and response.get("FailedSOPSequence"):
                problem = "the server listed it as failed"
                continue
            report.sent.append((path, how))
            break
        else:
            raise SendError(f"{receiver} refused {path}: {problem}")
    return report


def fetch_seg_series(
    url: str, folder: str | os.PathLike[str], studies: Sequence[str] | None = None,
    series: Sequence[str] | None = None,
) -> list[Path]:
    """Download the SEG series matching ``studies``/``series`` (QIDO-RS, WADO-RS) into ``folder``; the files."""
    receiver = parse_receiver(url)
    if receiver.kind != "dicomweb":
        raise SendError(f"--from needs a DICOMweb URL (dicomweb+http://...), not {url}.")
    client = _dicomweb_client(receiver)
    filters: list[dict[str, str]] = []
    for study in studies or [None]:  # type: ignore[list-item]
        for one in series or [None]:  # type: ignore[list-item]
            search = {"Modality": "SEG"}
            if study:
                search["StudyInstanceUID"] = study
            if one:
                search["SeriesInstanceUID"] = one
            filters.append(search)
    found: dict[str, str] = {}
    for search in filters:
        for item in client.search_for_series(search_filters=search):
            study_uid = item.get("0020000D", {}).get("Value", [""])[0]
            series_uid = item.get("0020000E", {}).get("Value", [""])[0]
            if series_uid:
                found[series_uid] = study_uid
    written = []
    for series_uid, study_uid in found.items():
        target = Path(folder) / series_uid
        target.mkdir(parents=True, exist_ok=True)
        for ds in client.retrieve_series(study_uid, series_uid):
            path = target / f"{ds.SOPInstanceUID}.dcm"
            ds.save_as(path, enforce_file_format=True)
            written.append(path)
    return written
