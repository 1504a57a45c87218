"""White-box baseline: soft prompt tuning by gradient descent, with PEFT's prompt embedding.

The trainable prompt is a ``peft`` ``PromptEmbedding`` built from a ``PromptTuningConfig``
(initialised from the soft env's start prompt, so the PEFT layout and export match), trained
by Adam on the cross-entropy of the gold class through the task model's differentiable
soft-prompt path. Each gradient step on a minibatch counts as one prompt evaluation, so it
is budgeted like the black-box agents it is compared with.
"""

from __future__ import annotations

import numpy as np
import torch
from peft import PromptTuningConfig, PromptTuningInit, TaskType
from peft.tuners.prompt_tuning.model import PromptEmbedding

from rlprompt.agents.base import Agent
from rlprompt.agents.prompt_tuning_config import PromptTuningAgentConfig
from rlprompt.envs.base import SoftSubspace


class PromptTuning(Agent):
    config_class = PromptTuningAgentConfig
    requires = (SoftSubspace,)

    def _setup(self) -> None:
        env = self.env
        self.peft_config = PromptTuningConfig(
            task_type=TaskType.FEATURE_EXTRACTION,
            num_virtual_tokens=env.n_tokens,
            token_dim=self.task.task_model.hidden_size,
            num_transformer_submodules=1,
            num_attention_heads=1,
            num_layers=1,
            prompt_tuning_init=PromptTuningInit.RANDOM,
        )
        self.prompt = PromptEmbedding(self.peft_config, None)
        with torch.no_grad():
            self.prompt.embedding.weight.copy_(env.base_prompt)
        self.optimizer = torch.optim.Adam(
            self.prompt.parameters(), lr=self.config.learning_rate, weight_decay=self.config.weight_decay
        )

    def _soft_prompt(self) -> torch.Tensor:
        return self.prompt(torch.arange(self.env.n_tokens)[None])[0]

    def _learn_step(self) -> dict[str, float]:
        data = self.task.data.split(self.env.split)
        size = min(self.config.batch_size, len(data))
        indices = np.sort(self.rng.choice(len(data), size=size, replace=False))
        soft = self._soft_prompt()
        scored = soft.detach().clone()
        if self._budget is not None:  # one gradient step = one step of a single-step env
            self._budget.charge("steps", 1)
        self.env_steps += 1
        if self.task.budget is not None:
            self.task.budget.check("prompt_evals", 1)
        logits = self.task.calibrate(self.task.task_model.score_soft_with_grad(soft, [data.texts[i] for i in indices]))
        labels = torch.tensor([data.labels[i] for i in indices], device=logits.device)
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.task.charge_prompt_evals(1)
        # the prompt that was scored (before this step) and its configured task reward
        self.tracker.add(scored, float(self.task._reward_of(logits.detach(), labels)))
        return {"loss": float(loss.detach())}

    def predict(self, deterministic: bool = True) -> torch.Tensor:
        return self._soft_prompt().detach().clone()

    def _state(self) -> dict:
        return {"prompt": self.prompt.state_dict(), "optimizer": self.optimizer.state_dict()}

    def _load_state(self, state: dict) -> None:
        self.prompt.load_state_dict(state["prompt"])
        self.optimizer.load_state_dict(state["optimizer"])
