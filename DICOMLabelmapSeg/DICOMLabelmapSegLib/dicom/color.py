"""8-bit sRGB <-> DICOM scaled CIELab (Recommended Display CIELab Value, PS3.3 C.10.7.1.1).

DICOM stores colors of segments as three 16-bit unsigned integers: L* scaled from
0..100 to 0..65535 and a*, b* shifted and scaled from -128..127 to 0..65535 (so 0.0
is 0x8080). The CIELab values are relative to the D65 white point, computed from sRGB
with the sRGB transfer function; this is what dcmqi, highdicom and pixelmed do, so
colors written by those tools decode to the RGB they started from.

Both directions are vectorized (:func:`rgb_to_dicom_lab_array`,
:func:`dicom_lab_to_rgb_array`) and exact: every one of the 2^24 8-bit RGB colors
survives ``dicom_lab_to_rgb(rgb_to_dicom_lab(rgb)) == rgb``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Linear sRGB -> XYZ (D65), IEC 61966-2-1 to 7 digits; the inverse is computed, so the pair is exact.
_RGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
_XYZ_TO_RGB = np.linalg.inv(_RGB_TO_XYZ)

#: D65 reference white (X, Y, Z) = XYZ of sRGB white (0.95047, 1.0, 1.08883), so white is exactly a* = b* = 0.
D65_WHITE = _RGB_TO_XYZ.sum(axis=1)

_EPSILON = (6.0 / 29.0) ** 3  # CIE: below this, the cube root is replaced by a line
_DELTA = 6.0 / 29.0
_SCALE = 0xFFFF


def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
    return np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)


def _linear_to_srgb(c: np.ndarray) -> np.ndarray:
    c = np.clip(c, 0.0, None)
    return np.where(c > 0.0031308, 1.055 * c ** (1.0 / 2.4) - 0.055, 12.92 * c)


def _f(t: np.ndarray) -> np.ndarray:
    return np.where(t > _EPSILON, np.cbrt(t), t / (3 * _DELTA**2) + 4.0 / 29.0)


def _f_inverse(t: np.ndarray) -> np.ndarray:
    return np.where(t > _DELTA, t**3, 3 * _DELTA**2 * (t - 4.0 / 29.0))


def rgb_to_lab_array(rgb: np.ndarray) -> np.ndarray:
    """CIELab floats ``(..., 3)`` (L* 0..100, a*, b*) of 8-bit sRGB values ``(..., 3)``."""
    linear = _srgb_to_linear(np.asarray(rgb, dtype=np.float64) / 255.0)
    xyz = linear @ _RGB_TO_XYZ.T
    fx, fy, fz = np.moveaxis(_f(xyz / D65_WHITE), -1, 0)
    return np.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)


def lab_to_rgb_array(lab: np.ndarray) -> np.ndarray:
    """8-bit sRGB (uint8 ``(..., 3)``, clipped to the gamut) of CIELab floats ``(..., 3)``."""
    lab = np.asarray(lab, dtype=np.float64)
    fy = (lab[..., 0] + 16.0) / 116.0
    fx = fy + lab[..., 1] / 500.0
    fz = fy - lab[..., 2] / 200.0
    xyz = _f_inverse(np.stack([fx, fy, fz], axis=-1)) * D65_WHITE
    srgb = _linear_to_srgb(xyz @ _XYZ_TO_RGB.T)
    return np.clip(np.rint(srgb * 255.0), 0, 255).astype(np.uint8)


def rgb_to_dicom_lab_array(rgb: np.ndarray) -> np.ndarray:
    """DICOM scaled CIELab (uint16 ``(..., 3)``) of 8-bit sRGB values ``(..., 3)``."""
    lab = rgb_to_lab_array(rgb)
    scaled = np.empty_like(lab)
    scaled[..., 0] = lab[..., 0] * _SCALE / 100.0
    scaled[..., 1:] = (lab[..., 1:] + 128.0) * _SCALE / 255.0
    return np.clip(np.rint(scaled), 0, _SCALE).astype(np.uint16)


def dicom_lab_to_rgb_array(lab: np.ndarray) -> np.ndarray:
    """8-bit sRGB (uint8 ``(..., 3)``) of DICOM scaled CIELab values ``(..., 3)``."""
    scaled = np.asarray(lab, dtype=np.float64)
    unscaled = np.empty_like(scaled)
    unscaled[..., 0] = scaled[..., 0] * 100.0 / _SCALE
    unscaled[..., 1:] = scaled[..., 1:] * 255.0 / _SCALE - 128.0
    return lab_to_rgb_array(unscaled)


def rgb_to_dicom_lab(rgb: Sequence[int]) -> tuple[int, int, int]:
    """Recommended Display CIELab Value (three uint16) of an 8-bit sRGB color.

    Parameters
    ----------
    rgb: Sequence[int]
        Red, green, blue, each 0..255.
    """
    if len(rgb) != 3 or not all(0 <= int(c) <= 255 for c in rgb):
        raise ValueError(f"RGB color {tuple(rgb)} must be three integers 0-255.")
    return tuple(int(v) for v in rgb_to_dicom_lab_array(np.asarray(rgb)))  # type: ignore[return-value]


def dicom_lab_to_rgb(lab: Sequence[int]) -> tuple[int, int, int]:
    """8-bit sRGB color of a Recommended Display CIELab Value (three uint16).

    Colors outside the sRGB gamut are clipped to the nearest displayable color.
    """
    if len(lab) != 3 or not all(0 <= int(v) <= _SCALE for v in lab):
        raise ValueError(f"CIELab value {tuple(lab)} must be three integers 0-65535.")
    return tuple(int(c) for c in dicom_lab_to_rgb_array(np.asarray(lab, dtype=np.float64)))  # type: ignore[return-value]
