"""Does batch calibration need the test inputs? Test accuracy of SST-2 prompts raw, calibrated on
the test split itself (what ``calibration: batch`` evaluates), and calibrated with the class shift
estimated on the 64 train + dev reviews of each 16-shot split (what a user of a prompt on single
inputs subtracts).

One model load; each prompt's test scores once (the test split is the same in every split
folder), then train + dev of each split. Prints one line per (split, prompt) and writes JSON.

    python experiments/analyses/calibration_shift.py --out experiments/results/calibration_shift_sst2_smollm2
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROMPTS = [
    "Sentiment:",
    "Sentiment: of",
    "Sentiment: that",
    "Sentiment: it",
    "Sentiment: to",
    "This Label: tone Sentiment:",
    "The tone of the review is",
]
"""The manual prompt of sst2-smollm2.yaml and the prompts the raw-score bench reported."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "experiments" / "configs" / "sst2-smollm2.yaml"))
    parser.add_argument("--splits", nargs="+", default=["16-13", "16-21", "16-42", "16-87", "16-100"])
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data" / "sst-2"))
    parser.add_argument("--out", default=None, help="directory for results.json and stdout.txt")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from rlprompt.config import load_config
    from rlprompt.rewards import accuracy, batch_calibrate, class_log_probs
    from rlprompt.task import Task

    start = time.perf_counter()
    lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    def task_for(split: str, shared: Task | None) -> Task:
        config = load_config(args.config, [f"data.dir={args.data_root}/{split}", "calibration=none"])
        if shared is None:
            return Task.from_config(config)
        return Task.from_config(config, model=shared.task_model.model, tokenizer=shared.task_model.tokenizer)

    first = task_for(args.splits[0], None)
    test = class_log_probs(first.task_model.score(PROMPTS, first.data.test.texts))  # [P, N, C] raw
    test_labels = first.labels("test")
    rows = []
    for split in args.splits:
        task = task_for(split, first)
        seen = class_log_probs(
            torch.cat([task.task_model.score(PROMPTS, task.data.split(s).texts) for s in ("train", "dev")], 1)
        )
        for i, prompt in enumerate(PROMPTS):
            shift = seen[i].mean(0)  # estimated on the 64 train + dev reviews, no labels
            row = {
                "split": split,
                "prompt": prompt,
                "test_raw": float(accuracy(test[i], test_labels)),
                "test_calibrated_on_test": float(accuracy(batch_calibrate(test[i]), test_labels)),
                "test_calibrated_on_train_dev": float(accuracy(test[i] - shift, test_labels)),
            }
            rows.append(row)
            say(
                f"{split:7} {prompt!r:32} test raw {row['test_raw']:.4f}  calibrated on test {row['test_calibrated_on_test']:.4f}"
                f"  with the train+dev shift {row['test_calibrated_on_train_dev']:.4f}"
            )
    gaps = [abs(r["test_calibrated_on_test"] - r["test_calibrated_on_train_dev"]) for r in rows]
    gains = [r["test_calibrated_on_train_dev"] - r["test_raw"] for r in rows]
    say(
        f"|calibrated on test - with the train+dev shift|: mean {sum(gaps) / len(gaps):.4f}, max {max(gaps):.4f} over "
        f"{len(rows)} (split, prompt); with the train+dev shift - raw: mean {sum(gains) / len(gains):+.4f}, "
        f"min {min(gains):+.4f}; {time.perf_counter() - start:.0f} s"
    )
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
        (out / "stdout.txt").write_text(
            f"$ python experiments/analyses/calibration_shift.py --out {args.out}\n" + "\n".join(lines) + "\n"
        )


if __name__ == "__main__":
    main()
