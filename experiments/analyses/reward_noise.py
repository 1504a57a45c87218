"""How noisy is a training reward measured on a minibatch, against the differences between prompts?

For each prompt, the per-example gold log-probability on the whole train split, its mean, and
the standard deviation of the mean over a random minibatch of ``env.batch_size`` examples drawn
without replacement (what one prompt evaluation of training sees). When that deviation exceeds
the differences between prompts' means, the best train reward an agent records is mostly the
luck of its minibatches. Scores are read as the config reads them; with ``calibration: batch``
the shift is estimated on the whole train split, so the noise of estimating it on each minibatch
is not included.

    python experiments/analyses/reward_noise.py experiments/configs/sst2-smollm2.yaml "Sentiment:" "com Sentiment: you"
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch


def minibatch_sd(values: np.ndarray, k: int) -> float:
    """Standard deviation of the mean of ``k`` of ``values`` drawn without replacement."""
    n = len(values)
    return float(values.std(ddof=1) / np.sqrt(k) * np.sqrt((n - k) / (n - 1))) if k < n else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("prompts", nargs="+")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from rlprompt.config import load_config
    from rlprompt.task import Task

    config = load_config(args.config, args.overrides)
    task = Task.from_config(config)
    labels = task.labels("train")
    k = config.env.batch_size or len(labels)
    print(f"{config.task_model.label}, train split of {config.data.dir} (n={len(labels)}), minibatches of {k}")
    for prompt in args.prompts:
        log_probs = torch.log_softmax(task.logits([prompt], "train")[0], -1)
        gold = log_probs[torch.arange(len(labels)), labels].numpy()
        sd = minibatch_sd(gold, k)
        accuracy = float((log_probs.argmax(-1) == labels).float().mean())
        print(
            f"{prompt!r:42} gold log-prob mean {gold.mean():+.4f}  accuracy {accuracy:.4f}  "
            f"per-example sd {gold.std(ddof=1):.4f}  sd of a minibatch mean {sd:.4f}"
        )


if __name__ == "__main__":
    main()
