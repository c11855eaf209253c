"""The style-aware MURD layout (architecture "modulated", the default).

Three changes to the paper's layout, each answering a measured failure (docs/model.md):
- the style controls the rendering: a monotone intensity curve per style code (curves.py)
  re-renders every voxel, and a residual branch whose blocks are modulated by the style (AdaIN
  after every normalisation, so normalisation cannot erase it);
- the output starts from the input: x -> curve_target(inverse(curve_source)(x)) plus
  residual(target) - residual(source), with the residual's last layer at zero and the curve
  head at the identity, so an untrained translator returns its input exactly, and translating
  an image to its own style changes nothing; bilinear up-sampling replaces transposed
  convolutions (no checkerboard), and a full-resolution branch reads the input itself;
- the discriminator sees intensity statistics: a differentiable histogram of each slice's
  foreground next to convolutional texture features, and no instance normalisation (which
  removes exactly the per-image intensity statistics that tell scanners apart).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bids_harmonize.model.curves import apply_curve, curve_from_logits, invert_curve
from bids_harmonize.model.slices import BACKGROUND, FOREGROUND_MARGIN

LEAKY_SLOPE = 0.2
# The curve head's logits are scaled up: under Adam this makes its last layer learn CURVE_GAIN
# times faster than the rest, so the curves move within a CPU budget of iterations while the
# head still starts at exactly zero (the identity). Measured in docs/model.md.
CURVE_GAIN = 10.0


def zero_initialised(layer: nn.Conv2d | nn.Linear) -> nn.Module:
    """Zero weights and bias, now and after `he_normal_init` (which honours the mark)."""
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    layer.starts_at_zero = True
    return layer


def _conv3(in_ch: int, out_ch: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, padding=1, padding_mode="reflect")


class AdaptiveInstanceNorm(nn.Module):
    """Instance norm, then a per-channel scale (1 + gamma) and shift beta computed from the style.

    The style projection starts random (He-normal), not at zero: the renderer's last layer
    already starts at zero, and with both at zero neither ever received a gradient (the
    residual's features did not depend on the style, so target and source residuals cancelled
    exactly; the residual stayed zero in every bundle trained before this was found).
    """

    def __init__(self, channels: int, style_dim: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.to_scale_shift = nn.Linear(style_dim, 2 * channels)

    def forward(self, features: Tensor, style: Tensor) -> Tensor:
        gamma, beta = self.to_scale_shift(style)[:, :, None, None].chunk(2, dim=1)
        return self.norm(features) * (1 + gamma) + beta


class StyledResidualBlock(nn.Module):
    """conv3x3-AdaIN-LReLU-conv3x3-AdaIN plus identity skip."""

    def __init__(self, channels: int, style_dim: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = _conv3(channels, channels), _conv3(channels, channels)
        self.norm1 = AdaptiveInstanceNorm(channels, style_dim)
        self.norm2 = AdaptiveInstanceNorm(channels, style_dim)

    def forward(self, features: Tensor, style: Tensor) -> Tensor:
        hidden = F.leaky_relu(self.norm1(self.conv1(features), style), LEAKY_SLOPE)
        return features + self.norm2(self.conv2(hidden), style)


class StyledUpsample(nn.Module):
    """x2 bilinear up-sampling, conv3x3 halving the width, AdaIN, LReLU."""

    def __init__(self, in_ch: int, style_dim: int) -> None:
        super().__init__()
        self.conv = _conv3(in_ch, in_ch // 2)
        self.norm = AdaptiveInstanceNorm(in_ch // 2, style_dim)

    def forward(self, features: Tensor, style: Tensor) -> Tensor:
        features = F.interpolate(features, scale_factor=2.0, mode="bilinear", align_corners=False)
        return F.leaky_relu(self.norm(self.conv(features), style), LEAKY_SLOPE)


class ResidualRenderer(nn.Module):
    """(content map, input images, style) -> a full-resolution residual image; zero at start."""

    def __init__(self, config) -> None:  # MURDConfig; not imported to avoid a cycle
        super().__init__()
        width, style_dim = config.content_channels, config.style_dim
        self.blocks = nn.ModuleList(StyledResidualBlock(width, style_dim) for _ in range(config.generator_res_blocks))
        self.upsamples = nn.ModuleList()
        for _ in range(config.encoder_downsamplings):
            self.upsamples.append(StyledUpsample(width, style_dim))
            width //= 2
        skip = config.encoder_channels
        self.read_input = nn.Sequential(_conv3(config.in_channels, skip), nn.LeakyReLU(LEAKY_SLOPE))
        self.merge = nn.Sequential(_conv3(width + skip, skip), nn.LeakyReLU(LEAKY_SLOPE))
        self.to_residual = zero_initialised(_conv3(skip, config.in_channels))

    def forward(self, content: Tensor, images: Tensor, style: Tensor) -> Tensor:
        features = content
        for block in self.blocks:
            features = block(features, style)
        for upsample in self.upsamples:
            features = upsample(features, style)
        merged = self.merge(torch.cat([features, self.read_input(images)], dim=1))
        return self.to_residual(merged)


class ModulatedGenerator(nn.Module):
    """Renders the input's anatomy in a target style, relative to the input's own style."""

    def __init__(self, config) -> None:
        super().__init__()
        self.curve_head = nn.Sequential(
            nn.Linear(config.style_dim, config.mapping_width),
            nn.LeakyReLU(LEAKY_SLOPE),
            zero_initialised(nn.Linear(config.mapping_width, config.curve_knots)),  # equal logits: identity
        )
        self.renderer = ResidualRenderer(config)

    def curve(self, style: Tensor) -> Tensor:
        """(B, style_dim) -> (B, curve_knots + 1) knot values of each style's curve."""
        return curve_from_logits(CURVE_GAIN * self.curve_head(style.float()))

    def forward(self, content: Tensor, images: Tensor, style: Tensor, source_style: Tensor) -> Tensor:
        """style: the target style; source_style: the style the images are in now."""
        canonical = invert_curve(images, self.curve(source_style))
        base = apply_curve(canonical, self.curve(style))
        both = self.renderer(
            torch.cat([content, content]), torch.cat([images, images]), torch.cat([style, source_style])
        )
        to_target, to_source = both.float().chunk(2)
        return base + to_target - to_source


def weighted_histogram(values: Tensor, weights: Tensor, bins: int, low: float = -1.0, high: float = 1.0) -> Tensor:
    """(B, N) values with (B, N) weights -> (B, bins) normalised, differentiable histograms.

    Bins are evenly spaced centres from `low` to `high` (values beyond are counted at the ends);
    each value splits its weight between the two nearest centres by linear interpolation, so the
    counts move smoothly with the values and pass gradients to them, at one scatter per value.
    """
    position = ((values.float() - low) * ((bins - 1) / (high - low))).clamp(0.0, bins - 1.0)
    lower = position.detach().floor().clamp(max=bins - 2)
    upper_weight = position - lower
    counts = torch.zeros(values.shape[0], bins, device=values.device)
    counts = counts.scatter_add(1, lower.long(), (1.0 - upper_weight) * weights)
    counts = counts.scatter_add(1, lower.long() + 1, upper_weight * weights)
    return counts / counts.sum(-1, keepdim=True).clamp_min(1e-6)


def centre_slice(images: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, 1, H, W) float32: the slice a 2.5D stack is centred on."""
    return images[:, images.shape[1] // 2 : images.shape[1] // 2 + 1].float()


def soft_histogram(images: Tensor, bins: int) -> Tensor:
    """(B, C, H, W) -> (B, bins): histogram of each centre slice's foreground over [-1, 1].

    It sums to one per sample, so it does not depend on the brain's area.
    """
    centre = centre_slice(images).flatten(1)
    return weighted_histogram(centre, (centre > BACKGROUND + FOREGROUND_MARGIN).float(), bins)


class StatisticsTrunk(nn.Module):
    """Texture features (strided convolutions, no normalisation, global average) next to the
    foreground intensity histogram; the discriminator's per-site heads read both."""

    def __init__(self, config) -> None:
        super().__init__()
        width = config.discriminator_channels
        self.bins = config.histogram_bins
        self.texture = nn.Sequential(
            nn.Conv2d(config.in_channels, width, 4, 2, 1),
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Conv2d(width, 2 * width, 4, 2, 1),
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Conv2d(2 * width, 4 * width, 3, 1, 1),
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.histogram = nn.Sequential(
            nn.Linear(self.bins, config.mapping_width),
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Linear(config.mapping_width, config.mapping_width),
            nn.LeakyReLU(LEAKY_SLOPE),
        )
        self.out_features = 4 * width + config.mapping_width

    def forward(self, images: Tensor) -> Tensor:
        # The histogram is taken in fp32 (bf16 would quantise the bins).
        histogram = self.histogram(soft_histogram(images, self.bins))
        return torch.cat([self.texture(images).float(), histogram.float()], dim=1)
