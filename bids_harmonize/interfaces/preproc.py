"""Thin Nipype interfaces around bids_harmonize.preproc.operations.

Each reads its inputs, calls one plain function, and writes its outputs into the node's
working directory. Thread counts are ``nohash`` inputs: they change how fast a node runs,
never what it produces, so they must not invalidate Nipype's cache.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nb
import numpy as np
import SimpleITK as sitk
from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec, isdefined, traits

from bids_harmonize.preproc import brainmask, operations as op


class _ThreadedInputSpec(BaseInterfaceInputSpec):
    num_threads = traits.Int(1, usedefault=True, nohash=True, desc="SimpleITK threads")


class _ThreadedInterface(SimpleInterface):
    def _set_threads(self) -> None:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(max(1, self.inputs.num_threads))

    def _out(self, name: str) -> str:
        return str(Path.cwd() / name)


class _ConformInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True)


class _ImageOutputSpec(TraitedSpec):
    out_file = File(exists=True)


class Conform(SimpleInterface):
    """Reorient to RAS+ and float32, keeping the original grid."""

    input_spec = _ConformInputSpec
    output_spec = _ImageOutputSpec

    def _run_interface(self, runtime):
        out = Path(runtime.cwd) / "conformed.nii.gz"
        op.conform(nb.load(self.inputs.in_file)).to_filename(out)
        self._results["out_file"] = str(out)
        return runtime


class _N4InputSpec(_ThreadedInputSpec):
    in_file = File(exists=True, mandatory=True)
    working_spacing_mm = traits.Float(4.0, usedefault=True)


class _N4OutputSpec(TraitedSpec):
    out_file = File(exists=True)
    bias_field = File(exists=True)


class N4BiasCorrect(_ThreadedInterface):
    input_spec = _N4InputSpec
    output_spec = _N4OutputSpec

    def _run_interface(self, runtime):
        self._set_threads()
        corrected, field = op.n4_bias_correct(nb.load(self.inputs.in_file), self.inputs.working_spacing_mm)
        for key, img, name in (("out_file", corrected, "corrected.nii.gz"), ("bias_field", field, "bias.nii.gz")):
            img.to_filename(self._out(name))
            self._results[key] = self._out(name)
        return runtime


class _LearnedMaskInputSpec(_ThreadedInputSpec):
    in_file = File(exists=True, mandatory=True, desc="conformed head, native grid")
    device = traits.Str("cpu", usedefault=True, nohash=True, desc="torch device of the network")


class LearnedBrainMask(_ThreadedInterface):
    """deepbet's brain mask on the native grid (bids_harmonize/preproc/brainmask.py)."""

    input_spec = _LearnedMaskInputSpec
    output_spec = _ImageOutputSpec

    def _run_interface(self, runtime):
        mask = brainmask.learned_mask(nb.load(self.inputs.in_file), self.inputs.device, self.inputs.num_threads)
        mask.to_filename(self._out("learned_mask.nii.gz"))
        self._results["out_file"] = self._out("learned_mask.nii.gz")
        return runtime


class _RegisterInputSpec(_ThreadedInputSpec):
    in_file = File(exists=True, mandatory=True, desc="native image")
    template = File(exists=True, mandatory=True, desc="template of the same contrast")
    seed = traits.Int(0, usedefault=True)
    in_mask = File(exists=True, requires=["template_mask"], desc="brain mask of in_file: register brain to brain")
    template_mask = File(exists=True, requires=["in_mask"], desc="the template's brain mask")


class _RegisterOutputSpec(TraitedSpec):
    transform = File(exists=True, desc="ITK affine mapping template points to native points")
    warped = File(exists=True, desc="native image resampled on the template grid")


class RegisterToTemplate(_ThreadedInterface):
    input_spec = _RegisterInputSpec
    output_spec = _RegisterOutputSpec

    def _run_interface(self, runtime):
        self._set_threads()
        moving, fixed = nb.load(self.inputs.in_file), nb.load(self.inputs.template)
        masks = {}
        if isdefined(self.inputs.in_mask):
            masks = {"moving_mask": nb.load(self.inputs.in_mask), "fixed_mask": nb.load(self.inputs.template_mask)}
        transform = op.register_affine(moving, fixed, seed=self.inputs.seed, **masks)
        self._results["transform"] = str(op.save_transform(transform, Path(self._out("to_template.txt"))))
        op.resample(moving, fixed, transform).to_filename(self._out("warped.nii.gz"))
        self._results["warped"] = self._out("warped.nii.gz")
        return runtime


class _MaskToNativeInputSpec(_ThreadedInputSpec):
    mask = File(exists=True, mandatory=True, desc="template brain mask")
    reference = File(exists=True, mandatory=True, desc="native image whose grid the mask takes")
    transform = File(exists=True, mandatory=True)


class TemplateMaskToNative(_ThreadedInterface):
    """Carry the template brain mask back onto the native grid (nearest neighbour)."""

    input_spec = _MaskToNativeInputSpec
    output_spec = _ImageOutputSpec

    def _run_interface(self, runtime):
        self._set_threads()
        to_native = op.inverse(op.load_transform(Path(self.inputs.transform)))
        mask = op.resample(nb.load(self.inputs.mask), nb.load(self.inputs.reference), to_native, nearest=True)
        mask.to_filename(self._out("brain_mask.nii.gz"))
        self._results["out_file"] = self._out("brain_mask.nii.gz")
        return runtime


class _MaskRecordInputSpec(BaseInterfaceInputSpec):
    method = traits.Enum(*brainmask.METHODS, mandatory=True)
    mask = File(exists=True, desc="the learned mask (native grid)")
    template_mask = File(exists=True, desc="the template mask carried to the same grid")


class MaskRecord(SimpleInterface):
    """JSON for the mask sidecar: the mask method (name, version, weights' SHA-256, citation)
    and, for a learned mask, its agreement with the registered template mask."""

    input_spec = _MaskRecordInputSpec
    output_spec = _ImageOutputSpec

    def _run_interface(self, runtime):
        record: dict = {"MaskMethod": brainmask.method_record(self.inputs.method)}
        if isdefined(self.inputs.mask) and isdefined(self.inputs.template_mask):
            check = brainmask.check_mask(nb.load(self.inputs.mask), nb.load(self.inputs.template_mask))
            record["MaskCheck"] = check.as_dict()
        out = Path(runtime.cwd) / "mask_record.json"
        out.write_text(json.dumps(record, indent=2))
        self._results["out_file"] = str(out)
        return runtime


class _ScaleInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="template-space image in scanner units")
    mask = File(exists=True, mandatory=True, desc="template brain mask")


class _ScaleOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="image in the model range [-1, 1]")
    scale_file = File(exists=True, desc="JSON with the lo/hi of the linear map")


class ScaleIntensity(SimpleInterface):
    input_spec = _ScaleInputSpec
    output_spec = _ScaleOutputSpec

    def _run_interface(self, runtime):
        img = nb.load(self.inputs.in_file)
        data = np.asarray(img.dataobj, np.float32)
        scale = op.robust_scale(data, np.asarray(nb.load(self.inputs.mask).dataobj))
        out, scale_file = Path(runtime.cwd) / "model_input.nii.gz", Path(runtime.cwd) / "scale.json"
        nb.Nifti1Image(scale.to_model(data), img.affine).to_filename(out)
        scale_file.write_text(json.dumps(scale.as_dict()))
        self._results.update(out_file=str(out), scale_file=str(scale_file))
        return runtime
