"""MURD networks: content encoder, style encoder, mapping network, generator, discriminator.

Layouts follow the reference described in docs/model.md; every width, depth and size is a field
of `MURDConfig` so the same code builds the paper-sized model and a tiny one for CPU tests.
Per-site heads are stored as one stacked weight tensor and picked by site index, which is the
same as N separate linear layers but lets a batch mix sites without a Python loop.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from bids_harmonize.model.common import dataclass_from_dict, without_autocast
from bids_harmonize.model.modulated import ModulatedGenerator, StatisticsTrunk

LEAKY_SLOPE = 0.2
# Networks are created channels-last: convolutions run faster that way on GPUs (tensor cores)
# and, in our measurements, on CPUs too. Inputs are converted to match (see infer.py, train.py).
CONV_MEMORY_FORMAT = torch.channels_last


ARCHITECTURES = ("modulated", "paper")


@dataclass(frozen=True)
class MURDConfig:
    """Architecture of one MURD model; JSON-serialisable via `to_dict` / `from_dict`."""

    num_sites: int
    preset: str = "custom"
    # "modulated": the style-aware layout of modulated.py (default); "paper": the reference layout.
    architecture: str = "modulated"
    image_size: int = 256  # square input, in pixels
    in_channels: int = 3  # adjacent axial slices fed as channels (odd: the centre one plus neighbours)
    encoder_channels: int = 64  # width of the content encoder's first conv
    encoder_downsamplings: int = 2  # each halves the grid and doubles the width
    content_res_blocks: int = 4
    generator_res_blocks: int = 4
    style_channels: int = 32  # width of the style encoder's first conv
    style_blocks: int = 4  # down-sampling residual blocks, each doubling the width
    style_dim: int = 64
    latent_dim: int = 16
    mapping_width: int = 128
    mapping_layers: int = 6  # shared fully connected layers before the per-site heads
    discriminator_channels: int = 64
    curve_knots: int = 32  # segments of each style's intensity curve ("modulated" only)
    histogram_bins: int = 32  # bins of the discriminator's intensity histogram ("modulated" only)

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        if self.num_sites < 1:
            raise ValueError(f"num_sites must be >= 1, got {self.num_sites}")
        if self.in_channels < 1 or self.in_channels % 2 == 0:
            raise ValueError(f"in_channels must be odd (centre slice plus neighbours), got {self.in_channels}")
        # The generator must give back the input size exactly; the style encoder and the
        # discriminator end in global pooling and only need a few pixels left at their end.
        if self.image_size % 2**self.encoder_downsamplings != 0:
            raise ValueError(
                f"image_size {self.image_size} must be divisible by 2**encoder_downsamplings "
                f"= {2**self.encoder_downsamplings}"
            )
        if self.image_size < 2 ** (self.style_blocks + 1):
            raise ValueError(f"image_size {self.image_size} is too small for {self.style_blocks} style blocks")

    @property
    def content_channels(self) -> int:
        return self.encoder_channels * 2**self.encoder_downsamplings

    @property
    def content_size(self) -> int:
        return self.image_size // 2**self.encoder_downsamplings

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MURDConfig:
        return dataclass_from_dict(cls, data)


_TINY_WIDTHS: dict[str, Any] = {
    "image_size": 48,
    "encoder_channels": 8,
    "content_res_blocks": 2,
    "generator_res_blocks": 2,
    "style_channels": 8,
    "style_blocks": 3,
    "style_dim": 16,
    "latent_dim": 8,
    "mapping_width": 32,
    "mapping_layers": 3,
    "discriminator_channels": 16,
}

PRESETS: dict[str, dict[str, Any]] = {
    # The style-aware layout at the reference widths (256x256, 3-slice 2.5D input): GPU default.
    "reference": {},
    # The paper's own layout and widths, kept so the difference stays measurable.
    "paper": {"architecture": "paper"},
    # The style-aware layout sized for a CPU budget: the tiny widths at the model grid's size
    # (docs/model.md has the measurements that chose it).
    "cpu": {key: value for key, value in _TINY_WIDTHS.items() if key != "image_size"},
    # For tests: a few hundred steps (batch 4) in well under a minute on 2 cores.
    "tiny": _TINY_WIDTHS,
    "paper-tiny": {**_TINY_WIDTHS, "architecture": "paper"},
}


def preset_config(name: str, num_sites: int, **overrides: Any) -> MURDConfig:
    """The named preset for `num_sites` sites, with optional field overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return MURDConfig(num_sites=num_sites, preset=name, **{**PRESETS[name], **overrides})


def conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1, padding_mode: str = "zeros") -> nn.Conv2d:
    """Conv whose padding keeps the grid (odd kernels) or exactly halves it (4x4, stride 2)."""
    return nn.Conv2d(in_ch, out_ch, kernel, stride, padding=(kernel - 1) // 2, padding_mode=padding_mode)


def norm_act(channels: int) -> list[nn.Module]:
    return [nn.InstanceNorm2d(channels, affine=True), nn.LeakyReLU(LEAKY_SLOPE)]


class PerSiteLinear(nn.Module):
    """One linear head per site; row b of the batch goes through the head of `sites[b]`."""

    def __init__(self, num_sites: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_sites, out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(num_sites, out_features))

    def forward(self, features: Tensor, sites: Tensor) -> Tensor:
        return torch.einsum("bi,boi->bo", features, self.weight[sites]) + self.bias[sites]


class ResidualBlock(nn.Module):
    """conv3x3-IN-LReLU-conv3x3-IN plus identity skip, reflect padding (content path)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv(channels, channels, 3, padding_mode="reflect"),
            *norm_act(channels),
            conv(channels, channels, 3, padding_mode="reflect"),
            nn.InstanceNorm2d(channels, affine=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class DownResidualBlock(nn.Module):
    """Pre-activation residual block that halves the grid; shortcut is 1x1 conv then avg-pool."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.LeakyReLU(LEAKY_SLOPE),
            conv(in_ch, in_ch, 3),
            nn.LeakyReLU(LEAKY_SLOPE),
            conv(in_ch, out_ch, 3),
            nn.AvgPool2d(2),
        )
        self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1), nn.AvgPool2d(2))

    def forward(self, x: Tensor) -> Tensor:
        return self.shortcut(x) + self.body(x)


class ContentEncoder(nn.Module):
    """Image -> site-invariant content map (encoder_channels * 2**d channels, grid / 2**d)."""

    def __init__(self, config: MURDConfig) -> None:
        super().__init__()
        width = config.encoder_channels
        layers: list[nn.Module] = [conv(config.in_channels, width, 7, padding_mode="reflect"), *norm_act(width)]
        for _ in range(config.encoder_downsamplings):
            layers += [conv(width, 2 * width, 4, stride=2, padding_mode="reflect"), *norm_act(2 * width)]
            width *= 2
        layers += [ResidualBlock(width) for _ in range(config.content_res_blocks)]
        self.layers = nn.Sequential(*layers)

    def forward(self, images: Tensor) -> Tensor:
        return self.layers(images)


class SiteHeaded(nn.Module):
    """A trunk shared by all sites, then one linear head per site."""

    def __init__(self, trunk: nn.Sequential, num_sites: int, trunk_features: int, out_features: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.heads = PerSiteLinear(num_sites, trunk_features, out_features)

    def forward(self, inputs: Tensor, sites: Tensor) -> Tensor:
        return self.heads(self.trunk(inputs), sites)


class StyleEncoder(SiteHeaded):
    """Image -> style code, through the head of the image's site. No normalisation layers."""

    def __init__(self, config: MURDConfig) -> None:
        width = config.style_channels
        layers: list[nn.Module] = [conv(config.in_channels, width, 4, stride=2)]
        for _ in range(config.style_blocks):
            layers.append(DownResidualBlock(width, 2 * width))
            width *= 2
        layers += [nn.LeakyReLU(LEAKY_SLOPE), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        super().__init__(nn.Sequential(*layers), config.num_sites, width, config.style_dim)


class MappingNetwork(SiteHeaded):
    """Latent z ~ N(0, I) -> style code of the requested site."""

    def __init__(self, config: MURDConfig) -> None:
        layers: list[nn.Module] = []
        in_features = config.latent_dim
        for _ in range(config.mapping_layers):
            layers += [nn.Linear(in_features, config.mapping_width), nn.LeakyReLU(LEAKY_SLOPE)]
            in_features = config.mapping_width
        super().__init__(nn.Sequential(*layers), config.num_sites, in_features, config.style_dim)


class Generator(nn.Module):
    """(content map, style code) -> image; the style is tiled over the grid and concatenated."""

    def __init__(self, config: MURDConfig) -> None:
        super().__init__()
        width = config.content_channels + config.style_dim
        layers: list[nn.Module] = [ResidualBlock(width) for _ in range(config.generator_res_blocks)]
        for _ in range(config.encoder_downsamplings):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, stride=2, padding=1), *norm_act(width // 2)]
            width //= 2
        self.body = nn.Sequential(*layers)
        self.to_image = conv(width, config.in_channels, 7, padding_mode="reflect")

    def forward(self, content: Tensor, style: Tensor) -> Tensor:
        tiled = style[:, :, None, None].expand(-1, -1, *content.shape[2:]).to(content.dtype)
        features = self.body(torch.cat([content, tiled], dim=1))
        # The output projection runs in fp32 even under bf16 autocast: bf16 keeps 8 bits of
        # mantissa, which would quantise the harmonised intensities visibly.
        with without_autocast(features.device):
            return torch.tanh(self.to_image(features.float()))


def _paper_discriminator_trunk(config: MURDConfig) -> tuple[nn.Sequential, int]:
    width = config.discriminator_channels
    trunk = nn.Sequential(
        conv(config.in_channels, width, 4, stride=2),
        nn.LeakyReLU(LEAKY_SLOPE),
        conv(width, 2 * width, 4, stride=2),
        *norm_act(2 * width),
        conv(2 * width, 4 * width, 4),
        *norm_act(4 * width),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    return trunk, 4 * width


class Discriminator(SiteHeaded):
    """Image -> one real/fake logit, from the head of the given site."""

    def __init__(self, config: MURDConfig) -> None:
        if config.architecture == "paper":
            trunk, features = _paper_discriminator_trunk(config)
        else:
            trunk = StatisticsTrunk(config)
            features = trunk.out_features
        super().__init__(trunk, config.num_sites, features, 1)
        self.to(memory_format=CONV_MEMORY_FORMAT)

    def forward(self, images: Tensor, sites: Tensor) -> Tensor:
        return super().forward(images, sites).squeeze(1)


class Translator(nn.Module):
    """The four networks needed at inference: content and style encoders, mapping, generator."""

    def __init__(self, config: MURDConfig) -> None:
        super().__init__()
        self.config = config
        self.content_encoder = ContentEncoder(config)
        self.style_encoder = StyleEncoder(config)
        self.mapping = MappingNetwork(config)
        self.generator = Generator(config) if config.architecture == "paper" else ModulatedGenerator(config)
        self.to(memory_format=CONV_MEMORY_FORMAT)

    @property
    def needs_source_style(self) -> bool:
        """The style-aware generator renders relative to the style the input is in now."""
        return self.config.architecture != "paper"

    def render(self, content: Tensor, images: Tensor, style: Tensor, source_style: Tensor | None) -> Tensor:
        """G: the content of `images` in `style`; `source_style` is the images' own style."""
        if not self.needs_source_style:
            return self.generator(content, style)
        if source_style is None:
            raise ValueError("the style-aware generator needs the style of its input (source_style)")
        return self.generator(content, images, style, source_style)

    def translate(self, images: Tensor, style: Tensor, source_style: Tensor | None = None) -> Tensor:
        """Render the anatomy of `images` in `style` (one code per image)."""
        return self.render(self.content_encoder(images), images, style, source_style)


def he_normal_init(module: nn.Module) -> None:
    """He-normal weights (std sqrt(2 / fan_in)) and zero biases, as in the reference; layers
    marked `starts_at_zero` (the identity start of modulated.py) get zero weights instead."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if getattr(layer, "starts_at_zero", False):
                nn.init.zeros_(layer.weight)
            else:
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)
        elif isinstance(layer, PerSiteLinear):
            nn.init.normal_(layer.weight, std=math.sqrt(2.0 / layer.weight.shape[2]))
            nn.init.zeros_(layer.bias)


def build_translator(config: MURDConfig) -> Translator:
    translator = Translator(config)
    he_normal_init(translator)
    return translator


def build_discriminator(config: MURDConfig) -> Discriminator:
    discriminator = Discriminator(config)
    he_normal_init(discriminator)
    return discriminator
