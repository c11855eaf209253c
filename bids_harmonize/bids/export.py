"""``--export-bids DIR``: a BIDS raw dataset in which harmonized images take their raw images' place.

fMRIPrep, sMRIPrep and MRIQC read raw BIDS, not derivatives. The export is the input dataset
(top-level files and the folders of the participants this run processed) with every
harmonized anatomical image written at its raw image's path: same name, same grid and affine
(the native-grid harmonized output), its raw sidecar kept and a ``Harmonization`` record added.
Everything else (functional, diffusion, field maps, images without a model) is the raw file,
hard-linked where the file system allows and copied otherwise. ``dataset_description.json``
stays a raw dataset description and records bids_harmonize in ``GeneratedBy``.

Several participant runs (e.g. a SLURM array) may export into one folder: each writes its own
participants' folders, and shared top-level files are written atomically.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bids_harmonize.bids import derivatives
from bids_harmonize.bids.layout import IGNORED_TOP_LEVEL
from bids_harmonize.bids.records import ImageRecord
from bids_harmonize.utils import atomic_write, atomic_write_json

LOGGER = logging.getLogger("bids_harmonize")
# Keys of a harmonized derivative sidecar that describe the harmonization (not the acquisition).
PROVENANCE_KEYS = (
    "SourceSite", "SourceSiteProvenance", "SourceSiteEvidence", "TargetSite", "TargetStyle", "TargetIntensityScale", "OutputRange",
    "ModelBundle", "GeneratedBy", "PackageVersions", "CommandLine", "StartTime", "EndTime",
)


def _link_or_copy(source: Path, target: Path) -> None:
    """Hard link (instant, no space) or copy; never follows into the raw file on later writes,
    because every write bids_harmonize does replaces a file by rename."""
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        atomic_write(target, lambda tmp: shutil.copy2(source, tmp), suffix="".join(target.suffixes))


def export_description(bids_dir: Path) -> dict[str, Any]:
    source = json.loads((bids_dir / "dataset_description.json").read_text(encoding="utf-8-sig"))
    generated = [g for g in source.get("GeneratedBy", []) if isinstance(g, dict)]
    description = {k: v for k, v in source.items() if k not in ("GeneratedBy", "DatasetType", "SourceDatasets")}
    source_entry = {"URL": bids_dir.resolve().as_uri()}
    if source.get("DatasetDOI"):
        source_entry["DOI"] = source["DatasetDOI"]
    description.update(
        Name=f"{source.get('Name', bids_dir.name)} (harmonized by {derivatives.PIPELINE_NAME})",
        BIDSVersion=source.get("BIDSVersion", "1.9.0"),
        DatasetType="raw",
        GeneratedBy=[*derivatives.generated_by(), *generated],
        SourceDatasets=[source_entry],
    )
    return description


def _top_level(bids_dir: Path, export_dir: Path) -> None:
    for entry in sorted(bids_dir.iterdir()):
        if entry.name == "dataset_description.json" or entry.name in IGNORED_TOP_LEVEL:
            continue
        if entry.is_file() and not entry.name.startswith("sub-"):
            _link_or_copy(entry, export_dir / entry.name)  # participants.tsv, README, .bidsignore, sidecars
    atomic_write_json(export_dir / "dataset_description.json", export_description(bids_dir))


def _participant(bids_dir: Path, export_dir: Path, subject: str, replaced: set[str]) -> None:
    folder = bids_dir / f"sub-{subject}"
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            relpath = Path(root, name).relative_to(bids_dir).as_posix()
            if relpath not in replaced and not name.startswith("."):
                _link_or_copy(Path(root, name), export_dir / relpath)


def _harmonized_sidecar(image: ImageRecord, derivative_sidecar: Path) -> dict[str, Any]:
    raw_sidecar = derivatives.sidecar_path(image.path)
    content: dict[str, Any] = {}
    if raw_sidecar.is_file():
        content = json.loads(raw_sidecar.read_text(encoding="utf-8-sig"))
    made = json.loads(derivative_sidecar.read_text(encoding="utf-8"))
    content["Harmonization"] = {
        "Description": "This image is the output of bids_harmonize, in place of the raw image named in Sources.",
        "Sources": [f"{image.path.resolve().as_uri()}"],
        **{k: made[k] for k in PROVENANCE_KEYS if k in made},
    }
    return content


def export_bids(bids_dir: Path, out_dir: Path, export_dir: Path, images: Iterable[ImageRecord]) -> tuple[int, int]:
    """Write the export for ``images`` (the participants of this run); returns (harmonized
    images placed, raw images kept because they were not harmonized)."""
    import nibabel as nb

    bids_dir, export_dir = Path(bids_dir), Path(export_dir)
    images = list(images)
    export_dir.mkdir(parents=True, exist_ok=True)
    _top_level(bids_dir, export_dir)
    replaced, kept = set(), []
    for image in images:
        harmonized = derivatives.derivative_path(out_dir, image, description="harmonized")
        sidecar = derivatives.sidecar_path(harmonized)
        if not (harmonized.is_file() and sidecar.is_file()):
            kept.append(image.relpath)
            continue
        # Written under the raw name: nibabel picks .nii or .nii.gz from it, as the raw file was stored.
        derivatives.write_image(nb.load(harmonized), export_dir / image.relpath, _harmonized_sidecar(image, sidecar))
        replaced.update({image.relpath, derivatives.sidecar_path(Path(image.relpath)).as_posix()})
    for subject in sorted({i.subject for i in images}):
        _participant(bids_dir, export_dir, subject, replaced)
    if kept:
        LOGGER.warning(
            "--export-bids: %d image(s) were not harmonized and are exported unchanged: %s",
            len(kept), ", ".join(kept[:10]) + (" ..." if len(kept) > 10 else ""),
        )
    return len(images) - len(kept), len(kept)
