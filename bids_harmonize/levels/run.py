"""Running the levels: build the workflow from a RunConfig, execute it, train at group level,
then write the reports (and, with --export-bids, the harmonized BIDS dataset).

With bundles.py and training.py, the only code below the CLI that reads a RunConfig; the graph
builders it calls (workflows/) take explicit arguments.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bids_harmonize import console
from bids_harmonize.bids import derivatives
from bids_harmonize.bids.covariates import CovariateError, read_covariates
from bids_harmonize.bids.outputs import OutputLayout
from bids_harmonize.bids.records import ImageRecord
from bids_harmonize.config import MULTIPROC_DEFAULTS, RunConfig, read_plugin_file
from bids_harmonize.errors import ExitCode, HarmonizeError
from bids_harmonize.levels import scheduler
from bids_harmonize.levels.bundles import (
    TemplateChoice,
    check_grid,
    choose_template,
    default_target,
    find_bundles,
    group_template,
    harmonization_plans,
)
from bids_harmonize.levels.training import train_contrast
from bids_harmonize.model.bundle import BundleError
from bids_harmonize.preproc.brainmask import BrainMaskUnavailable, check_available, method_record
from bids_harmonize.runtime import stop_action
from bids_harmonize.sites import SiteAssignment
from bids_harmonize.sites.overrides import read_tsv
from bids_harmonize.templates import get_template
from bids_harmonize.workflows.participant import HarmonizationPlan, TemplateFiles, init_participant_wf

__all__ = ["default_target", "run_group", "run_participant"]

LOGGER = logging.getLogger("bids_harmonize")
# Nipype's scheduler loop sleeps 2 s per round and settles a node found in its cache only as
# processors free up, so a rerun over cached preprocessing (every participant run after the
# group level) spent ~1.8 s per cached node: 5 min for 22 images. Locally a round costs little.
LOCAL_PLUGINS, LOCAL_POLL_SECONDS = ("MultiProc", "Linear"), 0.1
SiteInventory = Callable[..., list[SiteAssignment]]


class WorkflowFailed(HarmonizeError, RuntimeError):
    """Some nodes crashed; the message lists the crash files (each names its image)."""

    exit_code = ExitCode.FAILURE


# ----------------------------------------------------------------------------- shared pieces
def resolve_device(config: RunConfig) -> str:
    from bids_harmonize.model import resolve_device as resolve

    return str(resolve(config.device))


def template_files(config: RunConfig, choice: TemplateChoice) -> TemplateFiles:
    name, res = choice.name, choice.resolution
    return TemplateFiles(
        name=name,
        resolution=res,
        images={c: str(get_template(name, res, c)) for c in config.contrasts},
        mask=str(get_template(name, res, "mask", "brain")),
    )


def provenance(config: RunConfig) -> dict[str, Any]:
    return {"command_line": config.command_line, "start_time": derivatives.utc_now()}


def omp_threads(config: RunConfig) -> int:
    """Threads of each node's own steps (ITK, N4, inference). Under a scheduler plugin the nodes
    run as jobs elsewhere, so the default is the CPUs each job asks for (`-c`/`--cpus-per-task`
    in sbatch_args, else 1), never the cores of the machine that submits them."""
    if config.omp_nthreads:
        return config.omp_nthreads
    plugin, plugin_args = plugin_settings(config)
    if plugin != "MultiProc":
        return scheduler.job_cpus(plugin_args)
    return training_threads(config)


def training_threads(config: RunConfig) -> int:
    """Torch threads of group training, which runs in this process whatever the plugin."""
    return config.omp_nthreads or max(1, min(8, config.nprocs))


def participant_workflow(config: RunConfig, assignments, template, plans, device: str, **options: Any):
    """init_participant_wf with the run's settings (output folder, provenance, threads, seed,
    brain mask, volumes); both levels build their graph through it."""
    return init_participant_wf(
        assignments=assignments,
        out_dir=config.output_dir,
        template=template,
        plans=plans,
        provenance=provenance(config),
        device=device,
        omp_nthreads=omp_threads(config),
        seed=config.seed,
        brain_mask=config.brain_mask,
        volumes=config.volumes,
        **options,
    )


def execute(workflow: Any, config: RunConfig) -> None:
    """Run with MultiProc (or the --use-plugin settings); crashes go to OUT/logs as text, a
    progress line per image and stage to the console (console.Progress)."""
    workflow.base_dir = str(config.work_dir / "nipype")
    plugin, plugin_args = plugin_settings(config)
    workflow.config["execution"].update(execution_settings(config, plugin))
    scheduler.set_environment(plugin)
    before = set(OutputLayout(config.output_dir).crash_files())
    on_stop = (lambda: scheduler.cancel_slurm_jobs(config.run_id)) if plugin == "SLURM" else (lambda: None)
    if not plugin.endswith("Graph"):  # graph plugins submit the whole graph at once: no per-node status
        plugin_args = {**plugin_args, "status_callback": console.Progress(workflow)}
    try:
        with stop_action(on_stop):
            workflow.run(plugin=console.node_runner(plugin, plugin_args), plugin_args=plugin_args)
    except RuntimeError as err:
        crashes = sorted(set(OutputLayout(config.output_dir).crash_files()) - before)
        listing = "\n  ".join(crash_summary(c) for c in crashes) or "(no crash file written)"
        raise WorkflowFailed(
            f"{len(crashes)} step(s) failed; each line names the image's node, the error and the crash file "
            f"that holds its traceback:\n  {listing}"
        ) from err


def execution_settings(config: RunConfig, plugin: str) -> dict[str, Any]:
    """Nipype's execution settings for this run: crashes as text in OUT/logs, every node's outputs
    kept, and a short scheduler round for local plugins (LOCAL_POLL_SECONDS); a cluster plugin
    polls its scheduler at that rate, so it keeps Nipype's 2 s."""
    settings = {
        "crashdump_dir": str(derivatives.logs_dir(config.output_dir)),
        "crashfile_format": "txt",
        "stop_on_first_crash": False,
        "remove_unnecessary_outputs": False,
    }
    if plugin in LOCAL_PLUGINS:
        settings["poll_sleep_duration"] = LOCAL_POLL_SECONDS
    return settings


def crash_summary(crash: Path) -> str:
    """'node: last error line (crash file)': what the console shows instead of a traceback."""
    lines = crash.read_text(errors="replace").splitlines()
    node = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Node:")), crash.stem)
    errors = [
        line.strip()
        for line in lines
        if line.strip()
        and not line.startswith((" ", "\t", "Traceback"))
        and ("Error" in line.split(":", 1)[0] or "Exception" in line.split(":", 1)[0])
    ]
    return f"{node}: {errors[-1] if errors else 'see the crash file'} ({crash})"


def plugin_settings(config: RunConfig) -> tuple[str, dict[str, Any]]:
    """The Nipype plugin and its arguments: a --use-plugin file's settings are laid over ours, so
    a MultiProc file that sets only n_procs keeps the forkserver start method; SLURM jobs are
    tagged with the run's id (workflows/scheduler.py)."""
    plugin, given = read_plugin_file(config.use_plugin) if config.use_plugin else ("MultiProc", {})
    if plugin == "SLURM":
        return plugin, scheduler.tag_slurm_jobs(given, config.run_id)
    if plugin != "MultiProc":
        return plugin, dict(given)
    args: dict[str, Any] = {"n_procs": config.nprocs, **MULTIPROC_DEFAULTS}
    if config.mem_gb:
        args["memory_gb"] = config.mem_gb
    return plugin, {**args, **given}


def with_recorded_sites(config: RunConfig, assignments: list[SiteAssignment]) -> list[SiteAssignment]:
    """Prefer the labels the group level recorded in OUT/sites.tsv (the model was trained on
    those); images it did not see keep their freshly inferred label."""
    table = OutputLayout(config.output_dir).sites_table
    if not table.is_file():
        return assignments
    recorded = {row["path"]: row for row in read_tsv(table)}
    result = []
    for a in assignments:
        row = recorded.get(a.image.relpath)
        if row and row["site"] != a.site:
            a = SiteAssignment(
                a.image, row["site"], row["provenance"], row["evidence"], a.scanner, a.protocol, a.warnings
            )
        result.append(a)
    return result


# ----------------------------------------------------------------------------- levels
def run_participant(config: RunConfig, images: list[ImageRecord], site_inventory: SiteInventory) -> int:
    device = resolve_device(config)
    check_available(config.brain_mask)  # a missing deepbet fails before any work, naming the fix
    assignments = with_recorded_sites(config, site_inventory(config, images, write=False))
    present = sorted({a.image.suffix for a in assignments})
    plans, contracts = harmonization_plans(config, present)
    template = template_files(config, choose_template(config, contracts))
    for contrast, contract in contracts.items():
        check_grid(contract, Path(plans[contrast].bundle_dir) / "model.json", template.mask)
    if not plans:
        LOGGER.warning(
            "No model bundle found (--model, or %s): writing preprocessed outputs only. To train one: "
            "`bids_harmonize %s %s group`.",
            OutputLayout(config.output_dir).models,
            config.bids_dir,
            config.output_dir,
        )
    for contrast in sorted(set(present) - set(plans)):
        if plans:
            LOGGER.warning("%s: no model bundle for this contrast; its images are preprocessed only.", contrast)
    workflow, not_harmonized = participant_workflow(config, assignments, template, plans, device)
    for message in not_harmonized:
        LOGGER.warning(message)
    started = time.time()
    try:
        execute(workflow, config)
    finally:  # a failed run still documents itself: every participant gets a report saying what failed
        reports = write_reports(config, template, assignments, plans, not_harmonized, started)
    harmonized = sum(a.image.suffix in plans for a in assignments) - len(not_harmonized)
    console.result(f"Preprocessed {len(assignments)} image(s), harmonized {harmonized}; outputs in {config.output_dir}")
    console.result("Reports: " + ", ".join(str(p) for p in reports))
    if config.export_bids:
        from bids_harmonize.bids.export import export_bids

        placed, kept = export_bids(config.bids_dir, config.output_dir, config.export_bids, images)
        console.result(
            f"Exported a BIDS dataset to {config.export_bids}: {placed} harmonized image(s), {kept} kept raw"
        )
    return 0


def run_group(config: RunConfig, images: list[ImageRecord], site_inventory: SiteInventory) -> int:
    from bids_harmonize.model.launch import check_processes

    device = resolve_device(config)
    check_processes(device, config.training.processes)
    assignments = site_inventory(config, images)
    template = template_files(config, group_template(config, images))
    missing = [a for a in assignments if not template_preproc_path(config, template, a.image).is_file()]
    if missing:
        LOGGER.info("preprocessing %d image(s) not yet preprocessed", len(missing))
        check_available(config.brain_mask)
        workflow, _ = participant_workflow(config, missing, template, {}, device, name="group_preproc_wf")
        execute(workflow, config)
    threads = training_threads(config)
    trained = [
        train_contrast(
            config,
            contrast,
            assignments,
            template,
            lambda image: template_preproc_path(config, template, image),
            device,
            threads,
        )
        for contrast in config.contrasts
    ]
    console.result("\n".join(line for line in trained if line))
    console.result("Report: " + ", ".join(str(p) for p in write_reports(config, template)))
    return 0


# ----------------------------------------------------------------------------- reports
def write_reports(
    config: RunConfig,
    template: TemplateFiles,
    assignments: list[SiteAssignment] | None = None,
    plans: dict[str, HarmonizationPlan] | None = None,
    not_harmonized: list[str] | None = None,
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
        ModelUse(c, Path(plans[c].bundle_dir), plans[c].target_site, plans[c].style)
        if c in plans
        else ModelUse(c, path)
        for c, path in bundles.items()
        if config.analysis_level == "group" or c in plans
    )
    facts = MethodsFacts(
        tuple(config.contrasts),
        template.name,
        template.resolution,
        config.site_granularity,
        models,
        dict(derivatives.software_versions()),
        _mask_method(config.brain_mask),
    )
    hint = f"--model {config.model}" if config.model else f"none in {OutputLayout(config.output_dir).models}"
    try:
        covariates = read_covariates(config.bids_dir, config.covariates)
    except CovariateError:  # already refused before the run (cli/run.py)
        covariates = None
    reasons = skip_reasons(assignments or [], set(plans), not_harmonized or [], hint)
    return build(
        out_dir=config.output_dir,
        template=template,
        facts=facts,
        bundles=bundles,
        assignments=assignments or [],
        reasons=reasons,
        since=since,
        group=config.analysis_level == "group" or bool(plans),
        covariates=covariates,
    )


def _mask_method(method: str) -> dict[str, Any]:
    """The brain mask method for the methods text; {} (the template mask's wording) when unknown."""
    try:
        return dict(method_record(method))
    except BrainMaskUnavailable:
        return {}


def template_preproc_path(config: RunConfig, template: TemplateFiles, image: ImageRecord) -> Path:
    return OutputLayout(config.output_dir).output(image, "template_preproc", template.name, template.resolution)
