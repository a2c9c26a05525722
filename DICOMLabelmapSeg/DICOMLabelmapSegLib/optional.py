"""Optional dependencies: import them where a feature needs them, with an error that says how to install.

The core needs numpy, pydicom, highdicom and the codecs it uses; file formats and services need
extras (``files``: nibabel; ``pacs``; ``dask``). :func:`import_optional` raises
:class:`~.errors.MissingDependencyError` (an ``ImportError``) whose message names the feature,
the package and the pip extra, e.g.::

    Writing NIfTI files needs the Python package 'nibabel', which is not installed:
    pip install "dicom-labelmap-seg[files]"
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

__all__ = ["DISTRIBUTION", "MissingDependencyError", "import_optional"]

#: The name this library is installed under (pip).
DISTRIBUTION = "dicom-labelmap-seg"


def import_optional(module: str, feature: str, extra: str, package: str | None = None) -> ModuleType:
    """Import ``module`` for ``feature``, or raise MissingDependencyError naming ``package`` and the pip ``extra``.

    Parameters
    ----------
    module: str
        The module to import (``"nibabel"``).
    feature: str
        What needs it, as the start of a sentence (``"Writing NIfTI files"``).
    extra: str
        The extra of this distribution that installs it (``"files"``).
    package: str | None
        The pip package, when its name differs from the module's (``"pynrrd"`` for ``nrrd``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        name = package or module.split(".")[0]
        missing = MissingDependencyError(
            f"{feature} needs the Python package '{name}', which is not installed: "
            f'pip install "{DISTRIBUTION}[{extra}]"'
        )
        missing.name = module.split(".")[0]
        missing.extra = extra
        raise missing from error
