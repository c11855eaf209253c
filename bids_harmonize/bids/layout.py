"""Discovery: one pybids BIDSLayout, cached, and the T1w/T2w images selected from it.

The pybids index (SQLite) is kept in the work dir under a key made from a fingerprint of the
dataset (every indexed file's path, size and mtime), the pybids version and the validation
flag, so a warm run reuses it and any change to the dataset builds a fresh one. Metadata are
read in one query over pybids' tag table rather than file by file, and NIfTI header geometry
is cached beside the index, because those two steps dominate a warm run of a large dataset.

Bad files never raise a traceback: an invalid JSON sidecar is left out of the index (pybids
would otherwise fail on it), a zero-byte or unreadable image is skipped; both with a warning
that names the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bids_harmonize.bids.records import ImageRecord
from bids_harmonize.utils import atomic_write_json

LOGGER = logging.getLogger("bids_harmonize.discovery")
# pybids' own default ignores, plus derivatives (indexed separately, never as raw input).
IGNORED_TOP_LEVEL = {"code", "derivatives", "sourcedata", "stimuli", "models"}
IMAGE_EXTENSIONS = (".nii.gz", ".nii")
SUPPORTED_CONTRASTS = ("T1w", "T2w")
_CACHE_FORMAT = 1


class DatasetError(Exception):
    """The input is not a usable BIDS dataset (BIDS Apps exit code 16)."""


class SelectionError(Exception):
    """Labels, filters or contrasts select nothing (BIDS Apps exit code 18)."""


class FilterFileError(ValueError):
    """The --bids-filter-file is unusable (usage error, exit code 64)."""


@dataclass
class Discovery:
    """What discovery found: the images, and every file it had to leave out (with why)."""

    images: list[ImageRecord]
    skipped: list[str] = field(default_factory=list)
    database_dir: Path | None = None
    reused_index: bool = False


# ----------------------------------------------------------------------------- dataset checks
def check_dataset(bids_dir: Path) -> None:
    description = bids_dir / "dataset_description.json"
    if not description.is_file():
        raise DatasetError(
            f"{bids_dir} is not a BIDS dataset: {description.name} is missing. Fix: point bids_dir "
            "at the dataset root (the folder holding dataset_description.json and the sub-* "
            'folders), or create it with at least {"Name": "...", "BIDSVersion": "1.9.0"}.'
        )
    try:
        content = json.loads(description.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"{description} is not valid JSON ({err}). Fix: repair the file.") from err
    if not isinstance(content, dict) or "Name" not in content:
        raise DatasetError(f"{description} must be a JSON object with a 'Name'. Fix: add one.")


def _indexed_files(bids_dir: Path) -> Iterable[os.DirEntry]:
    """Every file pybids would index: no dot-entries, nothing under the ignored top-level dirs."""
    stack = [bids_dir]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=True):
                    if not (folder == bids_dir and entry.name in IGNORED_TOP_LEVEL):
                        stack.append(Path(entry.path))
                else:
                    yield entry


def dataset_fingerprint(bids_dir: Path, salt: str = "") -> tuple[str, list[Path]]:
    """A digest of every indexed file's path, size and mtime; also returns the JSON files."""
    digest = hashlib.sha256(salt.encode())
    rows, json_files = [], []
    for entry in _indexed_files(bids_dir):
        stat = entry.stat()
        rows.append(f"{entry.path}\0{stat.st_size}\0{stat.st_mtime_ns}")
        if entry.name.endswith(".json"):
            json_files.append(Path(entry.path))
    for row in sorted(rows):
        digest.update(row.encode())
    return digest.hexdigest()[:16], json_files


def find_invalid_sidecars(json_files: list[Path]) -> list[tuple[Path, str]]:
    invalid = []
    for path in json_files:
        try:
            content = json.loads(path.read_bytes())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            invalid.append((path, f"not valid JSON ({err.__class__.__name__}: {err})"))
            continue
        if not isinstance(content, dict):
            invalid.append((path, f"a JSON {type(content).__name__}, not an object"))
    return invalid


# ----------------------------------------------------------------------------- the index
def _cache_dir(database_root: Path, bids_dir: Path, fingerprint: str, validate: bool) -> Path:
    import bids

    key = f"{bids_dir}\0{fingerprint}\0{bids.__version__}\0{validate}\0{_CACHE_FORMAT}"
    return database_root / hashlib.sha256(key.encode()).hexdigest()[:20]


def _prune_stale(database_root: Path, keep: Path, bids_dir: Path) -> None:
    """Remove older indexes of the same dataset so the work dir does not grow without bound."""
    for candidate in database_root.glob("*/cache.json"):
        if candidate.parent == keep:
            continue
        try:
            if json.loads(candidate.read_text()).get("bids_dir") == str(bids_dir):
                shutil.rmtree(candidate.parent, ignore_errors=True)
        except (OSError, json.JSONDecodeError):
            continue


@dataclass
class OpenedLayout:
    layout: Any
    cache: dict[str, Any]  # {"invalid_sidecars": {path: why}, "headers": {key: geometry}}
    database_dir: Path | None
    reused: bool


def _build_layout(bids_dir: Path, validate: bool, invalid: dict[str, str], database_dir: Path | None) -> Any:
    from bids import BIDSLayout
    from bids.layout import BIDSLayoutIndexer

    indexer = BIDSLayoutIndexer(
        validate=validate,
        index_metadata=True,
        ignore=[*sorted(IGNORED_TOP_LEVEL), re.compile(r"/\."), *map(Path, invalid)],
    )
    try:
        return BIDSLayout(bids_dir, validate=validate, indexer=indexer, database_path=database_dir)
    except Exception as err:  # pybids raises many types; all mean "this dataset can't be indexed"
        raise DatasetError(
            f"pybids could not index {bids_dir}: {err}. Fix: run the BIDS validator on it, or pass "
            "--skip-bids-validation if the names are BIDS-like but not strictly valid."
        ) from err


def open_layout(bids_dir: Path, database_root: Path | None, validate: bool = True) -> OpenedLayout:
    """Open the cached index of ``bids_dir`` or build it (into a private folder, then renamed
    into place, so parallel participant runs sharing a work dir never see a half-built index)."""
    bids_dir = Path(bids_dir).resolve()
    check_dataset(bids_dir)
    fingerprint, json_files = dataset_fingerprint(bids_dir)
    if database_root is not None:
        db_dir = _cache_dir(Path(database_root), bids_dir, fingerprint, validate)
        cache_file = db_dir / "cache.json"
        if cache_file.is_file() and (db_dir / "layout_index.sqlite").is_file():
            cache = json.loads(cache_file.read_text())
            layout = _build_layout(bids_dir, validate, cache["invalid_sidecars"], db_dir)
            return OpenedLayout(layout, cache, db_dir, reused=True)
    invalid = {str(p): why for p, why in find_invalid_sidecars(json_files)}
    cache = {"bids_dir": str(bids_dir), "invalid_sidecars": invalid, "headers": {}}
    if database_root is None:
        return OpenedLayout(_build_layout(bids_dir, validate, invalid, None), cache, None, reused=False)
    building = db_dir.with_name(f"{db_dir.name}.building-{os.getpid()}")
    layout = _build_layout(bids_dir, validate, invalid, building)
    atomic_write_json(building / "cache.json", cache)
    try:
        building.rename(db_dir)
    except OSError:  # another run finished first: use its identical index
        shutil.rmtree(building, ignore_errors=True)
        return open_layout(bids_dir, database_root, validate)
    _prune_stale(Path(database_root), db_dir, bids_dir)
    # Reopen at the final path so later writes (header cache) and the SQLite file agree.
    layout = _build_layout(bids_dir, validate, invalid, db_dir)
    return OpenedLayout(layout, cache, db_dir, reused=False)


def _bulk_metadata(layout: Any) -> dict[str, dict[str, Any]]:
    """All files' merged sidecar metadata in one query (pybids resolved inheritance at index)."""
    from bids.layout.models import Tag

    session = layout.connection_manager.session
    rows = session.query(Tag.file_path, Tag.entity_name, Tag._value, Tag._dtype).filter(Tag.is_metadata.is_(True))
    decode = {"int": int, "float": float, "str": str, "bool": lambda v: v == "True", "json": json.loads}
    metadata: dict[str, dict[str, Any]] = {}
    for path, key, value, dtype in rows:
        metadata.setdefault(path, {})[key] = decode.get(dtype, json.loads)(value)
    return metadata


def read_header_geometry(path: Path) -> tuple[list[int], list[float]]:
    """Shape and voxel size (first three axes) from the header; raises on unreadable files."""
    import nibabel as nb

    if path.stat().st_size == 0:
        raise ValueError("the file is empty (0 bytes)")
    header = nb.load(path).header
    shape = [int(s) for s in header.get_data_shape()[:3]]
    zooms = [float(z) for z in header.get_zooms()[:3]]
    if len(shape) < 3 or min(shape) < 1 or min(zooms) <= 0:
        raise ValueError(f"not a 3D image (shape {shape}, voxel size {zooms})")
    return shape, zooms


# ----------------------------------------------------------------------------- selection
def load_filter_file(path: Path | None) -> dict[str, dict[str, Any]]:
    """Read a --bids-filter-file: {"t1w": {entity: value}, "t2w": {...}} (fMRIPrep's form)."""
    if path is None:
        return {}
    try:
        content = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FilterFileError(
            f"--bids-filter-file {path} is not valid JSON ({err}). Fix: write an object such as "
            '{"t1w": {"acquisition": "mprage"}, "t2w": {"session": "01"}}.'
        ) from err
    known = {c.lower() for c in SUPPORTED_CONTRASTS}
    if not isinstance(content, dict) or not set(content) <= known:
        raise FilterFileError(
            f"--bids-filter-file {path}: top-level keys must be among {sorted(known)}, got "
            f"{sorted(content) if isinstance(content, dict) else type(content).__name__}."
        )
    for key, query in content.items():
        if not isinstance(query, dict):
            raise FilterFileError(f"--bids-filter-file {path}: '{key}' must map entity names to values.")
    return content


def _query_value(value: Any) -> Any:
    from bids.layout import Query

    return {None: Query.NONE, "*": Query.ANY}.get(value, value) if not isinstance(value, list) else value


def _check_labels(kind: str, wanted: list[str] | None, available: list[str]) -> list[str] | None:
    if not wanted:
        return None
    prefix = "sub-" if kind == "participant" else "ses-"
    labels = [w[len(prefix) :] if w.startswith(prefix) else w for w in wanted]
    unknown = sorted(set(labels) - set(available))
    if unknown:
        shown = ", ".join(available[:30]) + (" ..." if len(available) > 30 else "")
        raise SelectionError(
            f"{kind} label(s) {', '.join(unknown)} not found in the dataset. Available: {shown or 'none'}. "
            f"Fix: pass labels without or with the '{prefix}' prefix, as listed."
        )
    return labels


def _entity_filters(layout: Any, filters: dict[str, Any], source: str) -> dict[str, Any]:
    entities = set(layout.get_entities(metadata=False))
    unknown = sorted(set(filters) - entities)
    if unknown:
        raise FilterFileError(
            f"{source}: unknown BIDS entities {unknown}. Fix: use pybids entity names such as "
            "acquisition, reconstruction, run, session (not the short forms acq, rec)."
        )
    return {k: _query_value(v) for k, v in filters.items()}


def discover_images(
    bids_dir: Path,
    *,
    database_root: Path | None = None,
    validate: bool = True,
    participant_labels: list[str] | None = None,
    session_labels: list[str] | None = None,
    contrasts: Iterable[str] = SUPPORTED_CONTRASTS,
    filters: dict[str, dict[str, Any]] | None = None,
    filter_source: str = "--bids-filter-file",
) -> Discovery:
    """Every selected anatomical image, with merged metadata and header geometry."""
    bids_dir = Path(bids_dir).resolve()
    opened = open_layout(bids_dir, database_root, validate)
    layout, cache = opened.layout, opened.cache
    subjects = _check_labels("participant", participant_labels, sorted(layout.get_subjects()))
    sessions = _check_labels("session", session_labels, sorted(layout.get_sessions()))
    skipped = [f"{p}: invalid sidecar, left out ({why})" for p, why in cache["invalid_sidecars"].items()]
    metadata = _bulk_metadata(layout)
    images: list[ImageRecord] = []
    headers_before = len(cache["headers"])
    for contrast in contrasts:
        query: dict[str, Any] = {"datatype": "anat", "suffix": contrast, "extension": list(IMAGE_EXTENSIONS)}
        query.update(_entity_filters(layout, (filters or {}).get(contrast.lower(), {}), filter_source))
        if subjects:
            query["subject"] = subjects
        if sessions:
            query["session"] = sessions
        for bids_file in layout.get(return_type="object", **query):
            record = _image_record(bids_dir, bids_file, metadata, cache["headers"], skipped)
            if record is not None:
                images.append(record)
    for message in skipped:
        LOGGER.warning("skipped %s", message)
    if opened.database_dir is not None and len(cache["headers"]) != headers_before:
        atomic_write_json(opened.database_dir / "cache.json", cache)
    return Discovery(sorted(images, key=lambda r: r.relpath), skipped, opened.database_dir, opened.reused)


def _image_record(
    bids_dir: Path,
    bids_file: Any,
    metadata: dict[str, dict[str, Any]],
    headers: dict[str, Any],
    skipped: list[str],
) -> ImageRecord | None:
    path = Path(bids_file.path)
    relpath = path.relative_to(bids_dir).as_posix()
    stat = path.stat()
    key = f"{relpath}\0{stat.st_size}\0{stat.st_mtime_ns}"
    geometry = headers.get(key)
    if geometry is None:
        try:
            geometry = headers[key] = list(read_header_geometry(path))
        except Exception as err:  # nibabel raises several types for corrupt files
            geometry = headers[key] = f"unreadable image ({err})"
    if isinstance(geometry, str):
        skipped.append(f"{relpath}: {geometry}")
        return None
    entities = {k: v for k, v in bids_file.get_entities(metadata=False).items()}
    return ImageRecord(
        path=path,
        relpath=relpath,
        subject=str(entities["subject"]),
        session=str(entities["session"]) if entities.get("session") else None,
        suffix=str(entities["suffix"]),
        entities=entities,
        metadata=metadata.get(str(path), {}),
        voxel_size=tuple(geometry[1]),
        shape=tuple(geometry[0]),
    )
