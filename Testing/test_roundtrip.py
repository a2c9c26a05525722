"""import(export(x)) == x: the writer's LABELMAP SEG series read back by the reader.

Property tests (hypothesis) draw geometries (oblique, anisotropic, sheared), layer counts,
label values (gaps, > 255), empty segments, colors, terminology with modifiers, algorithm
and tracking fields, every transfer syntax and palette color on or off. Besides
``differences(original, read_back) == []`` the decoded pixels are checked against a second,
independent decoder (pydicom's own ``pixel_array`` with its pylibjpeg plugins; Python's zlib for
Deflated Image Frame Compression, pillow-jxl-plugin for JPEG XL: validators.independent_frames),
with its frames ordered by their positions.

Default: 25 examples. ``HYPOTHESIS_PROFILE=long`` runs 400.
"""

from __future__ import annotations

import os
import string
from pathlib import Path

import numpy as np
import pydicom
import pytest
from DICOMLabelmapSegLib import (
    Code,
    Geometry,
    Layer,
    Segment,
    SegmentAlgorithmType,
    Segmentation,
    Terminology,
    TransferSyntax,
    differences,
)
from DICOMLabelmapSegLib.dicom.options import ExportOptions
from DICOMLabelmapSegLib.dicom.reader import describe, read_segmentation
from DICOMLabelmapSegLib.dicom.source import read_source_series
from DICOMLabelmapSegLib.dicom.writer import write_labelmap_seg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from synthetic import make_affine, make_ct_series, make_segmentation
from validators import independent_frames

#: Examples per property test: modest by default, many with HYPOTHESIS_PROFILE=long. Set on the
#: test itself (not as a global hypothesis profile) so other test modules are not affected.
EXAMPLES = {"long": 400}.get(os.environ.get("HYPOTHESIS_PROFILE", ""), 25)

pytestmark = pytest.mark.filterwarnings("ignore:The number of bytes of compressed pixel data matches")

SOURCE_SHAPE = (4, 12, 12)  # square in mm (see test_writer_overlap_check_with_non_square_source)
SOURCE_AFFINE = make_affine(spacing=(2.5, 0.75, 0.75), origin=(-30.0, -40.0, 20.0))


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> list[pydicom.Dataset]:
    """One synthetic CT series; segmentations are drawn on grids that overlap it."""
    paths = make_ct_series(tmp_path_factory.mktemp("ct"), shape=SOURCE_SHAPE, affine=SOURCE_AFFINE)
    return read_source_series(paths)


def frame_of_reference(source: list[pydicom.Dataset]) -> str:
    return str(source[0].FrameOfReferenceUID)


def independent_volume(path: Path, geometry: Geometry) -> np.ndarray:
    """The label volume decoded without our codecs (validators.independent_frames), each frame at its slice."""
    ds = pydicom.dcmread(path)
    frames = independent_frames(ds)
    groups = ds.PerFrameFunctionalGroupsSequence
    positions = np.array([[float(v) for v in g.PlanePositionSequence[0].ImagePositionPatient] for g in groups])
    step = geometry.affine[:3, 0]
    k = np.rint((positions - geometry.origin) @ step / (step @ step)).astype(int)
    assert sorted(k.tolist()) == list(range(geometry.shape[0])), "our writer writes every frame once"
    volume = np.zeros(geometry.shape, dtype=frames.dtype)
    volume[k] = frames
    return volume


def assert_round_trip(segmentation: Segmentation, source: list, tmp_path: Path, options: ExportOptions) -> None:
    paths = write_labelmap_seg(segmentation, source, tmp_path, options)
    read_back = read_segmentation(tmp_path)
    assert differences(segmentation, read_back) == []
    assert read_back.series_info.palette_color == options.palette_color
    assert read_back.series_info.transfer_syntax_uids == tuple(options.transfer_syntax.uid for _ in paths)
    assert read_back.referenced_series.series_instance_uid == source[0].SeriesInstanceUID
    assert set(read_back.referenced_series.sop_instance_uids) <= {ds.SOPInstanceUID for ds in source}
    for path, layer in zip(paths, read_back.layers):
        np.testing.assert_array_equal(independent_volume(path, segmentation.geometry), layer.labels)
    (description,) = describe(tmp_path)
    assert description.problem is None
    assert description.geometry.same_as(segmentation.geometry)
    assert [s.label_value for s in description.segments] == [s.label_value for s in read_back.segments]


# ---------------------------------------------------------------------------- fixed cases


@pytest.mark.parametrize("syntax", list(TransferSyntax))
@pytest.mark.parametrize("palette", [False, True], ids=["cielab", "palette"])
def test_round_trip_every_syntax(source: list, tmp_path: Path, syntax: TransferSyntax, palette: bool) -> None:
    geometry = Geometry(SOURCE_SHAPE, SOURCE_AFFINE, frame_of_reference(source))
    segmentation = make_segmentation(geometry, layers=[[1, 2, 7], [3, 300], [5]], empty=[7], seed=3)
    assert_round_trip(segmentation, source, tmp_path, ExportOptions(transfer_syntax=syntax, palette_color=palette))


def test_round_trip_oblique_grid_other_than_the_source(source: list, tmp_path: Path) -> None:
    # A finer oblique grid overlapping the source (e.g. a resampled segmentation).
    affine = make_affine(spacing=(1.3, 0.45, 0.6), origin=(-29.0, -39.0, 21.0), oblique=True)
    segmentation = make_segmentation(Geometry((7, 10, 9), affine, frame_of_reference(source)), layers=[[4, 9]])
    assert_round_trip(segmentation, source, tmp_path, ExportOptions())


def test_round_trip_keeps_series_attributes(source: list, tmp_path: Path) -> None:
    geometry = Geometry(SOURCE_SHAPE, SOURCE_AFFINE, frame_of_reference(source))
    segmentation = make_segmentation(geometry, layers=[[1]])
    options = ExportOptions(
        series_description="Organs", series_number=42, content_label="ORGANS", content_creator_name="Doe^Jane"
    )
    write_labelmap_seg(segmentation, source, tmp_path, options)
    info = read_segmentation(tmp_path).series_info
    assert (info.series_description, info.series_number, info.content_label, info.content_creator_name) == (
        "Organs", 42, "ORGANS", "Doe^Jane"
    )
    assert info.patient_id == source[0].PatientID and info.study_instance_uid == source[0].StudyInstanceUID


# ---------------------------------------------------------------------------- property tests

CODES = [
    Code("10200004", "SCT", "Liver"),
    Code("64033007", "SCT", "Kidney"),
    Code("108369006", "SCT", "Neoplasm"),
    Code("85756007", "SCT", "Tissue"),
    Code("123037004", "SCT", "Anatomical Structure"),
    Code("T-62000", "SRT", "Liver", "1.1"),  # with a coding scheme version
]
MODIFIERS = [Code("7771000", "SCT", "Left"), Code("24028007", "SCT", "Right"), Code("51440002", "SCT", "Bilateral")]
REGIONS = [Code("818981001", "SCT", "Abdomen"), Code("39607008", "SCT", "Lung")]
FAMILIES = [Code("113037", "DCM", "Artificial Intelligence"), Code("123110", "DCM", "Artificial Intelligence")]
TEXT = st.text(alphabet=string.ascii_letters + string.digits + " -_.()", min_size=1, max_size=40).map(str.strip).filter(
    bool
)


@st.composite
def terminologies(draw: st.DrawFn) -> Terminology:
    region = draw(st.none() | st.sampled_from(REGIONS))
    return Terminology(
        category=draw(st.sampled_from(CODES)),
        type=draw(st.sampled_from(CODES)),
        type_modifier=draw(st.none() | st.sampled_from(MODIFIERS)),
        region=region,
        region_modifier=draw(st.none() | st.sampled_from(MODIFIERS)) if region is not None else None,
    )


@st.composite
def segments(draw: st.DrawFn, label_value: int) -> Segment:
    algorithm_type = draw(st.sampled_from(list(SegmentAlgorithmType)))
    family = None
    name = version = None
    if algorithm_type != SegmentAlgorithmType.MANUAL or draw(st.booleans()):
        name = draw(TEXT)
    if algorithm_type != SegmentAlgorithmType.MANUAL and draw(st.booleans()):  # a family is optional
        family, version = draw(st.sampled_from(FAMILIES)), draw(TEXT)
    tracked = draw(st.booleans())
    return Segment(
        label_value=label_value,
        name=draw(TEXT),
        color=draw(st.tuples(*[st.integers(0, 255)] * 3)),
        terminology=draw(terminologies()),
        algorithm_type=algorithm_type,
        algorithm_name=name if (name or algorithm_type != SegmentAlgorithmType.MANUAL) else None,
        algorithm_version=version,
        algorithm_family=family,
        description=draw(st.none() | TEXT),
        tracking_id=draw(TEXT) if tracked else None,
        tracking_uid=pydicom.uid.generate_uid() if tracked else None,
    )


@st.composite
def geometries(draw: st.DrawFn, frame_of_reference_uid: str) -> Geometry:
    # Tiny frames (1 x 1 upwards) and single slices included: both once broke the writer.
    shape = (draw(st.integers(1, 5)), draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    spacing = [draw(st.floats(0.3, 4.0)) for _ in range(3)]
    angles = [draw(st.floats(-np.pi, np.pi)) for _ in range(3)]
    rotation = np.eye(3)
    for axis, angle in enumerate(angles):
        c, s = np.cos(angle), np.sin(angle)
        r = np.eye(3)
        i, j = [a for a in range(3) if a != axis]
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        rotation = r @ rotation
    column_direction, row_direction = rotation[:, 0], rotation[:, 1]
    normal = np.cross(column_direction, row_direction)  # DICOM: row cosines x column cosines
    shear = np.zeros(3)
    if shape[0] > 1 and draw(st.booleans()):
        shear = draw(st.floats(-0.3, 0.3)) * column_direction + draw(st.floats(-0.3, 0.3)) * row_direction
    direction = draw(st.sampled_from([1.0, -1.0]))  # slices along or against the frame normal
    affine = np.eye(4)
    affine[:3, 0] = direction * normal * spacing[0] + shear * spacing[0]
    affine[:3, 1] = row_direction * spacing[1]
    affine[:3, 2] = column_direction * spacing[2]
    # The first voxel lies inside the source volume, so the grids overlap (the writer checks that).
    offset = np.array([draw(st.floats(0.0, 1.0)) for _ in range(3)]) * (np.array(SOURCE_SHAPE) - 1)
    affine[:3, 3] = (SOURCE_AFFINE @ np.append(offset, 1.0))[:3]
    return Geometry(shape, affine, frame_of_reference_uid)


@st.composite
def segmentations(draw: st.DrawFn, frame_of_reference_uid: str) -> Segmentation:
    geometry = draw(geometries(frame_of_reference_uid))
    layers = []
    for _ in range(draw(st.integers(1, 3))):
        values = draw(
            st.lists(st.integers(1, 70) | st.integers(250, 700), min_size=1, max_size=6, unique=True).map(sorted)
        )
        layer_segments = [draw(segments(v)) for v in values]
        present = [v for v in values if draw(st.booleans())]  # the others are empty segments
        dtype = np.uint16 if max(values) > 255 else np.uint8
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        labels = np.zeros(geometry.shape, dtype=dtype)
        for value in present:  # a random box per non-empty segment (later boxes may cover earlier ones)
            low = [int(rng.integers(0, n)) for n in geometry.shape]
            high = [int(rng.integers(a + 1, n + 1)) for a, n in zip(low, geometry.shape)]
            labels[low[0] : high[0], low[1] : high[1], low[2] : high[2]] = value
        layers.append(Layer(labels, layer_segments))
    return Segmentation(geometry, layers)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_round_trip_property(source: list, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    segmentation = data.draw(segmentations(frame_of_reference(source)))
    options = ExportOptions(
        transfer_syntax=data.draw(st.sampled_from(list(TransferSyntax))), palette_color=data.draw(st.booleans())
    )
    assert_round_trip(segmentation, source, tmp_path_factory.mktemp("seg"), options)


# ---------------------------------------------------------------------------- writer issues found here
# Found by the property test above (fixed; kept as named regression tests).


def test_writer_automatic_segment_without_family(source: list, tmp_path: Path) -> None:
    geometry = Geometry(SOURCE_SHAPE, SOURCE_AFFINE, frame_of_reference(source))
    segmentation = make_segmentation(geometry, layers=[[1]])
    layer = segmentation.layers[0]
    layer.segments = [Segment(1, "auto", algorithm_type=SegmentAlgorithmType.AUTOMATIC, algorithm_name="net")]
    assert_round_trip(segmentation, source, tmp_path, ExportOptions())


def test_writer_jpeg_ls_tiny_frames(source: list, tmp_path: Path) -> None:
    affine = SOURCE_AFFINE.copy()
    segmentation = make_segmentation(Geometry((2, 1, 3), affine, frame_of_reference(source)), layers=[[1]])
    assert_round_trip(segmentation, source, tmp_path, ExportOptions(transfer_syntax=TransferSyntax.JPEG_LS))


def test_writer_single_slice_spacing(source: list, tmp_path: Path) -> None:
    affine = make_affine(spacing=(1.7, 0.75, 0.75), origin=(-30.0, -40.0, 20.0))
    segmentation = make_segmentation(Geometry((1, 6, 6), affine, frame_of_reference(source)), layers=[[1]])
    assert_round_trip(segmentation, source, tmp_path, ExportOptions())


def test_writer_overlap_check_with_non_square_source(tmp_path: Path) -> None:
    affine = make_affine(spacing=(2.5, 0.8, 0.7), origin=(-30.0, -40.0, 20.0))
    source = read_source_series(make_ct_series(tmp_path / "ct", shape=(4, 12, 16), affine=affine))
    # A small grid near the far column edge (x = -30 + 10.4 mm): inside the source, which spans 11.2 mm in x.
    grid = affine.copy()
    grid[:3, 3] = (affine @ [1, 2, 14.9, 1])[:3]
    segmentation = make_segmentation(Geometry((2, 4, 4), grid, frame_of_reference(source)), layers=[[1]])
    assert_round_trip(segmentation, source, tmp_path / "seg", ExportOptions())
