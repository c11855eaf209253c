"""The console script: writes a dataset, refuses to overwrite other data, draws the figure."""

from pathlib import Path

import pytest

from bids_harmonize.errors import ExitCode
from bids_harmonize.simulate.cli import main


def test_cli_writes_dataset_and_figure(empty_dir: Path, capsys: pytest.CaptureFixture) -> None:
    figure = empty_dir.parent / "sites.png"
    args = [
        str(empty_dir),
        "--sites",
        "2",
        "--subjects",
        "2",
        "--resolution",
        "4",
        "--seed",
        "1",
        "--figure",
        str(figure),
    ]
    assert main(args) == 0
    assert (empty_dir / "sub-02" / "anat" / "sub-02_T1w.nii.gz").is_file()
    assert figure.stat().st_size > 10_000
    assert "Simulated 2 subjects at 2 sites" in capsys.readouterr().out
    # A second run refuses to write over the first unless asked to.
    assert main(args) == ExitCode.USAGE
    assert main([*args, "--overwrite"]) == 0


def test_cli_never_overwrites_foreign_data(empty_dir: Path) -> None:
    empty_dir.mkdir()
    (empty_dir / "precious.txt").write_text("keep me")
    assert main([str(empty_dir), "--resolution", "4", "--overwrite"]) == ExitCode.USAGE
    assert (empty_dir / "precious.txt").read_text() == "keep me"


def test_cli_usage_errors_exit_64(empty_dir: Path) -> None:
    with pytest.raises(SystemExit) as raised:
        main([str(empty_dir), "--contrasts", "FLAIR"])
    assert raised.value.code == ExitCode.USAGE
