"""init_harmonize_wf: MURD inference in template space, then back to the native grid."""

from __future__ import annotations

from nipype.interfaces.utility import IdentityInterface
from nipype.pipeline import engine as pe

from bids_harmonize.interfaces.harmonize import HarmonizedToNative, HarmonizeVolume


def init_harmonize_wf(
    *,
    bundle_dir: str,
    bundle_sha256: str,
    target_site: str,
    source_site: str,
    target_scale: tuple[float, float],
    style: str = "site",
    seed: int = 0,
    device: str = "cpu",
    omp_nthreads: int = 1,
    brain_mask: str | None = None,
    name: str = "harmonize_wf",
) -> pe.Workflow:
    """Inputs: model_input, native_preproc, native_mask, transform, scale_file (from init_preproc_wf) and,
    for style='reference', reference_file (a preprocessed image of the target site).
    `brain_mask`: the template's brain mask, on the model input's grid (each image's own
    quantiles inside it set its intensity map; model/anchors.py, image_lookup)."""
    workflow = pe.Workflow(name=name)
    fields = ["model_input", "native_preproc", "native_mask", "transform", "scale_file", "reference_file"]
    inputnode = pe.Node(IdentityInterface(fields=fields), name="inputnode")
    outputnode = pe.Node(IdentityInterface(fields=["native_harmonized", "template_harmonized"]), name="outputnode")
    murd = pe.Node(
        HarmonizeVolume(
            bundle_dir=bundle_dir,
            bundle_sha256=bundle_sha256,
            target_site=target_site,
            source_site=source_site,
            style=style,
            seed=seed,
            device=device,
            use_gpu=device.startswith("cuda"),
            num_threads=omp_nthreads,
            **({"brain_mask_file": brain_mask} if brain_mask else {}),
        ),
        name="murd",
        n_procs=omp_nthreads,
        mem_gb=4.0,
    )
    to_native = pe.Node(
        HarmonizedToNative(target_lo=target_scale[0], target_hi=target_scale[1], num_threads=omp_nthreads),
        name="to_native",
    )
    workflow.connect(
        [
            (inputnode, murd, [("model_input", "in_file")]),
            (
                inputnode,
                to_native,
                [
                    ("native_preproc", "native"),
                    ("native_mask", "native_mask"),
                    ("transform", "transform"),
                    ("scale_file", "source_scale"),
                ],
            ),
            (
                murd,
                to_native,
                [("out_file", "harmonized"), ("lookup_file", "lookup_file"), ("lookup_input_file", "model_input")],
            ),
            (to_native, outputnode, [("native_file", "native_harmonized"), ("template_file", "template_harmonized")]),
        ]
    )
    if style == "reference":
        workflow.connect(inputnode, "reference_file", murd, "reference_file")
    return workflow
