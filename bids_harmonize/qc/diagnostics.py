"""Downstream diagnostics of a volume table with covariates: is the site effect gone, are the
biological effects still there, and are site and a covariate confounded?

Pure numpy/scipy on one row per image (volumes before and after harmonization, site, covariate
values); the group report (reports/downstream.py) renders what ``diagnose`` returns. Models
(ordinary least squares), for each volume:

- site effect: partial eta-squared and F-test of site in ``volume ~ covariates + site``, before
  and after (``qc.downstream.site_effect``; categorical covariates enter as dummy columns);
- covariate effects: the coefficient in ``volume ~ covariates + site`` before and after (the same
  model, so only the harmonization differs), each with its 95 % t-interval, flagged when the
  after-estimate falls outside the before-interval; and after, pooled (``volume ~ covariates``, as
  harmonized data are analysed), noted when it falls outside the site-adjusted after-interval (a
  pooled analysis would answer differently: site effect left, or site confounded with the covariate);
- confounding: one-way ANOVA of a numeric covariate on site, chi-square of a categorical one
  against site; p < CONFOUND_P is a warning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from bids_harmonize.qc.downstream import site_effect

CONFOUND_P = 0.05
Value = float | str | None


@dataclass(frozen=True)
class StudyImage:
    """One image of the study: where it comes from and what was measured on it."""

    relpath: str
    site: str
    before: dict[str, float]  # tissue -> ml, preprocessed image
    after: dict[str, float] | None  # tissue -> ml, harmonized image (None: not harmonized)
    covariates: dict[str, Value]


@dataclass(frozen=True)
class Effect:
    """A regression coefficient with its 95 % interval."""

    estimate: float
    low: float
    high: float


@dataclass(frozen=True)
class VolumeDiagnostics:
    """Everything the report says about one volume (a tissue of one contrast)."""

    tissue: str
    site_before: object  # qc.downstream.SiteEffect
    site_after: object
    effects: dict[str, tuple[Effect, Effect, Effect]]  # term -> (before, after: site-adjusted; after, pooled)

    def moved(self, term: str) -> bool:
        """True when harmonization moved the term's site-adjusted estimate outside its before-interval."""
        before, after, _ = self.effects[term]
        return not before.low <= after.estimate <= before.high

    def pooling_differs(self, term: str) -> bool:
        """True when the pooled after-estimate lies outside the site-adjusted after-interval."""
        _, after, pooled = self.effects[term]
        return not after.low <= pooled.estimate <= after.high


@dataclass(frozen=True)
class Confound:
    covariate: str
    test: str  # "ANOVA F" or "chi-square"
    statistic: float
    p_value: float

    @property
    def flagged(self) -> bool:
        return self.p_value < CONFOUND_P


@dataclass
class Diagnostics:
    used: list[StudyImage]
    missing: list[tuple[str, list[str]]]  # (image, covariates it lacks): left out, by name
    not_harmonized: list[str]
    confounds: list[Confound] = field(default_factory=list)
    volumes: list[VolumeDiagnostics] = field(default_factory=list)
    note: str = ""  # why nothing could be fitted, when so


def design(rows: Sequence[dict[str, Value]], names: Sequence[str], kinds: dict[str, str]) -> tuple[NDArray, list[str]]:
    """Columns of the covariates (no intercept) and their term names: a numeric covariate as it
    is (its coefficient is a slope per unit), a categorical one as a dummy per level beyond the
    first in sorted order (its coefficient is the difference from that reference level)."""
    columns, terms = [], []
    for name in names:
        if kinds[name] == "numeric":
            columns.append(np.array([float(r[name]) for r in rows]))  # type: ignore[arg-type]
            terms.append(name)
            continue
        levels = sorted({str(r[name]) for r in rows})
        for level in levels[1:]:
            columns.append(np.array([str(r[name]) == level for r in rows], dtype=np.float64))
            terms.append(f"{name} {level} - {levels[0]}")
    matrix = np.column_stack(columns) if columns else np.empty((len(rows), 0))
    return matrix, terms


def _site_dummies(sites: Sequence[str]) -> NDArray:
    labels = sorted(set(sites))
    return np.column_stack([np.array([s == label for s in sites], float) for label in labels[1:]])


def coefficients(y: NDArray, x: NDArray, sites: Sequence[str] | None = None) -> list[Effect]:
    """OLS coefficients of the columns of ``x`` in ``y ~ x (+ site dummies)``, with 95 % t-intervals."""
    from scipy.stats import t as t_distribution

    full = [np.ones(len(y)), *x.T]
    if sites is not None and len(set(sites)) > 1:
        full += list(_site_dummies(sites).T)
    matrix = np.column_stack(full)
    beta, *_ = np.linalg.lstsq(matrix, y, rcond=None)
    df = len(y) - np.linalg.matrix_rank(matrix)
    if df <= 0:
        return [Effect(float(b), np.nan, np.nan) for b in beta[1 : 1 + x.shape[1]]]
    sigma2 = float(np.sum((y - matrix @ beta) ** 2)) / df
    covariance = sigma2 * np.linalg.pinv(matrix.T @ matrix)
    half = t_distribution.ppf(0.975, df) * np.sqrt(np.diag(covariance))
    terms = range(1, 1 + x.shape[1])
    return [Effect(float(beta[i]), float(beta[i] - half[i]), float(beta[i] + half[i])) for i in terms]


def confounds(rows: Sequence[dict[str, Value]], sites: Sequence[str], names: Sequence[str], kinds: dict[str, str]):
    """Association of each covariate with site: ANOVA (numeric) or chi-square (categorical)."""
    from scipy.stats import chi2_contingency, f_oneway

    found = []
    labels = sorted(set(sites))
    for name in names:
        if kinds[name] == "numeric":
            groups = [[float(r[name]) for r, s in zip(rows, sites) if s == label] for label in labels]  # type: ignore[arg-type]
            if sum(len(g) for g in groups) <= len(groups) or min(len(g) for g in groups) < 1:
                continue
            result = f_oneway(*groups)
            found.append(Confound(name, "ANOVA F", float(result.statistic), float(result.pvalue)))
            continue
        levels = sorted({str(r[name]) for r in rows})
        pairs = [(s, str(r[name])) for r, s in zip(rows, sites)]
        table = np.array([[pairs.count((a, b)) for b in levels] for a in labels])
        if table.shape[1] < 2:
            continue
        statistic, p_value, *_ = chi2_contingency(table)
        found.append(Confound(name, "chi-square", float(statistic), float(p_value)))
    return found


def diagnose(images: Sequence[StudyImage], names: Sequence[str], kinds: dict[str, str]) -> Diagnostics:
    """Fit every model on the images that were harmonized and have every covariate; the others
    are listed (``missing``, ``not_harmonized``), never silently left out."""
    missing = [(i.relpath, [n for n in names if i.covariates.get(n) is None]) for i in images]
    missing = [(relpath, lacking) for relpath, lacking in missing if lacking]
    lacking = {relpath for relpath, _ in missing}
    not_harmonized = [i.relpath for i in images if i.after is None]
    used = [i for i in images if i.after is not None and i.relpath not in lacking]
    result = Diagnostics(used, missing, not_harmonized)
    sites = [i.site for i in used]
    rows = [i.covariates for i in used]
    x, terms = design(rows, names, kinds)
    if len(set(sites)) < 2:
        result.note = f"{len(used)} usable image(s) from {len(set(sites))} site(s): the diagnostics need two sites."
        return result
    if len(used) <= 1 + x.shape[1] + len(set(sites)):
        result.note = f"{len(used)} usable image(s) are too few for {len(terms)} covariate term(s) and a site term."
        return result
    result.confounds = confounds(rows, sites, names, kinds)
    for tissue in sorted(used[0].before):
        before = np.array([i.before[tissue] for i in used])
        after = np.array([i.after[tissue] for i in used])  # type: ignore[index]
        adjusted, harmonized = coefficients(before, x, sites), coefficients(after, x, sites)
        pooled = coefficients(after, x)
        result.volumes.append(
            VolumeDiagnostics(
                tissue,
                site_effect(before, x, sites),
                site_effect(after, x, sites),
                {term: (adjusted[k], harmonized[k], pooled[k]) for k, term in enumerate(terms)},
            )
        )
    return result
