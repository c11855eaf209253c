"""init_participant_wf: preprocess every selected image and, where a model applies, harmonize it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nipype.pipeline import engine as pe

from bids_harmonize.bids.outputs import OUTPUTS, node_name
from bids_harmonize.interfaces.bids import DerivativesSink
from bids_harmonize.interfaces.volumes import TissueVolumes
from bids_harmonize.preproc.brainmask import DEFAULT_METHOD
from bids_harmonize.preproc.noise import noise_record
from bids_harmonize.sites import SiteAssignment
from bids_harmonize.workflows.harmonize import init_harmonize_wf
from bids_harmonize.workflows.preproc import PREPROC_OUTPUTS, init_preproc_wf


@dataclass(frozen=True)
class TemplateFiles:
    name: str
    resolution: int  # mm; the res- entity of template-space outputs
    images: dict[str, str]  # contrast -> template image of that contrast
    mask: str


@dataclass(frozen=True)
class HarmonizationPlan:
    """How one contrast is harmonized: which bundle, to which site, in which style."""

    bundle_dir: str
    bundle_sha256: str
    bundle_sites: tuple[str, ...]
    target_site: str
    target_scale: tuple[float, float]
    style: str = "site"
    seed: int = 0
    reference_image: str | None = None  # raw image of the target site, for style='reference'
    card_sha256: str = ""  # SHA-256 of the bundle's model.json as read when planning
    noise_ratios: tuple[tuple[str, float], ...] = ()  # (site, noise-to-contrast) from the card (model/noise.py)

    def sidecar_fields(self, source_site: str | None = None) -> dict[str, Any]:
        """The harmonization's provenance; with `source_site`, whether its images are denoised."""
        noise = {}
        if source_site is not None and self.style == "site" and self.noise_ratios:
            noise = {"NoiseMatching": noise_record(source_site, self.target_site, dict(self.noise_ratios))}
        return {
            **noise,
            "TargetSite": self.target_site,
            "TargetStyle": self.style if self.style != "random" else f"random (seed {self.seed})",
            "TargetIntensityScale": {"lo": self.target_scale[0], "hi": self.target_scale[1]},
            "ModelBundle": {
                "Path": self.bundle_dir,
                "SHA256": self.bundle_sha256,
                "CardSHA256": self.card_sha256,
                "Sites": list(self.bundle_sites),
            },
        }


def init_participant_wf(
    *,
    assignments: list[SiteAssignment],
    out_dir: Path,
    template: TemplateFiles,
    plans: dict[str, HarmonizationPlan],
    provenance: dict[str, Any],
    device: str = "cpu",
    omp_nthreads: int = 1,
    seed: int = 0,
    brain_mask: str = DEFAULT_METHOD,
    volumes: bool = True,
    name: str = "bids_harmonize_wf",
) -> tuple[pe.Workflow, list[str]]:
    """The workflow, and a message for every image a model could not harmonize. With ``volumes``,
    each image's tissue volumes are measured on its native grid inside its native brain mask,
    once on the preprocessed and (where harmonized) once on the harmonized image."""
    workflow = pe.Workflow(name=name)
    not_harmonized: list[str] = []
    masking = {"brain_mask": brain_mask, "device": device, "omp_nthreads": omp_nthreads, "seed": seed}
    references = {
        contrast: _reference_wf(plan, template, contrast, masking)
        for contrast, plan in plans.items()
        if plan.style == "reference"
    }
    for a in assignments:
        contrast = a.image.suffix
        preproc = init_preproc_wf(
            template_file=template.images[contrast],
            template_mask_file=template.mask,
            **masking,
            name=f"preproc_{node_name(a.image.relpath)}",
        )
        preproc.inputs.inputnode.in_file = str(a.image.path)
        sink = pe.Node(
            DerivativesSink(
                out_dir=str(out_dir),
                record=a.image.to_json(),
                template=template.name,
                resolution=template.resolution,
                provenance=provenance,
                site={"site": a.site, "provenance": a.provenance, "evidence": a.evidence},
            ),
            name=f"sink_{node_name(a.image.relpath)}",
            overwrite=True,
            run_without_submitting=True,
        )
        workflow.connect([(preproc, sink, [(f"outputnode.{f}", f) for f in PREPROC_OUTPUTS if f in _SINK_PREPROC])])
        if volumes:
            image = (preproc, "outputnode.native_preproc")
            _measure(workflow, image, preproc, sink, "native_preproc_volumes", omp_nthreads)
        plan = plans.get(contrast)
        if plan is None:
            continue
        if a.site not in plan.bundle_sites:
            not_harmonized.append(
                f"{a.image.relpath}: site {a.site!r} is not one the model was trained on "
                f"({', '.join(plan.bundle_sites)}); preprocessed only. Fix: retrain at group level with this "
                "site included, or map it to a known site with --site-table."
            )
            continue
        harmonize = init_harmonize_wf(
            bundle_dir=plan.bundle_dir,
            bundle_sha256=plan.bundle_sha256,
            target_site=plan.target_site,
            source_site=a.site,
            target_scale=plan.target_scale,
            style=plan.style,
            seed=plan.seed,
            device=device,
            omp_nthreads=omp_nthreads,
            brain_mask=str(template.mask),
            name=f"harmonize_{node_name(a.image.relpath)}",
        )
        sink.inputs.harmonization = plan.sidecar_fields(a.site)
        workflow.connect(
            [
                (
                    preproc,
                    harmonize,
                    [
                        (f"outputnode.{f}", f"inputnode.{f}")
                        for f in ("model_input", "native_preproc", "native_mask", "transform", "scale_file")
                    ],
                ),
                (
                    harmonize,
                    sink,
                    [
                        ("outputnode.native_harmonized", "native_harmonized"),
                        ("outputnode.template_harmonized", "template_harmonized"),
                    ],
                ),
            ]
        )
        if volumes:
            image = (harmonize, "outputnode.native_harmonized")
            _measure(workflow, image, preproc, sink, "native_harmonized_volumes", omp_nthreads)
        if contrast in references:
            workflow.connect(references[contrast], "outputnode.model_input", harmonize, "inputnode.reference_file")
    return workflow, not_harmonized


def _measure(
    workflow: pe.Workflow,
    image: tuple[pe.Workflow, str],
    preproc: pe.Workflow,
    sink: pe.Node,
    output: str,
    omp_nthreads: int,
) -> None:
    """A TissueVolumes node (volumes_preproc_<image> or volumes_harmonized_<image>) that measures
    ``image`` (workflow, output field) inside the preprocessing's native brain mask, into the
    sink's ``output`` (a volume table of bids.outputs.OUTPUTS)."""
    variant = OUTPUTS[output]["entities"]["description"]
    node = pe.Node(
        TissueVolumes(contrast=sink.inputs.record["suffix"], num_threads=omp_nthreads),
        name=sink.name.replace("sink_", f"volumes_{variant}_", 1),
        n_procs=omp_nthreads,
        mem_gb=1.5,
    )
    workflow.connect(
        [
            (image[0], node, [(image[1], "in_file")]),
            (preproc, node, [("outputnode.native_mask", "mask")]),
            (node, sink, [("out_file", output)]),
        ]
    )


_SINK_PREPROC = ("native_preproc", "template_preproc", "native_mask", "transform", "mask_record")


def _reference_wf(
    plan: HarmonizationPlan, template: TemplateFiles, contrast: str, masking: dict[str, Any]
) -> pe.Workflow:
    reference = init_preproc_wf(
        template_file=template.images[contrast],
        template_mask_file=template.mask,
        **masking,
        name=f"preproc_reference_{contrast}",
    )
    reference.inputs.inputnode.in_file = plan.reference_image
    return reference
