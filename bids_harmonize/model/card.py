"""The model card (model.json): its typed parts, its checks, and reading it without the weights.

A card holds the sites and their style codes, the network and training configuration, the
data hash, versions, metrics, the SHA-256 of the weights, what the model is (``model_version``,
``license``, ``intended_use``) and the input contract (``InputContract``: contrast, template,
resolution, grid, input size, intensity convention). It is checked against card.schema.json
(jsonschema) and must hold finite numbers only. ``read_card`` opens a bundle for planning: it
validates the card and checks that the weights file matches it (checksum, and tensor shapes
read from the safetensors header against the network built on the meta device), without
loading a tensor. Cards of schema versions 1 and 2 (no contract, no model_version, license,
intended_use) still read.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import torch
from safetensors import safe_open

from bids_harmonize.errors import ExitCode, HarmonizeError
from bids_harmonize.model.networks import MURDConfig, Translator
from bids_harmonize.utils import sha256_of

SCHEMA_VERSION = 3  # 2: optional 'input' contract; 3: model_version, license, intended_use. 1-2 still read
BUNDLE_KIND = "bids_harmonize/murd"
CARD_NAME = "model.json"
WEIGHTS_NAME = "model.safetensors"
SCHEMA_PATH = Path(__file__).with_name("card.schema.json")  # JSON Schema of model.json

# Plausibility bounds beside card.schema.json (which bounds each number): trained style codes
# have norms of order 1-10, and an intensity scale must span more than float32 rounding.
MAX_STYLE_NORM = 1000.0
MIN_RELATIVE_SPAN = 1e-5

# MURDConfig fields that count modules (each module holds at least one tensor of the weights).
_MODULE_COUNTS = (
    "encoder_downsamplings",
    "content_res_blocks",
    "generator_res_blocks",
    "style_blocks",
    "mapping_layers",
)

DEFAULT_MODEL_VERSION = "1.0.0"
DEFAULT_LICENSE = "unspecified"
_INTENDED_USE = (
    "Research: harmonizing {what} of the sites (scanners) this card lists, prepared as its input contract "
    "says, to the style of one of those sites before a group analysis. Not for clinical use; images of other "
    "sites or contrasts, or prepared otherwise, are outside the data it was trained on."
)


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


@dataclass(frozen=True)
class InputContract:
    """How a participant run must prepare images for this model, or refuse (card key 'input')."""

    contrast: str
    template: str
    resolution: int
    grid_shape: tuple[int, int, int]
    image_size: int
    slice_axis: int
    intensity: dict[str, Any]  # preproc.operations.intensity_convention() at training time

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "grid_shape": list(self.grid_shape)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputContract:
        return cls(**{**data, "grid_shape": tuple(data["grid_shape"])})


@dataclass(frozen=True)
class ModelInfo:
    """What the model is, for whoever receives it (MONAI's bundle metadata has the same three):
    a version its publisher gives it, the licence of the weights, and its intended use."""

    version: str = DEFAULT_MODEL_VERSION
    license: str = DEFAULT_LICENSE
    intended_use: str = ""  # empty: the default wording, naming the contrast when known

    def card_fields(self, contrast: str | None) -> dict[str, str]:
        what = f"{contrast} images" if contrast else "structural MRI images"
        return {
            "model_version": self.version,
            "license": self.license,
            "intended_use": self.intended_use or _INTENDED_USE.format(what=what),
        }


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
    if (
        isinstance(card, dict)
        and isinstance(card.get("schema_version"), int)
        and card["schema_version"] > SCHEMA_VERSION
    ):
        raise ValueError(
            f"schema_version {card['schema_version']} is newer than this bids_harmonize reads "
            f"({SCHEMA_VERSION}); upgrade bids_harmonize"
        )
    validator = jsonschema.Draft202012Validator(card_schema())
    errors = [
        f"{_json_path(e)}: {e.message}"
        for e in sorted(validator.iter_errors(card), key=lambda e: list(e.absolute_path))
    ]
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
            errors.append(
                f"card.input.image_size {contract['image_size']} differs from "
                f"card.network.image_size {config.image_size}"
            )
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
        errors.append(
            f"card.sites[{index}].signature.intensity_scale spans too little for float32 images "
            f"(hi - lo must be at least {MIN_RELATIVE_SPAN:g} of max(1, |lo|, |hi|))"
        )
    return errors


@dataclass(frozen=True)
class ModelCard:
    """A bundle's validated card: the JSON as read (``data``), its network and its typed parts."""

    directory: Path
    data: dict[str, Any]
    config: MURDConfig
    card_sha256: str  # SHA-256 of model.json as read: recorded in provenance

    @property
    def path(self) -> Path:
        return self.directory / CARD_NAME

    @property
    def input_contract(self) -> InputContract | None:
        """How inputs must be prepared; None on cards written before the contract existed."""
        contract = self.data.get("input")
        return InputContract.from_dict(contract) if contract is not None else None

    @property
    def info(self) -> ModelInfo | None:
        """Version, licence and intended use; None on cards of schema versions 1-2."""
        if "model_version" not in self.data:
            return None
        return ModelInfo(self.data["model_version"], self.data["license"], self.data["intended_use"])

    @property
    def sites(self) -> list[str]:
        return [site["name"] for site in self.data["sites"]]

    @property
    def sha256(self) -> str:
        """Checksum of the weights file: the identity of this model in provenance records."""
        return self.data["weights"]["sha256"]

    def site_index(self, site: str) -> int:
        if site not in self.sites:
            raise UnknownSiteError(site, self.sites)
        return self.sites.index(site)

    def noise_ratios(self) -> dict[str, float]:
        """Each site's noise-to-contrast ratio (preproc/noise.py); {} for cards without them."""
        return {site["name"]: site["noise_to_contrast"] for site in self.data["sites"] if "noise_to_contrast" in site}

    def signature(self, site: str) -> dict[str, Any]:
        """What the card keeps of ``site`` (image count, intensity scale, ...); {} when nothing."""
        return self.data["sites"][self.site_index(site)]["signature"] or {}


def card_path_of(path: str | os.PathLike) -> Path:
    """model.json of a bundle given as its folder or as the card itself."""
    path = Path(path)
    return path if path.suffix == ".json" else path / CARD_NAME


def read_card(path: str | os.PathLike) -> ModelCard:
    """Open a bundle's card (its folder or model.json), validate it, and check that its weights
    file is there, matches the recorded SHA-256 and fits the network; loads no tensor."""
    card_path = card_path_of(path)
    data, config = _read_json_card(card_path)
    weights_path = card_path.parent / data["weights"]["file"]
    if not weights_path.is_file():
        raise BundleError(f"{weights_path}: weights file named by {card_path} is missing; re-copy the bundle")
    actual = sha256_of(weights_path)
    if actual != data["weights"]["sha256"]:
        raise BundleError(
            f"{weights_path}: SHA-256 {actual} does not match {data['weights']['sha256']} recorded in "
            f"{card_path}; the weights are corrupt or were changed: re-copy the bundle or retrain"
        )
    _check_weights_fit(config, weights_path, card_path)
    return ModelCard(card_path.parent, data, config, sha256_of(card_path))


def _read_json_card(card_path: Path) -> tuple[dict[str, Any], MURDConfig]:
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


def _check_weights_fit(config: MURDConfig, weights_path: Path, card_path: Path) -> None:
    """The network the card describes, built on the meta device (no memory), must have exactly
    the tensors the weights file holds: a card edited to absurd sizes is refused before any
    allocation, and one that cannot build a network at all is an unusable bundle too."""
    fix = "Fix: retrain it at group level, or re-copy the bundle from where it was trained"
    try:
        with safe_open(str(weights_path), "pt") as handle:
            stored = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
    except Exception as error:  # safetensors raises SafetensorError (and OSError) for a file it cannot parse
        raise BundleError(
            f"{weights_path}: not a readable safetensors file ({error.__class__.__name__}: {error}), although its "
            f"SHA-256 matches {card_path}: the bundle was written wrongly. {fix}"
        ) from error
    # Each block or layer holds at least one tensor: more of them than the file has tensors cannot
    # fit, and building millions of modules (even on the meta device) would take hours.
    counts = {name: getattr(config, name) for name in _MODULE_COUNTS}
    if any(isinstance(count, int) and count > len(stored) for count in counts.values()):
        raise BundleError(
            f"{weights_path}: weights do not fit the network in {card_path} ({counts}, but the "
            f"file holds {len(stored)} tensors). {fix}"
        )
    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in Translator(config).state_dict().items()}
    except Exception as error:  # TypeError/ValueError/RuntimeError for values the network cannot take
        raise BundleError(
            f"{card_path}: card.network cannot describe a network ({error.__class__.__name__}: {error}). {fix}"
        ) from error
    if stored != expected:
        differing = sorted(
            set(stored) ^ set(expected) | {k for k in set(stored) & set(expected) if stored[k] != expected[k]}
        )
        raise BundleError(
            f"{weights_path}: weights do not fit the network in {card_path} (e.g. {differing[:3]}). {fix}"
        )
