"""One prompt-optimization experiment, start to finish: ``rlprompt run``.

:func:`run_experiment` builds the task (data + task model + reward), the env and the agent a
:class:`~rlprompt.config.Config` describes, trains under the config's budget with resumable
checkpoints, selects the best prompt on dev (the greedy prompt and the top 10 seen, re-scored
outside the budget), scores it and the manual prompt on train/dev/test and writes the run
directory:

* ``config.json`` - the resolved config (every field);
* ``metrics.csv`` and ``tensorboard/`` - one row per learning iteration;
* ``checkpoint.pt`` - agent, env, RNG and task-model cache state (resume point);
* ``best_prompt.json`` - the result (written last: its presence marks a finished run);
* ``soft_prompt.safetensors`` - the prompt embeddings, for soft prompts;
* ``reward_curve.png`` - best train reward vs LM calls.

Same config and seed on CPU gives a byte-identical ``best_prompt.json`` apart from
``wall_time_s``; a killed run resumed with ``resume=True`` ends with the same files as an
uninterrupted one, because the checkpoint holds everything training reads (including the
task model's score cache, which decides LM-call counts).
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlprompt import __version__
from rlprompt.agents import AGENT_REGISTRY, Agent, Callback, Logger
from rlprompt.config import Config, config_from_dict, config_to_dict, save_config
from rlprompt.envs import PromptEditEnv, PromptEnv, PromptSelectionEnv, SoftPromptEnv, TokenPromptEnv
from rlprompt.errors import ConfigError, RLPromptError
from rlprompt.io import atomic_write_json, read_json, remove_stale_temp_files, temp_path_for
from rlprompt.task import Task
from rlprompt.task_models import Prompt

SPLITS = ("train", "dev", "test")
METRIC_KEYS = ("accuracy", "macro_f1", "gold_log_prob", "reward", "n", "predicted_counts")
CHECKPOINT = "checkpoint.safetensors"
BEST_PROMPT = "best_prompt.json"
SOFT_PROMPT = "soft_prompt.safetensors"


# ---------------------------------------------------------------- building blocks


def build_env(task: Task, config: Config) -> PromptEnv:
    """The env of ``config.env`` on ``task`` (kind ``auto`` is the agent's main kind)."""
    env = config.env
    kind = config.env_kind()
    if kind == "token":
        return TokenPromptEnv(task=task, prompt_length=env.prompt_length, vocab_top_k=env.vocab_top_k,
                              vocab_regex=env.vocab_regex, batch_size=env.batch_size)  # fmt: skip
    if kind == "selection":
        return PromptSelectionEnv(task=task, candidates=env.candidates, batch_size=env.batch_size)
    if kind == "edit":
        return PromptEditEnv(task=task, pool_size=env.pool_size, max_units=env.max_units, max_edits=env.max_edits,
                             batch_size=env.batch_size)  # fmt: skip
    return SoftPromptEnv(task=task, n_tokens=env.n_tokens, subspace_dim=env.subspace_dim, bound=env.bound,
                         projection_seed=env.projection_seed, batch_size=env.batch_size)  # fmt: skip


def default_run_dir(config: Config) -> Path:
    return Path("runs") / f"{config.agent_name}-{config.env_kind()}-seed{config.seed}"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def slim_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The reproducible part of :meth:`Task.evaluate`'s result (no costs, no timings)."""
    return {key: metrics[key] for key in METRIC_KEYS if key in metrics}


def prompt_token_ids(task: Task, prompt: str) -> list[int] | None:
    layout = getattr(task.task_model, "input_layout", None)
    return None if layout is None else [int(i) for i in layout.prompt_ids(prompt)]


def budget_limits(config: Config) -> dict[str, int | None]:
    b = config.budget
    return {"prompt_evals": b.prompt_evals, "lm_calls": b.lm_calls, "steps": b.steps}


def budget_fraction(agent: Agent, limits: dict[str, int | None]) -> float:
    spent = agent.spent()
    return min(1.0, max(spent[k] / v for k, v in limits.items() if v))


class RunCheckpoint(Callback):
    """Save agent + task-model cache every ``every`` iterations (atomically, one file)."""

    def __init__(self, path: Path, every: int) -> None:
        self.path = path
        self.every = every

    def on_step(self, agent: Agent) -> bool:
        if agent.iterations % self.every == 0:
            save_checkpoint(agent, self.path)
        return True


def save_checkpoint(agent: Agent, path: Path) -> None:
    task = agent.task
    agent.save(path, extra={"task_model": task.task_model.cache_state(), "task_prompt_evals": task.prompt_evals})


class ProgressBar(Callback):
    """A rich progress bar: budget spent, best train reward, LM calls, ETA."""

    def __init__(self, limits: dict[str, int | None], description: str) -> None:
        self.limits = limits
        self.description = description
        self._progress: Any = None

    def on_start(self, agent: Agent) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("best {task.fields[best]}"), TextColumn("LM calls {task.fields[lm_calls]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=Console(stderr=True), transient=False,
        )  # fmt: skip
        self._progress.start()
        self._task = self._progress.add_task(self.description, total=1000, best="-", lm_calls=0)
        self._update(agent)

    def _update(self, agent: Agent) -> None:
        best = agent.tracker.best()
        self._progress.update(
            self._task,
            completed=int(1000 * budget_fraction(agent, self.limits)),
            best=f"{best.mean_reward:+.4f}" if best else "-",
            lm_calls=agent.spent()["lm_calls"],
        )

    def on_step(self, agent: Agent) -> bool:
        self._update(agent)
        return True

    def on_end(self, agent: Agent) -> None:
        self._update(agent)
        self._progress.stop()


# ---------------------------------------------------------------- the run


def _check_run_dir(run_dir: Path, resume: bool) -> None:
    if resume:
        if not (run_dir / "config.json").is_file():
            raise ConfigError(f"cannot resume {run_dir}: no config.json there (not a run directory)")
        return
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run directory {run_dir} is a file; choose another --output-dir")
    if (run_dir / BEST_PROMPT).is_file() or (run_dir / CHECKPOINT).is_file() or (run_dir / "metrics.csv").is_file():
        raise ConfigError(
            f"run directory {run_dir} already holds a run; resume it with --resume {run_dir} "
            "or choose another --output-dir"
        )
    if run_dir.is_dir() and any(run_dir.iterdir()):
        raise ConfigError(
            f"run directory {run_dir} is not empty and holds no rlprompt run; a run writes only into a new "
            "or empty directory (choose another --output-dir)"
        )


RUN_FILES = ("config.json", "metrics.csv", "tensorboard", "reward_curve.png", CHECKPOINT)


def clear_unstarted_run(run_dir: Path) -> bool:
    """Remove the files of a run that stopped before its first checkpoint (so it can start over,
    e.g. with a corrected config); True if ``run_dir`` was such a run. Finished or checkpointed
    runs and files rlprompt did not write are left alone."""
    import shutil

    if not (run_dir / "config.json").is_file() or (run_dir / CHECKPOINT).is_file() or (run_dir / BEST_PROMPT).is_file():
        return False
    for name in RUN_FILES:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    remove_stale_temp_files(run_dir)
    return True


def saved_config(run_dir: Path, overrides: list[str] | None = None) -> Config:
    """``run_dir``'s ``config.json`` (plus ``overrides``)."""
    _check_run_dir(run_dir, resume=True)
    data = read_json(run_dir / "config.json", "run config")
    try:
        return config_from_dict(data, overrides)
    except ConfigError as exc:
        raise ConfigError(f"{run_dir / 'config.json'}: {exc}") from None


def resolve_resume_config(run_dir: Path, config: Config | None) -> Config:
    """The config to resume ``run_dir`` with: its saved one, or ``config`` when that differs from
    it only in ``output`` (plots, progress...); any other difference is an error naming the keys."""
    saved = saved_config(run_dir)
    if config is None:
        return saved
    a, b = config_to_dict(saved), config_to_dict(config)
    a.pop("output", None)
    b.pop("output", None)
    if a != b:
        diff = _diff_keys(a, b)
        raise ConfigError(f"--resume {run_dir}: the given config differs from the run's config.json at {diff}")
    return config


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def run_experiment(
    config: Config,
    output_dir: str | os.PathLike[str] | None = None,
    *,
    resume: bool = False,
    progress: bool | None = None,
    task: Task | None = None,
) -> dict[str, Any]:
    """Train, select, evaluate and write a run directory; returns ``best_prompt.json``'s content.

    ``resume=True`` continues the run in ``output_dir`` from its checkpoint (a finished run
    is returned as it is). ``progress=None`` shows the bar when stderr is a terminal.
    """
    run_dir = Path(output_dir) if output_dir is not None else Path(config.output.dir or default_run_dir(config))
    _check_run_dir(run_dir, resume)
    if resume:
        config = resolve_resume_config(run_dir, config)
        if (run_dir / BEST_PROMPT).is_file():
            return read_json(run_dir / BEST_PROMPT, "run result")
    started = time.perf_counter()

    # Everything that can fail on bad input (data, model, env, agent) is built before the run
    # directory is touched: a failed start leaves no file behind.
    seed_everything(config.seed)
    task = task or Task.from_config(config)
    env = build_env(task, config)
    checkpoint = run_dir / CHECKPOINT
    name = config.agent_name
    if resume and not checkpoint.is_file() and (run_dir / "checkpoint.pt").is_file():
        raise RLPromptError(
            f"{run_dir} was checkpointed by an older rlprompt as a pickle (checkpoint.pt); rlprompt no longer "
            "loads pickles, which can run code: start the run again in a new directory"
        )
    resuming = resume and checkpoint.is_file()
    agent = Agent.load(checkpoint, env) if resuming else AGENT_REGISTRY[name][1](env, config.agent_config())
    if resuming:
        extra = agent.checkpoint_extra or {}
        try:
            task.task_model.load_cache_state(extra["task_model"])
            task.prompt_evals = extra["task_prompt_evals"]
        except (KeyError, TypeError, ValueError) as exc:
            raise RLPromptError(f"checkpoint {checkpoint} holds no usable task-model state ({exc})") from None

    run_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(run_dir)
    config.output.dir = str(run_dir)
    save_config(config, run_dir / "config.json")
    logger = agent.logger = Logger(run_dir, config.output.tensorboard, keep_iterations=agent.iterations)

    limits = budget_limits(config)
    show = sys.stderr.isatty() if progress is None else progress
    callbacks: list[Callback] = [RunCheckpoint(checkpoint, config.output.checkpoint_every)]
    if show and config.output.progress:
        callbacks.append(ProgressBar(limits, f"{name} ({config.env_kind()})"))
    try:
        agent.learn(limits["prompt_evals"], limits["lm_calls"], limits["steps"], callbacks=callbacks)
        save_checkpoint(agent, checkpoint)
    finally:
        logger.close()

    result, best_prompt = select_and_evaluate(agent, task, config)
    # time of this session plus that of killed ones up to their checkpoints (via the rows' time_s)
    result["wall_time_s"] = round(max(logger.elapsed(), time.perf_counter() - started), 2)
    if result["kind"] == "soft":
        from safetensors.torch import save_file

        tmp = temp_path_for(run_dir / SOFT_PROMPT)
        save_file({"prompt_embeddings": best_prompt.detach().float().cpu().contiguous()}, str(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, run_dir / SOFT_PROMPT)
    if config.output.plot:
        plot_reward_curve(logger.rows, run_dir / "reward_curve.png", title=f"{name} ({config.env_kind()})")
    atomic_write_json(run_dir / BEST_PROMPT, result)
    return result


def select_and_evaluate(agent: Agent, task: Task, config: Config) -> tuple[dict[str, Any], Prompt]:
    """Dev selection, then train/dev/test metrics of the chosen and the manual prompt."""
    with agent.evaluating():
        best = agent.best_prompt()
        before = task.task_model.stats.lm_calls
        metrics = {split: slim_metrics(task.evaluate(best.prompt, split)) for split in SPLITS}
        baseline = {split: slim_metrics(task.evaluate(config.prompt, split)) for split in SPLITS}
        eval_lm_calls = task.task_model.stats.lm_calls - before
    soft = not isinstance(best.prompt, str)
    tm = config.task_model
    return {
        "kind": "soft" if soft else "discrete",
        "prompt": None if soft else best.prompt,
        "token_ids": None if soft else prompt_token_ids(task, best.prompt),
        "soft_prompt_path": SOFT_PROMPT if soft else None,
        "n_virtual_tokens": int(best.prompt.shape[0]) if soft else None,
        "metrics": metrics,
        "baseline": {"prompt": config.prompt, "metrics": baseline},
        "train_reward": best.train_reward,
        "candidates": best.candidates,
        "lm_calls": agent.lm_calls,
        "prompt_evals": agent.prompt_evals,
        "budget": {k: v for k, v in budget_limits(config).items() if v is not None},
        "env_steps": agent.env_steps,
        "iterations": agent.iterations,
        "dev_lm_calls": best.dev_lm_calls,
        "eval_lm_calls": eval_lm_calls,
        "agent": config.agent_name,
        "env": config.env_kind(),
        "task_model": f"{tm.kind}:{tm.name_or_path}",
        "reward": config.reward.name,
        "seed": config.seed,
        "rlprompt_version": __version__,
        "wall_time_s": None,
    }, best.prompt


# ---------------------------------------------------------------- reading runs back


def load_run(run_dir: str | os.PathLike[str], overrides: list[str] | None = None) -> tuple[Config, dict[str, Any]]:
    """A finished run's config (with ``overrides`` applied) and its ``best_prompt.json``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RLPromptError(f"run directory not found: {run_dir}")
    for name in ("config.json", BEST_PROMPT):
        if not (run_dir / name).is_file():
            hint = " (the run has not finished: resume it with rlprompt run --resume)" if name == BEST_PROMPT else ""
            raise RLPromptError(f"{run_dir} has no {name}{hint}")
    config = saved_config(run_dir, overrides)
    best = read_json(run_dir / BEST_PROMPT, "run result")
    if not isinstance(best, dict) or best.get("kind") not in ("discrete", "soft") or "metrics" not in best:
        raise RLPromptError(f"{run_dir / BEST_PROMPT} is not an rlprompt run result")
    return config, best


def run_prompt(run_dir: str | os.PathLike[str], best: dict[str, Any]) -> Prompt:
    """The prompt a run found: its text, or its soft prompt tensor ``[n_tokens, hidden]``."""
    if best["kind"] == "discrete":
        return best["prompt"]
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(run_dir) / best["soft_prompt_path"]
    if not path.is_file():
        raise RLPromptError(f"soft prompt file missing: {path}")
    try:
        return load_file(str(path))["prompt_embeddings"]
    except (SafetensorError, KeyError, OSError) as exc:
        raise RLPromptError(f"soft prompt file {path} is corrupt or truncated ({exc})") from None


def evaluate_run(
    run_dir: str | os.PathLike[str], split: str = "test", overrides: list[str] | None = None
) -> dict[str, Any]:
    """Re-score a run's best prompt on ``split`` (under ``overrides``: transfer to another
    model or dataset). Without overrides the result is compared to ``best_prompt.json``."""
    config, best = load_run(run_dir, overrides)
    prompt = run_prompt(run_dir, best)
    task = Task.from_config(config)
    if not isinstance(prompt, str) and prompt.shape[1] != task.task_model.hidden_size:
        raise RLPromptError(
            f"the run's soft prompt has width {prompt.shape[1]}, the task model {task.task_model.hidden_size}: "
            "soft prompts transfer only between models with the same embedding size"
        )
    metrics = slim_metrics(task.evaluate(prompt, split))
    recorded = best["metrics"].get(split)
    result: dict[str, Any] = {"run": str(run_dir), "split": split, "kind": best["kind"], "prompt": best["prompt"],
                              "task_model": f"{config.task_model.kind}:{config.task_model.name_or_path}",
                              "metrics": metrics, "overrides": list(overrides or [])}  # fmt: skip
    if not overrides and recorded is not None:
        result["reproduces"], result["max_abs_diff"] = metrics_match(metrics, recorded)
        result["recorded"] = recorded
    return result


def metrics_match(metrics: dict[str, Any], recorded: dict[str, Any], tol: float = 1e-5) -> tuple[bool, float]:
    """Same predictions (counts exactly) and continuous metrics within ``tol``; the max deviation.

    Re-scoring in a new process batches rows differently (the verbalizer rows, say, now share
    a forward pass with other inputs), which moves float32 log-probs by a few ulps (~1e-7)."""
    worst = 0.0
    for key, value in recorded.items():
        if isinstance(value, float):
            worst = max(worst, abs(float(metrics[key]) - value))
        elif metrics.get(key) != value:
            return False, float("inf")
    return worst <= tol, worst


# ---------------------------------------------------------------- plots


def plot_reward_curve(rows: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Best (and, when logged, mean) train reward against LM calls."""
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [float(r["lm_calls"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.plot(xs, [float(r["best_train_reward"]) for r in rows], label="best prompt (mean train reward)")
    if "mean_reward" in rows[0]:
        ax.plot(xs, [float(r["mean_reward"]) for r in rows], alpha=0.5, label="batch mean reward")
    ax.set_xlabel("LM calls")
    ax.set_ylabel("train reward")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = temp_path_for(path)
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    os.replace(tmp, path)


def _budget_text(budget: dict[str, int]) -> str:
    names = {"prompt_evals": "prompt evaluations", "lm_calls": "LM calls", "steps": "env steps"}
    return ", ".join(f"{v} {names.get(k, k)}" for k, v in budget.items()) or "none"


def format_summary(result: dict[str, Any], run_dir: str | os.PathLike[str]) -> str:
    """The lines ``rlprompt run`` prints at the end."""
    base, best = result["baseline"], result["metrics"]
    shown = (
        repr(result["prompt"])
        if result["kind"] == "discrete"
        else f"<soft prompt, {result['n_virtual_tokens']} tokens>"
    )
    lines = [
        f"agent        : {result['agent']} on the {result['env']} env, task model {result['task_model']}, seed {result['seed']}",
        f"manual prompt: {base['prompt']!r:<40} test accuracy {base['metrics']['test']['accuracy']:.4f}  "
        f"(dev {base['metrics']['dev']['accuracy']:.4f})",
        f"best prompt  : {shown:<40} test accuracy {best['test']['accuracy']:.4f}  (dev {best['dev']['accuracy']:.4f})",
        f"cost         : {result['lm_calls']} LM calls for {result['prompt_evals']} prompt evaluations in training "
        f"(budget {_budget_text(result.get('budget') or {})}), "
        f"{result['dev_lm_calls']} for dev selection, {result['eval_lm_calls']} for evaluation; {result['wall_time_s']} s",
        f"results      : {run_dir}",
    ]
    return "\n".join(lines)
