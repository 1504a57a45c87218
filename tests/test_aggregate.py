"""rlprompt.aggregate (IQM, probability of improvement, profiles through rliable) and the bench
table's statistics columns, checked against rliable's own estimators and by hand."""

from __future__ import annotations

import numpy as np
import pytest
from rliable import library, metrics

from rlprompt import aggregate as ag
from rlprompt.errors import RLPromptError
from rlprompt.reporting import bench_table


@pytest.mark.parametrize("shape", [(1, 1), (3, 1), (3, 3), (5, 2), (10, 4)])
def test_the_fast_estimators_equal_rliables(shape):
    rng = np.random.default_rng(sum(shape))
    for _ in range(20):
        x = rng.integers(0, 5, size=shape) / 4  # many ties
        y = rng.integers(0, 5, size=(shape[0] + 1, shape[1])) / 4
        assert ag.trimmed_iqm(x.ravel()) == pytest.approx(metrics.aggregate_iqm(x))
        assert ag.improvement_statistic(x, y) == pytest.approx(metrics.probability_of_improvement(x, y))
        assert ag.improvement_statistic(x, x) == pytest.approx(metrics.probability_of_improvement(x, x)) == 0.5
        z = x.copy()
        z[:, 0] = y[: shape[0], 0]
        assert ag.improvement_statistic(x, z) == pytest.approx(metrics.probability_of_improvement(x, z))
        taus = np.linspace(-0.1, 1.1, 13)
        assert np.allclose(ag.score_distribution(x, taus), library.score_distributions(x, taus))
    curves = rng.normal(size=(4, 3, 7))
    mid, low, high = ag.iqm_curve(curves, reps=200)
    assert np.allclose(mid, [metrics.aggregate_iqm(curves[..., t]) for t in range(7)])
    assert (low <= mid + 1e-12).all() and (mid <= high + 1e-12).all()


def test_intervals_are_seeded_and_leave_numpys_generator_alone():
    x = np.array([[0.80, 0.82], [0.83, 0.81], [0.86, 0.79], [0.84, 0.85]])
    np.random.seed(5)
    expected_next = np.random.rand()
    np.random.seed(5)
    first = ag.iqm(x, reps=300)
    assert np.random.rand() == expected_next  # the global generator is where it was
    assert ag.iqm(x, reps=300) == first
    assert first.low <= first.value <= first.high and first.value == pytest.approx(metrics.aggregate_iqm(x))
    poi = ag.probability_of_improvement(x, np.full((1, 2), 0.815), reps=300)
    assert poi.value == pytest.approx((3 / 4 + 2 / 4) / 2) and poi.low <= poi.value <= poi.high
    with pytest.raises(RLPromptError, match="same tasks"):
        ag.probability_of_improvement(x, np.ones((2, 3)))
    with pytest.raises(RLPromptError, match="must be finite"):
        ag.iqm(np.array([[np.nan]]))


def test_one_run_a_split_gives_no_interval():
    """A stratified bootstrap resamples runs within each split: with one run a split there is
    nothing to resample, and the table says so instead of printing a zero-width interval."""
    one = np.array([[0.84, 0.86, 0.86]])  # 1 run x 3 splits
    estimate = ag.iqm(one, reps=200)
    assert estimate.runs_per_task == 1 and estimate.text() == f"{estimate.value:.4f} [no interval: 1 run a split]"
    assert (
        ag.probability_of_improvement(one, np.array([[0.84, 0.84, 0.84]]), reps=200)
        .text(2)
        .endswith("[no interval: 1 run a split]")
    )
    two = ag.iqm(np.array([[0.84, 0.86, 0.86], [0.85, 0.80, 0.87]]), reps=200)
    assert two.runs_per_task == 2 and "no interval" not in two.text() and two.low < two.high


def test_verdicts():
    assert ag.verdict(ag.Estimate(0.9, 0.6, 1.0), "manual", 9) == "better than manual"
    assert ag.verdict(ag.Estimate(0.1, 0.0, 0.4), "random search", 6) == "worse than random search"
    assert ag.verdict(ag.Estimate(0.6, 0.4, 0.8), "manual", 9) == "no detectable difference from manual"
    assert ag.verdict(ag.Estimate(1.0, 1.0, 1.0), "manual", 3) == "too few runs for a verdict on manual (3 < 6)"
    assert 2 * 0.5**ag.MIN_RUNS < 0.05 <= 2 * 0.5 ** (ag.MIN_RUNS - 1)  # the sign test behind MIN_RUNS


def _rows(values: dict[str, dict[str, list[float]]], manual: dict[str, float]) -> list[dict]:
    rows = []
    for agent, by_split in values.items():
        for split, scores in by_split.items():
            for seed, score in enumerate(scores, start=1):
                rows.append(
                    {
                        "task": "t",
                        "model": None,
                        "split": split,
                        "agent": agent,
                        "budget": 10,
                        "seed": seed,
                        "agent_name": agent,
                        "env": "edit",
                        "test_accuracy": score,
                        "dev_accuracy": 0.5,
                        "manual_test_accuracy": manual[split],
                        "manual_dev_accuracy": 0.4,
                        "lm_calls": 7,
                    }
                )
    return rows


def test_bench_table_columns_by_hand():
    # 2 splits x 3 seeds = 6 runs per agent, values in quarters (exact in binary)
    values = {
        "good": {"a": [0.75, 0.75, 1.0], "b": [0.5, 0.75, 0.75]},
        "random_search": {"a": [0.5, 0.5, 0.75], "b": [0.25, 0.5, 0.5]},
        "bad": {"a": [0.25, 0.25, 0.5], "b": [0.0, 0.25, 0.25]},
    }
    table = bench_table(_rows(values, {"a": 0.5, "b": 0.5}), reps=500)
    lines = {
        line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in table.splitlines() if line.startswith("| ")
    }
    good, rs, bad, manual = lines["good"], lines["random_search"], lines["bad"], lines["manual prompt"]
    assert "data splits ['a', 'b'] (tasks) x seeds [1, 2, 3] (runs)" in table
    assert good[3] == "6" and good[4].startswith("0.7500 ±")  # mean of the six runs
    # IQM of [0.5, 0.75, 0.75, 0.75, 0.75, 1.0]: cut int(1.5) = 1 from each end -> 0.75
    assert good[5].startswith("0.7500 [")
    # P(good > manual 0.5): split a 3/3, split b (0.5 ties: half) 2.5/3 -> (1 + 5/6) / 2
    assert good[6].startswith(f"{(1 + 5 / 6) / 2:.2f} [")
    # P(good > random search): split a: pairs above 7, ties 2 -> (7 + 1)/9; split b: above 7, ties 2 -> 8/9
    assert good[7].startswith(f"{8 / 9:.2f} [")
    assert "better than manual" in good[8] and "better than random search" in good[8]
    # bad: every run at or below the manual 0.5: P = (0.5 * 1/3 + 0) / 2
    assert bad[6].startswith(f"{(1 / 6) / 2:.2f} [") and "worse than manual" in bad[8]
    assert "worse than random search" in bad[8]
    assert rs[7] == "-" and manual[5].startswith("0.5000 [0.5000, 0.5000]")
    assert [line.split(" | ")[0] for line in table.splitlines() if line.startswith("| ") and "---" not in line][2:] == [
        "| good",
        "| random_search",
        "| bad",
    ]  # ordered by mean
    # an agent not finished on every split shows no statistics; a single split still works
    partial = [r for r in _rows(values, {"a": 0.5, "b": 0.5}) if not (r["agent"] == "bad" and r["split"] == "b")]
    assert "| bad | edit | 10 | 0 | - |" in bench_table(partial, reps=300)
    single = [{**r, "split": None} for r in _rows({"good": {"a": values["good"]["a"]}}, {"a": 0.5})]
    text = bench_table(single, reps=300)
    assert "seeds [1, 2, 3] (runs; one task" in text and "too few runs for a verdict on manual (3 < 6)" in text


def test_bench_cells_over_models_and_splits_load_each_model_once(tmp_path):
    import yaml

    from rlprompt.bench import cells_of, load_bench

    path = tmp_path / "bench.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "base": None,
                "agents": {"sql": None},
                "tasks": {"sst2": ["template={sentence} {prompt}"]},
                "seeds": [1, 2],
                "data_dirs": ["d/16-13", "d/16-21/"],
                "budgets": [10],
                "task_models": {"small": None, "big": ["task_model.name_or_path=embedded:gemma3-270m"]},
            },
            sort_keys=False,
        )
    )
    bench, _ = load_bench(path)
    cells = cells_of(bench)
    assert len(cells) == 2 * 2 * 2 * 2  # models x agents (sql, random search) x splits x seeds
    assert (
        cells[0].key == "sst2/small/sql/b10/16-13/seed1" and cells[-1].key == "sst2/big/random_search/b10/16-21/seed2"
    )
    models = [c.model for c in cells]
    assert models == sorted(models, key=["small", "big"].index)  # model by model: each loads once
    big = next(c for c in cells if c.model == "big" and c.split == "16-21")
    assert "task_model.name_or_path=embedded:gemma3-270m" in big.overrides and "data.dir=d/16-21/" in big.overrides
    assert big.overrides[-2:] == ["seed=1", "budget.prompt_evals=10"]
