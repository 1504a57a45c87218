"""Rewards and metrics: pure batch functions, registered by name (torch is imported only when one runs).

Rewards (:data:`rlprompt.registry.REWARDS`) score each prompt of a batch for training;
metrics (:data:`rlprompt.registry.METRICS`) describe a prompt on a whole split. Generation
metrics (:data:`rlprompt.registry.GENERATION_METRICS`: SQuAD EM/F1, ROUGE, BLEU, chrF) score
greedy generations against references, for evaluation and, at their cost, as rewards. A config may
also name a function of an installed module by dotted path (``mypkg.rewards:my_reward``).
"""

from __future__ import annotations

from typing import Any

from rlprompt.registry import GENERATION_METRICS, METRICS, REWARDS

_CLASSIFICATION = "rlprompt.rewards.classification"
_GENERATION = "rlprompt.rewards.generation"
CLASSIFICATION_REWARDS = ("gold_log_prob", "accuracy", "macro_f1", "gap")
"""Rewards of class logits and labels."""
CLASSIFICATION_METRICS = ("accuracy", "macro_f1", "gold_log_prob")

for _name in CLASSIFICATION_REWARDS:
    REWARDS.register(_name, f"{_CLASSIFICATION}:{_name}")
for _name in CLASSIFICATION_METRICS:
    METRICS.register(_name, f"{_CLASSIFICATION}:{_name}")
GENERATION_METRIC_NAMES = ("exact_match", "f1", "rouge1", "rouge2", "rougeL", "bleu", "chrf")
"""Metrics of greedy generations against references (``task: generation``), rewards too."""
for _name in GENERATION_METRIC_NAMES:
    GENERATION_METRICS.register(_name, f"{_GENERATION}:{_name}")

_LAZY = (
    "accuracy",
    "batch_calibrate",
    "check_scores",
    "class_log_probs",
    "classification_metrics",
    "compute_reward",
    "gap",
    "gold_log_prob",
    "hard_predictions",
    "macro_f1",
    "per_example_correct",
    "per_example_gap",
    "per_example_gold_log_prob",
    "prediction_balance",
    "zscore",
    "zscore_per_input",
)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_CLASSIFICATION), name)
    raise AttributeError(f"module 'rlprompt.rewards' has no attribute {name!r}")


__all__ = list(_LAZY)
