"""A Qt-free Slicer scene for the benchmark (slicer-core), and the Slicer-native operations peers use.

The scene bootstrap is Testing/mrml_support.py's (one bootstrap for the project); the fallback
below, for a checkout without it, does the essential steps (SLICER_CORE_NOTES.md).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cases import REPO_DIR, data_dir


@dataclass
class SlicerEnv:
    """A scene with the application, segmentations and terminologies logics attached."""

    scene: Any
    app_logic: Any
    segmentations_logic: Any
    terminologies_logic: Any


def boot() -> SlicerEnv:
    """The process's scene, ready for segmentation nodes (converter rules registered, terminology loaded)."""
    testing = str(REPO_DIR / "Testing")
    if testing not in sys.path:
        sys.path.insert(0, testing)
    try:
        import mrml_support  # type: ignore[import-not-found]
    except ImportError:
        return _fallback_boot()
    core = mrml_support.bootstrap(data_dir() / "slicer")
    return SlicerEnv(core.scene, core.applicationLogic, core.segmentationsLogic, core.terminologiesLogic)


def _fallback_boot() -> SlicerEnv:
    import slicer

    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    seg_logic = slicer.vtkSlicerSegmentationsModuleLogic()
    seg_logic.SetMRMLApplicationLogic(app_logic)
    seg_logic.SetMRMLScene(scene)
    term_logic = slicer.vtkSlicerTerminologiesModuleLogic()
    term_logic.SetModuleShareDirectory(str(data_dir() / "slicer"))
    term_logic.SetMRMLScene(scene)
    return SlicerEnv(scene, app_logic, seg_logic, term_logic)


def binary_labelmap_name() -> str:
    import slicer

    return slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()


def _write_with(env: SlicerEnv, storage: Any, node: Any, path: Path, compress: bool) -> None:
    """Write ``node`` to ``path`` through a temporary storage node of the scene."""
    env.scene.AddNode(storage)
    storage.SetFileName(str(path))
    storage.SetUseCompression(1 if compress else 0)
    try:
        if not storage.WriteData(node):
            raise RuntimeError(f"{storage.GetClassName()} could not write {path}")
    finally:
        env.scene.RemoveNode(storage)


def _read_with(env: SlicerEnv, storage: Any, node: Any, path: Path) -> None:
    """Read ``path`` into ``node`` through ``storage`` (added to the scene; the caller keeps or removes it)."""
    env.scene.AddNode(storage)
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        raise RuntimeError(f"{storage.GetClassName()} could not read {path}")


def save_segmentation_node(env: SlicerEnv, node: Any, path: Path) -> None:
    """Write a .seg.nrrd the way Slicer does (vtkMRMLSegmentationStorageNode, compression on)."""
    import slicer

    _write_with(env, slicer.vtkMRMLSegmentationStorageNode(), node, path, compress=True)


def load_segmentation_node(env: SlicerEnv, path: Path) -> Any:
    """Read a .seg.nrrd into a new segmentation node (vtkMRMLSegmentationStorageNode)."""
    import slicer

    node = env.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    _read_with(env, storage, node, path)
    node.SetAndObserveStorageNodeID(storage.GetID())
    return node


def save_labelmap_node(env: SlicerEnv, node: Any, path: Path, compress: bool = True) -> None:
    """slicer.util.saveNode for a labelmap volume: vtkMRMLVolumeArchetypeStorageNode (compressed NRRD)."""
    import slicer

    _write_with(env, slicer.vtkMRMLVolumeArchetypeStorageNode(), node, path, compress)


def load_labelmap_node(env: SlicerEnv, path: Path) -> Any:
    """slicer.util.loadLabelVolume(path, {'singleFile': True}) without Qt."""
    import slicer

    node = env.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetSingleFile(1)
    _read_with(env, storage, node, path)
    env.scene.RemoveNode(storage)
    return node
