"""The prompt tracker: mean train reward of every prompt an agent scored (text or soft), top k kept."""

from __future__ import annotations

from dataclasses import dataclass, field

from rlprompt.checkpoint import checkpoint_type
from rlprompt.task_models.base import Prompt, prompt_key
from rlprompt.template import LabeledPrompt


@checkpoint_type
@dataclass
class PromptRecord:
    prompt: Prompt
    total_reward: float = 0.0
    count: int = 0
    total_gain: float = 0.0
    """Sum of (reward - the manual prompt's reward on the same examples) over the scorings that had one."""
    gain_count: int = 0

    @property
    def mean_reward(self) -> float:
        return self.total_reward / max(self.count, 1)

    @property
    def mean_gain(self) -> float | None:
        return self.total_gain / self.gain_count if self.gain_count else None


@dataclass
class PromptTracker:
    """Mean train reward of every prompt scored (over repeated minibatches); keeps the top k.

    Prompts rank by their mean reward, or, once gains are recorded (``selection.paired``), by
    their mean gain over the manual prompt on the same minibatches: a minibatch of easy examples
    lifts every prompt's reward, not its gain, so lucky minibatches stop deciding the ranking."""

    top_k: int = 10
    records: dict[str, PromptRecord] = field(default_factory=dict)
    evaluations: int = 0

    def add(self, prompt: Prompt, reward: float, gain: float | None = None) -> None:
        key = prompt_key(prompt)
        record = self.records.get(key)
        if record is None:
            stored = prompt if isinstance(prompt, (str, LabeledPrompt)) else prompt.detach().float().cpu().clone()
            record = self.records[key] = PromptRecord(stored)
        record.total_reward += float(reward)
        record.count += 1
        if gain is not None:
            record.total_gain += float(gain)
            record.gain_count += 1
        self.evaluations += 1
        if len(self.records) > 50 * self.top_k:
            self._prune()

    def _rank(self) -> list[PromptRecord]:
        paired = any(r.gain_count for r in self.records.values())
        if paired:
            return sorted(
                self.records.values(),
                key=lambda r: r.mean_gain if r.mean_gain is not None else float("-inf"),
                reverse=True,
            )
        return sorted(self.records.values(), key=lambda r: r.mean_reward, reverse=True)

    def _prune(self) -> None:
        keep = self._rank()[: 10 * self.top_k]
        self.records = {prompt_key(r.prompt): r for r in keep}

    def top(self, k: int | None = None) -> list[PromptRecord]:
        return self._rank()[: k or self.top_k]

    def best(self) -> PromptRecord | None:
        top = self.top(1)
        return top[0] if top else None
