"""Running the levels: build the workflow from a RunConfig, execute it, train at group level.

This is the only module below the CLI that reads a RunConfig; the builders it calls take
explicit arguments.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nb
import numpy as np

from bids_harmonize.bids import derivatives
from bids_harmonize.bids.records import ImageRecord
from bids_harmonize.config import MULTIPROC_DEFAULTS, RunConfig, read_plugin_file
from bids_harmonize.model.bundle import BundleError
from bids_harmonize.preproc.operations import intensity_convention, median_scale, robust_scale
from bids_harmonize.reports.metrics import training_histogram
from bids_harmonize.sites import UNKNOWN_SITE, SiteAssignment
from bids_harmonize.sites.overrides import read_tsv
from bids_harmonize.templates import get_template
from bids_harmonize.workflows.bundles import (
    TemplateChoice,
    check_grid,
    choose_template,
    default_target,
    find_bundles,
    harmonization_plans,
)
from bids_harmonize.workflows.participant import HarmonizationPlan, TemplateFiles, init_participant_wf

__all__ = ["default_target", "run_group", "run_participant"]

LOGGER = logging.getLogger("bids_harmonize")
SiteInventory = Callable[..., list[SiteAssignment]]


class WorkflowFailed(RuntimeError):
    """Some nodes crashed; the message lists the crash files (each names its image)."""


# ----------------------------------------------------------------------------- shared pieces
def resolve_device(config: RunConfig) -> str:
    from bids_harmonize.model import resolve_device as resolve

    return str(resolve(config.device))


def template_files(config: RunConfig, choice: TemplateChoice) -> TemplateFiles:
    name, res = choice.name, choice.resolution
    return TemplateFiles(
        name=name, resolution=res,
        images={c: str(get_template(name, res, c)) for c in config.contrasts},
        mask=str(get_template(name, res, "mask", "brain")),
    )


def provenance(config: RunConfig) -> dict[str, Any]:
    return {"command_line": config.command_line, "start_time": derivatives.utc_now()}


def omp_threads(config: RunConfig) -> int:
    return config.omp_nthreads or max(1, min(8, config.nprocs))


def execute(workflow: Any, config: RunConfig) -> None:
    """Run with MultiProc (or the --use-plugin settings); crashes go to OUT/logs as text."""
    workflow.base_dir = str(config.work_dir / "nipype")
    workflow.config["execution"].update(
        {"crashdump_dir": str(derivatives.logs_dir(config.output_dir)), "crashfile_format": "txt",
         "stop_on_first_crash": False, "remove_unnecessary_outputs": False}
    )
    plugin, plugin_args = plugin_settings(config)
    before = set(derivatives.logs_dir(config.output_dir).glob("crash-*"))
    try:
        workflow.run(plugin=plugin, plugin_args=plugin_args)
    except RuntimeError as err:
        crashes = sorted(set(derivatives.logs_dir(config.output_dir).glob("crash-*")) - before)
        listing = "\n  ".join(str(c) for c in crashes) or "(no crash file written)"
        raise WorkflowFailed(f"{err}\nCrash files (each names the failing image's node):\n  {listing}") from err


def plugin_settings(config: RunConfig) -> tuple[str, dict[str, Any]]:
    """The Nipype plugin and its arguments: a --use-plugin file's settings are laid over ours, so
    a MultiProc file that sets only n_procs keeps the forkserver start method."""
    plugin, given = read_plugin_file(config.use_plugin) if config.use_plugin else ("MultiProc", {})
    if plugin != "MultiProc":
        return plugin, dict(given)
    args: dict[str, Any] = {"n_procs": config.nprocs, **MULTIPROC_DEFAULTS}
    if config.mem_gb:
        args["memory_gb"] = config.mem_gb
    return plugin, {**args, **given}


def with_recorded_sites(config: RunConfig, assignments: list[SiteAssignment]) -> list[SiteAssignment]:
    """Prefer the labels the group level recorded in OUT/sites.tsv (the model was trained on
    those); images it did not see keep their freshly inferred label."""
    table = config.output_dir / "sites.tsv"
    if not table.is_file():
        return assignments
    recorded = {row["path"]: row for row in read_tsv(table)}
    result = []
    for a in assignments:
        row = recorded.get(a.image.relpath)
        if row and row["site"] != a.site:
            a = SiteAssignment(a.image, row["site"], row["provenance"], row["evidence"], a.scanner, a.protocol, a.warnings)
        result.append(a)
    return result


# ----------------------------------------------------------------------------- levels
def run_participant(config: RunConfig, images: list[ImageRecord], site_inventory: SiteInventory) -> int:
    device = resolve_device(config)
    assignments = with_recorded_sites(config, site_inventory(config, images, write=False))
    present = sorted({a.image.suffix for a in assignments})
    plans, contracts = harmonization_plans(config, present)
    template = template_files(config, choose_template(config, contracts))
    for contrast, contract in contracts.items():
        check_grid(contract, Path(plans[contrast].bundle_dir) / "model.json", template.mask)
    if not plans:
        LOGGER.warning(
            "No model bundle found (--model, or %s): writing preprocessed outputs only. To train one: "
            "`bids_harmonize %s %s group`.", config.output_dir / "models", config.bids_dir, config.output_dir,
        )
    for contrast in sorted(set(present) - set(plans)):
        if plans:
            LOGGER.warning("%s: no model bundle for this contrast; its images are preprocessed only.", contrast)
    workflow, not_harmonized = init_participant_wf(
        assignments=assignments, out_dir=config.output_dir, template=template, plans=plans,
        provenance=provenance(config), device=device, omp_nthreads=omp_threads(config), seed=config.seed,
    )
    for message in not_harmonized:
        LOGGER.warning(message)
    started = time.time()
    try:
        execute(workflow, config)
    finally:  # a failed run still documents itself: every participant gets a report saying what failed
        reports = write_reports(config, template, assignments, plans, not_harmonized, started)
    harmonized = sum(a.image.suffix in plans for a in assignments) - len(not_harmonized)
    print(f"Preprocessed {len(assignments)} image(s), harmonized {harmonized}; outputs in {config.output_dir}")
    print("Reports: " + ", ".join(str(p) for p in reports))
    if config.export_bids:
        from bids_harmonize.bids.export import export_bids

        placed, kept = export_bids(config.bids_dir, config.output_dir, config.export_bids, images)
        print(f"Exported a BIDS dataset to {config.export_bids}: {placed} harmonized image(s), {kept} kept raw")
    return 0


def run_group(config: RunConfig, images: list[ImageRecord], site_inventory: SiteInventory) -> int:
    device = resolve_device(config)
    assignments = site_inventory(config, images)
    template = template_files(config, choose_template(config, {}))
    missing = [a for a in assignments if not template_preproc_path(config, template, a.image).is_file()]
    if missing:
        LOGGER.info("preprocessing %d image(s) not yet preprocessed", len(missing))
        workflow, _ = init_participant_wf(
            assignments=missing, out_dir=config.output_dir, template=template, plans={},
            provenance=provenance(config), device=device, omp_nthreads=omp_threads(config), seed=config.seed,
            name="group_preproc_wf",
        )
        execute(workflow, config)
    trained = [train_contrast(config, contrast, assignments, template, device) for contrast in config.contrasts]
    print("\n".join(line for line in trained if line))
    print("Report: " + ", ".join(str(p) for p in write_reports(config, template)))
    return 0


# ----------------------------------------------------------------------------- reports
def write_reports(
    config: RunConfig, template: TemplateFiles, assignments: list[SiteAssignment] | None = None,
    plans: dict[str, HarmonizationPlan] | None = None, not_harmonized: list[str] | None = None,
    since: float | None = None,
) -> list[Path]:
    """Methods text, then participant reports (participant level) and the group report (group
    level, and participant runs that harmonize). Never raises."""
    from bids_harmonize.reports import MethodsFacts, ModelUse, skip_reasons, write_reports as build

    try:
        bundles = find_bundles(config, list(config.contrasts))
    except BundleError:  # already reported by the level; the reports then show no model
        bundles = {}
    plans = plans or {}
    models = tuple(
        ModelUse(c, Path(plans[c].bundle_dir), plans[c].target_site, plans[c].style) if c in plans else ModelUse(c, path)
        for c, path in bundles.items() if config.analysis_level == "group" or c in plans
    )
    facts = MethodsFacts(tuple(config.contrasts), template.name, template.resolution, config.site_granularity,
                         models, dict(derivatives.software_versions()))
    hint = f"--model {config.model}" if config.model else f"none in {config.output_dir / 'models'}"
    reasons = skip_reasons(assignments or [], set(plans), not_harmonized or [], hint)
    return build(out_dir=config.output_dir, template=template, facts=facts, bundles=bundles,
                 assignments=assignments or [], reasons=reasons, since=since,
                 group=config.analysis_level == "group" or bool(plans))


def template_preproc_path(config: RunConfig, template: TemplateFiles, image: ImageRecord) -> Path:
    return derivatives.derivative_path(
        config.output_dir, image, space=template.name, resolution=template.resolution, description="preproc"
    )


def model_image_size(brain_mask: np.ndarray, margin_voxels: int = 4, multiple: int = 16) -> int:
    """The smallest square (a multiple of 16, as the encoders downsample) centred on the grid
    that holds every axial slice of the brain plus a margin. Cropping the template's air
    around the head makes CPU training ~2x cheaper than padding to the next power of two."""
    extents = []
    for axis in (0, 1):
        index = np.nonzero(brain_mask.any(axis=tuple(a for a in range(3) if a != axis)))[0]
        centre = (brain_mask.shape[axis] - 1) / 2
        extents.append(2 * max(centre - index.min(), index.max() - centre) + 1 + 2 * margin_voxels)
    return int(np.ceil(max(extents) / multiple) * multiple)


def train_contrast(
    config: RunConfig, contrast: str, assignments: list[SiteAssignment], template: TemplateFiles, device: str
) -> str:
    import torch

    from bids_harmonize.model import preset_config, train
    from bids_harmonize.model.bundle import record_input_contract
    from bids_harmonize.model.recipes import RECIPES, recipe_for

    usable = [a for a in assignments if a.image.suffix == contrast and a.site != UNKNOWN_SITE]
    sites = sorted({a.site for a in usable})
    if len(sites) < 2:
        LOGGER.warning("%s: %d site(s) with images; harmonization needs at least 2. Not training.", contrast, len(sites))
        return ""
    mask = np.asarray(nb.load(template.mask).dataobj) > 0
    volumes, labels, scales = [], [], defaultdict(list)  # scales: site -> IntensityScale of each image
    for a in usable:
        data = np.asarray(nb.load(template_preproc_path(config, template, a.image)).dataobj, np.float32)
        scale = robust_scale(data, mask)
        volumes.append(scale.to_model(data))
        labels.append(sites.index(a.site))
        scales[a.site].append(scale)
    counts = Counter(a.site for a in usable)
    signatures = {
        site: {
            "n_images": counts[site],
            "intensity_scale": median_scale(scales[site]).as_dict(),
            "brain_histogram": training_histogram([v for v, a in zip(volumes, usable) if a.site == site], mask),
            "evidence": next(a.evidence for a in usable if a.site == site),
        }
        for site in sites
    }
    training = config.training
    recipe = RECIPES[training.recipe] if training.recipe != "auto" else recipe_for(torch.device(device).type)
    network = preset_config(training.preset or recipe.preset, len(sites), image_size=model_image_size(mask))
    iterations = training.iterations or recipe.iterations
    options = recipe.train_config(
        iterations=iterations, batch_size=training.batch_size or recipe.batch_size, seed=config.seed,
        checkpoint_every=max(1, iterations // 10 // 10) * 10, log_every=10,
    )
    out = config.output_dir / "models" / contrast
    work = config.work_dir / "training" / contrast
    torch.set_num_threads(omp_threads(config))  # containers set OMP_NUM_THREADS=1 for Nipype's workers
    LOGGER.info("training MURD for %s on %d images of %d sites (preset %s, %d iterations, %s)",
                contrast, len(volumes), len(sites), network.preset, options.iterations, device)
    bundle_dir = train(volumes, labels, sites, network, options, out, device=device, work_dir=work,
                       site_signatures=signatures, progress=config.verbosity > 0)
    record_input_contract(bundle_dir, {
        "contrast": contrast, "template": template.name, "resolution": template.resolution,
        "grid_shape": list(mask.shape), "image_size": network.image_size, "slice_axis": 2,
        "intensity": intensity_convention(),
    })
    log = work / "train_log.jsonl"
    if log.is_file():
        derivatives.atomic_copy(log, derivatives.logs_dir(config.output_dir) / f"training-{contrast}-{config.run_id}.jsonl")
    return f"{contrast}: model bundle for sites {', '.join(sites)} in {bundle_dir}"
