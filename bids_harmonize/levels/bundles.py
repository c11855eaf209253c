"""Which model bundle harmonizes which contrast, and the input contract a participant run follows.

``--model`` is either one bundle (a folder holding model.json + model.safetensors, or that
model.json) or a folder of ``<contrast>/`` bundles; without it, OUT/models/<contrast>/ are used
when present. A ``--model`` that yields no usable bundle is an error, never a silent fallback
to preprocessing only. The bundles' cards fix the template, resolution and intensity convention
of the run: an explicit ``--template``/``--template-resolution`` that differs is refused.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from bids_harmonize.bids.outputs import OutputLayout
from bids_harmonize.bids.records import ImageRecord
from bids_harmonize.config import DEFAULT_RESOLUTION, DEFAULT_TEMPLATE, RunConfig
from bids_harmonize.model.card import CARD_NAME, BundleError, ContractMismatch, InputContract, ModelCard, read_card
from bids_harmonize.preproc.operations import intensity_convention
from bids_harmonize.workflows.participant import HarmonizationPlan

LOGGER = logging.getLogger("bids_harmonize")

_RETRAIN = "Fix: retrain at group level (`bids_harmonize BIDS OUT group`) with this version of bids_harmonize"


@dataclass(frozen=True)
class TemplateChoice:
    name: str
    resolution: int


def find_bundles(config: RunConfig, contrasts: list[str]) -> dict[str, Path]:
    """contrast -> bundle folder, for the contrasts among ``contrasts`` that have one."""
    if config.model is None:
        found = {c: OutputLayout(config.output_dir).model(c) for c in contrasts}
        return {c: path for c, path in found.items() if (path / CARD_NAME).is_file()}
    model = Path(config.model)
    if model.is_file():
        if model.name != CARD_NAME:
            raise BundleError(
                f"--model {model} is a file, not a model bundle. Fix: give the bundle folder (holding "
                f"{CARD_NAME} and model.safetensors, e.g. OUT/models/T1w), its {CARD_NAME}, or a folder of "
                "<contrast>/ bundles."
            )
        model = model.parent
    if (model / CARD_NAME).is_file():
        contrast = _card_contrast(model / CARD_NAME)
        if contrast not in contrasts:
            raise BundleError(
                f"--model {model} is a {contrast} model, but the selected images are {'/'.join(contrasts)}. Fix: pass "
                "the bundle of their contrast, or select its images with --contrasts."
            )
        return {contrast: model}
    found = {c: model / c for c in contrasts if (model / c / CARD_NAME).is_file()}
    if not found:
        present = sorted(p.parent.name for p in model.glob(f"*/{CARD_NAME}"))
        raise BundleError(
            f"--model {model} holds no model bundle for {'/'.join(contrasts)}: no {CARD_NAME} in it"
            + (f", and bundles only for {', '.join(present)}" if present else "")
            + ". Fix: pass the bundle folder itself (e.g. OUT/models/T1w) or a folder with <contrast>/ bundles "
            "for the selected contrasts, or leave --model out to preprocess only."
        )
    return found


def _card_contrast(card_path: Path) -> str:
    try:
        contract = json.loads(card_path.read_text(encoding="utf-8")).get("input") or {}
    except (OSError, ValueError, AttributeError) as err:
        raise BundleError(f"{card_path}: invalid model card ({err}). Fix: re-copy the bundle.") from err
    if "contrast" not in contract:
        raise BundleError(f"{card_path} records no input contract (contrast, template, resolution). {_RETRAIN}.")
    return str(contract["contrast"])


def check_contract(card: ModelCard, contrast: str, config: RunConfig) -> InputContract:
    """The bundle's input contract, refused where it cannot fit this run."""
    contract = card.input_contract
    if contract is None:
        raise BundleError(f"{card.path} records no input contract (contrast, template, resolution). {_RETRAIN}.")
    if contract.contrast != contrast:
        raise ContractMismatch(
            f"{card.path} is a {contract.contrast} model, not {contrast}. Fix: pass the {contrast} bundle "
            f"(e.g. OUT/models/{contrast}) or a folder of <contrast>/ bundles as --model."
        )
    if contract.intensity != intensity_convention():
        raise ContractMismatch(
            f"{card.path} was trained on intensities scaled as {contract.intensity}; this version scales as "
            f"{intensity_convention()}. {_RETRAIN}."
        )
    for option, asked, trained in (
        ("--template", config.template, contract.template),
        ("--template-resolution", config.template_resolution, contract.resolution),
    ):
        if asked is not None and asked != trained:
            raise ContractMismatch(
                f"{option} {asked} contradicts the model {card.path}, trained on {contract.template} at "
                f"{contract.resolution} mm. Fix: leave {option} out (the model's is used), or retrain with it."
            )
    return contract


def choose_template(config: RunConfig, contracts: dict[str, InputContract]) -> TemplateChoice:
    """The model's template and resolution (all bundles of a run must agree), else the options."""
    choices = {(c.template, c.resolution) for c in contracts.values()}
    if len(choices) > 1:
        listing = ", ".join(f"{k}: {c.template} {c.resolution} mm" for k, c in sorted(contracts.items()))
        raise ContractMismatch(
            f"the model bundles of this run were trained on different grids ({listing}). Fix: retrain them at "
            "one resolution, or run each contrast separately with --contrasts."
        )
    if choices:
        name, resolution = choices.pop()
        return TemplateChoice(name, resolution)
    return TemplateChoice(config.template or DEFAULT_TEMPLATE, config.template_resolution or DEFAULT_RESOLUTION)


def group_template(config: RunConfig, images: list[ImageRecord]) -> TemplateChoice:
    """The group level's grid: the options when given, else the resolution at which the participant
    level already preprocessed most of ``images`` (ImageRecords), so a study run at 2 mm is not
    preprocessed again at the 1 mm default; with no earlier outputs, the default."""
    name = config.template or DEFAULT_TEMPLATE
    if config.template_resolution is not None:
        return TemplateChoice(name, config.template_resolution)
    layout = OutputLayout(config.output_dir)
    found = {
        resolution: sum(layout.output(image, "template_preproc", name, resolution).is_file() for image in images)
        for resolution in (1, 2)
    }
    resolution = max(found, key=lambda r: (found[r], r == DEFAULT_RESOLUTION))
    if not found[resolution]:
        return TemplateChoice(name, DEFAULT_RESOLUTION)
    LOGGER.info(
        "group: %d of %d image(s) already preprocessed on the %s %d mm grid; training there "
        "(--template-resolution chooses)",
        found[resolution],
        len(images),
        name,
        resolution,
    )
    return TemplateChoice(name, resolution)


def check_grid(contract: InputContract, card: Path, template_mask: str) -> None:
    """The template file at hand must be the grid the model was trained on (same TemplateFlow data)."""
    import nibabel as nb

    shape = tuple(nb.load(template_mask).shape[:3])
    if shape != contract.grid_shape:
        raise ContractMismatch(
            f"{card} was trained on a {contract.template} grid of shape {list(contract.grid_shape)}, but "
            f"{template_mask} has shape {shape}. Fix: use the same TemplateFlow template files as training."
        )


def default_target(card: ModelCard) -> str:
    """The site with the most training images (ties: first by name): the best-estimated style."""
    counts = {site: card.signature(site).get("n_images", 0) for site in card.sites}
    return sorted(counts, key=lambda name: (-counts[name], name))[0]


def harmonization_plans(
    config: RunConfig, contrasts: list[str]
) -> tuple[dict[str, HarmonizationPlan], dict[str, InputContract]]:
    """Per contrast with a bundle: the plan, and the bundle's input contract. Reads each card and
    checks its weights file (read_card), without loading the weights."""
    plans, contracts = {}, {}
    for contrast, path in find_bundles(config, contrasts).items():
        card = read_card(path)
        contracts[contrast] = check_contract(card, contrast, config)
        target = config.target_site or default_target(card)
        scale = card.signature(target).get("intensity_scale")  # UnknownSiteError lists the known sites
        style, _, argument = config.target_style.partition(":")
        plans[contrast] = HarmonizationPlan(
            bundle_dir=str(path.resolve()),
            bundle_sha256=card.sha256,
            bundle_sites=tuple(card.sites),
            target_site=target,
            target_scale=(scale["lo"], scale["hi"]) if scale else (-1.0, 1.0),
            style=style,
            seed=int(argument) if style == "random" else config.seed,
            reference_image=argument if style == "reference" else None,
            card_sha256=card.card_sha256,
            noise_ratios=tuple(card.noise_ratios().items()),
        )
    return plans, contracts
