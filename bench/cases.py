"""Benchmark cases: a segmentation model (the ground truth) and a source CT series for each.

Each case is prepared once into a cache folder::

    <cache>/<case>/truth.pkl       the Segmentation (model.py) every format must reproduce
    <cache>/<case>/source/*.dcm    the CT series it references (real UIDs and geometry)

Cases
-----
tsfull    TotalSegmentator labels resampled to 512x512x334 (61 labels), synthetic CT on the same grid.
ts20      the real 20-slice TotalSegmentator CT (blank UIDs repaired in a copy) with its real labels.
synth120  120 random ellipsoids, uint8, 384x384x200, synthetic CT.
synth300  300 random ellipsoids, uint16, 384x384x200, synthetic CT.
overlap3  42 ellipsoids in 3 overlapping layers, 256x256x160, synthetic CT.
tiny      6 labels on 48x40x10: for the smoke test.
"""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from DICOMLabelmapSegLib.geometry import affine_from_plane, frame_positions, plane_attributes, slice_normal
from DICOMLabelmapSegLib.model import (
    DEFAULT_TERMINOLOGY,
    Code,
    Geometry,
    Layer,
    ReferencedSeries,
    Segment,
    SegmentAlgorithmType,
    Segmentation,
    Terminology,
)
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
DEFAULT_CACHE = BENCH_DIR / "results" / "cache"
CASE_FORMAT_VERSION = 3  # bump to invalidate cached cases when their construction changes

_AI = Code("113037", "DCM", "Artificial Intelligence")
_ANATOMY = Terminology(
    category=Code("123037004", "SCT", "Anatomical Structure"),
    type=Code("85756007", "SCT", "Tissue"),
)


def data_dir() -> Path:
    """The shared real-data folder (env DICOMLABELMAPSEG_TEST_DATA, else ../shared/data)."""
    import os

    env = os.environ.get("DICOMLABELMAPSEG_TEST_DATA")
    candidates = [Path(env)] if env else []
    candidates += [parent / "shared" / "data" for parent in REPO_DIR.parents]
    for candidate in candidates:
        if (candidate / "benchmark").is_dir():
            return candidate
    raise FileNotFoundError("Shared data not found: set DICOMLABELMAPSEG_TEST_DATA to the shared data folder.")


@dataclass(frozen=True)
class CaseSpec:
    """What a case is; ``build(source_dir)`` writes the source series and returns the truth."""

    name: str
    description: str
    build: Callable[[Path], Segmentation]
    slow_peers: bool  # whether the slow peer (dcmqi BINARY via per-segment files) runs on it by default


@dataclass
class PreparedCase:
    """A case ready to benchmark: where its truth and source series are."""

    name: str
    description: str
    folder: Path
    slow_peers: bool

    @property
    def source_dir(self) -> Path:
        return self.folder / "source"

    @property
    def source_files(self) -> list[Path]:
        return sorted(self.source_dir.glob("*.dcm"))

    def load_truth(self) -> Segmentation:
        with open(self.folder / "truth.pkl", "rb") as f:
            return pickle.load(f)

    def summary(self) -> dict:
        with open(self.folder / "summary.json") as f:
            return json.load(f)


# ---------------------------------------------------------------------------------------------
# Geometry helpers


def model_from_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Labels ``[k, j, i]`` and the model affine ``(k, j, i, 1) -> LPS`` of a NIfTI label file."""
    import nibabel as nib

    img = nib.load(str(path))
    data = np.asarray(img.dataobj)
    labels = np.ascontiguousarray(data.transpose(2, 1, 0))
    return labels, nifti_affine_to_model(img.affine)


def nifti_affine_to_model(ras_affine: np.ndarray) -> np.ndarray:
    """NIfTI (i, j, k) -> RAS affine as the model's (k, j, i) -> LPS affine."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(ras_affine, dtype=np.float64)
    return lps[:, [2, 1, 0, 3]]


def reorient(array: np.ndarray, affine: np.ndarray, target: Geometry, atol: float = 1e-3) -> np.ndarray:
    """Put a 3D ``array`` (index -> LPS ``affine``) on the ``target`` grid by axis permutation/flips only.

    The array may cover part of the target grid (readers that skip empty frames); the rest is 0.
    Raises ValueError if the grids differ otherwise (no resampling is done).
    """
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    src_dirs = affine[:3, :3] / spacing
    order, flips = [], []
    for axis in range(3):
        dots = src_dirs.T @ target.direction[:, axis]
        best = int(np.argmax(np.abs(dots)))
        if abs(abs(dots[best]) - 1) > 1e-3:
            raise ValueError("grids are not aligned: they differ by a rotation")
        order.append(best)
        flips.append(dots[best] < 0)
    out = np.transpose(array, order)
    new_affine = affine[:, order + [3]].copy()
    for axis, flip in enumerate(flips):
        if flip:
            out = np.flip(out, axis)
            new_affine[:3, 3] += new_affine[:3, axis] * (out.shape[axis] - 1)
            new_affine[:3, axis] *= -1
    if not np.allclose(new_affine[:3, :3], target.affine[:3, :3], atol=atol, rtol=0):
        raise ValueError(f"grids differ in spacing:\n{new_affine}\nvs\n{target.affine}")
    offset_float = np.linalg.solve(target.affine[:3, :3], new_affine[:3, 3] - target.affine[:3, 3])
    offset = np.rint(offset_float).astype(int)
    if np.any(np.abs(offset_float - offset) > 1e-2) or np.any(offset < 0) or \
            np.any(offset + out.shape > np.array(target.shape)):
        raise ValueError(f"array of shape {out.shape} at index offset {offset_float} is not inside {target.shape}")
    if tuple(out.shape) == tuple(target.shape):
        return np.ascontiguousarray(out)
    full = np.zeros(target.shape, dtype=out.dtype)
    k, j, i = offset
    full[k:k + out.shape[0], j:j + out.shape[1], i:i + out.shape[2]] = out
    return full


def _series_geometry(datasets: list[pydicom.Dataset]) -> tuple[list[pydicom.Dataset], Geometry]:
    """Sort a single-frame series along its normal and build its Geometry."""
    normal = slice_normal(datasets[0].ImageOrientationPatient)
    datasets = sorted(datasets, key=lambda ds: float(np.dot(normal, [float(v) for v in ds.ImagePositionPatient])))
    first = [float(v) for v in datasets[0].ImagePositionPatient]
    step = np.subtract([float(v) for v in datasets[1].ImagePositionPatient], first) if len(datasets) > 1 else normal
    affine = affine_from_plane(first, datasets[0].ImageOrientationPatient, datasets[0].PixelSpacing, step)
    shape = (len(datasets), int(datasets[0].Rows), int(datasets[0].Columns))
    return datasets, Geometry(shape, affine, str(datasets[0].FrameOfReferenceUID))


# ---------------------------------------------------------------------------------------------
# Source series


def write_ct_series(geometry: Geometry, labels: np.ndarray, out_dir: Path, patient: str) -> list[Path]:
    """Write a synthetic CT series on ``geometry`` (HU derived from ``labels``) with real UIDs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    orientation, spacing = plane_attributes(geometry.affine)
    positions = frame_positions(geometry.affine, geometry.shape[0])
    thickness = float(np.linalg.norm(geometry.affine[:3, 0]))
    study_uid, series_uid = generate_uid(), generate_uid()
    hu = np.where(labels > 0, 30 + (labels.astype(np.int32) % 60), -1000).astype(np.int16)
    paths = []
    for k in range(geometry.shape[0]):
        sop_uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop_uid
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20260101"
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
        ds.AccessionNumber = "BENCH1"
        ds.Modality = "CT"
        ds.Manufacturer = "DICOMLabelmapSeg benchmark"
        ds.ReferringPhysicianName = ""
        ds.PatientName, ds.PatientID = f"Bench^{patient}", f"BENCH-{patient}"
        ds.PatientBirthDate, ds.PatientSex = "", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, k + 1
        ds.FrameOfReferenceUID = geometry.frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        ds.ImagePositionPatient = [round(float(v), 6) for v in positions[k]]
        ds.ImageOrientationPatient = [round(float(v), 8) for v in orientation]
        ds.PixelSpacing = [round(float(v), 8) for v in spacing]
        ds.SliceThickness = round(thickness, 6)
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = geometry.shape[1], geometry.shape[2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "HU"
        ds.KVP = 120
        ds.PixelData = hu[k].tobytes()
        path = out_dir / f"CT{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def referenced_series(files: list[Path]) -> ReferencedSeries:
    """ReferencedSeries of a written series (identifiers only)."""
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    first = headers[0]
    return ReferencedSeries(
        study_instance_uid=str(first.StudyInstanceUID),
        series_instance_uid=str(first.SeriesInstanceUID),
        sop_class_uid=str(first.SOPClassUID),
        sop_instance_uids=tuple(str(h.SOPInstanceUID) for h in headers),
        frame_of_reference_uid=str(first.FrameOfReferenceUID),
    )


# ---------------------------------------------------------------------------------------------
# Segment descriptions


def _color(index: int) -> tuple[int, int, int]:
    """A distinct-looking deterministic 8-bit color."""
    rng = np.random.default_rng(1000 + index)
    return tuple(int(v) for v in rng.integers(20, 256, size=3))


def _segments(values: list[int], names: dict[int, str] | None = None, automatic: bool = True) -> list[Segment]:
    segments = []
    for value in values:
        name = (names or {}).get(value, f"segment_{value}")
        segments.append(
            Segment(
                label_value=int(value),
                name=name,
                color=_color(value),
                terminology=_ANATOMY if value % 2 else DEFAULT_TERMINOLOGY,
                algorithm_type=SegmentAlgorithmType.AUTOMATIC if automatic else SegmentAlgorithmType.MANUAL,
                algorithm_name="TotalSegmentator" if automatic else None,
                algorithm_version="2.0" if automatic else None,
                algorithm_family=_AI if automatic else None,
            )
        )
    return segments


def _totalsegmentator_names() -> dict[int, str]:
    with open(data_dir() / "totalsegmentator_total_classes.json") as f:
        return {int(k): v for k, v in json.load(f).items()}


def _present(labels: np.ndarray) -> list[int]:
    counts = np.bincount(labels.ravel())
    return [int(v) for v in np.flatnonzero(counts) if v]


# ---------------------------------------------------------------------------------------------
# Case builders


def _from_labels(labels: np.ndarray, affine: np.ndarray, source_dir: Path, patient: str,
                 names: dict[int, str] | None = None) -> Segmentation:
    geometry = Geometry(labels.shape, affine, generate_uid())
    files = write_ct_series(geometry, labels, source_dir, patient)
    layer = Layer(labels, _segments(_present(labels), names))
    return Segmentation(geometry, [layer], referenced_series(files))


def build_tsfull(source_dir: Path) -> Segmentation:
    labels, affine = model_from_nifti(data_dir() / "benchmark" / "tsfull_labels_512x512x334.nii.gz")
    return _from_labels(labels.astype(np.uint8), affine, source_dir, "TSFULL", _totalsegmentator_names())


def build_ts20(source_dir: Path) -> Segmentation:
    """The real CT with blank UIDs repaired in a copy, and its real TotalSegmentator labels."""
    ts = data_dir() / "totalsegmentator"
    source_dir.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid = generate_uid(), generate_uid()
    datasets = []
    for index, path in enumerate(sorted((ts / "example_ct_dicom").iterdir())):
        ds = pydicom.dcmread(path)
        sop_uid = generate_uid()
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop_uid
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.PatientID, ds.PatientName = "BENCH-TS20", "Bench^TS20"
        ds.StudyID = ds.get("StudyID") or "1"
        ds.save_as(source_dir / f"CT{index + 1:04d}.dcm", enforce_file_format=True)
        datasets.append(ds)
    datasets, geometry = _series_geometry(datasets)
    labels_nifti, nifti_affine = model_from_nifti(ts / "example_seg_dicom.nii.gz")
    labels = reorient(labels_nifti, nifti_affine, geometry, atol=1e-2).astype(np.uint8)
    layer = Layer(labels, _segments(_present(labels), _totalsegmentator_names()))
    return Segmentation(geometry, [layer], referenced_series(sorted(source_dir.glob("*.dcm"))))


def ellipsoids(shape: tuple[int, int, int], values: list[int], dtype: type, seed: int,
               size: tuple[float, float] = (0.04, 0.18)) -> np.ndarray:
    """Paint one random ellipsoid per value (later ones on top); every value stays present."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=dtype)
    dims = np.array(shape, dtype=np.float64)
    for value in values:
        radii = np.maximum(rng.uniform(*size, size=3) * dims, 1.5)
        centre = rng.uniform(radii, dims - radii)
        lo = np.maximum(np.floor(centre - radii).astype(int), 0)
        hi = np.minimum(np.ceil(centre + radii).astype(int) + 1, shape)
        kk, jj, ii = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        inside = ((kk - centre[0]) / radii[0]) ** 2 + ((jj - centre[1]) / radii[1]) ** 2 \
            + ((ii - centre[2]) / radii[2]) ** 2 <= 1.0
        labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]][inside] = value
    missing = sorted(set(values) - set(_present(labels)))
    for n, value in enumerate(missing):  # fully covered by later ones: give each a small visible cube
        k = (n * 3) % (shape[0] - 2)
        labels[k:k + 2, 1:3, 1 + 3 * (n % (shape[2] // 3 - 1)):3 + 3 * (n % (shape[2] // 3 - 1))] = value
    return labels


def _synthetic_affine(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, 0] = [0, 0, spacing[0]]
    affine[:3, 1] = [0, spacing[1], 0]
    affine[:3, 2] = [spacing[2], 0, 0]
    affine[:3, 3] = [-spacing[2] * shape[2] / 2, -spacing[1] * shape[1] / 2, -spacing[0] * shape[0]]
    return affine


def _build_synthetic(n_labels: int, dtype: type, shape: tuple[int, int, int], seed: int, patient: str,
                     value_step: int = 1) -> Callable[[Path], Segmentation]:
    def build(source_dir: Path) -> Segmentation:
        values = [1 + value_step * n for n in range(n_labels)]
        labels = ellipsoids(shape, values, dtype, seed)
        return _from_labels(labels, _synthetic_affine(shape, (1.5, 0.8, 0.8)), source_dir, patient)

    return build


def build_overlap3(source_dir: Path) -> Segmentation:
    """42 segments in 3 layers that overlap each other; label values unique across layers."""
    shape = (160, 256, 256)
    groups = [list(range(1, 31)), list(range(31, 39)), list(range(39, 43))]
    sizes = [(0.05, 0.15), (0.15, 0.3), (0.25, 0.4)]
    layers_labels = [ellipsoids(shape, values, np.uint8, 7 + n, size) for n, (values, size) in
                     enumerate(zip(groups, sizes))]
    geometry = Geometry(shape, _synthetic_affine(shape, (1.25, 0.9, 0.9)), generate_uid())
    combined = np.maximum.reduce(layers_labels)
    files = write_ct_series(geometry, combined, source_dir, "OVERLAP3")
    layers = [Layer(labels, _segments(_present(labels))) for labels in layers_labels]
    return Segmentation(geometry, layers, referenced_series(files))


def _build_layers(n_layers: int, per_layer: int, shape: tuple[int, int, int], seed: int,
                  patient: str) -> Callable[[Path], Segmentation]:
    """``n_layers`` overlapping layers of ``per_layer`` ellipsoids each (label values unique across layers)."""
    def build(source_dir: Path) -> Segmentation:
        layers_labels = [ellipsoids(shape, list(range(1 + n * per_layer, 1 + (n + 1) * per_layer)), np.uint8,
                                    seed + n, (0.08, 0.25)) for n in range(n_layers)]
        geometry = Geometry(shape, _synthetic_affine(shape, (1.5, 0.8, 0.8)), generate_uid())
        files = write_ct_series(geometry, np.maximum.reduce(layers_labels), source_dir, patient)
        layers = [Layer(labels, _segments(_present(labels))) for labels in layers_labels]
        return Segmentation(geometry, layers, referenced_series(files))

    return build


#: Cases of the scaling study (grid size, segment count, layer count); run with the SCALING formats only.
SCALING = {
    "voxels": ["grid128", "grid256", "tsfull", "grid512x1000"],
    "segments": ["seg10", "seg100", "seg1000"],
    "layers": ["layers1", "layers3", "layers10"],
}

CASES: dict[str, CaseSpec] = {
    spec.name: spec
    for spec in (
        CaseSpec("tsfull", "TotalSegmentator 61 labels, 512x512x334, synthetic CT", build_tsfull, True),
        CaseSpec("ts20", "real CT 20 slices 512x512, real TotalSegmentator labels (31)", build_ts20, True),
        CaseSpec("synth120", "120 ellipsoids, uint8, 384x384x200",
                 _build_synthetic(120, np.uint8, (200, 384, 384), 120, "SYNTH120"), False),
        CaseSpec("synth300", "300 ellipsoids, uint16, 384x384x200",
                 _build_synthetic(300, np.uint16, (200, 384, 384), 300, "SYNTH300"), False),
        CaseSpec("overlap3", "42 overlapping ellipsoids in 3 layers, 256x256x160", build_overlap3, True),
        CaseSpec("grid128", "40 ellipsoids, uint8, 128x128x128",
                 _build_synthetic(40, np.uint8, (128, 128, 128), 128, "GRID128"), False),
        CaseSpec("grid256", "40 ellipsoids, uint8, 256x256x256",
                 _build_synthetic(40, np.uint8, (256, 256, 256), 256, "GRID256"), False),
        CaseSpec("grid512x1000", "61 ellipsoids, uint8, 512x512x1000 (the memory case)",
                 _build_synthetic(61, np.uint8, (1000, 512, 512), 1000, "GRID1000"), False),
        CaseSpec("seg10", "10 ellipsoids, uint16, 256x256x100",
                 _build_synthetic(10, np.uint16, (100, 256, 256), 10, "SEG10"), False),
        CaseSpec("seg100", "100 ellipsoids, uint16, 256x256x100",
                 _build_synthetic(100, np.uint16, (100, 256, 256), 100, "SEG100"), False),
        CaseSpec("seg1000", "1000 ellipsoids, uint16, 256x256x100",
                 _build_synthetic(1000, np.uint16, (100, 256, 256), 1001, "SEG1000"), False),
        CaseSpec("layers1", "1 layer of 10 ellipsoids, 256x256x100", _build_layers(1, 10, (100, 256, 256), 31,
                                                                                   "LAYERS1"), False),
        CaseSpec("layers3", "3 overlapping layers of 10 ellipsoids, 256x256x100",
                 _build_layers(3, 10, (100, 256, 256), 33, "LAYERS3"), False),
        CaseSpec("layers10", "10 overlapping layers of 10 ellipsoids, 256x256x100",
                 _build_layers(10, 10, (100, 256, 256), 40, "LAYERS10"), False),
        CaseSpec("tiny", "6 labels, 48x40x10 (smoke test)",
                 _build_synthetic(6, np.uint8, (10, 40, 48), 6, "TINY", value_step=3), True),
    )
}


def prepare(name: str, cache_dir: Path = DEFAULT_CACHE) -> PreparedCase:
    """Build case ``name`` into ``cache_dir`` unless a current copy is there already."""
    spec = CASES[name]
    folder = Path(cache_dir) / name
    stamp = folder / f"ready-v{CASE_FORMAT_VERSION}"
    if not stamp.exists():
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        truth = spec.build(folder / "source")
        truth.validate()
        with open(folder / "truth.pkl", "wb") as f:
            pickle.dump(truth, f, protocol=pickle.HIGHEST_PROTOCOL)
        summary = {
            "name": name,
            "description": spec.description,
            "shape": list(truth.geometry.shape),
            "layers": len(truth.layers),
            "segments": len(truth.segments),
            "dtype": str(truth.layers[0].labels.dtype),
            "label_bytes": int(sum(layer.labels.nbytes for layer in truth.layers)),
        }
        with open(folder / "summary.json", "w") as f:
            json.dump(summary, f, indent=1)
        stamp.touch()
    return PreparedCase(name, spec.description, folder, spec.slow_peers)
