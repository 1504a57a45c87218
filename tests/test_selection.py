"""How a run picks the prompt it reports: paired ranking of the prompts training scored (their gain
over the manual prompt on the same minibatches), pooled re-scoring on whole splits, checkpoints."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from rlprompt.agents.base import Agent, pool_split_metrics
from rlprompt.envs import ScoreRequest, TokenPromptEnv, score_requests
from rlprompt.testing.toy import make_toy_task
from rlprompt.tracker import PromptTracker


def test_paired_ranking_finds_the_best_prompt_where_minibatch_luck_misleads_the_raw_mean():
    """Prompts of true quality q scored once each on minibatches whose difficulty d varies far
    more than q does (reward q + d, gain over the manual prompt on the same minibatch q - q0): the
    raw mean ranks by luck, the gain by quality."""
    rng = np.random.default_rng(0)
    quality = np.linspace(-0.05, 0.05, 40)
    paired, raw = PromptTracker(top_k=5), PromptTracker(top_k=5)
    for i, q in enumerate(quality):
        difficulty = rng.normal(0.0, 0.12)
        noise = rng.normal(0.0, 0.0002)  # what is left of a paired difference: far below the spacing of q
        paired.add(f"p{i}", q + difficulty + noise, gain=q + noise)
        raw.add(f"p{i}", q + difficulty + noise)
    best = f"p{len(quality) - 1}"
    assert paired.top(1)[0].prompt == best
    assert raw.top(1)[0].prompt != best
    assert {r.prompt for r in paired.top(5)} == {f"p{i}" for i in range(35, 40)}
    assert paired.top(1)[0].mean_reward == raw.records[best].mean_reward  # rewards are kept as they were


def test_pruning_keeps_the_best_by_gain():
    tracker = PromptTracker(top_k=1)  # prunes to 10 records beyond 50
    for i in range(51):
        tracker.add(f"p{i}", reward=-float(i), gain=float(i))  # the worst reward has the best gain
    assert len(tracker.records) == 10 and tracker.top(1)[0].prompt == "p50"


def test_gains_are_rewards_minus_the_manual_prompt_on_the_same_examples_and_cost_no_evaluation():
    task = make_toy_task(seed=3)
    task.config.selection = dataclasses.replace(task.config.selection, paired=True)
    manual = task.config.prompt
    vocabulary = task.task_model.vocabulary
    prompts = [" ".join(vocabulary[5:10]), manual, " ".join([vocabulary[7]] * 5)]
    indices = [np.array([0, 1, 2, 3]), np.array([4, 5, 6, 7]), np.array([1, 9, 17, 25])]
    results = score_requests([ScoreRequest(task, p, idx) for p, idx in zip(prompts, indices, strict=True)])
    assert task.prompt_evals == 3  # the manual prompt's reference scorings are not evaluations
    for prompt, idx, result in zip(prompts, indices, results, strict=True):
        expected = float(task.reward([prompt], idx)[0] - task.reward([manual], idx)[0])
        assert result.gain == pytest.approx(expected, abs=1e-6)
    assert results[1].gain == pytest.approx(0.0, abs=1e-7)  # the manual prompt gains nothing over itself

    plain = make_toy_task(seed=3)  # paired ranking is off by default
    assert all(r.gain is None for r in score_requests([ScoreRequest(plain, prompts[0], indices[0])]))


def test_tracked_gains_survive_a_checkpoint(tmp_path):
    task = make_toy_task(seed=1)
    task.config.selection = dataclasses.replace(task.config.selection, paired=True)
    env = TokenPromptEnv(task=task, prompt_length=5, batch_size=4)
    from rlprompt.agents import AGENT_REGISTRY

    spec = AGENT_REGISTRY["random_search"]
    agent = spec.agent_class(env, spec.config_class(seed=0))
    agent.learn(total_prompt_evals=32)
    assert all(r.gain_count == r.count > 0 for r in agent.tracker.records.values())
    agent.save(tmp_path / "agent.safetensors")
    loaded = Agent.load(tmp_path / "agent.safetensors", TokenPromptEnv(task=task, prompt_length=5, batch_size=4))
    assert [(r.prompt, r.mean_gain) for r in loaded.tracker.top(5)] == [
        (r.prompt, r.mean_gain) for r in agent.tracker.top(5)
    ]
    assert loaded.predict() == agent.predict()


def test_pooled_metrics_are_example_weighted_means():
    train = {"accuracy": 1.0, "reward": -0.2, "n": 30, "predicted_counts": [10, 20], "outputs": ["a"]}
    dev = {"accuracy": 0.0, "reward": -0.8, "n": 10, "predicted_counts": [5, 5], "outputs": ["b"]}
    pooled = pool_split_metrics([train, dev])
    assert pooled == {"n": 40, "accuracy": pytest.approx(0.75), "reward": pytest.approx(-0.35)}
    assert pool_split_metrics([dev]) == dev
