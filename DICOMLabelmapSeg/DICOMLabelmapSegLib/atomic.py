"""Write a set of files all or none, with the umask's permissions.

Every writer of the library goes through :class:`AtomicFiles`:

* each file is written under a temporary name ``.<final name>.<random>.partial`` in its
  destination folder (:func:`is_temporary_name` tells readers to skip such names);
* the temporaries are created with mode ``0o666 & ~umask``, like any file a program creates
  with ``open()``;
* :meth:`AtomicFiles.commit` flushes every temporary to disk (fsync) and only then renames
  them to their final names, so a set (a DICOM series, a NIfTI file and its JSON sidecar)
  appears as a unit;
* on any error (or when the ``with`` block raises) the temporaries are removed, files the set
  replaced are put back, and folders the set created are removed when empty: nothing new
  remains.

Example
-------
>>> with AtomicFiles() as files:                     # doctest: +SKIP
...     files.write_bytes("out/case.nrrd", header + payload)
...     image.to_filename(files.temporary("out/case.nii.gz"))
"""

from __future__ import annotations

import contextlib
import os
import secrets

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType

__all__ = [
    "TEMPORARY_SUFFIX",
    "AtomicFiles",
    "is_temporary_name",
    "remove_stale_temporaries",
    "temporary_name",
    "write_atomically",
]

TEMPORARY_SUFFIX = ".partial"
_NEW_FILE_MODE = 0o666  # the umask is applied by the operating system


def temporary_name(final_name: str) -> str:
    """A fresh temporary name for ``final_name``: ``.<final name>.<random>.partial``."""
    return f".{final_name}.{secrets.token_hex(4)}{TEMPORARY_SUFFIX}"


def is_temporary_name(name: str | os.PathLike[str]) -> bool:
    """Whether ``name`` (a file name or path) is one of our temporaries; readers skip these."""
    base = os.path.basename(os.fspath(name))
    return base.startswith(".") and base.endswith(TEMPORARY_SUFFIX) and len(base) > len(TEMPORARY_SUFFIX) + 1


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove temporaries left in ``folder`` (not recursive) by a killed writer; return what was removed.

    A writer holds a shared lock (``flock``) on each of its temporaries until it commits or
    discards them, and the kernel drops the lock when the writer dies (even by SIGKILL): a
    temporary that can be locked exclusively is stale, one that cannot is being written now
    and is left alone. Where ``flock`` does not exist (Windows), nothing is removed.
    """
    if fcntl is None:
        return []
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for entry in entries:
        if not (is_temporary_name(entry.name) and entry.is_file(follow_symlinks=False)):
            continue
        try:
            descriptor = os.open(entry.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live writer holds it
        finally:
            os.close(descriptor)  # (closing also releases the exclusive lock)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def _hold(path: Path) -> int | None:
    """Open ``path`` and take the shared lock that marks it as a live temporary; the descriptor (or None)."""
    if fcntl is None:
        return None
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        pass
    return descriptor


class AtomicFiles:
    """A set of files written under temporary names and renamed together by :meth:`commit`.

    Use it as a context manager: leaving the block normally commits, an exception (including
    ``KeyboardInterrupt``) discards. Final paths must be distinct.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []  # (temporary, final)
        self._created_folders: list[Path] = []
        self._closed = False
        self._held: list[int] = []  # descriptors holding the locks that mark our temporaries as live
        self._cleaned: set[Path] = set()  # folders already rid of stale temporaries

    def temporary(self, final: str | os.PathLike[str]) -> Path:
        """Reserve the temporary file for ``final`` (created empty, umask permissions) and return its path.

        The caller writes the content to the returned path (by name or by opening it).
        """
        if self._closed:
            raise RuntimeError("This set of files was already committed or discarded.")
        final = Path(final)
        if any(final == existing for _, existing in self._pending):
            raise ValueError(f"{final} is already part of this set of files.")
        self._make_folder(final.parent)
        if final.parent not in self._cleaned:  # a killed earlier writer's leftovers go before we add ours
            self._cleaned.add(final.parent)
            remove_stale_temporaries(final.parent)
        while True:
            temporary = final.parent / temporary_name(final.name)
            # registered before it exists: an interrupt (Ctrl-C, SIGTERM) right after the creation still
            # finds it in the list that discard() removes
            self._pending.append((temporary, final))
            try:
                descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _NEW_FILE_MODE)
            except FileExistsError:  # pragma: no cover - 32 random bits collided
                self._pending.pop()
                continue
            except BaseException:
                self._pending.pop()
                raise
            os.close(descriptor)
            break
        held = _hold(temporary)
        if held is not None:
            self._held.append(held)
        return temporary

    def write_bytes(self, final: str | os.PathLike[str], data: bytes | Iterable[bytes]) -> Path:
        """Write ``data`` (bytes, or an iterable of byte chunks) as the content of ``final``; return its temporary."""
        temporary = self.temporary(final)
        chunks = [data] if isinstance(data, (bytes, bytearray, memoryview)) else data
        with open(temporary, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
        return temporary

    def commit(self) -> list[Path]:
        """Flush every temporary to disk, then rename all to their final names; return the final paths.

        If a rename fails, the files renamed so far are taken back (a replaced file is restored)
        and the error propagates.
        """
        if self._closed:
            raise RuntimeError("This set of files was already committed or discarded.")
        try:
            for temporary, _ in self._pending:
                _fsync_file(temporary)
            self._rename_all()
        except BaseException:
            self.discard()
            raise
        self._closed = True
        self._release()
        for folder in {final.parent for _, final in self._pending}:
            _fsync_folder(folder)
        return [final for _, final in self._pending]

    def _release(self) -> None:
        for descriptor in self._held:
            with contextlib.suppress(OSError):
                os.close(descriptor)
        self._held.clear()

    def discard(self) -> None:
        """Remove every temporary and the folders this set created (when empty)."""
        self._closed = True
        for temporary, _ in self._pending:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
        self._release()
        for folder in reversed(self._created_folders):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty

    def __enter__(self) -> AtomicFiles:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._closed:
            return
        if exc_type is None:
            self.commit()
        else:
            self.discard()

    # ------------------------------------------------------------------------------------------

    def _make_folder(self, folder: Path) -> None:
        missing = []
        for candidate in (folder, *folder.parents):
            if candidate.exists():
                break
            missing.append(candidate)
        folder.mkdir(parents=True, exist_ok=True)
        self._created_folders.extend(reversed(missing))

    def _rename_all(self) -> None:
        backups: list[tuple[Path, Path]] = []  # (backup, final) of files this set replaces
        attempted: list[tuple[Path, Path]] = []  # (temporary, final) of the renames begun
        renamed: list[Path] = []
        try:
            for _, final in self._pending:
                if os.path.lexists(final):
                    backup = final.parent / temporary_name(final.name)
                    backups.append((backup, final))  # before it exists: an interrupt still removes it
                    try:
                        os.link(final, backup, follow_symlinks=False)
                    except OSError:  # no hard links here: the old file cannot be restored
                        backups.pop()
                        continue
                    held = _hold(backup)  # a concurrent cleaner must not take the backup for stale
                    if held is not None:
                        self._held.append(held)
            for temporary, final in self._pending:
                attempted.append((temporary, final))  # before the rename: an interrupt right after it is seen
                os.replace(temporary, final)
        except BaseException:
            # renamed: the temporary is gone (an interrupt may have come between the rename and the list)
            renamed.extend(final for temporary, final in attempted if not os.path.lexists(temporary))
            restored = {final for _, final in backups}
            for final in renamed:
                if final not in restored:
                    with contextlib.suppress(FileNotFoundError):
                        final.unlink()
            for backup, final in backups:
                if final in renamed:
                    os.replace(backup, final)
                else:
                    backup.unlink(missing_ok=True)
            raise
        for backup, _ in backups:
            backup.unlink(missing_ok=True)


def write_atomically(files: Mapping[str | os.PathLike[str], bytes | Iterable[bytes]]) -> list[Path]:
    """Write ``{final path: content}`` all or none; return the final paths in the mapping's order."""
    with AtomicFiles() as atomic:
        for final, data in files.items():
            atomic.write_bytes(final, data)
    return [Path(final) for final in files]


def _fsync_file(path: Path) -> None:
    descriptor = os.open(path, os.O_RDWR)  # Windows flushes only handles open for writing
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_folder(folder: Path) -> None:
    """Make the renames durable where the platform allows it (not on Windows)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
