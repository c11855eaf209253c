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

from bids_harmonize.bids.annex import sidecars_present
from bids_harmonize.bids.ignore import is_ignored, read_bidsignore
from bids_harmonize.bids.naming import NamingError, parse_name
from bids_harmonize.bids.records import ImageRecord
from bids_harmonize.bids.screen import read_header_geometry
from bids_harmonize.bids.selection import (
    SUPPORTED_CONTRASTS,
    bids_entity_names,
    check_filter_entities,
    check_labels,
    matches,
)
from bids_harmonize.errors import ExitCode, HarmonizeError
from bids_harmonize.utils import atomic_write_json

LOGGER = logging.getLogger("bids_harmonize.discovery")
# pybids' own default ignores, plus derivatives (indexed separately, never as raw input).
IGNORED_TOP_LEVEL = {"code", "derivatives", "sourcedata", "stimuli", "models"}
IMAGE_EXTENSIONS = (".nii.gz", ".nii")
_CACHE_FORMAT = 2


class DatasetError(HarmonizeError):
    """The input is not a usable BIDS dataset."""

    exit_code = ExitCode.INVALID_BIDS


@dataclass
class Discovery:
    """What discovery found: the images, and every file it had to leave out (with why)."""

    images: list[ImageRecord]
    skipped: list[str] = field(default_factory=list)
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
    """Every file pybids would index: no dot-entries, nothing under the ignored top-level dirs
    or matched by the dataset's .bidsignore."""
    ignore = read_bidsignore(bids_dir)
    stack = [bids_dir]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                relpath = Path(entry.path).relative_to(bids_dir).as_posix()
                is_dir = entry.is_dir(follow_symlinks=True)
                if is_ignored(relpath, ignore, directory=is_dir):
                    continue
                if is_dir:
                    if not (folder == bids_dir and entry.name in IGNORED_TOP_LEVEL):
                        stack.append(Path(entry.path))
                else:
                    yield entry


def dataset_fingerprint(bids_dir: Path, salt: str = "") -> tuple[str, list[Path], list[Path]]:
    """A digest of every indexed file's path, size and mtime; also returns the JSON files, and
    the JSON files without content (broken symlinks: DataLad files whose content is not fetched)."""
    digest = hashlib.sha256(salt.encode())
    rows, json_files, absent = [], [], []
    for entry in _indexed_files(bids_dir):
        try:
            stat = entry.stat()
        except OSError:  # a broken symlink (e.g. an annexed file not fetched): reported at selection
            rows.append(f"{entry.path}\0broken")
            if entry.name.endswith(".json"):
                absent.append(Path(entry.path))
            continue
        rows.append(f"{entry.path}\0{stat.st_size}\0{stat.st_mtime_ns}")
        if entry.name.endswith(".json"):
            json_files.append(Path(entry.path))
    for row in sorted(rows):
        digest.update(row.encode())
    return digest.hexdigest()[:16], json_files, absent


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
        ignore=[*sorted(IGNORED_TOP_LEVEL), re.compile(r"/\."), *map(Path, invalid), *read_bidsignore(bids_dir)],
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
    fingerprint, json_files, absent = dataset_fingerprint(bids_dir)
    if database_root is not None:
        db_dir = _cache_dir(Path(database_root), bids_dir, fingerprint, validate)
        cache_file = db_dir / "cache.json"
        if cache_file.is_file() and (db_dir / "layout_index.sqlite").is_file():
            cache = json.loads(cache_file.read_text())
            layout = _build_layout(
                bids_dir, validate, {**cache["invalid_sidecars"], **cache["absent_sidecars"]}, db_dir
            )
            return OpenedLayout(layout, cache, db_dir, reused=True)
    invalid = {str(p): why for p, why in find_invalid_sidecars(json_files)}
    # Sidecars without content are left out of the index (pybids would fail reading them) and
    # named only where they apply to a selected image (absent_sidecars_of).
    missing = {str(p): "content not present" for p in absent}
    cache = {"bids_dir": str(bids_dir), "invalid_sidecars": invalid, "absent_sidecars": missing, "headers": {}}
    invalid = {**invalid, **missing}
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
    # Reopen at the final path: the SQLite engine may open new connections, and the path it
    # was built with no longer exists after the rename.
    layout = _build_layout(bids_dir, validate, invalid, db_dir)
    return OpenedLayout(layout, cache, db_dir, reused=False)


@dataclass
class IndexTables:
    """pybids' index read in one query: per file path, its entities and its merged metadata."""

    entities: dict[str, dict[str, Any]]
    metadata: dict[str, dict[str, Any]]


def read_index(layout: Any) -> IndexTables:
    """One pass over pybids' tag table (pybids resolved sidecar inheritance when indexing).

    ``layout.get`` filters files in Python with one lazy SQL load per file, which costs about a
    minute for 10,000 images; reading the table once costs about a second.
    """
    from bids.layout.models import Tag

    session = layout.connection_manager.session
    rows = session.query(Tag.file_path, Tag.entity_name, Tag._value, Tag._dtype, Tag.is_metadata)
    decode = {"int": int, "float": float, "str": str, "bool": lambda v: v == "True", "json": json.loads}
    tables = IndexTables({}, {})
    for path, key, value, dtype, is_metadata in rows:
        table = tables.metadata if is_metadata else tables.entities
        table.setdefault(path, {})[key] = decode.get(dtype, json.loads)(value)
    return tables


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
    cache = opened.cache
    index = read_index(opened.layout)
    anat = {
        path: ents
        for path, ents in index.entities.items()
        if ents.get("datatype") == "anat" and ents.get("extension") in IMAGE_EXTENSIONS
    }
    subjects = check_labels(
        "participant", participant_labels, sorted({str(e["subject"]) for e in anat.values() if "subject" in e})
    )
    sessions = check_labels(
        "session", session_labels, sorted({str(e["session"]) for e in anat.values() if "session" in e})
    )
    known_entities = bids_entity_names()
    skipped = [f"{p}: invalid sidecar, left out ({why})" for p, why in cache["invalid_sidecars"].items()]
    images: list[ImageRecord] = []
    headers_before = len(cache["headers"])
    for contrast in contrasts:
        query: dict[str, Any] = dict((filters or {}).get(contrast.lower(), {}))
        check_filter_entities(query, known_entities, filter_source)
        query["suffix"] = contrast
        if subjects:
            query["subject"] = subjects
        if sessions:
            query["session"] = sessions
        matched = [
            (path, ents)
            for path, ents in sorted(anat.items())
            if all(matches(ents.get(k), v) for k, v in query.items())
        ]
        if not matched and (filters or {}).get(contrast.lower()):
            LOGGER.warning("%s: the filter %s matches no %s image", filter_source, filters[contrast.lower()], contrast)
        for path, ents in matched:
            record = _image_record(bids_dir, Path(path), ents, index.metadata, cache["headers"], skipped)
            if record is not None and not sidecars_present(bids_dir, record, cache["absent_sidecars"], skipped):
                continue
            if record is not None:
                images.append(record)
    images = _drop_format_duplicates(images, skipped)
    for message in skipped:
        LOGGER.warning("skipped %s", message)
    if opened.database_dir is not None and len(cache["headers"]) != headers_before:
        atomic_write_json(opened.database_dir / "cache.json", cache)
    return Discovery(sorted(images, key=lambda r: r.relpath), skipped, opened.reused)


def _drop_format_duplicates(images: list[ImageRecord], skipped: list[str]) -> list[ImageRecord]:
    """One BIDS file stored twice (.nii and .nii.gz) has no single meaning: leave both out."""
    by_stem: dict[str, list[ImageRecord]] = {}
    for image in images:
        by_stem.setdefault(image.relpath.split(".", 1)[0], []).append(image)
    kept = []
    for group in by_stem.values():
        if len(group) == 1:
            kept.extend(group)
            continue
        names = " and ".join(i.relpath for i in group)
        skipped.append(f"{names}: the same image in two formats; both left out. Fix: delete one of them.")
    return kept


def _image_record(
    bids_dir: Path,
    path: Path,
    entities: dict[str, Any],
    metadata: dict[str, dict[str, Any]],
    headers: dict[str, Any],
    skipped: list[str],
) -> ImageRecord | None:
    relpath = path.relative_to(bids_dir).as_posix()
    try:
        parse_name(relpath)
        stat = path.stat()
    except NamingError as err:
        skipped.append(str(err))
        return None
    except OSError as err:
        why = "is a broken symbolic link" if path.is_symlink() else f"cannot be read ({err.strerror})"
        skipped.append(
            f"{relpath}: {why}; left out. Fix: fetch the file (an annexed dataset: `datalad get {relpath}` "
            "or `git annex get`), or remove the link."
        )
        return None
    key = f"{relpath}\0{stat.st_size}\0{stat.st_mtime_ns}"
    geometry = headers.get(key)
    if geometry is None:
        try:
            geometry = headers[key] = list(read_header_geometry(path))
        except Exception as err:  # nibabel raises several types for corrupt files
            geometry = headers[key] = f"unreadable image ({err})"
    if isinstance(geometry, str):
        skipped.append(
            f"{relpath}: {geometry}; left out. Fix: convert or copy it again from the source data, or "
            "leave it out with .bidsignore"
        )
        return None
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
