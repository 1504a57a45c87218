"""Every reusable benchmark of ``experiments/benchmarks`` runs at a tiny size and writes what its
committed results hold, so none can vanish or rot unseen (the slow tier: each loads real models).

Only the shape and sanity of the output are checked (finite positive rates, identical results
where the benchmark promises them): timings themselves are what the benchmarks measure, never
asserted by a test."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, sst2_dir

BENCHMARKS = ROOT / "experiments" / "benchmarks"

pytestmark = pytest.mark.slow


def run_benchmark(script: str, tmp_path: Path, *args: str, timeout: int = 600) -> dict:
    out = tmp_path / f"{script}.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(BENCHMARKS / f"{script}.py"), *args, "--json-out", str(out)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(out.read_text())


def positive(value: float) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


def test_every_benchmark_script_is_smoke_tested_here():
    tested = {"bench_reward_throughput", "bench_vector_env", "bench_lm_head", "bench_api_concurrency", "bench_scaleout"}
    assert {p.stem for p in BENCHMARKS.glob("bench_*.py")} == tested


def test_reward_throughput_minilm_and_smollm2(tmp_path):
    sst2_dir(13)
    minilm = run_benchmark(
        "bench_reward_throughput", tmp_path, "--examples", "8", "--prompts", "2", "--repeats", "1", "--skip-accuracy"
    )
    assert minilm["scorings_per_call"] == 16 and positive(minilm["ratio_framework_over_raw"])
    causal = run_benchmark(
        "bench_reward_throughput", tmp_path, "--case", "smollm2", "--examples", "4", "--prompts", "2", "--repeats", "1"
    )
    assert causal["scorings_per_call"] == 8 and positive(causal["ratio_framework_over_plain"])
    assert causal["max_abs_score_diff"] < 1e-3  # the cached path scores what the plain forward does


def test_vector_env(tmp_path):
    result = run_benchmark("bench_vector_env", tmp_path, "--sizes", "1", "2", "--steps", "2", "--repeats", "1")
    assert [row["num_envs"] for row in result["rows"]] == [1, 2]
    assert all(positive(row["speedup"]) and positive(row["batched_prompts_per_s"]) for row in result["rows"])


def test_lm_head(tmp_path):
    sst2_dir(13)
    result = run_benchmark(
        "bench_lm_head",
        tmp_path,
        "--models",
        "smollm2",
        "--prompts",
        "2",
        "--examples",
        "2",
        "--eval-examples",
        "2",
        "--repeats",
        "1",
    )
    model = result["models"]["smollm2"]
    assert model["vocab_size"] == 49152 and model["training"]["rows"] == 4


def test_api_concurrency_against_the_test_server(tmp_path):
    sst2_dir(13)
    result = run_benchmark(
        "bench_api_concurrency", tmp_path, "--server", "own", "--prompts", "2", "--examples", "2", "--repeats", "1"
    )
    assert set(result["scorings_per_s"]) == {"1", "4", "16"}
    assert all(positive(v) for v in result["scorings_per_s"].values())


def test_scaleout_gives_identical_results_on_one_and_two_workers(tmp_path):
    sst2_dir(13)
    result = run_benchmark("bench_scaleout", tmp_path, "--budget", "8", "--no-ray", "--seeds", "13", timeout=900)
    assert result["cells"] == 3 and all(result["results_identical"].values())
    assert result["model_loads"] == {"local, 1 worker": 1, "local, 2 worker processes": 2}
