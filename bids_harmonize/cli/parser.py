"""The BIDS App command line: positionals, options, and validation whose errors name the fix.

Exit codes follow the BIDS Apps execution draft; see ``bids_harmonize.errors.ExitCode``.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from bids_harmonize import __version__
from bids_harmonize.config import DEFAULT_RESOLUTION, DEFAULT_TEMPLATE, PluginFileError, read_plugin_file
from bids_harmonize.errors import ExitCode, HarmonizeError

# The names of bids_harmonize.model.networks.PRESETS, spelled out so that parsing options does
# not import torch (tests/cli checks that they agree).
NETWORK_PRESETS = ("cpu", "paper", "paper-tiny", "reference", "tiny")


class CLIError(HarmonizeError):
    """A problem with the command line: a usage error, or (``exit_code`` given) a missing input."""

    exit_code = ExitCode.USAGE

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would exit 2; BIDS Apps say 64
        raise CLIError(f"{self.prog}: {message}. See `{self.prog} --help`.", ExitCode.USAGE)


def _device(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise argparse.ArgumentTypeError(f"{value!r} is not auto, cpu, cuda or cuda:N")
    return value


def _memory_gb(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)B?", value.strip(), re.I)
    if not match:
        raise argparse.ArgumentTypeError(f"{value!r} is not a memory size such as 16G or 8000MB")
    scale = {"": 1.0, "K": 1 / 1024**2, "M": 1 / 1024, "G": 1.0, "T": 1024.0}[match.group(2).upper()]
    return float(match.group(1)) * scale


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return number


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends a default only where it says something: not for flags, not for None, and not where
    the help text already names the default (e.g. "default: the recipe's")."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if isinstance(action.default, bool) or action.default is None or "default" in text:
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bids_harmonize",
        description="Remove scanner/site effects from structural MRI (T1w, T2w) with MURD.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("bids_dir", type=Path, help="root of the input BIDS dataset")
    parser.add_argument("output_dir", type=Path, help="where derivatives are written")
    parser.add_argument(
        "analysis_level",
        choices=("participant", "group"),
        help="participant: preprocess (and harmonize when a model exists); group: site inventory and MURD training",
    )
    parser.add_argument("--version", action="version", version=f"bids_harmonize {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")

    select = parser.add_argument_group("selecting data")
    select.add_argument("--participant-label", "--participant_label", nargs="+", metavar="LABEL")
    select.add_argument("--session-label", nargs="+", metavar="LABEL")
    select.add_argument("--bids-filter-file", type=Path, metavar="JSON", help='e.g. {"t1w": {"acquisition": "mprage"}}')
    select.add_argument(
        "--skip-bids-validation", action="store_true", help="index files whose names are not strict BIDS"
    )
    select.add_argument("--contrasts", nargs="+", choices=("T1w", "T2w"), default=["T1w", "T2w"])

    sites = parser.add_argument_group("sites")
    sites.add_argument("--sites-only", action="store_true", help="group: write sites.tsv and print the site table only")
    sites.add_argument("--site-table", type=Path, metavar="TSV", help="site labels that override inference")
    sites.add_argument("--site-granularity", choices=("vendor", "scanner", "protocol"), default="scanner")
    sites.add_argument("--site-policy", type=Path, metavar="YAML", help="replacement for the packaged site policy")

    harmonize = parser.add_argument_group("harmonization")
    harmonize.add_argument(
        "--model", type=Path, metavar="BUNDLE", help="model bundle folder (default: OUT/models/<contrast>)"
    )
    harmonize.add_argument(
        "--target-site", metavar="SITE", help="site whose appearance outputs take (default: the bundle's)"
    )
    harmonize.add_argument(
        "--target-style",
        default="site",
        metavar="STYLE",
        help="site (the bundle's deterministic site style), random:SEED, or reference:PATH",
    )
    harmonize.add_argument(
        "--template",
        help=f"TemplateFlow template for the model grid (default: the model's; without a model {DEFAULT_TEMPLATE})",
    )
    harmonize.add_argument(
        "--template-resolution",
        type=int,
        choices=(1, 2),
        help="template resolution in mm (default: the model's; without a model, at group level the resolution "
        f"most images were already preprocessed at, else {DEFAULT_RESOLUTION})",
    )
    harmonize.add_argument(
        "--export-bids",
        type=Path,
        metavar="DIR",
        help="participant: also write a BIDS raw dataset in which each harmonized image takes its raw image's "
        "place (for fMRIPrep, sMRIPrep, MRIQC)",
    )

    preproc = parser.add_argument_group("preprocessing")
    preproc.add_argument(
        "--brain-mask",
        choices=("deepbet", "template"),
        default="deepbet",
        help="deepbet: a learned brain mask (Fisch et al. 2024) drives the registration to the template and is "
        "checked against the registered template mask; template: the template's brain mask carried back through "
        "a whole-head registration (the earlier default, kept so the change stays measurable)",
    )

    measures = parser.add_argument_group("downstream measures")
    measures.add_argument(
        "--no-volumes",
        dest="volumes",
        action="store_false",
        help="participant: do not measure each image's tissue volumes (ANTs Atropos on the preprocessed and the "
        "harmonized image, *_volumes.tsv); the group report's downstream section then has nothing to read",
    )
    measures.add_argument(
        "--covariates",
        nargs="+",
        metavar="COLUMN",
        help="columns of participants.tsv (and sessions.tsv) for the group report's downstream section, e.g. age "
        "sex group (numeric columns are slopes, others groups; default: age and sex where present)",
    )

    train = parser.add_argument_group("training (group level)")
    train.add_argument(
        "--recipe",
        choices=("auto", "cpu", "gpu"),
        default="auto",
        help="training recipe: network preset and optimisation settings (auto: gpu on a CUDA device, else cpu)",
    )
    train.add_argument("--preset", choices=NETWORK_PRESETS, help="network layout and size (default: the recipe's)")
    train.add_argument("--iterations", type=_positive_int, help="training iterations (default: the recipe's)")
    train.add_argument("--batch-size", type=_positive_int, help="slices per step and process (default: the recipe's)")
    train.add_argument(
        "--train-processes",
        type=_positive_int,
        default=1,
        metavar="N",
        help="train with N DistributedDataParallel processes under torchrun: one per GPU (N GPUs), or N CPU "
        "processes with gloo; the batch size is per process",
    )

    run = parser.add_argument_group("execution")
    run.add_argument("-w", "--work-dir", type=Path, help="intermediate files and caches (default: OUT/.work)")
    run.add_argument("--nprocs", "--n-cpus", type=int, default=0, help="processes (0: all cores)")
    run.add_argument("--omp-nthreads", type=int, default=0, help="threads per process (0: automatic)")
    run.add_argument("--mem", "--mem-gb", dest="mem_gb", type=_memory_gb, help="memory limit, e.g. 16G")
    run.add_argument("--use-plugin", type=Path, metavar="YAML", help="Nipype plugin settings (e.g. SLURM)")
    run.add_argument("--device", type=_device, default="auto", help="auto, cpu, cuda or cuda:N")
    run.add_argument("--seed", type=int, default=0, help="random seed for training and random styles")
    return parser


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
    except ValueError:
        return False
    return True


def validate(opts: argparse.Namespace) -> argparse.Namespace:
    """Checks that need the file system; each error names the fix."""
    bids_dir = opts.bids_dir.resolve()
    if not bids_dir.is_dir():
        raise CLIError(
            f"bids_dir {opts.bids_dir} does not exist. Fix: give the BIDS dataset root.", ExitCode.INPUT_MISSING
        )
    output_dir = opts.output_dir.resolve()
    if output_dir == bids_dir or (_inside(output_dir, bids_dir) and not _inside(output_dir, bids_dir / "derivatives")):
        raise CLIError(
            f"output_dir {output_dir} is inside the input dataset {bids_dir}, where its files would be "
            f"indexed as raw data. Fix: use a folder outside it, or {bids_dir / 'derivatives' / 'bids_harmonize'}."
        )
    for name in ("bids_filter_file", "site_table", "site_policy", "use_plugin", "model"):
        path = getattr(opts, name)
        if path is not None and not path.exists():
            flag = "--" + name.replace("_", "-")
            raise CLIError(f"{flag} {path} does not exist. Fix: check the path.", ExitCode.INPUT_MISSING)
    if opts.sites_only and opts.analysis_level != "group":
        raise CLIError("--sites-only belongs to the group level. Fix: `bids_harmonize BIDS OUT group --sites-only`.")
    opts.target_style = _target_style(opts.target_style)
    if opts.use_plugin is not None:
        try:
            read_plugin_file(opts.use_plugin)
        except PluginFileError as err:
            raise CLIError(str(err)) from err
    _check_export(opts, bids_dir, output_dir)
    _check_training(opts)
    _check_foreign_output(output_dir)
    ensure_writable(output_dir, "output_dir")
    ensure_writable((opts.work_dir or output_dir / ".work").resolve(), "-w/--work-dir")
    if opts.nprocs < 0 or opts.omp_nthreads < 0:
        raise CLIError("--nprocs and --omp-nthreads must be 0 (automatic) or positive.")
    if opts.nprocs == 0:
        opts.nprocs = len(os.sched_getaffinity(0))
    return opts


def _check_foreign_output(output_dir: Path) -> None:
    """Another pipeline's derivatives folder is refused before anything is written into it."""
    from bids_harmonize.bids.derivatives import OutputDirError, check_output_dir

    try:
        check_output_dir(output_dir)
    except (OutputDirError, OSError) as err:
        raise CLIError(str(err)) from err


def _target_style(style: str) -> str:
    """The style with a reference image's path made absolute (workflow nodes run elsewhere)."""
    if not (style == "site" or re.fullmatch(r"random:\d+", style) or style.startswith("reference:")):
        raise CLIError(f"--target-style {style!r}: use site, random:SEED or reference:PATH.")
    if not style.startswith("reference:"):
        return style
    reference = Path(style.split(":", 1)[1]).expanduser()
    if not reference.is_file():
        raise CLIError(
            f"--target-style reference image {reference} does not exist (relative paths are taken from "
            f"{Path.cwd()}). Fix: give the path of a T1w/T2w NIfTI image of the target site.",
            ExitCode.INPUT_MISSING,
        )
    if not reference.name.endswith((".nii", ".nii.gz")):
        raise CLIError(f"--target-style reference image {reference} is not a NIfTI file (.nii or .nii.gz).")
    return f"reference:{reference.resolve()}"


def _check_training(opts: argparse.Namespace) -> None:
    """Training options only act where the group level trains: refuse them elsewhere."""
    given = [
        flag
        for flag, value, default in (
            ("--recipe", opts.recipe, "auto"),
            ("--preset", opts.preset, None),
            ("--iterations", opts.iterations, None),
            ("--batch-size", opts.batch_size, None),
            ("--train-processes", opts.train_processes, 1),
        )
        if value != default
    ]
    if given and (opts.analysis_level != "group" or opts.sites_only):
        raise CLIError(
            f"{', '.join(given)} set(s) how the group level trains MURD; this run trains nothing. "
            "Fix: drop it, or pass it to `bids_harmonize BIDS OUT group`."
        )


def _check_export(opts: argparse.Namespace, bids_dir: Path, output_dir: Path) -> None:
    if opts.export_bids is None:
        return
    export = opts.export_bids.resolve()
    if opts.analysis_level != "participant":
        raise CLIError("--export-bids belongs to the participant level, which writes the harmonized images.")
    if export in (bids_dir, output_dir) or _inside(export, bids_dir) or _inside(export, output_dir):
        raise CLIError(
            f"--export-bids {export} must be a folder of its own, outside the input dataset and output_dir. "
            f"Fix: e.g. {output_dir.parent / (bids_dir.name + '_harmonized')}."
        )
    ensure_writable(export, "--export-bids")


def ensure_writable(folder: Path, flag: str) -> None:
    """Create ``folder`` if needed and prove it takes a file, before any work starts (a run that
    fails after an hour of preprocessing because its output cannot be written is the worst kind)."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise CLIError(
            f"{flag} {folder} is not writable ({err.strerror or err}). Fix: choose a folder you can write to, "
            "or fix its permissions (in a container, mount it read-write).",
            ExitCode.USAGE,
        ) from err


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return validate(build_parser().parse_args(argv))
