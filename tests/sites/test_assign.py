import random
from pathlib import Path

import pytest

from bids_harmonize.bids.records import ImageRecord
from bids_harmonize.sites import UNKNOWN_SITE, assign_sites, load_overrides
from bids_harmonize.sites.assign import cluster_values
from bids_harmonize.sites.signature import Tolerance
from helpers import PROTOCOLS, SCANNERS


def record(name: str, meta: dict, voxel=(1.0, 1.0, 1.0), subject=None, session=None, suffix="T1w") -> ImageRecord:
    subject = subject or name
    rel = f"sub-{subject}/anat/sub-{subject}_{suffix}.nii.gz"
    return ImageRecord(Path("/x") / rel, rel, subject, session, suffix, metadata=meta, voxel_size=voxel)


def dataset() -> list[ImageRecord]:
    return [
        record("a1", {**SCANNERS["siemens_a"], **PROTOCOLS["T1w"]}),
        record("a2", {**SCANNERS["siemens_a"], **PROTOCOLS["T1w"], "EchoTime": 0.0030}),
        record("b1", {**SCANNERS["siemens_b"], **PROTOCOLS["T1w"]}, voxel=(2.0, 2.0, 2.0)),
        record("g1", {**SCANNERS["ge"], **PROTOCOLS["T1w"]}),
        record("g2", {**SCANNERS["ge"], **PROTOCOLS["T1w"], "RepetitionTime": 7.0}),
        record("p1", {**SCANNERS["philips"], **PROTOCOLS["T1w"]}),
    ]


def sites_by_subject(assignments):
    return {a.image.subject: a.site for a in assignments}


@pytest.mark.parametrize(("granularity", "n_sites"), [("vendor", 3), ("scanner", 4), ("protocol", 5)])
def test_granularity_sets_the_number_of_sites(granularity, n_sites):
    assert len({a.site for a in assign_sites(dataset(), granularity)}) == n_sites


def test_labels_are_readable_and_independent_of_file_order():
    images = dataset()
    expected = sites_by_subject(assign_sites(images, "protocol"))
    for seed in range(5):
        shuffled = images[:]
        random.Random(seed).shuffle(shuffled)
        assert sites_by_subject(assign_sites(shuffled, "protocol")) == expected
    assert expected["a1"] == "SiemensPrismaFit3TSN67060P1"
    assert expected["g1"] == "GEDiscoveryMr7503TSN0000000414555MR3P1"
    assert expected["g2"].endswith("P2")  # the longer TR sorts second
    assert expected["a1"] == expected["a2"]  # TE within the 10 % tolerance


def test_evidence_explains_the_decision():
    a1 = assign_sites(dataset(), "scanner")[0]
    assert a1.provenance == "inferred"
    assert "DeviceSerialNumber=67060" in a1.evidence
    assert "'Prisma_fit' -> Prisma Fit" in a1.evidence
    assert "2.89 -> 3 T" in a1.evidence


def test_missing_metadata_follows_the_documented_rule():
    images = [
        record("n1", {"Manufacturer": "Siemens", "ManufacturersModelName": "Skyra", "MagneticFieldStrength": 3}),
        record("n2", {"Manufacturer": "Siemens"}),
        record("n3", {}),
    ]
    by_subject = {a.image.subject: a for a in assign_sites(images, "scanner")}
    assert by_subject["n1"].site == "SiemensSkyra3T"
    assert any("merged into one site" in w for w in by_subject["n1"].warnings)
    assert by_subject["n2"].site == "SiemensUnknownModelUnknownField"
    assert any("lacks ManufacturersModelName, MagneticFieldStrength" in w for w in by_subject["n2"].warnings)
    assert by_subject["n3"].site == UNKNOWN_SITE


def test_cluster_values_is_order_independent_and_respects_tolerance():
    tol = Tolerance(relative=0.05)
    forward = cluster_values([1.0, 1.04, 1.2, None, 2.0], tol)
    backward = cluster_values([2.0, None, 1.2, 1.04, 1.0], tol)
    assert forward == backward == {1.0: 1.0, 1.04: 1.0, 1.2: 1.2, 2.0: 2.0}


def test_overrides_take_precedence_table_then_sessions_then_participants(tmp_path):
    root = tmp_path / "bids"
    (root / "sub-s1").mkdir(parents=True)
    (root / "participants.tsv").write_text(
        "participant_id\tsite\nsub-s1\tFromParticipants\nsub-s2\tFromParticipants\nsub-s3\tn/a\n"
    )
    (root / "sub-s1" / "sub-s1_sessions.tsv").write_text("session_id\tsite\nses-1\tFromSessions\n")
    table = tmp_path / "sites.tsv"
    table.write_text("path\tparticipant_id\tsite\nsub-s2/anat/sub-s2_T1w.nii.gz\t\tFromTable\n\tsub-nobody\tTypo\n")
    images = [
        record("s1", SCANNERS["ge"], subject="s1", session="1"),
        record("s2", SCANNERS["ge"], subject="s2"),
        record("s3", SCANNERS["ge"], subject="s3"),
    ]
    images[0] = ImageRecord(
        Path("/x/a"), "sub-s1/ses-1/anat/sub-s1_ses-1_T1w.nii.gz", "s1", "1", "T1w", metadata=SCANNERS["ge"]
    )
    overrides = load_overrides(root, images, table)
    got = {a.image.subject: (a.site, a.provenance) for a in assign_sites(images, "scanner", overrides=overrides)}
    assert got["s1"] == ("FromSessions", "sessions.tsv")
    assert got["s2"] == ("FromTable", "site-table")
    assert got["s3"][1] == "inferred"
    assert overrides.unmatched_rows == ["sites.tsv line 3"]


def test_site_table_without_key_columns_is_rejected(tmp_path):
    from bids_harmonize.sites.overrides import SiteTableError

    table = tmp_path / "t.tsv"
    table.write_text("subject\tsite\n01\tA\n")
    with pytest.raises(SiteTableError, match="t.tsv.*participant_id"):
        load_overrides(tmp_path, [], table)


def test_participants_tsv_saved_with_a_byte_order_mark_keeps_its_site_column(tmp_path):
    """Spreadsheet programs write a UTF-8 BOM; it must not hide the first column name."""
    root = tmp_path / "bids"
    root.mkdir()
    (root / "participants.tsv").write_bytes("participant_id\tsite\nsub-s1\tOxford\n".encode("utf-8-sig"))
    images = [record("s1", SCANNERS["ge"]), record("s2", SCANNERS["ge"])]
    got = {
        a.image.subject: (a.site, a.provenance)
        for a in assign_sites(images, "scanner", overrides=load_overrides(root, images))
    }
    assert got["s1"] == ("Oxford", "participants.tsv")
    assert got["s2"][1] == "inferred"
