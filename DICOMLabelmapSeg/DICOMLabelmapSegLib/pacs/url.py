"""Receiver URLs: ``dicomweb+http://host:port/dicom-web`` and ``dimse://AET@host:port``."""

from __future__ import annotations

import dataclasses
from urllib.parse import urlsplit

from ..errors import LabelmapSegError

DEFAULT_DIMSE_PORT = 104


class ReceiverURLError(LabelmapSegError, ValueError):
    """A receiver URL we cannot use."""


@dataclasses.dataclass(frozen=True)
class Receiver:
    """Where to send: ``kind`` 'dicomweb' (``url`` is the HTTP base URL) or 'dimse' (AE title, host, port)."""

    kind: str
    url: str = ""
    ae_title: str = ""
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        return self.url if self.kind == "dicomweb" else f"dimse://{self.ae_title}@{self.host}:{self.port}"


def parse_receiver(text: str) -> Receiver:
    """The :class:`Receiver` of a URL; a :class:`ReceiverURLError` says what a valid one looks like."""
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme in ("dicomweb+http", "dicomweb+https"):
        if not parts.hostname:
            raise ReceiverURLError(f"'{text}' names no host; e.g. dicomweb+http://localhost:8042/dicom-web")
        return Receiver("dicomweb", url=text.split("+", 1)[1].rstrip("/"))
    if scheme == "dimse":
        if not parts.username or not parts.hostname:
            raise ReceiverURLError(f"'{text}' needs the called AE title and a host: dimse://AET@host:port")
        if len(parts.username) > 16:
            raise ReceiverURLError(f"AE title '{parts.username}' is longer than 16 characters.")
        try:
            port = parts.port or DEFAULT_DIMSE_PORT
        except ValueError:
            raise ReceiverURLError(f"'{text}': the port is not a number from 1 to 65535.") from None
        return Receiver("dimse", ae_title=parts.username, host=parts.hostname, port=port)
    raise ReceiverURLError(
        f"'{text}' is not a receiver URL: use dicomweb+http://host:port/path (STOW-RS) or dimse://AET@host:port "
        "(C-STORE)."
    )
