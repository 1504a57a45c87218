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

``--case squad``, generation with SmolLM2 on SQuAD, the prompt after the passage and question
(``"{context}\nQuestion: {question}\n{prompt}\nAnswer:"``), 16 prompts x 16 train questions:

* likelihood reward: reference log-likelihood scorings/s through
  ``CausalGenerationModel.log_likelihood`` (steady state: the passages' key/value caches were
  computed by an earlier call) against a plain batched HF forward of the full sequences
  (passage, question, prompt, answer, newline; sorted by length, right padded; the LM head
  applied only at the answer positions) reading the answer tokens' log-probs, on the same
  (prompt, question, answer) rows; their ratio;
* generation: generated tokens/s of ``CausalGenerationModel.generate`` (greedy, stop at a
  newline, 24 new tokens at most) against ``model.generate`` on the same inputs (left padded,
  greedy, ``stop_strings=["\n"]``), 4 prompts x 16 questions; their ratio and whether the
  texts agree.

``--case demos``, SmolLM2 on SST-2 with demonstrations as the prompt (``{demos}`` before the
review, ``Review: {sentence}\nSentiment: {label_word}`` each), 16 fresh class-balanced blocks of
``--demos`` (4) train demonstrations x 16 test reviews per call:

* framework: scorings/s through ``TaskModel.score``: each block's key/value cache computed once
  and shared by the reviews scored with it (and kept: scoring the same blocks again is reported too);
* plain: a batched HF forward of the full sequences (block, review, instruction; tokenized
  beforehand, sorted by length, right padded, batch 64, the LM head at the last position);
* their ratio (median over interleaved repeats) and the largest score difference;
* per-input blocks (retrieval's case): every pair its own fresh block, scored by
  ``TaskModel.score_pairs`` (what ``Task.evaluate_per_input`` calls) against the plain forward of
  the same sequences, and its time over the shared blocks' (what per-input prompts cost).

    python experiments/benchmarks/bench_reward_throughput.py [--case smollm2|squad|demos] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _bench_utils import record_batches, sync, time_raw_encoder

from rlprompt.config import Config, DataConfig
from rlprompt.task import Task
from rlprompt.task_models import HFTaskModelConfig
from rlprompt.template import render

ROOT = Path(__file__).resolve().parents[2]
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


def sorted_batches(
    encoded: list[list[int]], batch_size: int, pad_id: int, device: torch.device
) -> tuple[list, torch.Tensor]:
    """Token-id rows sorted by length (so batches pad little), right padded into batches of
    (ids, mask, last position); and the order (row ``k`` of the sorted list is ``encoded[order[k]]``)."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    batches = []
    for start in range(0, len(order), batch_size):
        rows = [encoded[i] for i in order[start : start + batch_size]]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), 1
        batches.append((ids.to(device), mask.to(device), torch.tensor([len(r) - 1 for r in rows], device=device)))
    return batches, torch.tensor(order)


def plain_verbalizer_scores(
    model, batches: list, order: torch.Tensor, verbalizers: torch.Tensor, device: torch.device
) -> tuple[float, torch.Tensor]:
    """The plain baseline: a batched HF forward of the full sequences, the LM head at each row's
    last position, the verbalizers' log-probs; (seconds, scores in the rows' original order)."""
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
    scores = torch.empty(len(order), len(verbalizers))
    scores[order] = torch.cat(outs).cpu()
    return elapsed, scores


def causal_case(args: argparse.Namespace, data_dir: Path) -> dict:
    """The ``--case smollm2`` measurement (see the module docstring)."""
    import numpy as np

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch_size = args.batch_size or (256 if device.type == "cuda" else 64)
    config = Config(
        task_model=HFTaskModelConfig(
            kind="causal_lm", name_or_path="embedded:smollm2", cache_size=0, batch_size=batch_size
        ),
        data=DataConfig(dir=str(data_dir)),
        template="{sentence} {prompt}",
        prompt="It was",
        verbalizers=[" terrible", " great"],
    )
    task = Task.from_config(config)
    tm = task.task_model
    model = tm.model
    rng = np.random.default_rng(0)
    from rlprompt.envs import build_vocabulary

    vocabulary = build_vocabulary(tm, top_k=1000)
    texts = task.data.train.texts[: args.examples]

    def fresh_prompts() -> list[str]:
        return [" ".join(rng.choice(vocabulary, size=5)) for _ in range(args.prompts)]

    def plain_inputs(prompts: list[str]) -> tuple[list, torch.Tensor]:
        """Full sequences, tokenized before timing, in length-sorted batches."""
        encoded = [tm.tokenizer(f"{t} {p}")["input_ids"] for p in prompts for t in texts]
        return sorted_batches(encoded, batch_size, tm.pad_id, device)

    def plain(batches, order: torch.Tensor) -> tuple[float, torch.Tensor]:
        return plain_verbalizer_scores(model, batches, order, tm._verbalizer_tensor, device)

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
    print(
        f"SmolLM2-135M-Instruct, {result['device']}, {result['dtype']}, {result['torch_threads']} threads, batch {batch_size}"
    )
    print(
        f"{args.prompts} fresh 5-word prompts x {len(texts)} SST-2 train examples = {scorings} scorings per call, "
        f"template '{{sentence}} {{prompt}}', median of {args.repeats} interleaved repeats"
    )
    print(
        f"framework (TaskModel.score, examples' KV cached): {result['framework_scorings_per_s']:.1f} scorings/s"
        f"   (first call, prefixes computed: {result['framework_cold_scorings_per_s']:.1f})"
    )
    print(f"plain batched HF forward of the full sequences:  {result['plain_scorings_per_s']:.1f} scorings/s")
    print(
        f"ratio framework / plain: {result['ratio_framework_over_plain']:.2f}  "
        f"(per repeat: {', '.join(f'{r:.2f}' for r in ratios)}; first call {result['ratio_cold_over_plain']:.2f})"
    )
    print(f"largest |score difference| framework vs plain: {result['max_abs_score_diff']:.1e}")
    return result


DEMOS_TEMPLATE = "{demos}Review: {sentence}\n{prompt}"
DEMO_TEMPLATE = "Review: {sentence}\nSentiment: {label_word}\n\n"


def demos_case(args: argparse.Namespace, data_dir: Path) -> dict:
    """The ``--case demos`` measurement (see the module docstring)."""
    import numpy as np

    from rlprompt.config import config_from_dict

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch_size = args.batch_size or (256 if device.type == "cuda" else 64)
    config = config_from_dict(
        {
            "task_model": {
                "kind": "causal_lm",
                "name_or_path": "embedded:smollm2",
                "cache_size": 0,
                "batch_size": batch_size,
            },
            "data": {"dir": str(data_dir)},
            "template": DEMOS_TEMPLATE,
            "prompt": "Sentiment:",
            "verbalizers": [" negative", " positive"],
            "demos": {"template": DEMO_TEMPLATE},
            "env": {"kind": "demos", "k": args.demos},
            "agent": {"name": "random_search"},
        }
    )
    task = Task.from_config(config)
    tm = task.task_model
    model = tm.model
    pool = task.demo_pool()
    rng = np.random.default_rng(0)
    texts = task.data.test.texts[: args.examples]  # never among the blocks' demonstrations (train)
    tm.input_layout.encode_texts(texts)  # tokenized once per dataset, as in any run

    per_input_rng = np.random.default_rng(1)  # its own draws: the shared blocks are those of earlier runs

    def fresh_blocks(count: int | None = None, generator: np.random.Generator = rng) -> list[str]:
        """Class-balanced random blocks, as the env's random search draws them."""
        by_class = [np.flatnonzero(np.asarray(pool.labels) == c) for c in range(pool.num_classes)]
        blocks = []
        for _ in range(count or args.prompts):
            ids = np.concatenate(
                [generator.choice(members, size=args.demos // 2, replace=False) for members in by_class]
            )
            blocks.append(pool.render(generator.permutation(ids).tolist()))
        return blocks

    def per_input_blocks() -> list[str]:  # one fresh block per (block, review) pair: per-input prompts
        return fresh_blocks(args.prompts * len(texts), per_input_rng)

    def plain_pairs(strings: list[str]) -> tuple[list, torch.Tensor, float]:
        encoded = [tm.tokenizer(s)["input_ids"] for s in strings]
        batches, order = sorted_batches(encoded, batch_size, tm.pad_id, device)
        return batches, order, sum(len(e) for e in encoded) / len(encoded)

    def plain_inputs(blocks: list[str]) -> tuple[list, torch.Tensor, float]:
        """Full sequences (the whole string tokenized, as a user's tokenizer reads it) in
        length-sorted batches, and their mean length."""
        strings = [render(task.config.model_template, {"prompt": b, "sentence": t}) for b in blocks for t in texts]
        encoded = [tm.tokenizer(s)["input_ids"] for s in strings]
        batches, order = sorted_batches(encoded, batch_size, tm.pad_id, device)
        return batches, order, sum(len(e) for e in encoded) / len(encoded)

    def plain(batches, order: torch.Tensor) -> tuple[float, torch.Tensor]:
        return plain_verbalizer_scores(model, batches, order, tm._verbalizer_tensor, device)

    def framework(blocks: list[str]) -> tuple[float, torch.Tensor]:
        sync(device)
        start = time.perf_counter()
        scores = tm.score(blocks, texts)
        sync(device)
        return time.perf_counter() - start, scores.reshape(-1, 2)

    pair_texts = [t for _ in range(args.prompts) for t in texts]

    def per_input(blocks: list[str]) -> tuple[float, torch.Tensor]:
        """Each (block, review) pair with its own block: Task.evaluate_per_input's call."""
        sync(device)
        start = time.perf_counter()
        scores = tm.score_pairs(blocks, [[t] for t in pair_texts])
        sync(device)
        return time.perf_counter() - start, torch.cat(scores)

    framework(fresh_blocks())  # warm-up
    framework_s, plain_s, again_s, diffs, lengths = [], [], [], [], []
    per_input_s, plain_pair_s, pair_diffs = [], [], []
    for _ in range(args.repeats):
        blocks = per_input_blocks()
        batches, order, _ = plain_pairs(
            [
                render(task.config.model_template, {"prompt": b, "sentence": t})
                for b, t in zip(blocks, pair_texts, strict=True)
            ]
        )
        f, ours = per_input(blocks)
        p, theirs = plain(batches, order)
        per_input_s.append(f)
        plain_pair_s.append(p)
        pair_diffs.append(float((ours - theirs).abs().max()))
        blocks = fresh_blocks()
        batches, order, mean_length = plain_inputs(blocks)
        f, ours = framework(blocks)  # new blocks: each block's key/value cache computed once, shared by the reviews
        a, _ = framework(blocks)  # the same blocks again (a prompt re-scored): its cache is kept
        p, theirs = plain(batches, order)
        framework_s.append(f)
        again_s.append(a)
        plain_s.append(p)
        lengths.append(mean_length)
        diffs.append(float((ours - theirs).abs().max()))
    scorings = args.prompts * len(texts)
    ratios = [p / f for f, p in zip(framework_s, plain_s, strict=True)]
    result = {
        "case": "demos",
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "dtype": str(tm.dtype).replace("torch.", ""),
        "torch_threads": torch.get_num_threads(),
        "batch_size": batch_size,
        "demonstrations": args.demos,
        "prompts": args.prompts,
        "examples": len(texts),
        "mean_sequence_tokens": statistics.mean(lengths),
        "scorings_per_call": scorings,
        "framework_scorings_per_s": scorings / statistics.median(framework_s),
        "framework_rescored_scorings_per_s": scorings / statistics.median(again_s),
        "plain_scorings_per_s": scorings / statistics.median(plain_s),
        "ratio_framework_over_plain": statistics.median(ratios),
        "ratio_rescored_over_plain": statistics.median([p / a for a, p in zip(again_s, plain_s, strict=True)]),
        "max_abs_score_diff": max(diffs),
        "per_input_scorings_per_s": scorings / statistics.median(per_input_s),
        "plain_per_input_scorings_per_s": scorings / statistics.median(plain_pair_s),
        "ratio_per_input_over_plain": statistics.median(
            [p / f for f, p in zip(per_input_s, plain_pair_s, strict=True)]
        ),
        "per_input_cost_over_fixed_blocks": statistics.median(per_input_s) / statistics.median(framework_s),
        "per_input_max_abs_score_diff": max(pair_diffs),
    }
    print(
        f"SmolLM2-135M-Instruct, {result['device']}, {result['dtype']}, {result['torch_threads']} threads, batch {batch_size}"
    )
    print(
        f"{args.prompts} fresh blocks of {args.demos} SST-2 train demonstrations x {len(texts)} test reviews = {scorings} "
        f"scorings per call ({result['mean_sequence_tokens']:.0f} tokens a full sequence), template "
        f"{DEMOS_TEMPLATE!r}, median of {args.repeats} interleaved repeats"
    )
    print(
        f"framework (TaskModel.score, each block's KV computed once): {result['framework_scorings_per_s']:.1f} scorings/s"
        f"   (the same blocks scored again, caches kept: {result['framework_rescored_scorings_per_s']:.1f})"
    )
    print(f"plain batched HF forward of the full sequences:  {result['plain_scorings_per_s']:.1f} scorings/s")
    print(
        f"ratio framework / plain: {result['ratio_framework_over_plain']:.2f}  "
        f"(per repeat: {', '.join(f'{r:.2f}' for r in ratios)}; blocks scored again {result['ratio_rescored_over_plain']:.2f})"
    )
    print(f"largest |score difference| framework vs plain: {result['max_abs_score_diff']:.1e}")
    print(
        f"per-input blocks (each of the {scorings} pairs its own block, as retrieval gives; Task.evaluate_per_input): "
        f"{result['per_input_scorings_per_s']:.1f} scorings/s, plain {result['plain_per_input_scorings_per_s']:.1f}, "
        f"ratio {result['ratio_per_input_over_plain']:.2f}; {result['per_input_cost_over_fixed_blocks']:.2f}x the time "
        f"of {args.prompts} shared blocks; largest |score difference| {result['per_input_max_abs_score_diff']:.1e}"
    )
    return result


DEFAULT_DATA = str(ROOT.parent / "shared" / "data" / "sst-2" / "16-13")
SQUAD_TEMPLATE = "{context}\nQuestion: {question}\n{prompt}\nAnswer:"


def squad_case(args: argparse.Namespace, data_dir: Path) -> dict:
    """The ``--case squad`` measurement (see the module docstring)."""
    import numpy as np

    from rlprompt.config import config_from_dict

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch_size = args.batch_size or (256 if device.type == "cuda" else 16)
    config = config_from_dict(
        {
            "task": "generation",
            "template": SQUAD_TEMPLATE,
            "prompt": "Answer briefly.",
            "task_model": {
                "kind": "causal_lm",
                "name_or_path": "embedded:smollm2",
                "cache_size": 0,
                "batch_size": batch_size,
                "max_sentence_tokens": 384,
            },
            "data": {"dir": str(data_dir), "input_fields": ["context", "question"]},
            "generation": {"max_new_tokens": 24, "stop": ["\n"], "metrics": ["f1"], "batch_size": batch_size},
        }
    )
    task = Task.from_config(config)
    tm = task.task_model
    model = tm.model
    rng = np.random.default_rng(0)
    from rlprompt.envs import build_vocabulary

    vocabulary = build_vocabulary(tm, top_k=1000)
    examples = task.data.train.examples[: args.examples]
    references = task.data.train.references[: args.examples]

    def fresh_prompts(n: int) -> list[str]:
        return [" ".join(rng.choice(vocabulary, size=5)) for _ in range(n)]

    def full_ids(prompt: str, example: dict) -> list[int]:
        pre, post = tm.input_layout.encode_texts([example])[0]
        return pre + tm.input_layout.prompt_ids(prompt) + post

    def plain_likelihood(prompts: list[str]) -> tuple[float, torch.Tensor]:
        rows = [
            (p, n, tuple(tm.reference_ids(ref)))
            for p in range(len(prompts))
            for n in range(len(examples))
            for ref in references[n]
        ]
        encoded = [full_ids(prompts[p], examples[n]) + list(ref) for p, n, ref in rows]  # tokenized before timing
        order = sorted(range(len(rows)), key=lambda i: len(encoded[i]))
        sync(device)
        start = time.perf_counter()
        means = torch.empty(len(rows))
        with torch.inference_mode():
            for first in range(0, len(order), batch_size):
                chunk = order[first : first + batch_size]
                width = max(len(encoded[i]) for i in chunk)
                ids = torch.full((len(chunk), width), tm.pad_id, dtype=torch.long)
                mask = torch.zeros(len(chunk), width, dtype=torch.long)
                for b, i in enumerate(chunk):
                    ids[b, : len(encoded[i])], mask[b, : len(encoded[i])] = torch.tensor(encoded[i]), 1
                hidden = model.model(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
                for b, i in enumerate(chunk):  # the LM head only where the answer is read
                    ref, end = rows[i][2], len(encoded[i])
                    positions = torch.arange(end - len(ref) - 1, end - 1, device=device)
                    log_probs = torch.log_softmax(model.lm_head(hidden[b, positions]).float(), -1)
                    means[i] = (
                        log_probs[torch.arange(len(ref), device=device), torch.tensor(ref, device=device)].mean().cpu()
                    )
        sync(device)
        elapsed = time.perf_counter() - start
        best = torch.full((len(prompts), len(examples)), -torch.inf)
        for (p, n, _), value in zip(rows, means, strict=True):
            best[p, n] = max(best[p, n], value)
        return elapsed, best

    def framework_likelihood(prompts: list[str]) -> tuple[float, torch.Tensor]:
        sync(device)
        start = time.perf_counter()
        values = tm.log_likelihood(prompts, [examples] * len(prompts), [references] * len(prompts))
        sync(device)
        return time.perf_counter() - start, torch.stack(values)

    cold_s, _ = framework_likelihood(fresh_prompts(args.prompts))
    framework_s, plain_s, diffs = [], [], []
    for _ in range(args.repeats):
        prompts = fresh_prompts(args.prompts)
        f, ours = framework_likelihood(prompts)
        p, theirs = plain_likelihood(prompts)
        framework_s.append(f)
        plain_s.append(p)
        diffs.append(float((ours - theirs).abs().max()))
    scorings = args.prompts * len(examples)
    ratios = [p / f for f, p in zip(framework_s, plain_s, strict=True)]

    gen_prompts = fresh_prompts(4)
    inputs = [full_ids(p, e) for p in gen_prompts for e in examples]
    order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]))

    def plain_generate() -> tuple[float, list[str], int]:
        texts: list[str] = [""] * len(inputs)
        tokens = 0
        sync(device)
        start = time.perf_counter()
        with torch.inference_mode():
            for first in range(0, len(order), batch_size):
                chunk = order[first : first + batch_size]
                width = max(len(inputs[i]) for i in chunk)
                ids = torch.full((len(chunk), width), tm.pad_id, dtype=torch.long)
                mask = torch.zeros(len(chunk), width, dtype=torch.long)
                for b, i in enumerate(chunk):
                    ids[b, width - len(inputs[i]) :], mask[b, width - len(inputs[i]) :] = torch.tensor(inputs[i]), 1
                out = model.generate(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    max_new_tokens=24,
                    do_sample=False,
                    stop_strings=["\n"],
                    tokenizer=tm.tokenizer,
                    pad_token_id=tm.pad_id,
                )
                for b, i in enumerate(chunk):
                    new = [t for t in out[b, width:].tolist() if t != tm.pad_id]
                    tokens += len(new)
                    texts[i] = tm.tokenizer.decode(new, skip_special_tokens=True).split("\n")[0].strip()
        sync(device)
        return time.perf_counter() - start, texts, tokens

    def framework_generate() -> tuple[float, list[str], int]:
        tm.clear_cache()
        before = tm.stats.generated_tokens
        sync(device)
        start = time.perf_counter()
        outputs = tm.generate(gen_prompts, [examples] * len(gen_prompts))
        sync(device)
        return time.perf_counter() - start, [t for row in outputs for t in row], tm.stats.generated_tokens - before

    gen_ratios, agree = [], 0.0
    ours_tps, theirs_tps = [], []
    for _ in range(max(1, args.repeats // 2)):
        f_s, ours_texts, ours_tokens = framework_generate()
        p_s, plain_texts, plain_tokens = plain_generate()
        ours_tps.append(ours_tokens / f_s)
        theirs_tps.append(plain_tokens / p_s)
        gen_ratios.append(ours_tps[-1] / theirs_tps[-1])
        agree = sum(a == b for a, b in zip(ours_texts, plain_texts, strict=True)) / len(inputs)
    result = {
        "case": "squad",
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "dtype": str(tm.dtype).replace("torch.", ""),
        "torch_threads": torch.get_num_threads(),
        "batch_size": batch_size,
        "prompts": args.prompts,
        "examples": len(examples),
        "likelihood_scorings_per_call": scorings,
        "framework_likelihood_scorings_per_s": scorings / statistics.median(framework_s),
        "framework_cold_likelihood_scorings_per_s": scorings / cold_s,
        "plain_likelihood_scorings_per_s": scorings / statistics.median(plain_s),
        "ratio_likelihood_framework_over_plain": statistics.median(ratios),
        "max_abs_likelihood_diff": max(diffs),
        "generation_rows": len(inputs),
        "framework_generated_tokens_per_s": statistics.median(ours_tps),
        "plain_generate_tokens_per_s": statistics.median(theirs_tps),
        "ratio_generation_framework_over_generate": statistics.median(gen_ratios),
        "generated_texts_identical": agree,
    }
    print(
        f"SmolLM2-135M-Instruct, SQuAD, {result['device']}, {result['dtype']}, {result['torch_threads']} threads, "
        f"batch {batch_size}"
    )
    print(
        f"likelihood reward: {args.prompts} fresh 5-word prompts x {len(examples)} train questions = {scorings} "
        f"scorings per call, template {SQUAD_TEMPLATE!r}, median of {args.repeats} interleaved repeats"
    )
    print(
        f"framework (log_likelihood, passages' KV cached): {result['framework_likelihood_scorings_per_s']:.1f} "
        f"scorings/s   (first call, prefixes computed: {result['framework_cold_likelihood_scorings_per_s']:.1f})"
    )
    print(
        f"plain batched HF forward of the full sequences:  {result['plain_likelihood_scorings_per_s']:.1f} scorings/s"
    )
    print(
        f"ratio framework / plain: {result['ratio_likelihood_framework_over_plain']:.2f}  "
        f"(per repeat: {', '.join(f'{r:.2f}' for r in ratios)})"
    )
    print(f"largest |likelihood difference|: {result['max_abs_likelihood_diff']:.1e}")
    print(f"generation: 4 prompts x {len(examples)} questions, greedy, <= 24 new tokens, stop at newline")
    print(
        f"framework generate: {result['framework_generated_tokens_per_s']:.1f} tokens/s   "
        f"model.generate: {result['plain_generate_tokens_per_s']:.1f} tokens/s   "
        f"ratio {result['ratio_generation_framework_over_generate']:.2f}  "
        f"(identical texts: {agree:.0%})"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["minilm", "smollm2", "squad", "demos"], default="minilm")
    parser.add_argument("--demos", type=int, default=4, help="demonstrations per block (--case demos)")
    parser.add_argument("--data-dir", default=DEFAULT_DATA)
    parser.add_argument("--examples", type=int, default=None, help="sentences per timed call (512 minilm, 16 smollm2)")
    parser.add_argument("--prompts", type=int, default=None, help="prompts per timed call (4 minilm, 16 smollm2)")
    parser.add_argument("--batch-size", type=int, default=None, help="pairs per forward (default: 64 cpu, 1024 cuda)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json-out", default=None, help="also write the results here")
    parser.add_argument(
        "--skip-accuracy", action="store_true", help="--case minilm: skip the SST-2 test accuracies (smoke runs)"
    )
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.case == "squad":
        data_dir = (
            Path(args.data_dir)
            if args.data_dir != DEFAULT_DATA
            else ROOT.parent / "shared" / "data" / "squad" / "32-13"
        )
        if not (data_dir / "train.jsonl").is_file():
            sys.exit(f"SQuAD data not found at {data_dir}; pass --data-dir")
        args.examples, args.prompts = args.examples or 16, args.prompts or 16
        result = squad_case(args, data_dir)
        if args.json_out:
            Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
        return
    data_dir = Path(args.data_dir)
    if not (data_dir / "test.tsv").is_file():
        sys.exit(f"SST-2 data not found at {data_dir}; pass --data-dir")
    if args.case in ("smollm2", "demos"):
        args.examples, args.prompts = args.examples or 16, args.prompts or 16
        result = (causal_case if args.case == "smollm2" else demos_case)(args, data_dir)
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

    if not args.skip_accuracy:  # (skipped in smoke runs: the throughput ratio alone)
        result["sst2_test_accuracy"] = sst2_test_accuracies(task)
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")


def sst2_test_accuracies(task: Any) -> dict[str, float]:
    """SST-2 test accuracy of the manual prompts of :data:`ACCURACY_PROMPTS` (printed as they come)."""
    task.task_model.config.cache_size = 200_000
    accuracy = {}
    for prompt in ACCURACY_PROMPTS:
        metrics = task.evaluate(prompt, "test")
        accuracy[prompt] = metrics["accuracy"]
        print(
            f"SST-2 test accuracy {metrics['accuracy']:.4f}  prompt {prompt!r}  (predicted per class {metrics['predicted_counts']})"
        )
    return accuracy


if __name__ == "__main__":
    main()
