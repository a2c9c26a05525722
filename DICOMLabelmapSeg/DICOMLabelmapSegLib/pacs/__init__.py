"""PACS in and out: DICOMweb (STOW-RS, QIDO-RS, WADO-RS through dicomweb-client) and DIMSE C-STORE
(through pynetdicom). Receiver URLs: ``dicomweb+http(s)://host:port/path`` and ``dimse://AET@host:port``.

Needs the ``pacs`` extra (``pip install 'dicom-labelmap-seg[pacs]'``).
"""

from __future__ import annotations

from .send import SendReport, fetch_seg_series, send_files
from .url import Receiver, parse_receiver

__all__ = ["Receiver", "SendReport", "fetch_seg_series", "parse_receiver", "send_files"]
