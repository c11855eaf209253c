"""A picture of one subject as every site images it (ground-truth renders, template grid)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nb
import numpy as np
from matplotlib.figure import Figure

from bids_harmonize.simulate.dataset import SimulatedDataset


def _site_title(dataset: SimulatedDataset, site_label: str, contrast: str) -> str:
    site = dataset.site(site_label)
    protocol = site.protocols[contrast]
    voxel = "x".join(f"{v:g}" for v in protocol.voxel_size_mm)
    scanner = f"{site.manufacturer} {site.model} {site.field_strength_t:g} T"
    return f"{site_label}: {scanner}\n{contrast} {protocol.sequence.name}, {voxel} mm"


def plot_site_renders(dataset: SimulatedDataset, out_png: Path | str, subject: str | None = None) -> Path:
    """Middle axial and mid-sagittal slices of `subject` (default: the first) rendered at every
    site, one column per site and two rows per contrast. Each panel is windowed from its
    background to its own 99.5th percentile inside the brain, so contrast, not scale, is compared."""
    subject = subject or dataset.subjects[0]
    truth = dataset.ground_truth
    brain = np.asarray(nb.load(truth.mask_path(subject)).dataobj) > 0
    n_rows, n_columns = 2 * len(dataset.contrasts), len(dataset.sites)
    figure = Figure(figsize=(3.2 * n_columns, 3.0 * n_rows), layout="constrained")
    axes = figure.subplots(n_rows, n_columns, squeeze=False)
    centre = np.round(np.argwhere(brain).mean(axis=0)).astype(int)
    for row, contrast in enumerate(dataset.contrasts):
        for column, site in enumerate(dataset.sites):
            image = np.asarray(nb.load(truth.render_path(subject, site.label, contrast)).dataobj)
            low, high = image.min(), np.percentile(image[brain], 99.5)
            views = (image[:, :, centre[2]].T, image[centre[0], :, :].T)
            for offset, view in enumerate(views):
                axis = axes[2 * row + offset, column]
                axis.imshow(view, cmap="gray", vmin=low, vmax=high, origin="lower")
                axis.set_axis_off()
            axes[2 * row, column].set_title(_site_title(dataset, site.label, contrast), fontsize=8)
    figure.suptitle(f"sub-{subject} at every simulated site (axial and sagittal, noise-free ground truth)", fontsize=10)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_png, dpi=72)
    return out_png
