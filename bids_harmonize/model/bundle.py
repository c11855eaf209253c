"""Model bundle: EMA inference weights in safetensors plus a schema-checked JSON card.

A bundle is a directory holding `model.safetensors` (content encoder, style encoder, mapping
network, generator; no discriminator) and `model.json`, the card (model/card.py: its contents,
checks and typed parts). `save_bundle` writes both once, the input contract and what the model
is (version, licence, intended use) included; `load_bundle` reads the card with `read_card`,
then the weights: JSON and safetensors only, so opening a bundle never executes code.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

import bids_harmonize
from bids_harmonize.model.anchors import image_lookup
from bids_harmonize.model.card import (
    BUNDLE_KIND,
    CARD_NAME,
    SCHEMA_VERSION,
    WEIGHTS_NAME,
    BundleError,
    ContractMismatch,
    InputContract,
    ModelCard,
    ModelInfo,
    UnknownSiteError,
    read_card,
    validate_card,
)
from bids_harmonize.model.common import resolve_device
from bids_harmonize.model.curves import apply_lookup
from bids_harmonize.model.infer import harmonize_volume, random_style, reference_style
from bids_harmonize.model.networks import MURDConfig, Translator
from bids_harmonize.preproc.noise import denoise, should_denoise
from bids_harmonize.utils import atomic_write, atomic_write_json, sha256_of

__all__ = [
    "CARD_NAME",
    "STYLE_KINDS",
    "Translation",
    "WEIGHTS_NAME",
    "BundleError",
    "ContractMismatch",
    "InputContract",
    "ModelBundle",
    "ModelCard",
    "ModelInfo",
    "UnknownSiteError",
    "load_bundle",
    "read_card",
    "save_bundle",
    "sha256_of",
]

STYLE_KINDS = ("site", "reference", "random")


@dataclass(frozen=True)
class Translation:
    """A translated volume and how it was made. Its voxel-wise part is `lookup` (model-range
    inputs, outputs) applied to `lookup_input` (the volume itself or, where noise matching
    applies, its denoised copy: `denoised`); the rest is the network's residual.
    interfaces/harmonize.py carries both parts to the native grid."""

    harmonized: np.ndarray
    lookup: tuple[np.ndarray, np.ndarray]
    lookup_input: np.ndarray
    denoised: bool = False


def save_bundle(
    out_dir: str | os.PathLike,
    translator: Translator,
    site_names: Sequence[str],
    site_styles: Tensor,
    *,
    data_hash: str,
    training: Mapping[str, Any] | None = None,
    seed: int | None = None,
    site_signatures: Mapping[str, Mapping[str, Any]] | None = None,
    site_quantiles: Tensor | None = None,
    site_noise: Mapping[str, Mapping[str, Any]] | None = None,
    metrics: Mapping[str, Any] | None = None,
    input_contract: InputContract | None = None,
    info: ModelInfo | None = None,
) -> Path:
    """Write `translator` (normally the EMA copy) and its card into `out_dir`; returns `out_dir`.

    `site_styles` (num_sites, style_dim) are the deterministic per-site styles; `site_signatures`
    optionally maps site names to the scanner metadata that defines each site; `input_contract`
    says how inputs must be prepared (the group level always gives it); `info` is the model's
    version, licence and intended use (default: ModelInfo()). `site_quantiles` (num_sites, levels):
    the sites' anchor quantiles, which set each image's own intensity map (anchors.image_lookup);
    `site_noise` (site name -> noise_to_contrast and, where it applies, denoised_shift): what noise
    matching needs (preproc/noise.py).
    """
    config = translator.config
    if len(site_names) != config.num_sites or tuple(site_styles.shape) != (config.num_sites, config.style_dim):
        raise ValueError(
            f"expected {config.num_sites} site names and styles of shape ({config.num_sites}, {config.style_dim}); "
            f"got {len(site_names)} names and styles of shape {tuple(site_styles.shape)}"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_path = out_dir / WEIGHTS_NAME
    tensors = {name: value.detach().cpu().contiguous() for name, value in translator.state_dict().items()}
    # Both files atomically: a crash must not leave new weights beside an old card (or the reverse).
    atomic_write(weights_path, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    signatures = site_signatures or {}
    card = {
        "schema_version": SCHEMA_VERSION,
        "kind": BUNDLE_KIND,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "weights": {"file": WEIGHTS_NAME, "sha256": sha256_of(weights_path)},
        "network": config.to_dict(),
        "preset": config.preset,
        "sites": [
            {"name": name, "style": style.tolist(), "signature": dict(signatures[name]) if name in signatures else None}
            for name, style in zip(site_names, site_styles.detach().float().cpu())
        ],
        "training": dict(training) if training is not None else None,
        "seed": seed,
        "data_hash": data_hash,
        "software": {"bids_harmonize": bids_harmonize.__version__, "torch": torch.__version__},
        "metrics": dict(metrics or {}),
        **(info or ModelInfo()).card_fields(input_contract.contrast if input_contract else None),
    }
    if site_quantiles is not None:
        for site, quantiles in zip(card["sites"], site_quantiles.double().cpu()):
            site["quantiles"] = quantiles.tolist()
    for site in card["sites"]:
        site.update((site_noise or {}).get(site["name"], {}))
    if input_contract is not None:
        card["input"] = input_contract.to_dict()
    validate_card(card)  # never write a card that load_bundle would refuse
    atomic_write_json(out_dir / CARD_NAME, card)
    return out_dir


def load_bundle(path: str | os.PathLike, device: str | torch.device = "cpu") -> ModelBundle:
    """Open a bundle directory (or its model.json): check the card and the weights' SHA-256
    (read_card), then load the weights. `device` is 'cpu', 'cuda[:N]' or 'auto'; an absent GPU
    raises DeviceUnavailable."""
    device = resolve_device(device)
    card = read_card(path)
    weights_path = card.directory / card.data["weights"]["file"]
    translator = Translator(card.config)
    try:
        translator.load_state_dict(load_file(weights_path))
    except RuntimeError as error:
        raise BundleError(f"{weights_path}: weights do not fit the network in {card.path}: {error}") from error
    return ModelBundle(card, translator.to(device).eval().requires_grad_(False))


class ModelBundle:
    """A loaded MURD model: its card, its sites, and `harmonize()` to translate volumes."""

    def __init__(self, model_card: ModelCard, translator: Translator) -> None:
        self.model_card = model_card
        self.translator = translator

    @property
    def directory(self) -> Path:
        return self.model_card.directory

    @property
    def card(self) -> dict[str, Any]:
        """The card as read (JSON)."""
        return self.model_card.data

    @property
    def card_sha256(self) -> str:
        """SHA-256 of model.json as read."""
        return self.model_card.card_sha256

    @property
    def input_contract(self) -> InputContract | None:
        """How inputs must be prepared; None on cards written before the contract existed."""
        return self.model_card.input_contract

    @property
    def sites(self) -> list[str]:
        return self.model_card.sites

    @property
    def sha256(self) -> str:
        """Checksum of the weights file: the identity of this model in provenance records."""
        return self.model_card.sha256

    @property
    def config(self) -> MURDConfig:
        return self.translator.config

    def site_index(self, site: str) -> int:
        return self.model_card.site_index(site)

    def style_code(
        self,
        target_site: str,
        style: str = "site",
        *,
        reference: np.ndarray | Tensor | None = None,
        seed: int = 0,
        slice_axis: int = 2,
    ) -> Tensor:
        """The one style code used for a whole volume.

        style='site': the site's stored mean style (deterministic, the default);
        'reference': the mean style of `reference`, a volume of `target_site`;
        'random': a draw from the site's mapping network with `seed`.
        """
        index = self.site_index(target_site)
        if style not in STYLE_KINDS:
            raise ValueError(f"style must be one of {STYLE_KINDS}, got {style!r}")
        if (style == "reference") != (reference is not None):
            raise ValueError("pass `reference` (a volume of the target site) exactly when style='reference'")
        if style == "reference":
            return reference_style(self.translator, reference, index, slice_axis=slice_axis)
        if style == "random":
            return random_style(self.translator, index, seed)
        return torch.tensor(self.card["sites"][index]["style"], dtype=torch.float32)

    def harmonize(self, volume: np.ndarray | Tensor, target_site: str, **options: Any) -> np.ndarray:
        """Translate a [-1, 1]-scaled volume into `target_site`'s style; same shape out.
        Options as `harmonize_with_lookup`."""
        return self.harmonize_with_lookup(volume, target_site, **options).harmonized

    def harmonize_with_lookup(
        self,
        volume: np.ndarray | Tensor,
        target_site: str,
        *,
        style: str = "site",
        reference: np.ndarray | Tensor | None = None,
        seed: int = 0,
        source_site: str | None = None,
        brain_mask: np.ndarray | None = None,
        batch_size: int | None = None,
        slice_axis: int = 2,
    ) -> Translation:
        """The translated volume with its voxel-wise part as a lookup table, which carries the
        change to other grids (interfaces/harmonize.py).

        The style-aware layout renders relative to the volume's own style, read from the volume
        through the head of `source_site` (required there; the paper layout ignores it). With
        `brain_mask` (on the volume's grid: the template's) and a bundle that stores its sites'
        anchor quantiles, the voxel-wise part of a site-style translation is the image's own map
        (anchors.image_lookup) instead of the site curve, applied to the volume denoised first
        when the source site is clearly noisier than the target (preproc/noise.py); the network's
        residual is added to it.
        """
        code = self.style_code(target_site, style, reference=reference, seed=seed, slice_axis=slice_axis)
        source = self.source_style(volume, source_site, slice_axis=slice_axis)
        harmonized = harmonize_volume(
            self.translator, volume, code, source_style=source, batch_size=batch_size, slice_axis=slice_axis
        )
        table = self.intensity_lookup(code, source)
        values = (volume.detach().cpu().numpy() if isinstance(volume, Tensor) else np.asarray(volume)).astype(
            np.float32
        )
        quantiles = self.site_quantiles()
        if style != "site" or brain_mask is None or quantiles is None or source_site is None:
            return Translation(harmonized, table, values)
        source_quantiles, lookup_input = quantiles[source_site], values
        denoised = self.denoises(source_site, target_site)
        if denoised:
            lookup_input = denoise(values, brain_mask)
            source_quantiles = source_quantiles + np.asarray(self._site_entry(source_site)["denoised_shift"])
        own = image_lookup(lookup_input, brain_mask, source_quantiles, quantiles[target_site])
        residual = harmonized - apply_lookup(values, *table)
        return Translation(residual + apply_lookup(lookup_input, *own), own, lookup_input, denoised)

    def noise_ratios(self) -> dict[str, float]:
        """Each site's noise-to-contrast ratio (preproc/noise.py); {} for bundles without them."""
        return self.model_card.noise_ratios()

    def denoises(self, source_site: str, target_site: str) -> bool:
        """Whether images of `source_site` are denoised before their map to `target_site`."""
        ratios = self.noise_ratios()
        noisier = should_denoise(ratios.get(source_site), ratios.get(target_site))
        return noisier and "denoised_shift" in self._site_entry(source_site)

    def _site_entry(self, site: str) -> dict[str, Any]:
        return self.card["sites"][self.site_index(site)]

    def site_quantiles(self) -> dict[str, np.ndarray] | None:
        """Each site's anchor quantiles (model range), or None for bundles that do not store them."""
        sites = self.card["sites"]
        if not all("quantiles" in site for site in sites):
            return None
        return {site["name"]: np.asarray(site["quantiles"], np.float64) for site in sites}

    @property
    def site_anchored(self) -> bool:
        """Trained with site curve anchors (model/anchors.py): the curves belong to the sites."""
        training = self.card.get("training") or {}  # bundles saved without their training settings
        return (training.get("loss_weights") or {}).get("anchor", 0.0) > 0

    def source_style(
        self, volume: np.ndarray | Tensor, source_site: str | None, *, slice_axis: int = 2
    ) -> Tensor | None:
        """The style the volume is in now, or None for the paper layout: its site's stored style
        for a site-anchored bundle (one curve per site, so each subject keeps its own anatomy),
        else the volume's own (mean over its foreground slices)."""
        if not self.translator.needs_source_style:
            return None
        if source_site is None:
            raise ValueError(
                "this model renders relative to the input's own style: pass source_site, the site the "
                f"volume was acquired at (one of {', '.join(self.sites)})"
            )
        if self.site_anchored:
            return self.style_code(source_site, "site")
        return reference_style(self.translator, volume, self.site_index(source_site), slice_axis=slice_axis)

    def intensity_lookup(self, target_style: Tensor, source_style: Tensor | None) -> tuple[np.ndarray, np.ndarray]:
        """The voxel-wise part of the translation as a table (model-range inputs, outputs).

        For the style-aware layout this is curve_target(inverse(curve_source)(x)); the paper
        layout has no voxel-wise part, so its table is the identity.
        """
        if source_style is None:
            ends = np.array([-1.0, 1.0], dtype=np.float32)  # extended beyond its ends by apply_lookup
            return ends, ends.copy()
        generator = self.translator.generator
        with torch.inference_mode():
            curves = generator.curve(torch.stack([source_style, target_style]).float().to(self.device))
        # Both curves share their knot positions: the composite's table is the two knot vectors.
        return curves[0].cpu().numpy(), curves[1].cpu().numpy()

    @property
    def device(self) -> torch.device:
        return next(self.translator.parameters()).device
