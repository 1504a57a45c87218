"""Per-input prompts from a policy that observes the input: the env, the agents, runs, reload."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from rlprompt.agents import AGENT_REGISTRY
from rlprompt.config import load_config
from rlprompt.envs import PerInputDemoEnv
from rlprompt.envs.per_input import PerInputDemosEnvConfig
from rlprompt.errors import ConfigError, RLPromptError
from rlprompt.experiment import evaluate_run, load_policy, run_experiment
from rlprompt.export import export_run
from rlprompt.rundir import load_run, run_prompt
from rlprompt.task import Task

sys.path.insert(0, str(Path(__file__).parent))
from test_retrieval import class_encoder, same_class_task  # noqa: E402


def _train(agent_name: str, task, encoder, k: int = 1, evals: int = 800, seed: int = 0):
    env = PerInputDemoEnv(task=task, k=k, sentence_encoder=encoder)
    spec = AGENT_REGISTRY[agent_name]
    agent = spec.agent_class(env, spec.config_class(seed=seed))
    agent.learn(total_prompt_evals=evals)
    return agent, env


def _best_fixed(task, k: int = 1) -> float:
    pool = task.demo_pool()
    blocks = (
        [[a] for a in range(len(pool))]
        if k == 1
        else [[a, b] for a in range(len(pool)) for b in range(len(pool)) if a != b]
    )
    return max(task.evaluate(pool.render(ids), "test")["accuracy"] for ids in blocks)


@pytest.mark.parametrize("agent_name, seed", [("ppo", 0), ("ppo", 1), ("reinforce", 0), ("a2c", 0), ("dqn", 0)])
def test_an_input_conditioned_policy_beats_every_fixed_prompt(agent_name, seed):
    """The toy task answers an input well when its demonstration shares the input's class, and
    the observed embedding carries the class: no fixed demonstration serves both classes (best
    0.5), a policy that reads the input learns the right one for each in seconds."""
    task = same_class_task(k=1)
    agent, env = _train(agent_name, task, class_encoder(task), seed=seed)
    prompts = env.prompts_for(task.inputs("test"), agent.chooser())
    metrics = task.evaluate_per_input(prompts, "test")
    best_fixed = _best_fixed(task)
    assert metrics["accuracy"] >= 0.95 and metrics["accuracy"] >= best_fixed + 0.4


def test_a_per_input_prompt_never_shows_its_input():
    task = same_class_task(k=1)
    env = PerInputDemoEnv(task=task, k=2, sentence_encoder=class_encoder(task))
    train = task.inputs("train")
    own = {i: [j for j, text in enumerate(env.pool.texts) if train[i] in text] for i in range(len(train))}
    env.reset(seed=0, options={"input": 3})
    assert not env.action_masks()[own[3]].any()

    def greedy_for_itself(obs, mask):  # always tries the input's own pool entry first
        query = obs[: env.dim]
        i = int(np.argmax(env._embeddings @ query))
        return own[i][0] if mask[own[i][0]] else int(np.flatnonzero(mask)[0])

    for i, block in enumerate(env.prompts_for(train, greedy_for_itself)):
        assert train[i] not in block
    obs, _ = env.reset(seed=0, options={"input": 3})  # prompts_for left the episode as it was
    assert obs.shape == env.observation_space.shape and env.observation_space.contains(obs)


def test_bad_per_input_settings_are_one_clear_error():
    task = same_class_task(k=1)
    with pytest.raises(ConfigError, match="encode"):
        PerInputDemoEnv(task=task, k=1, sentence_encoder=object())
    env = PerInputDemoEnv(task=task, k=1, sentence_encoder=class_encoder(task))
    with pytest.raises(ConfigError, match="reset option input"):
        env.reset(options={"input": len(task.inputs("train"))})
    with pytest.raises(ConfigError, match="cannot get k=32 demonstrations"):
        PerInputDemoEnv(task=task, k=32, sentence_encoder=class_encoder(task))
    with pytest.raises(ConfigError, match="runs on"):
        load_config(
            None,
            [
                "template={demos}{sentence} {prompt}",
                "demos.template={sentence} {label_word} ",
                "env.kind=demos_per_input",
                "agent.name=random_search",
            ],
        )


def test_a_per_input_run_reports_reproduces_reloads_and_exports(tmp_path, monkeypatch):
    task = same_class_task(k=1)
    encoder = class_encoder(task)
    import rlprompt.task_models.embedding as embedding

    monkeypatch.setattr(embedding, "SentenceEncoder", lambda *args, **kwargs: encoder)
    config = dataclasses.replace(
        task.config, env=PerInputDemosEnvConfig(k=1), agent=AGENT_REGISTRY["ppo"].config_class(seed=0)
    )
    config.budget.prompt_evals = 800
    task.config = config
    run = tmp_path / "run"
    result = run_experiment(config, run, progress=False, task=task)
    assert result.per_input == {
        "checkpoint": "checkpoint.safetensors",
        "env": "demos_per_input",
        "k": 1,
        "encoder": "embedded:minilm",
    }
    assert result.metrics["test"]["accuracy"] >= 0.95 > result.baseline["metrics"]["test"]["accuracy"]
    assert result.prompt.startswith("<per input: a ppo policy")
    outcomes = json.loads((run / "outcomes.json").read_text())
    assert len(outcomes["found"]["test"]["keys"]) == len(task.data.test)
    # the policy reloads and gives any input its prompt: a demonstration of the input's class
    _, best = load_run(run)
    policy = load_policy(run, task)
    pool = task.demo_pool()
    for text, label in zip(task.data.test.texts[:8], task.data.test.labels[:8], strict=True):
        ids = pool.parse(policy.prompt(text))
        assert ids is not None and len(ids) == 1 and pool.labels[ids[0]] == label
    # eval --run rebuilds the task from the run's config: here, the toy task (built in memory)
    monkeypatch.setattr(Task, "from_config", classmethod(lambda cls, *args, **kwargs: task))
    again = evaluate_run(run, "test")
    assert again["reproduces"], again
    exported = json.loads(export_run(run, "json", tmp_path / "policy.json").read_text())
    assert exported["per_input"]["checkpoint"] == "checkpoint.safetensors"
    with pytest.raises(RLPromptError, match="per-input policy"):
        export_run(run, "txt", tmp_path / "policy.txt")
    with pytest.raises(RLPromptError, match="per-input policy"):
        run_prompt(run, best)
