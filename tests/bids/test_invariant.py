"""The output invariant (bids/invariant.py) where every participant output is written
(workflows/outputs.py), and the model card's plausibility bounds (model/bundle.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest

from bids_harmonize.bids import invariant
from bids_harmonize.bids.records import ImageRecord
from bids_harmonize.interfaces.bids import DerivativesSink

BUNDLE = "/models/T1w"
SCALE = {"lo": 0.0, "hi": 1000.0}


def test_the_range_is_the_model_range_widened_on_the_target_scale():
    bounds = invariant.OutputRange.for_target(0.0, 1000.0)
    assert (bounds.lo, bounds.hi) == (-250.0, 2000.0)
    data, clipped = invariant.enforce(
        np.array([-300.0, 10.0, 2500.0] + [5.0] * 97, np.float32), image="x", bundle=BUNDLE, bounds=bounds
    )
    assert clipped == 2 and data.min() == -250.0 and data.max() == 2000.0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_value_is_refused_naming_the_image_and_the_bundle(bad):
    data = np.ones(10, np.float32)
    data[3] = bad
    with pytest.raises(
        invariant.OutputInvariantError, match=r"sub-01_T1w.nii.gz harmonized with the model bundle /models/T1w: 1 voxel"
    ):
        invariant.enforce(data, image="sub-01_T1w.nii.gz", bundle=BUNDLE, bounds=invariant.OutputRange(0, 1))


def test_an_output_mostly_outside_the_range_is_refused():
    with pytest.raises(invariant.OutputInvariantError, match="outside the output range"):
        invariant.enforce(np.full(100, 1e6, np.float32), image="x", bundle=BUNDLE, bounds=invariant.OutputRange(0, 1))


def _sink(tmp_path: Path, harmonized: np.ndarray) -> DerivativesSink:
    raw = tmp_path / "raw" / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    raw.parent.mkdir(parents=True)
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    nb.Nifti1Image(np.ones(harmonized.shape, np.int16), affine).to_filename(raw)
    files = {}
    for name, data in (("native_preproc", np.ones(harmonized.shape, np.float32)), ("native_harmonized", harmonized)):
        files[name] = tmp_path / f"{name}.nii.gz"
        nb.Nifti1Image(data, affine).to_filename(files[name])
    record = ImageRecord(raw, "sub-01/anat/sub-01_T1w.nii.gz", "01", None, "T1w")
    return DerivativesSink(
        out_dir=str(tmp_path / "out"),
        record=record.to_json(),
        template="MNI152NLin2009cSym",
        resolution=2,
        provenance={"command_line": ["bids_harmonize"], "start_time": "now"},
        site={"site": "A", "provenance": "inferred", "evidence": ""},
        harmonization={"TargetIntensityScale": SCALE, "ModelBundle": {"Path": BUNDLE}},
        **{name: str(path) for name, path in files.items()},
    )


def test_the_sink_clips_and_says_so_in_the_sidecar(tmp_path):
    data = np.full((8, 8, 8), 500.0, np.float32)
    data[0, 0, 0] = 8709.0  # the native maximum for a target hi of 2,273
    _sink(tmp_path, data).run()
    out = tmp_path / "out" / "sub-01" / "anat" / "sub-01_desc-harmonized_T1w.nii.gz"
    assert float(nb.load(out).get_fdata().max()) == 2000.0
    record = json.loads(out.with_name("sub-01_desc-harmonized_T1w.json").read_text())["OutputRange"]
    assert record["Policy"] == "clip" and record["ClippedVoxels"] == 1 and record["Max"] == 2000.0


def test_the_sink_writes_nothing_of_an_image_that_breaks_the_invariant(tmp_path):
    data = np.full((8, 8, 8), 500.0, np.float32)
    data[1, 1, 1] = np.inf
    with pytest.raises(Exception, match=r"sub-01/anat/sub-01_T1w.nii.gz harmonized with the model bundle /models/T1w"):
        _sink(tmp_path, data).run()
    assert not list((tmp_path / "out").rglob("*.nii.gz"))  # not even the preprocessed image


# ----------------------------------------------------------------------------- card bounds
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s["signature"]["intensity_scale"].update(hi=1e300), "greater than the maximum of 1e+30"),
        (lambda s: s["signature"]["intensity_scale"].update(lo=5.0, hi=5.0), "must have hi > lo"),
        (lambda s: s["signature"]["intensity_scale"].update(lo=1e20, hi=1e20 + 1e10), "spans too little"),
        (lambda s: s.update(style=[1e30] * len(s["style"])), "greater than the maximum of 1000"),
        (lambda s: s.update(style=[999.0] * len(s["style"])), "above the plausible 1000"),
    ],
)
def test_implausible_cards_are_refused(tmp_path, edit, message):
    from bids_harmonize.model import BundleError, load_bundle
    from helpers import write_bundle

    bundle = write_bundle(tmp_path / "m", edit=lambda card: edit(card["sites"][0]))
    with pytest.raises(BundleError, match=re.escape(message)):
        load_bundle(bundle)
