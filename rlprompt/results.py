"""Typed results: what ``rlprompt run`` writes to ``best_prompt.json`` and ``rlprompt finetune`` to
``finetune_result.json``; every reader (bench, eval --run, export, finetune's prompt file)
loads them through these classes, so a field is named in one place.

Both carry a ``schema_version``. Version 1 files (written before the field existed, and
without ``budget``), version 2 files (without ``outcomes``), version 3 (without
``demonstrations``) and version 4 (without ``label_words``) still load; a reader older than a
file's version refuses it (a field it does not know could change what the prompt means).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rlprompt.errors import RLPromptError
from rlprompt.io import atomic_write_json, read_json

SCHEMA_VERSION = 5
SPLITS = ("train", "dev", "test")
SplitMetrics = dict[str, Any]
"""One prompt's metrics on one split (accuracy, macro_f1, gold_log_prob, reward, n, predicted_counts ...;
a generation task's metrics, likelihood, reward, n and the first outputs)."""


def _from_dict(cls: type, data: Any, path: Path, what: str) -> Any:
    if not isinstance(data, dict):
        raise RLPromptError(f"{path} is not {what} (not a JSON object)")
    version = data.get("schema_version", 1)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise RLPromptError(f"{path} has schema version {version!r}; this rlprompt reads up to {SCHEMA_VERSION}")
    names = {f.name for f in dataclasses.fields(cls)}
    required = {
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    missing = sorted(required - set(data))
    if missing:
        raise RLPromptError(f"{path} is not {what}: it lacks {', '.join(missing)}")
    return cls(**{k: v for k, v in data.items() if k in names})


class _Result:
    """JSON round trip of a result dataclass (atomic writes; clear errors on reading)."""

    what = "an rlprompt result"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def save(self, path: str | os.PathLike[str]) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Any:
        """Read a result file; a truncated or foreign file is one clear error."""
        p = Path(path)
        return _from_dict(cls, read_json(p, "result file"), p, cls.what)


@dataclass
class RunResult(_Result):
    """The prompt a run found, its metrics and those of the manual prompt, and what it cost."""

    what = "an rlprompt run result"

    kind: Literal["discrete", "soft"]
    """``discrete`` (text) or ``soft`` (embeddings in ``soft_prompt_path``)."""
    prompt: str | None
    """The prompt text (None for soft prompts)."""
    token_ids: list[int] | None
    """Its token ids in the task model's tokenizer (None for soft prompts or tokenizer-less models)."""
    soft_prompt_path: str | None
    """File of the soft prompt's ``prompt_embeddings`` ``[n, hidden]``, relative to the run directory."""
    n_virtual_tokens: int | None
    metrics: dict[str, SplitMetrics]
    """Split -> metrics of the found prompt."""
    baseline: dict[str, Any]
    """``{"prompt": manual prompt, "metrics": {split: metrics}}``."""
    train_reward: float | None
    """Mean train reward of the found prompt over the minibatches it was scored on."""
    candidates: int
    """Prompts re-scored in selection (the greedy prompt, the top k and the manual prompt)."""
    lm_calls: int
    prompt_evals: int
    env_steps: int
    iterations: int
    dev_lm_calls: int
    eval_lm_calls: int
    agent: str
    env: str
    task_model: str
    reward: str
    seed: int
    rlprompt_version: str
    wall_time_s: float | None
    budget: dict[str, float] = field(default_factory=dict)
    """The training budgets the run was given (spent amounts are ``lm_calls``, ``prompt_evals``...)."""
    task: str = "classification"
    """The task family (``classification`` or ``generation``)."""
    metric_names: list[str] = field(default_factory=lambda: ["accuracy", "macro_f1", "gold_log_prob"])
    """The metrics in ``metrics``, the main one first (accuracy; a generation task's first metric)."""
    api: dict[str, Any] | None = None
    """Served models: ``scoring`` (the mode used: logprobs, echo or generation), ``training``
    (requests, tokens, cost spent by training) and ``total`` (all requests of the run with dev
    selection and evaluation, ``requests_cached`` of them read from the response cache, prompt and
    completion tokens, cost, retries, invalid answers)."""
    selected_on: list[str] = field(default_factory=lambda: ["dev"])
    """The splits the candidates were scored on (pooled) to select the reported prompt."""
    manual_kept: bool = False
    """No candidate training found beat the manual prompt on ``selected_on``: the run reports the
    manual prompt itself (``selection.include_manual``)."""
    guarded_on: list[str] = field(default_factory=list)
    """``selection.guard_splits``: splits on which a found prompt had to score at least the manual
    prompt's selection key to be reported."""
    guard_dropped: int = 0
    """Found prompts that beat the reported one on ``selected_on`` but lost to the manual prompt
    on a ``guarded_on`` split, and were dropped (0: the guard changed nothing)."""
    outcomes: str | None = None
    """The per-example outcomes of the found and the manual prompt on every split
    (:mod:`rlprompt.outcomes`), relative to the run directory; None in runs from before schema
    version 3, whose outcomes ``rlprompt eval --run RUN --save-outcomes FILE`` writes."""
    demonstrations: dict[str, Any] | None = None
    """Runs whose prompts are demonstrations (``{demos}`` in the template, schema 4): the found
    block's pool ``ids`` and ``texts`` in order, the fixed ``instruction``, the demonstration
    ``template``, the ``pool`` and the ``label_words``; None otherwise and in older runs."""
    label_words: list[str] | None = None
    """Runs that searched label words (schema 5): the found words, one per class, which score the
    found prompt in place of the config's verbalizers' words (each verbalizer keeps its form);
    None: the config's words (every other run, and older runs)."""
    verbalizers: list[str] | None = None
    """With ``label_words``: the verbalizers they make (what the task model reads per class)."""
    per_input: dict[str, Any] | None = None
    """Runs of a per-input policy (``env.kind: demos_per_input``, schema 5): each input's prompt is
    the policy's choice given the input, and ``metrics`` score every example under its own prompt.
    ``checkpoint`` (the policy, relative to the run directory), ``env``, ``k``, ``encoder``;
    :func:`rlprompt.experiment.load_policy` gives the prompt of any input. None otherwise."""
    schema_version: int = SCHEMA_VERSION

    @property
    def primary_metric(self) -> str:
        return self.metric_names[0]

    def __post_init__(self) -> None:
        if self.kind not in ("discrete", "soft"):
            raise RLPromptError(f"run result kind must be 'discrete' or 'soft', got {self.kind!r}")

    @property
    def named_prompt(self) -> str | None:
        """The found prompt as outcome files and tables name it: its text, followed by its label
        words when the run found some (``'Sentiment:' [bad/good]``)."""
        if self.label_words:
            return f"{self.prompt!r} [{'/'.join(self.label_words)}]"
        return self.prompt

    @property
    def shown_prompt(self) -> str:
        if self.kind != "discrete":
            return f"<soft prompt, {self.n_virtual_tokens} tokens>"
        return repr(self.prompt) + (f" [{'/'.join(self.label_words)}]" if self.label_words else "")


@dataclass
class FinetuneResult(_Result):
    """Greedy metrics before and after RL fine-tuning, and where the trained weights are."""

    what = "an rlprompt fine-tuning result"

    run_dir: str
    method: str
    lora: bool
    prompt: str
    task_model: str
    before: dict[str, Any]
    """``{"metrics": {split: metrics}}`` of the untouched model."""
    after: dict[str, Any]
    """``{"metrics": {split: metrics}}`` after training."""
    steps: int
    answers_sampled: int
    saved: str
    """``adapter`` (LoRA) or ``model`` (full fine-tuning), relative to the run directory."""
    seed: int
    wall_time_s: float
    schema_version: int = SCHEMA_VERSION
