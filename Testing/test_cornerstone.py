"""OHIF's SEG loader as a validator: @cornerstonejs/adapters 5.14 (pinned in Testing/js) reads our outputs in Node.

* Buffer path (``createLabelmapsFromDICOMBuffer``, the adapters decode pixel data with dcmjs): uncompressed,
  RLE and Deflated files give our labels; encapsulated JPEG-LS / JPEG 2000 are refused (it cannot split
  fragments into frames there).
* Per-frame path (``createLabelmapsFromSegImageIds``), fed by OHIF's own image loader
  (@cornerstonejs/dicom-image-loader 5.14: its WASM CharLS, OpenJPEG, OpenJPH, libjxl, zlib decoders and its
  color conversion), and fed by pydicom's decoders: every syntax gives our labels.
* Known misreads, asserted so that an upstream fix is noticed (and :mod:`DICOMLabelmapSegLib.dicom.compat`
  updated): 16-bit label values wrap modulo 256 (its labelmap is a Uint8Array); PALETTE COLOR frames are
  turned into RGB by the image loader before the adapters read labels, so the segments are lost.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from DICOMLabelmapSegLib.dicom import compat, pixels
from DICOMLabelmapSegLib.dicom.source import geometry_from_source, read_source_series
from DICOMLabelmapSegLib.dicom.syntax import TransferSyntax
from DICOMLabelmapSegLib.dicom.writer import ExportOptions, write_labelmap_seg
from synthetic import make_affine, make_ct_series, make_segmentation
from validators import CornerstoneRefused, assert_check_clean, cornerstone_labels

#: Syntaxes the buffer path decodes itself (dcmjs: native, RLE, and the whole-dataset deflate).
BUFFER_DECODES = {TransferSyntax.EXPLICIT, TransferSyntax.RLE, TransferSyntax.DEFLATED}


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    paths = make_ct_series(tmp_path_factory.mktemp("ct"), shape=(3, 36, 32), affine=make_affine())
    source = read_source_series(paths)
    return source, geometry_from_source(source)


@pytest.fixture(scope="module")
def write(series, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN001, ANN201
    source, geometry = series
    root = tmp_path_factory.mktemp("ours")
    cache: dict[tuple, tuple[Path, np.ndarray]] = {}

    def written(syntax: TransferSyntax, wide: bool, palette: bool = False) -> tuple[Path, np.ndarray]:
        key = (syntax, wide, palette)
        if syntax.missing_encoder_packages():  # e.g. imagecodecs in the Slicer 5.12 compatibility run
            pytest.skip(f"{syntax.label} cannot be written here: {', '.join(syntax.missing_encoder_packages())}")
        if key not in cache:
            labels = [1, 255, 256, 257, 65535] if wide else [1, 2, 7, 255]
            segmentation = make_segmentation(geometry, layers=[labels], seed=3)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", compat.CompatibilityWarning)
                files = write_labelmap_seg(
                    segmentation,
                    source,
                    root / "-".join(map(str, key)),
                    ExportOptions(transfer_syntax=syntax, palette_color=palette),
                )
            assert_check_clean(files[0])
            cache[key] = (files[0], _expected_per_source_image(segmentation, source))
        return cache[key]

    return written


def _expected_per_source_image(segmentation, source: list) -> np.ndarray:  # noqa: ANN001
    """Our labels, one slice per source image in ``source`` order."""
    inverse = np.linalg.inv(segmentation.geometry.affine)
    labels = segmentation.layers[0].labels
    slices = []
    for ds in source:
        k = int(round((inverse @ np.array([*map(float, ds.ImagePositionPatient), 1.0]))[0]))
        slices.append(labels[k])
    return np.stack(slices).astype(np.uint16)


def _frames(path: Path) -> np.ndarray:
    """The decoded frames in file order, as an image loader hands them over: pydicom's decoders where it has one,
    else (Deflated Image Frame Compression, JPEG XL) the imagecodecs-based decoders of dicom/pixels.py."""
    ds = pydicom.dcmread(path)
    try:
        frames = ds.pixel_array
    except (NotImplementedError, ValueError, RuntimeError):
        layout = pixels.FrameLayout(int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated), int(ds.NumberOfFrames))
        frames = np.empty((layout.number_of_frames, layout.rows, layout.columns), dtype=layout.dtype)
        pixels.decode_labelmap_frames(ds, layout, range(layout.number_of_frames), frames)
    return frames.reshape((-1, *frames.shape[-2:]))


@pytest.mark.parametrize("syntax", sorted(BUFFER_DECODES, key=lambda s: s.value), ids=lambda s: s.value)
def test_buffer_path_reads_8_bit_labels_identically(write, series, syntax: TransferSyntax) -> None:  # noqa: ANN001
    path, expected = write(syntax, wide=False)
    labels, typed = cornerstone_labels(path, series[0], "buffer")
    assert typed == "Uint8Array"
    assert np.array_equal(labels, expected)


@pytest.mark.parametrize("syntax", list(TransferSyntax), ids=lambda s: s.value)
def test_per_frame_path_reads_8_bit_labels_identically(write, series, syntax: TransferSyntax) -> None:  # noqa: ANN001
    path, expected = write(syntax, wide=False)
    labels, _ = cornerstone_labels(path, series[0], "frames", _frames(path))
    assert np.array_equal(labels, expected)


@pytest.mark.parametrize("syntax", list(TransferSyntax), ids=lambda s: s.value)
def test_ohif_image_loader_path_reads_8_bit_labels_identically(write, series, syntax: TransferSyntax) -> None:  # noqa: ANN001
    path, expected = write(syntax, wide=False)
    labels, typed = cornerstone_labels(path, series[0], "loader")
    assert typed == "Uint8Array"
    assert np.array_equal(labels, expected)


def test_known_misread_palette_color_through_the_image_loader(write, series) -> None:  # noqa: ANN001
    """OHIF's loader converts PALETTE COLOR frames to RGB; the adapters then read color bytes as labels.

    If this test fails because the labels come back right, upstream fixed it: update dicom/compat.py.
    """
    path, expected = write(TransferSyntax.RLE, wide=False, palette=True)
    labels, _ = cornerstone_labels(path, series[0], "loader")
    assert not np.array_equal(labels, expected)
    wrong = np.count_nonzero(labels != expected) / expected.size
    assert wrong > 0.3, f"only {wrong:.0%} of the voxels differ"
    issues = compat.misreading_issues(pydicom.dcmread(path, stop_before_pixels=True))
    assert "PALETTE COLOR" in " ".join(issue.reason for issue in issues if issue.consumer == compat.CORNERSTONE)


@pytest.mark.parametrize("syntax", [TransferSyntax.JPEG_LS, TransferSyntax.JPEG_2000], ids=lambda s: s.value)
def test_buffer_path_refuses_encapsulated_frames(write, series, syntax: TransferSyntax) -> None:  # noqa: ANN001
    """Known limitation: the buffer path does not split compressed fragments (OHIF uses the per-frame path)."""
    path, _ = write(syntax, wide=False)
    with pytest.raises(CornerstoneRefused, match="encapsulated"):
        cornerstone_labels(path, series[0], "buffer")


@pytest.mark.parametrize(
    ("syntax", "route"),
    [
        (TransferSyntax.EXPLICIT, "buffer"),
        (TransferSyntax.RLE, "buffer"),
        (TransferSyntax.JPEG_LS, "loader"),
        (TransferSyntax.JPEG_2000, "loader"),
        (TransferSyntax.JPEG_2000, "frames"),
    ],
    ids=lambda v: getattr(v, "value", v),
)
def test_known_misread_16_bit_labels_wrap_modulo_256(write, series, syntax: TransferSyntax, route: str) -> None:  # noqa: ANN001
    """cornerstone3D <= 5.14 keeps labels in a Uint8Array: 256 is lost, 257 shows as 1 (compat.CORNERSTONE).

    If this test fails because the labels come back right, upstream fixed it: update dicom/compat.py.
    """
    path, expected = write(syntax, wide=True)
    assert expected.max() > 255
    labels, typed = cornerstone_labels(path, series[0], route, _frames(path) if route == "frames" else None)
    assert typed == "Uint8Array"
    assert np.array_equal(labels, expected % 256)
    assert not np.array_equal(labels, expected)
    issues = compat.misreading_issues(pydicom.dcmread(path, stop_before_pixels=True))
    assert compat.CORNERSTONE in {issue.consumer for issue in issues}


def test_palette_color_through_the_buffer_path(write, series) -> None:  # noqa: ANN001
    """The buffer path reads the stored indices (no palette conversion): labels identical.

    The misread is on the image loader path (test_known_misread_palette_color_through_the_image_loader).
    """
    path, expected = write(TransferSyntax.RLE, wide=False, palette=True)
    labels, _ = cornerstone_labels(path, series[0], "buffer")
    assert np.array_equal(labels, expected)
    issues = compat.misreading_issues(pydicom.dcmread(path, stop_before_pixels=True))
    assert [issue.consumer for issue in issues] == [compat.CORNERSTONE]
