"""Builders for small BIDS trees written on disk by the tests (no data files are committed)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nb
import numpy as np

# Three vendors, four physical units, real-world spellings (trailing spaces, casing, aliases).
SCANNERS: dict[str, dict[str, Any]] = {
    "siemens_a": {
        "Manufacturer": "SIEMENS ",
        "ManufacturersModelName": "Prisma_fit",
        "MagneticFieldStrength": 2.89,
        "DeviceSerialNumber": "67060",
        "StationName": "MRC35131",
        "SoftwareVersions": "syngo MR E11",
    },
    "siemens_b": {
        "Manufacturer": "Siemens",
        "ManufacturersModelName": "MAGNETOM Prisma Fit",
        "MagneticFieldStrength": 3,
        "DeviceSerialNumber": "67093",
        "SoftwareVersions": "syngo MR XA30",
    },
    "ge": {
        "Manufacturer": "GE MEDICAL SYSTEMS",
        "ManufacturersModelName": "DISCOVERY MR750",
        "MagneticFieldStrength": 3.0,
        "DeviceSerialNumber": "0000000414555MR3",
    },
    "philips": {
        "Manufacturer": "Philips Medical Systems",
        "ManufacturersModelName": "Ingenia",
        "MagneticFieldStrength": 1.5,
        "StationName": "PHILIPS-ABC1",
    },
}
PROTOCOLS: dict[str, dict[str, Any]] = {
    "T1w": {"RepetitionTime": 2.3, "EchoTime": 0.00298, "InversionTime": 0.9, "FlipAngle": 9},
    "T2w": {"RepetitionTime": 3.2, "EchoTime": 0.565, "FlipAngle": 120},
}


@dataclass
class Scan:
    subject: str
    scanner: str | None
    session: str | None = None
    suffix: str = "T1w"
    voxel: tuple[float, float, float] = (1.0, 1.0, 1.0)
    extra: dict[str, Any] = field(default_factory=dict)  # sidecar keys to add or (value None) drop
    sidecar: bool = True


def write_nifti(
    path: Path, voxel: tuple[float, float, float] = (1.0, 1.0, 1.0), shape=(6, 6, 6), seed: int = 0
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = head_phantom(shape, seed)
    nb.Nifti1Image(data, np.diag([*voxel, 1.0])).to_filename(path)
    return path


def head_phantom(shape=(6, 6, 6), seed: int = 0) -> np.ndarray:
    """int16 'head': an ellipsoid of noisy tissue values (300-1000) in a dark background (0-30),
    enough structure for the screening's is-it-a-head checks (bids/screen.py)."""
    rng = np.random.default_rng(seed)
    axes = np.meshgrid(*[np.linspace(-1.0, 1.0, n) for n in shape], indexing="ij")
    inside = sum(a**2 for a in axes) <= 0.7
    tissue = rng.integers(300, 1000, size=shape)
    return np.where(inside, tissue, rng.integers(0, 30, size=shape)).astype(np.int16)


def scan_path(root: Path, scan: Scan) -> Path:
    folder = root / f"sub-{scan.subject}"
    stem = f"sub-{scan.subject}"
    if scan.session:
        folder /= f"ses-{scan.session}"
        stem += f"_ses-{scan.session}"
    return folder / "anat" / f"{stem}_{scan.suffix}.nii.gz"


def make_bids(
    root: Path,
    scans: list[Scan],
    dataset_sidecars: dict[str, dict] | None = None,
    participants_site: dict[str, str] | None = None,
    shape: tuple[int, int, int] = (6, 6, 6),
) -> Path:
    """Write a BIDS dataset with one image (and sidecar) per scan: tiny by default (enough for
    discovery and site inference; too small for the participant/group levels, which need
    ``shape`` of at least 16 voxels and 100 mm per axis)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "test", "BIDSVersion": "1.9.0"}))
    subjects = sorted({s.subject for s in scans})
    rows = ["participant_id" + ("\tsite" if participants_site else "")]
    for subject in subjects:
        rows.append(f"sub-{subject}" + (f"\t{participants_site.get(subject, 'n/a')}" if participants_site else ""))
    (root / "participants.tsv").write_text("\n".join(rows) + "\n")
    for name, content in (dataset_sidecars or {}).items():
        (root / name).write_text(json.dumps(content))
    for i, scan in enumerate(scans):
        image = write_nifti(scan_path(root, scan), scan.voxel, shape=shape, seed=i)
        if not scan.sidecar:
            continue
        meta = {**(SCANNERS[scan.scanner] if scan.scanner else {}), **PROTOCOLS[scan.suffix], **scan.extra}
        meta = {k: v for k, v in meta.items() if v is not None}
        image.with_name(image.name.replace(".nii.gz", ".json")).write_text(json.dumps(meta))
    return root


def standard_scans() -> list[Scan]:
    """Eight participants over four units and three vendors, some with two sessions and T2w."""
    return [
        Scan("01", "siemens_a", "1"),
        Scan("01", "siemens_a", "2"),
        Scan("01", "siemens_a", "1", "T2w"),
        Scan("02", "siemens_a", "1"),
        Scan("03", "siemens_b", voxel=(2.0, 2.0, 2.0)),
        Scan("04", "siemens_b", voxel=(2.0, 2.0, 2.0)),
        Scan("05", "ge", voxel=(1.0, 1.0, 1.2)),
        Scan("06", "ge", voxel=(1.0, 1.0, 1.2)),
        Scan("06", "ge", suffix="T2w"),
        Scan("07", "philips"),
        Scan("08", "philips"),
    ]


def bids_validator_errors(root: Path) -> list[str]:
    """Errors of the official BIDS validator (bids-validator-deno) on ``root``; skips the
    calling test when the validator is not installed (`pip install -e .[test]` installs it)."""
    import shutil
    import subprocess
    import sys

    import pytest

    validator = shutil.which("bids-validator-deno", path=str(Path(sys.executable).parent)) or shutil.which(
        "bids-validator-deno"
    )
    if validator is None:
        pytest.skip("bids-validator-deno is not installed (pip install bids-validator-deno)")
    done = subprocess.run([validator, "--json", str(root)], capture_output=True, text=True, timeout=600)
    report = json.loads(done.stdout)
    issues = report["issues"]["issues"]
    return [
        f"{i['code']}: {i.get('location', '')} {i.get('issueMessage', '')}".strip()
        for i in issues
        if i.get("severity") == "error"
    ]


def write_bundle(folder: Path, *, resolution: int = 2, edit=None) -> Path:
    """An untrained tiny T1w bundle of the sites A and B (intensity scale 0-500) with an input
    contract; ``edit(card)`` changes its model.json afterwards."""
    import torch

    from bids_harmonize.model import InputContract, build_translator, preset_config, save_bundle
    from bids_harmonize.preproc.operations import intensity_convention
    from bids_harmonize.templates import get_template

    config = preset_config("tiny", 2, image_size=112)
    torch.manual_seed(0)
    grid = list(nb.load(get_template("MNI152NLin2009cSym", resolution, "mask", "brain")).shape)
    contract = InputContract(
        contrast="T1w",
        template="MNI152NLin2009cSym",
        resolution=resolution,
        grid_shape=tuple(grid),
        image_size=112,
        slice_axis=2,
        intensity=intensity_convention(),
    )
    signatures = {s: {"n_images": 1, "intensity_scale": {"lo": 0.0, "hi": 500.0}} for s in ("A", "B")}
    save_bundle(
        folder,
        build_translator(config),
        ["A", "B"],
        torch.zeros(2, config.style_dim),
        data_hash="sha256:t",
        site_signatures=signatures,
        input_contract=contract,
    )
    if edit is not None:
        card = json.loads((folder / "model.json").read_text())
        edit(card)
        (folder / "model.json").write_text(json.dumps(card))  # json writes NaN as the token NaN
    return folder


def assert_denoised_alike(actual: np.ndarray, expected: np.ndarray, scale: float, atol: float = 1e-5) -> None:
    """Two runs of ANTs' non-local means (preproc/noise.py) agree but for ITK's threads: under load
    a few voxels in 10,000 come out apart (make test on 2026-12-06: one voxel of 13,824 by 0.74 of
    a model range of 2; on 2026-12-07: two of 262,144 by 45 of a scanner range of 2,000), and
    single-threaded runs are identical. So: almost every voxel equal, and the image as a whole
    too, `scale` being the images' intensity range."""
    differs = ~np.isclose(actual, expected, rtol=1e-4, atol=atol)
    assert differs.mean() < 1e-3, f"{differs.sum()} of {differs.size} voxels differ"
    assert np.abs(actual - expected).mean() < 5e-4 * scale
