"""One typed, serialisable record of a run.

Built once from the command line (``RunConfig.from_namespace``), written to OUT/logs/, and
read only by the CLI and the application layer (bids_harmonize/levels/: the level runners,
bundle selection, group training); the graph builders of workflows/ and everything below them
take explicit arguments. Keeping device and thread settings here (and out of node inputs) is what
keeps them out of Nipype's cache hash.
"""

from __future__ import annotations

import argparse
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bids_harmonize import __version__
from bids_harmonize.errors import ExitCode, HarmonizeError

DEFAULT_TEMPLATE = "MNI152NLin2009cSym"
DEFAULT_RESOLUTION = 1
# MultiProc settings every run keeps unless a --use-plugin file sets them: forkserver, because
# workers must not inherit the main process's torch/OpenMP threads (a forked copy of a threaded
# runtime can deadlock during inference).
MULTIPROC_DEFAULTS: dict[str, Any] = {"raise_insufficient": False, "mp_context": "forkserver"}


class PluginFileError(HarmonizeError, ValueError):
    """A --use-plugin file that cannot be used; the message names the file and the fix."""

    exit_code = ExitCode.USAGE


def read_plugin_file(path: Path) -> tuple[str, dict[str, Any]]:
    """(plugin name, plugin_args) from a Nipype plugin YAML such as
    ``{plugin: SLURM, plugin_args: {sbatch_args: "--time=2:00:00"}}``."""
    import yaml

    example = 'Fix: write e.g. "plugin: MultiProc\nplugin_args: {n_procs: 8, memory_gb: 32}".'
    try:
        settings = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise PluginFileError(f"--use-plugin {path} cannot be read as YAML ({err}). {example}") from err
    settings = {} if settings is None else settings
    if not isinstance(settings, dict) or not set(settings) <= {"plugin", "plugin_args"}:
        raise PluginFileError(f"--use-plugin {path} must be a mapping with the keys plugin and plugin_args. {example}")
    plugin, args = settings.get("plugin", "MultiProc"), settings.get("plugin_args") or {}
    if not isinstance(plugin, str) or not isinstance(args, dict):
        raise PluginFileError(f"--use-plugin {path}: plugin must be a name and plugin_args a mapping. {example}")
    from nipype.pipeline import plugins

    if not hasattr(plugins, f"{plugin}Plugin"):
        raise PluginFileError(f"--use-plugin {path}: {plugin!r} is not a Nipype plugin (e.g. MultiProc, SLURM, SGE).")
    for key, minimum in _NUMERIC_PLUGIN_ARGS.items():
        value = args.get(key)
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or value < minimum
            or (key in _INTEGER_PLUGIN_ARGS and not float(value).is_integer())
        ):
            kind = "a whole number" if key in _INTEGER_PLUGIN_ARGS else "a number"
            raise PluginFileError(
                f"--use-plugin {path}: plugin_args.{key} must be {kind} of at least {minimum}, got {value!r}. {example}"
            )
    return plugin, args


# Nipype's numeric plugin arguments and their smallest sensible values; a string there would
# otherwise surface as a bare TypeError from inside the scheduler.
_NUMERIC_PLUGIN_ARGS = {
    "n_procs": 1,
    "n_gpu_procs": 0,
    "memory_gb": 0.1,
    "max_jobs": 1,
    "poll_sleep_duration": 0,
    "max_tries": 1,
    "retry_timeout": 0,
}
_INTEGER_PLUGIN_ARGS = {"n_procs", "n_gpu_procs", "max_jobs", "max_tries"}


def new_run_id() -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}_{uuid.uuid4().hex[:8]}"


@dataclass
class TrainingOptions:
    """Group-level training; None takes the value of the recipe (bids_harmonize/model/recipes.py)."""

    recipe: str = "auto"  # auto: "gpu" on a CUDA device, else "cpu"
    preset: str | None = None
    iterations: int | None = None
    batch_size: int | None = None
    processes: int = 1  # DistributedDataParallel processes under torchrun (one per GPU)


@dataclass
class RunConfig:
    bids_dir: Path
    output_dir: Path
    analysis_level: str
    work_dir: Path
    participant_labels: list[str] = field(default_factory=list)
    session_labels: list[str] = field(default_factory=list)
    bids_filter_file: Path | None = None
    skip_bids_validation: bool = False
    contrasts: list[str] = field(default_factory=lambda: ["T1w", "T2w"])
    # sites
    sites_only: bool = False
    site_table: Path | None = None
    site_granularity: str = "scanner"
    site_policy: Path | None = None
    # harmonization
    model: Path | None = None
    target_site: str | None = None
    target_style: str = "site"
    template: str | None = None  # None: the model bundle's, else DEFAULT_TEMPLATE
    template_resolution: int | None = None  # None: the model bundle's, else DEFAULT_RESOLUTION
    export_bids: Path | None = None
    brain_mask: str = "deepbet"  # deepbet (learned) or template (carried back through the registration)
    training: TrainingOptions = field(default_factory=TrainingOptions)
    # downstream measures
    volumes: bool = True  # participant: tissue volumes of every preprocessed and harmonized image
    covariates: list[str] | None = None  # None: age and sex where participants.tsv has them
    # execution (never part of any cache hash)
    device: str = "auto"
    nprocs: int = 0
    omp_nthreads: int = 0
    mem_gb: float | None = None
    use_plugin: Path | None = None
    seed: int = 0
    verbosity: int = 0
    # bookkeeping
    run_id: str = field(default_factory=new_run_id)
    version: str = __version__
    command_line: list[str] = field(default_factory=list)

    @property
    def database_dir(self) -> Path:
        return self.work_dir / "bids_db"

    @classmethod
    def from_namespace(cls, opts: argparse.Namespace, command_line: list[str]) -> RunConfig:
        output_dir = opts.output_dir.resolve()
        return cls(
            bids_dir=opts.bids_dir.resolve(),
            output_dir=output_dir,
            analysis_level=opts.analysis_level,
            work_dir=(opts.work_dir or output_dir / ".work").resolve(),
            participant_labels=list(opts.participant_label or []),
            session_labels=list(opts.session_label or []),
            bids_filter_file=opts.bids_filter_file,
            skip_bids_validation=opts.skip_bids_validation,
            contrasts=list(opts.contrasts),
            sites_only=opts.sites_only,
            site_table=opts.site_table,
            site_granularity=opts.site_granularity,
            site_policy=opts.site_policy,
            model=opts.model,
            target_site=opts.target_site,
            target_style=opts.target_style,
            template=opts.template,
            template_resolution=opts.template_resolution,
            export_bids=opts.export_bids.resolve() if opts.export_bids else None,
            brain_mask=getattr(opts, "brain_mask", "deepbet"),
            volumes=getattr(opts, "volumes", True),
            covariates=list(opts.covariates) if getattr(opts, "covariates", None) else None,
            training=TrainingOptions(
                recipe=opts.recipe,
                preset=opts.preset,
                iterations=opts.iterations,
                batch_size=opts.batch_size,
                processes=opts.train_processes,
            ),
            device=opts.device,
            nprocs=opts.nprocs,
            omp_nthreads=opts.omp_nthreads,
            mem_gb=opts.mem_gb,
            use_plugin=opts.use_plugin,
            seed=opts.seed,
            verbosity=opts.verbose,
            command_line=command_line,
        )

    def to_dict(self) -> dict[str, Any]:
        def plain(value: Any) -> Any:
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, list):
                return [plain(v) for v in value]
            return value

        return plain(asdict(self))
