"""init_preproc_wf: conform -> N4 -> affine to template -> mask back -> model-range scaling."""

from __future__ import annotations

from nipype.interfaces.utility import IdentityInterface
from nipype.pipeline import engine as pe

from bids_harmonize.interfaces.preproc import (
    Conform,
    N4BiasCorrect,
    RegisterToTemplate,
    ScaleIntensity,
    TemplateMaskToNative,
)

PREPROC_OUTPUTS = (
    "native_preproc",  # bias-corrected, RAS-conformed, native grid
    "template_preproc",  # the same on the template grid, scanner units
    "model_input",  # template grid, scaled to [-1, 1]
    "scale_file",  # JSON lo/hi of that scaling
    "transform",  # ITK affine: template points -> native points
    "native_mask",  # template brain mask on the native grid
)


def init_preproc_wf(
    *, template_file: str, template_mask_file: str, omp_nthreads: int = 1, seed: int = 0, name: str = "preproc_wf"
) -> pe.Workflow:
    """Preprocess one anatomical image; ``inputnode.in_file`` is the raw NIfTI."""
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(IdentityInterface(fields=["in_file"]), name="inputnode")
    outputnode = pe.Node(IdentityInterface(fields=list(PREPROC_OUTPUTS)), name="outputnode")
    conform = pe.Node(Conform(), name="conform", mem_gb=1.0)
    n4 = pe.Node(N4BiasCorrect(num_threads=omp_nthreads), name="n4", n_procs=omp_nthreads, mem_gb=2.0)
    register = pe.Node(
        RegisterToTemplate(template=template_file, seed=seed, num_threads=omp_nthreads),
        name="register", n_procs=omp_nthreads, mem_gb=2.0,
    )
    mask = pe.Node(TemplateMaskToNative(mask=template_mask_file, num_threads=omp_nthreads), name="mask_to_native")
    scale = pe.Node(ScaleIntensity(mask=template_mask_file), name="scale")
    workflow.connect([
        (inputnode, conform, [("in_file", "in_file")]),
        (conform, n4, [("out_file", "in_file")]),
        (n4, register, [("out_file", "in_file")]),
        (n4, mask, [("out_file", "reference")]),
        (register, mask, [("transform", "transform")]),
        (register, scale, [("warped", "in_file")]),
        (n4, outputnode, [("out_file", "native_preproc")]),
        (register, outputnode, [("warped", "template_preproc"), ("transform", "transform")]),
        (scale, outputnode, [("out_file", "model_input"), ("scale_file", "scale_file")]),
        (mask, outputnode, [("out_file", "native_mask")]),
    ])
    return workflow
