"""What adding each kind of extension costs, done once here: a reward, an agent and a task family,
each written in this file (as a user's own package would), registered with one call and run end
to end through ``rlprompt run`` on the toy LM. ARCHITECTURE.md's cost table counts these.

A new env kind or task-model kind is checked the same way by the env registry's ``check_env``
test and the task-model contract (``tests/test_task_model_contract.py``) once registered."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from rlprompt.agents.base import Agent
from rlprompt.agents.config import AgentConfig, register_agent
from rlprompt.experiment import run_experiment
from rlprompt.families.classification import ClassificationFamily
from rlprompt.registry import AGENTS, REWARDS, TASKS
from rlprompt.testing.toy_lm import toy_lm_config

# ------------------------------------------------------------------ a reward: one function


def margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean margin of the gold class over the other one (two classes): ``[..., n, C] -> [...]``."""
    gold = logits.gather(-1, labels.to(logits.device).expand(logits.shape[:-1]).unsqueeze(-1)).squeeze(-1)
    return (2 * gold - logits.sum(-1)).mean(-1)


# ------------------------------------------------------------------ an agent: a config and a class


@dataclass
class FirstChoiceConfig(AgentConfig):
    n_envs: int = 4
    """Prompts scored per iteration."""


def define_first_choice() -> type[Agent]:
    """The agent class, defined once its config is registered (an ``Agent`` subclass reads its name
    and env kinds from the registration when it is created, as a module of agents/ does on import)."""

    class FirstChoice(Agent):
        """Always the first legal action: a deterministic agent that needs no learning."""

        config_class = FirstChoiceConfig

        def _learn_step(self) -> dict[str, float]:
            rewards = []
            for _ in range(self.env.episode_length):
                actions = np.stack([int(np.flatnonzero(env.action_masks())[0]) for env in self.vec_env.envs])
                _, reward, terminated, truncated, _ = self.step_envs(actions)
                rewards.append(reward)
                if np.all(terminated | truncated):
                    break
            return {"mean_step_reward": float(np.mean(rewards))}

        def predict(self, deterministic: bool = True):
            best = self.tracker.best()
            return best.prompt if best is not None else self.env.default_prompt()

    return FirstChoice


FirstChoice: type[Agent] | None = None
"""Set by the fixture: what the registration's entry point ``test_extensions:FirstChoice`` names."""


# ------------------------------------------------------------------ a task family: a subclass


class PolarityFamily(ClassificationFamily):
    """Classification whose verbalizers default to ' negative' / ' positive' and whose tables lead with macro-F1."""

    name = "polarity"

    def check_config(self, config) -> None:
        if config.verbalizers is None:
            config.verbalizers = [" negative", " positive"]
        super().check_config(config)

    def metric_names(self, config) -> list[str]:
        return ["macro_f1", "accuracy", "gold_log_prob"]


@pytest.fixture
def registered():
    REWARDS.register("margin", margin)
    register_agent("first_choice", agent="test_extensions:FirstChoice", env_kinds=("edit",))(FirstChoiceConfig)
    global FirstChoice
    FirstChoice = define_first_choice()
    TASKS.register("polarity", PolarityFamily())
    yield
    REWARDS.unregister("margin")
    AGENTS.unregister("first_choice")
    del FirstChoiceConfig.agent_spec  # type: ignore[attr-defined]
    TASKS.unregister("polarity")


def test_a_new_reward_agent_and_family_run_end_to_end(registered, tmp_path):
    config = toy_lm_config(
        [
            "task=polarity",
            "verbalizers=null",
            "reward.name=margin",
            "agent.name=first_choice",
            "env.kind=edit",
            "env.batch_size=4",
            "budget.prompt_evals=12",
        ]
    )
    assert config.verbalizers == [" negative", " positive"]  # the family's default
    result = run_experiment(config, tmp_path / "run", progress=False)
    assert result.task == "polarity" and result.agent == "first_choice" and result.reward == "margin"
    assert result.primary_metric == "macro_f1" and result.prompt_evals <= 12
    # the reward is the new function's value: the manual prompt's train reward recomputed by hand
    from rlprompt.task import Task

    task = Task.from_config(config)
    by_hand = margin(task.logits([config.prompt], "train"), task.labels("train"))
    assert float(task.reward([config.prompt])[0]) == pytest.approx(float(by_hand[0]), abs=1e-5)


def test_registrations_are_gone_afterwards():
    assert "margin" not in REWARDS and "first_choice" not in AGENTS and "polarity" not in TASKS
