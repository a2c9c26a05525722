"""Real Slicer MRML for tests, without the Slicer application (the ``slicer-core`` wheel).

What the Slicer application normally sets up, done here once per test session
(see ``SLICER_CORE_NOTES.md``): a scene, the application logic (with Slicer's color
files), and the Colors, Terminologies (with Slicer's ``*.term.json``), Segmentations,
Subject Hierarchy and Volumes module logics. It also provides the names that
``slicer.util`` looks up: ``slicer.mrmlScene``, ``slicer.app.applicationLogic()`` and
``slicer.modules.<name>.logic()`` (``segmentations``, ``terminologies``, ``colors``,
``volumes``, ``subjecthierarchy``). Inside the real Slicer application nothing is
replaced: its scene and logics are used.

The fixtures are registered for every test by ``pytest_plugins = ["mrml_support"]`` in
``conftest.py``; a test module just names them::

    def test_something(mrml_scene):
        node = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        ...

* ``slicer_core`` (session scope): a :class:`SlicerCore` with ``slicer``, ``vtk``, ``scene``
  and the logics. Importing slicer and bootstrapping costs about a second, once.
* ``mrml_scene`` (function scope): the same scene, cleared after each test
  (``scene.Clear(0)`` keeps the color tables and singletons; the subject hierarchy node
  is re-created on demand).

Tests that need the wheel are skipped with a clear reason where it is not installed.
Helpers for tests: ``slicer_core.add_dicom_study_series(volumeNode, ...)`` (or the function
:func:`add_dicom_study_series`) builds
patient/study/series subject hierarchy items the way Slicer's DICOM module does, and
:func:`clear_scene` empties a scene fast.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

try:  # Testing/ is on sys.path when run by pytest
    from conftest import DATA_DIR
except ImportError:  # pragma: no cover - used outside pytest
    DATA_DIR = None


@dataclass
class SlicerCore:
    """The bootstrapped Qt-free Slicer: modules, scene and module logics."""

    slicer: Any
    vtk: Any
    scene: Any
    applicationLogic: Any
    colorLogic: Any
    terminologiesLogic: Any
    segmentationsLogic: Any
    subjectHierarchyLogic: Any
    volumesLogic: Any

    @property
    def subjectHierarchyNode(self) -> Any:
        """The scene's subject hierarchy node (created if missing)."""
        return self.slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(self.scene)

    def add_dicom_study_series(
        self,
        volumeNode: Any,
        *,
        patient_id: str = "PATIENT1",
        patient_name: str = "Test^Patient",
        study_instance_uid: str,
        series_instance_uid: str,
        sop_instance_uids: tuple[str, ...] = (),
    ) -> tuple[int, int, int]:
        """Put ``volumeNode`` in the subject hierarchy as Slicer's DICOM module does after loading.

        Creates (or reuses) patient and study items with item UID ``DICOM`` = PatientID /
        StudyInstanceUID, and the series item of ``volumeNode`` with UID ``DICOM`` =
        SeriesInstanceUID and ``DICOMInstanceUID`` = space-separated SOP Instance UIDs.

        Returns
        -------
        tuple[int, int, int]
            Patient, study and series item IDs.
        """
        sh = self.subjectHierarchyNode
        constants = self.slicer.vtkMRMLSubjectHierarchyConstants
        uidName = constants.GetDICOMUIDName()
        patientItem = sh.GetItemByUID(uidName, patient_id)
        if not patientItem:
            patientItem = sh.CreateSubjectItem(sh.GetSceneItemID(), patient_name)
            sh.SetItemUID(patientItem, uidName, patient_id)
            sh.SetItemAttribute(patientItem, constants.GetDICOMPatientIDAttributeName(), patient_id)
        studyItem = sh.GetItemByUID(uidName, study_instance_uid)
        if not studyItem:
            studyItem = sh.CreateStudyItem(patientItem, f"Study {study_instance_uid[-6:]}")
            sh.SetItemUID(studyItem, uidName, study_instance_uid)
            sh.SetItemAttribute(studyItem, constants.GetDICOMStudyInstanceUIDAttributeName(), study_instance_uid)
        seriesItem = sh.CreateItem(studyItem, volumeNode)
        sh.SetItemUID(seriesItem, uidName, series_instance_uid)
        if sop_instance_uids:
            sh.SetItemUID(seriesItem, constants.GetDICOMInstanceUIDName(), " ".join(sop_instance_uids))
        return patientItem, studyItem, seriesItem


_CORE: SlicerCore | None = None


def _logic(instance: Any) -> Any:
    """A stand-in for ``slicer.modules.<name>`` exposing ``logic()``."""
    return types.SimpleNamespace(logic=lambda: instance)


def bootstrap(slicer_resources: Path | None = None) -> SlicerCore:
    """Set up slicer-core like the application does; idempotent (one scene per process).

    Parameters
    ----------
    slicer_resources: Path | None
        Folder with Slicer's ``*.term.json`` and ``ColorFiles/`` (``<data>/slicer``).
        Without it, terminology contexts and color files are not loaded.

    Raises
    ------
    ImportError
        If the slicer-core wheel is not installed.
    """
    global _CORE
    if _CORE is not None:
        return _CORE
    import slicer
    import vtk

    app = getattr(slicer, "app", None)
    if app is not None and hasattr(app, "applicationLogic"):  # inside the Slicer application
        scene = slicer.mrmlScene
        _CORE = SlicerCore(
            slicer=slicer,
            vtk=vtk,
            scene=scene,
            applicationLogic=app.applicationLogic(),
            colorLogic=slicer.modules.colors.logic(),
            terminologiesLogic=slicer.modules.terminologies.logic(),
            segmentationsLogic=slicer.modules.segmentations.logic(),
            subjectHierarchyLogic=slicer.modules.subjecthierarchy.logic(),
            volumesLogic=slicer.modules.volumes.logic(),
        )
        return _CORE

    scene = slicer.vtkMRMLScene()
    applicationLogic = slicer.vtkSlicerApplicationLogic()
    if slicer_resources is not None and (slicer_resources / "ColorFiles").is_dir():
        # The color logic looks for <home>/<share>/ColorFiles/*.txt.
        home = Path(tempfile.mkdtemp(prefix="slicer-core-home-"))
        (home / "share").mkdir()
        try:
            os.symlink(slicer_resources / "ColorFiles", home / "share" / "ColorFiles")
        except OSError:
            shutil.copytree(slicer_resources / "ColorFiles", home / "share" / "ColorFiles")
        applicationLogic.SetHomeDirectory(str(home))
        applicationLogic.SetShareDirectory("share")
    applicationLogic.SetMRMLScene(scene)

    colorLogic = slicer.vtkSlicerColorLogic()
    colorLogic.SetMRMLApplicationLogic(applicationLogic)
    colorLogic.SetMRMLScene(scene)
    applicationLogic.SetColorLogic(colorLogic)

    terminologiesLogic = slicer.vtkSlicerTerminologiesModuleLogic()
    if slicer_resources is not None:
        terminologiesLogic.SetModuleShareDirectory(str(slicer_resources))  # before SetMRMLScene
    terminologiesLogic.SetMRMLApplicationLogic(applicationLogic)
    terminologiesLogic.SetMRMLScene(scene)

    # Without SetMRMLScene the converter rules are not registered (AddEmptySegment returns '').
    segmentationsLogic = slicer.vtkSlicerSegmentationsModuleLogic()
    segmentationsLogic.SetMRMLApplicationLogic(applicationLogic)
    segmentationsLogic.SetMRMLScene(scene)

    subjectHierarchyLogic = slicer.vtkSlicerSubjectHierarchyModuleLogic()
    subjectHierarchyLogic.SetMRMLApplicationLogic(applicationLogic)
    subjectHierarchyLogic.SetMRMLScene(scene)

    volumesLogic = slicer.vtkSlicerVolumesLogic()
    volumesLogic.SetMRMLApplicationLogic(applicationLogic)
    volumesLogic.SetMRMLScene(scene)

    for name, logic in (
        ("Colors", colorLogic),
        ("Terminologies", terminologiesLogic),
        ("Segmentations", segmentationsLogic),
        ("SubjectHierarchy", subjectHierarchyLogic),
        ("Volumes", volumesLogic),
    ):
        applicationLogic.SetModuleLogic(name, logic)

    # The names slicer.util expects from the application.
    slicer.mrmlScene = scene
    slicer.app = types.SimpleNamespace(
        applicationLogic=lambda: applicationLogic,
        mrmlScene=lambda: scene,
        moduleLogic=lambda name: applicationLogic.GetModuleLogic(name),
        testingEnabled=lambda: True,
        commandOptions=lambda: types.SimpleNamespace(noMainWindow=True),
    )
    slicer.modules = types.SimpleNamespace(
        colors=_logic(colorLogic),
        terminologies=_logic(terminologiesLogic),
        segmentations=_logic(segmentationsLogic),
        subjecthierarchy=_logic(subjectHierarchyLogic),
        volumes=_logic(volumesLogic),
    )
    _CORE = SlicerCore(
        slicer=slicer,
        vtk=vtk,
        scene=scene,
        applicationLogic=applicationLogic,
        colorLogic=colorLogic,
        terminologiesLogic=terminologiesLogic,
        segmentationsLogic=segmentationsLogic,
        subjectHierarchyLogic=subjectHierarchyLogic,
        volumesLogic=volumesLogic,
    )
    return _CORE


@pytest.fixture(scope="session")
def slicer_core() -> SlicerCore:
    """Session-wide bootstrapped slicer-core (skips the test if the wheel is missing)."""
    try:
        import slicer  # noqa: F401
    except ImportError as error:
        pytest.skip(f"slicer-core is not installed ({error}); pip install slicer-core to run MRML tests")
    resources = DATA_DIR / "slicer" if DATA_DIR is not None else None
    return bootstrap(resources if resources is not None and resources.is_dir() else None)


@pytest.fixture
def mrml_scene(slicer_core: SlicerCore) -> Any:
    """The session's MRML scene, emptied of data nodes after the test."""
    yield slicer_core.scene
    clear_scene(slicer_core.scene)


def clear_scene(scene: Any) -> None:
    """Remove all data nodes quickly.

    Deleting a segment from a shared labelmap makes Slicer separate it first (a copy of
    the whole layer per segment: about 20 s for 100 segments at 512x512x300), so the
    segments' representations are dropped before the scene is cleared.
    """
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")):
        segmentation = scene.GetNthNodeByClass(index, "vtkMRMLSegmentationNode").GetSegmentation()
        for segmentId in segmentation.GetSegmentIDs():
            segmentation.GetSegment(segmentId).RemoveAllRepresentations()
    scene.Clear(0)


def add_dicom_study_series(core: SlicerCore, volumeNode: Any, **uids: Any) -> tuple[int, int, int]:
    """Function form of :meth:`SlicerCore.add_dicom_study_series` (same keyword arguments)."""
    return core.add_dicom_study_series(volumeNode, **uids)
