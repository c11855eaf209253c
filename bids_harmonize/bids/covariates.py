"""Covariates of the downstream diagnostics and of the site anchors: columns of participants.tsv
and sessions.tsv.

``--covariates age sex group`` names columns of the raw dataset's participants.tsv or of its
``sub-<label>/sub-<label>_sessions.tsv`` files (a session's value wins over the participant's).
Without the option, ``age`` and ``sex`` are used where participants.tsv has them. A column whose
every present value is a number is numeric (its effect is a slope); any other is categorical (its
effect is a group difference). ``n/a`` and empty cells are missing values: they are kept as
missing here and reported by name wherever a fit has to leave an image out.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bids_harmonize.errors import ExitCode, HarmonizeError

DEFAULT_COVARIATES = ("age", "sex")
MISSING = {"", "n/a", "na", "nan"}
Key = tuple[str, str | None]  # (subject label without "sub-", session label without "ses-" or None)


class CovariateError(HarmonizeError, ValueError):
    """A --covariates name that neither participants.tsv nor any sessions.tsv has."""

    exit_code = ExitCode.USAGE


@dataclass
class Covariates:
    """Covariate values by subject (and session), and what kind each covariate is."""

    names: list[str]
    kinds: dict[str, str]  # name -> "numeric" or "categorical"
    participants: dict[str, dict[str, str | None]] = field(default_factory=dict)
    sessions: dict[Key, dict[str, str | None]] = field(default_factory=dict)

    def values(self, subject: str, session: str | None) -> dict[str, float | str | None]:
        """Every covariate of one image: a float (numeric), a label (categorical) or None (missing)."""
        row = {**self.participants.get(subject, {})}
        row.update({k: v for k, v in self.sessions.get((subject, session), {}).items() if v is not None})
        return {name: _typed(row.get(name), self.kinds[name]) for name in self.names}

    def columns(self, keys: Sequence[Key]) -> dict[str, list[float | None]]:
        """Numeric columns for a model, one value per (subject, session) in ``keys`` (None:
        missing): a numeric covariate as it is; a categorical one as a 0/1 column per level but
        the first in sorted order. Columns without variation among ``keys`` carry no information
        and are left out."""
        rows = [self.values(subject, session) for subject, session in keys]
        columns: dict[str, list[float | None]] = {}
        for name in self.names:
            values = [row[name] for row in rows]
            if self.kinds[name] == "numeric":
                columns[name] = values
                continue
            for level in sorted({v for v in values if v is not None})[1:]:
                columns[f"{name}={level}"] = [None if v is None else float(v == level) for v in values]
        return {name: v for name, v in columns.items() if len({x for x in v if x is not None}) > 1}


def _typed(value: str | None, kind: str) -> float | str | None:
    if value is None:
        return None
    return float(value) if kind == "numeric" else value


def _read(path: Path, key: str) -> tuple[list[str], dict[str, dict[str, str | None]]]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        columns = [c for c in reader.fieldnames or [] if c != key]
        rows = {}
        for row in reader:
            label = (row.get(key) or "").strip()
            label = label.split("-", 1)[1] if "-" in label else label
            cells = {c: (row.get(c) or "").strip() for c in columns}
            rows[label] = {c: (None if v.lower() in MISSING else v) for c, v in cells.items()}
    return columns, rows


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def read_covariates(bids_dir: Path, requested: list[str] | None = None) -> Covariates:
    """The covariates ``requested`` (None: DEFAULT_COVARIATES where present) of ``bids_dir``;
    raises CovariateError naming the columns there are when a requested one is absent."""
    bids_dir = Path(bids_dir)
    columns: list[str] = []
    participants: dict[str, dict[str, str | None]] = {}
    if (bids_dir / "participants.tsv").is_file():
        columns, participants = _read(bids_dir / "participants.tsv", "participant_id")
    sessions: dict[Key, dict[str, str | None]] = {}
    for path in sorted(bids_dir.glob("sub-*/sub-*_sessions.tsv")):
        subject = path.parent.name.split("-", 1)[1]
        session_columns, rows = _read(path, "session_id")
        columns += [c for c in session_columns if c not in columns]
        sessions.update({(subject, session): row for session, row in rows.items()})
    if requested is None:
        names = [name for name in DEFAULT_COVARIATES if name in columns]
    else:
        names = list(dict.fromkeys(requested))
        absent = [name for name in names if name not in columns]
        if absent:
            raise CovariateError(
                f"--covariates {' '.join(absent)}: no such column in {bids_dir / 'participants.tsv'} or any "
                f"sessions.tsv (columns there: {', '.join(columns) or 'none'}). Fix: name existing columns."
            )
    kinds = {}
    for name in names:
        values = [row.get(name) for row in [*participants.values(), *sessions.values()] if row.get(name) is not None]
        kinds[name] = "numeric" if values and all(_is_number(v) for v in values) else "categorical"
    return Covariates(names, kinds, participants, sessions)
