"""Reward-evaluation throughput of the task-model API against plain library code on the same work.

``--case minilm`` (default), the MiniLM encoder task model (score cache off):

* framework: (prompt, example) scorings/s through ``TaskModel.score`` (splicing, sorting,
  batching, verbalizer embeddings, similarity, bookkeeping);
* raw: ``model(input_ids, attention_mask)`` + mean pooling on exactly the tensors the
  framework built for the same call (recorded, then replayed), so the ratio is the
  framework's overhead and nothing else;
* then the SST-2 test accuracy of several manual prompts.

``--case smollm2``, the causal LM SmolLM2-135M-Instruct on SST-2 with RLPrompt's layout
(``{sentence} {prompt}``, verbalizers " terrible" / " great"), 5-word prompts, 16 prompts x 16
train examples per call (score cache off, prefix cache on):

* framework: scorings/s through ``TaskModel.score`` in the steady state of training, where
  the minibatch's examples were read in earlier calls (their key/value caches are reused);
  the first call of an example (its prefix computed) is reported as "cold";
* plain: a batched Hugging Face forward of the full sequences (tokenized beforehand, sorted
  by length, right padded, batch 64, the LM head at the last position) on the same pairs;
* their ratio (median over interleaved repeats) and the largest score difference.

    python experiments/bench_reward_throughput.py [--case smollm2] [--data-dir ../shared/data/sst-2/16-13]
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

from rlprompt.config import Config, DataConfig
from rlprompt.task import Task
from rlprompt.task_models import HFTaskModelConfig

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


def causal_case(args: argparse.Namespace, data_dir: Path) -> dict:
    """The ``--case smollm2`` measurement (see the module docstring)."""
    import numpy as np

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch_size = args.batch_size or (256 if device.type == "cuda" else 64)
    config = Config(task_model=HFTaskModelConfig(kind="causal_lm", name_or_path="embedded:smollm2", cache_size=0,
                                                 batch_size=batch_size),
                    data=DataConfig(dir=str(data_dir)), template="{sentence} {prompt}", prompt="It was",
                    verbalizers=[" terrible", " great"])  # fmt: skip
    task = Task.from_config(config)
    tm = task.task_model
    model = tm.model
    rng = np.random.default_rng(0)
    from rlprompt.envs import build_vocabulary

    vocabulary = build_vocabulary(tm, top_k=1000)
    texts = task.data.train.texts[: args.examples]

    def fresh_prompts() -> list[str]:
        return [" ".join(rng.choice(vocabulary, size=5)) for _ in range(args.prompts)]

    def plain_inputs(prompts: list[str]) -> tuple[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], torch.Tensor]:
        """Full sequences, tokenized and sorted by length (so batches pad little), and the order."""
        strings = [f"{t} {p}" for p in prompts for t in texts]
        encoded = [tm.tokenizer(s)["input_ids"] for s in strings]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        encoded = [encoded[i] for i in order]
        batches = []
        for start in range(0, len(encoded), batch_size):
            rows = encoded[start : start + batch_size]
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width), tm.pad_id, dtype=torch.long)
            mask = torch.zeros(len(rows), width, dtype=torch.long)
            for i, r in enumerate(rows):
                ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), 1
            batches.append((ids.to(device), mask.to(device), torch.tensor([len(r) - 1 for r in rows], device=device)))
        return batches, torch.tensor(order)

    verbalizers = tm._verbalizer_tensor

    def plain(batches, order: torch.Tensor) -> tuple[float, torch.Tensor]:
        sync(device)
        start = time.perf_counter()
        outs = []
        with torch.inference_mode():
            for ids, mask, last in batches:
                hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
                logits = model.lm_head(hidden[torch.arange(len(ids), device=device), last]).float()
                outs.append(torch.log_softmax(logits, -1)[:, verbalizers])
        sync(device)
        elapsed = time.perf_counter() - start
        scores = torch.empty(len(order), 2)
        scores[order] = torch.cat(outs).cpu()
        return elapsed, scores

    def framework(prompts: list[str]) -> tuple[float, torch.Tensor]:
        sync(device)
        start = time.perf_counter()
        scores = tm.score(prompts, texts)
        sync(device)
        return time.perf_counter() - start, scores.reshape(-1, 2)

    cold_s, _ = framework(fresh_prompts())  # the examples' prefixes computed once, as in a run's first step
    framework_s, plain_s, diffs = [], [], []
    for _ in range(args.repeats):
        prompts = fresh_prompts()
        batches, order = plain_inputs(prompts)
        f, ours = framework(prompts)
        p, theirs = plain(batches, order)
        framework_s.append(f)
        plain_s.append(p)
        diffs.append(float((ours - theirs).abs().max()))
    scorings = args.prompts * len(texts)
    ratios = [p / f for f, p in zip(framework_s, plain_s, strict=True)]
    result = {
        "case": "smollm2",
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "dtype": str(tm.dtype).replace("torch.", ""),
        "torch_threads": torch.get_num_threads(),
        "batch_size": batch_size,
        "prompts": args.prompts,
        "examples": len(texts),
        "scorings_per_call": scorings,
        "framework_scorings_per_s": scorings / statistics.median(framework_s),
        "framework_cold_scorings_per_s": scorings / cold_s,
        "plain_scorings_per_s": scorings / statistics.median(plain_s),
        "ratio_framework_over_plain": statistics.median(ratios),
        "ratio_cold_over_plain": (scorings / cold_s) / (scorings / statistics.median(plain_s)),
        "max_abs_score_diff": max(diffs),
    }
    print(f"SmolLM2-135M-Instruct, {result['device']}, {result['dtype']}, {result['torch_threads']} threads, batch {batch_size}")
    print(f"{args.prompts} fresh 5-word prompts x {len(texts)} SST-2 train examples = {scorings} scorings per call, "
          f"template '{{sentence}} {{prompt}}', median of {args.repeats} interleaved repeats")  # fmt: skip
    print(f"framework (TaskModel.score, examples' KV cached): {result['framework_scorings_per_s']:.1f} scorings/s"
          f"   (first call, prefixes computed: {result['framework_cold_scorings_per_s']:.1f})")  # fmt: skip
    print(f"plain batched HF forward of the full sequences:  {result['plain_scorings_per_s']:.1f} scorings/s")
    print(f"ratio framework / plain: {result['ratio_framework_over_plain']:.2f}  "
          f"(per repeat: {', '.join(f'{r:.2f}' for r in ratios)}; first call {result['ratio_cold_over_plain']:.2f})")
    print(f"largest |score difference| framework vs plain: {result['max_abs_score_diff']:.1e}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["minilm", "smollm2"], default="minilm")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "sst-2" / "16-13"))
    parser.add_argument("--examples", type=int, default=None, help="sentences per timed call (512 minilm, 16 smollm2)")
    parser.add_argument("--prompts", type=int, default=None, help="prompts per timed call (4 minilm, 16 smollm2)")
    parser.add_argument("--batch-size", type=int, default=None, help="pairs per forward (default: 64 cpu, 1024 cuda)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json-out", default=None, help="also write the results here")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    data_dir = Path(args.data_dir)
    if not (data_dir / "test.tsv").is_file():
        sys.exit(f"SST-2 data not found at {data_dir}; pass --data-dir")
    if args.case == "smollm2":
        args.examples, args.prompts = args.examples or 16, args.prompts or 16
        result = causal_case(args, data_dir)
        if args.json_out:
            Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
        return
    args.examples, args.prompts = args.examples or 512, args.prompts or 4
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch_size = args.batch_size or (1024 if device.type == "cuda" else 64)
    config = Config(
        task_model=HFTaskModelConfig(cache_size=0, batch_size=batch_size),
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
