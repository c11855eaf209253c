"""Output names from the ecosystem's rules: BIDS schema entity order, pybids path building.

The entity order and short names come from the BIDS schema (``bidsschematools``, a pybids
dependency); the path itself is built by pybids' ``build_path``. Entities are read from the
source file's own name, so their values survive exactly as written (``run-02`` stays
``run-02``) and every entity of the source (acq, ce, rec, run, echo, flip, inv, mt, part,
chunk, ...) is kept in the derivative's name.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

from bids_harmonize.errors import ExitCode, HarmonizeError

# Names this package uses in its own calls (pybids' or the schema's) -> the schema's names.
_ALIASES = {
    "inv": "inversion",
    "mt": "mtransfer",
    "proc": "processing",
    "hemi": "hemisphere",
    "desc": "description",
    "res": "resolution",
    "den": "density",
    "seg": "segmentation",
}
# Transform entities of BIDS-Derivatives practice (fMRIPrep's *_xfm names); not in the schema's
# entity list, placed where fMRIPrep puts them: after the acquisition entities, before space.
_TRANSFORM_ENTITIES = (("from", "from"), ("to", "to"), ("mode", "mode"))


class NamingError(HarmonizeError, ValueError):
    """A source file name that cannot be parsed into BIDS entities."""

    exit_code = ExitCode.FAILURE


@lru_cache(maxsize=1)
def entity_order() -> tuple[tuple[str, str], ...]:
    """(schema name, short key) of every BIDS entity, in the order file names use them."""
    from bidsschematools import schema

    bids_schema = schema.load_schema()
    order = []
    for name in bids_schema.rules.entities:
        if name == "space":
            order.extend(_TRANSFORM_ENTITIES)
        order.append((name, bids_schema.objects.entities[name]["name"]))
    return tuple(order)


def _key_to_name() -> dict[str, str]:
    return {short: name for name, short in entity_order()}


def canonical(name: str) -> str:
    """The schema's name for an entity given by schema, pybids or short name."""
    known = {n for n, _ in entity_order()}
    if name in known:
        return name
    name = _ALIASES.get(name, name)
    return name if name in known else _key_to_name().get(name, name)


def parse_name(filename: str) -> tuple[dict[str, str], str, str]:
    """Entities (schema names -> value as written), suffix and extension of a BIDS file name."""
    name = PurePosixPath(filename).name
    stem, dot, rest = name.partition(".")
    extension = dot + rest
    *pairs, suffix = stem.split("_")
    keys = _key_to_name()
    entities: dict[str, str] = {}
    for pair in pairs:
        key, dash, value = pair.partition("-")
        if not dash or not value or key not in keys:
            raise NamingError(
                f"{filename}: '{pair}' is not a BIDS entity (key-value with a known key). Fix: rename "
                "the file following the BIDS specification; the BIDS validator lists the problem."
            )
        entities[keys[key]] = value
    if not suffix or "-" in suffix:
        raise NamingError(f"{filename}: no BIDS suffix (e.g. _T1w) before the extension. Fix: rename the file.")
    return entities, suffix, extension


def _pattern(entities: dict[str, Any]) -> str:
    order = [(n, s) for n, s in entity_order() if n not in ("subject", "session")]
    body = "".join(f"[_{short}-{{{name}}}]" for name, short in order if name in entities)
    return "sub-{subject}[/ses-{session}]/{datatype}/sub-{subject}[_ses-{session}]" + body + "_{suffix}{extension}"


def build_relpath(entities: dict[str, Any], suffix: str, extension: str, datatype: str = "anat") -> str:
    """The BIDS path (relative to the dataset root) of a file with these entities."""
    from bids.layout.writing import build_path

    values = {canonical(k): str(v) for k, v in entities.items() if v not in (None, "")}
    unknown = sorted(set(values) - {n for n, _ in entity_order()})
    if unknown:
        raise NamingError(f"unknown BIDS entities {unknown}")
    if "subject" not in values:
        raise NamingError("a BIDS file name needs a subject entity")
    values.update(suffix=suffix, extension=extension, datatype=datatype)
    path = build_path(values, [_pattern(values)], strict=True)
    if path is None:  # build_path returns None when a value does not fit the pattern
        raise NamingError(f"pybids could not build a path from {values}")
    return path


def derived_relpath(
    source_relpath: str,
    *,
    suffix: str | None = None,
    extension: str | None = None,
    datatype: str = "anat",
    **changes: Any,
) -> str:
    """The path of a file derived from ``source_relpath``: every source entity kept, ``changes``
    applied (a value of None removes an entity)."""
    entities, source_suffix, source_extension = parse_name(source_relpath)
    for key, value in changes.items():
        name = canonical(key)
        if value is None:
            entities.pop(name, None)
        else:
            entities[name] = str(value)
    return build_relpath(entities, suffix or source_suffix, extension or source_extension, datatype)


def sidecar_path(image_path: Path) -> Path:
    """The JSON sidecar of an image: same name, .json for .nii/.nii.gz."""
    name = image_path.name
    stem = name[: -len(".nii.gz")] if name.endswith(".nii.gz") else Path(name).stem
    return image_path.with_name(stem + ".json")
