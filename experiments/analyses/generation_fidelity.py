"""Reward fidelity of generation tasks: does the training reward rank prompts as test metrics do?

For each of N prompts (hand-written instructions from a file, then random 5-word prompts from the
model's vocabulary, so that good, mediocre and useless prompts are all present) this computes

* the training reward: the mean reference log-likelihood on the whole train split (what
  ``reward.name: likelihood`` gives an agent, averaged over minibatches), and
* the test metric of greedy generations on the first ``--test-n`` test examples,

and prints the Spearman rank correlation between them (and with the dev metric, for scale).

    python experiments/analyses/generation_fidelity.py experiments/configs/squad-smollm2.yaml \\
        --candidates experiments/configs/candidates/squad-instructions.txt --random 20 --test-n 100 \\
        --set task_model.prefix_cache_mb=4000 --json-out experiments/results/generation_fidelity_squad.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from reward_fidelity import spearman  # the same rank correlation as the classification fidelity study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--candidates", required=True, help="hand-written instructions, one per line")
    parser.add_argument("--random", type=int, default=20, help="random 5-word prompts added")
    parser.add_argument("--test-n", type=int, default=100, help="test examples generated per prompt")
    parser.add_argument(
        "--dev-n",
        type=int,
        default=None,
        help="dev examples generated per prompt (default: all; 0 skips the dev metric)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides (e.g. task_model.prefix_cache_mb=4000 to keep every passage cached)",
    )
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from rlprompt.config import load_config
    from rlprompt.envs import build_vocabulary
    from rlprompt.registry import GENERATION_METRICS
    from rlprompt.task import Task

    started = time.perf_counter()
    config = load_config(args.config, args.overrides)
    task = Task.from_config(config)
    tm = task.task_model
    written = [line.strip() for line in Path(args.candidates).read_text().splitlines() if line.strip()]
    rng = np.random.default_rng(args.seed)
    vocabulary = build_vocabulary(tm, top_k=1000)
    prompts = written + [" ".join(rng.choice(vocabulary, size=5)) for _ in range(args.random)]
    metric_name = task.primary_metric
    metric = GENERATION_METRICS[metric_name]
    train, dev, test = task.data.train, task.data.dev, task.data.test
    test_examples, test_refs = test.examples[: args.test_n], test.references[: args.test_n]
    dev_examples, dev_refs = dev.examples[: args.dev_n], dev.references[: args.dev_n]
    rows = []
    for i, prompt in enumerate(prompts):
        reward = float(tm.log_likelihood([prompt], [train.examples], [train.references])[0].mean())
        dev_value = float(metric(tm.generate([prompt], [dev_examples])[0], dev_refs)) if dev_examples else None
        test_value = float(metric(tm.generate([prompt], [test_examples])[0], test_refs))
        rows.append(
            {
                "prompt": prompt,
                "hand_written": i < len(written),
                "train_likelihood": reward,
                f"dev_{metric_name}": dev_value,
                f"test_{metric_name}": test_value,
            }
        )
        print(
            f"{i + 1:>3}/{len(prompts)}  likelihood {reward:+.4f}  dev {metric_name} {_fmt(dev_value)}  "
            f"test {metric_name} {test_value:.4f}  {prompt!r}",
            flush=True,
        )
    likelihood = [r["train_likelihood"] for r in rows]
    tests = [r[f"test_{metric_name}"] for r in rows]
    devs = [r[f"dev_{metric_name}"] for r in rows]
    written_rows = [r for r in rows if r["hand_written"]]
    result = {
        "config": args.config,
        "overrides": args.overrides,
        "task_model": config.task_model.label,
        "metric": metric_name,
        "prompts": len(rows),
        "hand_written": len(written_rows),
        "test_examples": len(test_examples),
        "train_examples": len(train),
        "spearman_train_likelihood_vs_test": spearman(likelihood, tests),
        "spearman_train_likelihood_vs_test_hand_written": spearman(
            [r["train_likelihood"] for r in written_rows], [r[f"test_{metric_name}"] for r in written_rows]
        ),
        "dev_examples": len(dev_examples),
        "spearman_dev_metric_vs_test": spearman(devs, tests) if dev_examples else None,
        "torch_threads": torch.get_num_threads(),
        "wall_time_s": round(time.perf_counter() - started, 1),
        "rows": rows,
    }
    print(
        f"Spearman(train likelihood, test {metric_name}) over {len(rows)} prompts: "
        f"{result['spearman_train_likelihood_vs_test']:.3f}  (hand-written only, {len(written_rows)}: "
        f"{result['spearman_train_likelihood_vs_test_hand_written']:.3f}; dev {metric_name} vs test: "
        f"{_fmt(result['spearman_dev_metric_vs_test'], 3)})"
    )
    print(
        f"{len(train)} train examples for the likelihood, {len(test_examples)} test examples generated per "
        f"prompt; {result['wall_time_s']} s"
    )
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


if __name__ == "__main__":
    main()
