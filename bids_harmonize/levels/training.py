"""Group-level training of one contrast: template-space images into the volume store, then MURD.

Each preprocessed template-space image is scaled to the model range and written once into the
contrast's store in the work dir (model/store.py), with its intensity scale and brain histogram
counts; a later group run appends only the images it has not stored yet. Training then reads
batches from the store, in this process or in `--train-processes` torchrun processes, and
continues from the last checkpoint when the same command runs again (model/checkpoint.py).
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import nibabel as nb
import numpy as np

from bids_harmonize.bids import derivatives
from bids_harmonize.bids.outputs import OutputLayout
from bids_harmonize.bids.records import ImageRecord
from bids_harmonize.config import RunConfig
from bids_harmonize.model.slices import model_image_size
from bids_harmonize.model.store import VolumeStore
from bids_harmonize.preproc.operations import (
    IntensityScale,
    intensity_convention,
    median_scale,
    robust_scale,
)
from bids_harmonize.qc.metrics import brain_counts, training_histogram
from bids_harmonize.sites import UNKNOWN_SITE, SiteAssignment
from bids_harmonize.workflows.participant import TemplateFiles

LOGGER = logging.getLogger("bids_harmonize")
SLICE_AXIS = 2  # axial slices of the template grid


def store_image(store: VolumeStore, path: Path, key: str, mask: np.ndarray) -> int:
    """The store row of one template-space image. The stamp (size and modification time) finds
    it without reading the file; otherwise the image is read and scaled, and the store either
    appends it or, when the values under this key are unchanged, records the new stamp."""
    stat = path.stat()
    stamp = f"{stat.st_size}-{stat.st_mtime_ns}"
    row = store.find(key, stamp)
    if row is None:
        data = np.asarray(nb.load(path).dataobj, np.float32)
        scale = robust_scale(data, mask)
        volume = scale.to_model(data)
        extra = {"scale": scale.as_dict(), "brain_counts": brain_counts(volume, mask).tolist()}
        row = store.add(key, stamp, np.moveaxis(volume, SLICE_AXIS, 0), extra)
    return row


def site_signatures(store: VolumeStore, rows: list[int], usable: list[SiteAssignment]) -> dict[str, dict]:
    """Per site, what the model card keeps: image count, typical scale, brain histogram, evidence."""
    scales: dict[str, list[IntensityScale]] = defaultdict(list)
    counts: dict[str, list[np.ndarray]] = defaultdict(list)
    for row, assignment in zip(rows, usable):
        extra = store.entries[row].extra
        scales[assignment.site].append(IntensityScale(**extra["scale"]))
        counts[assignment.site].append(np.asarray(extra["brain_counts"]))
    images = Counter(a.site for a in usable)
    return {
        site: {
            "n_images": images[site],
            "intensity_scale": median_scale(scales[site]).as_dict(),
            "brain_histogram": training_histogram(counts[site]),
            "evidence": next(a.evidence for a in usable if a.site == site),
        }
        for site in sorted(images)
    }


def anchor_covariates(
    config: RunConfig, usable: list[SiteAssignment], sites: list[str]
) -> dict[str, list[float | None]] | None:
    """The covariates the site anchors are adjusted for (--covariates, default age and sex where
    participants.tsv has them), one value per training image; None, saying why, when there are
    none or they cannot be told apart from site."""
    from bids_harmonize.bids.covariates import read_covariates
    from bids_harmonize.model.anchors import anchor_design, covariate_matrix

    covariates = read_covariates(config.bids_dir, config.covariates)
    columns = covariates.columns([(a.image.subject, a.image.session) for a in usable])
    if not columns:
        LOGGER.info("site anchors: no covariate varies among the training images; pooled per site")
        return None
    try:
        _, rows = anchor_design(
            [sites.index(a.site) for a in usable], covariate_matrix(columns, len(usable)), len(sites)
        )
    except ValueError as err:
        LOGGER.warning(
            "site anchors NOT adjusted for %s: %s. They are pooled per site, so a site whose subjects differ "
            "(older, say) has that difference harmonized away. Fix: add training images that break the link, "
            "or choose other columns with --covariates.",
            ", ".join(columns),
            err,
        )
        return None
    counted = int(rows.sum())
    left_out = (
        f"; {len(usable) - counted} lack a value: they train but do not set the anchors"
        if counted < len(usable)
        else ""
    )
    LOGGER.info("site anchors adjusted for %s (%d training images%s)", ", ".join(columns), counted, left_out)
    return columns


def train_contrast(
    config: RunConfig,
    contrast: str,
    assignments: list[SiteAssignment],
    template: TemplateFiles,
    preproc_path: Callable[[ImageRecord], Path],
    device: str,
    threads: int,
) -> str:
    """Train the contrast's bundle into OUT/models/<contrast> from each image's template-space
    preprocessed file (`preproc_path`); returns a line for the user."""
    import torch

    from bids_harmonize.model import preset_config
    from bids_harmonize.model.card import InputContract
    from bids_harmonize.model.launch import TrainingJob, launch
    from bids_harmonize.model.recipes import RECIPES, recipe_for

    usable = [a for a in assignments if a.image.suffix == contrast and a.site != UNKNOWN_SITE]
    sites = sorted({a.site for a in usable})
    if not sites:
        LOGGER.info("%s: no images of a known site; nothing to train.", contrast)
        return ""
    if len(sites) < 2:
        LOGGER.warning(
            "%s: %d site(s) with images; harmonization needs at least 2. Not training. Fix: images of one scanner "
            "have nothing to harmonize; if they come from several, see how they were grouped with `bids_harmonize "
            "%s %s group --sites-only`, then split them with --site-granularity protocol or name each image's site "
            "with --site-table.",
            contrast,
            len(sites),
            config.bids_dir,
            config.output_dir,
        )
        return ""
    mask = np.asarray(nb.load(template.mask).dataobj) > 0
    work = config.work_dir / "training" / contrast
    store = VolumeStore.open(work / "store", np.moveaxis(mask, SLICE_AXIS, 0).shape)
    before = len(store)
    rows = []
    for a in usable:
        path = preproc_path(a.image)
        rows.append(store_image(store, path, str(path.relative_to(config.output_dir)), mask))
    LOGGER.info(
        "%s: volume store %s holds %d volumes (%d added now, %.2f GB)",
        contrast,
        store.folder,
        len(store),
        len(store) - before,
        store.nbytes / 1e9,
    )

    training = config.training
    recipe = RECIPES[training.recipe] if training.recipe != "auto" else recipe_for(torch.device(device).type)
    network = preset_config(training.preset or recipe.preset, len(sites), image_size=model_image_size(mask))
    iterations = training.iterations or recipe.iterations
    options = recipe.train_config(
        iterations=iterations,
        batch_size=training.batch_size or recipe.batch_size,
        seed=config.seed,
        checkpoint_every=max(1, iterations // 10 // 10) * 10,
        log_every=10,
    )
    processes = training.processes
    out = OutputLayout(config.output_dir).model(contrast)
    job = TrainingJob(
        store=str(store.folder),
        rows=rows,
        site_labels=[sites.index(a.site) for a in usable],
        site_names=sites,
        model_config=network.to_dict(),
        train_config=options.to_dict(),
        out_dir=str(out),
        work_dir=str(work),
        device=device,
        threads=max(1, threads // processes),
        site_signatures=site_signatures(store, rows, usable),
        progress=config.verbosity > 0,
        brain_mask=str(template.mask),
        anchor_covariates=anchor_covariates(config, usable, sites),
        input_contract=InputContract(
            contrast=contrast,
            template=template.name,
            resolution=template.resolution,
            grid_shape=mask.shape,
            image_size=network.image_size,
            slice_axis=SLICE_AXIS,
            intensity=intensity_convention(),
        ).to_dict(),
    )
    LOGGER.info(
        "training MURD for %s on %d images of %d sites (preset %s, %d iterations, %d process(es), %s)",
        contrast,
        len(rows),
        len(sites),
        network.preset,
        options.iterations,
        processes,
        device,
    )
    bundle_dir = launch(job.write(work / "job.json"), processes)
    log = work / "train_log.jsonl"
    if log.is_file():
        derivatives.atomic_copy(log, OutputLayout(config.output_dir).training_log(contrast, config.run_id))
    return f"{contrast}: model bundle for sites {', '.join(sites)} in {bundle_dir}"
