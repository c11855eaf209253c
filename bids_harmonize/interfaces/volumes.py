"""Nipype interface around the tissue-volume segmenter (bids_harmonize.qc.volumes).

``TissueVolumes`` measures one image (the preprocessed or the harmonized one, on its native grid)
inside a brain mask with ANTs Atropos and writes a JSON record: the volumes in ml, the voxel
volume and the segmenter's identity and settings. An image the segmenter refuses (a mask of too
few voxels, a constant image) gets ``Volumes: null`` and the ``Error``, not a crash: the sink
then writes a table of n/a, and the image's other outputs are still written. The sink
(interfaces/bids.py) turns the record into the derivative volume table and its sidecar.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nb
import numpy as np
from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec, traits

from bids_harmonize.qc.volumes import SegmenterInfo, tissue_volumes


class _VolumesInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="image to measure (native grid)")
    mask = File(exists=True, mandatory=True, desc="brain mask on the same grid")
    contrast = traits.Enum("T1w", "T2w", mandatory=True, desc="orders the k-means classes: dark to bright")
    num_threads = traits.Int(1, usedefault=True, nohash=True, desc="ITK threads of Atropos")


class _VolumesOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="JSON: Volumes (tissue -> ml), VoxelVolume, Segmenter")


class TissueVolumes(SimpleInterface):
    """CSF, GM and WM volumes (ml) of ``in_file`` inside ``mask`` (qc.volumes.tissue_volumes)."""

    input_spec = _VolumesInputSpec
    output_spec = _VolumesOutputSpec

    def _run_interface(self, runtime):
        # ITK reads its thread count when a filter is built; set here, inside the worker.
        os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(max(1, self.inputs.num_threads))
        image, mask = nb.load(self.inputs.in_file), nb.load(self.inputs.mask)
        if image.shape[:3] != mask.shape[:3] or not np.allclose(image.affine, mask.affine, atol=1e-3):
            raise ValueError(
                f"{self.inputs.in_file} and its mask {self.inputs.mask} are on different grids; "
                "the volumes need the mask of the measured image's own grid"
            )
        voxel_ml = float(np.prod(image.header.get_zooms()[:3])) / 1000.0
        record = {"Volumes": None, "VoxelVolume": voxel_ml, "Segmenter": SegmenterInfo().record()}
        try:
            record["Volumes"] = tissue_volumes(
                np.asarray(image.dataobj, np.float32), np.asarray(mask.dataobj) > 0, voxel_ml, self.inputs.contrast
            )
        except (ValueError, RuntimeError) as err:  # a measure must not cost the image its outputs
            record["Error"] = f"{type(err).__name__}: {err}"
        out = Path(runtime.cwd) / "volumes.json"
        out.write_text(json.dumps(record, indent=2))
        self._results["out_file"] = str(out)
        return runtime
