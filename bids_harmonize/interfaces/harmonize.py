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
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    Directory,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from bids_harmonize.preproc import operations as op


class _HarmonizeInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="template-space image in the model range")
    bundle_dir = Directory(exists=True, mandatory=True)
    bundle_sha256 = traits.Str(mandatory=True, desc="identity of the weights (part of the cache hash)")
    target_site = traits.Str(mandatory=True)
    source_site = traits.Str(mandatory=True, desc="the site the image was acquired at (a bundle site)")
    style = traits.Enum("site", "random", "reference", usedefault=True)
    seed = traits.Int(0, usedefault=True)
    reference_file = File(exists=True, desc="template-space image of the target site (style='reference')")
    brain_mask_file = File(
        exists=True, desc="the template's brain mask: the image's own quantiles set its intensity map"
    )
    device = traits.Str("cpu", usedefault=True, nohash=True)
    use_gpu = traits.Bool(False, usedefault=True, nohash=True, desc="tells MultiProc this is a GPU node")
    batch_size = traits.Int(0, usedefault=True, nohash=True, desc="0: fit to device memory")
    num_threads = traits.Int(1, usedefault=True, nohash=True)


class _HarmonizeOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="harmonized template-space image in the model range")
    lookup_file = File(exists=True, desc="the voxel-wise part of the change: model-range inputs -> outputs (JSON)")
    lookup_input_file = File(exists=True, desc="what the lookup applies to: in_file, or its denoised copy")


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
        volume = np.asarray(img.dataobj, np.float32)
        reference = None
        if self.inputs.style == "reference" and isdefined(self.inputs.reference_file):
            reference = np.asarray(nb.load(self.inputs.reference_file).dataobj, np.float32)
        mask = None
        if isdefined(self.inputs.brain_mask_file):
            mask = np.asarray(nb.load(self.inputs.brain_mask_file).dataobj) > 0
        translation = bundle.harmonize_with_lookup(
            volume,
            self.inputs.target_site,
            style=self.inputs.style,
            reference=reference,
            seed=self.inputs.seed,
            source_site=self.inputs.source_site,
            brain_mask=mask,
            batch_size=self.inputs.batch_size or None,
        )
        # Non-finite or implausible values are refused where outputs are written, naming the raw
        # image and this bundle (bids/invariant.py, applied by the sink in interfaces/bids.py).
        out = Path(runtime.cwd) / "harmonized_model_range.nii.gz"
        nb.Nifti1Image(translation.harmonized.astype(np.float32), img.affine).to_filename(out)
        lookup_input = Path(self.inputs.in_file)
        if translation.denoised:
            lookup_input = Path(runtime.cwd) / "denoised_model_range.nii.gz"
            nb.Nifti1Image(translation.lookup_input, img.affine).to_filename(lookup_input)
        inputs, outputs = translation.lookup
        lookup = Path(runtime.cwd) / "intensity_lookup.json"
        lookup.write_text(
            json.dumps({"inputs": inputs.tolist(), "outputs": outputs.tolist(), "denoised": translation.denoised})
        )
        self._results.update(out_file=str(out), lookup_file=str(lookup), lookup_input_file=str(lookup_input))
        return runtime


class _ToNativeInputSpec(BaseInterfaceInputSpec):
    harmonized = File(exists=True, mandatory=True, desc="template-space output in the model range")
    model_input = File(
        exists=True, mandatory=True, desc="what the lookup applied to (HarmonizeVolume's lookup_input_file)"
    )
    lookup_file = File(exists=True, mandatory=True, desc="voxel-wise part of the change (from HarmonizeVolume)")
    native = File(exists=True, mandatory=True, desc="bias-corrected native image (grid and fallback values)")
    native_mask = File(exists=True, desc="brain mask on the native grid: where the native image is denoised, if it is")
    transform = File(exists=True, mandatory=True, desc="template -> native points (from RegisterToTemplate)")
    source_scale = File(exists=True, mandatory=True, desc="JSON lo/hi of the source image")
    target_lo = traits.Float(mandatory=True)
    target_hi = traits.Float(mandatory=True)
    num_threads = traits.Int(1, usedefault=True, nohash=True)


class _ToNativeOutputSpec(TraitedSpec):
    native_file = File(exists=True, desc="harmonized, native grid, target intensity scale")
    template_file = File(exists=True, desc="harmonized, template grid, target intensity scale")


class HarmonizedToNative(SimpleInterface):
    """Carry the model's change to the scan itself, not the template-grid image back.

    The change has two parts: a voxel-wise intensity map (the lookup table), applied to every
    native voxel so the scan keeps its own resolution and detail; and the rest (the template-grid
    output minus the mapped input), a residual resampled onto the native grid and added. Outside
    the template's field of view the residual is zero and the voxel-wise map still applies, so
    there is no seam at the edge of the field of view. Where the template-grid image was denoised
    before its map (noise matching, preproc/noise.py), the native image is denoised inside its
    brain mask the same way before the map applies.
    """

    input_spec = _ToNativeInputSpec
    output_spec = _ToNativeOutputSpec

    def _run_interface(self, runtime):
        import SimpleITK as sitk

        from bids_harmonize.model.curves import apply_lookup
        from bids_harmonize.preproc.noise import denoise

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(max(1, self.inputs.num_threads))
        target = op.IntensityScale(self.inputs.target_lo, self.inputs.target_hi)
        source = op.IntensityScale(**json.loads(Path(self.inputs.source_scale).read_text()))
        table = json.loads(Path(self.inputs.lookup_file).read_text())
        lookup = np.asarray(table["inputs"], np.float32), np.asarray(table["outputs"], np.float32)
        harmonized, native = nb.load(self.inputs.harmonized), nb.load(self.inputs.native)
        harmonized_model = np.asarray(harmonized.dataobj, np.float32)
        residual = harmonized_model - apply_lookup(np.asarray(nb.load(self.inputs.model_input).dataobj), *lookup)
        to_native = op.inverse(op.load_transform(Path(self.inputs.transform)))
        # Linear interpolation with 0 outside the template grid: the residual fades to nothing there.
        residual_native = op.resample(nb.Nifti1Image(residual, harmonized.affine), native, to_native).get_fdata(
            dtype=np.float32
        )
        raw = np.asarray(native.dataobj, np.float32)
        native_model = 2.0 * (raw - source.lo) / (source.hi - source.lo) - 1.0  # unclipped model range
        if table.get("denoised", False):
            native_model = denoise(native_model, self._native_mask(raw.shape))
        result = target.to_scanner(apply_lookup(native_model, *lookup) + residual_native)
        in_template = nb.Nifti1Image(target.to_scanner(harmonized_model), harmonized.affine)
        paths = {
            "native_file": Path(runtime.cwd) / "native.nii.gz",
            "template_file": Path(runtime.cwd) / "template.nii.gz",
        }
        nb.Nifti1Image(result.astype(np.float32), native.affine, native.header).to_filename(paths["native_file"])
        in_template.to_filename(paths["template_file"])
        self._results.update({k: str(v) for k, v in paths.items()})
        return runtime

    def _native_mask(self, shape: tuple[int, ...]) -> np.ndarray:
        if not isdefined(self.inputs.native_mask):
            raise ValueError(
                f"{self.inputs.lookup_file}: the template-grid image was denoised before its map, so the native "
                "image must be too; connect the preprocessing's native_mask to this node's native_mask"
            )
        mask = np.asarray(nb.load(self.inputs.native_mask).dataobj) > 0
        if mask.shape != shape:
            raise ValueError(f"{self.inputs.native_mask}: mask of shape {mask.shape}, native image {shape}")
        return mask
