"""Nipype interfaces for MURD inference and for mapping its output back to the native grid.

``HarmonizeVolume`` has a ``use_gpu`` input, which is how Nipype's MultiProc plugin
recognises a GPU node and schedules it on its GPU queue. Device, GPU flag and batch size
are ``nohash``: they change where and how fast inference runs, not its result, so a re-run
on another machine reuses the cache. The bundle's SHA-256 is hashed: a new model re-runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nb
import numpy as np
from nipype.interfaces.base import BaseInterfaceInputSpec, Directory, File, SimpleInterface, TraitedSpec, isdefined, traits

from bids_harmonize.preproc import operations as op


class _HarmonizeInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="template-space image in the model range")
    bundle_dir = Directory(exists=True, mandatory=True)
    bundle_sha256 = traits.Str(mandatory=True, desc="identity of the weights (part of the cache hash)")
    target_site = traits.Str(mandatory=True)
    style = traits.Enum("site", "random", "reference", usedefault=True)
    seed = traits.Int(0, usedefault=True)
    reference_file = File(exists=True, desc="template-space image of the target site (style='reference')")
    device = traits.Str("cpu", usedefault=True, nohash=True)
    use_gpu = traits.Bool(False, usedefault=True, nohash=True, desc="tells MultiProc this is a GPU node")
    batch_size = traits.Int(0, usedefault=True, nohash=True, desc="0: fit to device memory")
    num_threads = traits.Int(1, usedefault=True, nohash=True)


class _HarmonizeOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="harmonized template-space image in the model range")


class HarmonizeVolume(SimpleInterface):
    input_spec = _HarmonizeInputSpec
    output_spec = _HarmonizeOutputSpec

    def _run_interface(self, runtime):
        import torch

        from bids_harmonize.model import load_bundle

        torch.set_num_threads(max(1, self.inputs.num_threads))
        bundle = load_bundle(self.inputs.bundle_dir, device=self.inputs.device)
        if bundle.sha256 != self.inputs.bundle_sha256:
            raise RuntimeError(f"{self.inputs.bundle_dir} changed while the workflow ran (SHA-256 differs)")
        img = nb.load(self.inputs.in_file)
        reference = None
        if self.inputs.style == "reference" and isdefined(self.inputs.reference_file):
            reference = np.asarray(nb.load(self.inputs.reference_file).dataobj, np.float32)
        harmonized = bundle.harmonize(
            np.asarray(img.dataobj, np.float32),
            self.inputs.target_site,
            style=self.inputs.style,
            reference=reference,
            seed=self.inputs.seed,
            batch_size=self.inputs.batch_size or None,
        )
        out = Path(runtime.cwd) / "harmonized_model_range.nii.gz"
        nb.Nifti1Image(harmonized.astype(np.float32), img.affine).to_filename(out)
        self._results["out_file"] = str(out)
        return runtime


class _ToNativeInputSpec(BaseInterfaceInputSpec):
    harmonized = File(exists=True, mandatory=True, desc="template-space output in the model range")
    native = File(exists=True, mandatory=True, desc="bias-corrected native image (grid and fallback values)")
    transform = File(exists=True, mandatory=True, desc="template -> native points (from RegisterToTemplate)")
    source_scale = File(exists=True, mandatory=True, desc="JSON lo/hi of the source image")
    target_lo = traits.Float(mandatory=True)
    target_hi = traits.Float(mandatory=True)
    num_threads = traits.Int(1, usedefault=True, nohash=True)


class _ToNativeOutputSpec(TraitedSpec):
    native_file = File(exists=True, desc="harmonized, native grid, target intensity scale")
    template_file = File(exists=True, desc="harmonized, template grid, target intensity scale")


class HarmonizedToNative(SimpleInterface):
    """Target-scale intensities on the template grid, then onto the exact native grid.

    Native voxels outside the template's field of view (neck, far scalp) were never seen by the
    model; they keep their own values, mapped linearly from the source scale to the target's.
    """

    input_spec = _ToNativeInputSpec
    output_spec = _ToNativeOutputSpec

    def _run_interface(self, runtime):
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(max(1, self.inputs.num_threads))
        target = op.IntensityScale(self.inputs.target_lo, self.inputs.target_hi)
        source = op.IntensityScale(**json.loads(Path(self.inputs.source_scale).read_text()))
        harmonized, native = nb.load(self.inputs.harmonized), nb.load(self.inputs.native)
        in_template = nb.Nifti1Image(target.to_scanner(np.asarray(harmonized.dataobj)), harmonized.affine)
        to_native = op.inverse(op.load_transform(Path(self.inputs.transform)))
        on_native = op.resample(in_template, native, to_native).get_fdata(dtype=np.float32)
        coverage = op.resample(
            nb.Nifti1Image(np.ones(harmonized.shape, np.uint8), harmonized.affine), native, to_native, nearest=True
        ).get_fdata() > 0
        raw = np.asarray(native.dataobj, np.float32)
        outside = (raw - source.lo) / (source.hi - source.lo) * (target.hi - target.lo) + target.lo
        result = np.where(coverage, on_native, outside).astype(np.float32)
        paths = {"native_file": Path(runtime.cwd) / "native.nii.gz", "template_file": Path(runtime.cwd) / "template.nii.gz"}
        nb.Nifti1Image(result, native.affine, native.header).to_filename(paths["native_file"])
        in_template.to_filename(paths["template_file"])
        self._results.update({k: str(v) for k, v in paths.items()})
        return runtime
