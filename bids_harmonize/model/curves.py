"""Monotone piecewise-linear intensity curves on the model range [-1, 1].

A curve is given by its values at K + 1 evenly spaced knots from -1 to 1. Values start at -1 and
end at +1 and rise strictly in between, so a curve maps the model range onto itself one-to-one:
the background (-1) stays background, and every curve has an exact inverse. The style-aware
generator (see modulated.py) renders an image in a target style as
``curve_target(inverse(curve_source)(x))``: a voxel-wise change that keeps every anatomical
detail and is the identity when source and target styles are equal.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

# Every segment keeps at least this share of the identity's slope, so the inverse stays well
# conditioned (a flat segment would squeeze many inputs into a range fp32 cannot separate).
MIN_SLOPE = 0.1


def curve_from_logits(logits: Tensor) -> Tensor:
    """(B, K) unconstrained logits -> (B, K + 1) knot values: -1, then rising to exactly +1.

    Softmax makes every step positive and the steps sum to the whole range; equal logits (for
    example all zero, as an untrained head gives) make the identity curve.
    """
    shares = torch.softmax(logits.float(), dim=-1)
    steps = 2.0 * (MIN_SLOPE / logits.shape[-1] + (1.0 - MIN_SLOPE) * shares)
    start = torch.full_like(steps[:, :1], -1.0)
    values = torch.cat([start, -1.0 + torch.cumsum(steps, dim=-1)], dim=-1)
    return torch.cat([values[:, :-1], torch.ones_like(start)], dim=-1)  # exact end despite rounding


def logits_from_curve(values: Tensor, floor: float = 1e-7) -> Tensor:
    """The inverse of `curve_from_logits` (up to the softmax's free constant): (B, K + 1) knot
    values -> (B, K) logits. A step at exactly the minimum slope has share 0 and gets `floor`."""
    steps = values.double().diff(dim=-1)
    num_steps = steps.shape[-1]
    shares = (steps / 2.0 - MIN_SLOPE / num_steps) / (1.0 - MIN_SLOPE)
    return torch.log(shares.clamp_min(floor)).to(values.dtype)


def _knot_positions(num_knots: int, like: Tensor) -> Tensor:
    return torch.linspace(-1.0, 1.0, num_knots, device=like.device, dtype=like.dtype)


def apply_curve(images: Tensor, values: Tensor) -> Tensor:
    """Map every voxel of images (B, ...) through its sample's curve (B, K + 1).

    Inside [-1, 1] the map is piecewise linear; beyond it, the end segments are extended, so an
    image scaled a little outside the range is not clipped.
    """
    num_steps = values.shape[1] - 1
    flat = images.reshape(images.shape[0], -1).float()
    position = (flat + 1.0) * (num_steps / 2.0)
    segment = position.floor().clamp(0, num_steps - 1)
    fraction = position - segment
    index = segment.long()
    low = torch.gather(values, 1, index)
    high = torch.gather(values, 1, index + 1)
    return (low + fraction * (high - low)).reshape(images.shape)


def invert_curve(images: Tensor, values: Tensor) -> Tensor:
    """The inverse map of `apply_curve`: for y = curve(x), returns x (end segments extended)."""
    num_steps = values.shape[1] - 1
    flat = images.reshape(images.shape[0], -1).float()
    # searchsorted needs a contiguous sorted table; the values rise strictly by construction.
    segment = torch.searchsorted(values.contiguous(), flat.contiguous(), right=True) - 1
    index = segment.clamp(0, num_steps - 1)
    low = torch.gather(values, 1, index)
    high = torch.gather(values, 1, index + 1)
    knots = _knot_positions(num_steps + 1, values)
    fraction = (flat - low) / (high - low).clamp_min(1e-6)
    return (knots[index] + fraction * (2.0 / num_steps)).reshape(images.shape)


def apply_lookup(values: np.ndarray, inputs: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """np.interp through a lookup table, with its end segments extended (no clipping).

    The composite map target(inverse(source)(x)) is exactly such a table: both curves have their
    knots at the same canonical positions, so it is piecewise linear with knots at the source
    curve's values (inputs) mapped to the target curve's values (outputs).

    Used to carry the model's voxel-wise change to another grid: values beyond the model range
    (bright vessels above the scaling's high percentile, say) keep their distance from the end.
    """
    values = np.asarray(values, dtype=np.float32)
    result = np.interp(values, inputs, outputs).astype(np.float32)
    low_slope = _end_slope(inputs[:2], outputs[:2])
    high_slope = _end_slope(inputs[-2:], outputs[-2:])
    below, above = values < inputs[0], values > inputs[-1]
    result[below] = outputs[0] + (values[below] - inputs[0]) * low_slope
    result[above] = outputs[-1] + (values[above] - inputs[-1]) * high_slope
    return result


def _end_slope(inputs: np.ndarray, outputs: np.ndarray) -> float:
    """The slope of an end segment; 1 (values keep their distance from the end) where the segment
    has no width, as when an image's lowest quantiles all sit at the model range's floor."""
    width = float(inputs[1] - inputs[0])
    return float(outputs[1] - outputs[0]) / width if width > 0 else 1.0
