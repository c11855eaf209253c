"""The CLI end to end for the site inventory, and every bad input with its exit code."""

import csv
import json
import subprocess
import sys

import pytest

from bids_harmonize import __version__
from bids_harmonize.cli.run import main
from helpers import Scan, scan_path


def read_sites(out):
    with open(out / "sites.tsv", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_sites_only_writes_inventory_and_prints_table(multisite_bids, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(multisite_bids), str(out), "group", "--sites-only"]) == 0
    rows = read_sites(out)
    assert len(rows) == 11
    assert len({r["site"] for r in rows}) == 4
    assert {r["provenance"] for r in rows} == {"inferred"}
    dictionary = json.loads((out / "sites.json").read_text())
    assert set(dictionary["site"]["Levels"]) == {r["site"] for r in rows}
    printed = capsys.readouterr().out
    assert "4 site(s) at granularity 'scanner'" in printed
    assert "GEDiscoveryMr7503TSN0000000414555MR3" in printed
    assert json.loads((out / "dataset_description.json").read_text())["DatasetType"] == "derivative"
    config = json.loads(next((out / "logs").glob("config-*.json")).read_text())
    assert config["site_granularity"] == "scanner" and config["analysis_level"] == "group"
    assert not any(out.rglob("*.nii.gz"))  # a dry run preprocesses nothing


def test_vendor_granularity_and_site_table(multisite_bids, tmp_path):
    table = tmp_path / "table.tsv"
    table.write_text("participant_id\tsite\nsub-07\tPhilipsOverride\n")
    out = tmp_path / "out"
    argv = [
        str(multisite_bids),
        str(out),
        "group",
        "--sites-only",
        "--site-granularity",
        "vendor",
        "--site-table",
        str(table),
    ]
    assert main(argv) == 0
    rows = read_sites(out)
    assert {r["site"] for r in rows} == {"Siemens", "GE", "Philips", "PhilipsOverride"}
    assert next(r for r in rows if r["participant_id"] == "sub-07")["provenance"] == "site-table"


@pytest.mark.parametrize(
    ("make_input", "extra", "code", "message"),
    [
        (lambda p: p.mkdir(), [], 16, "dataset_description.json is missing"),
        (lambda p: None, [], 66, "does not exist"),
        ("bids", ["--participant-label", "99"], 18, "Available: 01, 02"),
        ("bids", ["--session-label", "9"], 18, "session label"),
        ("bids", ["--contrasts", "T2w", "--participant-label", "02"], 18, "No T2w images"),
        ("bids", ["--bids-filter-file", "BADJSON"], 64, "is not valid JSON"),
        ("bids", ["--site-table", "MISSING"], 66, "--site-table"),
        ("bids", ["--device", "tpu"], 64, "not auto, cpu, cuda"),
        ("bids", ["--target-style", "weird"], 64, "random:SEED"),
        ("bids", ["--train-processes", "2"], 64, "--train-processes set(s) how the group level trains"),
        ("bids", ["--train-processes", "0"], 64, "--train-processes"),
    ],
)
def test_bad_inputs_exit_with_bids_app_codes(tmp_path, multisite_bids, capsys, make_input, extra, code, message):
    if make_input == "bids":
        bids_dir = multisite_bids
    else:
        bids_dir = tmp_path / "input"
        make_input(bids_dir)
    bad_filter = tmp_path / "filters.json"
    bad_filter.write_text("{nope")
    extra = [str(bad_filter) if e == "BADJSON" else str(tmp_path / "no.tsv") if e == "MISSING" else e for e in extra]
    assert main([str(bids_dir), str(tmp_path / "out"), "group", "--sites-only", *extra]) == code
    assert message in capsys.readouterr().err


def test_output_inside_input_is_refused_except_under_derivatives(multisite_bids, capsys):
    assert main([str(multisite_bids), str(multisite_bids / "out"), "group", "--sites-only"]) == 64
    assert "derivatives" in capsys.readouterr().err
    assert main([str(multisite_bids), str(multisite_bids / "derivatives" / "h"), "group", "--sites-only"]) == 0


def test_bad_files_warn_and_the_run_goes_on(multisite_bids, tmp_path, capsys):
    scan_path(multisite_bids, Scan("07", None)).write_bytes(b"")
    scan_path(multisite_bids, Scan("08", None)).with_suffix("").with_suffix(".json").write_text("[1, 2")
    assert main([str(multisite_bids), str(tmp_path / "out"), "group", "--sites-only"]) == 0
    err = capsys.readouterr().err
    assert "sub-07_T1w.nii.gz: unreadable image" in err
    assert "sub-08_T1w.json: invalid sidecar" in err
    assert "Traceback" not in err
    subjects = {r["participant_id"] for r in read_sites(tmp_path / "out")}
    assert "sub-07" not in subjects and "sub-08" in subjects


def test_console_script_version_and_help():
    done = subprocess.run([sys.executable, "-m", "bids_harmonize.cli.run", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == f"bids_harmonize {__version__}"
    usage = subprocess.run([sys.executable, "-m", "bids_harmonize.cli.run", "in"], capture_output=True, text=True)
    assert usage.returncode == 64


@pytest.mark.realdata
@pytest.mark.parametrize(("granularity", "n_sites"), [("scanner", 3), ("vendor", 2), ("protocol", 3)])
def test_realmix_sites(realmix, tmp_path, granularity, n_sites):
    out = tmp_path / "out"
    assert main([str(realmix), str(out), "group", "--sites-only", "--site-granularity", granularity]) == 0
    rows = read_sites(out)
    assert len(rows) == 3
    assert len({r["site"] for r in rows}) == n_sites
    if granularity == "scanner":
        prisma = sorted(r["site"] for r in rows if r["model"] == "Prisma Fit")
        assert prisma == ["SiemensPrismaFit3TSN67060", "SiemensPrismaFit3TSN67093"]


def test_preset_choices_match_the_model_presets():
    from bids_harmonize.cli.parser import NETWORK_PRESETS
    from bids_harmonize.model.networks import PRESETS

    assert NETWORK_PRESETS == tuple(sorted(PRESETS))


def test_a_covariate_that_is_no_column_stops_the_run_before_any_work(multisite_bids, tmp_path, capsys):
    out = tmp_path / "out"
    code = main([str(multisite_bids), str(out), "participant", "--covariates", "age", "diagnosis", "--no-volumes"])
    assert code == 64
    assert "--covariates" in capsys.readouterr().err
    config = json.loads(next((out / "logs").glob("config-*.json")).read_text())
    assert config["covariates"] == ["age", "diagnosis"] and config["volumes"] is False
    assert not any(out.rglob("*.nii.gz"))


def test_help_names_a_default_only_where_it_says_something(capsys):
    from bids_harmonize.cli.parser import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in text and "(default: True)" not in text and "(default: False)" not in text
    assert "(default: the bundle's)" in text and "(default: 0)" in text  # named once, by the help text
    assert "the bundle's) (default:" not in text
