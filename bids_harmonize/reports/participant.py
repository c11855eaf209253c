"""OUT/sub-<label>.html: one section per image (site, registration and mask check, before/after,
intensity distributions, warnings, provenance) and the methods text.

Every section is built defensively: a missing or unreadable file turns into a message in the
report, never into a missing report. A failed image still gets its section, saying what failed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nb
import numpy as np

from bids_harmonize.bids.outputs import OutputLayout
from bids_harmonize.qc import metrics
from bids_harmonize.reports import figures, html
from bids_harmonize.reports.collect import ImageOutputs, Template, crash_summary
from bids_harmonize.utils import atomic_write_text

LOGGER = logging.getLogger("bids_harmonize.reports")


def _load(path: Path) -> np.ndarray:
    return np.asarray(nb.load(path).dataobj, np.float32)


class _ImageSection:
    """Builds the HTML of one image; collects its warnings as it goes."""

    def __init__(self, item: ImageOutputs, template: Template, dataset_checks: Sequence[dict[str, Any]] = ()):
        self.item, self.template = item, template
        self.dataset_checks = dataset_checks
        self.warnings: list[str] = []
        self.agreement: float | None = None
        self._template_mask: np.ndarray | None = None

    @property
    def template_mask(self) -> np.ndarray:
        if self._template_mask is None:
            self._template_mask = _load(Path(self.template.mask)) > 0
        return self._template_mask

    def guarded(self, title: str, build: Any) -> str:
        try:
            return build()
        except Exception as err:  # a report must survive any broken input
            LOGGER.warning("report section %r of %s failed: %s", title, self.item.label, err)
            self.warnings.append(f"The {title} section could not be drawn: {type(err).__name__}: {err}")
            return html.box("fail", f"Could not draw this section: {type(err).__name__}: {err}")

    def site(self) -> str:
        site = self.item.site
        rows = [
            ("site", site.get("site", "n/a")),
            ("provenance", site.get("provenance", "n/a")),
            ("evidence", site.get("evidence", "n/a")),
        ]
        self.warnings += list(site.get("warnings", ()))
        return html.key_values(rows)

    def registration(self) -> str:
        files = self.item.files
        mask_sidecar = self.item.sidecar("native_mask")
        parts = [self._mask_method(mask_sidecar.get("MaskMethod") or {})]
        check = mask_sidecar.get("MaskCheck")
        if check:
            parts.append(self._mask_check(check))
        else:
            image = _load(files["template_preproc"])
            reference = _load(Path(self.template.images[self.item.record.suffix]))
            spearman = metrics.template_agreement(image, reference, self.template_mask)
            parts.append(
                html.paragraph(
                    "No learned mask to check this one against (--brain-mask template): look at the red outline. "
                    "For information only, the Spearman agreement of the registered image with the template is "
                    f"{spearman:.2f} "
                    "(it varies with the scanner's contrast, so it is not a flag).",
                    "note",
                )
            )
        if "transform" in files:
            scales = metrics.transform_scales(files["transform"])
            if metrics.fell_back_to_rigid(files["transform"]):
                message = (
                    "Registration fell back to rigid: the affine step left the plausible range, so the "
                    "head was not scaled to the template."
                )
                self.warnings.append(message)
                parts.append(html.box("warn", message))
            parts.append(
                html.paragraph(
                    "Scales of the affine (1 = no scaling): " + ", ".join(f"{s:.3f}" for s in scales), "note"
                )
            )
        mosaic = figures.registration_mosaic(nb.load(files["native_preproc"]), nb.load(files["native_mask"]))
        parts.append(
            html.figure(
                mosaic,
                "Red: the brain mask's outline on the native grid, over the bias-corrected "
                "image; cuts span the head, so brain outside the outline shows.",
            )
        )
        return "".join(parts)

    @staticmethod
    def _mask_method(method: dict[str, Any]) -> str:
        if method.get("Name") == "deepbet":
            return html.paragraph(
                f"Brain mask: deepbet {method.get('Version', '?')} (learned; Fisch et al. 2024), "
                "which also drove the registration to the template (brain to brain).",
                "note",
            )
        return html.paragraph("Brain mask: the template brain mask carried back through the registration.", "note")

    def _mask_check(self, check: dict[str, Any]) -> str:
        self.agreement = float(check.get("TemplateMaskDice", float("nan")))
        limits = check.get("Thresholds") or {}
        distance = float(check.get("BoundaryDistance95mm", float("nan")))
        verdict = html.badge(
            f"Dice {self.agreement:.3f}, outlines {distance:.1f} mm apart", "bad" if check.get("Flagged") else "good"
        )
        text = (
            f"<p>Mask check: the learned mask against the template brain mask carried back by the registration "
            f"{verdict} (95th percentile of the distance between their outlines; flagged below Dice "
            f"{limits.get('MinDice', '?')} or beyond {limits.get('MaxBoundaryDistance95mm', '?')} mm); brain "
            f"volume {check.get('BrainVolumeML', float('nan')):.0f} ml (template mask "
            f"{check.get('TemplateMaskVolumeML', float('nan')):.0f} ml).</p>"
        )
        text += self._dataset_check(check)
        if not check.get("Flagged"):
            return text
        message = (
            f"Brain mask check failed (Dice {self.agreement:.3f}, outlines {distance:.1f} mm apart, between the "
            "learned mask and the registered template mask): either the registration or the learned mask is "
            "wrong. Check that the red outline follows the brain; brain outside it is missing from the mask "
            "and from what the model saw."
        )
        self.warnings.append(message)
        return text + html.box("warn", message)

    def _dataset_check(self, check: dict[str, Any]) -> str:
        """The same numbers against the dataset's distribution of them (robust z-score), a second
        opinion that adapts to the data where the fixed bounds cannot."""
        outliers = metrics.mask_check_outliers(check, self.dataset_checks)
        if not outliers:
            return html.paragraph(
                f"Against this dataset: not judged, fewer than {metrics.MIN_DATASET_IMAGES} images of the run have a "
                "mask check.",
                "note",
            )
        described = []
        for key, outlier in outliers.items():
            name, bad, _ = metrics.MASK_CHECK_NUMBERS[key]
            described.append(f"{name} z = {round(outlier.z, 1) + 0.0:+.1f} (dataset median {outlier.median:.3g})")
        images = max(o.images for o in outliers.values())
        text = html.paragraph(
            f"Against this dataset ({images} images with a mask check; robust z-score, median and MAD): "
            + "; ".join(described)
            + f". Flagged beyond {metrics.ROBUST_Z_LIMIT} on the bad side (low Dice, long distance).",
            "note",
        )
        flagged = [metrics.MASK_CHECK_NUMBERS[k][0] for k, o in outliers.items() if o.flagged]
        if not flagged:
            return text
        message = (
            f"Mask check unusual for this dataset ({' and '.join(flagged)} beyond {metrics.ROBUST_Z_LIMIT} robust "
            "z from the dataset's median): this image's registration or learned mask agrees less well than "
            "its peers'. Check that the red outline follows the brain."
        )
        self.warnings.append(message)
        return text + html.box("warn", message)

    def before_after(self) -> str:
        if not self.item.harmonized:
            return html.box("note", "Not harmonized: " + self.skip_reason())
        files = self.item.files
        png = figures.before_after_mosaic(
            nb.load(files["native_preproc"]), nb.load(files["native_harmonized"]), nb.load(files["native_mask"])
        )
        return html.figure(
            png,
            "Native grid. Preprocessed (source site, its scanner units) and harmonized (target site's units) "
            "each in its own grey window (1st-99th percentile inside the brain mask); difference = harmonized - "
            "preprocessed after each was robustly standardised inside the brain mask (minus its median, divided "
            "by 1.4826 MAD), so it shows contrast changes, not the change of units.",
        )

    def distributions(self) -> str:
        files = self.item.files
        mask = self.template_mask
        source = _load(files["template_preproc"])[mask]
        curves = []
        harmonization = self.item.sidecar("native_harmonized")
        if self.item.harmonized:
            after = _load(files["template_harmonized"])[mask]
            lo, hi = np.percentile(np.concatenate([source, after]), [0.1, 99.9])
            curves += [
                ("source (preprocessed)", metrics.histogram(source, (lo, hi)), "source"),
                ("harmonized", metrics.histogram(after, (lo, hi)), "harmonized"),
            ]
            target = _target_histogram(harmonization)
            if target:
                curves.append((f"target site {harmonization.get('TargetSite')} (training)", target, "target"))
        else:
            lo, hi = np.percentile(source, [0.1, 99.9])
            curves.append(("source (preprocessed)", metrics.histogram(source, (lo, hi)), "source"))
        note = (
            ""
            if len(curves) == 3 or not self.item.harmonized
            else html.paragraph(
                "The model bundle records no training distribution for the target site (trained by an older "
                "version); only source and harmonized are shown.",
                "note",
            )
        )
        png = figures.distributions_plot(
            curves, "intensity (scanner units; harmonized and target in the target site's units)"
        )
        names = "; ".join(label for label, _, _ in curves)
        return note + html.figure(png, f"Intensities inside the template brain mask, template grid: {names}.")

    def skip_reason(self) -> str:
        if self.item.skip_reason:
            return self.item.skip_reason
        if self.item.crashes:
            return "a step of the workflow failed (see the crash report under Warnings)."
        return "no harmonized output was found for this image."

    def warnings_html(self) -> str:
        if not self.item.harmonized and self.item.preprocessed:
            self.warnings.append("Not harmonized: " + self.skip_reason())
        parts = [html.boxes("warn", self.warnings)]
        parts += [html.pre(crash_summary(path)) for path in self.item.crashes]
        return "".join(parts) or html.box("ok", "No warnings.")

    def provenance(self) -> str:
        sidecar = (
            self.item.sidecar("native_harmonized")
            or self.item.sidecar("native_preproc")
            or _run_config(self.item.out_dir)
        )
        bundle = sidecar.get("ModelBundle") or {}
        rows = [("raw image", self.item.record.relpath)]
        rows += [(k, sidecar[k]) for k in ("TargetSite", "TargetStyle") if k in sidecar]
        if bundle:
            rows += [("model bundle", bundle.get("Path", "")), ("bundle SHA-256", bundle.get("SHA256", ""))]
        rows += [(k, sidecar.get(k, "n/a")) for k in ("CommandLine", "StartTime", "EndTime")]
        versions = sidecar.get("PackageVersions") or {}
        rows.append(("software", ", ".join(f"{k} {v}" for k, v in versions.items()) or "n/a"))
        return html.key_values(rows)

    def build(self) -> str:
        item = self.item
        parts = [
            html.paragraph(f"{item.record.relpath} ({item.record.suffix})", "note"),
            "<h3>Site</h3>",
            self.guarded("site", self.site),
        ]
        if item.preprocessed:
            parts += [
                "<h3>Registration and brain mask</h3>",
                self.guarded("registration", self.registration),
                "<h3>Before / after</h3>",
                self.guarded("before/after", self.before_after),
                "<h3>Intensity distributions in the brain</h3>",
                self.guarded("distributions", self.distributions),
            ]
        else:
            message = "Preprocessing did not finish for this image: no preprocessed output was written."
            self.warnings.insert(0, message)
            parts.append(html.box("fail", message))
        parts += [
            "<h3>Warnings</h3>",
            self.warnings_html(),
            "<h3>Provenance</h3>",
            self.guarded("provenance", self.provenance),
        ]
        return "".join(parts)


def _run_config(out_dir: Path) -> dict[str, Any]:
    """When no sidecar was written (a failed image): the newest run configuration in OUT/logs."""
    configs = OutputLayout(out_dir).run_configs()
    if not configs:
        return {}
    config = json.loads(configs[-1].read_text())
    return {"CommandLine": " ".join(config.get("command_line", []))}


def _target_histogram(harmonization: dict[str, Any]) -> dict[str, Any] | None:
    """The target site's training distribution from the bundle card, in its scanner units."""
    bundle = harmonization.get("ModelBundle") or {}
    card_path = Path(bundle.get("Path", "")) / "model.json"
    if not card_path.is_file():
        return None
    card = json.loads(card_path.read_text())
    site = next((s for s in card.get("sites", []) if s.get("name") == harmonization.get("TargetSite")), None)
    signature = (site or {}).get("signature") or {}
    if "brain_histogram" not in signature or "intensity_scale" not in signature:
        return None
    return metrics.to_scanner_units(signature["brain_histogram"], signature["intensity_scale"])


def _status(item: ImageOutputs) -> str:
    if item.harmonized:
        return html.badge("harmonized", "good")
    if item.preprocessed:
        return html.badge("preprocessed only")
    return html.badge("failed", "bad")


def participant_report(
    out_dir: Path,
    subject: str,
    items: list[ImageOutputs],
    template: Template,
    methods: str | None = None,
    dataset_checks: Sequence[dict[str, Any]] = (),
) -> Path:
    """Write OUT/sub-<subject>.html for ``items`` (the images of that participant);
    ``dataset_checks``: the mask checks of the dataset's images (collect.dataset_mask_checks)."""
    sections, summary = [], []
    for item in items:
        section = _ImageSection(item, template, dataset_checks)
        body = section.build()
        sections.append((item.label, item.label, body))
        agreement = f"{section.agreement:.3f}" if section.agreement is not None else "n/a"
        summary.append(
            f'<tr><td><a href="#{html.esc(item.label)}">{html.esc(item.label)}</a></td>'
            f"<td>{_status(item)}</td><td>{html.esc(item.site.get('site', 'n/a'))}</td>"
            f'<td class="num">{agreement}</td><td class="num">{len(section.warnings)}</td></tr>'
        )
    overview = (
        "<table><tr><th>image</th><th>status</th><th>site</th><th>mask check (Dice)</th>"
        f"<th>warnings</th></tr>{''.join(summary)}</table>"
    )
    all_sections = [("summary", "Summary", overview), *sections]
    if methods:
        all_sections.append(("methods", "Methods", html.pre(methods)))
    text = html.page(f"bids_harmonize: sub-{subject}", f"{len(items)} image(s); output folder {out_dir}", all_sections)
    return atomic_write_text(OutputLayout(out_dir).participant_report(subject), text)
