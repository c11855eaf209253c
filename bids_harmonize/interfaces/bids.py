"""The sink: the Nipype interface that writes a participant-level derivative into OUT.

``DerivativesSink`` (niworkflows keeps its DerivativesDataSink in the same place) takes
whatever the preprocessing and harmonization produced for one image, gives each file the
name bids/outputs.py gives it, restores the raw image's orientation for native-grid outputs
(an exact axis permutation: same shape and affine as the input), and writes image + sidecar
atomically through bids/derivatives.py; the tissue-volume records of interfaces/volumes.py become
``*_volumes.tsv`` tables with a JSON data dictionary. Its node always re-runs (``overwrite=True``): it is
cheap, and the provenance it records belongs to the run that wrote it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nb
import numpy as np
from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec, isdefined, traits

from bids_harmonize.bids import derivatives, invariant
from bids_harmonize.bids.naming import sidecar_path
from bids_harmonize.bids.outputs import OUTPUTS, output_path
from bids_harmonize.bids.records import ImageRecord
from bids_harmonize.preproc.operations import restore_orientation
from bids_harmonize.qc.volumes import TISSUE_NAMES, TISSUES, VOLUME_COLUMNS, volume_rows
from bids_harmonize.sites.signature import SCANNER_KEYS

# Raw sidecar fields that stay true of a bias-corrected or resampled copy of the image.
ACQUISITION_FIELDS = (
    *SCANNER_KEYS,
    "RepetitionTime",
    "EchoTime",
    "InversionTime",
    "FlipAngle",
    "MRAcquisitionType",
    "PulseSequenceType",
    "ScanningSequence",
    "SequenceVariant",
    "SliceThickness",
)


class _SinkInputSpec(BaseInterfaceInputSpec):
    out_dir = traits.Str(mandatory=True)
    record = traits.Dict(mandatory=True, desc="ImageRecord.to_json() of the raw image")
    template = traits.Str(mandatory=True)
    resolution = traits.Int(mandatory=True, desc="template resolution (res- entity of template-space outputs)")
    provenance = traits.Dict(mandatory=True, desc="command_line and start_time of the run")
    site = traits.Dict(mandatory=True, desc="site, provenance and evidence of the raw image")
    harmonization = traits.Dict(desc="target site, style, bundle identity (only when harmonized)")
    native_preproc = File(exists=True)
    template_preproc = File(exists=True)
    native_mask = File(exists=True)
    mask_record = File(exists=True, desc="JSON: the mask method and its check, for the mask's sidecar")
    transform = File(exists=True)
    native_harmonized = File(exists=True)
    template_harmonized = File(exists=True)
    native_preproc_volumes = File(exists=True, desc="JSON from TissueVolumes of native_preproc")
    native_harmonized_volumes = File(exists=True, desc="JSON from TissueVolumes of native_harmonized")


class _SinkOutputSpec(TraitedSpec):
    out_files = traits.List(traits.Str())


class DerivativesSink(SimpleInterface):
    input_spec = _SinkInputSpec
    output_spec = _SinkOutputSpec

    def _run_interface(self, runtime):
        record = ImageRecord.from_json(self.inputs.record)
        provenance = derivatives.Provenance(
            command_line=list(self.inputs.provenance["command_line"]), start_time=self.inputs.provenance["start_time"]
        )
        writer = _Writer(Path(self.inputs.out_dir), record, provenance, self.inputs.template, self.inputs.site)
        writer.resolution = self.inputs.resolution
        if isdefined(self.inputs.mask_record):
            writer.mask_fields = json.loads(Path(self.inputs.mask_record).read_text())
        harmonization = self.inputs.harmonization if isdefined(self.inputs.harmonization) else None
        # Every image of this raw image passes the output invariant before any is written.
        prepared = [
            writer.prepare(Path(getattr(self.inputs, name)), name, harmonization)
            for name, spec in OUTPUTS.items()
            if isdefined(getattr(self.inputs, name)) and (harmonization or not spec.get("harmonized"))
        ]
        for target, content, sidecar in prepared:
            writer.commit(target, content, sidecar)
        self._results["out_files"] = [str(p) for p in writer.written]
        return runtime


class _Writer:
    def __init__(
        self, out_dir: Path, record: ImageRecord, provenance: derivatives.Provenance, template: str, site: dict
    ):
        self.out_dir, self.record, self.provenance, self.template, self.site = (
            out_dir,
            record,
            provenance,
            template,
            site,
        )
        self.written: list[Path] = []
        self.resolution = 1
        self.mask_fields: dict[str, Any] = {}  # MaskMethod (+ MaskCheck) of the brain mask's sidecar
        self._raw: nb.Nifti1Image | None = None

    def prepare(self, path: Path, name: str, harmonization: dict | None) -> tuple[Path, Any, dict | None]:
        """(where, what, sidecar) of one output; harmonized images are held to the output
        invariant here (bids/invariant.py), which raises before anything is written."""
        spec = OUTPUTS[name]
        target = output_path(self.out_dir, self.record, name, self.template, self.resolution)
        if spec.get("table"):
            measured = json.loads(path.read_text())
            volumes = measured["Volumes"]
            rows = volume_rows(volumes) if volumes else [{"tissue": t, "volume_ml": "n/a"} for t in TISSUES]
            return target, rows, self._table_sidecar(spec, measured, harmonization)
        if spec.get("extension") == ".txt":
            return target, path, None
        img = nb.load(path)
        if spec.get("native"):
            self._raw = self._raw or nb.load(self.record.path)
            img = restore_orientation(img, self._raw)
        sidecar = self._sidecar(spec, harmonization)
        if spec.get("harmonized") and harmonization:
            img, sidecar["OutputRange"] = self._within_range(img, harmonization)
        else:
            invariant.enforce(np.asanyarray(img.dataobj), image=f"{self.record.relpath} ({name})")
        return target, img, sidecar

    def _within_range(self, img: nb.Nifti1Image, harmonization: dict) -> tuple[nb.Nifti1Image, dict[str, Any]]:
        scale = harmonization["TargetIntensityScale"]
        bounds = invariant.OutputRange.for_target(scale["lo"], scale["hi"])
        data, clipped = invariant.enforce(
            np.asarray(img.dataobj, np.float32),
            image=self.record.relpath,
            bundle=harmonization["ModelBundle"]["Path"],
            bounds=bounds,
        )
        out = nb.Nifti1Image(data, img.affine, img.header)
        out.set_data_dtype(np.float32)
        return out, bounds.record(clipped)

    def commit(self, target: Path, content: Any, sidecar: dict | None) -> None:
        if target.suffix == ".tsv":
            derivatives.write_tsv(target, content, VOLUME_COLUMNS)
            derivatives.write_json(sidecar_path(target), sidecar)
        elif sidecar is None:
            derivatives.atomic_copy(content, target)
        else:
            derivatives.write_image(content, target, sidecar)
        self.written.append(target)

    def _table_sidecar(self, spec: dict[str, Any], measured: dict, harmonization: dict | None) -> dict[str, Any]:
        """A volume table's data dictionary: its columns, what was measured inside which mask, by
        which segmenter (name, version, settings), and the run's provenance."""

        def uri(output: str) -> str:
            path = output_path(self.out_dir, self.record, output, self.template, self.resolution)
            return "bids::" + path.relative_to(self.out_dir).as_posix()

        content: dict[str, Any] = {
            "tissue": {"Description": "tissue class", "Levels": {t: TISSUE_NAMES[t] for t in TISSUES}},
            "volume_ml": {"Description": "tissue volume inside the brain mask", "Units": "ml"},
            "Sources": [uri(spec["measures"]), uri("native_mask"), self.record.bids_uri],
            "MeasuredImage": uri(spec["measures"]),
            "BrainMask": uri("native_mask"),
            "VoxelVolume": measured["VoxelVolume"],
            "Segmenter": measured["Segmenter"],
            "SourceSite": self.site["site"],
        }
        if measured.get("Error"):
            content["MeasureError"] = measured["Error"]
        if spec.get("harmonized") and harmonization:
            content.update(harmonization)
        content.update(self.provenance.fields())
        return content

    def _sidecar(self, spec: dict[str, Any], harmonization: dict | None) -> dict[str, Any]:
        extra: dict[str, Any] = {
            "SourceSite": self.site["site"],
            "SourceSiteProvenance": self.site["provenance"],
            "SourceSiteEvidence": self.site["evidence"],
        }
        if not spec.get("native"):
            extra["SpatialReference"] = self.template
            # BIDS requires Resolution wherever res- is used: what each res value means.
            extra["Resolution"] = {
                str(self.resolution): f"{self.resolution} mm isotropic grid of {self.template} "
                f"(TemplateFlow res-{self.resolution})"
            }
        if spec.get("mask"):
            extra = {"Type": "Brain", "SpatialReference": "native", **self.mask_fields}
        if spec.get("harmonized") and harmonization:
            extra.update(harmonization)
        inherited = None
        if not spec.get("mask") and not spec.get("harmonized"):
            inherited = {k: self.record.metadata[k] for k in ACQUISITION_FIELDS if k in self.record.metadata}
        return derivatives.image_sidecar(
            [self.record], self.provenance, skull_stripped=False, extra=extra, inherited=inherited
        )
