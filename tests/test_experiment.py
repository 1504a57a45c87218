"""``rlprompt run / bench / eval --run / export``: result files, determinism, exact resume after
kills at random moments, dev selection, PEFT export round trip, config checks."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from rlprompt.cli import main
from rlprompt.config import load_config
from rlprompt.data import demo_dir
from rlprompt.errors import ConfigError
from rlprompt.experiment import run_experiment

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "experiments" / "configs"


def write_config(path: Path, data_dir: Path, **sections) -> Path:
    config = {
        "data": {"dir": str(data_dir)},
        "env": {"batch_size": 8},
        "agent": {"name": "ppo", "n_envs": 4},
        "budget": {"prompt_evals": 48},
        "output": {"checkpoint_every": 1, "tensorboard": False},
    }
    for key, value in sections.items():
        config[key] = value
    path.write_text(yaml.safe_dump(config))
    return path


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "rlprompt.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


def without_times(run_dir: Path) -> tuple[dict, list[dict]]:
    best = json.loads((run_dir / "best_prompt.json").read_text())
    best.pop("wall_time_s")
    with (run_dir / "metrics.csv").open(newline="") as handle:
        rows = [{k: v for k, v in row.items() if k != "time_s"} for row in csv.DictReader(handle)]
    return best, rows


def metrics_text_without_times(path: Path) -> str:
    lines = path.read_text().splitlines()
    column = lines[0].split(",").index("time_s")
    return "\n".join(",".join(c for i, c in enumerate(line.split(",")) if i != column) for line in lines)


# ------------------------------------------------------------------ rlprompt run


def test_run_writes_every_result_file_and_is_deterministic(tmp_path, small_data):
    config_path = write_config(tmp_path / "run.yaml", small_data, output={"checkpoint_every": 2})
    first = run_experiment(load_config(config_path), tmp_path / "a", progress=False)
    second = run_experiment(load_config(config_path), tmp_path / "b", progress=False)
    for name in ("config.json", "metrics.csv", "best_prompt.json", "reward_curve.png", "checkpoint.safetensors"):
        assert (tmp_path / "a" / name).is_file(), name
    assert list((tmp_path / "a" / "tensorboard").glob("events.out.tfevents.*"))
    assert first.kind == "discrete" and isinstance(first.prompt, str)
    assert first.token_ids and first.soft_prompt_path is None
    for split in ("train", "dev", "test"):
        for metrics in (first.metrics[split], first.baseline["metrics"][split]):
            n = metrics["n"]  # accuracy is a count of the split's examples, as the predictions say
            assert sum(metrics["predicted_counts"]) == n and metrics["accuracy"] * n == pytest.approx(
                round(metrics["accuracy"] * n), abs=1e-4
            )
    assert first.baseline["prompt"] == "It was"
    assert first.prompt_evals >= 48 and first.lm_calls > 0 and first.dev_lm_calls > 0
    assert first.agent == "ppo" and first.task_model == "encoder:embedded" and first.seed == 0
    # same seed -> byte-identical best_prompt.json apart from the timing
    a, b = (json.loads((tmp_path / d / "best_prompt.json").read_text()) for d in ("a", "b"))
    assert a.pop("wall_time_s") is not None and b.pop("wall_time_s") is not None
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert without_times(tmp_path / "a")[1] == without_times(tmp_path / "b")[1]
    assert second.prompt == first.prompt
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert saved["agent"]["name"] == "ppo" and "clip_range" in saved["agent"]  # resolved: every agent field


@pytest.mark.parametrize("name", sorted(__import__("rlprompt.agents", fromlist=["AGENT_REGISTRY"]).AGENT_REGISTRY))
def test_every_agent_runs_end_to_end_and_resumes_from_its_checkpoint(tmp_path, small_data, name):
    from rlprompt.agents import AGENT_REGISTRY

    kind = AGENT_REGISTRY[name].env_kinds[0]
    small = {"token": {"prompt_length": 3, "vocab_top_k": 50}, "soft": {"n_tokens": 2, "subspace_dim": 4}}
    env = {"kind": kind, "batch_size": 8, **small.get(kind, {})}  # a kind's config holds only its own fields
    config_path = write_config(
        tmp_path / "run.yaml", small_data, env=env, agent={"name": name, "n_envs": 4}, budget={"prompt_evals": 16}
    )
    result = run_experiment(load_config(config_path), tmp_path / name, progress=False)
    assert result.kind == ("soft" if kind == "soft" else "discrete") and result.env == kind
    test = result.metrics["test"]
    assert result.prompt_evals >= 16 and sum(test["predicted_counts"]) == test["n"] > 0
    assert test["accuracy"] * test["n"] == pytest.approx(round(test["accuracy"] * test["n"]), abs=1e-4)
    # a finished run's checkpoint reloads into a fresh agent with the same counters
    from rlprompt.agents import Agent
    from rlprompt.experiment import make_env
    from rlprompt.task import Task

    config = load_config(tmp_path / name / "config.json")
    agent = Agent.load(tmp_path / name / "checkpoint.safetensors", make_env(Task.from_config(config), config))
    assert (agent.prompt_evals, agent.lm_calls) == (result.prompt_evals, result.lm_calls)


def test_dev_only_selection_rescores_top_prompts_outside_the_budget(tmp_path, small_data):
    config_path = write_config(
        tmp_path / "run.yaml",
        small_data,
        agent={"name": "random_search", "n_envs": 8, "top_k": 5},
        selection={"splits": ["dev"], "include_manual": False},
    )
    result = run_experiment(load_config(config_path), tmp_path / "r", progress=False)
    from rlprompt.task import Task

    task = Task.from_config(load_config(config_path))
    rows = list(csv.DictReader((tmp_path / "r" / "metrics.csv").open()))
    assert result.candidates in (5, 6)  # the greedy prompt + the top 5 by train reward (deduplicated)
    assert result.dev_lm_calls == result.candidates * len(task.data.dev)
    assert result.selected_on == ["dev"] and not result.manual_kept
    assert int(rows[-1]["lm_calls"]) == result.lm_calls <= result.prompt_evals * 8  # training cost only
    assert task.evaluate(result.prompt, "dev")["reward"] == pytest.approx(result.metrics["dev"]["reward"], abs=1e-6)


def pooled_reward(task, prompt: str) -> float:
    parts = [task.evaluate(prompt, split) for split in ("train", "dev")]
    return sum(p["reward"] * p["n"] for p in parts) / sum(p["n"] for p in parts)


def test_selection_on_train_and_dev_keeps_the_manual_prompt_unless_beaten(tmp_path, small_data):
    """Default selection: candidates pooled over train + dev, the manual prompt among them. A found
    prompt is reported only when its pooled reward beats the manual one's; otherwise the manual
    prompt is, flagged. A manual prompt no candidate can lose to (a strong one) and one every
    candidate beats (a nonsense one) show both outcomes."""
    from rlprompt.task import Task

    outcomes = {}
    for manual in ("It was", "zzz qqq xxx"):
        config_path = write_config(
            tmp_path / "run.yaml", small_data, prompt=manual, agent={"name": "random_search", "n_envs": 8, "top_k": 5}
        )
        config = load_config(config_path)
        assert config.selection.splits == ["train", "dev"] and config.selection.include_manual
        result = run_experiment(config, tmp_path / manual.replace(" ", "_"), progress=False)
        task = Task.from_config(config)
        assert result.selected_on == ["train", "dev"] and result.candidates in (6, 7)
        if result.manual_kept:
            assert result.prompt == manual and result.metrics == result.baseline["metrics"]
        else:
            assert pooled_reward(task, result.prompt) > pooled_reward(task, manual)
        outcomes[manual] = result.manual_kept
    assert outcomes == {"It was": True, "zzz qqq xxx": False}


def test_select_reruns_selection_from_the_checkpoint(tmp_path, small_data, capsys):
    """``rlprompt select`` on a dev-only run gives what a fresh run with the new selection gives
    (training is deterministic, so the two agree to the byte, wall time aside), rewrites
    config.json, and refuses any change that would need training again."""
    base = write_config(
        tmp_path / "run.yaml",
        small_data,
        agent={"name": "random_search", "n_envs": 8, "top_k": 5},
        selection={"splits": ["dev"], "include_manual": False},
    )
    run_experiment(load_config(base), tmp_path / "old", progress=False)
    fresh = run_experiment(
        load_config(base, ["selection.splits=[train]", "selection.include_manual=true"]),
        tmp_path / "fresh",
        progress=False,
    )
    code = main(
        ["select", str(tmp_path / "old"), "--set", "selection.splits=[train]", "--set", "selection.include_manual=true"]
    )
    out = capsys.readouterr().out
    assert code == 0 and "before" in out and "selected on dev" in out
    reselected, expected = without_times(tmp_path / "old")[0], without_times(tmp_path / "fresh")[0]
    assert reselected == expected and reselected["selected_on"] == ["train"]
    assert json.loads((tmp_path / "old" / "config.json").read_text())["selection"] == {
        "splits": ["train"],
        "include_manual": True,
        "paired": False,
        "guard_splits": [],
    }
    assert fresh.selected_on == ["train"]
    assert main(["select", str(tmp_path / "old"), "--set", "env.batch_size=4"]) == 2
    err = capsys.readouterr().err
    assert "changes only selection.*" in err and "env.batch_size" in err


def test_guard_drops_found_prompts_that_lose_to_the_manual_prompt_on_dev(tmp_path, capsys):
    """``selection.guard_splits=[dev]``: a found prompt that wins the pooled train + dev score only
    by its train margin is not reported. The dev reviews here carry flipped labels, so what helps
    on train hurts on dev: without the guard a found prompt beats the weak manual prompt pooled;
    re-selected with it, every prompt ranked above the reported one lost on dev, and the reported
    one does not lose there."""
    from rlprompt.task import Task

    data = tmp_path / "data"
    data.mkdir()
    (data / "train.tsv").write_text((demo_dir() / "train.tsv").read_text())
    header, *rows = (demo_dir() / "dev.tsv").read_text().splitlines()
    flipped = [f"{text}\t{1 - int(label)}" for text, label in (row.rsplit("\t", 1) for row in rows[:8])]
    (data / "dev.tsv").write_text("\n".join([header, *flipped]) + "\n")
    (data / "test.tsv").write_text("\n".join((demo_dir() / "test.tsv").read_text().splitlines()[:21]) + "\n")
    manual = "zzz qqq xxx"
    config_path = write_config(
        tmp_path / "run.yaml", data, prompt=manual, agent={"name": "random_search", "n_envs": 8, "top_k": 5}
    )
    plain = run_experiment(load_config(config_path), tmp_path / "r", progress=False)
    assert not plain.manual_kept and plain.guard_dropped == 0 and plain.guarded_on == []
    assert main(["select", str(tmp_path / "r"), "--set", "selection.guard_splits=[dev]"]) == 0
    out = capsys.readouterr().out
    guarded = json.loads((tmp_path / "r" / "best_prompt.json").read_text())
    assert guarded["guarded_on"] == ["dev"] and guarded["guard_dropped"] >= 1 and "guard        :" in out
    task = Task.from_config(load_config(tmp_path / "r" / "config.json"))
    dev_key = lambda prompt: task.selection_key(task.evaluate(prompt, "dev"))  # noqa: E731
    assert dev_key(guarded["prompt"]) >= dev_key(manual)
    assert dev_key(plain.prompt) < dev_key(manual)  # the prompt reported without the guard lost on dev
    assert pooled_reward(task, plain.prompt) >= pooled_reward(task, guarded["prompt"])


def test_guard_splits_are_checked_against_the_selection(tmp_path, small_data):
    config_path = write_config(tmp_path / "run.yaml", small_data)
    with pytest.raises(ConfigError, match="guard_splits: 'dev' is not one of selection.splits"):
        load_config(config_path, ["selection.splits=[train]", "selection.guard_splits=[dev]"])
    with pytest.raises(ConfigError, match="needs selection.include_manual"):
        load_config(config_path, ["selection.include_manual=false", "selection.guard_splits=[dev]"])


def test_runs_saved_before_the_selection_section_keep_their_dev_only_selection(tmp_path, small_data):
    config_path = write_config(tmp_path / "run.yaml", small_data, budget={"prompt_evals": 16})
    run_experiment(load_config(config_path), tmp_path / "r", progress=False)
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    del saved["selection"]
    (tmp_path / "r" / "config.json").write_text(json.dumps(saved))
    from rlprompt.rundir import saved_config

    assert saved_config(tmp_path / "r").selection.splits == ["dev"]
    assert not saved_config(tmp_path / "r").selection.include_manual


@pytest.mark.slow  # about 90 s on 2 cores: the slow tier (the fast tier resumes every agent from a checkpoint)
@pytest.mark.parametrize("kills", [2])
def test_killed_run_resumes_to_identical_files(tmp_path, small_data, kills):
    config_path = write_config(
        tmp_path / "run.yaml",
        small_data,
        budget={"prompt_evals": 96},
        output={"checkpoint_every": 1, "tensorboard": True},
    )
    reference = tmp_path / "reference"
    done = cli("run", str(config_path), "-o", str(reference), "--no-progress")
    assert done.returncode == 0, done.stderr
    rng = random.Random(7)
    resumed = tmp_path / "resumed"
    args = ["run", str(config_path), "-o", str(resumed), "--no-progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    for kill in range(kills):
        proc = subprocess.Popen(
            [sys.executable, "-m", "rlprompt.cli", *args],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        target_rows = rng.randint(1 + 2 * kill, 3 + 2 * kill)
        deadline = time.time() + 120
        metrics = resumed / "metrics.csv"
        while time.time() < deadline and proc.poll() is None:
            if metrics.is_file() and len(metrics.read_text().splitlines()) - 1 >= target_rows:
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.3))  # a random moment: mid-step, mid-write or between
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not (resumed / "best_prompt.json").exists(), "the run finished before it was killed"
        args = ["run", "--resume", str(resumed), "--no-progress"]
    finished = cli(*args)
    assert finished.returncode == 0, finished.stderr
    assert without_times(resumed) == without_times(reference)
    assert metrics_text_without_times(resumed / "metrics.csv") == metrics_text_without_times(reference / "metrics.csv")
    # resuming a finished run changes nothing
    again = cli("run", "--resume", str(resumed), "--no-progress")
    assert again.returncode == 0 and without_times(resumed) == without_times(reference)


def test_run_refuses_to_overwrite_and_checks_resume_config(tmp_path, small_data, capsys):
    config_path = write_config(tmp_path / "run.yaml", small_data, budget={"prompt_evals": 8})
    assert main(["run", str(config_path), "-o", str(tmp_path / "r"), "--no-progress"]) == 0
    assert "best prompt" in capsys.readouterr().out
    assert main(["run", str(config_path), "-o", str(tmp_path / "r"), "--no-progress"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["run", str(config_path), "--set", "env.batch_size=4", "--resume", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "differs from the run's config.json at ['env.batch_size']" in err
    assert main(["run", "--resume", str(tmp_path / "missing")]) == 2
    assert "no config.json" in capsys.readouterr().err
    # without a CONFIG, --set applies to the run's own config; only output.* may change
    assert main(["run", "--resume", str(tmp_path / "r"), "--set", "env.batch_size=4"]) == 2
    assert "at ['env.batch_size']" in capsys.readouterr().err
    assert main(["run", "--resume", str(tmp_path / "r"), "--set", "output.plot=false", "--no-progress"]) == 0
    assert "best prompt" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("agent.name=ppo2", "unknown agent 'ppo2'"),
        ("agent.learning_rat=0.1", "unknown config key 'agent.learning_rat' (did you mean 'agent.learning_rate'?)"),
        ("env.kind=soft", "agent 'ppo' runs on"),
        ("budget.prompt_evals=0", "budget.prompt_evals must be >= 1"),
        ("env.batch_size=0", "env.batch_size must be >= 1"),
        ("output.checkpoint_every=-1", "output.checkpoint_every must be >= 1"),
        ("selection.splits=[test]", "selection.splits must not include test"),
        ("selection.splits=[]", "selection.splits needs at least one split"),
        ("selection.splits=[dev,dev]", "selection.splits names a split twice"),
        ("selection.splits=[valid]", "selection.splits: unknown split 'valid'"),
        ("calibration=mean", "'calibration' must be one of ['none', 'batch']"),
        ("calibration=batch env.batch_size=1", "env.batch_size=1 leaves every class at the same score"),
    ],
)
def test_run_config_errors_are_one_line(tmp_path, small_data, capsys, override, message):
    config_path = write_config(tmp_path / "run.yaml", small_data)
    sets = [arg for item in override.split(" ") for arg in ("--set", item)]
    assert main(["run", str(config_path), *sets, "-o", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_every_shipped_config_resolves():
    """Every shipped config loads; every bench's committed cells match its file, so running the
    bench command again resumes (skips them) rather than refusing them as another config's."""
    for path in sorted(CONFIGS.glob("*.yaml")):
        if path.name.startswith("bench-"):
            from rlprompt.bench import cells_of, check_cells_unchanged, load_bench

            bench, root = load_bench(path)
            cells = cells_of(bench)
            configs = {cell.key: load_config(root / bench.base, cell.overrides) for cell in cells}
            check_cells_unchanged(ROOT / bench.output_dir, cells, configs)
        else:
            config = load_config(path)
            assert config.agent_name and config.env_kind()


def test_rlprompt_paper_config_runs_with_tiny_stand_ins(tmp_path, tiny_mlm_dir, tiny_clm_dir, small_data):
    config = load_config(
        CONFIGS / "rlprompt-paper.yaml",
        [
            f"task_model.name_or_path={tiny_mlm_dir}",
            "task_model.device=cpu",
            f"agent.backbone={tiny_clm_dir}",
            f"data.dir={small_data}",
            "env.vocab_top_k=40",
            "agent.n_envs=4",
            "agent.mlp_hidden=32",
            "budget.prompt_evals=8",
            "output.tensorboard=false",
        ],
    )
    assert config.task_model.kind == "masked_lm" and config.agent_name == "sql" and config.reward.name == "gap"
    result = run_experiment(config, tmp_path / "paper", progress=False)
    assert result.kind == "discrete" and len(result.prompt.split()) == 5
    assert result.task_model == f"masked_lm:{tiny_mlm_dir}"


# ------------------------------------------------------------------ eval --run and export


def test_eval_run_reproduces_and_measures_transfer(tmp_path, small_data, capsys):
    config_path = write_config(tmp_path / "run.yaml", small_data, budget={"prompt_evals": 16})
    run_dir = tmp_path / "r"
    result = run_experiment(load_config(config_path), run_dir, progress=False)
    for split in ("dev", "test"):
        assert main(["eval", "--run", str(run_dir), "--split", split, "--json"]) == 0
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert out["reproduces"] is True and out["max_abs_diff"] <= 1e-5
        assert out["metrics"]["predicted_counts"] == result.metrics[split]["predicted_counts"]
        assert out["metrics"]["accuracy"] == result.metrics[split]["accuracy"]
    # transfer: the same prompt on another dataset (demo test set) through --set
    assert main(["eval", "--run", str(run_dir), "--set", f"data.dir={demo_dir()}", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["metrics"]["n"] == 200 and "reproduces" not in out and out["prompt"] == result.prompt


def test_calibrated_run_scores_calibrated_predictions_and_eval_run_reproduces_them(tmp_path, small_data, capsys):
    from rlprompt.rewards import batch_calibrate, classification_metrics
    from rlprompt.task import Task

    config_path = write_config(tmp_path / "run.yaml", small_data, budget={"prompt_evals": 16}, calibration="batch")
    config = load_config(config_path)
    run_dir = tmp_path / "r"
    result = run_experiment(config, run_dir, progress=False)
    task = Task.from_config(config)
    raw = task.task_model.score([result.prompt], task.data.test.texts)[0]
    expected = classification_metrics(batch_calibrate(raw), task.labels("test"))
    test = result.metrics["test"]
    assert test["predicted_counts"] == expected["predicted_counts"]
    assert test["accuracy"] == pytest.approx(expected["accuracy"])
    assert test["class_shift"] == pytest.approx(torch.log_softmax(raw, -1).mean(0).tolist(), abs=1e-5)
    # the raw scores predict otherwise on this data: calibration changed the predictions
    assert classification_metrics(raw, task.labels("test"))["predicted_counts"] != test["predicted_counts"]
    assert main(["eval", "--run", str(run_dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["reproduces"] is True and out["metrics"]["class_shift"] == pytest.approx(test["class_shift"], abs=1e-5)
    assert main(["export", str(run_dir), "--format", "json", "--out", str(tmp_path / "p.json")]) == 0
    exported = json.loads((tmp_path / "p.json").read_text())
    assert exported["calibration"] == "batch" and len(exported["metrics"]["train"]["class_shift"]) == 2


def test_calibration_is_refused_where_there_are_no_class_scores(tmp_path):
    with pytest.raises(ConfigError, match="classification tasks, not task: generation"):
        load_config(CONFIGS / "squad-smollm2.yaml", ["calibration=batch"])
    with pytest.raises(ConfigError, match="agent.batch_size=1"):
        load_config(
            CONFIGS / "sst2-minilm.yaml", ["agent.name=prompt_tuning", "calibration=batch", "agent.batch_size=1"]
        )
    load_config(
        CONFIGS / "sst2-minilm.yaml", ["agent.name=dqn", "calibration=batch", "agent.batch_size=1"]
    )  # a replay minibatch: fine
    with pytest.raises(ConfigError, match="task_model.scoring=generation"):
        load_config(CONFIGS / "sst2-served.yaml", ["calibration=batch", "task_model.scoring=generation"])


def test_export_discrete_prompt_as_json_and_txt(tmp_path, small_data, capsys):
    config_path = write_config(tmp_path / "run.yaml", small_data, budget={"prompt_evals": 8})
    run_dir = tmp_path / "r"
    result = run_experiment(load_config(config_path), run_dir, progress=False)
    assert main(["export", str(run_dir), "--format", "txt", "--out", str(tmp_path / "p.txt")]) == 0
    assert (tmp_path / "p.txt").read_text() == result.prompt + "\n"
    assert main(["export", str(run_dir), "--format", "json", "--out", str(tmp_path / "p.json")]) == 0
    exported = json.loads((tmp_path / "p.json").read_text())
    assert exported["prompt"] == result.prompt and exported["token_ids"] == result.token_ids
    assert exported["template"] == "{sentence} {prompt}" and exported["metrics"] == result.metrics
    capsys.readouterr()
    assert main(["export", str(run_dir), "--format", "peft", "--out", str(tmp_path / "adapter")]) == 2
    assert "discrete prompt" in capsys.readouterr().err


def test_soft_prompt_run_exports_a_peft_adapter_that_reproduces_scores(tmp_path, small_data, capsys):
    from peft import PeftModel
    from transformers import AutoModel, AutoTokenizer

    from rlprompt.task import Task
    from rlprompt.task_models import mean_pool
    from rlprompt.task_models.loading import embedded_model_path

    config_path = write_config(
        tmp_path / "run.yaml",
        small_data,
        env={"kind": "soft", "batch_size": 8, "n_tokens": 4},
        agent={"name": "cma_es", "n_envs": 8},
        budget={"prompt_evals": 32},
    )
    run_dir = tmp_path / "soft"
    result = run_experiment(load_config(config_path), run_dir, progress=False)
    assert result.kind == "soft" and result.prompt is None and result.token_ids is None
    assert (run_dir / result.soft_prompt_path).is_file()
    assert main(["eval", "--run", str(run_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["reproduces"] is True
    assert main(["export", str(run_dir), "--format", "json", "--out", str(tmp_path / "x.json")]) == 2
    assert "--format peft" in capsys.readouterr().err
    adapter = tmp_path / "adapter"
    assert main(["export", str(run_dir), "--format", "peft", "--out", str(run_dir)]) == 2  # never over a run
    assert "not a PEFT adapter directory" in capsys.readouterr().err
    assert main(["export", str(run_dir), "--format", "peft", "--out", str(adapter)]) == 0
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in adapter.iterdir()}
    described = json.loads((adapter / "rlprompt_export.json").read_text())  # how the adapter's scores are read
    run_config = load_config(run_dir / "config.json")
    assert (described["template"], described["verbalizers"], described["calibration"]) == (
        run_config.template,
        run_config.verbalizers,
        "none",
    )
    assert described["metrics"]["test"]["accuracy"] == result.metrics["test"]["accuracy"]
    assert described["rlprompt_export"]["format"] == "peft"
    assert main(["export", str(run_dir), "--format", "peft", "--out", str(adapter)]) == 0  # its own export: replaced

    base = AutoModel.from_pretrained(embedded_model_path()).eval()
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_path())
    peft_model = PeftModel.from_pretrained(base, str(adapter)).eval()
    from safetensors.torch import load_file

    soft = load_file(str(run_dir / "soft_prompt.safetensors"))["prompt_embeddings"]
    assert torch.equal(peft_model.prompt_encoder["default"].embedding.weight.detach(), soft)

    task = Task.from_config(load_config(run_dir / "config.json"))
    texts = task.data.test.texts

    def embed(strings: list[str]) -> torch.Tensor:
        batch = tokenizer(strings, padding=True, return_tensors="pt")
        with torch.inference_mode():
            hidden = peft_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        mask = torch.cat(
            [torch.ones(len(strings), soft.shape[0], dtype=batch["attention_mask"].dtype), batch["attention_mask"]],
            dim=1,
        )
        return mean_pool(hidden, mask)

    inputs = embed(texts)  # the template "{sentence} {prompt}" with the prompt slot empty
    verbalizers = embed(["terrible.", "great."])
    peft_logits = task.config.task_model.scale * inputs @ verbalizers.T
    ours = task.logits([soft], "test")[0]
    assert torch.allclose(peft_logits, ours, atol=1e-3)
    assert torch.equal(peft_logits.argmax(-1), ours.argmax(-1))
    accuracy = (peft_logits.argmax(-1) == task.labels("test")).float().mean().item()
    assert accuracy == pytest.approx(result.metrics["test"]["accuracy"])


# ------------------------------------------------------------------ rlprompt bench


def write_bench(tmp_path: Path, config_path: Path) -> Path:
    bench = {
        "base": str(config_path),
        "set": ["budget.prompt_evals=16", "output.tensorboard=false"],
        "agents": {"hill_climb": ["agent.name=hill_climb", "env.kind=edit", "agent.n_envs=4"]},
        "tasks": {"small": []},
        "seeds": [1, 2],
        "output_dir": str(tmp_path / "bench-out"),
    }
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(bench))
    return path


def results_without_times(out: Path) -> list[dict]:
    with (out / "results.csv").open(newline="") as handle:
        return [{k: v for k, v in r.items() if k != "wall_time_s"} for r in csv.DictReader(handle)]


@pytest.mark.slow  # about 150 s on 2 cores: the slow tier
def test_bench_grid_tables_plot_and_resume_after_kill(tmp_path, small_data):
    config_path = write_config(tmp_path / "run.yaml", small_data, agent={"name": "random_search", "n_envs": 4})
    reference_dir = tmp_path / "ref"
    reference_dir.mkdir()
    bench_path = write_bench(reference_dir, config_path)
    done = cli("bench", str(bench_path), "--no-progress")
    assert done.returncode == 0, done.stderr
    out = reference_dir / "bench-out"
    rows = results_without_times(out)
    assert sorted((r["agent"], r["seed"]) for r in rows) == [
        ("hill_climb", "1"),
        ("hill_climb", "2"),
        ("random_search", "1"),
        ("random_search", "2"),
    ]
    table = (out / "results.md").read_text()
    assert "| manual prompt |" in table and "| random_search |" in table and "±" in table
    assert (out / "curves.png").stat().st_size > 0
    # a run of part of the grid tables that part; --report tables the whole grid again, runs nothing
    part = cli("bench", str(bench_path), "--no-progress", "--set", "seeds=[2]")
    assert part.returncode == 0 and "finished before, skipped" in part.stdout, part.stderr
    assert sorted(r["seed"] for r in results_without_times(out)) == ["2", "2"]
    report = cli("bench", str(bench_path), "--report", "--set", "seeds=[1,2,3]")
    assert report.returncode == 0, report.stderr
    assert (
        "4 of 6 cells finished" in report.stdout
        and not (out / "runs" / "small" / "hill_climb" / "bbase" / "seed3").exists()
    )
    assert results_without_times(out) == rows

    killed_dir = tmp_path / "killed"
    killed_dir.mkdir()
    bench_path = write_bench(killed_dir, config_path)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlprompt.cli", "bench", str(bench_path), "--no-progress"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    cell = killed_dir / "bench-out" / "runs" / "small" / "hill_climb" / "bbase" / "seed2" / "metrics.csv"
    deadline = time.time() + 200
    while time.time() < deadline and proc.poll() is None and not cell.is_file():
        time.sleep(0.05)
    time.sleep(random.Random(3).uniform(0.0, 0.5))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (
        killed_dir / "bench-out" / "runs" / "small" / "random_search" / "bbase" / "seed2" / "best_prompt.json"
    ).exists()
    resumed = cli("bench", str(bench_path), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert "finished before, skipped" in resumed.stdout
    assert results_without_times(killed_dir / "bench-out") == rows
    for cell_dir in (out / "runs").glob("*/*/*/*"):
        twin = killed_dir / "bench-out" / cell_dir.relative_to(out)
        assert without_times(twin) == without_times(cell_dir)


def test_bench_config_errors(tmp_path, capsys):
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump({"agents": {"x": None}, "seeds": [1, 1]}))
    assert main(["bench", str(path)]) == 2
    assert "seeds must be distinct" in capsys.readouterr().err
    path.write_text(yaml.safe_dump({"agents": {"x": None}, "budgets": [5, 5]}))
    assert main(["bench", str(path)]) == 2
    assert "budgets must be distinct" in capsys.readouterr().err
    for bench, message in [
        ({"data_dirs": ["a/16-13", "b/16-13"]}, "data_dirs must end in distinct folder names"),
        ({"data_dirs": ["a/16-13"], "tasks": {"t": ["data.dir=x/16-{seed}"]}}, "drop 'data.dir=...{seed}' from tasks"),
        ({"bootstrap_reps": 50}, "bootstrap_reps must be >= 200"),
        ({"task_models": {"a/b": None}}, "must be a plain name"),
    ]:
        path.write_text(yaml.safe_dump({"base": None, "agents": {"x": None}, **bench}))
        assert main(["bench", str(path)]) == 2
        assert message in capsys.readouterr().err
    path.write_text(yaml.safe_dump({"agent": {"x": None}}))
    assert main(["bench", str(path)]) == 2
    assert "unknown config key 'agent' (did you mean 'agents'?)" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="unknown agent 'nope'"):
        from rlprompt.bench import run_bench

        path.write_text(yaml.safe_dump({"agents": {"nope": None}}))
        run_bench(path)


def test_bench_grid_over_two_data_dirs_and_two_seeds(tmp_path, small_data, tiny_clm_dir):
    """Cells per split and seed; the table's columns recomputed by hand from results.csv."""
    from rlprompt.bench import run_bench

    other = tmp_path / "other-split"  # a second split: another train set, the same test set
    other.mkdir()
    for name in ("dev.tsv", "test.tsv"):
        (other / name).write_text((small_data / name).read_text())
    train = (small_data / "train.tsv").read_text().splitlines()
    (other / "train.tsv").write_text("\n".join([train[0], *train[1:][::-1][:16]]) + "\n")
    config_path = write_config(
        tmp_path / "run.yaml",
        small_data,
        agent={"name": "random_search", "n_envs": 4},
        task_model={"kind": "causal_lm", "name_or_path": str(tiny_clm_dir)},
        template="{prompt} {sentence} It was",
        verbalizers=[" bad", " good"],
    )
    bench = {
        "base": str(config_path),
        "set": ["budget.prompt_evals=8", "output.tensorboard=false", "output.plot=false"],
        "agents": {"random_search": None},
        "tasks": {"small": []},
        "data_dirs": [str(small_data), str(other)],
        "seeds": [1, 2],
        "bootstrap_reps": 300,
        "output_dir": str(tmp_path / "grid"),
    }
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(bench))
    rows = run_bench(tmp_path / "bench.yaml", progress=False, echo=lambda *_: None)
    out = tmp_path / "grid"
    assert len(rows) == 4 and {(r["split"], r["seed"]) for r in rows} == {
        (s, seed) for s in (small_data.name, "other-split") for seed in (1, 2)
    }
    assert (out / "runs" / "small" / "random_search" / "bbase" / "other-split" / "seed2" / "best_prompt.json").is_file()
    assert (out / "profile.png").stat().st_size > 0 and (out / "curves.png").stat().st_size > 0
    with (out / "results.csv").open(newline="") as handle:
        csv_rows = list(csv.DictReader(handle))
    assert csv_rows[0]["split"] in (small_data.name, "other-split") and "model" in csv_rows[0]
    table = (out / "results.md").read_text()
    assert f"data splits ['{small_data.name}', 'other-split'] (tasks) x seeds [1, 2] (runs)" in table
    for agent in ("random_search",):
        mine = [r for r in csv_rows if r["agent"] == agent]
        test = np.array([float(r["test_accuracy"]) for r in mine])
        line = next(line for line in table.splitlines() if line.startswith(f"| {agent} |")).split(" | ")
        assert line[3] == "4" and line[4].startswith(f"{test.mean():.4f} ±")
        assert line[5].startswith(f"{np.sort(test)[1:3].mean():.4f} [")  # IQM of 4 runs: the middle two
        per_split = []
        for split in (small_data.name, "other-split"):
            runs = [float(r["test_accuracy"]) for r in mine if r["split"] == split]
            manual = float(next(r["manual_test_accuracy"] for r in mine if r["split"] == split))
            per_split.append(np.mean([1.0 if v > manual else 0.5 if v == manual else 0.0 for v in runs]))
        assert line[6].startswith(f"{np.mean(per_split):.2f} [")
        assert "too few runs for a verdict on manual (4 < 6)" in line[8]
        better = sum(float(r["paired_accuracy_ci_low"]) > 0 for r in mine)
        worse = sum(float(r["paired_accuracy_ci_high"]) < 0 for r in mine)
        assert line[9] == f"{better} / {worse} of 4"  # every new run keeps its outcomes: all four tested
        for r in mine:
            assert float(r["paired_accuracy_diff"]) == pytest.approx(
                float(r["test_accuracy"]) - float(r["manual_test_accuracy"]), abs=1e-6
            )
