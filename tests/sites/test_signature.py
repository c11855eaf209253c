import pytest

from bids_harmonize.sites.signature import (
    PolicyError,
    load_policy,
    normalise_field,
    normalise_model,
    normalise_vendor,
    protocol_signature,
    scanner_signature,
)

POLICY = load_policy()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("SIEMENS ", "Siemens"),
        ("Siemens", "Siemens"),
        ("GE MEDICAL SYSTEMS", "GE"),
        ("GE", "GE"),
        ("Philips Medical Systems", "Philips"),
        ("Philips Healthcare", "Philips"),
        ("TOSHIBA_MEC", "Canon"),
        ("Acme Imaging", "Acme Imaging"),
        (None, None),
        ("   ", None),
    ],
)
def test_vendor_spellings_normalise(raw, expected):
    assert normalise_vendor(raw, POLICY) == expected


def test_model_spellings_of_one_model_agree():
    spellings = ["Prisma_fit", "MAGNETOM Prisma Fit", "Prisma Fit", "PrismaFit", "prisma-fit"]
    assert {normalise_model(s, POLICY) for s in spellings} == {"Prisma Fit"}
    assert normalise_model("MAGNETOM", POLICY) == "Magnetom"  # a prefix alone is kept, not emptied
    assert normalise_model("Ingenia Elition X", POLICY) != normalise_model("Ingenia", POLICY)


@pytest.mark.parametrize(
    ("raw", "tesla", "noted"),
    [
        (2.89, 3.0, True),
        (3, 3.0, False),
        (1.494, 1.5, True),
        (15000, 1.5, True),
        ("3", 3.0, False),
        (5.0, 5.0, True),
        (None, None, False),
        ("abc", None, True),
        (-1, None, True),
    ],
)
def test_field_strength_snaps_to_nominal(raw, tesla, noted):
    value, note = normalise_field(raw, POLICY)
    assert value == tesla
    assert (note is not None) == noted


def test_unit_falls_back_from_serial_to_station_to_institution():
    assert scanner_signature({"DeviceSerialNumber": "1", "StationName": "S"}, POLICY).unit_key == "DeviceSerialNumber"
    assert scanner_signature({"StationName": "S", "InstitutionName": "I"}, POLICY).unit_key == "StationName"
    assert scanner_signature({"InstitutionName": "I"}, POLICY).unit_key == "InstitutionName"
    assert scanner_signature({"DeviceSerialNumber": "  "}, POLICY).unit is None


def test_signature_notes_record_normalisation():
    sig = scanner_signature(
        {"Manufacturer": "SIEMENS ", "ManufacturersModelName": "Prisma_fit", "MagneticFieldStrength": 2.89}, POLICY
    )
    assert any("Prisma_fit" in n for n in sig.notes)
    assert any("2.89 -> 3 T" in n for n in sig.notes)


def test_protocol_signature_reads_voxels_sorted_and_tolerates_missing():
    proto = protocol_signature({"RepetitionTime": "2.3", "EchoTime": None}, (1.0, 0.9, 1.2))
    assert proto.values["RepetitionTime"] == 2.3
    assert proto.values["EchoTime"] is None
    assert proto.values["VoxelSize"] == (0.9, 1.0, 1.2)


def test_broken_policy_names_file_and_fix(tmp_path):
    bad = tmp_path / "policy.yaml"
    bad.write_text("vendors: [1, 2]\n")
    with pytest.raises(PolicyError, match="policy.yaml"):
        load_policy(bad)
