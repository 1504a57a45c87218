"""Throughput of the served task model (``task_model.kind: openai``) at concurrency 1, 4 and 16.

Scores SST-2 train reviews with fresh prompts (nothing cached) through a real local
OpenAI-compatible server serving SmolLM2-135M-Instruct, and prints scorings/s at each
``max_concurrency`` with the ratio to concurrency 1, measured in one run (interleaved repeats,
medians). Servers:

* ``transformers`` - ``transformers serve`` (generation-only: classification by the generated
  text), started here on 127.0.0.1 and stopped at the end;
* ``own`` - ``rlprompt.testing.openai_server`` (log-probs scoring), optionally with
  ``--latency-ms`` added to every answer, what a hosted API's network and queue add.

    python experiments/benchmarks/bench_api_concurrency.py --server transformers --json-out experiments/results/api_concurrency_transformers_cpu.json
    python experiments/benchmarks/bench_api_concurrency.py --server own --latency-ms 200 --json-out experiments/results/api_concurrency_latency200_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
LEVELS = (1, 4, 16)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=["transformers", "own"], default="transformers")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="own server: delay added to every answer")
    parser.add_argument(
        "--continuous-batching",
        action="store_true",
        help="transformers serve: batch concurrent requests (its --continuous-batching)",
    )
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "sst-2" / "16-13"))
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from rlprompt.config import config_from_dict
    from rlprompt.task import Task
    from rlprompt.task_models.loading import embedded_smollm2_path
    from rlprompt.testing.openai_server import transformers_serve

    model_dir = str(embedded_smollm2_path())
    port = free_port()
    serving, own = None, None
    if args.server == "transformers":
        serving = transformers_serve(
            model_dir, port, extra_args=["--continuous-batching"] if args.continuous_batching else []
        )
        serving.__enter__()
        model_name, scoring, threads = model_dir, "generation", "transformers serve defaults"
    else:
        from rlprompt.testing.openai_server import OpenAICompatibleServer

        own = OpenAICompatibleServer(model_dir, model_name="smollm2", port=port, max_requests=100_000, lifetime_s=3600)
        own.latency_s = args.latency_ms / 1000
        own.start()
        model_name, scoring, threads = "smollm2", "logprobs", torch.get_num_threads()
    try:
        config = config_from_dict(
            {
                "task_model": {
                    "kind": "openai",
                    "base_url": f"http://127.0.0.1:{port}/v1",
                    "model": model_name,
                    "api_key_env": None,
                    "scoring": scoring,
                    "max_tokens": 2,
                    "response_cache": None,
                    "top_logprobs": 20,
                    "timeout_s": 300,
                },
                "data": {"dir": args.data},
                "template": "Review: {sentence}\n{prompt}",
                "prompt": "Sentiment:",
                "verbalizers": [" negative", " positive"],
            }
        )
        task = Task.from_config(config)
        model = task.task_model
        texts = task.data.train.texts[: args.examples]
        words = model.words()
        rng = np.random.default_rng(0)

        def fresh_prompts() -> list[str]:
            return [" ".join(rng.choice(words, size=5)) + " Sentiment:" for _ in range(args.prompts)]

        model.config.max_concurrency = 4
        model.score(fresh_prompts()[:1], texts[:4])  # warm-up: connections, first-call costs
        rates: dict[int, list[float]] = {level: [] for level in LEVELS}
        for _ in range(args.repeats):
            for level in LEVELS:
                model.config.max_concurrency = level
                prompts = fresh_prompts()
                started = time.perf_counter()
                model.score(prompts, texts)
                rates[level].append(len(prompts) * len(texts) / (time.perf_counter() - started))
        medians = {level: statistics.median(values) for level, values in rates.items()}
        result = {
            "server": (
                "transformers serve" + (" --continuous-batching" if args.continuous_batching else "")
                if args.server == "transformers"
                else "rlprompt test server"
            ),
            "model": "SmolLM2-135M-Instruct",
            "scoring": model.scoring,
            "latency_ms_added": args.latency_ms,
            "requests_per_measure": args.prompts * args.examples,
            "repeats": args.repeats,
            "server_threads": threads,
            "scorings_per_s": {str(k): v for k, v in medians.items()},
            "per_repeat": {str(k): v for k, v in rates.items()},
            "ratio_to_concurrency_1": {str(k): medians[k] / medians[1] for k in LEVELS},
            "cpu_cores": os.cpu_count(),
        }
        print(
            f"{result['server']} serving SmolLM2-135M-Instruct on 127.0.0.1, scoring={model.scoring}, "
            f"{args.prompts} prompts x {args.examples} reviews = {args.prompts * args.examples} requests per "
            f"measure, median of {args.repeats} interleaved repeats"
            + (f", {args.latency_ms:g} ms added to every answer" if args.latency_ms else "")
        )
        for level in LEVELS:
            print(
                f"max_concurrency {level:>2}: {medians[level]:7.2f} scorings/s   ratio to 1: "
                f"{medians[level] / medians[1]:.2f}   (per repeat: {', '.join(f'{v:.2f}' for v in rates[level])})"
            )
        if args.json_out:
            Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    finally:
        if serving is not None:
            serving.__exit__(None, None, None)
        if own is not None:
            own.stop()


if __name__ == "__main__":
    main()
