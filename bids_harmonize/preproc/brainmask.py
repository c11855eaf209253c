"""The brain mask: a learned one (deepbet) on the native grid, and the check that compares it
with the template brain mask carried back through the registration.

deepbet (Fisch et al. 2024, MIT) is a PyTorch network trained on 7,837 T1w images from 191
OpenNeuro datasets; its TorchScript weights ship inside its wheel, so nothing downloads. It is
installed without its GUI dependency (`pip install --no-deps deepbet==1.0.2`, plus
`connected-components-3d` and `fill_voids`, which the package's core dependencies carry): the
product's setup paths (Makefile, Dockerfile, Singularity.def, .ci/run) do exactly that.

The mask check needs no intensity model: the learned mask and the registered template mask are
two independent estimates of the same brain (one from the image's own voxels, one from the
template's anatomy carried through the affine); where both are right they agree closely, and a
broken registration or a broken learned mask pulls their overlap down.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import nibabel as nb
import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from bids_harmonize.errors import ExitCode, HarmonizeError
from bids_harmonize.utils import sha256_of

LOGGER = logging.getLogger("bids_harmonize.preproc")

METHODS = ("deepbet", "template")
DEFAULT_METHOD = "deepbet"
DEEPBET_VERSION = "1.0.2"
DEEPBET_CITATION = (
    "Fisch L, Zumdick S, Barkhau C, et al. deepbet: Fast brain extraction of T1-weighted MRI using "
    "Convolutional Neural Networks. Computers in Biology and Medicine 179 (2024) 108845. "
    "doi:10.1016/j.compbiomed.2024.108845"
)
INSTALL_HINT = (
    f"install it without its GUI dependency: `pip install --no-deps deepbet=={DEEPBET_VERSION} "
    "connected-components-3d fill_voids` (the Docker and Singularity images have it), or run with "
    "--brain-mask template"
)

# The mask check flags an image when the learned mask and the template mask carried back by the
# registration overlap less than MIN_MASK_DICE, or when their outlines lie further apart than
# MAX_OUTLINE_MM at the 95th percentile. Calibrated on real heads (benchmarks/results/brain_mask.md;
# 2 mm template): on 27 real heads (24 IXI Hammersmith, the 3 realmix scanners incl. the 4.8 mm
# decubitus FLASH) whose masks are right, Dice 0.94-0.97 and outline distance 4-6 mm; with the
# registration displaced by 10 mm and turned by 10 degrees, Dice 0.82-0.86 and 10-15 mm (all flagged). On
# simulated phantoms (4 mm grid) a 10 mm shift alone gives Dice 0.90 but 8.9 mm, hence both.
MIN_MASK_DICE = 0.90
MAX_OUTLINE_MM = 7.5


class BrainMaskUnavailable(HarmonizeError, RuntimeError):
    """The learned brain mask was asked for but deepbet is not installed."""

    exit_code = ExitCode.INPUT_MISSING


@dataclass(frozen=True)
class MaskCheck:
    """What the mask sidecar records about the mask's agreement with the registration."""

    dice: float
    boundary_mm: float  # 95th percentile of the distance between the two outlines
    brain_volume_ml: float
    template_mask_volume_ml: float

    @property
    def flagged(self) -> bool:
        return not (np.isfinite(self.dice) and self.dice >= MIN_MASK_DICE and self.boundary_mm <= MAX_OUTLINE_MM)

    def as_dict(self) -> dict[str, Any]:
        return {
            "TemplateMaskDice": round(self.dice, 4),
            "BoundaryDistance95mm": round(self.boundary_mm, 2),
            "BrainVolumeML": round(self.brain_volume_ml, 1),
            "TemplateMaskVolumeML": round(self.template_mask_volume_ml, 1),
            "Thresholds": {"MinDice": MIN_MASK_DICE, "MaxBoundaryDistance95mm": MAX_OUTLINE_MM},
            "Flagged": self.flagged,
        }


def _deepbet_models() -> dict[str, Path]:
    try:
        from deepbet.utils import DATA_PATH
    except ImportError as err:
        raise BrainMaskUnavailable(
            f"the learned brain mask needs deepbet, which is not installed ({err}); " + INSTALL_HINT
        ) from err
    models = {name: Path(DATA_PATH) / "models" / name for name in ("model.pt", "bbox_model.pt")}
    missing = [str(p) for p in models.values() if not p.is_file()]
    if missing:
        raise BrainMaskUnavailable(
            f"deepbet's weights are missing ({', '.join(missing)}): reinstall it; " + INSTALL_HINT
        )
    return models


def check_available(method: str) -> None:
    """Raise BrainMaskUnavailable early (before any workflow runs) when ``method`` cannot run."""
    if method not in METHODS:
        raise ValueError(f"unknown brain mask method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "deepbet":
        _deepbet_models()


@cache
def method_record(method: str) -> dict[str, Any]:
    """The mask method as the sidecars and the methods text record it."""
    if method == "template":
        return {"Name": "template", "Description": "template brain mask carried back through the affine registration"}
    models = _deepbet_models()
    return {
        "Name": "deepbet",
        "Version": metadata.version("deepbet"),
        "WeightsSHA256": {name: sha256_of(path) for name, path in models.items()},
        "Citation": DEEPBET_CITATION,
    }


def learned_mask(img: nb.Nifti1Image, device: str = "cpu", threads: int = 1) -> nb.Nifti1Image:
    """deepbet's brain mask of ``img`` (a 3D head, any orientation), uint8 on ``img``'s grid.

    ``device`` is a torch device ("cpu", "cuda", "cuda:N"); ``threads`` the CPU threads torch uses.
    """
    import torch

    _deepbet_models()
    from deepbet import BrainExtraction

    torch.set_num_threads(max(1, threads))
    extractor = BrainExtraction(no_gpu=True)  # loads on the CPU; moved below to the device asked for
    if device != "cpu":
        extractor.model.to(torch.device(device))
        extractor.bbox_model.to(torch.device(device))
    data = np.asarray(img.dataobj, np.float32)
    if data.ndim != 3 or not np.isfinite(data).any() or np.ptp(np.nan_to_num(data)) == 0:
        raise ValueError(f"expected a 3D image with contrast for brain extraction, got shape {data.shape}")
    _, mask, _ = extractor.run(nb.Nifti1Image(data, img.affine))
    out = nb.Nifti1Image((np.asarray(mask.dataobj) > 0).astype(np.uint8), img.affine)
    out.set_qform(img.affine, code=1)
    out.set_sform(img.affine, code=1)
    return out


def dice(a: NDArray, b: NDArray) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    total = int(a.sum()) + int(b.sum())
    return float(2.0 * np.logical_and(a, b).sum() / total) if total else float("nan")


def _surface(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    return mask & ~ndimage.binary_erosion(mask)


def boundary_distance(a: NDArray, b: NDArray, zooms: tuple[float, ...], percentile: float = 95.0) -> float:
    """The ``percentile`` of the distances (mm) from each outline's voxels to the other outline."""
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    if not a.any() or not b.any():
        return float("inf")
    distances = [
        ndimage.distance_transform_edt(~_surface(target), sampling=zooms)[_surface(source)]
        for source, target in ((a, b), (b, a))
    ]
    return float(np.percentile(np.concatenate(distances), percentile))


def voxel_ml(img: nb.Nifti1Image) -> float:
    return float(abs(np.linalg.det(img.affine[:3, :3]))) / 1000.0


def check_mask(mask: nb.Nifti1Image, template_mask: nb.Nifti1Image) -> MaskCheck:
    """Compare the learned mask with the template mask carried to the same native grid."""
    a, b = np.asarray(mask.dataobj) > 0, np.asarray(template_mask.dataobj) > 0
    if a.shape != b.shape:
        raise ValueError(f"mask grids differ: {a.shape} vs {b.shape}")
    ml = voxel_ml(mask)
    zooms = tuple(float(z) for z in mask.header.get_zooms()[:3])
    return MaskCheck(dice(a, b), boundary_distance(a, b, zooms), float(a.sum()) * ml, float(b.sum()) * ml)
