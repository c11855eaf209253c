"""``bids_harmonize BIDS_DIR OUTPUT_DIR {participant,group}``: the entry point.

Parses and validates the command line, records the resolved configuration under OUT/logs/
(even when the run then fails), and hands over to the level's runner. A failure we name (a
``bids_harmonize.errors.HarmonizeError``) prints its message, which names the fix, and exits
with the BIDS Apps code its class carries; anything else is exit 1 with the traceback kept in
OUT/logs/crash-<run_id>.txt.
"""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path

from bids_harmonize import console
from bids_harmonize.bids import derivatives
from bids_harmonize.bids.covariates import read_covariates
from bids_harmonize.bids.layout import discover_images
from bids_harmonize.bids.outputs import OutputLayout
from bids_harmonize.bids.records import ImageRecord
from bids_harmonize.bids.screen import image_problem, screen_images
from bids_harmonize.bids.selection import SelectionError, load_filter_file
from bids_harmonize.cli.parser import CLIError, parse_args
from bids_harmonize.config import RunConfig
from bids_harmonize.console import LogSettings
from bids_harmonize.errors import ExitCode, HarmonizeError
from bids_harmonize.runtime import install_signal_handlers, participant_locks, remove_stale_temporaries
from bids_harmonize.sites import SiteAssignment, assign_sites, load_overrides, load_policy
from bids_harmonize.sites.table import COLUMNS, assignment_row, format_table, sites_dictionary, summary_rows

LOGGER = logging.getLogger("bids_harmonize")


def discover(config: RunConfig) -> list[ImageRecord]:
    found = discover_images(
        config.bids_dir,
        database_root=config.database_dir,
        validate=not config.skip_bids_validation,
        participant_labels=config.participant_labels,
        session_labels=config.session_labels,
        contrasts=config.contrasts,
        filters=load_filter_file(config.bids_filter_file),
        filter_source=str(config.bids_filter_file or "--bids-filter-file"),
    )
    # What the selection matched but discovery left out (0-byte, broken link, duplicate, ...),
    # not the invalid sidecars elsewhere in the dataset.
    reasons = [s for s in found.skipped if ": invalid sidecar, left out" not in s]
    if not found.images and reasons:
        raise SelectionError(
            "None of the selected images can be used; each was left out for the reason given, with its fix:\n  "
            + "\n  ".join(reasons[:20])
            + ("\n  ..." if len(reasons) > 20 else "")
        )
    if not found.images:
        raise SelectionError(
            f"No {'/'.join(config.contrasts)} images in {config.bids_dir} match the selection "
            f"(participants: {config.participant_labels or 'all'}, sessions: {config.session_labels or 'all'}, "
            f"filters: {config.bids_filter_file or 'none'}). Fix: check the labels and filter file; anatomical "
            "images must be named like sub-<label>[_ses-<label>]_T1w.nii.gz under anat/."
        )
    LOGGER.info(
        "found %d image(s) of %d participant(s)%s",
        len(found.images),
        len({i.subject for i in found.images}),
        " (cached index)" if found.reused_index else "",
    )
    return found.images


def site_inventory(config: RunConfig, images: list[ImageRecord], write: bool = True) -> list[SiteAssignment]:
    """Assign sites, log what needs the user's attention, and (group level) write OUT/sites.tsv
    + sites.json. Participant runs do not write them: parallel runs would overwrite each other."""
    overrides = load_overrides(config.bids_dir, images, config.site_table)
    for row in overrides.unmatched_rows:
        LOGGER.warning("site table row matches no selected image: %s", row)
    policy = load_policy(config.site_policy)
    assignments = assign_sites(images, config.site_granularity, policy, overrides)
    for a in assignments:
        for message in a.warnings:
            LOGGER.warning(message)
    if not write:
        return assignments
    derivatives.write_site_inventory(
        config.output_dir, [assignment_row(a) for a in assignments], COLUMNS, sites_dictionary(assignments)
    )
    return assignments


def run_sites_only(config: RunConfig) -> int:
    assignments = site_inventory(config, discover(config))
    n_sites = len({a.site for a in assignments})
    console.result(f"\n{n_sites} site(s) at granularity '{config.site_granularity}' ({len(assignments)} images):\n")
    console.result(format_table(summary_rows(assignments)))
    layout = OutputLayout(config.output_dir)
    console.result(f"\nWrote {layout.sites_table} and {layout.sites_dictionary}")
    return ExitCode.OK


def usable_images(config: RunConfig, images: list[ImageRecord]) -> list[ImageRecord]:
    """Leave out images that preprocessing could only crash on (each named, with the fix)."""
    if config.target_style.startswith("reference:"):
        reference = Path(config.target_style.split(":", 1)[1])
        problem = image_problem(reference)
        if problem:
            raise CLIError(f"--target-style reference image {reference} {problem}.", ExitCode.INPUT_MISSING)
    screened = screen_images(images, workers=config.nprocs)
    if not screened.usable:
        raise SelectionError("None of the selected images can be processed:\n  " + "\n  ".join(screened.rejected))
    return screened.usable


def run_level(config: RunConfig) -> int:
    if config.analysis_level == "group" and config.sites_only:
        return run_sites_only(config)
    from bids_harmonize.levels.run import resolve_device, run_group, run_participant  # heavy: nipype, torch

    runner = run_group if config.analysis_level == "group" else run_participant
    resolve_device(config)  # an asked-for GPU that is absent fails before anything else
    read_covariates(config.bids_dir, config.covariates)  # so does a --covariates name that is no column
    images = discover(config)
    whole = config.analysis_level == "group" or not config.participant_labels
    with participant_locks(
        OutputLayout(config.output_dir).locks, None if whole else [f"sub-{i.subject}" for i in images]
    ):
        for path in remove_stale_temporaries(config.output_dir, skip=config.work_dir):
            LOGGER.info("removed %s, left by an interrupted run", path)
        return runner(config, usable_images(config, images), site_inventory)


def main(argv: list[str] | None = None) -> int:
    command_line = ["bids_harmonize", *(sys.argv[1:] if argv is None else argv)]
    try:
        config = RunConfig.from_namespace(parse_args(argv), command_line)
    except CLIError as err:
        console.error(f"error: {err}")
        return err.exit_code
    console.configure(LogSettings(config.verbosity, str(OutputLayout(config.output_dir).node_log(config.run_id))))
    install_signal_handlers()
    try:
        config.output_dir.mkdir(parents=True, exist_ok=True)
        derivatives.write_run_config(config.output_dir, config.to_dict(), config.run_id)
        derivatives.write_dataset_description(config.output_dir, config.bids_dir)
        return int(run_level(config))
    except HarmonizeError as err:  # a failure we name: its message says the fix, its class the code
        console.error(f"error: {err}")
        return int(err.exit_code)
    except Exception as err:
        text = traceback.format_exc()
        try:
            where = f"Full traceback: {derivatives.write_crash_report(config.output_dir, config.run_id, text)}"
        except OSError as write_error:  # the output folder itself failed: the traceback goes to stderr
            where = f"Could not write the crash report ({write_error}); traceback:\n{text}"
        console.error(f"error: {err.__class__.__name__}: {err}\n{where}")
        return int(ExitCode.FAILURE)


if __name__ == "__main__":
    sys.exit(main())
