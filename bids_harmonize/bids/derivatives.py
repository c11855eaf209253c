"""How outputs are written into OUT_DIR (BIDS Derivatives 1.9); where they go is bids/outputs.py.

Every write is atomic (temporary name, then rename), so several participant runs sharing
one OUT_DIR, or a run killed half-way, never leave a truncated file. Sidecars carry their
``Sources`` as BIDS URIs (``bids:raw:...``, resolved through ``DatasetLinks``) and the
provenance of the run that made them.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from bids_harmonize import CODE_URL, __version__
from bids_harmonize.bids.invariant import check_finite
from bids_harmonize.bids.naming import sidecar_path
from bids_harmonize.bids.outputs import BIDSIGNORE, OutputLayout
from bids_harmonize.bids.records import ImageRecord
from bids_harmonize.errors import ExitCode, HarmonizeError
from bids_harmonize.utils import atomic_save_nifti, atomic_write, atomic_write_json, atomic_write_text, atomic_write_tsv

PIPELINE_NAME = "bids_harmonize"
_PROVENANCE_PACKAGES = ("torch", "nibabel", "nipype", "pybids", "SimpleITK", "numpy", "templateflow")


class OutputDirError(HarmonizeError, ValueError):
    """OUT_DIR holds another pipeline's derivatives; the message says what to do."""

    exit_code = ExitCode.USAGE


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def container_info() -> dict[str, str] | None:
    """Set in the container image (Dockerfile ENV); None when running outside one."""
    kind = os.environ.get("BIDS_HARMONIZE_CONTAINER_TYPE")
    if not kind:
        return None
    info = {"Type": kind}
    tag = os.environ.get("BIDS_HARMONIZE_CONTAINER_TAG")
    if tag:
        info["Tag"] = tag
    return info


@lru_cache(maxsize=1)
def software_versions() -> dict[str, str]:
    """Versions of the packages that shape the outputs (looked up once per process)."""
    versions = {PIPELINE_NAME: __version__, "python": platform.python_version()}
    for package in _PROVENANCE_PACKAGES:
        try:
            versions[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            continue
    return versions


@dataclass
class Provenance:
    """What every sidecar records about the run that wrote it."""

    command_line: list[str] = field(default_factory=lambda: list(sys.argv))
    start_time: str = field(default_factory=utc_now)

    def fields(self) -> dict[str, Any]:
        return {
            "GeneratedBy": generated_by(),
            # Not "SoftwareVersions": BIDS defines that key as the scanner's software (a string).
            "PackageVersions": dict(software_versions()),
            "CommandLine": " ".join(self.command_line),
            "StartTime": self.start_time,
            "EndTime": utc_now(),
        }


def generated_by() -> list[dict[str, Any]]:
    entry: dict[str, Any] = {"Name": PIPELINE_NAME, "Version": __version__, "CodeURL": CODE_URL}
    container = container_info()
    if container:
        entry["Container"] = container
    return [entry]


# ----------------------------------------------------------------------------- dataset level
def dataset_description(bids_dir: Path) -> dict[str, Any]:
    source = _read_json(bids_dir / "dataset_description.json")
    source_entry = {"URL": bids_dir.resolve().as_uri()}
    for key_in, key_out in (("DatasetDOI", "DOI"), ("Version", "Version")):
        if source.get(key_in):
            source_entry[key_out] = source[key_in]
    return {
        "Name": f"{PIPELINE_NAME} harmonized derivatives of {source.get('Name', bids_dir.name)}",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": generated_by(),
        "SourceDatasets": [source_entry],
        "DatasetLinks": {"raw": bids_dir.resolve().as_uri()},
    }


def write_bidsignore(out_dir: Path) -> Path:
    """OUT/.bidsignore with our patterns (outputs.BIDSIGNORE); lines a user added are kept."""
    path = OutputLayout(out_dir).bidsignore
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    missing = [p for p in BIDSIGNORE if p not in lines]
    if missing or not path.is_file():
        atomic_write_text(path, "\n".join([*lines, *missing]) + "\n")
    return path


def check_output_dir(out_dir: Path) -> None:
    """Raise OutputDirError when OUT holds another pipeline's derivatives (checked before
    anything, even the run's configuration, is written there)."""
    path = OutputLayout(out_dir).description
    if not path.is_file():
        return
    existing = _read_json(path)
    names = [g.get("Name") for g in existing.get("GeneratedBy", []) if isinstance(g, dict)]
    if PIPELINE_NAME not in names:
        raise OutputDirError(
            f"{path} belongs to another pipeline ({names or 'no GeneratedBy'}). Fix: choose an "
            f"empty output directory, e.g. {Path(out_dir) / PIPELINE_NAME}."
        )


def write_dataset_description(out_dir: Path, bids_dir: Path) -> Path:
    """Create OUT/dataset_description.json, or check that an existing one is ours."""
    path = OutputLayout(out_dir).description
    if path.is_file():
        check_output_dir(out_dir)
        write_bidsignore(out_dir)
        return path
    write_bidsignore(out_dir)
    return atomic_write_json(path, dataset_description(Path(bids_dir)))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        content = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return content if isinstance(content, dict) else {}


# ----------------------------------------------------------------------------- writes
def write_image(img: Any, path: Path, sidecar: Mapping[str, Any] | None = None) -> Path:
    """Write a NIfTI derivative and, when given, its JSON sidecar (both atomic); an image with a
    non-finite value is refused (bids/invariant.py), never written."""
    check_finite(img, str(path))
    atomic_save_nifti(img, path)
    if sidecar is not None:
        atomic_write_json(sidecar_path(path), dict(sidecar))
    return path


def atomic_copy(source: Path, target: Path) -> Path:
    """Copy a file (e.g. a transform) into OUT atomically."""
    return atomic_write(Path(target), lambda tmp: shutil.copyfile(source, tmp), suffix=Path(target).suffix)


def image_sidecar(
    sources: Iterable[ImageRecord | str],
    provenance: Provenance,
    *,
    skull_stripped: bool,
    extra: Mapping[str, Any] | None = None,
    inherited: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A derivative sidecar: kept raw fields first, then Sources, SkullStripped, provenance."""
    content: dict[str, Any] = dict(inherited or {})
    content["Sources"] = [s.bids_uri if isinstance(s, ImageRecord) else s for s in sources]
    content["SkullStripped"] = skull_stripped
    content.update(extra or {})
    content.update(provenance.fields())
    return content


def write_tsv(path: Path, rows: list[dict[str, str]], columns: Iterable[str]) -> Path:
    return atomic_write_tsv(Path(path), rows, list(columns))


def write_json(path: Path, content: Any) -> Path:
    return atomic_write_json(Path(path), content)


def write_site_inventory(
    out_dir: Path, rows: list[dict[str, str]], columns: Iterable[str], dictionary: dict[str, Any]
) -> tuple[Path, Path]:
    """OUT/sites.tsv and its data dictionary OUT/sites.json."""
    layout = OutputLayout(out_dir)
    return write_tsv(layout.sites_table, rows, columns), write_json(layout.sites_dictionary, dictionary)


def logs_dir(out_dir: Path) -> Path:
    """OUT/logs, created when missing (Nipype writes its crash files there)."""
    path = OutputLayout(out_dir).logs
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_run_config(out_dir: Path, config: Mapping[str, Any], run_id: str) -> Path:
    return write_json(OutputLayout(out_dir).run_config(run_id), dict(config))


def write_crash_report(out_dir: Path, run_id: str, text: str) -> Path:
    return atomic_write_text(OutputLayout(out_dir).crash_report(run_id), text)
