"""Paired comparisons of two prompts scored on the same examples.

Two prompts evaluated on the same test examples give paired per-example scores ``a_i`` and
``b_i`` (1/0 for a correct classification, an F1 or ROUGE value for generation). Their mean
difference is ``mean(a - b)``; whether it is real is judged on the per-example differences
``d_i = a_i - b_i`` (Dror et al., ACL 2018; Koehn 2004):

* :func:`paired_bootstrap` - resample the examples with replacement (the pairs stay together)
  and take the 2.5th and 97.5th percentiles of the resampled mean differences: a 95% interval;
* :func:`paired_permutation_test` - under "no difference" each pair's two scores are
  exchangeable, so the sign of each ``d_i`` is a coin flip: the p-value is the share of random
  sign flips whose mean difference is at least as far from 0 as the observed one (two-sided,
  with the observed assignment counted, so it is never 0).

Both are seeded (the same numbers on every machine) and vectorised in chunks of resamples,
so 10,000 resamples of 2,000 examples take well under a second in bounded memory.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from rlprompt.errors import RLPromptError

RESAMPLES = 10_000
"""Bootstrap resamples and random sign flips of :func:`compare_paired` (the field's usual 10,000)."""
_CHUNK_CELLS = 4_000_000
"""Resampled values held at once (resamples x examples): about 32 MB of indices."""


def _differences(a: Any, b: Any) -> np.ndarray:
    a_arr = np.asarray(a, dtype=np.float64)
    b_arr = np.asarray(b, dtype=np.float64)
    if a_arr.ndim != 1 or b_arr.ndim != 1:
        raise RLPromptError(f"paired scores must be two 1-D sequences, got shapes {a_arr.shape} and {b_arr.shape}")
    if a_arr.shape != b_arr.shape:
        raise RLPromptError(f"paired scores need the same examples: {a_arr.size} scores against {b_arr.size}")
    if a_arr.size == 0:
        raise RLPromptError("paired scores are empty: there is nothing to compare")
    if not (np.isfinite(a_arr).all() and np.isfinite(b_arr).all()):
        raise RLPromptError("paired scores hold a non-finite value (NaN or infinity)")
    return a_arr - b_arr


def _chunks(total: int, n: int) -> list[int]:
    size = max(1, _CHUNK_CELLS // max(n, 1))
    return [min(size, total - start) for start in range(0, total, size)]


def bootstrap_means(d: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Means of ``resamples`` bootstrap resamples of ``d`` (seeded)."""
    rng = np.random.default_rng(seed)
    n = d.size
    out = [d[rng.integers(0, n, size=(size, n))].mean(axis=1) for size in _chunks(resamples, n)]
    return np.concatenate(out)


def paired_bootstrap(
    a: Any, b: Any, resamples: int = RESAMPLES, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float]:
    """The percentile bootstrap interval of ``mean(a - b)`` at ``confidence``."""
    if not 0.0 < confidence < 1.0:
        raise RLPromptError(f"confidence must lie in (0, 1), got {confidence}")
    if resamples < 1:
        raise RLPromptError(f"resamples must be >= 1, got {resamples}")
    means = bootstrap_means(_differences(a, b), resamples, seed)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def paired_permutation_test(a: Any, b: Any, resamples: int = RESAMPLES, seed: int = 0) -> float:
    """Two-sided p-value of "the two prompts score the same" by random sign flips of ``a - b``."""
    if resamples < 1:
        raise RLPromptError(f"resamples must be >= 1, got {resamples}")
    d = _differences(a, b)
    observed = abs(d.mean())
    if observed == 0.0 and not d.any():
        return 1.0
    rng = np.random.default_rng(seed)
    tolerance = 1e-12 * max(1.0, float(np.abs(d).max()))
    extreme = 0
    for size in _chunks(resamples, d.size):
        signs = rng.integers(0, 2, size=(size, d.size), dtype=np.int8) * 2 - 1
        extreme += int((np.abs((signs * d).mean(axis=1)) >= observed - tolerance).sum())
    return (extreme + 1) / (resamples + 1)


@dataclass
class PairedComparison:
    """The paired difference of a metric between two prompts on the same ``n`` examples."""

    metric: str
    a: float
    """Mean of A's per-example scores."""
    b: float
    diff: float
    """``a - b``."""
    ci_low: float
    ci_high: float
    """The paired bootstrap interval of ``diff`` (95% by default)."""
    p_value: float
    """The paired permutation test's two-sided p-value."""
    n: int
    resamples: int
    confidence: float = 0.95

    @property
    def detectable(self) -> bool:
        """The interval excludes 0 (a difference detectable at the interval's level)."""
        return self.ci_low > 0.0 or self.ci_high < 0.0

    def verdict(self) -> str:
        """The comparison in words."""
        level = f"{self.confidence:.0%}"
        if not self.detectable:
            return f"no detectable difference at {level} (the interval contains 0)"
        better = "A is better" if self.diff > 0 else "B is better"
        return f"{better}: the difference is detectable at {level} (the interval excludes 0)"

    def as_dict(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in asdict(self).items()
            if k in ("metric", "a", "b", "diff", "ci_low", "ci_high", "p_value", "n")
        }


def compare_paired(
    a: Any, b: Any, metric: str = "accuracy", resamples: int = RESAMPLES, seed: int = 0, confidence: float = 0.95
) -> PairedComparison:
    """Bootstrap interval and permutation p-value of the paired difference ``mean(a - b)``."""
    d = _differences(a, b)
    low, high = paired_bootstrap(a, b, resamples, seed, confidence)
    p = paired_permutation_test(a, b, resamples, seed + 1)
    a_mean = float(np.mean(np.asarray(a, dtype=np.float64)))
    b_mean = float(np.mean(np.asarray(b, dtype=np.float64)))
    return PairedComparison(metric, a_mean, b_mean, float(d.mean()), low, high, p, int(d.size), resamples, confidence)
