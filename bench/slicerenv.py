"""A Qt-free Slicer scene for the benchmark (slicer-core), and the Slicer-native operations peers use.

The scene bootstrap is Testing/mrml_support.py's (one bootstrap for the project), loaded from its
path (bench/ and Testing/ do not put each other on ``sys.path``); the fallback below, for a
checkout without it, does the essential steps (SLICER_CORE_NOTES.md).
"""

from __future__ import annotations

import functools
import importlib.util
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
    mrml_support = _mrml_support()
    if mrml_support is None:
        return _fallback_boot()
    core = mrml_support.bootstrap(data_dir() / "slicer")
    return SlicerEnv(core.scene, core.applicationLogic, core.segmentationsLogic, core.terminologiesLogic)


@functools.cache
def _mrml_support() -> Any:
    """Testing/mrml_support.py as a module of its own (loaded once: its bootstrap keeps one scene per process)."""
    path = REPO_DIR / "Testing" / "mrml_support.py"
    spec = importlib.util.spec_from_file_location("_bench_mrml_support", path) if path.is_file() else None
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


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
