"""Which train-set reward predicts test accuracy? Spearman correlation across random prompts.

Draws random 5-word prompts from the token env's vocabulary (plus the shipped sentiment
candidates), scores each on the whole train split with every reward and on the test split
(or a fixed random subset of it) for accuracy, and prints the rank correlation of each
reward with test accuracy. The best-correlated reward is the one to optimise; final prompts
are selected on dev, never on train alone.

    python experiments/analyses/reward_fidelity.py [--data-dir ../shared/data/sst-2/16-13] [--prompts 48]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

from rlprompt.config import Config, DataConfig
from rlprompt.envs import build_vocabulary, load_candidates
from rlprompt.rewards import accuracy, gap, gold_log_prob, macro_f1, prediction_balance
from rlprompt.task import Task

ROOT = Path(__file__).resolve().parents[2]


def ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank)."""
    order = np.argsort(values, kind="mergesort")
    out = np.empty(len(values))
    out[order] = np.arange(len(values), dtype=float)
    for value in np.unique(values):
        tied = values == value
        out[tied] = out[tied].mean()
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = ranks(np.asarray(a, float)), ranks(np.asarray(b, float))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


CANDIDATE_REWARDS = {
    "gold_log_prob": gold_log_prob,
    "accuracy": accuracy,
    "macro_f1": macro_f1,
    "gap": gap,
    "gold_log_prob + 0.5 balance": lambda logits, labels: (
        gold_log_prob(logits, labels) + 0.5 * prediction_balance(logits)
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "sst-2" / "16-13"))
    parser.add_argument("--prompts", type=int, default=48, help="random 5-word prompts")
    parser.add_argument("--test-examples", type=int, default=600, help="test subset size (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    task = Task.from_config(Config(data=DataConfig(dir=args.data_dir)))
    rng = np.random.default_rng(args.seed)
    vocabulary = build_vocabulary(task.task_model, top_k=1000)
    prompts = [" ".join(rng.choice(vocabulary, size=5)) for _ in range(args.prompts)] + load_candidates("sentiment")
    test = task.data.test
    test_idx = (
        np.arange(len(test))
        if not args.test_examples
        else np.sort(rng.choice(len(test), min(args.test_examples, len(test)), replace=False))
    )

    train_logits = task.logits(prompts, "train")
    test_logits = task.logits(prompts, "test", test_idx)
    test_acc = accuracy(test_logits, task.labels("test")[torch.as_tensor(test_idx)]).numpy()
    labels = task.labels("train")
    print(
        f"{len(prompts)} prompts ({args.prompts} random 5-word + {len(prompts) - args.prompts} manual) on {args.data_dir}; "
        f"train n={len(labels)}, test n={len(test_idx)}"
    )
    print(
        f"test accuracy over prompts: median {np.median(test_acc):.4f}, min {test_acc.min():.4f}, max {test_acc.max():.4f}"
    )
    result = {}
    for name, fn in CANDIDATE_REWARDS.items():
        values = fn(train_logits, labels).numpy()
        result[name] = spearman(values, test_acc)
        print(f"Spearman(train {name:<28}, test accuracy) = {result[name]:+.3f}")
    best = max(result, key=lambda k: -np.inf if np.isnan(result[k]) else result[k])
    print(f"best predictor of test accuracy: {best}")
    if args.json_out:
        Path(args.json_out).write_text(
            json.dumps({"spearman": result, "best": best, "prompts": len(prompts)}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
