"""sRGB <-> DICOM scaled CIELab: exact 8-bit round trip and agreement with other tools."""

from __future__ import annotations

import itertools

import highdicom as hd
import numpy as np
import pydicom
import pytest
from DICOMLabelmapSegLib.dicom.color import (
    dicom_lab_to_rgb,
    dicom_lab_to_rgb_array,
    rgb_to_dicom_lab,
    rgb_to_dicom_lab_array,
)


@pytest.mark.slow
def test_every_8bit_rgb_color_round_trips_exactly():
    """All 2^24 colors, in 16 chunks of 2^20 (vectorized, but 20-30 s on a busy machine)."""
    values = np.arange(256, dtype=np.uint8)
    mismatches = 0
    for red_start in range(0, 256, 16):
        rgb = np.stack(
            np.meshgrid(np.arange(red_start, red_start + 16, dtype=np.uint8), values, values, indexing="ij"), axis=-1
        ).reshape(-1, 3)
        lab = rgb_to_dicom_lab_array(rgb)
        assert lab.dtype == np.uint16
        back = dicom_lab_to_rgb_array(lab)
        mismatches += int(np.count_nonzero(np.any(back != rgb, axis=-1)))
    assert mismatches == 0


def test_sampled_8bit_rgb_colors_round_trip_exactly():
    """The fast variant of the test above: 200k random colors, every gray, every primary/secondary ramp."""
    rng = np.random.default_rng(2024)
    ramp = np.arange(256, dtype=np.uint8)
    zeros = np.zeros(256, dtype=np.uint8)
    edges = [np.stack([ramp if on else zeros for on in channels], axis=-1)
             for channels in itertools.product([False, True], repeat=3) if any(channels)]  # grays, R, G, B, C, M, Y
    rgb = np.concatenate([rng.integers(0, 256, size=(200_000, 3), dtype=np.uint8), *edges])
    back = dicom_lab_to_rgb_array(rgb_to_dicom_lab_array(rgb))
    mismatched = rgb[np.any(back != rgb, axis=-1)]
    assert mismatched.size == 0, mismatched[:5].tolist()


def test_known_values():
    assert rgb_to_dicom_lab((255, 255, 255)) == (65535, 0x8080, 0x8080)
    assert rgb_to_dicom_lab((0, 0, 0)) == (0, 0x8080, 0x8080)
    assert dicom_lab_to_rgb((65535, 0x8080, 0x8080)) == (255, 255, 255)
    assert dicom_lab_to_rgb((0, 0x8080, 0x8080)) == (0, 0, 0)
    # Pure red has large positive a* (red) and b* (yellow); pure blue has negative b*.
    red_l, red_a, red_b = rgb_to_dicom_lab((255, 0, 0))
    assert red_a > 0x8080 + 15000 and red_b > 0x8080 + 10000
    assert rgb_to_dicom_lab((0, 0, 255))[2] < 0x8080 - 20000
    assert all(isinstance(v, int) for v in rgb_to_dicom_lab((1, 2, 3)))


def test_matches_highdicom_encoding_within_rounding():
    rng = np.random.default_rng(1)
    for rgb in rng.integers(0, 256, size=(300, 3)):
        theirs = hd.color.CIELabColor.from_rgb(*(int(c) for c in rgb)).value
        ours = rgb_to_dicom_lab(tuple(int(c) for c in rgb))
        assert max(abs(a - b) for a, b in zip(theirs, ours)) <= 8  # 4-digit vs 7-digit sRGB matrix
        assert dicom_lab_to_rgb(theirs) == tuple(int(c) for c in rgb)


def test_dcmqi_written_colors_decode_to_slicer_colors(data_dir):
    """dcmqi (Slicer's DICOM SEG exporter) wrote these from Slicer's colors."""
    expected = {
        "liver.dcm": {1: (221, 130, 101)},  # GenericAnatomyColors 'liver'
        "partial_overlaps.dcm": {1: (128, 174, 128), 2: (216, 101, 79), 3: (183, 156, 220)},
        "sparse-labelmap-noppv.dcm": {1: (221, 130, 101)},
    }
    for name, colors in expected.items():
        ds = pydicom.dcmread(data_dir / "dcmqi" / name, stop_before_pixels=True)
        decoded = {
            int(item.SegmentNumber): dicom_lab_to_rgb(item.RecommendedDisplayCIELabValue)
            for item in ds.SegmentSequence
            if "RecommendedDisplayCIELabValue" in item
        }
        for number, rgb in colors.items():
            assert decoded[number] == rgb, (name, number)


@pytest.mark.parametrize("bad", [(256, 0, 0), (-1, 0, 0), (1, 2)])
def test_rejects_invalid_rgb(bad):
    with pytest.raises(ValueError):
        rgb_to_dicom_lab(bad)


def test_rejects_invalid_lab():
    with pytest.raises(ValueError):
        dicom_lab_to_rgb((70000, 0, 0))


def test_out_of_gamut_lab_is_clipped():
    # Maximal a* and minimal b* at mid lightness is outside sRGB: clipped, not an error.
    rgb = dicom_lab_to_rgb((32768, 65535, 0))
    assert all(0 <= c <= 255 for c in rgb)
