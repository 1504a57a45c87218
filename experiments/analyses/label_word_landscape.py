"""Every choice of label words of a label-word config, scored on dev and test at once.

One forward per review reads every candidate's probability, so the whole space of a
``env.kind: label_words`` config (``per_class`` words per class: 16 x 16 pairs for SST-2) is
scored exactly on dev and test for the price of one prompt evaluation per split. It says what
search can find at best (the best pair on test is an oracle: never a selection) and whether
the 32-review dev split can tell the good pairs from the bad (the rank correlation of dev and
test accuracy over pairs, and the test accuracy of the pair dev ranks first).

    python experiments/analyses/label_word_landscape.py experiments/configs/sst2-smollm2-label-words.yaml \\
        [--set data.dir=../shared/data/sst-2/16-21] --out experiments/results/label-word-landscape-sst2-smollm2-16-13
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from rlprompt.config import load_config
from rlprompt.envs import build_env
from rlprompt.io import atomic_write_json
from rlprompt.rewards import batch_calibrate
from rlprompt.task import Task


def pair_accuracies(task: Task, candidates: list[list[str]], split: str) -> dict[tuple[str, ...], float]:
    """Calibrated accuracy on ``split`` of every choice of one word per class (distinct words)."""
    texts = task.data.split(split).texts
    labels = torch.tensor(task.data.split(split).labels)
    columns = {}
    for c, words in enumerate(candidates):
        forms = [
            task.verbalizers_for([w if k == c else task.manual_label_words[k] for k in range(task.num_classes)])[c]
            for w in words
        ]
        scores = task.verbalizer_scores(task.config.manual_prompt, texts, forms)
        columns.update({(c, w): scores[:, i] for i, w in enumerate(words)})
    out = {}
    for choice in itertools.product(*candidates):
        if len(set(choice)) < len(choice):
            continue
        raw = torch.stack([columns[(c, w)] for c, w in enumerate(choice)], dim=1)
        logits = batch_calibrate(raw) if task.config.calibration == "batch" else raw
        out[choice] = float((logits.argmax(1) == labels).float().mean())
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    started = time.perf_counter()
    config = load_config(args.config, args.overrides)
    task = Task.from_config(config)
    env = build_env(task, config.env)
    dev, test = pair_accuracies(task, env.candidates, "dev"), pair_accuracies(task, env.candidates, "test")
    pairs = list(dev)
    d, t = np.array([dev[p] for p in pairs]), np.array([test[p] for p in pairs])
    manual = tuple(task.manual_label_words)
    top_dev = pairs[int(np.argmax(d))]  # the first of the best on dev, in candidate order (never by test)
    ties = [p for p in pairs if dev[p] == dev[top_dev]]
    result = {
        "command": "python " + " ".join([sys.argv[0], *sys.argv[1:]]),
        "task_model": config.task_model.label,
        "data": config.data.dir,
        "template": config.template,
        "prompt": config.manual_prompt,
        "candidates": env.candidates,
        "pairs": len(pairs),
        "manual": {"words": manual, "dev": dev.get(manual), "test": test.get(manual)},
        "dev_first": {
            "words": top_dev,
            "dev": dev[top_dev],
            "test": test[top_dev],
            "tied_on_dev": len(ties),
            "test_of_tied_mean": float(np.mean([test[p] for p in ties])),
        },
        "test_oracle": {"words": pairs[int(t.argmax())], "dev": float(d[t.argmax()]), "test": float(t.max())},
        "test_quantiles": {q: float(np.quantile(t, q)) for q in (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)},
        "pairs_beating_manual_on_test": int((t > test[manual]).sum()),
        "spearman_dev_test": spearman(d, t),
        "lm_calls": task.task_model.stats.lm_calls,
        "wall_time_s": round(time.perf_counter() - started, 1),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "landscape.json", json.loads(json.dumps(result, default=list)))
    lines = [f"{k}: {json.dumps(v, default=list)}" for k, v in result.items()]
    (out / "landscape.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
