"""Bench backends: cells in this process, in local worker processes and on a local Ray (started
inside the test with 2 CPUs, bounded in time, shut down after) give the same results; a failing
cell is reported while the others finish; a killed driver resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_experiment import ROOT, cli, results_without_times, without_times, write_config


def write_grid(directory: Path, config_path: Path, **extra) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    bench = {
        "base": str(config_path),
        "set": ["budget.prompt_evals=16", "output.tensorboard=false", "output.plot=false"],
        "agents": {"hill_climb": ["agent.name=hill_climb", "env.kind=edit", "agent.n_envs=4"]},
        "tasks": {"small": []},
        "seeds": [1, 2],
        "output_dir": str(directory / "bench-out"),
        "num_cpus": 1,
        **extra,
    }
    path = directory / "bench.yaml"
    path.write_text(yaml.safe_dump(bench))
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory, small_data):
    """The grid run in this process, one cell after another (the local backend)."""
    root = tmp_path_factory.mktemp("reference")
    config_path = write_config(root / "run.yaml", small_data, agent={"name": "random_search", "n_envs": 4})
    bench = write_grid(root / "local", config_path)
    done = cli("bench", str(bench), "--no-progress")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("model loaded") == 1 and done.stdout.count("model reused") == 3  # loaded once
    return config_path, root / "local" / "bench-out"


def same_cells(out: Path, reference_out: Path) -> None:
    assert results_without_times(out) == results_without_times(reference_out)
    cells = sorted((reference_out / "runs").glob("*/*/*/*"))
    assert len(cells) == 4
    for cell in cells:
        assert without_times(out / cell.relative_to(reference_out)) == without_times(cell)


@pytest.mark.slow  # about 50-100 s on 2 cores (worker processes load the model): the slow tier
def test_local_worker_processes_give_the_same_results(tmp_path, reference):
    config_path, reference_out = reference
    bench = write_grid(tmp_path / "procs", config_path)
    done = cli("bench", str(bench), "--no-progress", "--workers", "2")
    assert done.returncode == 0, done.stderr
    assert 1 <= done.stdout.count("model loaded") <= 2  # once per worker process, not once per cell
    same_cells(tmp_path / "procs" / "bench-out", reference_out)


@pytest.mark.slow  # starts a local Ray (about 35 s): the slow tier
def test_ray_backend_gives_the_same_results(tmp_path, reference):
    pytest.importorskip("ray")
    config_path, reference_out = reference
    bench = write_grid(tmp_path / "ray", config_path)
    done = cli("bench", str(bench), "--no-progress", "--backend", "ray", "--workers", "2", timeout=400)
    assert done.returncode == 0, done.stderr
    assert 1 <= done.stdout.count("model loaded") <= 2  # one Ray actor per worker keeps its model
    same_cells(tmp_path / "ray" / "bench-out", reference_out)


@pytest.mark.parametrize(
    "backend",
    [["--workers", "2"], pytest.param(["--backend", "ray", "--workers", "2"], marks=pytest.mark.slow)],
    ids=["processes", "ray"],
)
def test_a_failing_cell_is_reported_and_the_others_finish(tmp_path, small_data, backend):
    if "ray" in backend:
        pytest.importorskip("ray")
    (tmp_path / "data-1").symlink_to(small_data)  # seed 2's data directory does not exist
    config_path = write_config(tmp_path / "run.yaml", small_data, agent={"name": "random_search", "n_envs": 4})
    bench = write_grid(
        tmp_path / "grid", config_path, tasks={"small": [f"data.dir={tmp_path}/data-{{seed}}"]}, add_random_search=False
    )
    done = cli("bench", str(bench), "--no-progress", *backend, timeout=400)
    assert done.returncode == 2
    assert "small/hill_climb/bbase/seed2 FAILED" in done.stdout and "data-2" in done.stdout
    assert "1 bench cell(s) failed" in done.stderr
    rows = results_without_times(tmp_path / "grid" / "bench-out")
    assert [(r["agent"], r["seed"]) for r in rows] == [("hill_climb", "1")]


@pytest.mark.slow  # about 50-100 s on 2 cores (worker processes load the model): the slow tier
def test_a_killed_driver_resumes_where_it_stopped(tmp_path, reference):
    config_path, reference_out = reference
    bench = write_grid(tmp_path / "killed", config_path)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlprompt.cli", "bench", str(bench), "--no-progress", "--workers", "2"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    runs = tmp_path / "killed" / "bench-out" / "runs"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not list(runs.glob("*/*/*/*/best_prompt.json")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, as a lost machine
    proc.wait()
    finished = len(list(runs.glob("*/*/*/*/best_prompt.json")))
    assert 1 <= finished < 4, "the kill came too late to test resuming"
    resumed = cli("bench", str(bench), "--no-progress", "--workers", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.count("finished before, skipped") == finished
    same_cells(tmp_path / "killed" / "bench-out", reference_out)


def test_backend_errors_are_one_line(tmp_path, reference, capsys):
    from rlprompt.cli import main

    config_path, _ = reference
    bench = write_grid(tmp_path / "errors", config_path)
    assert main(["bench", str(bench), "--workers", "0"]) == 2
    assert "--workers must be >= 1" in capsys.readouterr().err
    assert main(["bench", str(bench), "--address", "10.0.0.1:6379"]) == 2
    assert "--address is for --backend ray" in capsys.readouterr().err


# ------------------------------------------------------------------ data-parallel scoring


@pytest.mark.parametrize("kind", ["causal_lm", "masked_lm", "encoder"])
def test_data_parallel_scores_equal_single_device_ones(kind, tiny_clm_dir, tiny_mlm_dir):
    """Two replicas (two CPU 'devices') run the same batches a single device runs: equal scores."""
    import torch

    from conftest import clm_config, mlm_config
    from rlprompt.config import config_from_dict
    from rlprompt.task import Task

    def build(**task_model):
        if kind == "causal_lm":
            return Task.from_config(clm_config(tiny_clm_dir, batch_size=3, prefix_cache_mb=0, **task_model))
        if kind == "masked_lm":
            return Task.from_config(mlm_config(tiny_mlm_dir, batch_size=3, **task_model))
        return Task.from_config(
            config_from_dict(
                {
                    "task_model": {"kind": "encoder", "name_or_path": str(tiny_mlm_dir), "batch_size": 3, **task_model},
                    "verbalizers": ["{prompt} terrible .", "{prompt} great ."],
                }
            )
        )

    texts = [
        "a warm , funny film",
        "i checked my watch four times",
        "not bad at all",
        "it was great .",
        "the plot is thin",
        "a bold and moving story",
        "dull",
    ]
    prompts = ["it was", "honestly", "", "the movie is"]
    single, parallel = build().task_model, build(devices=["cpu", "cpu"]).task_model
    assert len(parallel.replicas) == 2 and parallel.replicas[1][1] is not parallel.model
    calls = []
    parallel.replicas[1][1].get_input_embeddings().register_forward_hook(lambda *_: calls.append(1))
    want, got = single.score(prompts, texts), parallel.score(prompts, texts)
    assert torch.equal(want, got)
    assert calls  # the second replica computed some of the batches
    assert parallel.stats.forward_batches == single.stats.forward_batches


def test_data_parallel_causal_scores_match_the_prefix_cached_ones(tiny_clm_dir):
    import torch

    from conftest import clm_config
    from rlprompt.task import Task

    texts = ["a warm , funny film", "i checked my watch four times", "not bad at all", "it was great ."]
    cached = Task.from_config(clm_config(tiny_clm_dir)).task_model
    parallel = Task.from_config(clm_config(tiny_clm_dir, devices=["cpu", "cpu"])).task_model
    assert not parallel.prefix_caching  # single-device speed path
    assert torch.allclose(cached.score(["it was", "so"], texts), parallel.score(["it was", "so"], texts), atol=1e-4)
