"""Tissue volumes as a multi-site study measures them: ANTs Atropos on the brain.

The downstream benchmark (benchmarks/downstream.py) and the site-effect diagnostics measure
every image with this one segmenter. Atropos (Avants et al., Neuroinformatics 2011; antspyx) is
what ANTs-based pipelines (antsCorticalThickness, sMRIPrep's tissue step) run: a Gaussian mixture
with a Markov random field prior, initialised by k-means. Volumes are the sums of the posterior
probabilities (partial-volume aware, as FSL FAST's pve volumes), in millilitres.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

TISSUES = ("CSF", "GM", "WM")
TISSUE_NAMES = {"CSF": "cerebrospinal fluid", "GM": "grey matter", "WM": "white matter"}
VOLUME_COLUMNS = ("tissue", "volume_ml")  # the per-image volume tables (participant level)
# k-means initialisation orders the classes by mean intensity.
DARK_TO_BRIGHT = {"T1w": ("CSF", "GM", "WM"), "T2w": ("WM", "GM", "CSF")}
MRF_SMOOTHING = 0.1  # Atropos' default-like MRF weight; radius one voxel
ITERATIONS = 5  # EM iterations; posteriors change by < 0.1 % of a volume after 3 on the phantom


@dataclass(frozen=True)
class SegmenterInfo:
    """What measured the volumes: written beside every volume table."""

    name: str = "ANTs Atropos (antspyx)"
    initialisation: str = "kmeans[3]"
    mrf: str = f"[{MRF_SMOOTHING},1x1x1]"
    iterations: int = ITERATIONS

    @property
    def version(self) -> str:
        from importlib.metadata import version

        return version("antspyx")

    def record(self) -> dict[str, Any]:
        """The segmenter as the volume tables' JSON sidecars name it (BIDS-style CamelCase keys)."""
        return {
            "Name": self.name,
            "Version": self.version,
            "Initialisation": self.initialisation,
            "MRF": self.mrf,
            "Iterations": self.iterations,
            "Volumes": "sum of the posterior probabilities of each class inside the brain mask (partial-volume aware)",
            "Rescaling": "image mapped to its 1st-99th brain percentiles and clipped there before segmenting",
        }


def tissue_volumes(image: NDArray, mask: NDArray, voxel_volume_ml: float, contrast: str = "T1w") -> dict[str, float]:
    """CSF, GM and WM volumes (ml) of `image` inside the brain `mask`.

    The image is rescaled to its 1st-99th brain percentiles (and clipped there) first, so its units (a vendor's 12-bit
    range, z-scores, Nyul's scale) do not matter; only contrast and distribution shape do.
    """
    import ants

    brain = np.asarray(mask, dtype=bool)
    if brain.sum() < 1000:
        raise ValueError(f"brain mask holds {int(brain.sum())} voxels; too few to segment")
    values = np.asarray(image, dtype=np.float32)
    low, high = np.percentile(values[brain], (1.0, 99.0))
    if not np.isfinite([low, high]).all() or high <= low:
        raise ValueError("image is constant or not finite inside the brain mask; cannot segment")
    # Clipped: a few bright outliers (vessels, a noise spike) would otherwise take a k-means class.
    scaled = np.where(brain, np.clip((values - low) / (high - low), 0.0, 1.0), 0.0).astype(np.float32)
    # Atropos segments only the mask's voxels; cropping to them first saves 27-38 % of its time
    # and moves no volume by more than 0.3 ml (docs/usage.md, "Tissue volumes of every image").
    box = _bounding_box(brain, margin=2)
    scaled, brain = scaled[box], brain[box]
    posteriors = _atropos_posteriors(ants, scaled, brain)
    return {
        tissue: float(posterior[brain].sum() * voxel_volume_ml)
        for tissue, posterior in zip(DARK_TO_BRIGHT[contrast], posteriors, strict=True)
    }


def _bounding_box(mask: NDArray, margin: int) -> tuple[slice, ...]:
    """The mask's bounding box grown by `margin` voxels (clipped to the array)."""
    found = np.argwhere(mask)
    low, high = np.maximum(found.min(axis=0) - margin, 0), found.max(axis=0) + margin + 1
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))


def _atropos_posteriors(ants: Any, scaled: NDArray, brain: NDArray) -> list[NDArray]:
    """Atropos' posterior maps, darkest class first. antspyx writes them to files in the temporary
    folder and leaves them there; they are read back inside a folder of our own that is removed
    afterwards, so a run over thousands of images (or a Slurm task) leaves no files behind."""
    previous = tempfile.tempdir
    with tempfile.TemporaryDirectory(prefix="atropos-") as scratch:
        tempfile.tempdir = scratch
        try:
            result = ants.atropos(
                a=ants.from_numpy(scaled),
                x=ants.from_numpy(brain.astype(np.float32)),
                i="kmeans[3]",
                m=f"[{MRF_SMOOTHING},1x1x1]",
                c=f"[{ITERATIONS},0]",
                verbose=0,
            )
            return [np.array(probability.numpy()) for probability in result["probabilityimages"]]
        finally:
            tempfile.tempdir = previous


def true_volumes(probseg: dict[str, NDArray], voxel_volume_ml: float) -> dict[str, float]:
    """Ground-truth volumes (ml) from tissue probability maps, e.g. the simulator's probsegs."""
    return {tissue: float(np.asarray(probseg[tissue], dtype=np.float64).sum() * voxel_volume_ml) for tissue in TISSUES}


def volume_rows(volumes: dict[str, float]) -> list[dict[str, str]]:
    """The rows of a per-image volume table: one per tissue (TISSUES order), volume in ml."""
    return [{"tissue": tissue, "volume_ml": f"{volumes[tissue]:.3f}"} for tissue in TISSUES]


def read_volume_table(path: str | Path) -> dict[str, float]:
    """tissue -> volume (ml) from a per-image volume table (VOLUME_COLUMNS); raises ValueError
    naming the file when a tissue is missing or a volume is not a number."""
    import csv

    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    volumes = {}
    for row in rows:
        try:
            volumes[row["tissue"]] = float(row["volume_ml"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: not a volume table with columns {VOLUME_COLUMNS} ({err})") from err
    missing = [t for t in TISSUES if t not in volumes]
    if missing:
        raise ValueError(f"{path}: no row for {', '.join(missing)}")
    return volumes
