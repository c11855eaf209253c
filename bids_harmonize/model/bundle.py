"""Model bundle: EMA inference weights in safetensors plus a schema-checked JSON card.

A bundle is a directory holding `model.safetensors` (content encoder, style encoder, mapping
network, generator; no discriminator) and `model.json` (sites and their style codes, network
and training configuration, data hash, versions, metrics, the SHA-256 of the weights, and
the input contract: contrast, template, resolution, grid, input size, intensity convention).
The card is checked against card.schema.json (jsonschema) and must hold finite numbers only;
loading reads JSON and safetensors only, so opening a bundle never executes code.
"""

from __future__ import annotations

import datetime
import json
import math
import os
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

import bids_harmonize
from bids_harmonize.errors import ExitCode, HarmonizeError
from bids_harmonize.model.common import resolve_device
from bids_harmonize.model.infer import harmonize_volume, random_style, reference_style
from bids_harmonize.model.networks import MURDConfig, Translator
from bids_harmonize.utils import atomic_write, atomic_write_json, sha256_of

SCHEMA_VERSION = 2  # 2: optional 'input' contract; version-1 cards still load
BUNDLE_KIND = "bids_harmonize/murd"
CARD_NAME = "model.json"
WEIGHTS_NAME = "model.safetensors"
STYLE_KINDS = ("site", "reference", "random")

# Plausibility bounds beside card.schema.json (which bounds each number): trained style codes
# have norms of order 1-10, and an intensity scale must span more than float32 rounding.
MAX_STYLE_NORM = 1000.0
MIN_RELATIVE_SPAN = 1e-5

SCHEMA_PATH = Path(__file__).with_name("card.schema.json")  # JSON Schema of model.json


class BundleError(HarmonizeError):
    """A model bundle is missing, malformed, or does not match its recorded checksum."""

    exit_code = ExitCode.INPUT_MISSING


class ContractMismatch(BundleError):
    """The run asks for inputs prepared differently from what the model was trained on."""

    exit_code = ExitCode.USAGE  # the options contradict the model


class UnknownSiteError(HarmonizeError, LookupError):
    """A site was asked for that the bundle was not trained on."""

    exit_code = ExitCode.USAGE

    def __init__(self, site: str, known: Sequence[str]) -> None:
        self.site, self.known = site, list(known)
        super().__init__(
            f"unknown site {site!r}; this model knows the sites {', '.join(map(repr, known))}. "
            "Pick one of them, or retrain the model with data from that site."
        )


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
    metrics: Mapping[str, Any] | None = None,
    input_contract: Mapping[str, Any] | None = None,
) -> Path:
    """Write `translator` (normally the EMA copy) and its card into `out_dir`; returns `out_dir`.

    `site_styles` (num_sites, style_dim) are the deterministic per-site styles; `site_signatures`
    optionally maps site names to the scanner metadata that defines each site.
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
    }
    if input_contract is not None:
        card["input"] = dict(input_contract)
    validate_card(card)  # never write a card that load_bundle would refuse
    atomic_write_json(out_dir / CARD_NAME, card)
    return out_dir


def record_input_contract(bundle_dir: str | os.PathLike, contract: Mapping[str, Any]) -> Path:
    """Add the input contract (contrast, template, resolution, grid, intensity convention) to
    the card of a bundle written by ``train``; the card is checked before it is replaced."""
    card_path = Path(bundle_dir) / CARD_NAME
    card, _ = _read_card(card_path)
    card["input"] = dict(contract)
    try:
        validate_card(card)
    except ValueError as error:
        raise BundleError(f"{card_path}: the input contract is invalid ({error})") from error
    atomic_write_json(card_path, card)
    return card_path


@lru_cache(maxsize=1)
def card_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def non_finite_numbers(value: Any, where: str = "card") -> list[str]:
    """JSON paths of NaN and infinite numbers (Python's json reads NaN/Infinity tokens)."""
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{where} is {value}"]
    if isinstance(value, dict):
        return [e for key, item in value.items() for e in non_finite_numbers(item, f"{where}.{key}")]
    if isinstance(value, list):
        return [e for index, item in enumerate(value) for e in non_finite_numbers(item, f"{where}[{index}]")]
    return []


def _json_path(error: jsonschema.ValidationError) -> str:
    return "card" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)


def validate_card(card: Any) -> MURDConfig:
    """Check a card against card.schema.json, that every number is finite, and that its parts
    agree; returns its network config or raises ValueError naming every problem."""
    if isinstance(card, dict) and isinstance(card.get("schema_version"), int) and card["schema_version"] > SCHEMA_VERSION:
        raise ValueError(
            f"schema_version {card['schema_version']} is newer than this bids_harmonize reads "
            f"({SCHEMA_VERSION}); upgrade bids_harmonize"
        )
    validator = jsonschema.Draft202012Validator(card_schema())
    errors = [f"{_json_path(e)}: {e.message}" for e in sorted(validator.iter_errors(card), key=lambda e: list(e.absolute_path))]
    errors += non_finite_numbers(card)
    if errors:
        raise ValueError(_listing(errors))
    config = MURDConfig.from_dict(card["network"])
    sites = card["sites"]
    for index, site in enumerate(sites):
        if len(site["style"]) != config.style_dim:
            errors.append(f"card.sites[{index}].style must be {config.style_dim} numbers")
        errors += _implausible_site(site, index)
    names = [site["name"] for site in sites]
    if len(sites) != config.num_sites or len(set(names)) != len(names):
        errors.append(f"card.sites must list {config.num_sites} sites with unique names")
    contract = card.get("input")
    if contract is not None:
        if contract["image_size"] != config.image_size:
            errors.append(f"card.input.image_size {contract['image_size']} differs from card.network.image_size {config.image_size}")
        if not contract["intensity"]["high_percentile"] > contract["intensity"]["low_percentile"]:
            errors.append("card.input.intensity: high_percentile must exceed low_percentile")
    if errors:
        raise ValueError(_listing(errors))
    return config


def _listing(errors: list[str], shown: int = 5) -> str:
    more = f"; and {len(errors) - shown} more" if len(errors) > shown else ""
    return "; ".join(errors[:shown]) + more


def _implausible_site(site: dict[str, Any], index: int) -> list[str]:
    """Plausibility bounds beside the schema: a style code of bounded norm, an intensity scale
    with hi > lo whose span float32 (the output images' type) resolves."""
    errors = []
    norm = math.sqrt(sum(float(v) ** 2 for v in site["style"]))
    if norm > MAX_STYLE_NORM:
        errors.append(f"card.sites[{index}].style has norm {norm:.3g}, above the plausible {MAX_STYLE_NORM:g}")
    scale = (site["signature"] or {}).get("intensity_scale")
    if scale and not scale["hi"] > scale["lo"]:
        errors.append(f"card.sites[{index}].signature.intensity_scale must have hi > lo")
    elif scale and scale["hi"] - scale["lo"] < MIN_RELATIVE_SPAN * max(1.0, abs(scale["hi"]), abs(scale["lo"])):
        errors.append(f"card.sites[{index}].signature.intensity_scale spans too little for float32 images "
                      f"(hi - lo must be at least {MIN_RELATIVE_SPAN:g} of max(1, |lo|, |hi|))")
    return errors


def _read_card(card_path: Path) -> tuple[dict[str, Any], MURDConfig]:
    fix = "re-copy the bundle directory, or write it again with save_bundle()"
    if not card_path.is_file():
        raise BundleError(
            f"{card_path}: model card not found; pass a bundle directory (the folder holding {CARD_NAME} "
            f"and {WEIGHTS_NAME}, e.g. OUT/models/T1w) or its {CARD_NAME}"
        )
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
        return card, validate_card(card)
    # json.JSONDecodeError is a ValueError; MURDConfig's checks overflow on huge float counts (2 ** 1024.0)
    except (ValueError, TypeError, ArithmeticError, UnicodeDecodeError) as error:
        raise BundleError(f"{card_path}: invalid model card ({error}); {fix}") from error


def load_bundle(path: str | os.PathLike, device: str | torch.device = "cpu") -> ModelBundle:
    """Open a bundle directory (or its model.json), verify the weights' SHA-256, load them.

    `device` is 'cpu', 'cuda[:N]' or 'auto'; an absent GPU raises DeviceUnavailable.
    """
    device = resolve_device(device)
    path = Path(path)
    card_path = path if path.suffix == ".json" else path / CARD_NAME
    card, config = _read_card(card_path)
    weights_path = card_path.parent / card["weights"]["file"]
    if not weights_path.is_file():
        raise BundleError(f"{weights_path}: weights file named by {card_path} is missing; re-copy the bundle")
    actual = sha256_of(weights_path)
    if actual != card["weights"]["sha256"]:
        raise BundleError(
            f"{weights_path}: SHA-256 {actual} does not match {card['weights']['sha256']} recorded in "
            f"{card_path}; the weights are corrupt or were changed: re-copy the bundle or retrain"
        )
    _check_weights_fit(config, weights_path, card_path)
    translator = Translator(config)
    try:
        translator.load_state_dict(load_file(weights_path))
    except RuntimeError as error:
        raise BundleError(f"{weights_path}: weights do not fit the network in {card_path}: {error}") from error
    bundle = ModelBundle(card_path.parent, card, translator.to(device).eval().requires_grad_(False))
    bundle.card_sha256 = sha256_of(card_path)
    return bundle


def _check_weights_fit(config: MURDConfig, weights_path: Path, card_path: Path) -> None:
    """The network the card describes, built on the meta device (no memory), must have exactly
    the tensors the weights file holds: a card edited to absurd sizes is refused before any
    allocation, and one that cannot build a network at all is an unusable bundle too."""
    from safetensors import safe_open

    fix = "Fix: retrain it at group level, or re-copy the bundle from where it was trained"
    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in Translator(config).state_dict().items()}
    except Exception as error:  # TypeError/ValueError/RuntimeError for values the network cannot take
        raise BundleError(f"{card_path}: card.network cannot describe a network ({error.__class__.__name__}: {error}). {fix}") from error
    try:
        with safe_open(str(weights_path), "pt") as handle:
            stored = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
    except Exception as error:  # safetensors raises SafetensorError (and OSError) for a file it cannot parse
        raise BundleError(
            f"{weights_path}: not a readable safetensors file ({error.__class__.__name__}: {error}), although its "
            f"SHA-256 matches {card_path}: the bundle was written wrongly. {fix}"
        ) from error
    if stored != expected:
        differing = sorted(set(stored) ^ set(expected) | {k for k in set(stored) & set(expected) if stored[k] != expected[k]})
        raise BundleError(f"{weights_path}: weights do not fit the network in {card_path} (e.g. {differing[:3]}). {fix}")


class ModelBundle:
    """A loaded MURD model: its sites, its card, and `harmonize()` to translate volumes."""

    def __init__(self, directory: Path, card: dict[str, Any], translator: Translator) -> None:
        self.directory = directory
        self.card = card
        self.translator = translator
        self.card_sha256 = ""  # SHA-256 of model.json as read; set by load_bundle

    @property
    def input_contract(self) -> dict[str, Any] | None:
        """How inputs must be prepared (template, resolution, grid, intensity); None on cards
        written before the contract existed or by ``train`` alone."""
        return self.card.get("input")

    @property
    def sites(self) -> list[str]:
        return [site["name"] for site in self.card["sites"]]

    @property
    def sha256(self) -> str:
        """Checksum of the weights file: the identity of this model in provenance records."""
        return self.card["weights"]["sha256"]

    @property
    def config(self) -> MURDConfig:
        return self.translator.config

    def site_index(self, site: str) -> int:
        if site not in self.sites:
            raise UnknownSiteError(site, self.sites)
        return self.sites.index(site)

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

    def harmonize(
        self,
        volume: np.ndarray | Tensor,
        target_site: str,
        *,
        style: str = "site",
        reference: np.ndarray | Tensor | None = None,
        seed: int = 0,
        source_site: str | None = None,
        batch_size: int | None = None,
        slice_axis: int = 2,
    ) -> np.ndarray:
        """Translate a [-1, 1]-scaled volume into `target_site`'s style; same shape out.

        The style-aware layout renders relative to the volume's own style, read from the volume
        through the head of `source_site` (required there; the paper layout ignores it).
        """
        code = self.style_code(target_site, style, reference=reference, seed=seed, slice_axis=slice_axis)
        source = self.source_style(volume, source_site, slice_axis=slice_axis)
        return harmonize_volume(
            self.translator, volume, code, source_style=source, batch_size=batch_size, slice_axis=slice_axis
        )

    def source_style(self, volume: np.ndarray | Tensor, source_site: str | None, *, slice_axis: int = 2) -> Tensor | None:
        """The volume's own style (mean over its foreground slices), or None for the paper layout."""
        if not self.translator.needs_source_style:
            return None
        if source_site is None:
            raise ValueError(
                "this model renders relative to the input's own style: pass source_site, the site the "
                f"volume was acquired at (one of {', '.join(self.sites)})"
            )
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
