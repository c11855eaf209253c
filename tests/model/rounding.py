"""How far float32 rounding alone can move a network's output: the tolerance for comparing two
runs of one network whose kernels sum in different orders.

Why the order changes: a different batch size makes the kernels (ATen/oneDNN on a CPU, cuDNN on
a GPU) block, vectorise and split each sum differently, and so do another CPU's vector width
(AVX2, AVX-512, NEON) and a GPU. Results are then equal up to rounding, not bit for bit.

How far a reordered sum can move: an n-term float32 sum is within about n * u of its exact
value, relative to the size of its terms (u = 2**-24, float32's unit roundoff; Higham,
"Accuracy and Stability of Numerical Algorithms", the gamma_n bound), so two orders differ by
at most about that much again. A network output is such sums in series: every convolution and
linear layer sums fan-in products, every normalisation sums its pixels for a mean and a
variance, every average pools its window. Normalisation keeps the features near unit size, so
these relative moves add up along the path rather than grow; the bound below adds them over
every layer call (parallel branches counted as if in series: an over-estimate, never an
under-estimate) and scales by the size of the output.

Typical moves are far smaller (about sqrt(n) * u per sum). For the tiny test network the bound
is 2.0e-3 on outputs of size 1.7. The batch-size differences measured were 1.5e-6 to 1.5e-5 on
one Intel CPU under other kernel paths (ATEN_CPU_CAPABILITY default/avx2/avx512, MKL_CBWR
COMPATIBLE/SSE4_2/AVX2, ONEDNN_MAX_CPU_ISA SSE41/AVX2), and 1.8e-5 on an AMD EPYC, while a
batching bug (a slice averaged with the wrong neighbours, one style spread over the wrong rows)
moves voxels by 1e-2 or more.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from bids_harmonize.model.networks import PerSiteLinear

UNIT_ROUNDOFF = 2.0**-24  # float32 keeps a 24-bit significand


def terms_per_output(layer: nn.Module, inputs: tuple[Any, ...]) -> int:
    """How many terms one output element of `layer` sums in this call (0: no sum)."""
    if isinstance(layer, (nn.Conv2d, nn.Linear)):
        return layer.weight[0].numel()  # (in_channels / groups) * kernel area, or in_features
    if isinstance(layer, nn.ConvTranspose2d):
        return layer.weight.shape[0] * math.prod(layer.kernel_size)  # an upper bound at any stride
    if isinstance(layer, PerSiteLinear):
        return layer.weight.shape[-1]
    if isinstance(layer, nn.InstanceNorm2d):
        return 2 * math.prod(inputs[0].shape[-2:])  # a mean and a variance over the pixels
    if isinstance(layer, nn.AdaptiveAvgPool2d):
        return math.prod(inputs[0].shape[-2:])  # the tests' networks pool to one pixel
    if isinstance(layer, nn.AvgPool2d):
        kernel = layer.kernel_size
        return kernel * kernel if isinstance(kernel, int) else math.prod(kernel)
    return 0


def summed_terms(network: nn.Module, forward: Callable[[], Any]) -> int:
    """Run `forward` once and add up, over every layer of `network` it calls, the terms each
    output element of that layer sums."""
    total = 0

    def count(layer: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        nonlocal total
        total += terms_per_output(layer, inputs)

    handles = [layer.register_forward_hook(count) for layer in network.modules()]
    try:
        forward()
    finally:
        for handle in handles:
            handle.remove()
    return total


def rounding_tolerance(terms: int, scale: float | Tensor) -> float:
    """Largest difference float32 rounding alone can make to outputs of size `scale` after sums
    of `terms` terms in series: twice n * u (both results are that close to the exact value)."""
    return 2 * terms * UNIT_ROUNDOFF * float(scale)
