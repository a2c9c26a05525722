"""A picture of a segmentation: a montage of slices in the segment colors with a legend (PNG, Pillow).

:func:`render_preview` draws up to ``max_slices`` slices of the segmentation grid (the frame
direction: axial for an axial series), chosen evenly among the slices that hold labels, each
with its slice number; optionally the reference image series underneath (when it lies on the
same grid); and a legend of the segments shown, with their colors and names. Segments of later
layers are drawn over earlier ones. Slices are turned the way radiologists look at them
(:func:`display_transform`: patient right on the left, anterior or superior at the top). The picture
is for people: it says at a glance what a file holds; it is not a measurement.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..model import Segment, Segmentation

_TILE = 192  # longest side of one slice in the montage, pixels
_MARGIN = 6
_LEGEND_ROW = 14
_MAX_LEGEND = 40
_ALPHA = 0.55  # opacity of the labels over the reference image


def choose_slices(segmentation: Segmentation, max_slices: int) -> list[int]:
    """Up to ``max_slices`` slice indices, evenly spread over the slices with labels (all slices if none has)."""
    occupied = np.zeros(segmentation.geometry.shape[0], dtype=bool)
    for layer in segmentation.layers:
        occupied |= np.asarray(layer.labels).reshape(layer.labels.shape[0], -1).any(axis=1)
    candidates = np.flatnonzero(occupied) if occupied.any() else np.arange(occupied.size)
    if candidates.size <= max_slices:
        return candidates.tolist()
    picks = np.linspace(0, candidates.size - 1, max_slices).round().astype(int)
    return sorted({int(candidates[i]) for i in picks})


def _colors(segmentation: Segmentation) -> list[np.ndarray]:
    """Per layer, a (max label + 1, 3) lookup table label -> RGB (0: no color)."""
    tables = []
    for layer in segmentation.layers:
        top = max((s.label_value for s in layer.segments), default=0)
        table = np.zeros((max(top, int(layer.labels.max(initial=0))) + 1, 3), dtype=np.uint8)
        for segment in layer.segments:
            table[segment.label_value] = segment.color
        tables.append(table)
    return tables


def display_transform(affine: np.ndarray) -> tuple[bool, bool, bool]:
    """(transpose, flip vertically, flip horizontally) that show a slice the way radiologists look at it.

    Axial: patient right on the left of the picture, anterior at the top; coronal: right on the left,
    superior at the top; sagittal: anterior on the left, superior at the top (whatever the grid's axis order).
    """
    row_step, column_step = np.asarray(affine)[:3, 1], np.asarray(affine)[:3, 2]
    down_axis, right_axis = int(np.argmax(np.abs(row_step))), int(np.argmax(np.abs(column_step)))
    transpose = right_axis > down_axis  # the picture's horizontal axis: the lower of L (x), P (y), S (z)
    if transpose:
        row_step, column_step = column_step, row_step
        down_axis, right_axis = right_axis, down_axis
    flip_horizontal = column_step[right_axis] < 0  # +L (or +P) to the right
    flip_vertical = row_step[down_axis] > 0 if down_axis == 2 else row_step[down_axis] < 0  # S up, P down
    return transpose, bool(flip_vertical), bool(flip_horizontal)


def _oriented(image: np.ndarray, transform: tuple[bool, bool, bool]) -> np.ndarray:
    transpose, flip_vertical, flip_horizontal = transform
    if transpose:
        image = np.swapaxes(image, 0, 1)
    if flip_vertical:
        image = image[::-1]
    if flip_horizontal:
        image = image[:, ::-1]
    return np.ascontiguousarray(image)


def _window(reference: np.ndarray) -> np.ndarray:
    """Reference slices scaled to 0..255 (soft-tissue window for CT-like values, else 1-99 percentiles)."""
    values = reference.astype(np.float32)
    low, high = np.percentile(values, [1, 99]) if values.size else (0.0, 1.0)
    if values.min(initial=0) < -500:  # CT in Hounsfield units
        low, high = -160.0, 240.0
    scaled = (values - low) / max(float(high - low), 1e-6)
    return (np.clip(scaled, 0, 1) * 255).astype(np.uint8)


def render_preview(
    segmentation: Segmentation,
    path: str | Path | None = None,
    reference: np.ndarray | None = None,
    max_slices: int = 12,
    title: str | None = None,
) -> bytes:
    """Render the montage as PNG bytes (256 colors) (and write them to ``path`` atomically, if given).

    Parameters
    ----------
    segmentation: Segmentation
        What to draw.
    path: str | Path | None
        PNG file to write (atomically, with the umask's permissions).
    reference: numpy.ndarray | None
        Image intensities on the segmentation's grid, ``(slices, rows, columns)``, drawn in grey underneath.
    max_slices: int
        Most slices in the montage.
    title: str | None
        A line above the montage (e.g. the file name).
    """
    from PIL import Image, ImageDraw, ImageFont

    shape = segmentation.geometry.shape
    if reference is not None and tuple(reference.shape) != tuple(shape):
        raise ValueError(f"The reference image {reference.shape} is not on the segmentation's grid {shape}.")
    slices = choose_slices(segmentation, max(1, int(max_slices)))
    spacing = segmentation.geometry.spacing
    rows, columns = shape[1], shape[2]
    height_mm, width_mm = rows * spacing[1], columns * spacing[2]
    transform = display_transform(segmentation.geometry.affine)
    if transform[0]:
        height_mm, width_mm = width_mm, height_mm
    scale = _TILE / max(height_mm, width_mm)
    tile_size = (max(1, round(width_mm * scale)), max(1, round(height_mm * scale)))
    per_row = min(len(slices), max(1, math.ceil(math.sqrt(len(slices)))))
    grid_rows = math.ceil(len(slices) / per_row)
    tables = _colors(segmentation)
    grey = _window(reference[slices]) if reference is not None else None

    font = ImageFont.load_default()
    shown = _segments_shown(segmentation, slices)
    legend_lines = min(len(shown), _MAX_LEGEND) + (1 if len(shown) > _MAX_LEGEND else 0)
    top = _LEGEND_ROW + _MARGIN if title else _MARGIN
    montage_width = per_row * (tile_size[0] + _MARGIN) + _MARGIN
    legend_width = 220
    width = montage_width + legend_width
    height = max(top + grid_rows * (tile_size[1] + _MARGIN + _LEGEND_ROW), top + legend_lines * _LEGEND_ROW + _MARGIN)
    canvas = Image.new("RGB", (width, height), (24, 24, 24))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((_MARGIN, _MARGIN // 2), _ascii(title)[:120], fill=(230, 230, 230), font=font)
    for n, k in enumerate(slices):
        rgb = np.zeros((rows, columns, 3), dtype=np.float32)
        if grey is not None:
            rgb[...] = grey[n][..., None]
        for layer, table in zip(segmentation.layers, tables):
            labels = np.asarray(layer.labels[k])
            mask = labels > 0
            if mask.any():
                colors = table[np.minimum(labels, len(table) - 1)].astype(np.float32)
                alpha = _ALPHA if grey is not None else 1.0
                rgb[mask] = (1 - alpha) * rgb[mask] + alpha * colors[mask]
        tile = Image.fromarray(_oriented(rgb.astype(np.uint8), transform))  # (rows, columns, 3) uint8: RGB
        tile = tile.resize(tile_size, Image.Resampling.NEAREST)
        x = _MARGIN + (n % per_row) * (tile_size[0] + _MARGIN)
        y = top + (n // per_row) * (tile_size[1] + _MARGIN + _LEGEND_ROW)
        canvas.paste(tile, (x, y))
        draw.text((x, y + tile_size[1] + 1), f"slice {k + 1}/{shape[0]}", fill=(200, 200, 200), font=font)
    for i, segment in enumerate(shown[:_MAX_LEGEND]):
        y = top + i * _LEGEND_ROW
        draw.rectangle([montage_width, y + 2, montage_width + 10, y + 12], fill=tuple(segment.color))
        draw.text((montage_width + 16, y), _ascii(f"{segment.label_value} {segment.name}")[:32], fill=(230, 230, 230),
                  font=font)
    if len(shown) > _MAX_LEGEND:
        draw.text((montage_width, top + _MAX_LEGEND * _LEGEND_ROW), f"+ {len(shown) - _MAX_LEGEND} more segments",
                  fill=(200, 200, 200), font=font)
    buffer = io.BytesIO()
    # 256 colors are plenty for a picture of labels (and keep it small enough for a README).
    canvas.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(buffer, format="PNG", optimize=True)
    data = buffer.getvalue()
    if path is not None:
        from ..atomic import write_atomically

        write_atomically({Path(path): data})
    return data


def _segments_shown(segmentation: Segmentation, slices: Sequence[int]) -> list[Segment]:
    """The segments with voxels in the shown slices, layer by layer, in label order."""
    shown = []
    for layer in segmentation.layers:
        present = set(np.unique(np.asarray(layer.labels[list(slices)])).tolist())
        shown += sorted((s for s in layer.segments if s.label_value in present), key=lambda s: s.label_value)
    return shown


def _ascii(text: str) -> str:
    """What the default bitmap font can draw: printable ASCII, other characters as '?'."""
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in str(text))
