"""Soft Q-learning as in RLPrompt, for the token env.

The policy is a frozen language model plus a small trainable MLP: the LM encodes the
prompt-so-far, the MLP maps that state to a vector in the LM's embedding space, and the
logits over the env's vocabulary are that vector's dot products with the vocabulary's
output embeddings (mean over a word's sub-tokens) plus a bias. In soft Q-learning these
logits are the Q-values and ``pi = softmax(Q)``.

One iteration: ``n_envs`` episodes are sampled on-policy with top-k sampling; the terminal
rewards are z-scored over the batch (RLPrompt's reward normalisation) and scaled; the
single-step and multi-step path-consistency losses (``rlprompt.rl``) are averaged against a
Polyak-averaged target MLP. Greedy decoding (argmax Q) gives the prompt at evaluation.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from rlprompt.agents.base import Agent
from rlprompt.agents.networks import seeded_module
from rlprompt.agents.sql_config import SQLConfig
from rlprompt.envs.base import WordVocabulary
from rlprompt.rl import polyak_update, sql_multi_step_loss, sql_single_step_loss
from rlprompt.task_models.encoder import mean_pool
from rlprompt.task_models.loading import load_model, load_tokenizer, pick_device


class _PolicyHead(nn.Module):
    """MLP over [LM features, step embedding] to a vector in the LM's embedding space.

    The step embedding tells positions apart: a mean-pooled encoder state alone barely
    changes from one prefix to the next."""

    def __init__(self, hidden: int, mlp_hidden: int, n_actions: int, max_steps: int) -> None:
        super().__init__()
        self.steps = nn.Embedding(max_steps, 32)
        self.mlp = nn.Sequential(nn.Linear(hidden + 32, mlp_hidden), nn.GELU(), nn.Linear(mlp_hidden, hidden))
        self.bias = nn.Parameter(torch.zeros(n_actions))

    def forward(self, features: torch.Tensor, steps: torch.Tensor, action_embeddings: torch.Tensor) -> torch.Tensor:
        x = torch.cat([features, self.steps(steps)], dim=-1)
        return (features + self.mlp(x)) @ action_embeddings.T + self.bias


class SoftQLearning(Agent):
    config_class = SQLConfig
    requires = (WordVocabulary,)

    def _setup(self) -> None:
        cfg = self.config
        self.device = pick_device("auto")
        self.tokenizer = load_tokenizer(cfg.backbone)
        if self.tokenizer.pad_token is None:  # GPT-2-style backbones: padding is masked out anyway
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.backbone = load_model(cfg.backbone, "encoder", self.device, torch.float32)
        vocab = self.env.vocabulary
        weight = (self.backbone.get_output_embeddings() or self.backbone.get_input_embeddings()).weight.detach().float()
        rows = []
        for word in vocab:
            ids = self.tokenizer(word, add_special_tokens=False)["input_ids"] or [self.tokenizer.unk_token_id or 0]
            rows.append(weight[torch.tensor(ids, device=weight.device)].mean(0))
        self.action_embeddings = torch.stack(rows)
        hidden = self.action_embeddings.shape[1]
        self.head = seeded_module(
            cfg.seed, lambda: _PolicyHead(hidden, cfg.mlp_hidden, len(vocab), self.env.prompt_length)
        ).to(self.device)
        self.target_head = copy.deepcopy(self.head).requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.head.parameters(), lr=cfg.learning_rate)
        self._features: dict[str, torch.Tensor] = {}
        self._empty_text = self.tokenizer.cls_token or self.tokenizer.bos_token or self.tokenizer.eos_token or ""

    def features(self, prefixes: list[str]) -> torch.Tensor:
        """Frozen-LM state features of prompt prefixes (mean-pooled, cached)."""
        missing = [p for p in dict.fromkeys(prefixes) if p not in self._features]
        if len(self._features) + len(missing) > 200_000:  # bound memory; features are cheap to redo
            self._features.clear()
            missing = list(dict.fromkeys(prefixes))
        if missing:
            texts = [p if p else self._empty_text for p in missing]
            batch = self.tokenizer(texts, return_tensors="pt", padding=True).to(self.device)
            with torch.inference_mode():
                hidden = self.backbone(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                ).last_hidden_state
                pooled = mean_pool(hidden, batch["attention_mask"])
            for prefix, row in zip(missing, pooled, strict=True):
                self._features[prefix] = row.clone()
        return torch.stack([self._features[p] for p in prefixes])

    def _q(self, head: nn.Module, prefixes: list[str], step: int) -> torch.Tensor:
        steps = torch.full((len(prefixes),), step, dtype=torch.long, device=self.device)
        return head(self.features(prefixes), steps, self.action_embeddings)

    def _sample(self, q: torch.Tensor) -> torch.Tensor:
        k = self.config.sample_top_k
        if k is not None and k < q.shape[-1]:
            threshold = q.topk(k, dim=-1).values[:, -1:]
            q = q.masked_fill(q < threshold, float("-inf"))
        return torch.multinomial(torch.softmax(q, -1), 1, generator=self.torch_rng).squeeze(-1)

    def _learn_step(self) -> dict[str, float]:
        cfg = self.config
        self.reset_envs()
        n, length = self.vec_env.num_envs, self.env.prompt_length
        words: list[list[str]] = [[] for _ in range(n)]
        actions = torch.zeros(n, length, dtype=torch.long)
        rewards = torch.zeros(n, length)
        lengths = torch.full((n,), length, dtype=torch.long)
        # 1. Sample n episodes on-policy (top-k) through the envs.
        for t in range(length):
            prefixes = [" ".join(w) for w in words]
            with torch.no_grad():
                a = self._sample(self._q(self.head, prefixes, t).cpu())
            _, reward, terminated, truncated, _ = self.step_envs(a.numpy())
            actions[:, t] = a
            rewards[:, t] = torch.as_tensor(reward, dtype=torch.float32)
            for i in range(n):
                words[i].append(self.env.vocabulary[int(a[i])])
        raw = rewards.sum(1)
        final = (raw - raw.mean()) / (raw.std() + 1e-6) if cfg.reward_zscore and n > 1 else raw
        shaped = torch.zeros_like(rewards)
        shaped[:, -1] = cfg.reward_scale * final
        # 2. Q-values of every visited state under the learned and target heads, then the
        #    path-consistency losses and a Polyak update of the target, gradient_steps times.
        states = [" ".join(words[i][:t]) for i in range(n) for t in range(length)]
        features = self.features(states)
        steps = torch.arange(length, device=self.device).repeat(n)
        for _ in range(cfg.gradient_steps):
            q = self.head(features, steps, self.action_embeddings).view(n, length, -1).cpu()
            with torch.no_grad():
                target_q = self.target_head(features, steps, self.action_embeddings).view(n, length, -1).cpu()
            single = sql_single_step_loss(q, target_q, actions, shaped, lengths)
            multi = sql_multi_step_loss(q, target_q, actions, shaped, lengths)
            loss = {"single": single, "multi": multi, "mixed": 0.5 * (single + multi)}[cfg.loss]
            self.optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.head.parameters(), 5.0)
            self.optimizer.step()
            polyak_update(self.target_head, self.head, cfg.tau)
        return {
            "loss": float(loss.detach()),
            "single_step_loss": float(single.detach()),
            "multi_step_loss": float(multi.detach()),
            "mean_reward": float(raw.mean()),
        }

    def predict(self, deterministic: bool = True) -> str:
        words: list[str] = []
        for t in range(self.env.prompt_length):
            with torch.no_grad():
                q = self._q(self.head, [" ".join(words)], t).cpu()
            action = int(q.argmax(-1)[0]) if deterministic else int(self._sample(q)[0])
            words.append(self.env.vocabulary[action])
        return " ".join(words)

    def _state(self) -> dict:
        return {
            "head": self.head.state_dict(),
            "target_head": self.target_head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }

    def _load_state(self, state: dict) -> None:
        self.head.load_state_dict(state["head"])
        self.target_head.load_state_dict(state["target_head"])
        self.optimizer.load_state_dict(state["optimizer"])
