"""Loading SEG series into segmentation nodes: one use case for the DICOM browser plugin and for the
module panel's "Load SEG files" (no database).

Loading never loads the referenced image series itself: the DICOM browser asks the user about
referenced series ("Referenced datasets found") and loads them with the plugin that owns them.
:func:`findReferenceVolume` looks for the reference in the scene at load time, by the referenced
Series Instance UID and then by the referenced SOP Instance UIDs, and accepts that it is absent.

``slicer``/``vtk`` objects are only received as arguments; MRML work goes through :mod:`..mrml`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import LabelmapSegError
from .export import INSTANCE_UIDS_ATTRIBUTE


def findReferenceVolume(scene: Any, referencedSeriesUID: str, referencedInstanceUIDs: Iterable[str] = ()) -> Any:
    """A scalar volume already in the scene that shows the referenced images, or None.

    First the volume whose subject hierarchy item has the referenced Series Instance UID (as core's
    DICOMSegmentationPlugin finds it), then a volume whose ``DICOM.instanceUIDs`` contain one of the
    referenced SOP Instance UIDs (e.g. a volume just exported to DICOM).
    """
    from ..mrml import find_series_node

    node = find_series_node(scene, referencedSeriesUID) if referencedSeriesUID else None
    if node is not None and node.IsA("vtkMRMLScalarVolumeNode") and node.GetScene() is not None:
        return node
    wanted = set(referencedInstanceUIDs)
    if not wanted:
        return None
    volumes = scene.GetNodesByClass("vtkMRMLScalarVolumeNode")
    for index in range(volumes.GetNumberOfItems()):
        volume = volumes.GetItemAsObject(index)
        if wanted & set((volume.GetAttribute(INSTANCE_UIDS_ATTRIBUTE) or "").split()):
            return volume
    return None


def segmentationFromFiles(files: Sequence[str]) -> Any:
    """Read one SEG series (all its files) into the model; typed errors with clear messages.

    LABELMAP layers are decoded straight into VTK memory (``mrml.labels_in_vtk_memory``), which
    :func:`nodeFromSegmentation` then uses without copying the label volume.
    """
    from ..dicom.reader import read_segmentation
    from ..mrml import labels_in_vtk_memory

    with labels_in_vtk_memory():
        return read_segmentation([str(f) for f in files])


def nodeFromSegmentation(
    segmentation: Any, scene: Any, name: str, referenceVolume: Any = None, placeInSubjectHierarchy: bool = True
) -> Any:
    """Create the segmentation node (MRML bridge) with reference geometry and ``DICOM.instanceUIDs``.

    ``placeInSubjectHierarchy=False`` when the DICOM plugin places it (``addSeriesInSubjectHierarchy``);
    otherwise :func:`~..mrml.place_in_subject_hierarchy` puts it under the reference's study, or
    under a patient/study made from the SEG's identifiers.
    """
    from ..mrml import node_from_segmentation

    node = node_from_segmentation(
        segmentation, scene, name=name, referenceVolumeNode=referenceVolume,
        placeInSubjectHierarchy=placeInSubjectHierarchy,
    )
    info = segmentation.series_info
    if info is not None:
        node.SetAttribute(INSTANCE_UIDS_ATTRIBUTE, " ".join(info.sop_instance_uids))
    return node


def loadSeries(
    files: Sequence[str],
    scene: Any,
    name: str,
    referencedSeriesUID: str = "",
    referencedInstanceUIDs: Iterable[str] = (),
    placeInSubjectHierarchy: bool = True,
) -> Any:
    """Read one SEG series and create its node on the reference volume found in the scene (if any)."""
    segmentation = segmentationFromFiles(files)
    referenced = segmentation.referenced_series
    seriesUID = referencedSeriesUID or (referenced.series_instance_uid if referenced else "")
    instanceUIDs = list(referencedInstanceUIDs) or (list(referenced.sop_instance_uids) if referenced else [])
    volume = findReferenceVolume(scene, seriesUID, instanceUIDs)
    return nodeFromSegmentation(segmentation, scene, name, volume, placeInSubjectHierarchy)


def expandPaths(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Files given directly plus every file inside given folders (recursively), sorted."""
    files: list[str] = []
    for path in paths:
        p = Path(path)
        if p.is_dir():
            files += sorted(str(f) for f in p.rglob("*") if f.is_file())
        elif p.is_file():
            files.append(str(p))
    return files


def loadSegFilesWithoutDatabase(paths: Sequence[str], scene: Any) -> list[Any]:
    """Load SEG files or folders from disk (no DICOM database): one segmentation node per series."""
    from .examine import loadableSpecsForFiles

    specs = loadableSpecsForFiles(expandPaths(paths))
    if not specs:
        raise LabelmapSegError("No DICOM Segmentation files were found in the selected files or folders.")
    return [
        loadSeries(spec.files, scene, spec.nodeName, spec.referencedSeriesUID, spec.referencedInstanceUIDs)
        for spec in specs
    ]
