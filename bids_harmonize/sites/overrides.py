"""Site labels given by the user, which win over inference.

Precedence, highest first:
1. ``--site-table TSV``: a ``site`` column and one key column: ``path`` (relative to the BIDS
   root, or a bare file name), or ``participant_id`` with an optional ``session_id``. Within
   the table a path row beats a session row, which beats a participant row.
2. A ``site`` column in ``sub-<label>/sub-<label>_sessions.tsv``.
3. A ``site`` column in ``participants.tsv``.
Empty cells and ``n/a`` mean "no override here".
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from bids_harmonize.bids.records import ImageRecord
from bids_harmonize.errors import ExitCode, HarmonizeError

MISSING = {"", "n/a", "na", "nan"}


class SiteTableError(HarmonizeError, ValueError):
    """A site table or TSV is unusable; the message names the file and the fix."""

    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class Override:
    site: str
    provenance: str  # site-table | sessions.tsv | participants.tsv
    detail: str  # which file and row decided it


def _strip_prefix(label: str, prefix: str) -> str:
    return label[len(prefix) :] if label.startswith(prefix) else label


def read_tsv(path: Path) -> list[dict[str, str]]:
    try:
        # utf-8-sig: spreadsheet programs save a byte-order mark that would otherwise become part
        # of the first column's name (and silently hide e.g. a 'site' column placed first).
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise SiteTableError(f"Cannot read {path}: {err}. Fix: save it as a UTF-8, tab-separated file.") from err
    return [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in rows]


@dataclass
class SiteOverrides:
    by_path: dict[str, Override] = field(default_factory=dict)
    by_session: dict[tuple[str, str | None], Override] = field(default_factory=dict)
    by_participant: dict[str, Override] = field(default_factory=dict)
    unmatched_rows: list[str] = field(default_factory=list)

    def lookup(self, image: ImageRecord) -> Override | None:
        filename = image.relpath.rsplit("/", 1)[-1]
        for found in (
            self.by_path.get(image.relpath),
            self.by_path.get(filename),
            self.by_session.get((image.subject, image.session)),
            self.by_participant.get(image.subject),
        ):
            if found:
                return found
        return None


def _add_site_table(overrides: SiteOverrides, table: Path) -> None:
    rows = read_tsv(table)
    columns = set(rows[0]) if rows else set()
    if "site" not in columns or not ({"path", "participant_id"} & columns):
        raise SiteTableError(
            f"Site table {table} has columns {sorted(columns)}. Fix: give a 'site' column and "
            "either 'path' (relative to the BIDS root) or 'participant_id' (optionally with "
            "'session_id'), tab-separated with a header row."
        )
    for number, row in enumerate(rows, start=2):
        site = row.get("site", "")
        if site.lower() in MISSING:
            continue
        origin = Override(site, "site-table", f"{table.name} line {number}")
        if row.get("path", "").lower() not in MISSING:
            overrides.by_path[row["path"].removeprefix("./")] = origin
        elif row.get("participant_id", "").lower() not in MISSING:
            subject = _strip_prefix(row["participant_id"], "sub-")
            session = row.get("session_id", "")
            if session.lower() in MISSING:
                overrides.by_participant[subject] = origin
            else:
                overrides.by_session[(subject, _strip_prefix(session, "ses-"))] = origin


def _add_bids_tables(overrides: SiteOverrides, bids_dir: Path, subjects: set[str]) -> None:
    participants = bids_dir / "participants.tsv"
    if participants.is_file():
        for number, row in enumerate(read_tsv(participants), start=2):
            subject = _strip_prefix(row.get("participant_id", ""), "sub-")
            site = row.get("site", "")
            if subject and site.lower() not in MISSING:
                overrides.by_participant.setdefault(
                    subject, Override(site, "participants.tsv", f"participants.tsv line {number}")
                )
    for subject in sorted(subjects):
        sessions = bids_dir / f"sub-{subject}" / f"sub-{subject}_sessions.tsv"
        if not sessions.is_file():
            continue
        for number, row in enumerate(read_tsv(sessions), start=2):
            session = _strip_prefix(row.get("session_id", ""), "ses-")
            site = row.get("site", "")
            if session and site.lower() not in MISSING:
                overrides.by_session.setdefault(
                    (subject, session), Override(site, "sessions.tsv", f"{sessions.name} line {number}")
                )


def load_overrides(bids_dir: Path, images: list[ImageRecord], site_table: Path | None = None) -> SiteOverrides:
    """Collect every user-given site label that applies to ``images``."""
    overrides = SiteOverrides()
    if site_table is not None:
        _add_site_table(overrides, Path(site_table))
    _add_bids_tables(overrides, Path(bids_dir), {image.subject for image in images})
    if site_table is not None:
        overrides.unmatched_rows = _unmatched_table_rows(overrides, images)
    return overrides


def _unmatched_table_rows(overrides: SiteOverrides, images: list[ImageRecord]) -> list[str]:
    """Site-table rows that select no discovered image (usually a typo worth a warning)."""
    paths = {i.relpath for i in images} | {i.relpath.rsplit("/", 1)[-1] for i in images}
    sessions = {(i.subject, i.session) for i in images}
    subjects = {i.subject for i in images}
    unmatched = [o.detail for p, o in overrides.by_path.items() if o.provenance == "site-table" and p not in paths]
    unmatched += [
        o.detail for k, o in overrides.by_session.items() if o.provenance == "site-table" and k not in sessions
    ]
    unmatched += [
        o.detail for s, o in overrides.by_participant.items() if o.provenance == "site-table" and s not in subjects
    ]
    return sorted(unmatched)
