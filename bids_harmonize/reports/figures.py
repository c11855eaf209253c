"""Figures of the participant report, returned as PNG data URIs ready to embed.

Plain matplotlib (Agg, offline) on the arrays: nireports' ``plot_registration`` draws the same
kind of contour mosaic, but through nilearn's resampling and 300-dpi SVG it took 45-120 s per
1 mm head on this project's 2-core machines (2.4 MB per report); these take ~1-3 s.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nb  # noqa: E402
import numpy as np  # noqa: E402
from numpy.typing import NDArray  # noqa: E402
from scipy import ndimage  # noqa: E402

from bids_harmonize.qc.metrics import robust_z  # noqa: E402

DPI = 72
SLICES = 5  # per orientation, before/after
REGISTRATION_SLICES = 7
_NAMES = {0: "sagittal", 1: "coronal", 2: "axial"}
DIFFERENCE_CMAP = matplotlib.colormaps["RdBu_r"].with_extremes(bad="black")
COLOURS = {"source": "#1f77b4", "harmonized": "#d62728", "target": "#2ca02c"}


def png_uri(fig: Any, dpi: int = DPI) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor=fig.get_facecolor())
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def head_mask(data: NDArray) -> NDArray[np.bool_]:
    """Foreground of a head image: above half the mean of the non-zero voxels, largest blob."""
    values = data[data > 0]
    if values.size == 0:
        return np.zeros(data.shape, bool)
    foreground = data > 0.5 * values.mean()
    labels, count = ndimage.label(foreground)
    if count > 1:
        foreground = labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    return foreground


def registration_mosaic(native: nb.Nifti1Image, mask: nb.Nifti1Image) -> str:
    """Template brain outline (the mask carried back) over the preprocessed image: axial,
    coronal and sagittal rows whose cuts span the *head*, so brain outside the outline shows."""
    image = nb.as_closest_canonical(native)
    data = np.asarray(image.dataobj, np.float32)
    outline = np.asarray(nb.as_closest_canonical(mask).dataobj) > 0
    zooms = image.header.get_zooms()[:3]
    picks = _slices(data.shape, head_mask(data), count=REGISTRATION_SLICES)
    vmax = float(np.percentile(data[data > 0], 99.5)) if (data > 0).any() else 1.0
    fig, axes = plt.subplots(3, REGISTRATION_SLICES, figsize=(REGISTRATION_SLICES * 1.6, 5.4), facecolor="black")
    for row, axis in enumerate((2, 1, 0)):
        for column, index in enumerate(picks[axis]):
            ax = axes[row, column]
            ax.imshow(
                _plane(data, axis, index),
                cmap="gray",
                vmin=0.0,
                vmax=vmax,
                aspect=_aspect(zooms, axis),
                interpolation="nearest",
            )
            plane = _plane(outline, axis, index)
            if plane.any() and not plane.all():
                ax.contour(plane.astype(np.float32), levels=[0.5], colors="#ff3030", linewidths=0.9)
            ax.set_title(f"{_NAMES[axis]} {index}", color="white", fontsize=7)
            ax.set_axis_off()
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.95, wspace=0.03, hspace=0.12)
    return png_uri(fig, dpi=100)


def _slices(shape: Sequence[int], mask: NDArray[np.bool_] | None, count: int = SLICES) -> dict[int, list[int]]:
    """Evenly spaced slice indices per axis inside the extent of ``mask`` (or the volume)."""
    picks = {}
    for axis in range(3):
        if mask is not None and mask.any():
            present = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
            lo, hi = int(present.min()), int(present.max())
        else:
            lo, hi = 0, shape[axis] - 1
        picks[axis] = [int(round(v)) for v in np.linspace(lo, hi, count + 2)[1:-1]]
    return picks


def _plane(data: NDArray, axis: int, index: int) -> NDArray:
    """One slice (a view, no copy), rotated so that anterior/superior point up."""
    selector: list[Any] = [slice(None)] * 3
    selector[axis] = index
    return np.rot90(data[tuple(selector)])


def before_after_mosaic(before: nb.Nifti1Image, after: nb.Nifti1Image, mask: nb.Nifti1Image | None) -> str:
    """Rows: preprocessed and harmonized, each in its own grey window (1st-99th percentile inside
    the mask: they are in different scanner units), and their difference in normalised units
    (each robustly standardised inside the mask first, see `standardised`; symmetric diverging
    window), for 5 axial, coronal and sagittal slices."""
    b = np.asarray(nb.as_closest_canonical(before).dataobj, np.float32)
    a = np.asarray(nb.as_closest_canonical(after).dataobj, np.float32)
    m = np.asarray(nb.as_closest_canonical(mask).dataobj) > 0 if mask is not None else None
    zooms = nb.as_closest_canonical(before).header.get_zooms()[:3]
    inside = m if m is not None and m.any() else np.ones(b.shape, bool)
    b_window, a_window = grey_window(b, inside), grey_window(a, inside)
    # Outside the head both images are ~0, which z-scoring maps to different offsets: that is no
    # change of contrast, so the difference is drawn on the head only (black elsewhere).
    diff = np.where(head_mask(b) | inside, standardised(a, inside) - standardised(b, inside), np.nan)
    limit = float(np.percentile(np.abs(diff[inside]), 99)) or 1.0
    picks = _slices(b.shape, m)
    fig, axes = plt.subplots(3, 3 * SLICES, figsize=(3 * SLICES * 1.25, 4.6), facecolor="black")
    fig.subplots_adjust(left=0.03, right=0.94, bottom=0.01, top=0.88, wspace=0.03, hspace=0.08)
    rows = [
        (b, "gray", b_window, "preprocessed"),
        (a, "gray", a_window, "harmonized"),
        (diff, DIFFERENCE_CMAP, (-limit, limit), "difference (z)"),
    ]
    for r, (data, cmap, (lo, hi), title) in enumerate(rows):
        column = 0
        for axis in (2, 1, 0):
            aspect = _aspect(zooms, axis)
            for index in picks[axis]:
                ax = axes[r, column]
                shown = ax.imshow(
                    _plane(data, axis, index), cmap=cmap, vmin=lo, vmax=hi, aspect=aspect, interpolation="nearest"
                )
                ax.set_axis_off()
                if r == 0:
                    ax.set_title(f"{_NAMES[axis]} {index}", color="white", fontsize=7)
                column += 1
        axes[r, 0].text(
            -0.05,
            0.5,
            title,
            color="white",
            fontsize=8,
            rotation=90,
            va="center",
            ha="right",
            transform=axes[r, 0].transAxes,
        )
        if r == 2:
            bar = fig.colorbar(shown, ax=axes[2, :], fraction=0.02, pad=0.01)
            bar.ax.tick_params(colors="white", labelsize=7)
    fig.suptitle(
        f"preprocessed window {b_window[0]:.4g} .. {b_window[1]:.4g}; harmonized window {a_window[0]:.4g} .. "
        f"{a_window[1]:.4g} (each its own scanner units); difference of the robust z-scored images +/-{limit:.2g}",
        color="white",
        fontsize=8,
    )
    return png_uri(fig, dpi=85)


def grey_window(data: NDArray, inside: NDArray[np.bool_]) -> tuple[float, float]:
    """One image's display window: its 1st-99th percentile inside ``inside`` (never empty)."""
    values = data[inside] if inside.any() else data.ravel()
    lo, hi = (float(v) for v in np.percentile(values, [1, 99]))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def standardised(data: NDArray, inside: NDArray[np.bool_]) -> NDArray[np.float32]:
    """The image in robust z units of its own brain intensities: (x - median) / (1.4826 MAD)
    inside ``inside`` (qc.metrics.robust_z), so images in different scanner units compare."""
    values = data[inside] if inside.any() else data.ravel()
    return robust_z(data, values).astype(np.float32)


def _aspect(zooms: Sequence[float], axis: int) -> float:
    """Display aspect of a plane after rot90: rows follow the second in-plane axis."""
    first, second = [z for i, z in enumerate(zooms) if i != axis]
    return float(second / first)


def distributions_plot(curves: Sequence[tuple[str, dict[str, Any], str]], xlabel: str) -> str:
    """Density curves: (label, {"edges", "density"}, colour key)."""
    fig, ax = plt.subplots(figsize=(7.5, 3.0))
    for label, hist, colour in curves:
        edges = np.asarray(hist["edges"])
        centres = (edges[:-1] + edges[1:]) / 2
        ax.plot(centres, hist["density"], label=label, color=COLOURS.get(colour, colour), lw=1.6)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.legend(fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return png_uri(fig, dpi=80)
