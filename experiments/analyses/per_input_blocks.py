"""What a per-input policy's blocks are: how many distinct ones it gives a split's inputs, their
class patterns, and how often the prediction follows the last demonstration's label.

    python experiments/analyses/per_input_blocks.py experiments/results/sst2-smollm2-per-input-ppo-16-13 [--split test]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
from pathlib import Path

from rlprompt.experiment import load_policy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--split", default="test", choices=["train", "dev", "test"])
    args = parser.parse_args()
    policy = load_policy(args.run)
    task = policy.env.task
    pool = task.demo_pool()
    data = task.data.split(args.split)
    blocks = policy.prompts(task.inputs(args.split))
    ids = [pool.parse(b) or [] for b in blocks]
    outcomes = json.loads((Path(args.run) / "outcomes.json").read_text())["found"][args.split]
    predicted = outcomes["predictions"]
    patterns = collections.Counter("".join(str(pool.labels[i]) for i in block) for block in ids)
    last = [pool.labels[block[-1]] if block else None for block in ids]
    lines = [
        f"command: python {' '.join([sys.argv[0], *sys.argv[1:]])}",
        f"inputs: {len(blocks)} ({args.split}); distinct blocks: {len(set(blocks))}",
        f"most common blocks (pool ids: count): {collections.Counter(tuple(b) for b in ids).most_common(5)}",
        f"class patterns of the blocks (labels in shown order: count): {patterns.most_common(6)}",
        f"prediction = last demonstration's label: {sum(p == y for p, y in zip(predicted, last, strict=True)) / len(last):.3f}",
        f"last demonstration's label = gold: {sum(g == y for g, y in zip(data.labels, last, strict=True)) / len(last):.3f}",
        f"accuracy: {sum(p == g for p, g in zip(predicted, data.labels, strict=True)) / len(last):.4f}",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
