"""Scanner and protocol signatures read from one image's sidecar metadata and header.

A signature is the normalised evidence that decides a site: real-world spellings are mapped
to one form ("SIEMENS " and "Siemens" -> Siemens, "Prisma_fit" and "MAGNETOM Prisma Fit" ->
Prisma Fit, 2.89 T -> 3 T) by the rules in the policy file, and every normalisation that
changed a value is written down as a note so the decision can be explained.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from bids_harmonize.errors import ExitCode, HarmonizeError

DEFAULT_POLICY = Path(__file__).with_name("policy.yaml")
SCANNER_KEYS = (
    "Manufacturer",
    "ManufacturersModelName",
    "MagneticFieldStrength",
    "DeviceSerialNumber",
    "StationName",
    "InstitutionName",
    "SoftwareVersions",
)
PROTOCOL_KEYS = ("RepetitionTime", "EchoTime", "InversionTime", "FlipAngle", "VoxelSize")


class PolicyError(HarmonizeError, ValueError):
    """The site policy file is missing keys or has values of the wrong kind."""

    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class Tolerance:
    relative: float = 0.0
    absolute: float = 0.0

    def same(self, reference: float, value: float) -> bool:
        return abs(value - reference) <= max(self.absolute, self.relative * abs(reference))


@dataclass(frozen=True)
class SitePolicy:
    source: str
    nominal_fields_t: tuple[float, ...]
    field_tolerance_t: float
    vendors: tuple[tuple[re.Pattern[str], str], ...]
    model_prefixes: tuple[str, ...]
    model_aliases: dict[str, str]
    unit_keys: tuple[str, ...]
    protocol: dict[str, Tolerance]
    granularities: dict[str, tuple[str, ...]]


@lru_cache(maxsize=8)
def load_policy(path: Path | str | None = None) -> SitePolicy:
    """Read and check a policy YAML (the packaged default when ``path`` is None)."""
    path = Path(path) if path else DEFAULT_POLICY
    try:
        raw = yaml.safe_load(path.read_text())
        policy = SitePolicy(
            source=str(path),
            nominal_fields_t=tuple(float(f) for f in raw["nominal_fields_t"]),
            field_tolerance_t=float(raw["field_tolerance_t"]),
            vendors=tuple((re.compile(v["pattern"], re.I), v["name"]) for v in raw["vendors"]),
            model_prefixes=tuple(p.lower() for p in raw["model_prefixes"]),
            model_aliases={k.lower(): v.lower() for k, v in raw["model_aliases"].items()},
            unit_keys=tuple(raw["unit_keys"]),
            protocol={k: Tolerance(**v) for k, v in raw["protocol"].items()},
            granularities={k: tuple(v) for k, v in raw["granularities"].items()},
        )
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise PolicyError(
            f"Site policy {path} is unreadable or incomplete ({err!r}). Fix: start from a copy of "
            f"{DEFAULT_POLICY} and keep all of its top-level keys."
        ) from err
    unknown = set(policy.protocol) - set(PROTOCOL_KEYS)
    if unknown:
        raise PolicyError(f"Site policy {path}: unknown protocol keys {sorted(unknown)}; known: {PROTOCOL_KEYS}")
    return policy


@dataclass(frozen=True)
class ScannerSignature:
    vendor: str | None
    model: str | None
    field_t: float | None
    unit: str | None
    unit_key: str | None
    software: str | None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProtocolSignature:
    values: dict[str, Any] = field(default_factory=dict)  # PROTOCOL_KEYS -> float, tuple or None


def _clean(value: Any) -> str | None:
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text or None


def normalise_vendor(raw: Any, policy: SitePolicy) -> str | None:
    text = _clean(raw)
    if text is None:
        return None
    for pattern, name in policy.vendors:
        if pattern.match(text):
            return name
    return text.title()


def normalise_model(raw: Any, policy: SitePolicy) -> str | None:
    text = _clean(raw)
    if text is None:
        return None
    words = re.sub(r"[_\-]+", " ", text.lower()).split()
    if len(words) > 1 and words[0] in policy.model_prefixes:
        words = words[1:]
    key = " ".join(words)
    key = policy.model_aliases.get(key, policy.model_aliases.get(key.replace(" ", ""), key))
    return " ".join(w[:1].upper() + w[1:] for w in key.split())


def normalise_field(raw: Any, policy: SitePolicy) -> tuple[float | None, str | None]:
    """Return (tesla, note). Values above 100 are read as gauss (older converters)."""
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None, None if raw is None else f"MagneticFieldStrength {raw!r} is not a number"
    if not math.isfinite(value) or value <= 0:
        return None, f"MagneticFieldStrength {raw!r} is not a positive number"
    tesla = value / 10000 if value > 100 else value
    nearest = min(policy.nominal_fields_t, key=lambda f: abs(f - tesla))
    if abs(nearest - tesla) <= policy.field_tolerance_t:
        if nearest != value:
            return nearest, f"MagneticFieldStrength {raw} -> {nearest:g} T"
        return nearest, None
    return round(tesla, 2), f"MagneticFieldStrength {raw} matches no nominal field; kept as {tesla:.2f} T"


def scanner_signature(metadata: dict[str, Any], policy: SitePolicy) -> ScannerSignature:
    notes: list[str] = []
    vendor = normalise_vendor(metadata.get("Manufacturer"), policy)
    model = normalise_model(metadata.get("ManufacturersModelName"), policy)
    for key, raw, value in (
        ("Manufacturer", metadata.get("Manufacturer"), vendor),
        ("ManufacturersModelName", metadata.get("ManufacturersModelName"), model),
    ):
        if raw is not None and value is not None and str(raw) != value:
            notes.append(f"{key} {str(raw)!r} -> {value}")
    field_t, field_note = normalise_field(metadata.get("MagneticFieldStrength"), policy)
    if field_note:
        notes.append(field_note)
    unit_key = next((k for k in policy.unit_keys if _clean(metadata.get(k))), None)
    unit = _clean(metadata.get(unit_key)) if unit_key else None
    return ScannerSignature(
        vendor=vendor,
        model=model,
        field_t=field_t,
        unit=unit,
        unit_key=unit_key,
        software=_clean(metadata.get("SoftwareVersions")),
        notes=tuple(notes),
    )


def protocol_signature(metadata: dict[str, Any], voxel_size: tuple[float, ...] | None) -> ProtocolSignature:
    values: dict[str, Any] = {}
    for key in PROTOCOL_KEYS:
        if key == "VoxelSize":
            values[key] = tuple(sorted(round(float(v), 4) for v in voxel_size)) if voxel_size else None
            continue
        try:
            values[key] = float(metadata[key])
        except (KeyError, TypeError, ValueError):
            values[key] = None
    return ProtocolSignature(values)
