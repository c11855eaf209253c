"""The one place that names paths in OUT_DIR: ``OutputLayout`` and the derivatives' names.

Everything that writes into OUT, and everything that reads OUT back (the reports, the export,
the next level), takes its paths from here::

    OUT/
      dataset_description.json, .bidsignore
      sites.tsv, sites.json                      the site inventory (group level)
      sub-<label>.html, group.html               the reports
      group_volumes.tsv, group_volume_stats.tsv  the downstream diagnostics' table and numbers
      sub-<label>/[ses-<label>/]anat/...         derivatives, named by OUTPUTS (BIDS Derivatives 1.9)
      models/<contrast>/                         model bundles (group level)
      logs/config-<run_id>.json                  each run's configuration
      logs/crash-<run_id>.txt, logs/crash-*      a run's traceback; Nipype's crash files (text)
      logs/training-<contrast>-<run_id>.jsonl    training logs (group level)
      logs/CITATION.md, logs/CITATION.bib        the methods text
      .locks/                                    the participant locks of running runs

How files are written there (atomically, with sidecars and provenance) is bids/derivatives.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bids_harmonize.bids.naming import derived_relpath
from bids_harmonize.bids.records import ImageRecord

DATASET_DESCRIPTION = "dataset_description.json"
SITES_TABLE, SITES_DICTIONARY = "sites.tsv", "sites.json"
MODELS, LOGS, LOCKS = "models", "logs", ".locks"
GROUP_REPORT = "group.html"
# Beside the group report: every image's volumes with its covariates, and the diagnostics' numbers.
GROUP_VOLUMES, GROUP_VOLUME_STATS = "group_volumes.tsv", "group_volume_stats.tsv"
CITATION = "CITATION"  # logs/CITATION.md and logs/CITATION.bib
CRASH_PREFIX = "crash-"  # ours (crash-<run_id>.txt) and Nipype's (crash-<time>-<user>-<node>-<uuid>.txt)

# Files BIDS does not define, declared the way fMRIPrep does so the validator passes the rest.
# Folders without a trailing slash: bids-validator-deno 3.0 matches "/models", not "/models/".
# The volume tables (*_volumes.tsv/.json) are no BIDS suffix either (BEP011 is not merged).
BIDSIGNORE = (
    SITES_TABLE,
    SITES_DICTIONARY,
    f"/{MODELS}",
    f"/{LOGS}",
    "/figures",
    "*.html",
    "/*.png",
    "*_xfm.*",
    "*_volumes.tsv",
    "*_volumes.json",
    "/group_volume*.tsv",
)

# The derivatives of one raw image: their BIDS entities, and what their sidecar says.
OUTPUTS: dict[str, dict[str, Any]] = {
    "native_preproc": {"entities": {"description": "preproc"}, "native": True},
    "template_preproc": {"entities": {"space": "TEMPLATE", "resolution": "RES", "description": "preproc"}},
    # A T1w and a T2w of one session have different native grids, so their masks need different
    # names: the T1w one keeps fMRIPrep's plain name, others name their grid (space-T2w).
    "native_mask": {
        "entities": {"space": "NATIVE", "description": "brain"},
        "suffix": "mask",
        "native": True,
        "mask": True,
    },
    "transform": {
        "entities": {"from": "SUFFIX", "to": "TEMPLATE", "mode": "image"},
        "suffix": "xfm",
        "extension": ".txt",
    },
    "native_harmonized": {"entities": {"description": "harmonized"}, "native": True, "harmonized": True},
    "template_harmonized": {
        "entities": {"space": "TEMPLATE", "resolution": "RES", "description": "harmonized"},
        "harmonized": True,
    },
    # Tissue volumes (ml) of the native-grid images inside the native brain mask, one table per
    # measured image; named like the mask (space-T2w for a T2w's grid), suffix "volumes".
    "native_preproc_volumes": {
        "entities": {"space": "NATIVE", "description": "preproc"},
        "suffix": "volumes",
        "extension": ".tsv",
        "table": True,
        "measures": "native_preproc",
    },
    "native_harmonized_volumes": {
        "entities": {"space": "NATIVE", "description": "harmonized"},
        "suffix": "volumes",
        "extension": ".tsv",
        "table": True,
        "measures": "native_harmonized",
        "harmonized": True,
    },
}


def derivative_path(
    out_dir: Path,
    source: ImageRecord,
    *,
    suffix: str | None = None,
    extension: str = ".nii.gz",
    **entities: str | int | None,
) -> Path:
    """BIDS derivative path for ``source``: all its entities kept, ``entities`` changed
    (e.g. space=, resolution=, description=; None removes one). Built by pybids from the BIDS
    schema's entity order (see naming.py)."""
    return Path(out_dir) / derived_relpath(source.relpath, suffix=suffix, extension=extension, **entities)


def output_path(out_dir: Path, record: ImageRecord, name: str, template: str, resolution: int) -> Path:
    """Where the output `name` (a key of OUTPUTS) of `record` lies: the one naming rule, used by
    the sink that writes and by the reports that read."""
    spec = OUTPUTS[name]
    values = {
        "TEMPLATE": template,
        "SUFFIX": record.suffix,
        "RES": str(resolution),
        "NATIVE": None if record.suffix == "T1w" else record.suffix,
    }
    return derivative_path(
        out_dir,
        record,
        suffix=spec.get("suffix"),
        extension=spec.get("extension", ".nii.gz"),
        **{key: values.get(value, value) for key, value in spec["entities"].items()},
    )


def node_name(relpath: str) -> str:
    """A Nipype-safe name that still names the image: the graph names its nodes with it, so the
    crash files Nipype leaves in OUT/logs carry it and a report finds those of its image."""
    stem = Path(relpath).name.split(".")[0]
    return re.sub(r"[^A-Za-z0-9]", "_", stem)


@dataclass(frozen=True)
class OutputLayout:
    """Every path of one OUT_DIR. Naming only: nothing here creates or writes a file."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # ------------------------------------------------------------------------- dataset level
    @property
    def description(self) -> Path:
        return self.root / DATASET_DESCRIPTION

    @property
    def bidsignore(self) -> Path:
        return self.root / ".bidsignore"

    @property
    def sites_table(self) -> Path:
        return self.root / SITES_TABLE

    @property
    def sites_dictionary(self) -> Path:
        return self.root / SITES_DICTIONARY

    @property
    def locks(self) -> Path:
        return self.root / LOCKS

    # ------------------------------------------------------------------------- models
    @property
    def models(self) -> Path:
        return self.root / MODELS

    def model(self, contrast: str) -> Path:
        """The bundle folder the group level trains for `contrast`."""
        return self.models / contrast

    # ------------------------------------------------------------------------- logs
    @property
    def logs(self) -> Path:
        return self.root / LOGS

    def run_config(self, run_id: str) -> Path:
        return self.logs / f"config-{run_id}.json"

    def run_configs(self) -> list[Path]:
        """Every run's configuration, oldest first (run ids begin with their UTC start time)."""
        return sorted(self.logs.glob("config-*.json"))

    def crash_report(self, run_id: str) -> Path:
        return self.logs / f"{CRASH_PREFIX}{run_id}.txt"

    def node_log(self, run_id: str) -> Path:
        """Nipype's node messages of one run (bids_harmonize/console.py)."""
        return self.logs / f"nipype-{run_id}.log"

    def crash_files(self) -> list[Path]:
        """Every crash file in OUT/logs: the runs' own and the ones Nipype writes per node."""
        return sorted(self.logs.glob(f"{CRASH_PREFIX}*"))

    def training_log(self, contrast: str, run_id: str) -> Path:
        return self.logs / f"training-{contrast}-{run_id}.jsonl"

    def training_logs(self, contrast: str) -> list[Path]:
        """The training logs of `contrast`, one per group run that trained it, oldest name first."""
        return sorted(self.logs.glob(f"training-{contrast}-*.jsonl"))

    def citation(self, extension: str) -> Path:
        """The methods text: extension ".md" (Markdown) or ".bib" (its references)."""
        return self.logs / f"{CITATION}{extension}"

    # ------------------------------------------------------------------------- reports
    def participant_report(self, subject: str) -> Path:
        return self.root / f"sub-{subject}.html"

    @property
    def group_report(self) -> Path:
        return self.root / GROUP_REPORT

    @property
    def group_volumes(self) -> Path:
        """Every image's tissue volumes (preprocessed, harmonized) with its site and covariates."""
        return self.root / GROUP_VOLUMES

    @property
    def group_volume_stats(self) -> Path:
        """The numbers of the group report's downstream section."""
        return self.root / GROUP_VOLUME_STATS

    # ------------------------------------------------------------------------- derivatives
    def derivative(self, source: ImageRecord, **kwargs: Any) -> Path:
        """A derivative of `source` with changed entities (derivative_path)."""
        return derivative_path(self.root, source, **kwargs)

    def output(self, record: ImageRecord, name: str, template: str = "", resolution: int = 0) -> Path:
        """The output `name` (a key of OUTPUTS) of `record`; template-space outputs need the
        template and its resolution."""
        if not template and any(v in ("TEMPLATE", "RES") for v in OUTPUTS[name]["entities"].values()):
            raise ValueError(f"the output {name!r} is on a template grid: name the template and resolution")
        return output_path(self.root, record, name, template, resolution)
