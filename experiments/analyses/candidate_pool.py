"""What did a finished classification run explore? Every prompt its tracker holds, re-scored on whole splits.

For each prompt the agent's tracker recorded (up to 50 x top_k, with their mean train reward over
the minibatches training scored them on), the reward on the whole train and dev splits (pooled:
what ``selection.splits: [train, dev]`` ranks by) and the per-example gold log-probabilities,
from which two standard deviations of one evaluation's reward on a minibatch of
``env.batch_size`` train examples follow: of the reward itself (what the tracker ranks by today)
and of its difference from the manual prompt's reward on the same examples (a paired
comparison: the minibatch's difficulty cancels). Then: how many explored prompts beat the manual
one on train + dev, and the test accuracy of the best of them.

    python experiments/analyses/candidate_pool.py experiments/results/bench-sst2-smollm2/runs/sst2/ppo-edit/b2000/seed13
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
from reward_fidelity import spearman  # the rank correlation of the fidelity studies
from reward_noise import minibatch_sd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--top", type=int, default=5, help="test accuracy of this many best on train + dev")
    parser.add_argument("--out", help="write the result as JSON here")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from rlprompt.agents.base import Agent
    from rlprompt.experiment import make_env
    from rlprompt.rundir import CHECKPOINT, saved_config
    from rlprompt.task import Task

    run_dir = Path(args.run_dir)
    config = saved_config(run_dir)
    task = Task.from_config(config)
    agent = Agent.load(run_dir / CHECKPOINT, make_env(task, config))
    records = [r for r in agent.tracker.records.values() if isinstance(r.prompt, str)]
    manual = config.prompt
    prompts = [manual] + [r.prompt for r in records if r.prompt != manual]
    tracked = {r.prompt: (r.mean_reward, r.count) for r in records}
    k = config.env.batch_size or len(task.data.train)

    def gold(split: str) -> np.ndarray:
        labels = task.labels(split)
        log_probs = torch.log_softmax(task.logits(prompts, split).float(), -1)
        return log_probs[:, torch.arange(len(labels)), labels].numpy()  # [P, N]

    train, dev = gold("train"), gold("dev")
    pooled = np.concatenate([train, dev], 1).mean(1)
    sd_raw = np.array([minibatch_sd(row, k) for row in train])
    sd_paired = np.array([minibatch_sd(row - train[0], k) for row in train[1:]])
    better = [i for i in range(1, len(prompts)) if pooled[i] > pooled[0]]
    order = sorted(better, key=lambda i: -pooled[i])[: args.top]
    test = {prompts[i]: task.evaluate(prompts[i], "test")["accuracy"] for i in [0, *order]}
    noisy = np.array([tracked.get(p, (np.nan, 0))[0] for p in prompts[1:]])
    seen = ~np.isnan(noisy)
    result = {
        "run": str(run_dir),
        "manual": manual,
        "explored": len(prompts) - 1,
        "minibatch": k,
        "manual_train_dev": float(pooled[0]),
        "manual_test_accuracy": test[manual],
        "beat_manual_on_train_dev": len(better),
        "sd_minibatch_reward_median": float(np.median(sd_raw)),
        "sd_minibatch_paired_difference_median": float(np.median(sd_paired)),
        "spread_of_train_means_sd": float(train.mean(1).std(ddof=1)),
        "spearman_tracker_vs_full_train": spearman(noisy[seen], train[1:].mean(1)[seen]),
        "best": [
            {
                "prompt": prompts[i],
                "train_dev": float(pooled[i]),
                "tracker_mean": tracked.get(prompts[i], (None,))[0],
                "tracker_count": tracked.get(prompts[i], (0, 0))[1],
                "test_accuracy": test[prompts[i]],
            }
            for i in order
        ],
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
