"""Reward-evaluation throughput of the task-model API against the raw model forward.

Measures, in one run and on one device, for the MiniLM encoder task model (cache off):

* framework: (prompt, example) scorings/s through ``TaskModel.score`` (splicing, sorting,
  batching, verbalizer embeddings, similarity, bookkeeping);
* raw: ``model(input_ids, attention_mask)`` + mean pooling on exactly the tensors the
  framework built for the same call (recorded, then replayed), so the ratio is the
  framework's overhead and nothing else.

It prints the ratio framework/raw (median over interleaved repeats) with both absolute
rates, then the SST-2 test accuracy of several manual prompts.

    python experiments/bench_reward_throughput.py [--data-dir ../shared/data/sst-2/16-13]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from _bench_utils import record_batches, sync, time_raw_encoder

from rlprompt.config import Config, DataConfig, TaskModelConfig
from rlprompt.task import Task

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [
    "It was",
    "All in all, it was",
    "The movie is",
    "In summary, the film was",
    "My review:",
    "Overall, I thought it was",
    "This one is",
    "Critics called it",
]
ACCURACY_PROMPTS = ["It was", "", "All in all, it was", "The movie is", "In summary, the film was"]


def time_framework(task: Task, prompts: list[str], texts: list[str]) -> float:
    tm = task.task_model
    tm._verbalizer_cache.clear()  # every prompt is new: verbalizer rows are computed too
    sync(tm.device)
    start = time.perf_counter()
    tm.score(prompts, texts)
    sync(tm.device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "sst-2" / "16-13"))
    parser.add_argument("--examples", type=int, default=512, help="test sentences per timed call")
    parser.add_argument("--prompts", type=int, default=4, help="prompts per timed call")
    parser.add_argument("--batch-size", type=int, default=None, help="pairs per forward (default: 64 cpu, 1024 cuda)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json-out", default=None, help="also write the results here")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    data_dir = Path(args.data_dir)
    if not (data_dir / "test.tsv").is_file():
        sys.exit(f"SST-2 data not found at {data_dir}; pass --data-dir")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch_size = args.batch_size or (1024 if device.type == "cuda" else 64)
    config = Config(
        task_model=TaskModelConfig(cache_size=0, batch_size=batch_size),
        data=DataConfig(dir=str(data_dir)),
    )
    task = Task.from_config(config)
    tm = task.task_model
    texts = task.data.test.texts[: args.examples]
    tm.input_layout.encode_texts(task.data.test.texts)  # tokenized once per dataset, as in any run

    # Warm-up both paths once.
    prompts = PROMPTS[: args.prompts]
    tm._verbalizer_cache.clear()
    batches = record_batches(tm, lambda: tm.score(prompts, texts))
    time_raw_encoder(tm, batches)
    framework_s, raw_s = [], []
    for _ in range(args.repeats):
        framework_s.append(time_framework(task, prompts, texts))
        raw_s.append(time_raw_encoder(tm, batches))
    scorings = len(prompts) * len(texts)
    rows = sum(int(ids.shape[0]) for ids, _ in batches)
    ratios = [r / f for f, r in zip(framework_s, raw_s, strict=True)]
    result = {
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "dtype": str(tm.dtype).replace("torch.", ""),
        "torch_threads": torch.get_num_threads(),
        "batch_size": batch_size,
        "prompts": len(prompts),
        "examples": len(texts),
        "scorings_per_call": scorings,
        "sequences_per_call": rows,
        "framework_scorings_per_s": scorings / statistics.median(framework_s),
        "raw_scorings_per_s": scorings / statistics.median(raw_s),
        "raw_sentences_per_s": rows / statistics.median(raw_s),
        "ratio_framework_over_raw": statistics.median(ratios),
    }
    print(f"device {result['device']}, {result['dtype']}, {result['torch_threads']} threads, batch {batch_size}")
    print(
        f"{len(prompts)} prompts x {len(texts)} SST-2 test sentences = {scorings} scorings per call "
        f"({rows} sequences incl. verbalizers), median of {args.repeats} interleaved repeats"
    )
    print(f"framework (TaskModel.score, cache off): {result['framework_scorings_per_s']:.1f} scorings/s")
    print(
        f"raw model forward + pooling, same tensors: {result['raw_scorings_per_s']:.1f} scorings/s ({result['raw_sentences_per_s']:.1f} sentences/s)"
    )
    print(
        f"ratio framework / raw: {result['ratio_framework_over_raw']:.3f}  (per repeat: {', '.join(f'{r:.3f}' for r in ratios)})"
    )

    task.task_model.config.cache_size = 200_000
    accuracy = {}
    for prompt in ACCURACY_PROMPTS:
        metrics = task.evaluate(prompt, "test")
        accuracy[prompt] = metrics["accuracy"]
        print(
            f"SST-2 test accuracy {metrics['accuracy']:.4f}  prompt {prompt!r}  (predicted per class {metrics['predicted_counts']})"
        )
    result["sst2_test_accuracy"] = accuracy
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
