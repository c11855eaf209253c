"""Scores and tables of the downstream benchmark (benchmarks/downstream.py).

Every method's measurements become the same measures (bids_harmonize.qc.downstream): AVDP and
between-site CoV on the traveling subjects, the site effect and the GM age-slope ratio on the
study population, and the image metrics of the traveling scans. neuroCombat rows are made here
from the unharmonized volume table; MURD's seeds are summarised as mean, spread and the envelope
of their intervals.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from bids_harmonize.qc.downstream import (
    Estimate,
    absolute_volume_difference,
    between_site_cov,
    bootstrap,
    combat,
    site_effect,
    slope_ratio,
    subject_mean,
)
from bids_harmonize.qc.volumes import TISSUES

RESULTS = Path(__file__).parent / "results"
NO_IMAGE = {"ssim": None, "psnr_db": None, "site_accuracy": None, "wasserstein": None}
COLUMNS = {  # measure -> header
    "avdp_GM": "GM AVDP %",
    "avdp_WM": "WM AVDP %",
    "avdp_CSF": "CSF AVDP %",
    "cov_GM": "GM CoV %",
    "cov_WM": "WM CoV %",
    "eta_GM": "GM site eta2",
    "eta_WM": "WM site eta2",
    "slope_GM": "GM age-slope ratio",
    "ssim": "SSIM",
    "psnr_db": "PSNR dB",
    "site_accuracy": "site acc.",
    "wasserstein": "W1",
}


def volume_table(rows: Sequence[Mapping[str, float]]) -> np.ndarray:
    return np.array([[row[t] for t in TISSUES] for row in rows], dtype=np.float64)


def by_subject_and_site(traveling_rows: Sequence[Mapping[str, float]], n_sites: int) -> np.ndarray:
    """The traveling scans' volumes (subject-major rows) as (subjects, sites, tissues)."""
    return volume_table(traveling_rows).reshape(-1, n_sites, len(TISSUES))


def measures(
    study: np.ndarray,
    traveling: np.ndarray,
    reference: np.ndarray,
    cohort,
    target_index: int,
    image: Mapping,
    slope_reference: np.ndarray | None,
) -> dict[str, Estimate | None]:
    """All measures of one method. study: (subjects, tissues); traveling: (subjects, sites,
    tissues); reference: (subjects, tissues), the unharmonized target-site scans of the traveling
    subjects; slope_reference: GM of the study subjects as the target scanner measures it (None:
    no age-slope ratio)."""
    ages = np.array([cohort.age[im.subject] for im in cohort.study])
    sites = [im.site for im in cohort.study]
    sources = [k for k in range(traveling.shape[1]) if k != target_index]
    out: dict[str, Estimate | None] = {}
    for t, tissue in enumerate(TISSUES):
        avdp = absolute_volume_difference(traveling[:, sources, t], reference[:, None, t]).mean(axis=1)
        out[f"avdp_{tissue}"] = subject_mean(avdp)
        out[f"cov_{tissue}"] = subject_mean(between_site_cov(traveling[:, :, t]))
        volume = study[:, t]
        out[f"eta_{tissue}"] = bootstrap(
            lambda idx, v=volume: site_effect(v[idx], ages[idx], [sites[i] for i in idx]).partial_eta_squared,
            len(volume),
        )
    out["slope_GM"] = None if slope_reference is None else slope_ratio(study[:, 1], slope_reference, ages)
    for key in ("ssim", "psnr_db"):
        values = image.get(key)
        out[key] = None if values is None else subject_mean(np.reshape(values, traveling.shape[:2]).mean(axis=1))
    for key in ("site_accuracy", "wasserstein"):
        out[key] = None if image.get(key) is None else Estimate(image[key], np.nan, np.nan)
    return out


def _combat_rows(measured: Mapping, cohort, target: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """neuroCombat on the unharmonized volumes of every image (study and traveling together, as a
    consortium would run it), to the target site, with and without age as a covariate."""
    study, traveling = volume_table(measured["none"]["study"]), volume_table(measured["none"]["traveling"])
    images = [*cohort.study, *cohort.traveling]
    table = np.vstack([study, traveling])
    sites = [im.site for im in images]
    ages = [cohort.age[im.subject] for im in images]
    rows = {}
    for name, covariate in (("neuroCombat (age protected)", ages), ("neuroCombat (no covariate)", None)):
        adjusted = combat(table, sites, target, covariate)
        rows[name] = (adjusted[: len(study)], adjusted[len(study) :])
    return rows


def summarise(measured: Mapping, per_seed: Mapping, cohort, target: str, sites: Sequence[str]):
    """Rows of the summary table (method -> measures) and the per-seed rows of MURD."""
    n_sites, k = len(sites), sites.index(target)

    def shaped(traveling_rows) -> np.ndarray:
        return by_subject_and_site(traveling_rows, n_sites)

    reference = shaped(measured["none"]["traveling"])[:, k, :]
    at_target = volume_table(measured["rescan"]["study"])[:, 1]
    rows = {}
    truth_study = np.array([[cohort.truth[im.subject][t] for t in TISSUES] for im in cohort.study])
    truth_travel = np.array([[cohort.truth[s][t] for t in TISSUES] for s in _traveling_subjects(cohort)])
    rows["ground truth (no scanner)"] = measures(
        truth_study, np.repeat(truth_travel[:, None, :], n_sites, axis=1), truth_travel, cohort, k, NO_IMAGE, None
    )
    rescan = volume_table(measured["rescan"]["traveling"])
    rows["target-site rescan (noise floor)"] = _noise_floor(rescan, reference)
    for name, result in measured.items():
        if name == "rescan":
            continue
        if "study" not in result:  # traveling scans only (the per-subject oracle)
            rows[name] = traveling_only(shaped(result["traveling"]), reference, k)
            continue
        rows[name] = measures(
            volume_table(result["study"]), shaped(result["traveling"]), reference, cohort, k, result, at_target
        )
    for name, (study, traveling) in _combat_rows(measured, cohort, target).items():
        rows[name] = measures(
            study, traveling.reshape(-1, n_sites, len(TISSUES)), reference, cohort, k, NO_IMAGE, at_target
        )
    seed_rows = {
        seed: measures(volume_table(r["study"]), shaped(r["traveling"]), reference, cohort, k, r, at_target)
        for seed, r in per_seed.items()
    }
    if seed_rows:
        rows[f"MURD, mean of {len(seed_rows)} seeds"] = _over_seeds(list(seed_rows.values()))
    ages = np.array([cohort.age[im.subject] for im in cohort.study])
    fidelity = slope_ratio(at_target, truth_study[:, 1], ages)
    return rows, seed_rows, fidelity


def _noise_floor(rescan: np.ndarray, reference: np.ndarray) -> dict[str, Estimate | None]:
    """AVDP of an independent rescan at the target site against the target-site scan: what noise
    alone gives, the floor no harmonizer can go below."""
    row: dict[str, Estimate | None] = dict.fromkeys(COLUMNS)
    for t, tissue in enumerate(TISSUES):
        row[f"avdp_{tissue}"] = subject_mean(absolute_volume_difference(rescan[:, t], reference[:, t]))
    return row


def traveling_only(traveling: np.ndarray, reference: np.ndarray, target_index: int) -> dict[str, Estimate | None]:
    """AVDP and between-site CoV of a method that only the traveling subjects can have."""
    row: dict[str, Estimate | None] = dict.fromkeys(COLUMNS)
    sources = [k for k in range(traveling.shape[1]) if k != target_index]
    for t, tissue in enumerate(TISSUES):
        avdp = absolute_volume_difference(traveling[:, sources, t], reference[:, None, t]).mean(axis=1)
        row[f"avdp_{tissue}"] = subject_mean(avdp)
        row[f"cov_{tissue}"] = subject_mean(between_site_cov(traveling[:, :, t]))
    return row


def _traveling_subjects(cohort) -> list[str]:
    return list(dict.fromkeys(im.subject for im in cohort.traveling))


def _over_seeds(rows: Sequence[Mapping[str, Estimate | None]]) -> dict[str, Estimate | None]:
    """Mean over seeds; the interval is the envelope of the seeds' own intervals (conservative)."""
    out = {}
    for key in COLUMNS:
        estimates = [row[key] for row in rows if row[key] is not None]
        if not estimates:
            out[key] = None
            continue
        lows = [e.low for e in estimates if np.isfinite(e.low)]
        highs = [e.high for e in estimates if np.isfinite(e.high)]
        out[key] = Estimate(
            float(np.mean([e.value for e in estimates])), min(lows) if lows else np.nan, max(highs) if highs else np.nan
        )
        out[f"{key}_sd"] = float(np.std([e.value for e in estimates], ddof=1)) if len(estimates) > 1 else 0.0
    return out


def estimate_cell(estimate: Estimate | None, sd: float | None = None) -> str:
    if estimate is None:
        return "n/a"
    text = f"{estimate.value:.3g}"
    if sd is not None:
        text += f" ±{sd:.2g}"
    if np.isfinite(estimate.low):
        text += f" [{estimate.low:.3g}, {estimate.high:.3g}]"
    return text


def markdown(rows: Mapping[str, Mapping]) -> str:
    lines = ["| method | " + " | ".join(COLUMNS.values()) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for name, row in rows.items():
        cells = (estimate_cell(row[key], row.get(f"{key}_sd")) for key in COLUMNS)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def target_checks(rows: Mapping[str, Mapping]) -> list[tuple[str, bool]]:
    """Issue 16's targets for MURD (mean over seeds) against the input and the image baselines."""
    murd = next((row for name, row in rows.items() if name.startswith("MURD")), None)
    if murd is None:
        return []
    none = rows["none"]
    image_baselines = [
        row
        for name, row in rows.items()
        if row["ssim"] is not None and name not in ("none",) and not name.startswith("MURD")
    ]
    v = {key: (e.value if e is not None else np.nan) for key, e in murd.items() if key in COLUMNS}
    best = lambda key, pick: pick(row[key].value for row in image_baselines)  # noqa: E731
    return [
        ("GM and WM AVDP <= 3 %", v["avdp_GM"] <= 3 and v["avdp_WM"] <= 3),
        (
            "GM and WM AVDP <= half the input's",
            all(v[f"avdp_{t}"] <= none[f"avdp_{t}"].value / 2 for t in ("GM", "WM")),
        ),
        (
            "between-site CoV <= half the input's (GM, WM)",
            all(v[f"cov_{t}"] <= none[f"cov_{t}"].value / 2 for t in ("GM", "WM")),
        ),
        (
            "between-site CoV below every image-level baseline (GM, WM)",
            all(v[f"cov_{t}"] < best(f"cov_{t}", min) for t in ("GM", "WM")),
        ),
        ("GM age-slope ratio within 0.9-1.1", 0.9 <= v["slope_GM"] <= 1.1),
        (
            "site partial eta2 <= half the input's (GM, WM)",
            all(v[f"eta_{t}"] <= none[f"eta_{t}"].value / 2 for t in ("GM", "WM")),
        ),
        (
            "SSIM and PSNR above every image-level baseline",
            v["ssim"] > best("ssim", max) and v["psnr_db"] > best("psnr_db", max),
        ),
        ("site accuracy below the input's", v["site_accuracy"] < none["site_accuracy"].value),
        ("seed-to-seed SD of SSIM <= 0.002", murd.get("ssim_sd", np.inf) <= 0.002),
    ]


def _kept_line(context: Mapping) -> str:
    """Which training step's weights each seed's bundle kept (model/validation.py)."""
    kept = context.get("kept_steps")
    if not kept:
        return ""
    steps = ", ".join(f"seed {seed}: {step}" for seed, step in kept.items())
    return f"Snapshot each bundle kept (validation on held-out training volumes; 'last': validation off): {steps}.  \n"


def write_results(rows, seed_rows, fidelity: Estimate, measured, per_seed, cohort, context: Mapping) -> str:
    RESULTS.mkdir(parents=True, exist_ok=True)
    checks = target_checks(rows)
    iterations = f", {context['iterations']} iterations" if context["iterations"] else ""
    seeds_md = (
        markdown({f"MURD seed {seed}": row for seed, row in seed_rows.items()}) if seed_rows else "(MURD not run)"
    )
    text = (
        "# Downstream benchmark: volumes, site effect and age effect on a simulated consortium\n\n"
        f"Command: `{context['command']}`  \n"
        f"Machine: {context.get('machine', '')}; 5-minute load average {context['load']:.1f} at the end.  \n"
        f"MURD: recipe `{context['recipe']}`{iterations}, seeds {context['seeds']}, "
        f"{context['threads']} torch threads (the CLI's default here), {context['training_s'] / 60:.1f} min training "
        f"per seed on average. Total time {context['seconds'] / 60:.0f} min"
        + (
            f" (seeds {context['reused_seeds']} reused from the work dir's cache: their training time is the "
            "earlier run's)"
            if context.get("reused_seeds")
            else ""
        )
        + ".  \n"
        + _kept_line(context)
        + "Cells: value [bootstrap 95 % interval over subjects]; MURD: mean ±SD over seeds [envelope of the seeds' "
        "intervals]. Study population: 48 subjects, one scan each, age confounded with site; traveling subjects: "
        '8, scanned at all 4 sites. Definitions: docs/qc.md, "Downstream measures".  \n'
        "GM age-slope ratio: slope of GM on age in the (harmonized) study / the slope in the same subjects scanned at "
        f"the target site. The segmenter itself, on those target-site scans, recovers {fidelity} of the true GM "
        "age slope (partial volumes at 2 mm): the ratio compares with what the target scanner would show, not with "
        "the anatomy.\n\n"
        + markdown(rows)
        + "\n\nPer seed:\n\n"
        + seeds_md
        + "\n\nIssue 16's targets (MURD, mean over seeds):\n\n"
        + "\n".join(f"- [{'x' if ok else ' '}] {name}" for name, ok in checks)
        + "\n"
    )
    stem = context.get("stem", "downstream")
    (RESULTS / f"{stem}.md").write_text(text)
    _write_csv(RESULTS / f"{stem}.csv", rows)
    _write_csv(RESULTS / f"{stem}_seeds.csv", {f"seed {s}": r for s, r in seed_rows.items()})
    _write_volumes(RESULTS / f"{stem}_volumes.csv", measured, per_seed, cohort)
    return text


def _write_csv(path: Path, rows: Mapping[str, Mapping]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["method", *(f"{k}{s}" for k in COLUMNS for s in ("", "_low", "_high"))])
        for name, row in rows.items():
            cells = []
            for key in COLUMNS:
                e = row[key]
                cells += ["", "", ""] if e is None else [f"{e.value:.6g}", f"{e.low:.6g}", f"{e.high:.6g}"]
            writer.writerow([name, *cells])


def _write_volumes(path: Path, measured: Mapping, per_seed: Mapping, cohort) -> None:
    """Every image's volumes per method: the raw table behind the summary."""
    images = {name: result for name, result in measured.items() if name != "rescan"}
    results = {**images, **{f"MURD seed {s}": r for s, r in per_seed.items()}}
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["method", "set", "subject", "site", "age", *(f"{t}_ml" for t in TISSUES)])
        for name, result in results.items():
            for part, images in (("study", cohort.study), ("traveling", cohort.traveling)):
                if part not in result:  # the oracle has traveling scans only
                    continue
                for im, volumes in zip(images, result[part], strict=True):
                    writer.writerow(
                        [
                            name,
                            part,
                            im.subject,
                            im.site,
                            cohort.age[im.subject],
                            *(f"{volumes[t]:.2f}" for t in TISSUES),
                        ]
                    )
