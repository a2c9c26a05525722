"""Comparing label arrays by the physical position of their voxels, whatever each grid's axis order/direction."""

from __future__ import annotations

import numpy as np


def index_map(source_affine: np.ndarray, target_affine: np.ndarray) -> np.ndarray:
    """The integer 4x4 map from source (k, j, i) to target (k, j, i); the grids must share voxels."""
    mapping = np.linalg.inv(target_affine) @ source_affine
    rounded = np.round(mapping)
    assert np.allclose(mapping, rounded, atol=1e-3), f"the grids do not share voxel centres:\n{mapping}"
    assert sorted(np.abs(rounded[:3, :3]).sum(axis=0).tolist()) == [1, 1, 1], "not a signed axis permutation"
    return rounded.astype(np.int64)


def assert_same_labels_in_space(
    ours: np.ndarray, our_affine: np.ndarray, theirs: np.ndarray, their_affine: np.ndarray, what: str
) -> None:
    """Every labelled voxel of ``ours`` has the same label at the same place in ``theirs``, and vice versa."""
    mapping = index_map(our_affine, their_affine)
    indices = np.argwhere(ours != 0)
    mapped = indices @ mapping[:3, :3].T + mapping[:3, 3]
    inside = np.all((mapped >= 0) & (mapped < np.array(theirs.shape)), axis=1)
    assert inside.all(), f"{what}: {np.count_nonzero(~inside)} labelled voxels lie outside the other grid"
    values = theirs[tuple(mapped.T)]
    expected = ours[tuple(indices.T)]
    assert np.array_equal(values, expected), f"{what}: {np.count_nonzero(values != expected)} voxels differ"
    assert np.count_nonzero(theirs) == len(indices), (
        f"{what}: {np.count_nonzero(theirs)} labelled voxels there, {len(indices)} here"
    )
