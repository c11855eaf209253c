"""Tissue segmentation and its comparison with the truth on a phantom with known tissues."""

import numpy as np
import pytest

from bids_harmonize.qc import anatomy_preservation, compare_labels, segment_tissues


@pytest.fixture
def nested_spheres() -> tuple[np.ndarray, np.ndarray]:
    """Labels: WM core, GM shell, CSF shell (1 CSF, 2 GM, 3 WM) inside a spherical mask."""
    shape = (40, 40, 40)
    radius = np.linalg.norm(np.indices(shape) - 19.5, axis=0)
    labels = np.select([radius < 8, radius < 13, radius < 17], [3, 2, 1], 0).astype(np.uint8)
    return labels, labels > 0


@pytest.mark.parametrize("contrast, intensity", [("T1w", {1: 200, 2: 600, 3: 900}), ("T2w", {1: 1500, 2: 700, 3: 450})])
def test_mixture_recovers_tissues_in_either_contrast(nested_spheres, contrast, intensity) -> None:
    labels, mask = nested_spheres
    image = np.vectorize(lambda label: intensity.get(label, 0))(labels).astype(float)
    image += np.random.default_rng(0).normal(0, 30, image.shape)
    scores = anatomy_preservation(image, mask, labels, contrast)
    assert min(scores.dice.values()) > 0.95
    assert scores.mean_absolute_volume_error < 0.05


def test_labels_compared_with_themselves(nested_spheres) -> None:
    labels, mask = nested_spheres
    scores = compare_labels(labels, labels, mask)
    assert scores.dice == {"CSF": 1.0, "GM": 1.0, "WM": 1.0}
    assert scores.relative_volume_error == {"CSF": 0.0, "GM": 0.0, "WM": 0.0}


def test_relative_volume_error_sign(nested_spheres) -> None:
    labels, mask = nested_spheres
    grown_wm = labels.copy()
    grown_wm[labels == 2] = 3
    scores = compare_labels(grown_wm, labels, mask)
    assert scores.relative_volume_error["GM"] == -1.0
    assert scores.relative_volume_error["WM"] > 0
    assert scores.dice["GM"] == 0.0


def test_segmentation_is_zero_outside_the_mask(nested_spheres) -> None:
    labels, mask = nested_spheres
    found = segment_tissues(labels.astype(float) + np.random.default_rng(1).normal(0, 0.1, labels.shape), mask)
    assert (found[~mask] == 0).all() and (found[mask] > 0).all()
    assert compare_labels(found, labels, mask).mean_dice > 0.95  # and the tissues are the right ones
