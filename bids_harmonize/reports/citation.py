"""Methods boilerplate: OUT/logs/CITATION.md and CITATION.bib, from what was actually run.

The text is assembled from the run's settings, the model bundle cards and the installed
versions, the way fMRIPrep writes its boilerplate; every reference cited is in the .bib file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from bids_harmonize import CODE_URL
from bids_harmonize.bids.outputs import OutputLayout
from bids_harmonize.preproc.noise import NOISIER, should_denoise
from bids_harmonize.utils import atomic_write_text


@dataclass(frozen=True)
class ModelUse:
    """One contrast's model and how it was applied (target and style only when applied)."""

    contrast: str
    bundle_dir: Path
    target_site: str | None = None
    target_style: str | None = None


@dataclass(frozen=True)
class MethodsFacts:
    contrasts: tuple[str, ...]
    template: str
    resolution: int
    site_granularity: str
    models: tuple[ModelUse, ...] = ()
    versions: dict[str, str] = field(default_factory=dict)
    brain_mask: dict = field(default_factory=dict)  # preproc.brainmask.method_record(); {} = template mask


BIBTEX = {
    "murd": "@article{murd,\n  author = {Liu, Siyuan and Yap, Pew-Thian},\n  title = {Learning multi-site "
    "harmonization of magnetic resonance images without traveling human phantoms},\n"
    "  journal = {Communications Engineering},\n"
    "  volume = {3},\n  pages = {6},\n  year = {2024},\n  doi = {10.1038/s44172-023-00140-w}\n}",
    "nipype": "@article{nipype,\n  author = {Gorgolewski, Krzysztof and Burns, Christopher D. and Madison, Cindee and "
    "Clark, Dav and Halchenko, Yaroslav O. and Waskom, Michael L. and Ghosh, Satrajit S.},\n  title = {Nipype: "
    "a flexible, lightweight and extensible neuroimaging data processing framework in Python},\n  journal = "
    "{Frontiers in Neuroinformatics},\n  volume = {5},\n  pages = {13},\n  year = {2011},\n"
    "  doi = {10.3389/fninf.2011.00013}\n}",
    "pybids": "@article{pybids,\n  author = {Yarkoni, Tal and others},\n  title = {PyBIDS: Python tools for BIDS "
    "datasets},\n  journal = {Journal of Open Source Software},\n  volume = {4},\n  number = {40},\n"
    "  pages = {1294},\n  year = {2019},\n  doi = {10.21105/joss.01294}\n}",
    "n4": "@article{n4,\n  author = {Tustison, Nicholas J. and Avants, Brian B. and Cook, Philip A. and Zheng, Yuanjie "
    "and Egan, Alexander and Yushkevich, Paul A. and Gee, James C.},\n  title = {N4ITK: improved N3 bias "
    "correction},\n  journal = {IEEE Transactions on Medical Imaging},\n  volume = {29},\n  number = {6},\n"
    "  pages = {1310--1320},\n  year = {2010},\n  doi = {10.1109/TMI.2010.2046908}\n}",
    "simpleitk": "@article{simpleitk,\n  author = {Lowekamp, Bradley C. and Chen, David T. and "
    "Ib{\\'a}{\\~n}ez, Luis and Blezek, Daniel},\n  title = {The Design of SimpleITK},\n"
    "  journal = {Frontiers in Neuroinformatics},\n  volume = {7},\n  pages = {45},\n  year = {2013},\n"
    "  doi = {10.3389/fninf.2013.00045}\n}",
    "mattes": "@article{mattes,\n  author = {Mattes, David and Haynor, David R. and Vesselle, Hubert and Lewellen, "
    "Thomas K. and Eubank, William},\n  title = {PET-CT image registration in the chest using free-form "
    "deformations},\n  journal = {IEEE Transactions on Medical Imaging},\n  volume = {22},\n  number = {1},\n"
    "  pages = {120--128},\n  year = {2003},\n  doi = {10.1109/TMI.2003.809072}\n}",
    "mni2009": "@article{mni2009,\n  author = {Fonov, Vladimir S. and Evans, Alan C. and McKinstry, Robert C. "
    "and Almli, C. Robert and Collins, D. Louis},\n  title = {Unbiased nonlinear average age-appropriate brain "
    "templates from birth to adulthood},\n  journal = {NeuroImage},\n  volume = {47, Supplement 1},\n"
    "  pages = {S102},\n  year = {2009},\n  doi = {10.1016/S1053-8119(09)70884-5}\n}",
    "templateflow": "@article{templateflow,\n  author = {Ciric, Rastko and others},\n  title = {TemplateFlow: "
    "FAIR-sharing of multi-scale, multi-species brain models},\n  journal = {Nature Methods},\n"
    "  volume = {19},\n  pages = {1568--1571},\n  year = {2022},\n  doi = {10.1038/s41592-022-01681-2}\n}",
    "deepbet": "@article{deepbet,\n  author = {Fisch, Lukas and Zumdick, Stefan and Barkhau, Carlotta and others},\n"
    "  title = {deepbet: Fast brain extraction of T1-weighted MRI using Convolutional Neural Networks},\n"
    "  journal = {Computers in Biology and Medicine},\n  volume = {179},\n  pages = {108845},\n"
    "  year = {2024},\n  doi = {10.1016/j.compbiomed.2024.108845}\n}",
    "manjon2010": "@article{manjon2010,\n  author = {Manj{\\'o}n, Jos{\\'e} V. and Coup{\\'e}, Pierrick and "
    "Mart{\\'i}-Bonmat{\\'i}, Luis and Collins, D. Louis and Robles, Montserrat},\n  title = {Adaptive Non-Local Means "
    "Denoising of {MR} Images With Spatially Varying Noise Levels},\n  journal = {Journal of Magnetic Resonance "
    "Imaging},\n  volume = {31},\n  number = {1},\n  pages = {192--203},\n  year = {2010}\n}",
    "pytorch": "@inproceedings{pytorch,\n  author = {Paszke, Adam and others},\n  title = {PyTorch: An Imperative "
    "Style, High-Performance Deep Learning Library},\n  booktitle = {Advances in Neural Information Processing "
    "Systems 32},\n  pages = {8024--8035},\n  year = {2019}\n}",
}


# How the translation reaches the scan, per network layout: what HarmonizedToNative
# (interfaces/harmonize.py) does with the lookup table of ModelBundle.intensity_lookup, whose
# table is the identity for the paper layout. tests/workflows/test_native_output.py runs that
# code against each clause.
_RESIDUAL = "resampled onto the native grid (linear interpolation, zero outside the template's field of view) and added"
NATIVE_MAPPING = {
    "modulated": (
        "The change was carried to the image's own native grid rather than the translated image resampled: "
        "the voxel-wise part of the translation (for site styles of a bundle that stores its sites' anchor "
        "quantiles, the image's own brain quantiles moved by the target site's minus the source site's quantile "
        "at each level; otherwise the target style's intensity curve after the inverse of the image's own style's "
        "curve; either as a lookup table) was applied to every voxel of the bias-corrected native "
        "image, in the model range of the image's own intensity scale and unclipped, and the rest of the change "
        f"on the template grid (the translated image minus the mapped input) was {_RESIDUAL}, so each scan kept "
        "its own resolution and detail."
    ),
    "paper": (
        "The change was carried to the image's own native grid rather than the translated image resampled: "
        "the change on the template grid (the translated image minus its input) was "
        f"{_RESIDUAL} to the bias-corrected native image, in the model range of the image's own intensity scale "
        "and unclipped, so each scan kept its own resolution and detail."
    ),
}


def _version(facts: MethodsFacts, package: str) -> str:
    return facts.versions.get(package, "(version not recorded)")


def kept_snapshot(training: dict) -> str:
    """Which training step's weights a bundle holds, as its card's `training.validation` says."""
    record = training.get("validation")
    if not record:
        return "those of the last iteration"
    if "off" in record:
        return f"those of the last iteration (validation was off: {record['off']})"
    return (
        f"those of iteration {record['selected_step']}, which scored best on {record['held_out_volumes']} training "
        f"images held out of the gradient steps (scored every {record['every']} iterations)"
    )


def _model_paragraph(facts: MethodsFacts, model: ModelUse) -> str:
    card = json.loads((model.bundle_dir / "model.json").read_text())
    training = card.get("training") or {}
    sites = card.get("sites", [])
    n_images = sum(((s.get("signature") or {}).get("n_images") or 0) for s in sites)
    names = ", ".join(s["name"] for s in sites)
    text = (
        f"For the {model.contrast} images, a MURD model [@murd] ({card.get('preset', '?')} preset) was trained "
        f"with PyTorch {_version(facts, 'torch')} [@pytorch] on 2.5D axial slices of the template-space images "
        f"of {n_images or 'the'} images from {len(sites)} sites ({names}) for {training.get('iterations', '?')} "
        f"iterations (batch size {training.get('batch_size', '?')}, seed {card.get('seed', '?')}); the weights "
        f"kept are {kept_snapshot(training)}, with SHA-256 {(card.get('weights') or {}).get('sha256', '?')}."
    )
    if model.target_site:
        architecture = (card.get("network") or {}).get("architecture", "modulated")
        text += (
            f" Each image was translated to the style of site {model.target_site} ({model.target_style} style) "
            f"on the template grid. {NATIVE_MAPPING[architecture]} The result was mapped to site "
            f"{model.target_site}'s intensity scale (the median of its training images' scales)."
        )
        text += _noise_sentence(sites, model.target_site) if model.target_style == "site" else ""
    return text


def _noise_sentence(sites: list[dict], target_site: str) -> str:
    """Which sites' images were denoised before their map (preproc/noise.py), if any."""
    ratios = {site["name"]: site["noise_to_contrast"] for site in sites if "noise_to_contrast" in site}
    denoised = [name for name in ratios if should_denoise(ratios[name], ratios.get(target_site))]
    if not denoised:
        return ""
    return (
        f" Images of {', '.join(denoised)}, whose noise-to-contrast ratio exceeded site {target_site}'s by more "
        f"than {NOISIER} times, were first denoised inside their brain mask with adaptive non-local means "
        "[@manjon2010] (ANTs DenoiseImage through antspyx), on the template grid and on the native grid alike, "
        "and moved by their site's quantiles measured on denoised images."
    )


def _mask_sentences(facts: MethodsFacts) -> tuple[str, str]:
    """(before the registration, after it): how the brain mask was made and what it drove."""
    method = facts.brain_mask
    if method.get("Name") != "deepbet":
        return "", (
            " The template brain mask was carried back to the native grid (nearest neighbour) as the brain mask"
        )
    weights = ", ".join(f"{name} SHA-256 {digest}" for name, digest in (method.get("WeightsSHA256") or {}).items())
    before = (
        f" A brain mask was computed on the native grid with deepbet {method.get('Version', '?')} [@deepbet], a "
        f"convolutional network trained on T1-weighted images ({weights})."
    )
    after = (
        " The registration was driven by the brain: the skull-stripped image was registered to the "
        "skull-stripped template. The template brain mask carried back through it (nearest neighbour) served "
        "to check the learned mask (Dice overlap)"
    )
    return before, after


def methods_markdown(facts: MethodsFacts) -> str:
    contrasts = " and ".join(facts.contrasts)
    template_refs = "[@mni2009; @templateflow]" if facts.template.startswith("MNI152NLin2009") else "[@templateflow]"
    mask_before, mask_after = _mask_sentences(facts)
    paragraphs = [
        f"Structural images ({contrasts}) were processed with bids_harmonize {_version(facts, 'bids_harmonize')} "
        f"({CODE_URL}), which is built on Nipype {_version(facts, 'nipype')} [@nipype] and PyBIDS "
        f"{_version(facts, 'pybids')} [@pybids].",
        "Preprocessing. Each image was reoriented to the closest RAS+ orientation without resampling and corrected "
        f"for intensity non-uniformity with N4 [@n4] as implemented in SimpleITK {_version(facts, 'SimpleITK')} "
        "[@simpleitk] (fitted inside an Otsu head mask on a copy at about 4 mm spacing, two levels of 50 "
        f"iterations).{mask_before} It was registered to the {facts.template} template {template_refs} at "
        f"{facts.resolution} mm with a rigid and then a 12-parameter affine transform maximising Mattes mutual "
        "information [@mattes] (multi-resolution); an affine result outside plausible head scaling (0.67-1.5 per "
        f"axis, no reflection) was replaced by the rigid one.{mask_after}, and template-space intensities were "
        "mapped linearly to [-1, 1] (the "
        "0.5th percentile of the volume to -1, the 99.5th percentile inside the brain to +1).",
        "Sites. Each image's acquisition site was taken from the user's site table, sessions.tsv or "
        "participants.tsv where given, and otherwise inferred from its acquisition metadata at the "
        f"'{facts.site_granularity}' granularity (normalised manufacturer, model, field strength and scanner unit).",
    ]
    if facts.models:
        paragraphs += ["Harmonization. " + " ".join(_model_paragraph(facts, m) for m in facts.models)]
    else:
        paragraphs.append(
            "Harmonization. No harmonization model was available in this run, so images were preprocessed only."
        )
    cited = sorted({key for key in BIBTEX if f"@{key}" in "\n".join(paragraphs)})
    return (
        "# Methods (generated by bids_harmonize)\n\n"
        + "\n\n".join(paragraphs)
        + "\n\nReferences (BibTeX in CITATION.bib): "
        + ", ".join(cited)
        + ".\n"
    )


def write_citation(out_dir: Path, facts: MethodsFacts) -> tuple[Path, Path, str]:
    """OUT/logs/CITATION.md and CITATION.bib; returns both paths and the markdown text."""
    text = methods_markdown(facts)
    cited = [key for key in BIBTEX if f"@{key}" in text]
    layout = OutputLayout(out_dir)
    md = atomic_write_text(layout.citation(".md"), text)
    bib = atomic_write_text(layout.citation(".bib"), "\n\n".join(BIBTEX[k] for k in cited) + "\n")
    return md, bib, text
