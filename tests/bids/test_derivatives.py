import json
import multiprocessing
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest

from bids_harmonize.bids import derivatives, outputs
from bids_harmonize.bids.naming import sidecar_path
from bids_harmonize.bids.records import ImageRecord


def source(relpath: str = "sub-01/ses-01/anat/sub-01_ses-01_acq-mprage_run-02_T1w.nii.gz") -> ImageRecord:
    session = "01" if "/ses-01/" in relpath else None
    return ImageRecord(Path("/raw") / relpath, relpath, "01", session, "T1w", entities={"subject": "01"})


def test_derivative_names_follow_bids_entity_order(tmp_path):
    path = outputs.derivative_path(
        tmp_path, source(), space="MNI152NLin2009cSym", resolution=2, description="harmonized"
    )
    assert (
        path
        == tmp_path
        / "sub-01/ses-01/anat/sub-01_ses-01_acq-mprage_run-02_space-MNI152NLin2009cSym_res-2_desc-harmonized_T1w.nii.gz"
    )
    mask = outputs.derivative_path(
        tmp_path, source("sub-01/anat/sub-01_acq-mprage_run-2_T1w.nii"), description="brain", suffix="mask"
    )
    assert mask.name == "sub-01_acq-mprage_run-2_desc-brain_mask.nii.gz"
    assert sidecar_path(mask).name == "sub-01_acq-mprage_run-2_desc-brain_mask.json"


@pytest.mark.parametrize(
    "entities", ["echo-1", "echo-2", "flip-2", "inv-1", "mt-on", "part-mag", "chunk-3", "ce-gad", "rec-norm"]
)
def test_every_source_entity_survives_so_echoes_do_not_collide(tmp_path, entities):
    raw = f"sub-01/anat/sub-01_acq-mp2_{entities}_run-1_T1w.nii.gz"
    path = outputs.derivative_path(
        tmp_path, source(raw), space="MNI152NLin2009cSym", resolution=1, description="preproc"
    )
    assert f"_{entities}_" in path.name and path.name.endswith("_res-1_desc-preproc_T1w.nii.gz")  # schema order
    # pybids reads back exactly the entities of the source plus the new ones
    from bids.layout import parse_file_entities

    parsed = parse_file_entities(str(path), config=["bids", "derivatives"])
    original = parse_file_entities("/" + raw, config=["bids"])
    assert {k: v for k, v in parsed.items() if k not in ("res", "desc", "space")} == original
    assert (parsed["res"], parsed["desc"], parsed["space"]) == ("1", "preproc", "MNI152NLin2009cSym")


def test_names_that_are_not_bids_are_refused_naming_the_file(tmp_path):
    from bids_harmonize.bids.naming import NamingError

    with pytest.raises(NamingError, match="sub-01_scan1_T1w.nii.gz.*Fix"):
        outputs.derivative_path(tmp_path, source("sub-01/anat/sub-01_scan1_T1w.nii.gz"), description="preproc")


def test_dataset_description_links_the_raw_dataset(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "dataset_description.json").write_text(json.dumps({"Name": "Study", "DatasetDOI": "doi:10/x"}))
    out = tmp_path / "out"
    content = json.loads(derivatives.write_dataset_description(out, raw).read_text())
    assert content["DatasetType"] == "derivative"
    assert content["GeneratedBy"][0]["Name"] == "bids_harmonize"
    assert "Container" not in content["GeneratedBy"][0]
    assert content["DatasetLinks"]["raw"] == raw.resolve().as_uri()
    assert content["SourceDatasets"][0]["DOI"] == "doi:10/x"


def test_container_is_recorded_when_running_in_one(tmp_path, monkeypatch):
    monkeypatch.setenv("BIDS_HARMONIZE_CONTAINER_TYPE", "docker")
    monkeypatch.setenv("BIDS_HARMONIZE_CONTAINER_TAG", "bids_harmonize:0.1.0")
    assert derivatives.generated_by()[0]["Container"] == {"Type": "docker", "Tag": "bids_harmonize:0.1.0"}


def test_another_pipelines_output_dir_is_refused(tmp_path):
    (tmp_path / "dataset_description.json").write_text(json.dumps({"GeneratedBy": [{"Name": "fMRIPrep"}]}))
    with pytest.raises(derivatives.OutputDirError, match="fMRIPrep"):
        derivatives.write_dataset_description(tmp_path, tmp_path)


def test_sidecar_carries_sources_and_provenance(tmp_path):
    img = nb.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4))
    provenance = derivatives.Provenance(command_line=["bids_harmonize", "in", "out", "participant"])
    sidecar = derivatives.image_sidecar(
        [source()], provenance, skull_stripped=False, extra={"TargetSite": "A"}, inherited={"RepetitionTime": 2.3}
    )
    path = derivatives.write_image(img, tmp_path / "x_T1w.nii.gz", sidecar)
    written = json.loads(sidecar_path(path).read_text())
    assert written["Sources"] == ["bids:raw:" + source().relpath]
    assert written["SkullStripped"] is False
    assert written["RepetitionTime"] == 2.3
    assert written["CommandLine"] == "bids_harmonize in out participant"
    assert {"bids_harmonize", "python", "nibabel"} <= set(written["PackageVersions"])
    assert "SoftwareVersions" not in written  # BIDS: the scanner's software, a string; never ours
    assert written["StartTime"] <= written["EndTime"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x_T1w.json", "x_T1w.nii.gz"]  # no temp left


def _hammer(args):
    path, worker = args
    for i in range(30):
        derivatives.write_json(Path(path), {"worker": worker, "i": i, "pad": "x" * 5000})


def test_parallel_writers_never_leave_a_partial_file(tmp_path):
    target = tmp_path / "shared.json"
    # spawn, not fork: a forked copy of a pytest worker that holds other threads' locks (torch,
    # logging) can hang before it writes anything; one such run hung this suite.
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        result = pool.map_async(_hammer, [(str(target), w) for w in range(4)])
        while not result.ready():
            if target.exists():
                json.loads(target.read_text())  # always complete JSON
        result.get()
    assert json.loads(target.read_text())["i"] == 29
    assert not list(tmp_path.glob(".*tmp*"))


def test_bidsignore_declares_our_non_bids_files_and_keeps_the_users(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "dataset_description.json").write_text(json.dumps({"Name": "Study"}))
    out = tmp_path / "out"
    out.mkdir()
    (out / ".bidsignore").write_text("extra/\n")
    derivatives.write_dataset_description(out, raw)
    lines = (out / ".bidsignore").read_text().splitlines()
    assert lines[0] == "extra/" and {"sites.tsv", "sites.json", "*_xfm.*", "/logs", "/models"} <= set(lines)
