"""Which images a run takes: --participant-label / --session-id labels and --bids-filter-file
queries (fMRIPrep's form), checked against what the dataset holds before anything runs.

Queries follow pybids' semantics (None = entity absent, "*" = present, list = any of) and are
matched against the entities pybids indexed, so a filter behaves as it would in pybids itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bids_harmonize.errors import ExitCode, HarmonizeError

SUPPORTED_CONTRASTS = ("T1w", "T2w")


class SelectionError(HarmonizeError):
    """Labels, filters or contrasts select nothing."""

    exit_code = ExitCode.NOTHING_SELECTED


class FilterFileError(HarmonizeError, ValueError):
    """The --bids-filter-file is unusable."""

    exit_code = ExitCode.USAGE


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


def matches(value: Any, wanted: Any) -> bool:
    """pybids query semantics: None = entity absent, "*" = present, list = any of, else equal."""
    if wanted is None:
        return value is None
    if wanted == "*":
        return value is not None
    if isinstance(wanted, list):
        return any(matches(value, w) for w in wanted)
    if value is None:
        return False
    if str(value).isdigit() and str(wanted).isdigit():  # run-2 matches 2 and "02"
        return int(value) == int(wanted)
    return str(value) == str(wanted)


def check_labels(kind: str, wanted: list[str] | None, available: list[str]) -> list[str] | None:
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


def bids_entity_names() -> set[str]:
    """Every entity pybids knows for raw BIDS (present in this dataset or not)."""
    from bids.layout.models import Config

    return set(Config.load("bids").entities) | {"datatype", "suffix", "extension"}


def check_filter_entities(filters: dict[str, Any], known: set[str], source: str) -> None:
    unknown = sorted(set(filters) - known)
    if unknown:
        raise FilterFileError(
            f"{source}: {unknown} are not BIDS entity names. Fix: use pybids' long names, e.g. "
            "acquisition, reconstruction, run, session, echo (not the short forms acq, rec, ses)."
        )
