"""Per-image tissue volumes at participant level: the interface, the table the sink writes, its
sidecar and its name (declared in .bidsignore)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest

from bids_harmonize.bids import derivatives
from bids_harmonize.bids.ignore import is_ignored, pattern_to_regex
from bids_harmonize.bids.outputs import BIDSIGNORE, OutputLayout
from bids_harmonize.bids.records import ImageRecord
from bids_harmonize.interfaces.bids import _Writer
from bids_harmonize.qc.volumes import TISSUES, read_volume_table

RELPATH = "sub-01/ses-1/anat/sub-01_ses-1_T2w.nii.gz"


def shells(path: Path, shape=(36, 36, 36)) -> tuple[Path, Path]:
    """A three-shell phantom (bright core, grey shell, dark rim) and its mask, 1.5 mm voxels."""
    axes = np.meshgrid(*[np.linspace(-1.0, 1.0, n) for n in shape], indexing="ij")
    radius = np.sqrt(sum(a**2 for a in axes))
    rng = np.random.default_rng(0)
    image = np.where(radius < 0.45, 900.0, np.where(radius < 0.7, 600.0, 250.0)) + rng.normal(0, 15, shape)
    affine = np.diag([1.5, 1.5, 1.5, 1.0])
    nb.Nifti1Image(image.astype(np.float32), affine).to_filename(path / "image.nii.gz")
    nb.Nifti1Image((radius < 0.9).astype(np.uint8), affine).to_filename(path / "mask.nii.gz")
    return path / "image.nii.gz", path / "mask.nii.gz"


def test_the_interface_measures_inside_the_mask_and_the_sink_writes_a_table_with_its_segmenter(tmp_path):
    pytest.importorskip("ants")
    from bids_harmonize.interfaces.volumes import TissueVolumes

    image, mask = shells(tmp_path)
    result = TissueVolumes(in_file=str(image), mask=str(mask), contrast="T1w").run(cwd=str(tmp_path))
    measured = json.loads(Path(result.outputs.out_file).read_text())
    assert measured["VoxelVolume"] == pytest.approx(1.5**3 / 1000)
    brain_ml = float((nb.load(mask).get_fdata() > 0).sum()) * measured["VoxelVolume"]
    assert sum(measured["Volumes"].values()) == pytest.approx(brain_ml, rel=1e-3)
    # T1w: brightest class is WM, the core here; its true volume is (0.45/0.9)^3 of the mask's.
    assert measured["Volumes"]["WM"] == pytest.approx(brain_ml * 0.125, rel=0.15)

    record = ImageRecord(Path("/raw") / RELPATH, RELPATH, "01", "1", "T2w")
    site = {"site": "siteA", "provenance": "inferred", "evidence": ""}
    out = tmp_path / "out"
    writer = _Writer(out, record, derivatives.Provenance(), "MNI152NLin2009cSym", site)
    harmonization = {"TargetSite": "siteB"}
    for name in ("native_preproc_volumes", "native_harmonized_volumes"):
        writer.commit(*writer.prepare(Path(result.outputs.out_file), name, harmonization))
    preproc = OutputLayout(out).output(record, "native_preproc_volumes")
    assert preproc.name == "sub-01_ses-1_space-T2w_desc-preproc_volumes.tsv"
    assert read_volume_table(preproc) == pytest.approx(measured["Volumes"], abs=1e-3)
    sidecar = json.loads(preproc.with_suffix(".json").read_text())
    assert sidecar["Segmenter"]["Name"].startswith("ANTs Atropos") and sidecar["Segmenter"]["Version"]
    assert sidecar["MeasuredImage"] == "bids::sub-01/ses-1/anat/sub-01_ses-1_desc-preproc_T2w.nii.gz"
    assert sidecar["BrainMask"] == "bids::sub-01/ses-1/anat/sub-01_ses-1_space-T2w_desc-brain_mask.nii.gz"
    assert sidecar["volume_ml"]["Units"] == "ml" and "TargetSite" not in sidecar
    harmonized_table = OutputLayout(out).output(record, "native_harmonized_volumes")
    harmonized = json.loads(harmonized_table.with_suffix(".json").read_text())
    assert harmonized["TargetSite"] == "siteB" and harmonized["MeasuredImage"].endswith("desc-harmonized_T2w.nii.gz")


def test_the_volume_tables_are_declared_in_bidsignore():
    patterns = [p for p in map(pattern_to_regex, BIDSIGNORE) if p is not None]
    for name in ("sub-01_desc-preproc_volumes.tsv", "sub-01_space-T2w_desc-harmonized_volumes.json"):
        assert is_ignored(f"sub-01/anat/{name}", patterns)
    assert not is_ignored("sub-01/anat/sub-01_desc-preproc_T1w.nii.gz", patterns)


def test_a_volume_table_without_a_tissue_is_refused_by_name(tmp_path):
    path = tmp_path / "sub-01_desc-preproc_volumes.tsv"
    path.write_text("tissue\tvolume_ml\nCSF\t1\nGM\t2\n")
    with pytest.raises(ValueError, match="sub-01_desc-preproc_volumes.tsv: no row for WM"):
        read_volume_table(path)
    assert TISSUES == ("CSF", "GM", "WM")


def test_an_image_the_segmenter_refuses_gets_a_table_of_na_and_the_error_not_a_crash(tmp_path):
    pytest.importorskip("ants")
    from bids_harmonize.interfaces.volumes import TissueVolumes

    image, _ = shells(tmp_path)
    tiny = np.zeros((36, 36, 36), np.uint8)
    tiny[:5, :5, :5] = 1  # 125 voxels: too few to segment
    nb.Nifti1Image(tiny, np.diag([1.5, 1.5, 1.5, 1.0])).to_filename(tmp_path / "tiny.nii.gz")
    measure = TissueVolumes(in_file=str(image), mask=str(tmp_path / "tiny.nii.gz"), contrast="T1w")
    result = measure.run(cwd=str(tmp_path))
    relpath = "sub-01/anat/sub-01_T1w.nii.gz"
    record = ImageRecord(Path("/raw") / relpath, relpath, "01", None, "T1w")
    site = {"site": "A", "provenance": "", "evidence": ""}
    writer = _Writer(tmp_path / "out", record, derivatives.Provenance(), "MNI", site)
    writer.commit(*writer.prepare(Path(result.outputs.out_file), "native_preproc_volumes", None))
    table = OutputLayout(tmp_path / "out").output(record, "native_preproc_volumes")
    assert "too few to segment" in json.loads(table.with_suffix(".json").read_text())["MeasureError"]
    with pytest.raises(ValueError, match="sub-01_desc-preproc_volumes.tsv"):
        read_volume_table(table)
