"""What a report knows about one image: its derivative files in OUT_DIR, their sidecars, and
why it was not harmonized (or not preprocessed), gathered from the files a run left behind.

Reports read only OUT_DIR (and the template), so a report can be rebuilt at any time from the
outputs alone; the running level passes in what only it knows (why an image was skipped).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bids_harmonize.bids.naming import entity_order, sidecar_path
from bids_harmonize.bids.outputs import OUTPUTS, OutputLayout, node_name
from bids_harmonize.bids.records import ImageRecord


class Template(Protocol):
    """What reports need of the template (workflows.participant.TemplateFiles fits)."""

    name: str
    resolution: int  # mm: the res- entity of template-space outputs
    images: dict[str, str]  # contrast -> template image path
    mask: str  # brain mask path


_SHORT_TO_ENTITY = {short: name for name, short in entity_order()}


@dataclass
class ImageOutputs:
    """One raw image and what the pipeline wrote for it."""

    record: ImageRecord
    out_dir: Path
    files: dict[str, Path]  # name in bids.outputs.OUTPUTS -> path (only those that exist)
    site: dict[str, str]  # site, provenance, evidence (+ warnings when known)
    skip_reason: str | None = None  # why it was not harmonized, when the run knows
    crashes: list[Path] = field(default_factory=list)

    @property
    def label(self) -> str:
        return Path(self.record.relpath).name.split(".")[0]

    @property
    def preprocessed(self) -> bool:
        return all(k in self.files for k in ("native_preproc", "template_preproc", "native_mask"))

    @property
    def harmonized(self) -> bool:
        return "native_harmonized" in self.files and "template_harmonized" in self.files

    def sidecar(self, name: str) -> dict[str, Any]:
        path = self.files.get(name)
        if path is None:
            return {}
        try:
            return json.loads(sidecar_path(path).read_text())
        except (OSError, json.JSONDecodeError):
            return {}


def derivative_files(out_dir: Path, record: ImageRecord, template: Template) -> dict[str, Path]:
    """The outputs (keys of bids.outputs.OUTPUTS) that exist for `record`, by name."""
    layout = OutputLayout(out_dir)
    paths = {name: layout.output(record, name, template.name, template.resolution) for name in OUTPUTS}
    return {name: path for name, path in paths.items() if path.is_file()}


def record_from_relpath(bids_dir: Path, relpath: str) -> ImageRecord:
    """An ImageRecord good enough for naming derivatives, from a sites.tsv path alone."""
    name = Path(relpath).name.split(".")[0]
    parts = name.split("_")
    entities: dict[str, Any] = {}
    for part in parts[:-1]:
        key, _, value = part.partition("-")
        entities[_SHORT_TO_ENTITY.get(key, key)] = value
    return ImageRecord(
        path=Path(bids_dir) / relpath,
        relpath=relpath,
        subject=entities.get("subject", ""),
        session=entities.get("session"),
        suffix=parts[-1],
        entities=entities,
    )


def crash_files(out_dir: Path, relpath: str, since: float | None = None) -> list[Path]:
    """Nipype crash files in OUT/logs that name this image's nodes (newer than ``since``)."""
    marker = re.compile(rf"_{re.escape(node_name(relpath))}\b")
    found = []
    for path in OutputLayout(out_dir).crash_files():
        if since is not None and path.stat().st_mtime < since:
            continue
        try:
            text = path.read_text(errors="replace")[:4000]
        except OSError:
            continue
        if marker.search(text):
            found.append(path)
    return found


def crash_summary(path: Path, lines: int = 6) -> str:
    """The node and the last lines of the traceback, for the report."""
    text = path.read_text(errors="replace").strip().splitlines()
    node = next((line for line in text if line.startswith("Node:")), "")
    tail = [line for line in text[-lines:] if line.strip()]
    return "\n".join([path.name, node, *tail])


def read_sites_table(out_dir: Path) -> list[dict[str, str]]:
    from bids_harmonize.sites.overrides import read_tsv

    path = OutputLayout(out_dir).sites_table
    return read_tsv(path) if path.is_file() else []


def dataset_mask_checks(out_dir: Path, records: Iterable[ImageRecord], template: Template) -> list[dict[str, Any]]:
    """The mask check (the ``MaskCheck`` of the mask sidecar) of every image of the dataset that
    has one: ``records`` (the run's images) and the images of OUT/sites.tsv, each once. The
    dataset-relative registration flag compares an image against these."""
    by_path = {record.relpath: record for record in records}
    for row in read_sites_table(out_dir):
        by_path.setdefault(row["path"], record_from_relpath(out_dir, row["path"]))
    layout = OutputLayout(out_dir)
    checks = []
    for record in by_path.values():
        path = layout.output(record, "native_mask", template.name, template.resolution)
        try:
            check = json.loads(sidecar_path(path).read_text()).get("MaskCheck")
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(check, dict):
            checks.append(check)
    return checks
