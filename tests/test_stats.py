"""Paired bootstrap intervals and permutation tests (rlprompt.stats)."""

from __future__ import annotations

import numpy as np
import pytest

from rlprompt.errors import RLPromptError
from rlprompt.stats import compare_paired, paired_bootstrap, paired_permutation_test


def test_a_prompt_compared_with_itself_differs_by_exactly_zero():
    scores = np.random.default_rng(0).integers(0, 2, size=300)
    result = compare_paired(scores, scores)
    assert result.diff == 0.0 and (result.ci_low, result.ci_high) == (0.0, 0.0)
    assert result.p_value == 1.0
    assert not result.detectable and "no detectable difference" in result.verdict()


def test_a_known_set_of_differing_examples_gives_the_known_difference():
    a = np.ones(200)
    b = a.copy()
    b[:30] = 0  # A right, B wrong on 30 of 200
    b[150:] = 1
    a[190:] = 0  # B right, A wrong on 10
    result = compare_paired(a, b)
    assert result.diff == pytest.approx(20 / 200)
    assert result.a == pytest.approx(190 / 200) and result.b == pytest.approx(170 / 200)
    assert 0.0 < result.ci_low < 0.1 < result.ci_high
    # the sign-flip null: 40 discordant pairs, 30 vs 10 - an exact two-sided binomial p of 0.0022
    assert 0.0005 < result.p_value < 0.006
    assert result.detectable and result.verdict().startswith("A is better")
    assert compare_paired(b, a).verdict().startswith("B is better")


def test_seeded_and_the_same_on_a_second_call():
    rng = np.random.default_rng(1)
    a, b = rng.random(500), rng.random(500)
    assert paired_bootstrap(a, b, seed=3) == paired_bootstrap(a, b, seed=3)
    assert paired_permutation_test(a, b, seed=3) == paired_permutation_test(a, b, seed=3)
    assert paired_bootstrap(a, b, seed=3) != paired_bootstrap(a, b, seed=4)


def test_p_value_is_never_zero_and_small_for_a_large_difference():
    a, b = np.ones(400), np.zeros(400)
    assert paired_permutation_test(a, b, resamples=999) == pytest.approx(1 / 1000)


def test_interval_coverage_on_simulated_paired_data_is_near_95_percent():
    """200 simulated test sets of 60 paired scores whose true mean difference is 0.1 (scores in
    [0, 1] as F1 values are; differences normal with sd 0.3). A 95% interval's hit count over
    200 draws is Binomial(200, c): its sd at c = 0.95 is 3.1 hits, and the percentile bootstrap
    of a mean at n = 60 is known to cover slightly less than nominal (about 0.94). The band
    [0.90, 0.99] is c = 0.95 +- 3 sd, widened below by that known bias; a broken interval
    (a standard deviation used as standard error, no pairing, a one-sided quantile) leaves it."""
    rng = np.random.default_rng(2026)
    hits = 0
    for sim in range(200):
        base = rng.random(60)
        b = base
        a = base + 0.1 + rng.normal(0, 0.3, size=60)
        low, high = paired_bootstrap(a, b, resamples=2000, seed=sim)
        hits += low <= 0.1 <= high
    assert 0.90 <= hits / 200 <= 0.99, hits


@pytest.mark.parametrize(
    "a, b, message",
    [
        ([1, 0], [1, 0, 1], "need the same examples: 2 scores against 3"),
        ([], [], "empty"),
        ([1.0, float("nan")], [1.0, 0.0], "non-finite"),
        ([[1, 0]], [[1, 0]], "1-D"),
    ],
)
def test_bad_paired_scores_are_one_clear_error(a, b, message):
    with pytest.raises(RLPromptError, match=message):
        compare_paired(a, b)
