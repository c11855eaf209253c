"""Figures of the group report: training curves, per-site densities, per-site mosaics."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bids_harmonize.qc.intensity import robust_rescale
from bids_harmonize.reports.figures import plt, png_uri

# Keys of a training-log line that are bookkeeping, not loss terms.
NOT_LOSSES = {"step", "lr", "lr_mapping", "elapsed_s", "samples_per_s"}


def read_training_log(path: Path) -> list[dict[str, Any]]:
    lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
    return [json.loads(line) for line in lines]


LN2 = float(np.log(2.0))
# Terms whose healthy value is ln 2: binary cross-entropy of a discriminator that cannot tell
# real from translated (its output 0.5 on both).
AT_LN2 = {"d_real", "d_fake", "g_adversarial"}

# The training log's terms (train.py: "d_" discriminator, "g_" generator side of losses.py), in
# reading groups, each with what a healthy run looks like. Terms a log holds outside these
# groups are drawn under "Other terms".
LOSS_GROUPS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    (
        "Adversarial",
        ("d_real", "d_fake", "g_adversarial", "d_r1"),
        "Healthy: d_real, d_fake and g_adversarial level off near ln 2 = 0.69 (dashed line): the "
        "discriminator cannot tell real slices from translated ones. d_real and d_fake falling towards 0 "
        "(and g_adversarial climbing well above 1) mean the discriminator wins and the translations are "
        "recognisable; d_r1 (the gradient penalty on real slices) should stay small and not grow.",
    ),
    (
        "Reconstruction",
        ("g_cycle", "g_identity", "g_gradient", "g_content", "g_style"),
        "Healthy: these fall and then flatten. g_cycle (an image translated away and back vs. itself) and "
        "g_gradient (its edges) falling means anatomy survives the round trip; g_identity (rendered in its "
        "own style) is exactly 0 with the style-aware layout, which returns an image in its own style by "
        "construction; g_content and g_style falling means the translated image keeps its content and "
        "carries the requested style. A term that rises again late signals instability.",
    ),
    (
        "Towards the target site",
        ("g_histogram", "g_texture", "g_anchor"),
        "Healthy: g_histogram and g_texture (distance of each translated slice's intensity and fine-detail "
        "distributions to a real slice of the target site) fall; they are 0 when their weight is 0. "
        "g_anchor (distance of each style's intensity curve to its site's anchor curve) starts small after "
        "the warm-up that fits the curves to the anchors before the first iteration, and should stay small; "
        "a steady climb means training is pulling the styles away from the sites' measured intensities.",
    ),
    (
        "Regularisers",
        ("g_alignment", "g_diversity"),
        "g_alignment (mean squared content code) keeps the content maps centred: it should settle, not "
        "grow. g_diversity is the distance between two renderings of one site with different style codes; "
        "with the reference's positive weight it is pulled down, so it falls.",
    ),
)
OTHER_CAPTION = "Terms this version of the report has no reading aid for."


def loss_terms(records: list[dict[str, Any]]) -> list[str]:
    """The loss terms a training log holds (numeric keys that are not bookkeeping)."""
    return sorted({k for r in records for k, v in r.items() if k not in NOT_LOSSES and isinstance(v, (int, float))})


def grouped_terms(records: list[dict[str, Any]]) -> list[tuple[str, list[str], str]]:
    """(title, terms present, caption) per group of LOSS_GROUPS that the log has terms of, then the
    remaining terms as "Other terms"."""
    present = loss_terms(records)
    groups, seen = [], set()
    for title, terms, caption in LOSS_GROUPS:
        chosen = [t for t in terms if t in present]
        seen.update(chosen)
        if chosen:
            groups.append((title, chosen, caption))
    rest = [t for t in present if t not in seen]
    if rest:
        groups.append(("Other terms", rest, OTHER_CAPTION))
    return groups


def training_curves(records: list[dict[str, Any]], terms: Sequence[str] | None = None) -> str:
    """One small panel per loss term (``terms``, or whatever terms the log holds) against
    iteration; the terms whose healthy value is ln 2 get it as a dashed line."""
    terms = list(terms) if terms is not None else loss_terms(records)
    columns = 4 if len(terms) != 5 else 5
    rows = max(1, -(-len(terms) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(11, 2.1 * rows), squeeze=False)
    steps = [r["step"] for r in records]
    for ax, term in zip(axes.ravel(), terms):
        ax.plot(steps, [r.get(term, np.nan) for r in records], lw=1.2, color="#37474f")
        if term in AT_LN2:
            ax.axhline(LN2, ls="--", lw=0.9, color="#d62728")
            ax.text(1.0, LN2, " ln 2", transform=ax.get_yaxis_transform(), color="#d62728", fontsize=7, va="center")
        ax.set_title(term, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.spines[["top", "right"]].set_visible(False)
    for ax in axes.ravel()[len(terms) :]:
        ax.set_axis_off()
    for ax in axes[-1]:
        ax.set_xlabel("iteration", fontsize=8)
    bottom = 0.3 if rows == 1 else 0.12 / rows
    fig.subplots_adjust(left=0.05, right=0.97, bottom=bottom, top=1 - 0.14 / rows, wspace=0.35, hspace=0.6)
    return png_uri(fig)


def site_densities(images: dict[str, list[NDArray]], mask: NDArray[np.bool_], title: str, ax: Any) -> None:
    """Per-site pooled densities of the robustly rescaled brain intensities (as the QC metrics see them)."""
    for site, volumes in sorted(images.items()):
        values = np.concatenate([robust_rescale(v, mask)[mask] for v in volumes])
        density, edges = np.histogram(values, bins=80, range=(-0.2, 1.2), density=True)
        ax.plot((edges[:-1] + edges[1:]) / 2, density, lw=1.3, label=f"{site} (n={len(volumes)})")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("brain intensity, robustly rescaled (1st/99th percentile -> 0/1)", fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)


def densities_before_after(before: dict[str, list[NDArray]], after: dict[str, list[NDArray]], mask: NDArray) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.2), sharey=True)
    site_densities(before, mask, "before (preprocessed)", axes[0])
    site_densities(after, mask, "after (harmonized)", axes[1])
    axes[0].set_ylabel("density")
    axes[1].legend(fontsize=7, frameon=False)
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.2, top=0.88, wspace=0.08)
    return png_uri(fig, dpi=80)


def site_mosaic(rows: Sequence[tuple[str, NDArray, NDArray]], mask: NDArray[np.bool_]) -> str:
    """One row per site: an axial, coronal and sagittal slice before | after (template grid),
    each image in its own robust window so that contrast, not scale, is compared."""
    centre = [int(np.mean(np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis))))) for axis in range(3)]
    fig, axes = plt.subplots(len(rows), 6, figsize=(11, 1.9 * len(rows)), squeeze=False, facecolor="black")
    for r, (label, before, after) in enumerate(rows):
        for half, volume in enumerate((before, after)):
            lo, hi = np.percentile(volume[mask], [0.5, 99.5])
            for k, axis in enumerate((2, 1, 0)):
                ax = axes[r, 3 * half + k]
                plane = np.rot90(np.take(volume, centre[axis], axis=axis))
                ax.imshow(plane, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
                ax.set_axis_off()
                if r == 0:
                    ax.set_title(
                        ("before" if half == 0 else "after") + f" ({('sagittal', 'coronal', 'axial')[axis]})",
                        color="white",
                        fontsize=8,
                    )
        axes[r, 0].text(
            -0.05,
            0.5,
            label,
            color="white",
            fontsize=7,
            rotation=90,
            va="center",
            ha="right",
            transform=axes[r, 0].transAxes,
        )
    fig.subplots_adjust(left=0.03, right=0.99, bottom=0.01, top=1 - 0.1 / len(rows), wspace=0.02, hspace=0.05)
    return png_uri(fig)


def volume_distributions(
    by_site: dict[str, dict[str, tuple[list[float], list[float]]]], tissues: Sequence[str], title: str
) -> str:
    """Per-site distributions of each tissue volume, before | after harmonization: one panel per
    tissue, a box per site and state (before hatched grey, after coloured), images as dots."""
    sites = sorted(by_site)
    fig, axes = plt.subplots(1, len(tissues), figsize=(3.7 * len(tissues), 3.2), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, tissue in zip(axes[0], tissues):
        for k, site in enumerate(sites):
            before, after = by_site[site][tissue]
            for offset, values, colour in ((-0.18, before, "#b0bec5"), (0.18, after, colours(k % 10))):
                ax.boxplot(
                    values,
                    positions=[k + offset],
                    widths=0.3,
                    patch_artist=True,
                    showfliers=False,
                    boxprops={"facecolor": colour, "alpha": 0.6},
                    medianprops={"color": "black"},
                )
                jitter = np.linspace(-0.06, 0.06, len(values)) if len(values) > 1 else [0.0]
                ax.scatter(np.add(jitter, k + offset), values, s=6, color="black", alpha=0.5, zorder=3)
        ax.set_xticks(range(len(sites)), sites, fontsize=7, rotation=30)
        ax.set_title(f"{tissue} (ml): before | after", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.22, top=0.82, wspace=0.3)
    return png_uri(fig, dpi=80)
