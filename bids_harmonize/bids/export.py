"""``--export-bids DIR``: a BIDS raw dataset in which harmonized images take their raw images' place.

fMRIPrep, sMRIPrep and MRIQC read raw BIDS, not derivatives. The export is the input dataset
(top-level files and the folders of the participants this run processed) with every
harmonized anatomical image written at its raw image's path: same name, same grid and affine
(the native-grid harmonized output), its raw sidecar kept and a ``Harmonization`` record added.
Everything else (functional, diffusion, field maps, images without a model) is an independent
copy of the raw file: a reflink (copy-on-write, no space until changed) where the file system
supports it, else a byte copy; never a hard link, so an edit in the export cannot change the
raw dataset. A raw file whose DataLad content is not fetched (a broken symlink) is left out
with a warning that names the ``datalad get`` fix. ``dataset_description.json``
stays a raw dataset description and records bids_harmonize in ``GeneratedBy``.

Several participant runs (e.g. a SLURM array) may export into one folder: each writes its own
participants' folders, and shared top-level files are written atomically.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bids_harmonize.bids import derivatives
from bids_harmonize.bids.layout import IGNORED_TOP_LEVEL
from bids_harmonize.bids.naming import sidecar_path
from bids_harmonize.bids.outputs import OutputLayout
from bids_harmonize.bids.records import ImageRecord
from bids_harmonize.utils import atomic_write, atomic_write_json

LOGGER = logging.getLogger("bids_harmonize")
# Keys of a harmonized derivative sidecar that describe the harmonization (not the acquisition).
PROVENANCE_KEYS = (
    "SourceSite",
    "SourceSiteProvenance",
    "SourceSiteEvidence",
    "TargetSite",
    "TargetStyle",
    "TargetIntensityScale",
    "NoiseMatching",
    "OutputRange",
    "ModelBundle",
    "GeneratedBy",
    "PackageVersions",
    "CommandLine",
    "StartTime",
    "EndTime",
)


FICLONE = 0x40049409  # Linux ioctl: share the source's blocks copy-on-write (Btrfs, XFS, bcachefs)


def clone_or_copy(source: Path, target: Path) -> str:
    """Put an independent copy of ``source`` (symlinks followed) at ``target``: a reflink where
    the file system supports it (no space until one side changes), else a byte copy. Never a
    hard link: an edit in the export must not reach the raw dataset. Returns 'reflink' or 'copy'.
    """
    how = "copy"

    def write(tmp: Path) -> None:
        nonlocal how
        with open(source, "rb") as src, open(tmp, "wb") as dst:
            try:
                fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
                how = "reflink"
            except OSError:
                shutil.copyfileobj(src, dst, 1 << 20)
        shutil.copystat(source, tmp)
        tmp.chmod(tmp.stat().st_mode | stat.S_IWUSR)  # annexed files are read-only; the copy is the user's

    atomic_write(target, write, suffix="".join(target.suffixes))
    return how


def _copy_in(source: Path, target: Path, absent: list[str]) -> None:
    """Copy one raw file into the export unless it is there; a broken symlink (a DataLad file
    whose annexed content is not fetched) is listed in ``absent`` instead."""
    if target.exists() or target.is_symlink():
        return
    if not source.exists():
        absent.append(str(source))
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    clone_or_copy(source, target)


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


def _top_level(bids_dir: Path, export_dir: Path, absent: list[str]) -> None:
    for entry in sorted(bids_dir.iterdir()):
        if entry.name == "dataset_description.json" or entry.name in IGNORED_TOP_LEVEL:
            continue
        if (entry.is_file() or entry.is_symlink()) and not entry.name.startswith("sub-"):
            _copy_in(entry, export_dir / entry.name, absent)  # participants.tsv, README, .bidsignore, sidecars
    atomic_write_json(export_dir / "dataset_description.json", export_description(bids_dir))


def _participant(bids_dir: Path, export_dir: Path, subject: str, replaced: set[str], absent: list[str]) -> None:
    folder = bids_dir / f"sub-{subject}"
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            relpath = Path(root, name).relative_to(bids_dir).as_posix()
            if relpath not in replaced and not name.startswith("."):
                _copy_in(Path(root, name), export_dir / relpath, absent)


def _harmonized_sidecar(image: ImageRecord, derivative_sidecar: Path) -> dict[str, Any]:
    raw_sidecar = sidecar_path(image.path)
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
    absent: list[str] = []
    _top_level(bids_dir, export_dir, absent)
    replaced, kept = set(), []
    for image in images:
        harmonized = OutputLayout(out_dir).output(image, "native_harmonized")
        sidecar = sidecar_path(harmonized)
        if not (harmonized.is_file() and sidecar.is_file()):
            kept.append(image.relpath)
            continue
        # Written under the raw name: nibabel picks .nii or .nii.gz from it, as the raw file was stored.
        derivatives.write_image(nb.load(harmonized), export_dir / image.relpath, _harmonized_sidecar(image, sidecar))
        replaced.update({image.relpath, sidecar_path(Path(image.relpath)).as_posix()})
    for subject in sorted({i.subject for i in images}):
        _participant(bids_dir, export_dir, subject, replaced, absent)
    if kept:
        LOGGER.warning(
            "--export-bids: %d image(s) were not harmonized and are exported unchanged: %s",
            len(kept),
            ", ".join(kept[:10]) + (" ..." if len(kept) > 10 else ""),
        )
    if absent:
        LOGGER.warning(
            "--export-bids: %d file(s) have no content here (DataLad: annexed content not fetched) and are not "
            "exported: %s. Fix: `datalad get` them in %s and export again",
            len(absent),
            " ".join(absent[:10]) + (" ..." if len(absent) > 10 else ""),
            bids_dir,
        )
    return len(images) - len(kept), len(kept)
