"""The Slicer plugin's and module panel's decisions (slicerlogic), on real slicer-core MRML.

What the Qt shell (DICOMLabelmapSegPlugin.py, DICOMLabelmapSeg.py) does is decided here:
loadables for SEG series (real files written by us, dcmqi and highdicom), confidence relative
to Slicer's dcmqi plugin, packages to install, exportability of segmentation nodes in a real
subject hierarchy, settings -> ExportOptions, and the export -> load round trip on real MRML.
"""

# ruff: noqa: F811  (pytest fixtures imported from mrml_support are redefined as test parameters)
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from DICOMLabelmapSegLib.app import slicerlogic
from DICOMLabelmapSegLib.dicom.source import geometry_from_source, read_source_series
from DICOMLabelmapSegLib.dicom.syntax import TransferSyntax
from DICOMLabelmapSegLib.dicom.options import ExportOptions
from DICOMLabelmapSegLib.dicom.writer import write_labelmap_seg
from DICOMLabelmapSegLib.errors import SourceImageError
from DICOMLabelmapSegLib.model import differences
from mrml_support import add_dicom_study_series, mrml_scene, slicer_core  # noqa: F401  (fixtures)
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
    assert slicerlogic.LABELMAP_CONFIDENCE > DCMQI_PLUGIN_CONFIDENCE, "LABELMAP must be preselected over dcmqi"
    assert SCALAR_VOLUME_CONFIDENCE < slicerlogic.BINARY_CONFIDENCE < DCMQI_PLUGIN_CONFIDENCE
    assert SCALAR_VOLUME_CONFIDENCE < slicerlogic.FRACTIONAL_CONFIDENCE < slicerlogic.BINARY_CONFIDENCE
    assert slicerlogic.NOT_EXPORTABLE_CONFIDENCE < 0.1 and slicerlogic.EXPORT_CONFIDENCE == 1.0


def test_labelmap_series_is_one_loadable_with_all_layers(tmp_path):
    ct = _ct(tmp_path)
    seg = _seg_series(tmp_path, ct, series_description="AI organs", transfer_syntax=TransferSyntax.RLE)
    noise = tmp_path / "notes.txt"
    noise.write_text("not DICOM")
    specs = slicerlogic.loadableSpecsForFiles([*map(str, seg), str(noise), *map(str, ct)])
    assert len(specs) == 1
    spec = specs[0]
    assert sorted(spec.files) == sorted(map(str, seg))
    assert spec.confidence == slicerlogic.LABELMAP_CONFIDENCE and spec.selected
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
    original = slicerlogic.readSegHeader
    monkeypatch.setattr(slicerlogic, "readSegHeader", lambda path: read.append(path) or original(path))
    specs = slicerlogic.loadableSpecsForFiles([str(p) for p in [*ct, *seg]], _db_file_value)
    assert len(specs) == 1 and specs[0].segmentationType == "LABELMAP"
    assert sorted(read) == sorted(map(str, seg)), "CT files must be rejected by the cached SOP class alone"


def test_database_without_cached_sop_class_falls_back_to_modality(tmp_path):
    ct = _ct(tmp_path)
    seg = _seg_series(tmp_path, ct)

    def modality_only(path, tag):
        return "" if tag == slicerlogic.TAG_SOP_CLASS_UID else _db_file_value(path, tag)

    assert slicerlogic.isSegFile(str(seg[0]), modality_only)
    assert not slicerlogic.isSegFile(str(ct[0]), modality_only)


@pytest.mark.parametrize(
    ("relative", "kind", "confidence", "segments"),
    [
        ("dcmqi/sparse-labelmap-noppv.dcm", "LABELMAP", slicerlogic.LABELMAP_CONFIDENCE, 1),  # + background 0
        ("dcmqi/liver.dcm", "BINARY", slicerlogic.BINARY_CONFIDENCE, 1),
        ("dcmqi/partial_overlaps.dcm", "BINARY", slicerlogic.BINARY_CONFIDENCE, 5),
        # highdicom: 21 items in the Segment Sequence, one of them the background (segment number 0)
        ("highdicom/seg_image_sm_control_labelmap_palette_color.dcm", "LABELMAP", slicerlogic.LABELMAP_CONFIDENCE, 20),
    ],
)
def test_real_seg_files_of_other_tools(data_dir, relative, kind, confidence, segments):
    path = data_dir / relative
    specs = slicerlogic.loadableSpecsForFiles([str(path)], _db_file_value)
    assert len(specs) == 1
    assert specs[0].segmentationType == kind
    assert specs[0].confidence == confidence
    assert f"{segments} segment" in specs[0].name


def test_two_series_give_two_loadables(tmp_path):
    ct = _ct(tmp_path)
    first = _seg_series(tmp_path / "a", ct, series_description="First")
    second = _seg_series(tmp_path / "b", ct, series_description="Second", layers=((1,),))
    specs = slicerlogic.loadableSpecsForFiles([str(p) for p in [*first, *second]])
    assert sorted(spec.nodeName for spec in specs) == ["First", "Second"]
    assert {spec.nodeName: len(spec.files) for spec in specs} == {"First": 2, "Second": 1}


def test_referenced_instances_fall_back_to_database(tmp_path):
    spec = slicerlogic.LoadableSpec(
        files=["x"], name="n", tooltip="t", confidence=1, nodeName="n", seriesInstanceUID="1.2",
        segmentationType="LABELMAP", referencedSeriesUID="1.2.3",
    )
    instances = ["1.2.3.1", "1.2.3.2"]
    assert slicerlogic.referencedInstanceUIDsOfSeries(spec, lambda uid: instances) == instances
    assert slicerlogic.referencedInstanceUIDsOfSeries(spec) == []


# --- packages ------------------------------------------------------------------------------------------------


def test_slicer_58_pydicom_needs_upgrade(monkeypatch):
    versions = {"pydicom": "2.4.4", "highdicom": None}
    monkeypatch.setattr(slicerlogic, "_installedVersion", lambda name: versions.get(name))
    missing = slicerlogic.missingRequirements()
    assert missing == ["pydicom>=3.0.1", "highdicom>=0.27.0"]
    prompt = slicerlogic.installPrompt(missing)
    assert "upgrades pydicom from 2.4.4" in prompt and "restart Slicer" in prompt
    assert slicerlogic.restartNeededAfterInstall(missing, {"pydicom": object()})
    assert not slicerlogic.restartNeededAfterInstall(["pyjpegls"], {"pydicom": object()})


def test_current_environment_needs_nothing():
    assert slicerlogic.missingRequirements() == []
    assert slicerlogic.missingPackages([s.uid for s in TransferSyntax], forWriting=True) == []


def test_missing_codec_is_offered_for_installation(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "jpeg_ls" else find_spec(name, *a)
    )
    assert slicerlogic.missingPackages([TransferSyntax.JPEG_LS.uid]) == ["pyjpegls"]
    assert slicerlogic.missingPackages([TransferSyntax.RLE.uid, "1.2.3.4.unknown"]) == []
    assert "pyjpegls" in slicerlogic.syntaxExplanation("jpeg-ls")


def test_missing_codec_warns_on_the_loadable(tmp_path, monkeypatch):
    ct = _ct(tmp_path)
    seg = _seg_series(tmp_path, ct)  # JPEG-LS
    monkeypatch.setattr(TransferSyntax, "missing_decoder_packages", lambda self: ["pyjpegls"])
    spec = slicerlogic.loadableSpecsForFiles(map(str, seg))[0]
    assert "pyjpegls" in spec.warning and "asked to install" in spec.warning


# --- settings -> options ---------------------------------------------------------------------------------------


def test_settings_and_tags_become_export_options():
    settings = {
        slicerlogic.SETTINGS_TRANSFER_SYNTAX: "rle",
        slicerlogic.SETTINGS_PALETTE_COLOR: "true",
        slicerlogic.SETTINGS_SERIES_DESCRIPTION: "From settings",
    }
    tags = {"SeriesNumber": " 42 ", "ContentCreatorName": "Doe^Jane", "ContentLabel": "liver v2"}
    options = slicerlogic.exportOptions(settings, tags)
    assert options.transfer_syntax is TransferSyntax.RLE and options.palette_color is True
    assert options.series_number == 42 and options.series_description == "From settings"
    assert options.content_creator_name == "Doe^Jane" and options.content_label == "liver v2"
    assert options.content_description is None
    edited = slicerlogic.exportOptions(settings, {"SeriesDescription": "Edited in dialog"})
    assert edited.series_description == "Edited in dialog" and edited.series_number == 300


def test_empty_settings_give_defaults():
    options = slicerlogic.exportOptions({}, {})
    assert options.transfer_syntax is TransferSyntax.JPEG_LS and options.palette_color is False
    assert options.series_description == "Segmentation" and options.series_number == 300
    assert set(slicerlogic.SETTINGS_DEFAULTS) == {
        f"DICOMLabelmapSeg/{name}"
        for name in (
            "TransferSyntax", "PaletteColor", "SeriesDescription", "ContentCreatorName",
            "ExportToDatabase", "ExportToFolder", "OutputFolder",
        )
    }


@pytest.mark.parametrize("number", ["abc", "0", "-3", "3.5"])
def test_bad_series_number_is_a_clear_error(number):
    with pytest.raises(ValueError, match="not a positive integer"):
        slicerlogic.exportOptions({}, {"SeriesNumber": number})


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
    assert slicerlogic.syntaxFromSetting(value) is expected


def test_syntax_choices_are_labels_with_explanations():
    choices = slicerlogic.syntaxChoices()
    assert choices[0] == TransferSyntax.JPEG_LS.label and len(choices) == len(TransferSyntax)
    for choice in choices:
        assert slicerlogic.syntaxFromSetting(choice).label == choice
        assert slicerlogic.syntaxExplanation(choice) == slicerlogic.syntaxFromSetting(choice).explanation


@pytest.mark.parametrize(
    ("value", "expected"), [("true", True), ("false", False), (True, True), (0, False), ("", False)]
)
def test_to_bool(value, expected):
    assert slicerlogic.toBool(value) is expected


@pytest.mark.parametrize(("folder", "chosen"), [(Path(), False), ("", False), (None, False), ("/tmp/x", True)])
def test_output_folder_chosen(folder, chosen):
    assert slicerlogic.outputFolderChosen(folder) is chosen


# --- export decisions on real MRML -------------------------------------------------------------------------------


def test_segmentation_on_dicom_volume_is_exportable(slicer_core, mrml_scene, tmp_path):
    ct = _ct(tmp_path)
    volume, files = _dicom_volume(slicer_core, mrml_scene, ct)
    node, _ = _segmentation_node(slicer_core, mrml_scene, ct, volume)
    sh = slicer_core.subjectHierarchyNode
    settings = {slicerlogic.SETTINGS_TRANSFER_SYNTAX: "deflated", slicerlogic.SETTINGS_CONTENT_CREATOR_NAME: "Me"}
    check = slicerlogic.examineForExport(sh, sh.GetItemByDataNode(node), lambda uid: files.get(uid, ""), settings)
    assert check.exportable, check.reason
    assert check.confidence == slicerlogic.EXPORT_CONFIDENCE
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
    assert slicerlogic.examineForExport(sh, sh.GetItemByDataNode(volume), files.get) is None
    study = sh.GetItemParent(sh.GetItemByDataNode(volume))
    assert slicerlogic.examineForExport(sh, study, files.get) is None


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
    check = slicerlogic.examineForExport(sh, sh.GetItemByDataNode(node), lambda uid: files.get(uid, ""))
    assert not check.exportable
    assert message in check.reason and check.tooltip == check.reason
    assert check.confidence == slicerlogic.NOT_EXPORTABLE_CONFIDENCE
    assert check.sourceFiles == []
    assert "not possible" in check.name


def test_reference_volume_update_decisions(slicer_core, mrml_scene):
    a = mrml_scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "A")
    b = mrml_scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "B")
    update = slicerlogic.referenceVolumeUpdate
    assert update(False, a, a) == ("none", None)
    assert update(True, a, b) == ("show", b), "a new segmentation shows its own reference"
    assert update(False, None, b) == ("show", b), "a cleared selector shows the reference again"
    assert update(False, a, b) == ("apply", a), "a volume picked by the user becomes the reference"
    assert update(False, a, None) == ("apply", a)
    assert update(True, None, None) == ("none", None)


# --- export and load on real MRML --------------------------------------------------------------------------------


@pytest.mark.parametrize(("syntax", "palette"), [(TransferSyntax.JPEG_LS, False), (TransferSyntax.DEFLATED, True)])
def test_export_then_load_without_database(slicer_core, mrml_scene, tmp_path, syntax, palette):
    from DICOMLabelmapSegLib import mrml
    ct = _ct(tmp_path)
    volume, files = _dicom_volume(slicer_core, mrml_scene, ct)
    node, _ = _segmentation_node(slicer_core, mrml_scene, ct, volume)
    _, source_files = slicerlogic.sourceFilesForSegmentation(node, files.get)
    settings = {slicerlogic.SETTINGS_TRANSFER_SYNTAX: syntax.value, slicerlogic.SETTINGS_PALETTE_COLOR: str(palette)}
    options = slicerlogic.exportOptions(settings, {**slicerlogic.exportTags(node, settings), "SeriesNumber": "7"})
    progress = []
    paths = slicerlogic.exportSegmentation(
        node, volume, source_files, tmp_path / "out", options, lambda f, m: progress.append(f)
    )
    assert len(paths) == 2 and progress and progress[-1] == pytest.approx(1.0)
    headers = [pydicom.dcmread(p) for p in paths]
    assert all(ds.file_meta.TransferSyntaxUID == syntax.uid for ds in headers)
    assert all(ds.SeriesNumber == 7 and ds.SeriesDescription == "Organs" for ds in headers)
    assert all((ds.PhotometricInterpretation == "PALETTE COLOR") == palette for ds in headers)
    status = slicerlogic.formatFileSizes(paths)
    assert status.startswith("Wrote 2 files") and all(Path(p).name in status for p in paths)

    expected = mrml.segmentation_from_node(node, volume)
    loaded = slicerlogic.loadSegFilesWithoutDatabase([str(tmp_path / "out")], mrml_scene)
    assert len(loaded) == 1
    new = loaded[0]
    assert new.GetName() == "Organs"
    assert slicerlogic.referenceVolumeNode(new) is volume
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
    nodes = slicerlogic.loadSegFilesWithoutDatabase([str(p) for p in seg], mrml_scene)
    assert len(nodes) == 1 and slicerlogic.referenceVolumeNode(nodes[0]) is None
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
        slicerlogic.loadSegFilesWithoutDatabase([str(tmp_path / "empty")], mrml_scene)
    ct = _ct(tmp_path)
    seg = _seg_series(tmp_path, ct)
    broken = tmp_path / "broken.dcm"
    shutil.copy(seg[0], broken)
    with open(broken, "r+b") as handle:
        handle.truncate(os.path.getsize(broken) - 100)
    with pytest.raises(LabelmapSegError) as info:
        slicerlogic.segmentationFromFiles([str(broken)])
    message = slicerlogic.userMessage(info.value)
    assert message and "Traceback" not in message
    assert mrml_scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0


def test_cancelled_export_leaves_nothing(slicer_core, mrml_scene, tmp_path):
    ct = _ct(tmp_path)
    volume, files = _dicom_volume(slicer_core, mrml_scene, ct)
    node, _ = _segmentation_node(slicer_core, mrml_scene, ct, volume)
    _, source_files = slicerlogic.sourceFilesForSegmentation(node, files.get)

    def cancel_after_first_file(fraction, message):
        if fraction >= 0.5:
            raise slicerlogic.OperationCancelled("Cancelled by the user; nothing was written.")

    existing, fresh = tmp_path / "existing", tmp_path / "fresh"  # the export dialog's folder exists
    existing.mkdir()
    for out in (existing, fresh):
        with pytest.raises(slicerlogic.OperationCancelled):
            slicerlogic.exportSegmentation(node, volume, source_files, out, ExportOptions(), cancel_after_first_file)
    assert list(existing.iterdir()) == [] and not fresh.exists(), "nothing may be left behind"


def test_export_without_source_files_is_refused(slicer_core, mrml_scene, tmp_path):
    ct = _ct(tmp_path)
    volume, files = _dicom_volume(slicer_core, mrml_scene, ct)
    node, _ = _segmentation_node(slicer_core, mrml_scene, ct, volume)
    with pytest.raises(SourceImageError, match="No source images"):
        slicerlogic.exportSegmentation(node, volume, [], tmp_path / "out", ExportOptions())


def test_referenced_series_to_load(slicer_core, mrml_scene, tmp_path):
    ct = _ct(tmp_path)
    uid = str(read_source_series(ct)[0].SeriesInstanceUID)
    spec = slicerlogic.LoadableSpec(
        files=[], name="", tooltip="", confidence=1, nodeName="", seriesInstanceUID="9",
        segmentationType="LABELMAP", referencedSeriesUID=uid,
    )
    assert slicerlogic.referencedSeriesToLoad(mrml_scene, spec, lambda u: u == uid) == uid
    assert slicerlogic.referencedSeriesToLoad(mrml_scene, spec, lambda u: False) == "", "not in the database"
    _dicom_volume(slicer_core, mrml_scene, ct)
    assert slicerlogic.referencedSeriesToLoad(mrml_scene, spec, lambda u: True) == "", "already loaded"
    assert slicerlogic.findVolumeForSeries(mrml_scene, uid).GetName() == "CT"


def test_node_from_segmentation_sets_instance_uids_without_placing(slicer_core, mrml_scene, tmp_path):
    ct = _ct(tmp_path)
    volume, _ = _dicom_volume(slicer_core, mrml_scene, ct)
    seg = _seg_series(tmp_path, ct)
    segmentation = slicerlogic.segmentationFromFiles([str(p) for p in seg])
    node = slicerlogic.nodeFromSegmentation(segmentation, mrml_scene, "X", volume, placeInSubjectHierarchy=False)
    assert node.GetDisplayNode() is not None
    assert node.GetAttribute("DICOM.instanceUIDs").split() == list(segmentation.series_info.sop_instance_uids)
    assert slicerlogic.referenceVolumeNode(node) is volume
    assert not slicer_core.subjectHierarchyNode.GetItemByDataNode(node), "the DICOM plugin places it itself"


def test_file_sizes_text(tmp_path):
    small, big = tmp_path / "a.dcm", tmp_path / "b.dcm"
    small.write_bytes(b"x" * 999)
    big.write_bytes(b"x" * 1_500_000)
    text = slicerlogic.formatFileSizes([small, big])
    assert text.splitlines() == ["Wrote 2 files, 1.5 MB in total:", "  a.dcm: 999 bytes", "  b.dcm: 1.5 MB"]


def test_removed_volume_is_not_found(slicer_core, mrml_scene, tmp_path):
    ct = _ct(tmp_path)
    volume, _ = _dicom_volume(slicer_core, mrml_scene, ct)
    uid = str(read_source_series(ct)[0].SeriesInstanceUID)
    assert slicerlogic.findVolumeForSeries(mrml_scene, uid) is volume
    mrml_scene.RemoveNode(volume)
    assert slicerlogic.findVolumeForSeries(mrml_scene, uid) is None


def test_slicer_58_python_cannot_run_the_library(slicer_core, mrml_scene, tmp_path):
    """Slicer 5.8 has Python 3.9.10: pydicom 3/highdicom cannot be installed; say so, never preselect."""
    assert slicerlogic.environmentProblem((3, 12, 10)) == ""
    problem = slicerlogic.environmentProblem((3, 9, 10))
    assert "Python 3.9.10" in problem and "Slicer 5.10 or later" in problem
    ct = _ct(tmp_path)
    seg = _seg_series(tmp_path, ct)
    spec = slicerlogic.loadableSpecsForFiles(map(str, seg), pythonVersion=(3, 9, 10))[0]
    assert spec.confidence == slicerlogic.UNSUPPORTED_CONFIDENCE < SCALAR_VOLUME_CONFIDENCE
    assert not spec.selected and spec.warning == problem
    volume, files = _dicom_volume(slicer_core, mrml_scene, ct)
    node, _ = _segmentation_node(slicer_core, mrml_scene, ct, volume)
    sh = slicer_core.subjectHierarchyNode
    check = slicerlogic.examineForExport(sh, sh.GetItemByDataNode(node), files.get, pythonVersion=(3, 9, 10))
    assert not check.exportable and check.reason == problem
