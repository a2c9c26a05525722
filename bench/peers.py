"""The formats under test: how each exports a case's segmentation and imports it back.

Every format has four steps; only ``export`` and ``import_`` are timed::

    state = fmt.setup_export(case, truth)        # e.g. build the Slicer node the user has
    files = fmt.export(state, out_dir)           # timed
    state = fmt.setup_import(case)               # e.g. boot the scene
    result = fmt.import_(state, files)           # timed
    check = fmt.check(truth, result)             # lossless? (voxels, then metadata)

Families: ``ours-node`` (Slicer segmentation node <-> files through the MRML bridge),
``ours-numpy`` (library only), ``peer`` (highdicom, dcmqi, Slicer .seg.nrrd, NIfTI) and
``floor`` (the JPEG-LS codec alone on all frames, as the library calls it).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cases import PreparedCase, reorient
from DICOMLabelmapSegLib.model import Geometry, Segmentation, differences

VENV_BIN = Path(sys.executable).parent


@dataclass
class Check:
    """Outcome of comparing an import with the truth."""

    voxels: bool
    metadata: str  # "exact", "n/a" or a short description of what differs
    detail: str = ""


class Format:
    """Base class: a way of storing a segmentation."""

    name = ""
    family = "peer"
    label = ""
    slow = False  # slow peers run once per case and only on cases that allow them

    def available(self) -> str | None:
        """None if this format can run here, else why not."""
        return None

    def setup_export(self, case: PreparedCase, truth: Segmentation) -> Any:
        return truth

    def export(self, state: Any, out_dir: Path) -> list[Path]:
        raise NotImplementedError

    def setup_import(self, case: PreparedCase) -> Any:
        return None

    def import_(self, state: Any, files: list[Path]) -> Any:
        raise NotImplementedError

    def check(self, truth: Segmentation, result: Any) -> Check:
        raise NotImplementedError

    #: True if ``remove`` can time removing what ``import_`` made (a Slicer node) from its scene.
    removes = False

    def remove(self, state: Any, imported: list[Any]) -> None:
        """Remove the imported result from its scene and drop it (``imported`` holds the only reference)."""
        raise NotImplementedError

    def teardown(self) -> None:
        """Undo what setup changed in this process (only matters when measuring in-process)."""


# ---------------------------------------------------------------------------------------------
# Checks shared by several formats


def check_model(truth: Segmentation, actual: Segmentation) -> Check:
    """Compare a read-back model with the truth: voxels first, then every segment field.

    Exact if model.differences finds nothing. Otherwise voxels are still lossless if every truth
    segment's mask equals the mask of the output segment with the same name (same position if
    names repeat), on the truth grid: tools may renumber labels, regroup layers or crop the grid.
    """
    found = differences(truth, actual)
    if not found:
        return Check(True, "exact")
    voxel_words = ("voxels differ", "layers expected", "geometry differs", "label values")
    others = [d for d in found if not any(w in d for w in voxel_words)]
    ok = check_segment_masks(truth, segment_masks_on_grid(actual, truth, [s.name for s in truth.segments]))
    renumbered = any("label values" in d for d in found)
    metadata = f"{len(others)} fields differ" if others else "exact"
    if renumbered:
        metadata += ", labels renumbered"
    return Check(ok, metadata, "; ".join(found[:3])[:500])


def segment_masks_on_grid(model: Segmentation, truth: Segmentation, names: list[str]) -> list[np.ndarray]:
    """Masks of ``model``'s segments on the truth grid, in the order of ``names`` (else model order)."""
    entries = [(s.name, layer, s.label_value) for layer in model.layers for s in layer.segments]
    model_names = [e[0] for e in entries]
    if len(set(model_names)) == len(model_names) and set(names) <= set(model_names):
        by_name = {e[0]: e for e in entries}
        entries = [by_name[n] for n in names]
    return [reorient(layer.labels == value, model.geometry.affine, truth.geometry) for _, layer, value in entries]


def truth_masks(truth: Segmentation) -> Iterator[tuple[str, np.ndarray]]:
    """(name, mask) of every truth segment, layer by layer."""
    for layer in truth.layers:
        for segment in layer.segments:
            yield segment.name, layer.labels == segment.label_value


def check_label_layers(truth: Segmentation, layers: list[tuple[np.ndarray, dict[int, int]]]) -> bool:
    """Each output layer (array on the truth grid, {output value -> truth value}) equals the truth layer."""
    if len(layers) != len(truth.layers):
        return False
    for layer, (array, mapping) in zip(truth.layers, layers):
        top = max([*mapping.keys(), int(array.max(initial=0))]) + 1
        lut = np.zeros(top, dtype=layer.labels.dtype)
        for out_value, truth_value in mapping.items():
            lut[out_value] = truth_value
        if array.shape != layer.labels.shape or not np.array_equal(lut[array], layer.labels):
            return False
    return True


def check_segment_masks(truth: Segmentation, masks: list[np.ndarray]) -> bool:
    """Output segment masks, in truth segment order, equal the truth masks."""
    expected = list(truth_masks(truth))
    if len(masks) != len(expected):
        return False
    return all(np.array_equal(mask, want) for mask, (_, want) in zip(masks, expected))


def compare_names_colors(truth: Segmentation, names: list[str], colors: list[tuple[int, int, int]]) -> str:
    """'exact' if names and 8-bit colors match in order, else how many differ."""
    segments = truth.segments
    if len(names) != len(segments):
        return f"{len(names)} segments instead of {len(segments)}"
    bad_names = sum(a.name != b for a, b in zip(segments, names))
    bad_colors = sum(tuple(a.color) != tuple(b) for a, b in zip(segments, colors))
    if not bad_names and not bad_colors:
        return "names+colors"
    return f"{bad_names} names, {bad_colors} colors differ"


def remove_node(scene: Any, imported: list[Any]) -> None:
    """What deleting a node or closing the scene costs: RemoveNode, then the last reference goes (destructors).

    A garbage collection is timed only if something still holds the node (it is then what frees it).
    """
    import gc
    import weakref

    node = weakref.ref(imported[0])
    scene.RemoveNode(imported[0])
    imported.clear()
    if node() is not None:
        gc.collect()


def single_layer(truth: Segmentation) -> np.ndarray:
    if len(truth.layers) != 1:
        raise NotApplicable("one label volume cannot hold overlapping segments")
    return truth.layers[0].labels


class NotApplicable(Exception):  # noqa: N818 - a reason, not an error
    """This format cannot store this case (reported as n/a)."""


#: Largest peak RSS (kB) of a tool run by run_tool since the worker last reset it.
CHILD_PEAK_KB = [0]


def run_tool(args: list[str]) -> None:
    """Run a command-line tool; record its peak RSS (wait4); raise with its output if it fails."""
    import os

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(args, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        CHILD_PEAK_KB[0] = max(CHILD_PEAK_KB[0], usage.ru_maxrss)
        if process.returncode != 0:
            out.seek(0)
            err.seek(0)
            raise RuntimeError(f"{Path(args[0]).name} failed ({process.returncode}): "
                               f"{err.read().decode(errors='replace')[-2000:]}{out.read().decode(errors='replace')[-1000:]}")


def total_size(files: list[Path]) -> int:
    return sum(Path(f).stat().st_size for f in files)


# ---------------------------------------------------------------------------------------------
# Our library


def _syntax(value: str) -> Any:
    from DICOMLabelmapSegLib.dicom.syntax import TransferSyntax

    return TransferSyntax.parse(value)


class OursNumpy(Format):
    """Our library from the model (numpy arrays), no MRML: write_labelmap_seg / read_segmentation."""

    family = "ours-numpy"

    def __init__(self, syntax: str, workers: int = 0):
        self.syntax = syntax
        self.workers = workers
        suffix = f"-w{workers}" if workers else ""
        self.name = f"ours-numpy-{syntax}{suffix}"
        self.label = f"ours, numpy -> {syntax}{suffix}"

    def available(self) -> str | None:
        return _missing("DICOMLabelmapSegLib.dicom.writer", "DICOMLabelmapSegLib.dicom.reader")

    def setup_export(self, case: PreparedCase, truth: Segmentation) -> Any:
        from DICOMLabelmapSegLib.dicom.options import ExportOptions

        return truth, case.source_files, ExportOptions(**_options(self.syntax, self.workers))

    def export(self, state: Any, out_dir: Path) -> list[Path]:
        from DICOMLabelmapSegLib.dicom.writer import write_labelmap_seg

        truth, sources, options = state
        return [Path(p) for p in write_labelmap_seg(truth, sources, out_dir, options)]

    def import_(self, state: Any, files: list[Path]) -> Any:
        from DICOMLabelmapSegLib.dicom.reader import read_segmentation

        return read_segmentation(files)

    def check(self, truth: Segmentation, result: Any) -> Check:
        return check_model(truth, result)


def _options(syntax: str, workers: int) -> dict[str, Any]:
    from DICOMLabelmapSegLib.dicom.options import ExportOptions

    options: dict[str, Any] = {"transfer_syntax": _syntax(syntax)}
    if workers and "workers" in {f.name for f in dataclasses.fields(ExportOptions)}:
        options["workers"] = workers
    return options


def _missing(*modules: str) -> str | None:
    import importlib

    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            return f"{module} not importable ({error})"
    return None


class OursNode(Format):
    """End to end as the Slicer plugin runs it: segmentation node -> files -> segmentation node.

    Export is ``app.export.exportSegmentation`` (source headers, MRML bridge, writer); import is
    ``app.load.segmentationFromFiles`` + ``nodeFromSegmentation`` (reader, MRML bridge).
    """

    family = "ours-node"

    def __init__(self, syntax: str):
        self.syntax = syntax
        self.name = f"ours-node-{syntax}"
        self.label = f"ours, node -> {syntax}"

    def available(self) -> str | None:
        return _missing("slicer", "DICOMLabelmapSegLib.dicom.writer", "DICOMLabelmapSegLib.dicom.reader",
                        "DICOMLabelmapSegLib.mrml", "DICOMLabelmapSegLib.app.export")

    def setup_export(self, case: PreparedCase, truth: Segmentation) -> Any:
        import slicerenv
        from DICOMLabelmapSegLib import mrml
        from DICOMLabelmapSegLib.dicom.options import ExportOptions

        env = slicerenv.boot()
        node = mrml.node_from_segmentation(truth, env.scene, name=case.name)
        return node, [str(f) for f in case.source_files], ExportOptions(**_options(self.syntax, 0))

    def export(self, state: Any, out_dir: Path) -> list[Path]:
        from DICOMLabelmapSegLib.app import export
        node, sources, options = state
        arguments = {"segmentationNode": node, "referenceVolumeNode": None, "sourceFiles": sources,
                     "outputDirectory": out_dir, "options": options}
        accepted = inspect.signature(export.exportSegmentation).parameters
        return [Path(p) for p in export.exportSegmentation(**{k: v for k, v in arguments.items()
                                                              if k in accepted})]

    def setup_import(self, case: PreparedCase) -> Any:
        import slicerenv

        return slicerenv.boot()

    def import_(self, state: Any, files: list[Path]) -> Any:
        from DICOMLabelmapSegLib.app import load
        segmentation = load.segmentationFromFiles([str(f) for f in files])
        return load.nodeFromSegmentation(segmentation, state.scene, "imported")

    removes = True

    def remove(self, state: Any, imported: list[Any]) -> None:
        remove_node(state.scene, imported)

    def check(self, truth: Segmentation, result: Any) -> Check:
        from DICOMLabelmapSegLib import mrml
        return check_model(truth, mrml.segmentation_from_node(result))


# ---------------------------------------------------------------------------------------------
# highdicom directly


class Highdicom(Format):
    """highdicom from numpy: hd.seg.Segmentation (one instance per layer); segread + get_volume."""

    def __init__(self, segmentation_type: str):
        self.segmentation_type = segmentation_type
        if segmentation_type == "LABELMAP":
            self.name, self.label = "highdicom-labelmap-jpeg-ls", "highdicom LABELMAP JPEG-LS"
        else:
            self.name, self.label = "highdicom-binary", "highdicom BINARY"

    def setup_export(self, case: PreparedCase, truth: Segmentation) -> Any:
        """Untimed: highdicom needs segment numbers 1..n, so label values with gaps are renumbered here."""
        labelmap = self.segmentation_type == "LABELMAP"
        groups: list[tuple[np.ndarray, list[Any]]] = []
        if labelmap or len(truth.layers) == 1:
            for layer in truth.layers:
                values = [s.label_value for s in layer.segments]
                if values == list(range(1, len(values) + 1)):
                    groups.append((layer.labels, layer.segments))
                    continue
                lut = np.zeros(max(values) + 1 if values else 1, dtype=np.uint16 if len(values) > 255 else np.uint8)
                lut[values] = np.arange(1, len(values) + 1)
                groups.append((lut[layer.labels], layer.segments))
        else:  # overlapping BINARY: one stack of masks, segments numbered over all layers
            masks = np.stack([mask for _, mask in truth_masks(truth)], axis=-1)
            groups.append((masks, truth.segments))
        return groups, case.source_files

    def export(self, state: Any, out_dir: Path) -> list[Path]:
        """Read the source headers (timed, as in our export), hd.seg.Segmentation per layer, save."""
        import highdicom as hd
        import pydicom
        from DICOMLabelmapSegLib.dicom.segment import segment_description
        from DICOMLabelmapSegLib.geometry import slice_normal
        from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless

        groups, files = state
        sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
        normal = slice_normal(sources[0].ImageOrientationPatient)  # in the truth's slice order (k)
        sources.sort(key=lambda ds: float(np.dot(normal, [float(v) for v in ds.ImagePositionPatient])))
        labelmap = self.segmentation_type == "LABELMAP"
        series_uid = hd.UID()
        paths = []
        for index, (pixels, segments) in enumerate(groups):
            descriptions = [segment_description(dataclasses.replace(s, label_value=n + 1))
                            for n, s in enumerate(segments)]
            seg = hd.seg.Segmentation(
                sources, pixels, self.segmentation_type, descriptions, series_uid, 300, hd.UID(), index + 1,
                "bench", "highdicom", hd.__version__, "1",
                transfer_syntax_uid=JPEGLSLossless if labelmap else ExplicitVRLittleEndian,
            )
            path = out_dir / f"seg_{index + 1}.dcm"
            seg.save_as(path)
            paths.append(path)
        return paths

    def import_(self, state: Any, files: list[Path]) -> Any:
        import highdicom as hd

        volumes = []
        for path in files:
            seg = hd.seg.segread(path)
            overlapping = self.segmentation_type != "LABELMAP" and len(files) == 1 and seg.number_of_segments > 1
            try:
                volume = seg.get_volume(combine_segments=True)
            except (ValueError, RuntimeError):
                if not overlapping:
                    raise
                seg = hd.seg.segread(path)  # a failed get_volume leaves highdicom's frame database locked
                volume = seg.get_volume()
            names = [seg.get_segment_description(n).segment_label for n in seg.segment_numbers]
            volumes.append((volume, names))
        return volumes

    def check(self, truth: Segmentation, result: Any) -> Check:
        names = [n for _, segment_names in result for n in segment_names]
        if len(result) == len(truth.layers) and all(v.array.ndim == 3 for v, _ in result):
            layers = []
            for layer, (volume, _) in zip(truth.layers, result):
                array = reorient(volume.array, volume.affine, truth.geometry)
                layers.append((array, {n + 1: s.label_value for n, s in enumerate(layer.segments)}))
            ok = check_label_layers(truth, layers)
        else:
            volume = result[0][0]
            array = volume.array
            masks = [reorient(array[..., n], volume.affine, truth.geometry) > 0 for n in range(array.shape[-1])]
            ok = check_segment_masks(truth, masks)
        bad = sum(a.name != b for a, b in zip(truth.segments, names))
        return Check(ok, "names" if not bad and len(names) == len(truth.segments) else f"{bad} names differ")


# ---------------------------------------------------------------------------------------------
# dcmqi


def dcmqi_segment(segment: Any, label_id: int) -> dict[str, Any]:
    """One segment in dcmqi's metadata JSON (as Slicer's exporter writes it)."""
    terminology = segment.terminology

    def code(c: Any) -> dict[str, str]:
        return {"CodeValue": c.value, "CodingSchemeDesignator": c.scheme_designator, "CodeMeaning": c.meaning}

    entry: dict[str, Any] = {
        "labelID": label_id,
        "SegmentLabel": segment.name,
        "SegmentDescription": terminology.category.meaning,
        "SegmentAlgorithmType": segment.algorithm_type.value,
        "recommendedDisplayRGBValue": list(segment.color),
        "SegmentedPropertyCategoryCodeSequence": code(terminology.category),
        "SegmentedPropertyTypeCodeSequence": code(terminology.type),
    }
    if segment.algorithm_name:
        entry["SegmentAlgorithmName"] = segment.algorithm_name
    if terminology.type_modifier is not None:
        entry["SegmentedPropertyTypeModifierCodeSequence"] = code(terminology.type_modifier)
    if terminology.region is not None:
        entry["AnatomicRegionSequence"] = code(terminology.region)
    return entry


def dcmqi_metadata(segment_lists: list[list[dict[str, Any]]]) -> dict[str, Any]:
    return {
        "ContentCreatorName": "Slicer",
        "ClinicalTrialSeriesID": "1",
        "ClinicalTrialTimePointID": "1",
        "ClinicalTrialCoordinatingCenterName": "QIICR",
        "SeriesDescription": "Segmentation",
        "SeriesNumber": "300",
        "InstanceNumber": "1",
        "segmentAttributes": segment_lists,
    }


def write_nrrd(path: Path, labels: np.ndarray, geometry: Geometry, gzip: bool = False) -> None:
    """A labelmap NRRD (LPS, ITK-readable) of a [k, j, i] array."""
    import nrrd

    directions = geometry.affine[:3, [2, 1, 0]].T  # rows: the i, j, k steps
    header = {
        "type": "uint8" if labels.dtype == np.uint8 else "uint16",
        "dimension": 3,
        "space": "left-posterior-superior",
        "space directions": directions,
        "kinds": ["domain", "domain", "domain"],
        "space origin": geometry.affine[:3, 3],
        "encoding": "gzip" if gzip else "raw",
    }
    nrrd.write(str(path), labels.transpose(2, 1, 0), header, index_order="F")


def read_nrrd(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A NRRD as ([k, j, i] array, model affine)."""
    import nrrd

    data, header = nrrd.read(str(path), index_order="F")
    directions = np.asarray(header["space directions"], dtype=np.float64)
    affine = np.eye(4)
    space = header.get("space", "left-posterior-superior")
    flip = np.diag([-1.0, -1.0, 1.0]) if space in ("right-anterior-superior", "RAS") else np.eye(3)
    affine[:3, :3] = (flip @ directions.T)[:, [2, 1, 0]]
    affine[:3, 3] = flip @ np.asarray(header["space origin"], dtype=np.float64)
    return np.ascontiguousarray(data.transpose(2, 1, 0)), affine


class DcmqiLabelmap(Format):
    """dcmqi's LABELMAP writer from a labelmap NRRD (one per layer); segimage2itkimage to read."""

    def __init__(self, compress: bool):
        self.compress = compress
        self.name = "dcmqi-labelmap-deflate" if compress else "dcmqi-labelmap"
        self.label = f"dcmqi LABELMAP{' deflate' if compress else ''}"

    def available(self) -> str | None:
        return None if (VENV_BIN / "itkimage2segimage").exists() else "dcmqi binaries not found"

    def setup_export(self, case: PreparedCase, truth: Segmentation) -> Any:
        return truth, case.source_dir

    def export(self, state: Any, out_dir: Path) -> list[Path]:
        truth, source_dir = state
        paths = []
        with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
            for index, layer in enumerate(truth.layers):
                image = Path(tmp) / f"layer{index}.nrrd"
                write_nrrd(image, layer.labels, truth.geometry)
                meta = Path(tmp) / f"meta{index}.json"
                meta.write_text(json.dumps(dcmqi_metadata([[dcmqi_segment(s, s.label_value) for s in layer.segments]])))
                out = out_dir / f"seg_{index + 1}.dcm"
                args = [str(VENV_BIN / "itkimage2segimage"), "--inputImageList", str(image),
                        "--inputDICOMDirectory", str(source_dir), "--inputMetadata", str(meta),
                        "--outputDICOM", str(out), "--segmentationType", "labelmap", "--useLabelIDAsSegmentNumber"]
                if self.compress:
                    args += ["--compress", "deflate"]
                run_tool(args)
                paths.append(out)
        return paths

    def import_(self, state: Any, files: list[Path]) -> Any:
        results = []
        with tempfile.TemporaryDirectory() as tmp:
            for index, path in enumerate(files):
                folder = Path(tmp) / str(index)
                folder.mkdir()
                run_tool([str(VENV_BIN / "segimage2itkimage"), "--inputDICOM", str(path),
                          "--outputDirectory", str(folder), "--mergeSegments"])
                meta = json.loads((folder / "meta.json").read_text())
                images = sorted(folder.glob("*.nrrd"), key=lambda p: int(p.stem) if p.stem.isdigit() else 0)
                results.append(([read_nrrd(p) for p in images], meta))
        return results

    def check(self, truth: Segmentation, result: Any) -> Check:
        layers = []
        for images, meta in result:
            if len(images) != 1:
                return Check(False, "n/a", f"{len(images)} files for one layer")
            array, affine = images[0]
            ids = [s.get("labelID") for s in meta["segmentAttributes"][0]]
            layers.append((reorient(array, affine, truth.geometry), {int(v): int(v) for v in ids if v}))
        ok = len(result) == len(truth.layers) and check_label_layers(truth, layers)
        names = [s.get("SegmentLabel") for _, meta in result for s in meta["segmentAttributes"][0]
                 if s.get("labelID", 1) != 0]
        colors = [tuple(int(round(c)) for c in s.get("recommendedDisplayRGBValue", (0, 0, 0)))
                  for _, meta in result for s in meta["segmentAttributes"][0] if s.get("labelID", 1) != 0]
        return Check(ok, compare_names_colors(truth, names, colors))


class DcmqiBinarySlicer(Format):
    """What Slicer's built-in DICOM SEG export/import does today (per-segment NRRD + dcmqi BINARY)."""

    name = "dcmqi-binary-slicer"
    label = "Slicer built-in: dcmqi BINARY"
    slow = True

    def available(self) -> str | None:
        if not (VENV_BIN / "itkimage2segimage").exists():
            return "dcmqi binaries not found"
        return _missing("slicer", "DICOMLabelmapSegLib.mrml")

    def setup_export(self, case: PreparedCase, truth: Segmentation) -> Any:
        import slicerenv
        from DICOMLabelmapSegLib import mrml
        env = slicerenv.boot()
        node = mrml.node_from_segmentation(truth, env.scene, name=case.name)
        return env, node, case.source_files

    def export(self, state: Any, out_dir: Path) -> list[Path]:
        import slicer
        import slicerenv
        import vtk
        from DICOMLabelmapSegLib import mrml
        env, node, sources = state
        segmentation = node.GetSegmentation()
        ids = vtk.vtkStringArray()
        segmentation.GetSegmentIDs(ids)
        segment_ids = [ids.GetValue(n) for n in range(ids.GetNumberOfValues())]
        model = mrml.segmentation_from_node(node)  # metadata for the JSON, as the exporter reads tags
        by_name = {s.name: s for s in model.segments}
        out = out_dir / "seg.dcm"
        with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
            files, attributes = [], []
            for segment_id in segment_ids:  # DICOMSegmentationExporter.createAndGetLabelMapsFromSegments
                merged = slicer.vtkOrientedImageData()
                one = vtk.vtkStringArray()
                one.InsertNextValue(segment_id)
                node.GenerateMergedLabelmapForAllSegments(merged, 0, None, one)
                label_node = slicer.vtkMRMLLabelMapVolumeNode()
                env.scene.AddNode(label_node)
                slicer.vtkSlicerSegmentationsModuleLogic.CreateLabelmapVolumeFromOrientedImageData(merged, label_node)
                path = Path(tmp) / f"{segment_id}_label.nrrd"
                slicerenv.save_labelmap_node(env, label_node, path, compress=True)
                env.scene.RemoveNode(label_node)
                files.append(str(path))
                name = segmentation.GetSegment(segment_id).GetName()
                attributes.append([dcmqi_segment(by_name[name], 1)])
            meta = Path(tmp) / "seg_meta.json"
            meta.write_text(json.dumps(dcmqi_metadata(attributes), indent=2))
            cli_dir = Path(tmp) / "dicom"  # Slicer copies the source files to a temporary folder
            cli_dir.mkdir()
            for source in sources:
                shutil.copyfile(source, cli_dir / Path(source).name)
            run_tool([str(VENV_BIN / "itkimage2segimage"), "--inputDICOMDirectory", str(cli_dir),
                      "--inputImageList", ",".join(files), "--inputMetadata", str(meta), "--outputDICOM", str(out)])
        return [out]

    def setup_import(self, case: PreparedCase) -> Any:
        import slicerenv

        return slicerenv.boot()

    def import_(self, state: Any, files: list[Path]) -> Any:
        import slicer
        import slicerenv

        env = state
        node = env.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        segmentation = node.GetSegmentation()
        term = env.terminologies_logic
        with tempfile.TemporaryDirectory() as tmp:
            run_tool([str(VENV_BIN / "segimage2itkimage"), "--inputDICOM", str(files[0]),
                      "--outputDirectory", tmp, "--mergeSegments"])
            meta = json.loads((Path(tmp) / "meta.json").read_text())
            for index, attributes in enumerate(meta["segmentAttributes"]):  # DICOMSegmentationPlugin.load
                label_node = slicerenv.load_labelmap_node(env, Path(tmp) / f"{index + 1}.nrrd")
                before = segmentation.GetNumberOfSegments()
                if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(label_node, node):
                    raise RuntimeError("ImportLabelmapToSegmentationNode failed")
                described = [a for a in attributes if a.get("labelID", 1) != 0]
                for n, attr in zip(range(before, segmentation.GetNumberOfSegments()), described):
                    segment = segmentation.GetNthSegment(n)
                    segment.SetName(attr["SegmentLabel"])
                    segment.SetColor([c / 255.0 for c in attr.get("recommendedDisplayRGBValue", (150, 150, 0))])
                    segment.SetTag("Description", attr.get("SegmentDescription", ""))
                    cat = attr.get("SegmentedPropertyCategoryCodeSequence", {})
                    typ = attr.get("SegmentedPropertyTypeCodeSequence", {})
                    entry = term.SerializeTerminologyEntry(
                        "Segmentation category and type - DICOM master list",
                        cat.get("CodeValue", ""), cat.get("CodingSchemeDesignator", ""), cat.get("CodeMeaning", ""),
                        typ.get("CodeValue", ""), typ.get("CodingSchemeDesignator", ""), typ.get("CodeMeaning", ""),
                        "", "", "", "Anatomic codes - DICOM master list", "", "", "", "", "", "")
                    segment.SetTag(segment.GetTerminologyEntryTagName(), entry)
                    if "SegmentAlgorithmType" in attr:
                        segment.SetTag("DICOM.SegmentAlgorithmType", attr["SegmentAlgorithmType"])
                    if "SegmentAlgorithmName" in attr:
                        segment.SetTag("DICOM.SegmentAlgorithmName", attr["SegmentAlgorithmName"])
                env.scene.RemoveNode(label_node)
        return node

    def check(self, truth: Segmentation, result: Any) -> Check:
        from DICOMLabelmapSegLib import mrml
        return check_model(truth, mrml.segmentation_from_node(result))


# ---------------------------------------------------------------------------------------------
# Slicer .seg.nrrd and NIfTI


class SlicerSegNrrd(Format):
    """Slicer's own file: vtkMRMLSegmentationStorageNode write/read of .seg.nrrd (gzip)."""

    name = "slicer-seg-nrrd"
    label = "Slicer .seg.nrrd"

    def available(self) -> str | None:
        return _missing("slicer", "DICOMLabelmapSegLib.mrml")

    def setup_export(self, case: PreparedCase, truth: Segmentation) -> Any:
        import slicerenv
        from DICOMLabelmapSegLib import mrml
        env = slicerenv.boot()
        return env, mrml.node_from_segmentation(truth, env.scene, name=case.name)

    def export(self, state: Any, out_dir: Path) -> list[Path]:
        import slicerenv

        env, node = state
        path = out_dir / "segmentation.seg.nrrd"
        slicerenv.save_segmentation_node(env, node, path)
        return [path]

    def setup_import(self, case: PreparedCase) -> Any:
        import slicerenv

        return slicerenv.boot()

    def import_(self, state: Any, files: list[Path]) -> Any:
        import slicerenv

        return slicerenv.load_segmentation_node(state, files[0])

    removes = True

    def remove(self, state: Any, imported: list[Any]) -> None:
        remove_node(state.scene, imported)

    def check(self, truth: Segmentation, result: Any) -> Check:
        from DICOMLabelmapSegLib import mrml
        return check_model(truth, mrml.segmentation_from_node(result))


class Nifti(Format):
    """NIfTI .nii.gz with nibabel (label values only: no names, colors or terminology)."""

    name = "nifti-gz"
    label = "NIfTI .nii.gz (nibabel)"

    def setup_export(self, case: PreparedCase, truth: Segmentation) -> Any:
        single_layer(truth)
        return truth

    def export(self, state: Any, out_dir: Path) -> list[Path]:
        import nibabel as nib

        truth = state
        labels = truth.layers[0].labels
        ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ truth.geometry.affine[:, [2, 1, 0, 3]]
        path = out_dir / "labels.nii.gz"
        nib.Nifti1Image(labels.transpose(2, 1, 0), ras).to_filename(str(path))
        return [path]

    def import_(self, state: Any, files: list[Path]) -> Any:
        import nibabel as nib

        img = nib.load(str(files[0]))
        return np.asarray(img.dataobj), img.affine

    def check(self, truth: Segmentation, result: Any) -> Check:
        from cases import nifti_affine_to_model

        data, affine = result
        array = reorient(np.ascontiguousarray(data.transpose(2, 1, 0)), nifti_affine_to_model(affine),
                         truth.geometry)
        return Check(np.array_equal(array, truth.layers[0].labels), "labels only")


class OursNodeSlicerCodecs(OursNode):
    """Ours, node <-> JPEG-LS, with only the codecs Slicer bundles (pyjpegls; imagecodecs hidden from the library)."""

    def __init__(self) -> None:
        super().__init__("jpeg-ls")
        self.name = "ours-node-jpeg-ls-slicer-codecs"
        self.label = "ours, node -> jpeg-ls, Slicer's bundled codecs only (pyjpegls, no imagecodecs)"

    @staticmethod
    def _hide_imagecodecs() -> None:
        from DICOMLabelmapSegLib.dicom import codecs

        visible = codecs.has_module
        if not getattr(visible, "hides_imagecodecs", False):
            def has_module(name: str) -> bool:
                return name != "imagecodecs" and visible(name)

            has_module.hides_imagecodecs = True  # type: ignore[attr-defined]
            codecs.has_module = has_module
            import DICOMLabelmapSegLib.dicom.syntax as syntax
            syntax.has_module = has_module

    def setup_export(self, case: PreparedCase, truth: Segmentation) -> Any:
        self._hide_imagecodecs()
        return super().setup_export(case, truth)

    def setup_import(self, case: PreparedCase) -> Any:
        self._hide_imagecodecs()
        return super().setup_import(case)


# ---------------------------------------------------------------------------------------------
# Floor: the JPEG-LS codec alone


class CodecFloor(Format):
    """The JPEG-LS codec alone, as the library calls it (codecs.encode_frames and the registry's decoder, 8 or 16
    bits as the SEG stores them), on every frame of every layer, 1 or 2 threads; nothing else."""

    family = "floor"

    def __init__(self, threads: int):
        self.threads = threads
        self.name = f"codec-jpeg-ls-{threads}t"
        self.label = f"JPEG-LS codec alone, {threads} thread{'s' if threads > 1 else ''}"

    def available(self) -> str | None:
        return _missing("DICOMLabelmapSegLib.dicom.codecs")

    def setup_export(self, case: PreparedCase, truth: Segmentation) -> Any:
        return [np.ascontiguousarray(layer.labels) for layer in truth.layers]

    def export(self, state: Any, out_dir: Path) -> list[Path]:
        from DICOMLabelmapSegLib.dicom.codecs import encode_frames
        from DICOMLabelmapSegLib.dicom.syntax import TransferSyntax

        streams = [s for labels in state for s in encode_frames(labels, TransferSyntax.JPEG_LS, self.threads)]
        path = out_dir / "frames.jls"
        with open(path, "wb") as f:  # the size column: all code streams back to back
            for stream in streams:
                f.write(stream)
        shapes = [[int(n) for n in labels.shape] + [labels.dtype.itemsize * 8] for labels in state]
        (out_dir / "frames.json").write_text(json.dumps({"sizes": [len(s) for s in streams], "layers": shapes}))
        return [path]

    def import_(self, state: Any, files: list[Path]) -> Any:
        from DICOMLabelmapSegLib.dicom.codecs import FrameFormat
        from DICOMLabelmapSegLib.dicom.syntax import TransferSyntax

        index = json.loads((files[0].parent / "frames.json").read_text())
        data = memoryview(files[0].read_bytes())
        offsets = np.concatenate([[0], np.cumsum(index["sizes"])])
        streams = [data[offsets[n]:offsets[n + 1]] for n in range(len(index["sizes"]))]
        layers, first = [], 0
        for slices, rows, columns, bits in index["layers"]:
            decode = TransferSyntax.JPEG_LS.codec.decoder(FrameFormat(rows, columns, bits))
            out = np.empty((slices, rows, columns), dtype=np.uint16 if bits == 16 else np.uint8)

            def one(k: int, decode: Any = decode, out: np.ndarray = out, first: int = first) -> None:
                out[k] = decode(streams[first + k])

            if self.threads <= 1:
                for k in range(slices):
                    one(k)
            else:
                with ThreadPoolExecutor(self.threads) as pool:
                    list(pool.map(one, range(slices)))
            layers.append(out)
            first += slices
        return layers

    def check(self, truth: Segmentation, result: Any) -> Check:
        ok = len(truth.layers) == len(result) and all(
            np.array_equal(layer.labels, labels) for layer, labels in zip(truth.layers, result))
        return Check(ok, "n/a")


SYNTAXES = ("jpeg-ls", "rle", "jpeg2000", "deflated", "explicit")


def all_formats() -> dict[str, Format]:
    """Every format, by name, in the order of the report."""
    formats: list[Format] = [OursNode(s) for s in SYNTAXES]
    formats.append(OursNodeSlicerCodecs())
    formats += [OursNumpy("jpeg-ls"), OursNumpy("deflated")]
    formats += [Highdicom("LABELMAP"), Highdicom("BINARY"), DcmqiBinarySlicer(), DcmqiLabelmap(False),
                DcmqiLabelmap(True), SlicerSegNrrd(), Nifti(), CodecFloor(1), CodecFloor(2)]
    return {f.name: f for f in formats}
