"""simulate_dataset: the whole multi-site phantom, BIDS raw data plus ground truth."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import nibabel as nb
import numpy as np
from numpy.typing import NDArray

from bids_harmonize.simulate.anatomy import load_template_anatomy
from bids_harmonize.simulate.bids_io import (
    GENERATOR,
    GroundTruthLayout,
    raw_image_path,
    site_row,
    write_raw_dataset_files,
    write_raw_image,
)
from bids_harmonize.simulate.render import (
    acquire,
    add_rician_noise,
    noise_sigma,
    render_ground_truth,
    render_native_truth,
)
from bids_harmonize.simulate.sites import Site, choose_sites
from bids_harmonize.simulate.subjects import make_subject

CONTRASTS = ("T1w", "T2w")
# Noise streams of `noisy_render` used by the benchmarks and the demo: a template-grid "scan" at
# the subject's own site, and a "rescan" at the target site (independent noise).
SCAN_STREAM, RESCAN_STREAM = 99, 199
GROUND_TRUTH_DIR = Path("derivatives") / "ground_truth"


@dataclass(frozen=True)
class SimulatedDataset:
    """Where a simulated dataset lies and what it holds."""

    bids_root: Path
    ground_truth_root: Path
    sites: tuple[Site, ...]
    site_of_subject: dict[str, str]
    contrasts: tuple[str, ...]
    resolution_mm: float
    seed: int

    @property
    def subjects(self) -> tuple[str, ...]:
        return tuple(self.site_of_subject)

    def site(self, label: str) -> Site:
        return next(site for site in self.sites if site.label == label)

    def site_table(self) -> list[dict[str, object]]:
        """One row per site, as in the ground truth's sites.tsv."""
        return [site_row(site, self.contrasts) for site in self.sites]

    def native_image(self, subject: str, contrast: str = "T1w") -> Path:
        """The subject's scan at its own site (BIDS raw, native grid)."""
        return raw_image_path(self.bids_root, subject, contrast)

    @property
    def ground_truth(self) -> GroundTruthLayout:
        return GroundTruthLayout(self.ground_truth_root, self.resolution_mm)

    def noisy_render(self, subject: str, site_label: str, contrast: str = "T1w", *, stream: int) -> NDArray:
        """The subject's ground-truth render at `site_label` plus that site's Rician noise, drawn
        from the stream (seed, subject index, `stream`): different streams are independent
        realisations, e.g. a scan and its rescan."""
        index = list(self.site_of_subject).index(subject)
        render = np.asarray(nb.load(self.ground_truth.render_path(subject, site_label, contrast)).dataobj)
        site = self.site(site_label)
        rng = np.random.default_rng([self.seed, index, stream])
        return add_rician_noise(render, noise_sigma(site), rng, offset=site.intensity_offset)

    def native_truth(
        self, subject: str, target_site: str, contrast: str = "T1w"
    ) -> tuple[nb.Nifti1Image, nb.Nifti1Image]:
        """The subject rendered by `target_site` on its own scan's native grid, and the brain mask
        there (see render_native_truth). The subject is drawn again from its seeded stream."""
        index = list(self.site_of_subject).index(subject)
        template = load_template_anatomy(self.resolution_mm)
        drawn = make_subject(template, subject, np.random.default_rng([self.seed, index]))
        scanned_at = self.site(self.site_of_subject[subject])
        return render_native_truth(drawn, scanned_at, self.site(target_site), contrast, template.grid)


def _written_by_simulator(out_dir: Path) -> bool:
    try:
        description = json.loads((out_dir / "dataset_description.json").read_text())
    except (OSError, ValueError):
        return False
    return any(entry.get("Name") == GENERATOR for entry in description.get("GeneratedBy", []))


def _prepare_output(out_dir: Path, overwrite: bool) -> None:
    """Refuse to write into a non-empty folder, except over an earlier simulation when asked."""
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return
    earlier = _written_by_simulator(out_dir)
    if overwrite and earlier:
        shutil.rmtree(out_dir)
        return
    hint = ", or pass overwrite=True (--overwrite) to replace this earlier simulation" if earlier else ""
    raise FileExistsError(f"{out_dir} is not empty. Choose an empty folder{hint}.")


def simulate_dataset(
    out_dir: Path | str,
    n_sites: int = 3,
    n_subjects: int = 8,
    contrasts: tuple[str, ...] = ("T1w",),
    resolution_mm: float = 2.0,
    seed: int = 0,
    *,
    overwrite: bool = False,
) -> SimulatedDataset:
    """Simulate `n_subjects` subjects, each scanned at one of `n_sites` sites (round-robin), and
    render every subject at every site as ground truth. Same seed, same arrays.

    Subjects are drawn from streams keyed by (seed, subject index) and scans by (seed, subject
    index, contrast), so adding subjects, sites or a contrast leaves the others unchanged.
    """
    unknown = set(contrasts) - set(CONTRASTS)
    if unknown or not contrasts:
        raise ValueError(f"contrasts must be among {CONTRASTS}, got {contrasts}")
    if n_subjects < 1 or resolution_mm <= 0:
        raise ValueError("n_subjects must be >= 1 and resolution_mm > 0")
    out_dir = Path(out_dir)
    _prepare_output(out_dir, overwrite)

    template = load_template_anatomy(float(resolution_mm))
    sites = [site.at_resolution(resolution_mm) for site in choose_sites(n_sites, seed)]
    width = max(2, len(str(n_subjects)))
    ground_truth = GroundTruthLayout(out_dir / GROUND_TRUTH_DIR, resolution_mm)
    subjects, site_of_subject = [], {}
    for index in range(n_subjects):
        subject = make_subject(template, f"{index + 1:0{width}d}", np.random.default_rng([seed, index]))
        own_site = sites[index % len(sites)]
        for contrast in contrasts:
            scan_rng = np.random.default_rng([seed, index, 1 + CONTRASTS.index(contrast)])
            write_raw_image(
                out_dir,
                subject,
                own_site,
                contrast,
                acquire(subject, own_site, contrast, template.grid, scan_rng),
            )
            for site in sites:
                render = render_ground_truth(subject, site, contrast, template.grid)
                ground_truth.write_render(subject.label, site.label, contrast, render, template.grid)
        ground_truth.write_subject(subject, template.grid)
        subjects.append(subject)
        site_of_subject[subject.label] = own_site.label

    write_raw_dataset_files(out_dir, seed, subjects)
    ground_truth.write_dataset_files(sites, subjects, tuple(contrasts), site_of_subject)
    return SimulatedDataset(
        out_dir,
        ground_truth.root,
        tuple(sites),
        site_of_subject,
        tuple(contrasts),
        float(resolution_mm),
        seed,
    )
