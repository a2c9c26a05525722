"""``info``: what a SEG holds (type, syntax, segments, layers, geometry, references), from headers only."""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from .common import EXIT_FAILED, EXIT_OK, PROGRAM, Formatter, classify_error
from .text import printable

NAME = "info"


def add_parser(subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
    from .main import MAIN_EPILOG

    text = "Describe DICOM SEG file(s): type, transfer syntax, segments, layers, geometry, references."
    parser = subparsers.add_parser(NAME, parents=list(parents), help=text, epilog=MAIN_EPILOG,
                                   formatter_class=Formatter,
                                   description=text + " Reads headers only (no pixel data is decoded).")
    parser.add_argument("inputs", nargs="+", metavar="SEG_FILE_OR_DIR", help="SEG files or folders.")
    parser.add_argument("--json", action="store_true", help="Print JSON (a list, one object per series) for scripts.")
    preview = parser.add_argument_group("picture")
    preview.add_argument("--preview", metavar="OUT.png",
                         help="Also draw a montage of slices in the segment colors with a legend (one series; reads "
                              "the pixel data).")
    preview.add_argument("--preview-reference", metavar="DICOM_DIR",
                         help="Image series drawn in grey under the labels (sampled on the segmentation's grid).")
    preview.add_argument("--preview-slices", type=int, default=12, metavar="N", help="Most slices in the montage.")
    return parser


def run(args: argparse.Namespace, stdout: TextIO | None = None) -> int:
    from ..dicom.reader import describe

    stdout = stdout or sys.stdout
    failures = 0
    everything: list[dict[str, Any]] = []
    for source in args.inputs:
        try:
            descriptions = [_description_dict(item) for item in describe(str(source))]
        except Exception as error:  # noqa: BLE001 - classified
            kind, message = classify_error(error)
            if kind == "internal":
                raise
            sys.stderr.write(f"{PROGRAM}: error: {source}: {message}\n")
            if args.debug:
                traceback.print_exc()
            failures += 1
            continue
        for description in descriptions:
            description.setdefault("source", str(source))
        everything += descriptions
    if getattr(args, "preview", None) and not failures:
        if len(everything) != 1:
            sys.stderr.write(f"{PROGRAM}: error: --preview draws one series; the inputs hold {len(everything)}.\n")
            return EXIT_FAILED
        write_preview(args.inputs, args.preview, args.preview_reference, args.preview_slices)
    if args.json:
        json.dump(everything, stdout, indent=2, ensure_ascii=False, default=str)
        stdout.write("\n")
    else:
        for description in everything:
            stdout.write(format_description(description) + "\n")
    return EXIT_FAILED if failures else EXIT_OK


def write_preview(inputs: Sequence[str], output: str, reference_dir: str | None, max_slices: int) -> None:
    """Read the series of ``inputs`` and draw its preview PNG (see :mod:`..formats.preview`)."""
    import logging

    from ..dicom.reader import read_segmentation
    from ..formats.preview import render_preview

    segmentation = read_segmentation([str(source) for source in inputs])
    reference = None
    if reference_dir:
        reference = reference_on_grid(reference_dir, segmentation)
        if reference is None:
            logging.getLogger("DICOMLabelmapSegLib.cli").warning(
                "%s does not overlap the segmentation's grid; the preview shows the labels alone.", reference_dir)
    title = ", ".join(Path(str(source)).name for source in inputs)
    render_preview(segmentation, output, reference=reference, max_slices=max_slices, title=title)


def reference_on_grid(reference_dir: str, segmentation: Any) -> Any:
    """The intensities of the image series in ``reference_dir`` sampled (nearest voxel) on the segmentation's
    grid, as a (slices, rows, columns) float32 array; None if the two grids do not overlap."""
    import numpy as np
    import pydicom
    from pydicom.pixels import apply_modality_lut

    from ..dicom.source import geometry_from_source, read_source_series

    headers = read_source_series(reference_dir, require_uids=False)
    grid = geometry_from_source(headers)
    to_index = np.linalg.inv(grid.affine)
    source = np.zeros(grid.shape, dtype=np.float32)
    for header in headers:
        ds = pydicom.dcmread(header.filename) if getattr(header, "filename", None) else header
        k = int(round((to_index @ np.array([*map(float, ds.ImagePositionPatient), 1.0]))[0]))
        if 0 <= k < grid.shape[0]:
            source[k] = apply_modality_lut(ds.pixel_array, ds)
    shape = segmentation.geometry.shape
    indices = np.indices(shape, dtype=np.float64).reshape(3, -1)
    mapping = to_index @ segmentation.geometry.affine  # segmentation index -> reference index
    where = np.rint(mapping[:3, :3] @ indices + mapping[:3, 3:]).astype(np.int64)
    inside = np.all((where >= 0) & (where < np.array(grid.shape)[:, None]), axis=0)
    if not inside.any():
        return None
    volume = np.full(indices.shape[1], float(source.min()), dtype=np.float32)
    volume[inside] = source[where[0, inside], where[1, inside], where[2, inside]]
    return volume.reshape(shape)


def format_description(description: dict[str, Any]) -> str:
    """Human-readable text of one ``info`` result (the dict of ``SeriesDescription.to_dict``)."""
    get = description.get
    title = get("series_description") or "(no series description)"
    number = f" #{get('series_number')}" if get("series_number") is not None else ""
    lines = [f"{get('source', '')}".strip() or "SEG series"]
    lines.append(f"  series:      {title}{number}  {get('series_instance_uid', '')}")
    kind = get("segmentation_type", "?")
    lines.append(f"  type:        {kind}{', palette color' if get('palette_color') else ''}")
    for key, label in (
        ("patient_name", "patient"),
        ("patient_id", "patient id"),
        ("study_instance_uid", "study"),
        ("content_label", "content"),
        ("content_description", "description"),
        ("content_creator_name", "creator"),
    ):
        if get(key):
            lines.append(f"  {label + ':':<12} {get(key)}")
    geometry = get("geometry")
    if geometry:
        shape = " x ".join(str(n) for n in geometry.get("shape", []))
        spacing = " x ".join(f"{v:g}" for v in geometry.get("spacing", []))
        origin = ", ".join(f"{v:g}" for v in geometry.get("origin", []))
        lines.append(f"  grid:        {shape} (slices x rows x columns), spacing {spacing} mm, origin ({origin}) LPS")
        if geometry.get("frame_of_reference_uid"):
            lines.append(f"  frame of reference: {geometry['frame_of_reference_uid']}")
    referenced = get("referenced_series")
    if referenced:
        uid = referenced.get("series_instance_uid") or "(no Series Instance UID given)"
        lines.append(f"  references:  series {uid} ({referenced.get('instances', 0)} images)")
    if get("problem"):
        lines.append(f"  NOT READABLE: {get('problem')}")
    rows: list[list[str]] = []
    for index, layer in enumerate(get("layers") or []):
        where = f", {layer['path']}" if layer.get("path") else ""
        lines.append(
            f"  layer {index}:     {layer.get('frames')} frames {layer.get('rows')}x{layer.get('columns')}, "
            f"{layer.get('bits_allocated')} bit, {layer.get('transfer_syntax')}{where}"
        )
        for segment in layer.get("segments") or []:
            terminology = segment.get("terminology") or {}
            meaning = _cell(terminology.get("type"))
            if terminology.get("type_modifier"):
                meaning += f" ({_cell(terminology.get('type_modifier'))})"
            if terminology.get("region"):
                meaning += f" in {_cell(terminology.get('region'))}"
            algorithm = segment.get("algorithm_type") or ""
            if segment.get("algorithm_name"):
                algorithm += f" {segment['algorithm_name']}"
            rows.append([
                printable(cell) for cell in (str(index), str(segment.get("label")), str(segment.get("name")),
                                             _cell(segment.get("color")), meaning, algorithm)
            ])
    if rows:
        header = ["layer", "label", "name", "color", "meaning", "algorithm"]
        widths = [max(len(header[i]), *(len(row[i]) for row in rows)) for i in range(len(header))]
        lines.append(f"  segments ({len(rows)}):")
        for row in [header, *rows]:
            lines.append("    " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    # Header strings are untrusted: control characters (ANSI/OSC escapes, newlines forging rows) are escaped.
    return "\n".join(printable(line) for line in lines) + "\n"


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("meaning") or value.get("value") or "")
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return "" if value is None else str(value)


def _description_dict(item: Any) -> dict[str, Any]:
    to_dict = getattr(item, "to_dict", None)
    return dict(to_dict()) if callable(to_dict) else dict(_jsonable(item))


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


