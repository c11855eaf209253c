"""init_preproc_wf: conform -> N4 -> brain mask -> affine to template -> model-range scaling.

With the learned mask (``brain_mask="deepbet"``, the default) the network's mask of the
conformed image is the native brain mask, the skull-stripped image is registered to the
skull-stripped template, and the template mask carried back through that registration is kept
only to check the learned one (the mask sidecar records their agreement). With
``brain_mask="template"`` the whole head is registered and the template mask carried back is
the mask, as before.
"""

from __future__ import annotations

from nipype.interfaces.utility import IdentityInterface
from nipype.pipeline import engine as pe

from bids_harmonize.interfaces.preproc import (
    Conform,
    LearnedBrainMask,
    MaskRecord,
    N4BiasCorrect,
    RegisterToTemplate,
    ScaleIntensity,
    TemplateMaskToNative,
)
from bids_harmonize.preproc.brainmask import DEFAULT_METHOD, METHODS

PREPROC_OUTPUTS = (
    "native_preproc",  # bias-corrected, RAS-conformed, native grid
    "template_preproc",  # the same on the template grid, scanner units
    "model_input",  # template grid, scaled to [-1, 1]
    "scale_file",  # JSON lo/hi of that scaling
    "transform",  # ITK affine: template points -> native points
    "native_mask",  # brain mask on the native grid (learned, or the template's carried back)
    "mask_record",  # JSON for the mask sidecar: method, version, weights, check
)


def init_preproc_wf(
    *,
    template_file: str,
    template_mask_file: str,
    brain_mask: str = DEFAULT_METHOD,
    device: str = "cpu",
    omp_nthreads: int = 1,
    seed: int = 0,
    name: str = "preproc_wf",
) -> pe.Workflow:
    """Preprocess one anatomical image; ``inputnode.in_file`` is the raw NIfTI."""
    if brain_mask not in METHODS:
        raise ValueError(f"brain_mask must be one of {METHODS}, got {brain_mask!r}")
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(IdentityInterface(fields=["in_file"]), name="inputnode")
    outputnode = pe.Node(IdentityInterface(fields=list(PREPROC_OUTPUTS)), name="outputnode")
    conform = pe.Node(Conform(), name="conform", mem_gb=1.0)
    n4 = pe.Node(N4BiasCorrect(num_threads=omp_nthreads), name="n4", n_procs=omp_nthreads, mem_gb=2.0)
    register = pe.Node(
        RegisterToTemplate(template=template_file, seed=seed, num_threads=omp_nthreads),
        name="register",
        n_procs=omp_nthreads,
        mem_gb=2.0,
    )
    carried = pe.Node(TemplateMaskToNative(mask=template_mask_file, num_threads=omp_nthreads), name="mask_to_native")
    record = pe.Node(MaskRecord(method=brain_mask), name="mask_record")
    scale = pe.Node(ScaleIntensity(mask=template_mask_file), name="scale")
    workflow.connect(
        [
            (inputnode, conform, [("in_file", "in_file")]),
            (conform, n4, [("out_file", "in_file")]),
            (n4, register, [("out_file", "in_file")]),
            (n4, carried, [("out_file", "reference")]),
            (register, carried, [("transform", "transform")]),
            (register, scale, [("warped", "in_file")]),
            (n4, outputnode, [("out_file", "native_preproc")]),
            (register, outputnode, [("warped", "template_preproc"), ("transform", "transform")]),
            (scale, outputnode, [("out_file", "model_input"), ("scale_file", "scale_file")]),
            (record, outputnode, [("out_file", "mask_record")]),
        ]
    )
    if brain_mask == "template":
        workflow.connect(carried, "out_file", outputnode, "native_mask")
        return workflow
    learned = pe.Node(
        LearnedBrainMask(device=device, num_threads=omp_nthreads), name="learned_mask", n_procs=omp_nthreads, mem_gb=3.0
    )
    register.inputs.template_mask = template_mask_file
    workflow.connect(
        [
            (conform, learned, [("out_file", "in_file")]),  # the network was trained on raw intensities
            (learned, register, [("out_file", "in_mask")]),
            (learned, record, [("out_file", "mask")]),
            (carried, record, [("out_file", "template_mask")]),
            (learned, outputnode, [("out_file", "native_mask")]),
        ]
    )
    return workflow
