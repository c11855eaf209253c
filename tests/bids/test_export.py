"""--export-bids on a small generated dataset: harmonized images in place, the rest untouched."""

from __future__ import annotations

import json

import nibabel as nb
import numpy as np

from bids_harmonize.bids import derivatives, outputs
from bids_harmonize.bids.export import export_bids
from bids_harmonize.bids.layout import discover_images
from helpers import Scan, bids_validator_errors, make_bids


def test_export_places_harmonized_images_and_keeps_everything_else(tmp_path):
    raw = make_bids(tmp_path / "raw", [Scan("01", "ge"), Scan("01", "ge", suffix="T2w"), Scan("02", "philips")])
    (raw / "README").write_text("A study.\n")
    func = raw / "sub-01/func/sub-01_task-rest_bold.nii.gz"
    func.parent.mkdir()
    bold = nb.Nifti1Image(np.zeros((4, 4, 4, 3), np.int16), np.eye(4))
    bold.header.set_zooms((1.0, 1.0, 1.0, 2.0))
    bold.header.set_xyzt_units("mm", "sec")
    bold.to_filename(func)
    func.with_name("sub-01_task-rest_bold.json").write_text(json.dumps({"RepetitionTime": 2.0, "TaskName": "rest"}))
    images = discover_images(raw).images
    out = tmp_path / "out"
    t1 = next(i for i in images if i.subject == "01" and i.suffix == "T1w")
    harmonized = nb.Nifti1Image(np.full((6, 6, 6), 7.0, np.float32), nb.load(t1.path).affine)
    derivatives.write_image(
        harmonized,
        outputs.derivative_path(out, t1, description="harmonized"),
        {"TargetSite": "B", "ModelBundle": {"SHA256": "ab" * 32}, "Sources": [t1.bids_uri]},
    )

    placed, kept = export_bids(raw, out, tmp_path / "export", images)

    export = tmp_path / "export"
    assert (placed, kept) == (1, 2)
    np.testing.assert_array_equal(nb.load(export / t1.relpath).get_fdata(), 7.0)
    sidecar = json.loads((export / "sub-01/anat/sub-01_T1w.json").read_text())
    assert sidecar["Manufacturer"] == "GE MEDICAL SYSTEMS" and sidecar["Harmonization"]["TargetSite"] == "B"
    assert (export / "sub-01/anat/sub-01_T2w.nii.gz").read_bytes() == (
        raw / "sub-01/anat/sub-01_T2w.nii.gz"
    ).read_bytes()
    assert (export / "sub-01/func/sub-01_task-rest_bold.nii.gz").is_file() and (export / "README").is_file()
    assert (raw / t1.relpath).read_bytes() != (export / t1.relpath).read_bytes()  # the raw image is untouched
    description = json.loads((export / "dataset_description.json").read_text())
    assert description["DatasetType"] == "raw" and description["GeneratedBy"][0]["Name"] == "bids_harmonize"
    assert [i.relpath for i in discover_images(export).images] == [i.relpath for i in images]
    assert bids_validator_errors(export) == []


def test_the_export_shares_no_storage_with_the_raw_dataset(tmp_path, caplog):
    raw = make_bids(tmp_path / "raw", [Scan("01", "ge"), Scan("02", "philips")])
    bold = raw / "sub-01/func/sub-01_task-rest_bold.nii.gz"
    bold.parent.mkdir()
    bold.write_bytes(b"not fetched")
    bold.chmod(0o444)  # annexed content is read-only
    (raw / "sub-01/func/sub-01_task-rest_bold.json").symlink_to(raw / ".git/annex/objects/absent")  # not fetched
    before = {p: p.read_bytes() for p in raw.rglob("*") if p.is_file()}

    export_bids(raw, tmp_path / "out", tmp_path / "export", discover_images(raw).images)

    export = tmp_path / "export"
    copies = [p for p in export.rglob("*") if p.is_file() and p.name != "dataset_description.json"]
    assert copies and all(p.stat().st_nlink == 1 for p in copies)  # no hard link to the raw file
    with open(export / "participants.tsv", "a") as table:  # a user adds a column: the raw table stays
        table.write("extra\n")
    (export / "sub-01/func/sub-01_task-rest_bold.nii.gz").write_bytes(b"rewritten")  # the copy is writable
    assert {p: p.read_bytes() for p in raw.rglob("*") if p.is_file()} == before
    assert not (export / "sub-01/func/sub-01_task-rest_bold.json").exists()
    assert "sub-01_task-rest_bold.json" in caplog.text and "datalad get" in caplog.text
