"""The prompt tracker: mean train reward of every prompt an agent scored (text or soft), top k kept."""

from __future__ import annotations

from dataclasses import dataclass, field

from rlprompt.checkpoint import checkpoint_type
from rlprompt.task_models.base import Prompt, prompt_key


@checkpoint_type
@dataclass
class PromptRecord:
    prompt: Prompt
    total_reward: float = 0.0
    count: int = 0

    @property
    def mean_reward(self) -> float:
        return self.total_reward / max(self.count, 1)


@dataclass
class PromptTracker:
    """Mean train reward of every prompt scored (over repeated minibatches); keeps the top k."""

    top_k: int = 10
    records: dict[str, PromptRecord] = field(default_factory=dict)
    evaluations: int = 0

    def add(self, prompt: Prompt, reward: float) -> None:
        key = prompt_key(prompt)
        record = self.records.get(key)
        if record is None:
            stored = prompt if isinstance(prompt, str) else prompt.detach().float().cpu().clone()
            record = self.records[key] = PromptRecord(stored)
        record.total_reward += float(reward)
        record.count += 1
        self.evaluations += 1
        if len(self.records) > 50 * self.top_k:
            self._prune()

    def _prune(self) -> None:
        keep = sorted(self.records.items(), key=lambda kv: kv[1].mean_reward, reverse=True)[: 10 * self.top_k]
        self.records = dict(keep)

    def top(self, k: int | None = None) -> list[PromptRecord]:
        return sorted(self.records.values(), key=lambda r: r.mean_reward, reverse=True)[: k or self.top_k]

    def best(self) -> PromptRecord | None:
        top = self.top(1)
        return top[0] if top else None
