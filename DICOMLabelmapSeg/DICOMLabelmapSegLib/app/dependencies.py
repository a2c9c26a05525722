"""Which Python packages loading or exporting needs here, and what to tell the user about them.

The library's own requirements are listed once, in the module's ``Resources/requirements.txt``
(read here, by Slicer 5.12's ``slicer.packaging.load_requirements`` convention, and by the static
tests). Codec packages come from the transfer syntax registry (:mod:`..dicom.syntax`).

:func:`installPlan` decides the whole dialog chain before anything is shown, so that a first load
on Slicer 5.10 (pydicom 2.4 already imported) is one question ("install and restart?") and not a
chain of warnings, prompts, a failed load and error boxes.
"""

from __future__ import annotations

import enum
import importlib.metadata
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..dicom.syntax import TransferSyntax

#: pydicom 3 and highdicom need Python 3.10+: Slicer 5.10 (Python 3.12) and later; Slicer 5.8 has Python 3.9.
MINIMUM_PYTHON = (3, 10)

#: ``Resources/requirements.txt`` of the Slicer module (next to the DICOMLabelmapSegLib folder).
REQUIREMENTS_FILE = Path(__file__).resolve().parents[2] / "Resources" / "requirements.txt"


def readRequirements(path: Path = REQUIREMENTS_FILE) -> list[str]:
    """The ``name>=version`` lines of a requirements file (comments and blank lines skipped).

    A missing file (the library installed with pip, outside Slicer) means pip already resolved them.
    """
    if not path.is_file():
        return []
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]


def environmentProblem(pythonVersion: Sequence[int] | None = None) -> str:
    """Why loading/exporting cannot work in this Slicer at all ('' if it can)."""
    version = tuple(pythonVersion if pythonVersion is not None else sys.version_info[:3])
    if version[:2] < MINIMUM_PYTHON:
        shown = ".".join(str(v) for v in version[:3])
        return (
            f"DICOM Labelmap Segmentation needs Python {MINIMUM_PYTHON[0]}.{MINIMUM_PYTHON[1]} or later "
            f"(pydicom 3 and highdicom require it) but this Slicer has Python {shown}. "
            "Use Slicer 5.10 or later."
        )
    return ""


def _installedVersion(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _versionTuple(version: str) -> tuple[int, ...]:
    parts = []
    for part in version.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def missingRequirements(requirements: Sequence[str] | None = None) -> list[str]:
    """Requirements (``name>=version``) that are not installed or installed too old."""
    missing = []
    for requirement in readRequirements() if requirements is None else requirements:
        name, _, minimum = requirement.partition(">=")
        installed = _installedVersion(name.strip())
        if installed is None or (minimum and _versionTuple(installed) < _versionTuple(minimum)):
            missing.append(requirement)
    return missing


def missingPackages(transferSyntaxUIDs: Iterable[str] = (), forWriting: bool = False) -> list[str]:
    """pip packages to install: library requirements plus codecs for these transfer syntaxes."""
    missing = missingRequirements()
    for uid in transferSyntaxUIDs:
        try:
            syntax = TransferSyntax.from_uid(uid)
        except ValueError:
            continue
        packages = syntax.missing_encoder_packages() if forWriting else syntax.missing_decoder_packages()
        missing += [p for p in packages if p not in missing]
    return missing


def restartNeededAfterInstall(packages: Sequence[str], importedModules: Mapping[str, Any]) -> bool:
    """True if an installed package replaces a module already imported in this session (pydicom)."""
    names = {p.split(">=")[0].split("==")[0].strip().replace("-", "_") for p in packages}
    return any(name in importedModules for name in names)


class InstallAction(enum.Enum):
    """What the shell does about missing packages."""

    NONE = "none"  # everything is installed: go on
    REFUSE = "refuse"  # this Slicer cannot run the library (Python 3.9): one message, no prompt
    SKIP = "skip"  # testing mode: never install; the caller reports the packages and stops
    ASK = "ask"  # ask once; on yes install (and restart if restartAfterInstall)


@dataclass(frozen=True)
class InstallPlan:
    """The decision about missing packages and the one text shown for it."""

    action: InstallAction
    packages: tuple[str, ...] = ()
    message: str = ""
    restartAfterInstall: bool = False


def installPlan(
    transferSyntaxUIDs: Iterable[str] = (),
    forWriting: bool = False,
    *,
    testing: bool = False,
    importedModules: Mapping[str, Any] | None = None,
    pythonVersion: Sequence[int] | None = None,
) -> InstallPlan:
    """Decide what to do about missing packages before any dialog is shown.

    On Slicer 5.10, pydicom 2.4 is imported at start-up, so installing pydicom 3 takes effect only
    after a restart: the single question says so and the shell restarts on yes, instead of a failed
    load followed by more dialogs.
    """
    problem = environmentProblem(pythonVersion)
    if problem:
        return InstallPlan(InstallAction.REFUSE, message=problem)
    missing = tuple(missingPackages(transferSyntaxUIDs, forWriting=forWriting))
    if not missing:
        return InstallPlan(InstallAction.NONE)
    listed = ", ".join(missing)
    if testing:
        return InstallPlan(
            InstallAction.SKIP, missing, f"Python packages missing (not installed while testing): {listed}"
        )
    restart = restartNeededAfterInstall(missing, sys.modules if importedModules is None else importedModules)
    text = f"DICOM Labelmap Segmentation needs these Python packages, which are not installed: {listed}."
    pydicomVersion = _installedVersion("pydicom")
    if any(p.startswith("pydicom") for p in missing) and pydicomVersion:
        text += (
            f"\n\nThis upgrades pydicom from {pydicomVersion} (bundled with this Slicer) to version 3. "
            "Other extensions that rely on pydicom 2 may need an update."
        )
    if restart:
        text += "\n\nSlicer restarts after the installation; then load or export again.\n\nInstall and restart now?"
    else:
        text += "\n\nInstall them now?"
    return InstallPlan(InstallAction.ASK, missing, text, restart)


def syntaxesUsableHere() -> tuple[list[TransferSyntax], list[str]]:
    """Transfer syntaxes this Python can both write and read, and one line per syntax it cannot
    (naming the packages). The self-tests use the first and report the second; they never install."""
    usable: list[TransferSyntax] = []
    skipped: list[str] = []
    for syntax in TransferSyntax:
        missing = sorted(set(syntax.missing_encoder_packages()) | set(syntax.missing_decoder_packages()))
        if missing:
            skipped.append(f"{syntax.label} skipped: needs the Python package(s) {', '.join(missing)}")
        else:
            usable.append(syntax)
    return usable, skipped
