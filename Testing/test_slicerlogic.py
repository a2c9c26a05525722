"""The Slicer plugin's and module panel's decisions (the use cases in app/), on real slicer-core MRML.

What the Qt shell (DICOMLabelmapSegPlugin.py, DICOMLabelmapSeg.py) does is decided here:
loadables for SEG series (real files written by us, dcmqi and highdicom), confidence relative
to Slicer's dcmqi plugin, packages to install, exportability of segmentation nodes in a real
subject hierarchy, settings -> ExportOptions, and the export -> load round trip on real MRML.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from DICOMLabelmapSegLib.app import dependencies, examine, export, load, messages, settings
from DICOMLabelmapSegLib.dicom.options import ExportOptions
from DICOMLabelmapSegLib.dicom.source import geometry_from_source, read_source_series
from DICOMLabelmapSegLib.dicom.syntax import TransferSyntax
from DICOMLabelmapSegLib.dicom.writer import write_labelmap_seg
from DICOMLabelmapSegLib.enums import SopClass
from DICOMLabelmapSegLib.errors import SourceImageError
from DICOMLabelmapSegLib.model import differences
from mrml_support import add_dicom_study_series
from synthetic import make_affine, make_ct_series, make_segmentation

#: Confidence of Slicer's dcmqi-based DICOMSegmentationPlugin for any SEG file (5.12+ and QR).
DCMQI_PLUGIN_CONFIDENCE = 0.95
#: What DICOMScalarVolumePlugin gives a series it can read as a volume.
SCALAR_VOLUME_CONFIDENCE = 0.5
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


# --- helpers -------------------------------------------------------------------------------------------------


def _ct(tmp_path: Path, shape=(5, 12, 16)) -> list[Path]:
    return sorted(make_ct_series(tmp_path / "ct", shape=shape, affine=make_affine(), shuffle=False))


def _seg_series(tmp_path: Path, ct: list[Path], layers=((1, 2), (3, 4)), **options) -> list[Path]:
    geometry = geometry_from_source(read_source_series(ct))
    segmentation = make_segmentation(geometry, layers=layers, empty=(4,))
    return write_labelmap_seg(segmentation, ct, tmp_path / "seg", ExportOptions(**options))


def _db_file_value(path: str, tag: str) -> str:
    """What ctkDICOMDatabase.fileValue returns: the value of one tag as a string ('' if absent)."""
    group, element = (int(part, 16) for part in tag.split(","))
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    element_ = ds.get((group, element))
    return "" if element_ is None or element_.VR == "SQ" else str(element_.value)


def _matrix(core, array):
    matrix = core.vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            matrix.SetElement(row, column, float(array[row, column]))
    return matrix


def _dicom_volume(core, scene, ct: list[Path], in_study: bool = True):
    """A volume as DICOMScalarVolumePlugin leaves it: grid of the series, DICOM.instanceUIDs, SH items."""
    headers = read_source_series(ct)
    geometry = geometry_from_source(headers)
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT")
    image = core.vtk.vtkImageData()
    image.SetDimensions(geometry.shape[2], geometry.shape[1], geometry.shape[0])
    image.AllocateScalars(core.vtk.VTK_SHORT, 1)
    volume.SetAndObserveImageData(image)
    volume.SetIJKToRASMatrix(_matrix(core, LPS_TO_RAS @ geometry.affine[:, [2, 1, 0, 3]]))
    uids = tuple(str(ds.SOPInstanceUID) for ds in headers)
    volume.SetAttribute("DICOM.instanceUIDs", " ".join(uids))
    if in_study:
        add_dicom_study_series(
            core,
            volume,
            patient_id=str(headers[0].PatientID),
            study_instance_uid=str(headers[0].StudyInstanceUID),
            series_instance_uid=str(headers[0].SeriesInstanceUID),
            sop_instance_uids=uids,
        )
    files = {str(ds.SOPInstanceUID): str(path) for ds, path in zip(headers, _paths_in_order(ct, headers))}
    return volume, files


def _paths_in_order(ct: list[Path], headers) -> list[Path]:
    by_uid = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in ct}
    return [by_uid[str(ds.SOPInstanceUID)] for ds in headers]


def _segmentation_node(core, scene, ct: list[Path], volume, layers=((1, 2), (3, 4))):
    """A two-layer (overlapping) segmentation node on the CT grid, placed in the volume's study."""
    from DICOMLabelmapSegLib import mrml
    geometry = geometry_from_source(read_source_series(ct))
    model = make_segmentation(geometry, layers=layers, empty=(4,))
    node = mrml.node_from_segmentation(model, scene, name="Organs", referenceVolumeNode=volume)
    sh = core.subjectHierarchyNode
    volume_item = sh.GetItemByDataNode(volume)
    if volume_item:
        sh.SetItemParent(sh.GetItemByDataNode(node), sh.GetItemParent(volume_item))
    return node, model


# --- examining files ---------------------------------------------------------------------------------------


def test_confidences_rank_against_slicer_plugins():
    assert examine.LABELMAP_CONFIDENCE > DCMQI_PLUGIN_CONFIDENCE, "LABELMAP must be preselected over dcmqi"
    assert SCALAR_VOLUME_CONFIDENCE < examine.BINARY_CONFIDENCE < DCMQI_PLUGIN_CONFIDENCE
    assert SCALAR_VOLUME_CONFIDENCE < examine.FRACTIONAL_CONFIDENCE < examine.BINARY_CONFIDENCE
    assert export.NOT_EXPORTABLE_CONFIDENCE < 0.1 < 1.0 == export.CORE_SEG_EXPORT_CONFIDENCE < export.EXPORT_CONFIDENCE


def test_labelmap_series_is_one_loadable_with_all_layers(tmp_path):
    ct = _ct(tmp_path)
    seg = _seg_series(tmp_path, ct, series_description="AI organs", transfer_syntax=TransferSyntax.RLE)
    noise = tmp_path / "notes.txt"
    noise.write_text("not DICOM")
    specs = examine.loadableSpecsForFiles([*map(str, seg), str(noise), *map(str, ct)])
    assert len(specs) == 1
    spec = specs[0]
    assert sorted(spec.files) == sorted(map(str, seg))
    assert spec.confidence == examine.LABELMAP_CONFIDENCE and spec.selected
    assert spec.segmentationType == "LABELMAP"
    assert spec.name == "AI organs (LABELMAP, 4 segments in 2 layers, RLE lossless)"
    assert spec.nodeName == "AI organs"
    assert "2 files" in spec.tooltip and "one layer" in spec.tooltip
    ct_headers = read_source_series(ct)
    assert spec.referencedSeriesUID == str(ct_headers[0].SeriesInstanceUID)
    assert set(spec.referencedInstanceUIDs) == {str(ds.SOPInstanceUID) for ds in ct_headers}
    assert spec.transferSyntaxUIDs == [TransferSyntax.RLE.uid]
    assert spec.warning == ""


def test_database_values_skip_non_seg_files_without_reading_them(tmp_path, monkeypatch):
    ct = _ct(tmp_path)
    seg = _seg_series(tmp_path, ct)
    read = []
    original = examine.readSegHeader
    monkeypatch.setattr(examine, "readSegHeader", lambda path: read.append(path) or original(path))
    specs = examine.loadableSpecsForFiles([str(p) for p in [*ct, *seg]], _db_file_value)
    assert len(specs) == 1 and specs[0].segmentationType == "LABELMAP"
    assert sorted(read) == sorted(map(str, seg)), "CT files must be rejected by the cached SOP class alone"


def test_database_without_cached_sop_class_falls_back_to_modality(tmp_path):
    ct = _ct(tmp_path)
    seg = _seg_series(tmp_path, ct)

    def modality_only(path, tag):
        return "" if tag == examine.TAG_SOP_CLASS_UID else _db_file_value(path, tag)

    assert examine.isSegFile(str(seg[0]), modality_only)
    assert not examine.isSegFile(str(ct[0]), modality_only)


@pytest.mark.parametrize(
    ("relative", "kind", "confidence", "segments"),
    [
        ("dcmqi/sparse-labelmap-noppv.dcm", "LABELMAP", examine.LABELMAP_CONFIDENCE, 1),  # + background 0
        ("dcmqi/liver.dcm", "BINARY", examine.BINARY_CONFIDENCE, 1),
        ("dcmqi/partial_overlaps.dcm", "BINARY", examine.BINARY_CONFIDENCE, 5),
        # highdicom: 21 items in the Segment Sequence, one of them the background (segment number 0)
        ("highdicom/seg_image_sm_control_labelmap_palette_color.dcm", "LABELMAP", examine.LABELMAP_CONFIDENCE, 20),
    ],
)
def test_real_seg_files_of_other_tools(data_dir, relative, kind, confidence, segments):
    path = data_dir / relative
    specs = examine.loadableSpecsForFiles([str(path)], _db_file_value)
    assert len(specs) == 1
    assert specs[0].segmentationType == kind
    assert specs[0].confidence == confidence
    assert f"{segments} segment" in specs[0].name


def test_seg_the_header_parser_refuses_is_offered_with_the_reason(tmp_path):
    """examine uses the library's one header parser: what it refuses is shown (warning), never preselected."""
    ct = _ct(tmp_path)
    seg = _seg_series(tmp_path, ct)
    ds = pydicom.dcmread(seg[0])
    del ds.SegmentSequence
    ds.save_as(seg[0])
    spec = examine.loadableSpecsForFiles(map(str, seg))[0]
    assert not spec.selected and spec.confidence == examine.UNSUPPORTED_CONFIDENCE
    assert "lacks the Segment Sequence" in spec.warning, spec.warning
    header = examine.readSegHeader(str(seg[1]))
    assert header.problem == "" and header.segment_count == 2 and header.segmentation_type == "LABELMAP"


def test_two_series_give_two_loadables(tmp_path):
    ct = _ct(tmp_path)
    first = _seg_series(tmp_path / "a", ct, series_description="First")
    second = _seg_series(tmp_path / "b", ct, series_description="Second", layers=((1,),))
    specs = examine.loadableSpecsForFiles([str(p) for p in [*first, *second]])
    assert sorted(spec.nodeName for spec in specs) == ["First", "Second"]
    assert {spec.nodeName: len(spec.files) for spec in specs} == {"First": 2, "Second": 1}


def test_referenced_instances_fall_back_to_database(tmp_path):
    spec = examine.LoadableSpec(
        files=["x"], name="n", tooltip="t", confidence=1, nodeName="n", seriesInstanceUID="1.2",
        segmentationType="LABELMAP", referencedSeriesUID="1.2.3",
    )
    instances = ["1.2.3.1", "1.2.3.2"]
    assert examine.referencedInstanceUIDsOfSeries(spec, lambda uid: instances) == instances
    assert examine.referencedInstanceUIDsOfSeries(spec) == []


# --- packages ------------------------------------------------------------------------------------------------


def test_slicer_510_first_load_is_one_question_then_restart(monkeypatch):
    """Slicer 5.10: pydicom 2.4.4 is imported at start-up, highdicom absent. One question says that Slicer
    restarts after installing; no loadable warning ("Load anyway?") comes before it."""
    versions = {"pydicom": "2.4.4", "highdicom": None}
    monkeypatch.setattr(dependencies, "_installedVersion", lambda name: versions.get(name))
    missing = dependencies.missingRequirements()
    assert missing == ["pydicom>=3.0.1", "highdicom>=0.27.0"]
    plan = dependencies.installPlan([TransferSyntax.RLE.uid], importedModules={"pydicom": object()})
    assert plan.action is dependencies.InstallAction.ASK and plan.restartAfterInstall
    assert plan.packages == ("pydicom>=3.0.1", "highdicom>=0.27.0")
    assert "upgrades pydicom from 2.4.4" in plan.message and "Install and restart now?" in plan.message
    fresh = dependencies.installPlan(importedModules={})
    assert fresh.action is dependencies.InstallAction.ASK and not fresh.restartAfterInstall
    assert fresh.message.endswith("Install them now?")
    assert dependencies.restartNeededAfterInstall(missing, {"pydicom": object()})
    assert not dependencies.restartNeededAfterInstall(["pyjpegls"], {"pydicom": object()})


@pytest.mark.parametrize(
    ("slicer", "python", "versions", "action", "restart"),
    [
        ("5.8", (3, 9, 10), {"pydicom": "2.4.4", "highdicom": None}, "refuse", False),
        ("5.10", (3, 12, 10), {"pydicom": "2.4.4", "highdicom": None}, "ask", True),
        ("5.12", (3, 12, 10), {"pydicom": "3.0.2", "highdicom": "0.27.0"}, "ask", False),  # only the codec
    ],
)
def test_dependency_prompt_per_slicer_version(monkeypatch, slicer, python, versions, action, restart):
    """What each release bundles (SuperBuild/External_python-*.cmake): the plan for a JPEG 2000 SEG whose
    decoder package is not bundled by any release."""
    monkeypatch.setattr(dependencies, "_installedVersion", lambda name: versions.get(name))
    monkeypatch.setattr(TransferSyntax, "missing_decoder_packages", lambda self: ["pylibjpeg-openjpeg"])
    imported = {"pydicom": object()}  # Slicer imports its pydicom at start-up
    plan = dependencies.installPlan([TransferSyntax.JPEG_2000.uid], importedModules=imported, pythonVersion=python)
    assert plan.action.value == action and plan.restartAfterInstall is restart
    if action == "ask":
        assert plan.packages[-1] == "pylibjpeg-openjpeg" and ("pydicom>=3.0.1" in plan.packages) is restart
        assert plan.message.count("?") == 1, "one question"


def test_testing_mode_never_installs(monkeypatch):
    monkeypatch.setattr(TransferSyntax, "missing_encoder_packages", lambda self: ["pylibjpeg-openjpeg"])
    plan = dependencies.installPlan([TransferSyntax.JPEG_2000.uid], forWriting=True, testing=True)
    assert plan.action is dependencies.InstallAction.SKIP and "pylibjpeg-openjpeg" in plan.message
    assert dependencies.installPlan(testing=True).action is dependencies.InstallAction.NONE


def test_slicer_58_is_refused_without_a_prompt():
    plan = dependencies.installPlan(pythonVersion=(3, 9, 10))
    assert plan.action is dependencies.InstallAction.REFUSE and "Slicer 5.10 or later" in plan.message


def test_self_test_uses_only_syntaxes_this_python_can_write_and_read(monkeypatch):
    """Slicer bundles no pylibjpeg-openjpeg: the self-test must skip JPEG 2000 there, naming the package."""
    usable, skipped = dependencies.syntaxesUsableHere()
    assert usable == list(TransferSyntax) and skipped == []
    monkeypatch.setattr(
        TransferSyntax, "missing_decoder_packages",
        lambda self: ["pylibjpeg-openjpeg"] if self is TransferSyntax.JPEG_2000 else [],
    )
    usable, skipped = dependencies.syntaxesUsableHere()
    assert TransferSyntax.JPEG_2000 not in usable and len(usable) == len(TransferSyntax) - 1
    assert skipped == [f"{TransferSyntax.JPEG_2000.label} skipped: needs the Python package(s) pylibjpeg-openjpeg"]


def test_requirements_are_read_from_the_resources_file(tmp_path):
    listed = dependencies.readRequirements()
    assert listed == ["pydicom>=3.0.1", "highdicom>=0.27.0"]
    assert dependencies.REQUIREMENTS_FILE.name == "requirements.txt"
    assert dependencies.REQUIREMENTS_FILE.parent.name == "Resources"
    other = tmp_path / "requirements.txt"
    other.write_text("# comment\n\nfoo>=1.0  # why\n")
    assert dependencies.readRequirements(other) == ["foo>=1.0"]
    assert dependencies.readRequirements(tmp_path / "absent.txt") == []


def test_current_environment_needs_nothing():
    assert dependencies.missingRequirements() == []
    assert dependencies.missingPackages([s.uid for s in TransferSyntax], forWriting=True) == []


def test_missing_codec_is_offered_for_installation(monkeypatch):
    """Codec packages come from the syntax's registry row (any installed alternative counts)."""
    def missing(self):
        return ["pyjpegls"] if self is TransferSyntax.JPEG_LS else []

    monkeypatch.setattr(TransferSyntax, "missing_decoder_packages", missing)
    monkeypatch.setattr(TransferSyntax, "missing_encoder_packages", missing)
    assert dependencies.missingPackages([TransferSyntax.JPEG_LS.uid]) == ["pyjpegls"]
    assert dependencies.missingPackages([TransferSyntax.JPEG_LS.uid], forWriting=True) == ["pyjpegls"]
    assert dependencies.missingPackages([TransferSyntax.RLE.uid, "1.2.3.4.unknown"]) == []
    assert "pyjpegls" in settings.syntaxExplanation("jpeg-ls")


def test_missing_codec_warns_on_the_loadable(tmp_path, monkeypatch):
    ct = _ct(tmp_path)
    seg = _seg_series(tmp_path, ct)  # JPEG-LS
    monkeypatch.setattr(TransferSyntax, "missing_decoder_packages", lambda self: ["pyjpegls"])
    spec = examine.loadableSpecsForFiles(map(str, seg))[0]
    assert spec.warning == "", "a loadable warning would add the browser's 'Load anyway?' before our one question"
    assert "pyjpegls" in spec.tooltip and spec.selected


# --- settings -> options ---------------------------------------------------------------------------------------


def test_settings_and_tags_become_export_options():
    values = {
        settings.SETTINGS_TRANSFER_SYNTAX: "rle",
        settings.SETTINGS_PALETTE_COLOR: "true",
    }
    tags = {
        "SeriesNumber": " 42 ", "ContentCreatorName": "Doe^Jane", "ContentLabel": "liver v2",
        "SeriesDescription": "From the panel",
    }
    options = export.exportOptions(values, tags)
    assert options.transfer_syntax is TransferSyntax.RLE and options.palette_color is True
    assert options.series_number == 42 and options.series_description == "From the panel"
    assert options.content_creator_name == "Doe^Jane" and options.content_label == "liver v2"
    assert options.content_description is None
    edited = export.exportOptions(values, {"SeriesDescription": "Edited in dialog"})
    assert edited.series_description == "Edited in dialog" and edited.series_number == 300


def test_empty_settings_give_defaults():
    options = export.exportOptions({}, {})
    assert options.transfer_syntax is TransferSyntax.JPEG_LS and options.palette_color is False
    assert options.series_description == "Segmentation" and options.series_number == 300
    assert set(settings.SETTINGS_DEFAULTS) == {
        f"DICOMLabelmapSeg/{name}"
        for name in (
            "TransferSyntax", "PaletteColor", "ContentCreatorName",
            "ExportToDatabase", "ExportToFolder", "OutputFolder",
        )
    }


@pytest.mark.parametrize("number", ["abc", "0", "-3", "3.5"])
def test_bad_series_number_is_a_clear_error(number):
    with pytest.raises(ValueError, match="not a positive integer"):
        export.exportOptions({}, {"SeriesNumber": number})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("jpeg2000", TransferSyntax.JPEG_2000),
        ("JPEG 2000 lossless", TransferSyntax.JPEG_2000),
        ("1.2.840.10008.1.2.1.99", TransferSyntax.DEFLATED),
        (TransferSyntax.EXPLICIT, TransferSyntax.EXPLICIT),
        (None, TransferSyntax.JPEG_LS),
        ("no-such-syntax", TransferSyntax.JPEG_LS),
    ],
)
def test_syntax_from_setting(value, expected):
    assert settings.syntaxFromSetting(value) is expected


def test_syntax_choices_are_labels_with_explanations():
    choices = settings.syntaxChoices()
    assert choices[0] == TransferSyntax.JPEG_LS.label and len(choices) == len(TransferSyntax)
    for choice in choices:
        assert settings.syntaxFromSetting(choice).label == choice
        assert settings.syntaxExplanation(choice) == settings.syntaxFromSetting(choice).explanation


@pytest.mark.parametrize(
    ("value", "expected"), [("true", True), ("false", False), (True, True), (0, False), ("", False)]
)
def test_to_bool(value, expected):
    assert settings.toBool(value) is expected


@pytest.mark.parametrize(("folder", "chosen"), [(Path(), False), ("", False), (None, False), ("/tmp/x", True)])
def test_output_folder_chosen(folder, chosen):
    assert settings.outputFolderChosen(folder) is chosen


# --- export decisions on real MRML -------------------------------------------------------------------------------


def test_segmentation_on_dicom_volume_is_exportable(slicer_core, mrml_scene, tmp_path):
    ct = _ct(tmp_path)
    volume, files = _dicom_volume(slicer_core, mrml_scene, ct)
    node, _ = _segmentation_node(slicer_core, mrml_scene, ct, volume)
    sh = slicer_core.subjectHierarchyNode
    values = {settings.SETTINGS_TRANSFER_SYNTAX: "deflated", settings.SETTINGS_CONTENT_CREATOR_NAME: "Me"}
    check = export.examineForExport(sh, sh.GetItemByDataNode(node), lambda uid: files.get(uid, ""), values)
    assert check.exportable, check.reason
    assert check.confidence == export.EXPORT_CONFIDENCE
    assert "LABELMAP" in check.name and "Deflated" in check.name
    assert "2 layers" in check.tooltip
    assert check.referenceVolumeNode is volume and check.segmentationNode is node
    uids = volume.GetAttribute("DICOM.instanceUIDs").split()
    assert check.sourceFiles == [files[uid] for uid in uids]
    assert check.tags == {
        "Modality": "SEG",
        "SeriesDescription": "Organs",
        "SeriesNumber": "300",
        "ContentLabel": "SEGMENTATION",
        "ContentDescription": "",
        "ContentCreatorName": "Me",
    }


def test_non_segmentation_items_are_not_ours(slicer_core, mrml_scene, tmp_path):
    ct = _ct(tmp_path)
    volume, files = _dicom_volume(slicer_core, mrml_scene, ct)
    sh = slicer_core.subjectHierarchyNode
    assert export.examineForExport(sh, sh.GetItemByDataNode(volume), files.get) is None
    study = sh.GetItemParent(sh.GetItemByDataNode(volume))
    assert export.examineForExport(sh, study, files.get) is None


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no reference", "has no reference volume"),
        ("not DICOM", "was not loaded from DICOM"),
        ("file missing", "1 of the 5 images"),
        ("not in study", "is not in a study"),
    ],
)
def test_why_a_segmentation_is_not_exportable(slicer_core, mrml_scene, tmp_path, case, message):
    ct = _ct(tmp_path)
    volume, files = _dicom_volume(slicer_core, mrml_scene, ct, in_study=case != "not in study")
    node, _ = _segmentation_node(slicer_core, mrml_scene, ct, volume)
    if case == "no reference":
        node.RemoveNodeReferenceIDs(node.GetReferenceImageGeometryReferenceRole())
    elif case == "not DICOM":
        volume.RemoveAttribute("DICOM.instanceUIDs")
    elif case == "file missing":
        files.pop(next(iter(files)))
    sh = slicer_core.subjectHierarchyNode
    check = export.examineForExport(sh, sh.GetItemByDataNode(node), lambda uid: files.get(uid, ""))
    assert not check.exportable
    assert message in check.reason and check.tooltip == check.reason
    assert check.confidence == export.NOT_EXPORTABLE_CONFIDENCE
    assert check.sourceFiles == []
    assert "not possible" in check.name


def test_export_dialog_preselects_ours_over_core_binary_exporter(slicer_core, mrml_scene, tmp_path):
    """Core's DICOMSegmentationPlugin offers 1.0 for every segmentation and wins ties (its name sorts last)."""
    assert export.preselectedExporter({"DICOMLabelmapSegPlugin": 1.0, "DICOMSegmentationPlugin": 1.0}) == (
        "DICOMSegmentationPlugin"
    ), "the dialog's tie rule, which made BINARY the default before"
    ct = _ct(tmp_path)
    volume, files = _dicom_volume(slicer_core, mrml_scene, ct)
    node, _ = _segmentation_node(slicer_core, mrml_scene, ct, volume)
    sh = slicer_core.subjectHierarchyNode
    ours = export.examineForExport(sh, sh.GetItemByDataNode(node), files.get)
    confidences = {
        ours.pluginClass: ours.confidence,
        "DICOMSegmentationPlugin": export.CORE_SEG_EXPORT_CONFIDENCE,
        "DICOMScalarVolumePlugin": 0.5,
    }
    assert export.preselectedExporter(confidences) == examine.PLUGIN_KEY
    volume.RemoveAttribute("DICOM.instanceUIDs")  # ours cannot serve it: core's exporter stays preselected
    refused = export.examineForExport(sh, sh.GetItemByDataNode(node), files.get)
    confidences[refused.pluginClass] = refused.confidence
    assert export.preselectedExporter(confidences) == "DICOMSegmentationPlugin"


def test_loadable_confidence_against_core_seg_plugin(tmp_path):
    ct = _ct(tmp_path)
    spec = examine.loadableSpecsForFiles(map(str, _seg_series(tmp_path, ct)))[0]
    assert spec.confidence > examine.CORE_SEG_LOADABLE_CONFIDENCE, "LABELMAP: ours is preselected"
    binary = examine.loadableSpecForSeries([examine.SegHeader(
        "x", SopClass.SEGMENTATION_STORAGE.value, "1", "2", "BINARY", 3, TransferSyntax.EXPLICIT.uid,
    )])
    assert binary.confidence < examine.CORE_SEG_LOADABLE_CONFIDENCE, "BINARY: core's established import stays"


def test_choosing_a_volume_does_not_change_the_segmentation(slicer_core, mrml_scene, tmp_path):
    """The panel's volume is what the SEG references; the segmentation's own reference geometry stays."""
    from DICOMLabelmapSegLib import mrml

    ct = _ct(tmp_path)
    volume, files = _dicom_volume(slicer_core, mrml_scene, ct)
    node, _ = _segmentation_node(slicer_core, mrml_scene, ct, volume)
    other, other_files = _dicom_volume(slicer_core, mrml_scene, _ct(tmp_path / "other"), in_study=False)
    geometry_before = node.GetSegmentation().GetConversionParameter("Reference image geometry")
    plan = export.referencePlan(node, {**files, **other_files}.get, other)
    assert plan.action is export.ReferenceAction.READY and plan.volumeNode is other
    assert list(plan.sourceFiles) == [other_files[u] for u in other.GetAttribute("DICOM.instanceUIDs").split()]
    assert export.referenceVolumeNode(node) is volume, "the segmentation's reference is unchanged"
    assert node.GetSegmentation().GetConversionParameter("Reference image geometry") == geometry_before
    assert mrml.segmentation_from_node(node, other).geometry.shape == (5, 12, 16)


def test_panel_reference_selector_decisions(slicer_core, mrml_scene):
    a = mrml_scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "A")
    b = mrml_scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "B")
    show = export.panelReferenceVolume
    assert show(True, a, b) is b, "a newly selected segmentation shows its own reference"
    assert show(False, None, b) is b, "a cleared selector shows the reference again"
    assert show(False, a, b) is a, "the user's (or a saved scene's) choice stays and is only used for export"
    assert show(True, None, None) is None


def test_panel_settings_round_trip_and_scene_values_are_kept():
    stored = {settings.SETTINGS_TRANSFER_SYNTAX: "rle", settings.SETTINGS_PALETTE_COLOR: "true"}
    values = settings.panelValuesFromSettings(stored)
    assert values.transferSyntax == TransferSyntax.RLE.label and values.paletteColor
    assert values.exportToDatabase and not values.exportToFolder and values.outputFolder == ""
    written = settings.settingsFromPanelValues(values)
    assert settings.panelValuesFromSettings(written) == values
    assert written[settings.SETTINGS_TRANSFER_SYNTAX] == "rle" and set(written) == set(settings.SETTINGS_DEFAULTS)
    scene = settings.PanelValues(TransferSyntax.DEFLATED.label, False, "Doe^J", False, True, "/data/out")
    assert settings.panelValuesOnEntry(True, scene, stored) is scene, "a scene's saved values are not overwritten"
    assert settings.panelValuesOnEntry(False, scene, stored) == values, "a new parameter node starts from settings"
    assert settings.panelValuesFromSettings({}) == settings.panelValuesFromSettings(settings.SETTINGS_DEFAULTS)


def test_dicom_settings_panel_entry_writes_the_dialog_defaults():
    written = settings.dialogSettingsFromChoices(TransferSyntax.JPEG_2000.label, True)
    assert set(written) == set(settings.DIALOG_KEYS)
    values = settings.withDefaults(written)
    assert export.exportOptions(values).transfer_syntax is TransferSyntax.JPEG_2000
    assert export.exportOptions(values).palette_color is True
    assert settings.panelValuesFromSettings(written).transferSyntax == TransferSyntax.JPEG_2000.label


def test_progress_never_reaches_the_auto_hide_value():
    assert [export.progressValue(f) for f in (-1, 0, 0.5, 0.999, 1.0, 2)] == [0, 0, 50, 99, 99, 99]


def test_refresh_only_an_opened_dicom_browser():
    from types import SimpleNamespace

    assert not export.dicomBrowserIsOpen(SimpleNamespace())
    assert not export.dicomBrowserIsOpen(SimpleNamespace(DICOMInstance=SimpleNamespace(browserWidget=None)))
    assert export.dicomBrowserIsOpen(SimpleNamespace(DICOMInstance=SimpleNamespace(browserWidget=object())))


# --- segmentations whose volume is not from DICOM ------------------------------------------------------------


def test_volume_not_from_dicom_is_offered_for_export_first(slicer_core, mrml_scene, tmp_path):
    ct = _ct(tmp_path)
    volume, files = _dicom_volume(slicer_core, mrml_scene, ct, in_study=False)
    node, _ = _segmentation_node(slicer_core, mrml_scene, ct, volume)
    uids = volume.GetAttribute("DICOM.instanceUIDs").split()
    volume.RemoveAttribute("DICOM.instanceUIDs")  # as a NRRD/NIfTI or resampled volume
    plan = export.referencePlan(node, files.get)
    assert plan.action is export.ReferenceAction.EXPORT_VOLUME_FIRST and plan.volumeNode is volume
    assert "was not loaded from DICOM" in plan.message and "new DICOM series first" in plan.message
    sh = slicer_core.subjectHierarchyNode
    check = export.examineForExport(sh, sh.GetItemByDataNode(node), files.get)
    assert not check.exportable and "DICOM Labelmap Segmentation module" in check.reason

    study = export.prepareVolumeExport(sh, volume, node, "Anonymous", "New study")
    assert sh.GetItemLevel(study) == "Study" and sh.GetItemLevel(sh.GetItemParent(study)) == "Patient"
    assert sh.GetItemParent(sh.GetItemByDataNode(volume)) == study == sh.GetItemParent(sh.GetItemByDataNode(node))
    assert export.prepareVolumeExport(sh, volume, node, "x", "y") == study, "a volume in a study stays there"

    series = str(read_source_series(ct)[0].SeriesInstanceUID)
    modality = {series: "CT", "seg": "SEG"}.get
    assert export.exportedVolumeSeries(["old"], ["old", "seg", series], modality) == series
    assert export.exportedVolumeSeries(["old"], ["old", "seg"], modality) == "", "exported to a folder only"
    export.adoptExportedSeries(volume, series, uids)
    ready = export.referencePlan(node, files.get)
    assert ready.action is export.ReferenceAction.READY and len(ready.sourceFiles) == len(uids)
    assert export.examineForExport(sh, sh.GetItemByDataNode(node), files.get).exportable
    assert load.findReferenceVolume(mrml_scene, series) is volume, "a SEG of it finds the volume by series UID"


def test_segmentation_without_volume_says_what_to_do(slicer_core, mrml_scene, tmp_path):
    ct = _ct(tmp_path)
    volume, files = _dicom_volume(slicer_core, mrml_scene, ct)
    node, _ = _segmentation_node(slicer_core, mrml_scene, ct, volume)
    node.RemoveNodeReferenceIDs(node.GetReferenceImageGeometryReferenceRole())
    plan = export.referencePlan(node, files.get)
    assert plan.action is export.ReferenceAction.NO_VOLUME and plan.volumeNode is None
    assert "has no reference volume" in plan.message and "Reference volume" in plan.message
    with pytest.raises(SourceImageError, match="has no reference volume"):
        export.sourceFilesForSegmentation(node, files.get)


# --- export and load on real MRML --------------------------------------------------------------------------------


@pytest.mark.parametrize(("syntax", "palette"), [(TransferSyntax.JPEG_LS, False), (TransferSyntax.DEFLATED, True)])
def test_export_then_load_without_database(slicer_core, mrml_scene, tmp_path, syntax, palette):
    from DICOMLabelmapSegLib import mrml
    ct = _ct(tmp_path)
    volume, files = _dicom_volume(slicer_core, mrml_scene, ct)
    node, _ = _segmentation_node(slicer_core, mrml_scene, ct, volume)
    _, source_files = export.sourceFilesForSegmentation(node, files.get)
    values = {settings.SETTINGS_TRANSFER_SYNTAX: syntax.value, settings.SETTINGS_PALETTE_COLOR: str(palette)}
    options = export.exportOptions(values, {**export.exportTags(node, values), "SeriesNumber": "7"})
    progress = []
    paths = export.exportSegmentation(
        node, volume, source_files, tmp_path / "out", options, lambda f, m: progress.append(f)
    )
    assert len(paths) == 2 and progress and progress[-1] == pytest.approx(1.0)
    headers = [pydicom.dcmread(p) for p in paths]
    assert all(ds.file_meta.TransferSyntaxUID == syntax.uid for ds in headers)
    assert all(ds.SeriesNumber == 7 and ds.SeriesDescription == "Organs" for ds in headers)
    assert all((ds.PhotometricInterpretation == "PALETTE COLOR") == palette for ds in headers)
    result = export.exportNode(node, volume, source_files, tmp_path / "again", options)
    status = result.summary()
    assert status.startswith("Wrote 2 files") and all(Path(p).name in status for p in result.files)
    assert result.totalBytes == sum(Path(p).stat().st_size for p in result.files) and result.seconds >= 0
    if palette:  # the writer warns that OHIF misreads palette color files: the panel shows it once, not per file
        assert len(result.compatibility) == 1 and "OHIF" in result.compatibility[0], result.compatibility
        assert status.endswith("Note: " + result.compatibility[0])
    else:
        assert result.compatibility == () and "Note:" not in status

    expected = mrml.segmentation_from_node(node, volume)
    loaded = load.loadSegFilesWithoutDatabase([str(tmp_path / "out")], mrml_scene)
    assert len(loaded) == 1
    new = loaded[0]
    assert new.GetName() == "Organs"
    assert export.referenceVolumeNode(new) is volume
    assert set(new.GetAttribute("DICOM.instanceUIDs").split()) == {
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths
    }
    assert differences(expected, mrml.segmentation_from_node(new, volume)) == []
    sh = slicer_core.subjectHierarchyNode
    new_item, volume_item = sh.GetItemByDataNode(new), sh.GetItemByDataNode(volume)
    assert sh.GetItemParent(new_item) == sh.GetItemParent(volume_item), "the SEG goes under the volume's study"
    assert sh.GetItemUID(new_item, "DICOM") == str(pydicom.dcmread(paths[0]).SeriesInstanceUID)


def test_load_without_the_source_volume_creates_patient_and_study(slicer_core, mrml_scene, tmp_path):
    ct = _ct(tmp_path)
    seg = _seg_series(tmp_path, ct, series_description="Alone")
    nodes = load.loadSegFilesWithoutDatabase([str(p) for p in seg], mrml_scene)
    assert len(nodes) == 1 and export.referenceVolumeNode(nodes[0]) is None
    sh = slicer_core.subjectHierarchyNode
    item = sh.GetItemByDataNode(nodes[0])
    study = sh.GetItemAncestorAtLevel(item, "Study")
    patient = sh.GetItemAncestorAtLevel(item, "Patient")
    header = pydicom.dcmread(seg[0], stop_before_pixels=True)
    assert study and sh.GetItemUID(study, "DICOM") == header.StudyInstanceUID
    assert patient and sh.GetItemUID(patient, "DICOM") == header.PatientID


def test_load_errors_are_clear(slicer_core, mrml_scene, tmp_path):
    from DICOMLabelmapSegLib.errors import LabelmapSegError

    (tmp_path / "empty").mkdir()
    with pytest.raises(LabelmapSegError, match="No DICOM Segmentation files"):
        load.loadSegFilesWithoutDatabase([str(tmp_path / "empty")], mrml_scene)
    ct = _ct(tmp_path)
    seg = _seg_series(tmp_path, ct)
    broken = tmp_path / "broken.dcm"
    shutil.copy(seg[0], broken)
    with open(broken, "r+b") as handle:
        handle.truncate(os.path.getsize(broken) - 100)
    with pytest.raises(LabelmapSegError) as info:
        load.segmentationFromFiles([str(broken)])
    message = messages.userMessage(info.value)
    assert message and "Traceback" not in message
    assert mrml_scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0


def test_cancelled_export_leaves_nothing(slicer_core, mrml_scene, tmp_path):
    ct = _ct(tmp_path)
    volume, files = _dicom_volume(slicer_core, mrml_scene, ct)
    node, _ = _segmentation_node(slicer_core, mrml_scene, ct, volume)
    _, source_files = export.sourceFilesForSegmentation(node, files.get)

    def cancel_after_first_file(fraction, message):
        if fraction >= 0.5:
            raise export.OperationCancelled("Cancelled by the user; nothing was written.")

    existing, fresh = tmp_path / "existing", tmp_path / "fresh"  # the export dialog's folder exists
    existing.mkdir()
    for out in (existing, fresh):
        with pytest.raises(export.OperationCancelled):
            export.exportSegmentation(node, volume, source_files, out, ExportOptions(), cancel_after_first_file)
    assert list(existing.iterdir()) == [] and not fresh.exists(), "nothing may be left behind"


def test_export_without_source_files_is_refused(slicer_core, mrml_scene, tmp_path):
    ct = _ct(tmp_path)
    volume, files = _dicom_volume(slicer_core, mrml_scene, ct)
    node, _ = _segmentation_node(slicer_core, mrml_scene, ct, volume)
    with pytest.raises(SourceImageError, match="No source images"):
        export.exportSegmentation(node, volume, [], tmp_path / "out", ExportOptions())


def test_load_finds_the_reference_in_the_scene_and_never_loads_it(slicer_core, mrml_scene, tmp_path):
    """The browser asks about referenced series; load() only looks in the scene (by UIDs) and accepts absence."""
    ct = _ct(tmp_path)
    seg = [str(p) for p in _seg_series(tmp_path, ct)]
    spec = examine.loadableSpecsForFiles(seg)[0]
    absent = load.loadSeries(seg, mrml_scene, spec.nodeName, spec.referencedSeriesUID, spec.referencedInstanceUIDs)
    assert export.referenceVolumeNode(absent) is None, "no reference in the scene: loaded without one"
    assert mrml_scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 0, "the CT is not loaded by us"
    volume, _ = _dicom_volume(slicer_core, mrml_scene, ct)
    present = load.loadSeries(seg, mrml_scene, spec.nodeName, spec.referencedSeriesUID, spec.referencedInstanceUIDs)
    assert export.referenceVolumeNode(present) is volume
    assert mrml_scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 1
    assert load.findReferenceVolume(mrml_scene, spec.referencedSeriesUID) is volume


def test_reference_found_by_instance_uids_when_the_series_item_is_missing(slicer_core, mrml_scene, tmp_path):
    ct = _ct(tmp_path)
    volume, _ = _dicom_volume(slicer_core, mrml_scene, ct, in_study=False)  # no SH series item
    uids = volume.GetAttribute("DICOM.instanceUIDs").split()
    assert load.findReferenceVolume(mrml_scene, "1.2.3.not.loaded", [uids[2]]) is volume
    assert load.findReferenceVolume(mrml_scene, "1.2.3.not.loaded", ["9.9"]) is None
    assert load.findReferenceVolume(mrml_scene, "") is None


def test_node_from_segmentation_sets_instance_uids_without_placing(slicer_core, mrml_scene, tmp_path):
    ct = _ct(tmp_path)
    volume, _ = _dicom_volume(slicer_core, mrml_scene, ct)
    seg = _seg_series(tmp_path, ct)
    segmentation = load.segmentationFromFiles([str(p) for p in seg])
    node = load.nodeFromSegmentation(segmentation, mrml_scene, "X", volume, placeInSubjectHierarchy=False)
    assert node.GetDisplayNode() is not None
    assert node.GetAttribute("DICOM.instanceUIDs").split() == list(segmentation.series_info.sop_instance_uids)
    assert export.referenceVolumeNode(node) is volume
    assert not slicer_core.subjectHierarchyNode.GetItemByDataNode(node), "the DICOM plugin places it itself"


def test_export_result_text(tmp_path):
    small, big = tmp_path / "a.dcm", tmp_path / "b.dcm"
    small.write_bytes(b"x" * 999)
    big.write_bytes(b"x" * 1_500_000)
    text = export.ExportResult((small, big), 2.345).summary()
    assert text.splitlines() == [
        "Wrote 2 files, 1.5 MB in total, in 2.3 s:", "  a.dcm: 999 bytes", "  b.dcm: 1.5 MB"
    ]


def test_export_is_timed(slicer_core, mrml_scene, tmp_path):
    ct = _ct(tmp_path)
    volume, files = _dicom_volume(slicer_core, mrml_scene, ct)
    node, _ = _segmentation_node(slicer_core, mrml_scene, ct, volume)
    _, source_files = export.sourceFilesForSegmentation(node, files.get)
    ticks = iter([10.0, 12.5])
    result = export.exportNode(node, volume, source_files, tmp_path / "o", ExportOptions(), clock=lambda: next(ticks))
    assert result.seconds == 2.5 and len(result.files) == 2 and all(Path(f).is_file() for f in result.files)


def test_removed_volume_is_not_found(slicer_core, mrml_scene, tmp_path):
    ct = _ct(tmp_path)
    volume, _ = _dicom_volume(slicer_core, mrml_scene, ct)
    uid = str(read_source_series(ct)[0].SeriesInstanceUID)
    assert load.findReferenceVolume(mrml_scene, uid) is volume
    mrml_scene.RemoveNode(volume)
    assert load.findReferenceVolume(mrml_scene, uid) is None


def test_slicer_58_python_cannot_run_the_library(slicer_core, mrml_scene, tmp_path):
    """Slicer 5.8 has Python 3.9.10: pydicom 3/highdicom cannot be installed; say so, never preselect."""
    assert dependencies.environmentProblem((3, 12, 10)) == ""
    problem = dependencies.environmentProblem((3, 9, 10))
    assert "Python 3.9.10" in problem and "Slicer 5.10 or later" in problem
    ct = _ct(tmp_path)
    seg = _seg_series(tmp_path, ct)
    spec = examine.loadableSpecsForFiles(map(str, seg), pythonVersion=(3, 9, 10))[0]
    assert spec.confidence == examine.UNSUPPORTED_CONFIDENCE < SCALAR_VOLUME_CONFIDENCE
    assert not spec.selected and spec.warning == problem
    volume, files = _dicom_volume(slicer_core, mrml_scene, ct)
    node, _ = _segmentation_node(slicer_core, mrml_scene, ct, volume)
    sh = slicer_core.subjectHierarchyNode
    check = export.examineForExport(sh, sh.GetItemByDataNode(node), files.get, pythonVersion=(3, 9, 10))
    assert not check.exportable and check.reason == problem
