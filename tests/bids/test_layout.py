import json
import logging
import os

import pytest

from bids_harmonize.bids.layout import DatasetError, discover_images
from bids_harmonize.bids.selection import FilterFileError, SelectionError, load_filter_file
from helpers import Scan, make_bids, scan_path, standard_scans


def test_finds_all_anatomical_images_with_entities_and_geometry(multisite_bids, tmp_path):
    found = discover_images(multisite_bids, database_root=tmp_path / "db")
    assert len(found.images) == len(standard_scans())
    t2w = [i for i in found.images if i.suffix == "T2w"]
    assert {(i.subject, i.session) for i in t2w} == {("01", "1"), ("06", None)}
    ge = next(i for i in found.images if i.subject == "05")
    assert ge.voxel_size == pytest.approx((1.0, 1.0, 1.2))
    assert ge.metadata["Manufacturer"] == "GE MEDICAL SYSTEMS"
    assert ge.relpath == "sub-05/anat/sub-05_T1w.nii.gz"


def test_dataset_level_sidecars_are_inherited(tmp_path):
    scans = [Scan("01", None), Scan("02", None, extra={"Manufacturer": "GE"}), Scan("03", None, sidecar=False)]
    root = make_bids(
        tmp_path / "bids", scans, dataset_sidecars={"T1w.json": {"Manufacturer": "Philips", "MagneticFieldStrength": 3}}
    )
    meta = {i.subject: i.metadata for i in discover_images(root).images}
    assert meta["01"]["Manufacturer"] == "Philips"
    assert meta["02"]["Manufacturer"] == "GE"  # the closer sidecar wins
    assert meta["03"] == {"Manufacturer": "Philips", "MagneticFieldStrength": 3}


def test_selection_by_labels_and_filters(multisite_bids, tmp_path):
    found = discover_images(multisite_bids, participant_labels=["sub-01", "05"], session_labels=None, contrasts=["T1w"])
    assert sorted({i.subject for i in found.images}) == ["01", "05"]
    assert {i.suffix for i in found.images} == {"T1w"}
    only_ses2 = discover_images(multisite_bids, filters={"t1w": {"session": "2"}}, contrasts=["T1w"])
    assert [i.relpath for i in only_ses2.images] == ["sub-01/ses-2/anat/sub-01_ses-2_T1w.nii.gz"]


def test_unknown_labels_list_the_available_ones(multisite_bids):
    with pytest.raises(SelectionError, match=r"99 not found.*Available: 01, 02"):
        discover_images(multisite_bids, participant_labels=["99"])
    with pytest.raises(SelectionError, match="session label"):
        discover_images(multisite_bids, session_labels=["7"])


def test_bad_files_are_skipped_with_a_warning_naming_them(multisite_bids, caplog):
    empty = scan_path(multisite_bids, Scan("07", None))
    empty.write_bytes(b"")
    bad_sidecar = scan_path(multisite_bids, Scan("08", None)).with_suffix("").with_suffix(".json")
    bad_sidecar.write_text("{not json")
    with caplog.at_level(logging.WARNING):
        found = discover_images(multisite_bids)
    subjects = {i.subject for i in found.images}
    assert "07" not in subjects  # the empty image is skipped
    assert "08" in subjects  # the image stays; only its broken sidecar is left out
    assert any("sub-07_T1w.nii.gz: unreadable image (the file is empty" in s for s in found.skipped)
    assert any("sub-08_T1w.json: invalid sidecar" in s for s in found.skipped)
    assert "sub-08_T1w.json" in caplog.text


def test_missing_description_is_a_dataset_error(tmp_path):
    (tmp_path / "sub-01").mkdir()
    with pytest.raises(DatasetError, match="dataset_description.json is missing"):
        discover_images(tmp_path)


def test_index_is_cached_and_rebuilt_when_the_dataset_changes(multisite_bids, tmp_path):
    db = tmp_path / "db"
    first = discover_images(multisite_bids, database_root=db)
    second = discover_images(multisite_bids, database_root=db)
    assert (first.reused_index, second.reused_index) == (False, True)
    assert [i.relpath for i in first.images] == [i.relpath for i in second.images]
    assert [i.metadata for i in first.images] == [i.metadata for i in second.images]
    sidecar = multisite_bids / "sub-02" / "ses-1" / "anat" / "sub-02_ses-1_T1w.json"
    sidecar.write_text(json.dumps({"Manufacturer": "Canon"}))
    os.utime(sidecar, ns=(1, 1))  # a different mtime even on coarse file systems
    third = discover_images(multisite_bids, database_root=db)
    assert third.reused_index is False
    assert next(i for i in third.images if i.subject == "02").metadata == {"Manufacturer": "Canon"}
    assert len(list(db.iterdir())) == 1  # the stale index was pruned


def test_filter_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "filters.json"
    bad.write_text("{oops")
    with pytest.raises(FilterFileError, match="filters.json is not valid JSON"):
        load_filter_file(bad)
    bad.write_text(json.dumps({"bold": {}}))
    with pytest.raises(FilterFileError, match="top-level keys"):
        load_filter_file(bad)


def test_unknown_filter_entity_is_rejected(multisite_bids):
    with pytest.raises(FilterFileError, match=r"\['acq'\] are not BIDS entity names.*acquisition"):
        discover_images(multisite_bids, filters={"t1w": {"acq": "x"}})


def test_valid_filter_entities_absent_from_the_dataset_are_accepted(multisite_bids, caplog):
    """The README's example filter names an entity the dataset does not use: no error, it selects nothing."""
    assert discover_images(multisite_bids, filters={"t1w": {"acquisition": "mprage"}}, contrasts=["T1w"]).images == []
    assert "matches no T1w image" in caplog.text
    every = discover_images(multisite_bids, filters={"t1w": {"echo": None, "acquisition": None}}, contrasts=["T1w"])
    assert len(every.images) == 9


def test_a_broken_symlink_is_skipped_and_does_not_stop_other_participants(multisite_bids):
    link = multisite_bids / "sub-02/ses-1/anat/sub-02_ses-1_T1w.nii.gz"
    link.unlink()
    link.symlink_to(multisite_bids / ".git/annex/objects/missing")  # an annexed file not fetched
    found = discover_images(multisite_bids, participant_labels=["03"])
    assert [i.subject for i in found.images] == ["03"]
    found = discover_images(multisite_bids)
    assert "02" not in {i.subject for i in found.images} and len(found.images) == 10
    assert any("sub-02_ses-1_T1w.nii.gz: is a broken symbolic link" in m and "datalad get" in m for m in found.skipped)


def test_the_same_image_in_two_formats_is_left_out_with_the_reason(multisite_bids):
    gz = multisite_bids / "sub-07/anat/sub-07_T1w.nii.gz"
    import nibabel as nb

    nb.load(gz).to_filename(gz.with_name("sub-07_T1w.nii"))
    found = discover_images(multisite_bids, participant_labels=["07", "08"])
    assert [i.subject for i in found.images] == ["08"]
    assert any("sub-07_T1w.nii and sub-07/anat/sub-07_T1w.nii.gz" in m and "delete one" in m for m in found.skipped)


def test_bidsignore_of_the_dataset_is_honoured(multisite_bids):
    (multisite_bids / ".bidsignore").write_text("# not BIDS yet\nsub-08/\n*_T2w.*\n")
    found = discover_images(multisite_bids)
    assert "08" not in {i.subject for i in found.images}
    assert {i.suffix for i in found.images} == {"T1w"}


def test_header_geometry_matches_nibabel_and_rejects_non_nifti(tmp_path):
    import nibabel as nb

    from bids_harmonize.bids.screen import read_header_geometry
    from helpers import write_nifti

    image = write_nifti(tmp_path / "a.nii.gz", (0.9, 1.0, 1.2), shape=(5, 6, 7))
    plain = write_nifti(tmp_path / "b.nii", (2.0, 2.0, 2.0))
    assert read_header_geometry(image) == ([5, 6, 7], pytest.approx([0.9, 1.0, 1.2]))
    assert read_header_geometry(plain)[1] == list(nb.load(plain).header.get_zooms()[:3])
    (tmp_path / "c.nii.gz").write_bytes(b"not gzip at all")
    (tmp_path / "d.nii").write_bytes(b"x" * 600)
    for bad in ("c.nii.gz", "d.nii"):
        with pytest.raises(ValueError):
            read_header_geometry(tmp_path / bad)
