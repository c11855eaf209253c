"""Site assignments as table rows (sites.tsv), their data dictionary (sites.json), and the
human summary printed by ``group --sites-only``."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from bids_harmonize.sites.assign import SiteAssignment

DATA_DICTIONARY: dict[str, dict[str, str]] = {
    "path": {"Description": "Image path relative to the input BIDS dataset root."},
    "participant_id": {"Description": "Participant label with the sub- prefix."},
    "session_id": {"Description": "Session label with the ses- prefix, or n/a."},
    "contrast": {"Description": "BIDS suffix of the image (T1w or T2w)."},
    "site": {"Description": "Site the image is harmonized from; inferred or given by the user."},
    "provenance": {
        "Description": "Where the site label came from.",
        "Levels": {
            "inferred": "Inferred from the acquisition metadata (see evidence).",
            "site-table": "Given in the --site-table file.",
            "sessions.tsv": "Given in the site column of the participant's sessions.tsv.",
            "participants.tsv": "Given in the site column of participants.tsv.",
        },
    },
    "manufacturer": {"Description": "Normalised Manufacturer."},
    "model": {"Description": "Normalised ManufacturersModelName."},
    "field_strength": {"Description": "MagneticFieldStrength snapped to a nominal value.", "Units": "T"},
    "unit_key": {"Description": "Sidecar key that identified the physical scanner unit."},
    "unit": {"Description": "Value of unit_key."},
    "software_versions": {"Description": "SoftwareVersions as given (recorded, not used to split)."},
    "repetition_time": {"Description": "RepetitionTime from the sidecar.", "Units": "s"},
    "echo_time": {"Description": "EchoTime from the sidecar.", "Units": "s"},
    "inversion_time": {"Description": "InversionTime from the sidecar.", "Units": "s"},
    "flip_angle": {"Description": "FlipAngle from the sidecar.", "Units": "degree"},
    "voxel_size": {"Description": "Voxel size from the NIfTI header, axes sorted.", "Units": "mm"},
    "evidence": {"Description": "The normalised values (and any normalisation) that decided the site."},
    "warnings": {"Description": "Missing or ambiguous metadata for this image, or n/a."},
}
COLUMNS = tuple(DATA_DICTIONARY)


def _fmt(value: Any) -> str:
    if value is None or value == "":
        return "n/a"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "x".join(f"{v:g}" for v in value)
    return str(value).replace("\t", " ").replace("\n", " ")


def assignment_row(a: SiteAssignment) -> dict[str, str]:
    meta, sig = a.image.metadata, a.scanner
    values = {
        "path": a.image.relpath,
        "participant_id": f"sub-{a.image.subject}",
        "session_id": f"ses-{a.image.session}" if a.image.session else None,
        "contrast": a.image.suffix,
        "site": a.site,
        "provenance": a.provenance,
        "manufacturer": sig.vendor,
        "model": sig.model,
        "field_strength": sig.field_t,
        "unit_key": sig.unit_key,
        "unit": sig.unit,
        "software_versions": sig.software,
        "repetition_time": meta.get("RepetitionTime"),
        "echo_time": meta.get("EchoTime"),
        "inversion_time": meta.get("InversionTime"),
        "flip_angle": meta.get("FlipAngle"),
        "voxel_size": _sorted_voxels(a),
        "evidence": a.evidence,
        "warnings": " | ".join(a.warnings) if a.warnings else None,
    }
    return {k: _fmt(values[k]) for k in COLUMNS}


def _sorted_voxels(a: SiteAssignment) -> tuple[float, ...] | None:
    return tuple(sorted(a.image.voxel_size)) if a.image.voxel_size else None


def sites_dictionary(assignments: list[SiteAssignment]) -> dict[str, Any]:
    """The data dictionary, with one Level per site describing what defines it."""
    dictionary = {k: dict(v) for k, v in DATA_DICTIONARY.items()}
    levels = {}
    for site, members in _by_site(assignments).items():
        first = members[0]
        levels[site] = f"{len(members)} image(s); {first.provenance}; " + (
            first.evidence if first.provenance == "inferred" else f"e.g. {first.evidence}"
        )
    dictionary["site"]["Levels"] = levels
    return dictionary


def _by_site(assignments: list[SiteAssignment]) -> dict[str, list[SiteAssignment]]:
    groups: dict[str, list[SiteAssignment]] = defaultdict(list)
    for a in assignments:
        groups[a.site].append(a)
    return dict(sorted(groups.items()))


def _range(values: list[Any], scale: float = 1.0, unit: str = "") -> str:
    numbers = sorted({float(v) * scale for v in values if isinstance(v, (int, float))})
    if not numbers:
        return "-"
    if numbers[0] == numbers[-1]:
        return f"{numbers[0]:g}{unit}"
    return f"{numbers[0]:g}-{numbers[-1]:g}{unit}"


def summary_rows(assignments: list[SiteAssignment]) -> list[dict[str, str]]:
    rows = []
    for site, members in _by_site(assignments).items():
        scanners = sorted(
            {
                f"{m.scanner.vendor or '?'} {m.scanner.model or '?'} "
                f"{f'{m.scanner.field_t:g}T' if m.scanner.field_t else '?T'}"
                for m in members
            }
        )
        voxels = sorted({"x".join(f"{v:g}" for v in sorted(m.image.voxel_size)) for m in members if m.image.voxel_size})
        meta = [m.image.metadata for m in members]
        rows.append(
            {
                "site": site,
                "images": str(len(members)),
                "subjects": str(len({m.image.subject for m in members})),
                "contrasts": ",".join(sorted({m.image.suffix for m in members})),
                "scanner": "; ".join(scanners),
                "TR (ms)": _range([d.get("RepetitionTime") for d in meta], 1000),
                "TE (ms)": _range([d.get("EchoTime") for d in meta], 1000),
                "TI (ms)": _range([d.get("InversionTime") for d in meta], 1000),
                "flip": _range([d.get("FlipAngle") for d in meta]),
                "voxel (mm)": "; ".join(voxels) or "-",
                "source": ",".join(sorted({m.provenance for m in members})),
            }
        )
    return rows


def format_table(rows: list[dict[str, str]]) -> str:
    """A plain-text table with aligned columns (no dependency, fits a terminal log)."""
    if not rows:
        return "(no images)"
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines.append("  ".join("-" * widths[c] for c in columns))
    lines += ["  ".join(r[c].ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)
