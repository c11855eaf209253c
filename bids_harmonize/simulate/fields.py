"""Smooth random fields, used for shape variation, atrophy patterns and receive bias."""

from __future__ import annotations

import numpy as np
from numpy.polynomial import legendre
from numpy.typing import NDArray


def random_polynomial_field(shape: tuple[int, ...], degree: int, rng: np.random.Generator) -> NDArray[np.float32]:
    """A random 3D Legendre polynomial of total degree <= `degree` over the array (axes mapped to
    [-1, 1]), scaled to max |value| = 1. Higher orders get smaller coefficients, so the field
    varies smoothly on the scale of (field of view / degree). Cheap: a tensor-product evaluation."""
    orders = np.add.outer(np.add.outer(np.arange(degree + 1), np.arange(degree + 1)), np.arange(degree + 1))
    coefficients = np.where(orders <= degree, rng.standard_normal(orders.shape) / (1.0 + orders), 0.0)
    coefficients[0, 0, 0] = 0.0
    field = legendre.leggrid3d(*(np.linspace(-1.0, 1.0, n) for n in shape), coefficients)
    return (field / np.abs(field).max()).astype(np.float32)
