"""Aggregate results over runs x tasks, as the field reports them (Agarwal et al., "Deep RL at the
Edge of the Statistical Precipice", NeurIPS 2021), computed with their package ``rliable``.

A score matrix holds one value per run (rows: seeds) and task (columns: data splits). From it:

* :func:`iqm` - the interquartile mean (the mean of the middle 50% of all runs x tasks scores)
  with a 95% stratified-bootstrap interval (runs resampled within each task);
* :func:`probability_of_improvement` - P(X > Y): the probability that a run of X scores above a
  run of Y on the same task (ties count half), averaged over tasks, with a 95% interval from
  resampling each side's runs independently within each task;
* :func:`verdict` - "better" / "worse" when that interval lies wholly above / below 0.5, else
  "no detectable difference" (and no verdict from fewer than :data:`MIN_RUNS` runs);
* :func:`iqm_curve` - the IQM of a quantity along training (runs x tasks x points) with a band;
* :func:`performance_profile` - the share of runs x tasks scoring above each threshold, with bands.

rliable draws its resamples from numpy's global generator: every function here seeds it (and puts
its previous state back), so a table is the same every time it is written.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlprompt.errors import RLPromptError

REPS = 2000
"""Bootstrap resamples of the intervals (rliable's usual figure for probability of improvement)."""


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its 95% interval."""

    value: float
    low: float
    high: float
    runs_per_task: int = 2
    """The fewest runs a task has (on either side): a stratified bootstrap resamples runs within a
    task, so with one run a task it has nothing to resample and its interval is no interval."""

    def text(self, digits: int = 4) -> str:
        if self.runs_per_task < 2:
            return f"{self.value:.{digits}f} [no interval: 1 run a split]"
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _matrix(scores: Any, what: str) -> np.ndarray:
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 2 or arr.size == 0:
        raise RLPromptError(f"{what}: a runs x tasks matrix of scores is needed, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise RLPromptError(f"{what}: scores must be finite numbers")
    return arr


def _library() -> tuple[Any, Any]:
    try:
        from rliable import library, metrics
    except ImportError as exc:  # pragma: no cover - a dependency of rlprompt
        raise RLPromptError(f"the bench tables need the 'rliable' package (pip install rliable): {exc}") from exc
    return library, metrics


def trimmed_iqm(values: np.ndarray) -> np.ndarray:
    """IQM along axis 0 of ``values`` (points x ...): the mean of the sorted values left after
    cutting ``int(0.25 * n)`` from each end, which is what ``scipy.stats.trim_mean(values, 0.25)``
    and so ``rliable.metrics.aggregate_iqm`` compute (tested equal), without their per-call
    overhead inside the bootstrap loop."""
    n = values.shape[0]
    cut = int(0.25 * n)
    return np.sort(values, axis=0)[cut : n - cut].mean(axis=0)


def iqm(scores: Any, reps: int = REPS, seed: int = 0) -> Estimate:
    """IQM of a runs x tasks matrix (rliable's ``aggregate_iqm``) with its 95% stratified-bootstrap
    interval (rliable's ``get_interval_estimates``)."""
    library, metrics = _library()
    matrix = _matrix(scores, "IQM")
    with _seeded(seed):
        _, interval = library.get_interval_estimates(
            {"x": matrix}, lambda x: np.array([trimmed_iqm(x.ravel())]), reps=reps
        )
    return Estimate(
        float(metrics.aggregate_iqm(matrix)), float(interval["x"][0, 0]), float(interval["x"][1, 0]), matrix.shape[0]
    )


def improvement_statistic(x: np.ndarray, y: np.ndarray) -> float:
    """rliable's average probability of improvement, as a vectorised Mann-Whitney U statistic:
    per task the share of (run of X, run of Y) pairs with X above Y, ties counting half (0.5
    where the two columns are equal), averaged over tasks. Equal to
    ``rliable.metrics.probability_of_improvement`` (tested), which calls
    ``scipy.stats.mannwhitneyu`` per task and costs about a millisecond for each task of each
    resample; this costs microseconds, so a table's intervals take well under a second."""
    above = (x[:, None, :] > y[None, :, :]).mean(axis=(0, 1))
    ties = (x[:, None, :] == y[None, :, :]).mean(axis=(0, 1))
    per_task = above + 0.5 * ties
    if x.shape == y.shape:
        per_task = np.where((x == y).all(axis=0), 0.5, per_task)
    return float(per_task.mean())


def probability_of_improvement(x: Any, y: Any, reps: int = REPS, seed: int = 0) -> Estimate:
    """P(X > Y) over tasks (the columns of both matrices) with its 95% interval (rliable's
    stratified bootstrap of each side's runs, independently, within each task)."""
    library, metrics = _library()
    mx, my = _matrix(x, "probability of improvement"), _matrix(y, "probability of improvement")
    if mx.shape[1] != my.shape[1]:
        raise RLPromptError(f"probability of improvement needs the same tasks: {mx.shape[1]} against {my.shape[1]}")
    with _seeded(seed):
        _, interval = library.get_interval_estimates(
            {"xy": (mx, my)}, lambda a, b: np.array([improvement_statistic(a, b)]), reps=reps
        )
    value = float(metrics.probability_of_improvement(mx, my))
    return Estimate(value, float(interval["xy"][0, 0]), float(interval["xy"][1, 0]), min(mx.shape[0], my.shape[0]))


MIN_RUNS = 6
"""Runs (seeds x splits) a verdict needs on each side. A percentile bootstrap over a handful of
runs cannot be wider than their spread: three runs of three all above a fixed manual prompt give
P = 1.00 [1.00, 1.00], which chance alone gives one time in four (a two-sided sign test:
2 * 0.5**n). From n = 6 that chance is 0.031, below the intervals' 0.05."""


def verdict(poi: Estimate, other: str, runs: int = MIN_RUNS) -> str:
    """Words for a probability of improvement over ``other`` from ``runs`` runs (the smaller side)."""
    if runs < MIN_RUNS:
        return f"too few runs for a verdict on {other} ({runs} < {MIN_RUNS})"
    if poi.low > 0.5:
        return f"better than {other}"
    if poi.high < 0.5:
        return f"worse than {other}"
    return f"no detectable difference from {other}"


def iqm_curve(curves: Any, reps: int = REPS, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IQM over runs x tasks at each point of ``curves`` (runs x tasks x points): (IQM, low, high)."""
    library, _ = _library()
    arr = np.asarray(curves, dtype=np.float64)
    if arr.ndim != 3 or arr.size == 0:
        raise RLPromptError(f"IQM curve: a runs x tasks x points array is needed, got shape {arr.shape}")

    def per_point(scores: np.ndarray) -> np.ndarray:  # aggregate_iqm of each point's runs x tasks scores
        return trimmed_iqm(scores.reshape(-1, scores.shape[-1]))

    with _seeded(seed):
        point, interval = library.get_interval_estimates({"x": arr}, per_point, reps=reps)
    return point["x"], interval["x"][0], interval["x"][1]


def score_distribution(scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """The share of all runs x tasks ``scores`` above each of ``taus``: rliable's default profile
    (``score_distributions``, one numpy call per threshold) in one vectorised call (tested equal)."""
    return (scores.reshape(-1)[:, None] > np.asarray(taus)[None, :]).mean(axis=0)


def performance_profile(
    score_dict: Mapping[str, Any], taus: np.ndarray, reps: int = REPS, seed: int = 0
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per label, the share of its runs x tasks scores above each of ``taus``, and its 95% band
    (2 x len(taus))."""
    library, _ = _library()
    matrices = {label: _matrix(scores, f"performance profile of {label}") for label, scores in score_dict.items()}
    with _seeded(seed):
        profiles, bands = library.create_performance_profile(
            matrices, np.asarray(taus, dtype=np.float64), reps=reps, custom_profile_func=score_distribution
        )
    return profiles, bands
