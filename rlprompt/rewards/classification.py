"""Classification rewards and metrics: pure batch functions of class logits and gold labels.

Shapes: ``logits`` is ``[..., N, C]`` (any leading batch dims, typically prompts ``P``),
``labels`` is ``[N]`` of class indices. Every reward returns ``[...]`` (one value per
prompt). Logits are unnormalised class scores; rewards normalise them over the classes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from rlprompt.errors import RewardError

RewardFn = Callable[..., torch.Tensor]


def check_scores(logits: torch.Tensor, labels: torch.Tensor) -> None:
    """Raise :class:`RewardError` unless logits are finite and shaped ``[..., N, C]``."""
    if logits.dim() < 2:
        raise RewardError(f"class scores must be [..., N, C], got shape {tuple(logits.shape)}")
    if labels.dim() != 1 or labels.shape[0] != logits.shape[-2]:
        raise RewardError(f"labels must be [N={logits.shape[-2]}], got shape {tuple(labels.shape)}")
    if not torch.isfinite(logits).all():
        bad = int((~torch.isfinite(logits)).sum())
        raise RewardError(f"class scores contain {bad} non-finite value(s) (NaN/inf): the task model diverged")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= logits.shape[-1]):
        raise RewardError(f"labels must lie in 0..{logits.shape[-1] - 1}")


def class_log_probs(logits: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits.float(), dim=-1)


def batch_calibrate(logits: torch.Tensor) -> torch.Tensor:
    """Batch calibration (Zhou et al., 2024): each prompt's class log-probabilities minus their
    mean over the ``N`` examples scored together, ``[..., N, C] -> [..., N, C]``.

    A prompt often shifts every input towards one class (on SmolLM2 'Sentiment:' answers
    negative for 61% of a balanced test set); subtracting the shift, estimated without labels,
    scores how well the prompt separates the classes rather than which way it leans."""
    log_probs = class_log_probs(logits)
    return log_probs - log_probs.mean(-2, keepdim=True)


def _gold(values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    index = labels.to(values.device).expand(*values.shape[:-1]).unsqueeze(-1)
    return values.gather(-1, index).squeeze(-1)


def hard_predictions(logits: torch.Tensor) -> torch.Tensor:
    """``[..., N]`` arg-max classes, ``-1`` where the top score is tied: a tie is no answer (a
    served model's answer that matches no verbalizer scores every class alike)."""
    predicted = logits.argmax(-1)
    if logits.shape[-1] > 1:
        top2 = logits.topk(2, dim=-1).values
        predicted = torch.where(top2[..., 0] > top2[..., 1], predicted, torch.full_like(predicted, -1))
    return predicted


def per_example_correct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``[..., N]`` 1.0 where the predicted class is the gold one (ties count as wrong)."""
    return (hard_predictions(logits) == labels.to(logits.device)).float()


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    check_scores(logits, labels)
    return per_example_correct(logits, labels).mean(-1)


def macro_f1(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Macro-averaged F1 over the classes present in gold or predictions."""
    check_scores(logits, labels)
    num_classes = logits.shape[-1]
    predicted = hard_predictions(logits)
    pred = torch.nn.functional.one_hot(predicted.clamp_min(0), num_classes).float() * (predicted >= 0).unsqueeze(-1)
    gold = torch.nn.functional.one_hot(labels.to(logits.device), num_classes).float().expand_as(pred)
    tp = (pred * gold).sum(-2)
    denom = pred.sum(-2) + gold.sum(-2)
    present = denom > 0
    f1 = torch.where(present, 2 * tp / denom.clamp_min(1e-12), torch.zeros_like(tp))
    return f1.sum(-1) / present.float().sum(-1).clamp_min(1)


def per_example_gold_log_prob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return _gold(class_log_probs(logits), labels)


def gold_log_prob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean log-probability of the gold class: smooth, and the best predictor of test accuracy."""
    check_scores(logits, labels)
    return per_example_gold_log_prob(logits, labels).mean(-1)


def per_example_gap(
    logits: torch.Tensor, labels: torch.Tensor, correct_scale: float = 200.0, incorrect_scale: float = 180.0
) -> torch.Tensor:
    """RLPrompt's piecewise reward: gap = p(gold) - max p(other), x200 if > 0 else x180."""
    probs = class_log_probs(logits).exp()
    gold = _gold(probs, labels)
    others = probs.scatter(-1, labels.to(probs.device).expand(*probs.shape[:-1]).unsqueeze(-1), -1.0)
    gap = gold - others.max(-1).values
    return torch.where(gap > 0, correct_scale * gap, incorrect_scale * gap)


def gap(
    logits: torch.Tensor, labels: torch.Tensor, correct_scale: float = 200.0, incorrect_scale: float = 180.0
) -> torch.Tensor:
    check_scores(logits, labels)
    return per_example_gap(logits, labels, correct_scale, incorrect_scale).mean(-1)


def prediction_balance(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the predicted-class histogram over N examples, divided by log C (in [0, 1])."""
    num_classes = logits.shape[-1]
    counts = torch.nn.functional.one_hot(logits.argmax(-1), num_classes).float().mean(-2)
    entropy = -(counts * counts.clamp_min(1e-12).log()).sum(-1)
    return entropy / torch.log(torch.tensor(float(num_classes)))


def zscore(values: torch.Tensor, dim: int | None = None, eps: float = 1e-6) -> torch.Tensor:
    """Standardise over ``dim`` (all elements when None): the per-batch normalisation."""
    if dim is None:
        return (values - values.mean()) / (values.std(unbiased=False) + eps)
    mean = values.mean(dim, keepdim=True)
    std = values.std(dim, unbiased=False, keepdim=True)
    return (values - mean) / (std + eps)


def zscore_per_input(per_example: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """RLPrompt's input-specific z-score: ``[P, N]`` rewards standardised over prompts for
    each input, so easy inputs do not dominate the learning signal."""
    if per_example.dim() != 2:
        raise RewardError(f"per-input z-score needs [prompts, inputs] rewards, got {tuple(per_example.shape)}")
    return zscore(per_example, dim=0, eps=eps)


def compute_reward(
    name: str,
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    gap_correct: float = 200.0,
    gap_incorrect: float = 180.0,
    balance_weight: float = 0.0,
) -> torch.Tensor:
    """The configured reward for each prompt: ``[..., N, C]`` logits -> ``[...]`` rewards.

    ``name`` is a registered reward or a dotted path to a function ``(logits, labels) -> [...]``
    (it may also take ``correct_scale`` / ``incorrect_scale``, the ``gap`` parameters)."""
    import inspect

    from rlprompt.errors import ConfigError
    from rlprompt.registry import REWARDS

    try:
        fn = REWARDS[name]
    except ConfigError as exc:
        raise RewardError(str(exc)) from None
    accepted = inspect.signature(fn).parameters
    params = {k: v for k, v in (("correct_scale", gap_correct), ("incorrect_scale", gap_incorrect)) if k in accepted}
    value = fn(logits, labels, **params)
    if not isinstance(value, torch.Tensor) or value.shape != logits.shape[:-2]:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise RewardError(f"reward '{name}' must return one value per prompt {tuple(logits.shape[:-2])}, got {shape}")
    if balance_weight:
        value = value + balance_weight * prediction_balance(logits).to(value.device)
    return value


def prediction_metrics(predicted: Sequence[int], gold: Sequence[int], num_classes: int) -> dict[str, Any]:
    """Accuracy, macro-F1 (over classes present in gold or predictions), class counts and
    ``invalid`` answers (predictions ``-1``: no class, counted wrong) of hard predictions."""
    pred = torch.as_tensor(list(predicted), dtype=torch.long)
    true = torch.as_tensor(list(gold), dtype=torch.long)
    valid = pred >= 0
    one_hot = torch.nn.functional.one_hot
    pred_hot = one_hot(pred.clamp_min(0), num_classes).float() * valid[:, None]
    gold_hot = one_hot(true, num_classes).float()
    tp, denom = (pred_hot * gold_hot).sum(0), pred_hot.sum(0) + gold_hot.sum(0)
    present = denom > 0
    f1 = (2 * tp[present] / denom[present]).mean() if bool(present.any()) else torch.tensor(0.0)
    return {
        "accuracy": float((pred == true).float().mean()) if len(true) else 0.0,
        "macro_f1": float(f1),
        "n": int(len(true)),
        "predicted_counts": [int(c) for c in pred_hot.sum(0)],
        "invalid": int((~valid).sum()),
    }


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """Accuracy, macro-F1, gold log-prob and predicted-class counts for one prompt ``[N, C]``."""
    check_scores(logits, labels)
    metrics = prediction_metrics(hard_predictions(logits).cpu().tolist(), labels.cpu().tolist(), logits.shape[-1])
    out = {
        "accuracy": metrics["accuracy"],
        "macro_f1": float(macro_f1(logits, labels)),
        "gold_log_prob": float(gold_log_prob(logits, labels)),
        "n": metrics["n"],
        "predicted_counts": metrics["predicted_counts"],
    }
    if metrics["invalid"]:
        out["invalid"] = metrics["invalid"]  # tied scores: no answer (served models' unmatched answers)
    return out
