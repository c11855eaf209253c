"""Partially fetched DataLad datasets: files whose annexed content is not present here.

DataLad (git-annex) keeps every file of a dataset as a symbolic link into ``.git/annex``; a file
not fetched with ``datalad get`` is a broken link. Discovery indexes such a dataset anyway:
absent images are left out where selected (layout._image_record), absent JSON sidecars are kept
out of the pybids index (which would fail reading them) and named only where they apply to a
selected image, with the ``datalad get`` command that fetches them.
"""

from __future__ import annotations

from pathlib import Path

from bids_harmonize.bids.records import ImageRecord


def sidecars_present(bids_dir: Path, record: ImageRecord, absent: dict[str, str], skipped: list[str]) -> bool:
    """False (and the image skipped, with the fix) when a sidecar that applies to it by the BIDS
    inheritance rule has no content here: its site could not be inferred from what is left."""
    missing = absent_sidecars_of(bids_dir, record.relpath, [Path(p) for p in absent])
    if not missing:
        return True
    names = " ".join(missing)
    skipped.append(
        f"{record.relpath}: its sidecar {names} has no content here (a DataLad file not fetched); left out. "
        f"Fix: `datalad get {names}` in {bids_dir} (or `git annex get`)."
    )
    return False


def absent_sidecars_of(bids_dir: Path, relpath: str, absent: list[Path]) -> list[str]:
    """The absent JSON files (relative paths) that apply to the image ``relpath``: in its folder
    or one above, with its suffix and a subset of its entities."""
    image_dir = Path(relpath).parent
    entities, suffix = _name_parts(Path(relpath).name.split(".", 1)[0])
    applying = []
    for path in absent:
        rel = path.relative_to(bids_dir)
        keys, kind = _name_parts(rel.name[: -len(".json")])
        if kind == suffix and keys <= entities and (rel.parent == image_dir or rel.parent in image_dir.parents):
            applying.append(rel.as_posix())
    return sorted(applying)


def _name_parts(stem: str) -> tuple[set[str], str]:
    *pairs, suffix = stem.split("_")
    return set(pairs), suffix
