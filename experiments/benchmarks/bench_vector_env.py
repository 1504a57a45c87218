"""Speed-up of the batched vector env over N independent envs (MiniLM task model).

Both sides step ``TokenPromptEnv(prompt_length=1)`` copies with the same random actions, so
every step scores N fresh prompts on a small per-env minibatch (default 4 examples). The
independent side steps each env alone (one task-model call per env, as Gymnasium's
``SyncVectorEnv`` does); the batched side scores all N prompts in one call. The score cache is
off and verbalizer embeddings are recomputed, so both do the same model work.

    python experiments/benchmarks/bench_vector_env.py [--sizes 1 4 16 64] [--examples 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from _bench_utils import record_batches, time_raw_encoder

from rlprompt.config import Config
from rlprompt.envs import TokenPromptEnv, make_batched_vector_env
from rlprompt.task import Task
from rlprompt.task_models import HFTaskModelConfig


def _clear(task: Task) -> None:
    task.task_model._verbalizer_cache.clear()


def time_independent(envs: list[TokenPromptEnv], actions: np.ndarray) -> float:
    start = time.perf_counter()
    for step_actions in actions:
        for env, action in zip(envs, step_actions, strict=True):
            env.step(int(action))
            env.reset()
    return (time.perf_counter() - start) / len(actions)


def time_batched(vec, actions: np.ndarray) -> float:
    start = time.perf_counter()
    for step_actions in actions:
        vec.step(step_actions)
    return (time.perf_counter() - start) / len(actions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--examples", type=int, default=4, help="train examples per env per step")
    parser.add_argument("--steps", type=int, default=None, help="steps per size (default: about 64 prompts' worth)")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="task-model rows per forward (default 256 cpu, 2048 cuda)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    device = "cuda" if torch.cuda.is_available() else "cpu"
    batch_size = args.batch_size or (2048 if device == "cuda" else 256)
    task = Task.from_config(Config(task_model=HFTaskModelConfig(cache_size=0, batch_size=batch_size)))
    rng = np.random.default_rng(0)
    rows = []
    print(
        f"device {device}, {torch.get_num_threads()} threads, {args.examples} examples per env per step, task-model batch {batch_size}"
    )
    print(
        f"{'N':>4} {'independent s/step':>19} {'batched s/step':>15} {'speed-up':>9} {'speed-up/N':>11} "
        f"{'prompts/s batched':>18} {'model-only speed-up':>20}"
    )
    raw_one_env = None
    for n in args.sizes:
        steps = args.steps or max(2, 64 // n)
        independent = [TokenPromptEnv(task=task, prompt_length=1, batch_size=args.examples) for _ in range(n)]
        for i, env in enumerate(independent):
            env.reset(seed=i)
        vec = make_batched_vector_env(
            TokenPromptEnv, n, task=task, prompt_length=1, batch_size=args.examples, autoreset_mode="SameStep"
        )
        vec.reset(seed=0)
        vocab = len(independent[0].vocabulary)
        warm = rng.integers(0, vocab, size=(1, n))
        time_independent(independent, warm)
        time_batched(vec, warm)
        ratios, t_ind, t_bat = [], [], []
        for _ in range(args.repeats):
            actions = rng.integers(0, vocab, size=(steps, n))
            _clear(task)
            a = time_independent(independent, actions)
            _clear(task)
            b = time_batched(vec, actions)
            t_ind.append(a)
            t_bat.append(b)
            ratios.append(a / b)
        speedup = statistics.median(ratios)
        # What the model alone allows: its time on the batches of one batched step vs N times
        # its time on one env's batch. Below N, the model's batch has saturated the device.
        probe = rng.integers(0, vocab, size=(1, n))
        _clear(task)
        batches = record_batches(task.task_model, lambda probe=probe, vec=vec: time_batched(vec, probe))
        raw_n = statistics.median(time_raw_encoder(task.task_model, batches) for _ in range(args.repeats))
        if raw_one_env is None:
            raw_one_env = raw_n / n
        model_bound = raw_one_env * n / raw_n
        row = {
            "num_envs": n,
            "independent_s_per_step": statistics.median(t_ind),
            "batched_s_per_step": statistics.median(t_bat),
            "speedup": speedup,
            "speedup_over_n": speedup / n,
            "batched_prompts_per_s": n / statistics.median(t_bat),
            "model_only_speedup": model_bound,
        }
        rows.append(row)
        print(
            f"{n:>4} {row['independent_s_per_step']:>19.4f} {row['batched_s_per_step']:>15.4f} {speedup:>9.2f} "
            f"{speedup / n:>11.2f} {row['batched_prompts_per_s']:>18.1f} {model_bound:>20.2f}"
        )
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(
            json.dumps({"device": device, "examples": args.examples, "rows": rows}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
