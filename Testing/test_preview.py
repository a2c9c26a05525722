"""``info --preview``: a montage of slices in the segment colors with a legend (formats/preview.py)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from DICOMLabelmapSegLib.cli.main import main
from DICOMLabelmapSegLib.dicom.source import geometry_from_source, read_source_series
from DICOMLabelmapSegLib.dicom.writer import write_labelmap_seg
from DICOMLabelmapSegLib.formats.preview import choose_slices, display_transform, render_preview
from DICOMLabelmapSegLib.model import Geometry, Layer, Segment, Segmentation
from PIL import Image
from synthetic import make_ct_series


def _segmentation(affine: np.ndarray | None = None) -> Segmentation:
    labels = np.zeros((10, 24, 30), dtype=np.uint8)
    labels[3:5, 2:8, 3:9] = 1  # near row 0, column 0
    labels[6, 10:20, 20:28] = 2
    segments = [Segment(1, "liver", (220, 40, 40)), Segment(2, "spleen", (40, 40, 220)), Segment(3, "absent")]
    return Segmentation(Geometry(labels.shape, np.eye(4) if affine is None else affine), [Layer(labels, segments)])


def test_slices_with_labels_are_chosen() -> None:
    segmentation = _segmentation()
    assert choose_slices(segmentation, 12) == [3, 4, 6]
    assert choose_slices(segmentation, 2) == [3, 6]


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        (((0, 0, 1), (0, 1, 0), (1, 0, 0)), (False, False, False)),  # DICOM axial: rows +P, columns +L
        (((0, 0, 1), (0, -1, 0), (-1, 0, 0)), (False, True, True)),  # RAS-like NIfTI grid: rows +A, columns +R
        (((0, 0, 1), (1, 0, 0), (0, 1, 0)), (True, False, False)),  # rows along x, columns along y
        (((0, 1, 0), (0, 0, -1), (1, 0, 0)), (False, False, False)),  # coronal: rows toward inferior
    ],
)
def test_display_transform_shows_slices_as_radiologists_do(steps, expected) -> None:  # noqa: ANN001
    affine = np.eye(4)
    affine[:3, :3] = np.array(steps, dtype=float).T  # columns: slice, row, column steps
    assert display_transform(affine) == expected


def test_render_draws_segment_colors_and_legend(tmp_path: Path) -> None:
    out = tmp_path / "preview.png"
    data = render_preview(_segmentation(), out, title="test\x1b[31m")
    assert out.read_bytes() == data
    image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    colors = {tuple(c) for c in image.reshape(-1, 3)}
    for color in ((220, 40, 40), (40, 40, 220)):
        assert any(np.abs(np.array(c) - color).max() <= 8 for c in colors), color
    assert image.shape[1] > 2 * 150 + 200  # two tiles in a row (three slices) plus the legend


def test_render_refuses_a_reference_on_another_grid() -> None:
    with pytest.raises(ValueError, match="grid"):
        render_preview(_segmentation(), reference=np.zeros((3, 3, 3)))


def test_cli_info_preview_with_reference(tmp_path: Path) -> None:
    paths = make_ct_series(tmp_path / "ct", shape=(4, 16, 14))
    source = read_source_series(paths)
    geometry = geometry_from_source(source)
    labels = np.zeros(geometry.shape, dtype=np.uint8)
    labels[1:3, 4:9, 4:9] = 5
    segmentation = Segmentation(geometry, [Layer(labels, [Segment(5, "blob", (0, 255, 0))])])
    seg = write_labelmap_seg(segmentation, source, tmp_path / "seg")[0]
    out = tmp_path / "picture.png"
    assert main(["info", str(seg), "--preview", str(out), "--preview-reference", str(tmp_path / "ct")]) == 0
    image = Image.open(out)
    assert image.format == "PNG" and image.size[0] > 200
    other = write_labelmap_seg(segmentation, source, tmp_path / "seg2")[0]
    assert main(["info", str(seg), str(other), "--preview", str(tmp_path / "two.png")]) == 1  # one series only
    assert not (tmp_path / "two.png").exists()
