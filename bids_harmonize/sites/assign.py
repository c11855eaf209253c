"""Assign every image to a site, and say why.

Inference groups images by the signature parts that the chosen granularity names (policy
file) and turns each group's normalised values into a readable label such as
``SiemensPrismaFit3TSN67093``. Labels depend only on the metadata, never on file order, so
the same dataset gives the same labels in every run. User overrides (see overrides.py) win.

Missing metadata, the documented rule:
- a missing part is spelled ``Unknown<Part>`` in the label and the image gets a warning;
- with no unit key (serial number, station, institution), units of the same vendor, model
  and field share a site: the warning says so and points at ``--site-table``;
- with none of vendor, model, field strength or unit, the site is ``unknown``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bids_harmonize.bids.records import ImageRecord
from bids_harmonize.sites.overrides import SiteOverrides
from bids_harmonize.sites.signature import (
    PROTOCOL_KEYS,
    ProtocolSignature,
    ScannerSignature,
    SitePolicy,
    Tolerance,
    load_policy,
    protocol_signature,
    scanner_signature,
)

GRANULARITIES = ("vendor", "scanner", "protocol")
UNKNOWN_SITE = "unknown"
_UNIT_TAGS = {"DeviceSerialNumber": "SN", "StationName": "ST", "InstitutionName": "IN"}


@dataclass(frozen=True)
class SiteAssignment:
    image: ImageRecord
    site: str
    provenance: str  # inferred | site-table | sessions.tsv | participants.tsv
    evidence: str
    scanner: ScannerSignature
    protocol: ProtocolSignature  # values snapped to their tolerance cluster
    warnings: tuple[str, ...] = ()


def _camel(text: str) -> str:
    return "".join(w[:1].upper() + w[1:] for w in re.findall(r"[A-Za-z0-9]+", text))


def _field_label(tesla: float) -> str:
    return f"{tesla:g}".replace(".", "p") + "T"


def _unit_label(sig: ScannerSignature) -> str:
    if sig.unit is None or sig.unit_key is None:
        return ""
    tag = _UNIT_TAGS.get(sig.unit_key, "U")
    if sig.unit_key == "InstitutionName":  # long free text: a short stable digest reads better
        return tag + hashlib.sha1(sig.unit.encode()).hexdigest()[:6]
    return tag + re.sub(r"[^A-Za-z0-9]", "", sig.unit)[:24]


def _label_parts(sig: ScannerSignature) -> dict[str, str]:
    return {
        "vendor": _camel(sig.vendor) if sig.vendor else "UnknownVendor",
        "model": _camel(sig.model) if sig.model else "UnknownModel",
        "field": _field_label(sig.field_t) if sig.field_t else "UnknownField",
        "unit": _unit_label(sig),
    }


def cluster_values(values: Iterable[Any], tolerance: Tolerance) -> dict[Any, Any]:
    """Map each value to its cluster's smallest member; sorting makes it order-independent."""
    mapping: dict[Any, Any] = {}
    present = sorted({v for v in values if v is not None})
    anchor = None
    for value in present:
        if anchor is None or not _close(anchor, value, tolerance):
            anchor = value
        mapping[value] = anchor
    return mapping


def _close(anchor: Any, value: Any, tolerance: Tolerance) -> bool:
    if isinstance(value, tuple):
        return len(anchor) == len(value) and all(tolerance.same(a, v) for a, v in zip(anchor, value))
    return tolerance.same(anchor, value)


def _snap_protocols(protocols: list[ProtocolSignature], policy: SitePolicy) -> list[ProtocolSignature]:
    snapped = [dict(p.values) for p in protocols]
    for key in PROTOCOL_KEYS:
        tolerance = policy.protocol.get(key)
        if tolerance is None:  # a key the policy leaves out does not split protocols
            for values in snapped:
                values.pop(key, None)
            continue
        mapping = cluster_values((p.values.get(key) for p in protocols), tolerance)
        for values in snapped:
            values[key] = mapping.get(values.get(key))
    return [ProtocolSignature(v) for v in snapped]


def _protocol_sort_key(protocol: ProtocolSignature) -> tuple:
    return tuple((v is None, v if v is not None else 0) for v in protocol.values.values())


def _describe_scanner(sig: ScannerSignature) -> str:
    parts = [
        f"Manufacturer={sig.vendor or 'missing'}",
        f"ManufacturersModelName={sig.model or 'missing'}",
        f"MagneticFieldStrength={f'{sig.field_t:g} T' if sig.field_t else 'missing'}",
        f"{sig.unit_key}={sig.unit}" if sig.unit_key else "unit=missing (no serial, station or institution)",
    ]
    if sig.software:
        parts.append(f"SoftwareVersions={sig.software}")
    text = ", ".join(parts)
    return text + (f" [normalised: {'; '.join(sig.notes)}]" if sig.notes else "")


def _describe_protocol(protocol: ProtocolSignature) -> str:
    def fmt(value: Any) -> str:
        if value is None:
            return "missing"
        if isinstance(value, tuple):
            return "x".join(f"{v:g}" for v in value)
        return f"{value:g}"

    return ", ".join(f"{k}={fmt(v)}" for k, v in protocol.values.items())


def _missing_warnings(image: ImageRecord, sig: ScannerSignature, parts: tuple[str, ...]) -> list[str]:
    warnings = []
    missing = [
        name
        for part, name, value in (
            ("vendor", "Manufacturer", sig.vendor),
            ("model", "ManufacturersModelName", sig.model),
            ("field", "MagneticFieldStrength", sig.field_t),
        )
        if part in parts and value is None
    ]
    if missing:
        warnings.append(f"{image.relpath}: sidecar lacks {', '.join(missing)}")
    if "unit" in parts and sig.unit is None:
        warnings.append(
            f"{image.relpath}: no DeviceSerialNumber, StationName or InstitutionName; units of the same "
            "vendor/model/field are merged into one site. Fix: name its site in --site-table."
        )
    return warnings


def _inferred_label(sig: ScannerSignature, protocol_rank: int | None, parts_wanted: tuple[str, ...]) -> str:
    if sig.vendor is None and sig.model is None and sig.field_t is None and sig.unit is None:
        return UNKNOWN_SITE
    parts = _label_parts(sig)
    label = "".join(parts[p] for p in parts_wanted if p in parts)
    if "protocol" in parts_wanted and protocol_rank is not None:
        label += f"P{protocol_rank}"
    return label


def _protocol_ranks(
    scanners: list[ScannerSignature], protocols: list[ProtocolSignature], parts: tuple[str, ...]
) -> list[int]:
    """Number the distinct protocols of each scanner 1, 2, ... in order of their values."""
    scanner_parts = tuple(p for p in parts if p != "protocol")
    groups: dict[tuple, set[tuple]] = {}
    keys = []
    for sig, protocol in zip(scanners, protocols):
        scanner_key = tuple(_label_parts(sig)[p] for p in scanner_parts)
        protocol_key = _protocol_sort_key(protocol)
        groups.setdefault(scanner_key, set()).add(protocol_key)
        keys.append((scanner_key, protocol_key))
    order = {k: {p: i + 1 for i, p in enumerate(sorted(v))} for k, v in groups.items()}
    return [order[s][p] for s, p in keys]


def assign_sites(
    images: list[ImageRecord],
    granularity: str = "scanner",
    policy: SitePolicy | None = None,
    overrides: SiteOverrides | None = None,
) -> list[SiteAssignment]:
    """One SiteAssignment per image, sorted by path, with evidence and provenance."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, not {granularity!r}")
    policy = policy or load_policy()
    images = sorted(images, key=lambda i: i.relpath)
    scanners = [scanner_signature(i.metadata, policy) for i in images]
    raw_protocols = [protocol_signature(i.metadata, i.voxel_size) for i in images]
    protocols = _snap_protocols(raw_protocols, policy)
    parts = policy.granularities[granularity]
    ranks = _protocol_ranks(scanners, protocols, parts)
    result = []
    for image, sig, raw, protocol, rank in zip(images, scanners, raw_protocols, protocols, ranks):
        evidence = f"by {granularity} ({'+'.join(parts)}); scanner: {_describe_scanner(sig)}"
        if "protocol" in parts:
            evidence += f"; protocol: {_describe_protocol(raw)}"
        override = overrides.lookup(image) if overrides else None
        if override:
            site, provenance = override.site, override.provenance
            evidence = f"{override.detail} sets site {site!r}; inferred evidence was {evidence}"
            warnings: list[str] = []
        else:
            site, provenance = _inferred_label(sig, rank, parts), "inferred"
            warnings = _missing_warnings(image, sig, parts)
        result.append(SiteAssignment(image, site, provenance, evidence, sig, protocol, tuple(warnings)))
    return result
