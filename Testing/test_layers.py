"""The one layer packer (BINARY/FRACTIONAL SEG instances, mask folders) and the one IJK/RAS conversion."""

from __future__ import annotations

import numpy as np
import pytest
from DICOMLabelmapSegLib.geometry import affine_from_ijk_to_ras, ijk_to_ras
from DICOMLabelmapSegLib.model import LayerPacker, Segment, segment_id
from synthetic import make_affine


def _mask(shape, *voxels):
    mask = np.zeros(shape, dtype=bool)
    for voxel in voxels:
        mask[voxel] = True
    return mask


def test_first_fit_packing_in_order():
    shape = (3, 4, 5)
    packer = LayerPacker(shape)
    packer.add(Segment(label_value=2, name="b"), _mask(shape, (0, 0, 0), (1, 1, 1)))
    packer.add(Segment(label_value=1, name="a"), _mask(shape, (2, 2, 2)))  # fits layer 1
    packer.add(Segment(label_value=3, name="c"), _mask(shape, (1, 1, 1)))  # overlaps b: layer 2
    packer.add(Segment(label_value=1, name="a again"), {0: _mask(shape[1:], (3, 4))})  # label 1 taken in layer 1
    layers = packer.layers()
    assert [[s.name for s in layer.segments] for layer in layers] == [["a", "b"], ["a again", "c"]]
    assert layers[0].labels[0, 0, 0] == 2 and layers[0].labels[2, 2, 2] == 1 and layers[0].labels.dtype == np.uint8
    assert layers[1].labels[1, 1, 1] == 3 and layers[1].labels[0, 3, 4] == 1
    assert np.count_nonzero(layers[0].labels) == 3 and np.count_nonzero(layers[1].labels) == 2


def test_labels_above_255_widen_the_layer_and_new_layers_are_announced():
    shape = (2, 2, 2)
    counts = []
    packer = LayerPacker(shape, counts.append)
    packer.add(Segment(label_value=7, name="a"), _mask(shape, (0, 0, 0)))
    packer.add(Segment(label_value=300, name="b"), _mask(shape, (1, 1, 1)))
    packer.add(Segment(label_value=9, name="c"), _mask(shape, (0, 0, 0)))
    layers = packer.layers()
    assert counts == [1, 2]
    assert layers[0].labels.dtype == np.uint16 and layers[0].labels[1, 1, 1] == 300 and layers[0].labels[0, 0, 0] == 7
    assert LayerPacker(shape).layers() == []


def test_refusing_a_new_layer_stops_before_allocating():
    def refuse(count):
        if count > 1:
            raise MemoryError("too many layers")

    shape = (2, 2, 2)
    packer = LayerPacker(shape, refuse)
    packer.add(Segment(label_value=1, name="a"), _mask(shape, (0, 0, 0)))
    with pytest.raises(MemoryError):
        packer.add(Segment(label_value=2, name="b"), _mask(shape, (0, 0, 0)))
    assert len(packer.layers()) == 1


def test_ijk_to_ras_round_trip_and_meaning():
    affine = make_affine(oblique=True)
    matrix = ijk_to_ras(affine)
    assert np.allclose(affine_from_ijk_to_ras(matrix), affine)
    k, j, i = 2.0, 3.0, 5.0
    lps = affine @ [k, j, i, 1.0]
    ras = matrix @ [i, j, k, 1.0]
    assert np.allclose(ras[:3], [-lps[0], -lps[1], lps[2]])


def test_segment_ids():
    assert segment_id(5) == "Segment_5" and segment_id(5, 0) == "Segment_5"
    assert segment_id(5, 1) == "Segment_5_layer2"


def test_one_segment_json_form_is_read_back_and_the_old_scheme_key_too():
    from DICOMLabelmapSegLib.formats.labeltable import parse_label_table
    from DICOMLabelmapSegLib.model import Code, Terminology
    from DICOMLabelmapSegLib.segmentjson import segment_to_json

    segment = Segment(
        label_value=4, name="Left kidney", color=(10, 20, 30),
        terminology=Terminology(Code("123037004", "SCT", "Anatomical Structure"), Code("64033007", "SCT", "Kidney"),
                                region_modifier=None, type_modifier=Code("7771000", "SCT", "Left")),
        description="drawn", algorithm_name="by hand",
    )
    entry = segment_to_json(segment, layer=1)
    assert entry["terminology"]["type"] == {"value": "64033007", "scheme_designator": "SCT", "meaning": "Kidney"}
    assert "region" not in entry["terminology"] and "tracking_id" not in entry
    assert parse_label_table({"segments": [entry]}).lookup(4, 1) == segment
    old = {**entry, "terminology": {**entry["terminology"],
                                    "type": {"value": "64033007", "scheme": "SCT", "meaning": "Kidney"}}}
    assert parse_label_table({"segments": [old]}).lookup(4, 1).terminology.type == Code("64033007", "SCT", "Kidney")
    assert "layer" not in segment_to_json(segment) and segment_to_json(segment)["label"] == 4
