"""Bounds the library enforces, each defined once (reader, writer, file formats and checks import them).

Loaded when Slicer starts (through :mod:`.model`): standard library only, Python 3.9 grammar.
"""

from __future__ import annotations

__all__ = ["MAX_LABEL_VALUE", "MAX_VOXELS"]

#: Highest label value = Segment Number (0062,0004), an unsigned 16-bit value; 0 is background.
MAX_LABEL_VALUE = 65535
#: Default bound on the voxels one input may make us allocate (all layers together), DICOM or file.
MAX_VOXELS = 2**31
