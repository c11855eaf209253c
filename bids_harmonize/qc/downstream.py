"""What a multi-site study analyses, scored: volume agreement across scanners, the site effect
left in a volume table, and whether a biological effect (age) survives harmonization.

Pure numpy: every function takes volume tables (one row per image) and returns numbers, so the
benchmark (benchmarks/downstream.py) and the group report's diagnostics share them. Definitions
and the literature they follow are in docs/qc.md, "Downstream measures".
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

BOOTSTRAP_SAMPLES = 2000


@dataclass(frozen=True)
class Estimate:
    """A statistic with its bootstrap 95 % interval (percentile method)."""

    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.3g} [{self.low:.3g}, {self.high:.3g}]"


def bootstrap(
    statistic: Callable[[NDArray[np.int64]], float], n_units: int, seed: int = 0, samples: int | None = None
) -> Estimate:
    """`statistic(indices)` on all units and on `samples` resamples of the units (subjects) with
    replacement; the interval is the 2.5th-97.5th percentile of the resampled values."""
    rng = np.random.default_rng(seed)
    samples = samples or BOOTSTRAP_SAMPLES
    everyone = np.arange(n_units)
    resampled = np.array([statistic(rng.integers(0, n_units, n_units)) for _ in range(samples)])
    resampled = resampled[np.isfinite(resampled)]
    low, high = np.percentile(resampled, (2.5, 97.5)) if resampled.size else (np.nan, np.nan)
    return Estimate(float(statistic(everyone)), float(low), float(high))


def subject_mean(per_subject: ArrayLike, seed: int = 0) -> Estimate:
    """Mean over subjects of a per-subject value, with its bootstrap interval."""
    values = np.asarray(per_subject, dtype=np.float64)
    return bootstrap(lambda idx: float(values[idx].mean()), len(values), seed)


def absolute_volume_difference(volumes: ArrayLike, reference: ArrayLike) -> NDArray[np.float64]:
    """Absolute volume difference % (AVDP): |V - V_ref| / V_ref x 100, element-wise. Traveling
    subjects: V from a harmonized scan at another site, V_ref from the same subject's scan at the
    target site (Lu et al., HACA3 evaluation)."""
    volumes, reference = np.asarray(volumes, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    return np.abs(volumes - reference) / reference * 100.0


def between_site_cov(volumes_by_site: ArrayLike) -> NDArray[np.float64]:
    """Within-subject between-site coefficient of variation %, one value per subject:
    sample standard deviation over the subject's scans at every site / their mean x 100.
    `volumes_by_site` is (subjects, sites)."""
    table = np.asarray(volumes_by_site, dtype=np.float64)
    return table.std(axis=1, ddof=1) / table.mean(axis=1) * 100.0


def _design(covariates: NDArray[np.float64], groups: Sequence[str] | None) -> NDArray[np.float64]:
    """Intercept, the covariates, and one dummy per group beyond the first (sorted labels)."""
    columns = [np.ones(len(covariates)), *covariates.T]
    if groups is not None:
        labels = sorted(set(groups))
        columns += [np.array([g == label for g in groups], dtype=np.float64) for label in labels[1:]]
    return np.column_stack(columns)


def _residual_sum_of_squares(design: NDArray[np.float64], y: NDArray[np.float64]) -> float:
    coefficients, *_ = np.linalg.lstsq(design, y, rcond=None)
    return float(np.sum((y - design @ coefficients) ** 2))


@dataclass(frozen=True)
class SiteEffect:
    """The site term of `volume ~ covariates + site` (ordinary least squares)."""

    partial_eta_squared: float
    f_statistic: float
    p_value: float


def site_effect(volume: ArrayLike, covariates: ArrayLike, sites: Sequence[str]) -> SiteEffect:
    """Partial eta-squared and F-test of site: SS_site / (SS_site + SS_residual), where SS_site is
    what adding the site dummies removes from the residual sum of squares of `volume ~ covariates`."""
    from scipy.stats import f as f_distribution

    y = np.asarray(volume, dtype=np.float64)
    x = np.asarray(covariates, dtype=np.float64).reshape(len(y), -1)
    full, reduced = _design(x, sites), _design(x, None)
    rss_full, rss_reduced = _residual_sum_of_squares(full, y), _residual_sum_of_squares(reduced, y)
    ss_site = max(rss_reduced - rss_full, 0.0)
    df_site, df_residual = full.shape[1] - reduced.shape[1], len(y) - full.shape[1]
    eta = ss_site / (ss_site + rss_full) if ss_site + rss_full > 0 else 0.0
    f_value = (ss_site / df_site) / (rss_full / df_residual) if rss_full > 0 and df_residual > 0 else np.inf
    return SiteEffect(eta, float(f_value), float(f_distribution.sf(f_value, df_site, df_residual)))


def slope(y: ArrayLike, x: ArrayLike) -> float:
    """Ordinary least-squares slope of y on x (with intercept)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    centred = x - x.mean()
    return float(centred @ (y - y.mean()) / (centred @ centred))


def slope_ratio(measured: ArrayLike, true: ArrayLike, age: ArrayLike, seed: int = 0) -> Estimate:
    """Ratio of the age slope of the measured volumes to that of the true volumes of the same
    subjects, with a bootstrap interval over subjects (both slopes from the same resample).
    1 means the biological effect survives as it is; < 1 weakened, > 1 exaggerated."""
    measured, true, age = (np.asarray(a, dtype=np.float64) for a in (measured, true, age))
    return bootstrap(lambda idx: slope(measured[idx], age[idx]) / slope(true[idx], age[idx]), len(age), seed)


def combat(
    volumes: NDArray[np.float64], sites: Sequence[str], reference_site: str, age: ArrayLike | None = None
) -> NDArray[np.float64]:
    """neuroCombat (Fortin et al. 2018; PyPI `neurocombat`) on a volume table (images, features):
    empirical-Bayes location/scale harmonization of each feature to `reference_site`, with age as
    a continuous covariate to protect when given. Needs the 'qc' extra."""
    import pandas as pd
    from neuroCombat import neuroCombat

    covariates = pd.DataFrame({"site": list(sites)})
    continuous = None
    if age is not None:
        covariates["age"] = np.asarray(age, dtype=np.float64)
        continuous = ["age"]
    with _numpy_int_alias(), redirect_stdout(io.StringIO()):  # it prints each step
        result = neuroCombat(
            dat=np.asarray(volumes, dtype=np.float64).T,
            covars=covariates,
            batch_col="site",
            continuous_cols=continuous,
            ref_batch=reference_site,
        )
    adjusted = np.asarray(result["data"]).T
    if not np.isfinite(adjusted).all():
        raise ValueError("neuroCombat returned non-finite values (too few features or images per site?)")
    return adjusted


@contextmanager
def _numpy_int_alias():
    """neuroCombat 0.2.12 (the latest release) still calls `np.int`, which numpy 2 removed, in
    its reference-batch path; lend it the builtin for the duration of the call only."""
    had_alias = hasattr(np, "int") and "int" in np.__dict__
    if not had_alias:
        np.int = int  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if not had_alias:
            del np.int  # type: ignore[attr-defined]
