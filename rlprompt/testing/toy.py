"""A toy task with a known optimum, for testing envs and agents in milliseconds.

:class:`OverlapTaskModel` scores a discrete prompt by the fraction of positions where its
words match a hidden target prompt, and a soft prompt by its closeness to the target's
embeddings. That quality ``q`` in [0, 1] becomes class logits: for an example with gold
class ``y`` and a fixed per-example threshold ``t_n``, ``logit_y = scale * (q - t_n)`` and the
other classes get 0, so accuracy and gold log-probability both rise with ``q`` and the
target prompt is the unique optimum. Random search over ``V ** L`` prompts rarely finds it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import cast

import numpy as np
import torch

from rlprompt.config import Config, DemosConfig, RewardConfig
from rlprompt.data import ClassificationDataset, TaskData
from rlprompt.errors import RLPromptError
from rlprompt.task import Task
from rlprompt.task_models.base import Prompt, TaskModel, TaskModelStats
from rlprompt.template import DemoPool


def _threshold(text: str) -> float:
    digest = hashlib.sha1(text.encode("utf-8")).digest()
    return 0.05 + 0.9 * int.from_bytes(digest[:4], "little") / 2**32


class OverlapTaskModel(TaskModel):
    """Toy task model whose best prompt is ``target`` (see module docstring)."""

    def __init__(
        self,
        vocabulary: Sequence[str],
        target: Sequence[str],
        labels_of_text: dict[str, int],
        num_classes: int = 2,
        hidden_size: int = 8,
        scale: float = 8.0,
        seed: int = 0,
    ) -> None:
        unknown = [w for w in target if w not in vocabulary]
        if unknown:
            raise RLPromptError(f"toy target words {unknown} are not in the vocabulary")
        self.vocabulary = list(vocabulary)
        self.target = list(target)
        self.labels_of_text = dict(labels_of_text)
        self.num_classes = num_classes
        self.scale = scale
        self.stats = TaskModelStats()
        generator = torch.Generator().manual_seed(seed)
        self._embedding = torch.randn(len(self.vocabulary), hidden_size, generator=generator)
        self._index = {w: i for i, w in enumerate(self.vocabulary)}
        self.target_embeddings = self.prompt_embeddings(" ".join(self.target))

    def words(self) -> list[str]:
        return list(self.vocabulary)

    @property
    def hidden_size(self) -> int:
        return int(self._embedding.shape[1])

    @property
    def embedding_std(self) -> float:
        return float(self._embedding.std())

    def prompt_embeddings(self, prompt: str) -> torch.Tensor:
        words = prompt.split()
        missing = [w for w in words if w not in self._index]
        if missing or not words:
            raise RLPromptError(f"toy prompt {prompt!r} has words outside the vocabulary: {missing}")
        return self._embedding[[self._index[w] for w in words]].clone()

    def quality(self, prompt: Prompt) -> torch.Tensor:
        """``q`` in [0, 1]: positional word overlap (discrete) or embedding closeness (soft)."""
        if isinstance(prompt, str):
            words = prompt.split()
            hits = sum(a == b for a, b in zip(words, self.target, strict=False))
            return torch.tensor(hits / len(self.target))
        if prompt.shape != self.target_embeddings.shape:
            raise RLPromptError(
                f"toy soft prompt must be {list(self.target_embeddings.shape)}, got {list(prompt.shape)}"
            )
        distance = (prompt.float() - self.target_embeddings).pow(2).mean()
        return torch.exp(-distance)

    def _logits(self, quality: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        try:
            gold = torch.tensor([self.labels_of_text[t] for t in texts])
        except KeyError as exc:
            raise RLPromptError(f"toy task model has no label for text {exc.args[0]!r}") from None
        thresholds = torch.tensor([_threshold(t) for t in texts])
        logits = torch.zeros(len(texts), self.num_classes)
        logits = (
            logits
            + torch.nn.functional.one_hot(gold, self.num_classes) * (self.scale * (quality - thresholds))[:, None]
        )
        return logits

    def _count(self, pairs: int) -> None:
        self.charge_lm_calls(pairs)
        self.stats.requested += pairs
        self.stats.forward_batches += 1

    def _as_list(self, prompts: Sequence[Prompt] | torch.Tensor) -> list[Prompt]:
        if isinstance(prompts, torch.Tensor):
            return list(prompts.unsqueeze(0) if prompts.dim() == 2 else prompts)
        return list(prompts)

    def score(self, prompts: Sequence[Prompt] | torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        prompt_list = self._as_list(prompts)
        self._count(len(prompt_list) * len(texts))
        return torch.stack([self._logits(self.quality(p), texts) for p in prompt_list]).float()

    def score_pairs(
        self, prompts: Sequence[Prompt] | torch.Tensor, texts_per_prompt: Sequence[Sequence[str]]
    ) -> list[torch.Tensor]:
        prompt_list = self._as_list(prompts)
        self._count(sum(len(t) for t in texts_per_prompt))
        return [self._logits(self.quality(p), t).float() for p, t in zip(prompt_list, texts_per_prompt, strict=True)]

    def score_soft_with_grad(self, soft_prompt: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        self._count(len(texts))
        return self._logits(self.quality(soft_prompt), texts)


def _toy_splits(
    num_examples: int, num_classes: int, text: str
) -> tuple[dict[str, ClassificationDataset], dict[str, int]]:
    """Train/dev/test of ``num_examples`` texts (``text`` formatted with ``split`` and ``i``),
    labels cycling through the classes, and every text's label."""
    splits: dict[str, ClassificationDataset] = {}
    labels_of_text: dict[str, int] = {}
    for split in ("train", "dev", "test"):
        texts = [text.format(split=split, i=i) for i in range(num_examples)]
        labels = [i % num_classes for i in range(num_examples)]
        labels_of_text.update(zip(texts, labels, strict=True))
        splits[split] = ClassificationDataset(texts, labels, f"toy:{split}")
    return splits, labels_of_text


def toy_vocabulary(size: int) -> list[str]:
    return [f"w{i:02d}" for i in range(size)]


def make_toy_task(
    vocab_size: int = 50,
    prompt_length: int = 5,
    num_examples: int = 32,
    num_classes: int = 2,
    seed: int = 0,
    reward: str = "gold_log_prob",
    hidden_size: int = 8,
) -> Task:
    """A :class:`Task` over :class:`OverlapTaskModel` with a seeded hidden target prompt."""
    rng = np.random.default_rng(seed)
    vocabulary = toy_vocabulary(vocab_size)
    target = [vocabulary[i] for i in rng.choice(vocab_size, size=prompt_length, replace=True)]
    splits, labels_of_text = _toy_splits(num_examples, num_classes, "{split} example {i}")
    manual = " ".join(w for w in vocabulary[:prompt_length])
    config = Config(
        prompt=manual,
        verbalizers=[f"class{c}" for c in range(num_classes)],
        reward=RewardConfig(name=reward),
        seed=seed,
    )
    model = OverlapTaskModel(vocabulary, target, labels_of_text, num_classes, hidden_size=hidden_size, seed=seed)
    data = TaskData(splits["train"], splits["dev"], splits["test"], num_classes)
    return Task(config, data, model)


class DemoOverlapTaskModel(OverlapTaskModel):
    """Toy task model over demonstration blocks: a prompt's quality is the fraction of slots
    whose demonstration is the hidden target's at that position (its block is parsed back
    into pool ids by ``pool``), so the target block (a set in one order) is the unique optimum."""

    def __init__(
        self,
        pool: DemoPool,
        target: Sequence[int],
        labels_of_text: dict[str, int],
        num_classes: int = 2,
        scale: float = 8.0,
        seed: int = 0,
    ) -> None:
        vocabulary = toy_vocabulary(2)
        super().__init__(vocabulary, vocabulary[:1], labels_of_text, num_classes, scale=scale, seed=seed)
        self.pool = pool
        self.target_ids = list(target)

    def quality(self, prompt: Prompt) -> torch.Tensor:
        if not isinstance(prompt, str):
            raise RLPromptError("the toy demonstration task scores blocks of demonstrations (text), not soft prompts")
        ids = self.pool.parse(prompt) if prompt else []
        if ids is None:
            raise RLPromptError(f"toy prompt {prompt[:40]!r} is not a block of the pool's demonstrations")
        hits = sum(a == b for a, b in zip(ids, self.target_ids, strict=False))
        return torch.tensor(hits / len(self.target_ids))


def make_toy_demo_task(
    k: int = 3, num_examples: int = 32, num_classes: int = 2, seed: int = 0, reward: str = "gold_log_prob"
) -> Task:
    """A :class:`Task` whose prompts are blocks of ``k`` demonstrations from its train split
    (``{demos}`` in the template), over :class:`DemoOverlapTaskModel` with a seeded hidden
    target block of ``k`` distinct train examples."""
    rng = np.random.default_rng(seed)
    splits, labels_of_text = _toy_splits(num_examples, num_classes, "{split} example {i:03d}")  # no text inside another
    config = Config(
        template="{demos}{sentence} =>",
        prompt="",
        verbalizers=[f" class{c}" for c in range(num_classes)],
        demos=DemosConfig(template="{sentence} => {label_word}\n"),
        reward=RewardConfig(name=reward),
        env={"kind": "demos", "k": k},
        seed=seed,
    )
    data = TaskData(splits["train"], splits["dev"], splits["test"], num_classes)
    pool = DemoPool(
        cast(str, config.demos.template),  # set just above
        list(data.train.texts),
        [config.label_words[y] for y in data.train.labels],
        list(data.train.labels),
    )
    target = [int(i) for i in rng.choice(num_examples, size=k, replace=False)]
    model = DemoOverlapTaskModel(pool, target, labels_of_text, num_classes, seed=seed)
    return Task(config, data, model)
