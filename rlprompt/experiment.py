"""One prompt-optimization experiment, start to finish: ``rlprompt run`` and ``rlprompt eval --run``.

:func:`run_experiment` builds the task (data + task model + reward), the env and the agent a
:class:`~rlprompt.config.Config` describes, trains under the config's budget with resumable
checkpoints, selects the best prompt (the greedy prompt, the top k seen and the manual prompt,
re-scored on train + dev outside the budget: ``config.selection``), scores it and the manual
prompt on train/dev/test and writes the run directory (:mod:`rlprompt.rundir`); its result is a
:class:`~rlprompt.results.RunResult`. :func:`reselect_run` re-runs the selection of a finished
run under another ``selection`` section from its checkpoint, without training again.

Same config and seed on CPU gives a byte-identical ``best_prompt.json`` apart from
``wall_time_s``; a killed run resumed with ``resume=True`` ends with the same files as an
uninterrupted one, because the checkpoint holds everything training reads (including the
task model's score cache, which decides LM-call counts).
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from rlprompt import __version__
from rlprompt import progress as stages
from rlprompt.agents import AGENT_REGISTRY
from rlprompt.agents.base import Agent, DiscretePolicy
from rlprompt.callbacks import Callback, ProgressBar
from rlprompt.config import Config, save_config
from rlprompt.envs import PerInputPrompts, PromptEnv, build_env
from rlprompt.errors import ConfigError, RLPromptError
from rlprompt.io import directory_lock, temp_path_for
from rlprompt.logger import Logger
from rlprompt.outcomes import RUN_OUTCOMES, write_run_outcomes
from rlprompt.reporting import plot_reward_curve
from rlprompt.results import SPLITS, RunResult
from rlprompt.rundir import (
    BEST_PROMPT,
    CHECKPOINT,
    CONFIG,
    REWARD_CURVE,
    SOFT_PROMPT,
    check_run_dir,
    config_changes,
    default_run_dir,
    load_run,
    resolve_resume_config,
    run_prompt,
    saved_config,
    writing_run_dir,
)
from rlprompt.task import Task, prompt_text
from rlprompt.task_models.base import Prompt, SoftPromptable, prompt_key
from rlprompt.template import LabeledPrompt

METRIC_KEYS = (
    "accuracy",
    "macro_f1",
    "gold_log_prob",
    "reward",
    "n",
    "predicted_counts",
    "invalid",
    "likelihood",
    "outputs",
    "class_shift",
    "shown_excluded",
)
"""What a split's metrics keep besides a generation task's configured metrics."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def slim_metrics(metrics: dict[str, Any], task: Task | None = None) -> dict[str, Any]:
    """The reproducible part of :meth:`Task.evaluate`'s result (no costs, no timings)."""
    keys = [*(task.metric_names if task is not None else ()), *METRIC_KEYS]
    return {key: metrics[key] for key in dict.fromkeys(keys) if key in metrics}


def budget_limits(config: Config) -> dict[str, float | None]:
    b = config.budget
    return {
        "prompt_evals": b.prompt_evals,
        "lm_calls": b.lm_calls,
        "steps": b.steps,
        "requests": b.requests,
        "tokens": b.tokens,
        "cost": b.cost,
    }


def make_env(task: Task, config: Config) -> PromptEnv:
    """The env of ``config.env`` (its kind resolved from ``auto``) on ``task``."""
    return build_env(task, config.env)


class RunCheckpoint(Callback):
    """Save agent + task-model cache every ``every`` iterations (atomically, one file)."""

    def __init__(self, path: Path, every: int) -> None:
        self.path = path
        self.every = every

    def on_step(self, agent: Agent) -> bool:
        if agent.iterations % self.every == 0:
            save_run_checkpoint(agent, self.path)
        return True


def save_run_checkpoint(agent: Agent, path: Path) -> None:
    task = agent.task
    agent.save(path, extra={**task.cache_state(), "task_prompt_evals": task.prompt_evals})


def load_run_checkpoint(path: Path, task: Task, env: PromptEnv, config: Config | None = None) -> Agent:
    """The agent of a :func:`save_run_checkpoint` file on ``env``, with ``task``'s model cache and
    evaluation count restored as they were (so LM-call counts go on exactly). With ``config``,
    a checkpoint of another agent (or agent settings) than the config names is an error."""
    expected = None if config is None else (config.agent_name, config.agent_config())
    agent = Agent.load(path, env, expected=expected)
    extra = agent.checkpoint_extra or {}
    try:
        task.load_cache_state(extra)
        task.prompt_evals = extra["task_prompt_evals"]
    except (KeyError, TypeError, ValueError) as exc:
        raise RLPromptError(f"checkpoint {path} holds no usable task-model state ({exc})") from None
    return agent


def run_experiment(
    config: Config,
    output_dir: str | os.PathLike[str] | None = None,
    *,
    resume: bool = False,
    progress: bool | None = None,
    task: Task | None = None,
    command: str | None = None,
) -> RunResult:
    """Train, select, evaluate and write a run directory; returns its result.

    ``resume=True`` continues the run in ``output_dir`` from its checkpoint (a finished run
    is returned as it is). ``progress=None`` shows the bar when stderr is a terminal. The run
    holds the directory's lock while it writes (``command`` is what the lock file says it is).
    """
    if config.demos.select == "nearest":
        raise ConfigError(
            "demos.select: nearest retrieves each input's demonstrations: nothing is searched, so "
            "there is no run; score it with rlprompt eval (set demos.select: fixed to search a block)"
        )
    run_dir = Path(output_dir) if output_dir is not None else Path(config.output.dir or default_run_dir(config))
    check_run_dir(run_dir, resume)  # before anything is created: a refused directory stays as it was
    if resume:
        config = resolve_resume_config(run_dir, config)
        if (run_dir / BEST_PROMPT).is_file():
            return RunResult.load(run_dir / BEST_PROMPT)
    with writing_run_dir(run_dir, "run", resume=resume, command=command):
        if resume:  # again under the lock: another writer may have finished it meanwhile
            config = resolve_resume_config(run_dir, config)
            if (run_dir / BEST_PROMPT).is_file():
                return RunResult.load(run_dir / BEST_PROMPT)
        return _run_locked(config, run_dir, resume, progress, task)


def _run_locked(config: Config, run_dir: Path, resume: bool, progress: bool | None, task: Task | None) -> RunResult:
    """:func:`run_experiment` in its created and locked directory."""
    started = time.perf_counter()
    # A start that fails before its first checkpoint (bad data, model, env or agent, an API
    # that cannot be reached) leaves no file behind: ``writing_run_dir`` removes what it wrote.
    seed_everything(config.seed)
    task = task or Task.from_config(config)
    seed_everything(config.seed)  # the same trajectory whether the task was built here or given (a bench cell)
    env = make_env(task, config)
    checkpoint = run_dir / CHECKPOINT
    resuming = resume and checkpoint.is_file()
    if resuming:
        agent = load_run_checkpoint(checkpoint, task, env, config)
    else:
        agent = AGENT_REGISTRY[config.agent_name].agent_class(env, config.agent_config())

    config.output.dir = str(run_dir)
    save_config(config, run_dir / CONFIG)
    logger = agent.logger = Logger(run_dir, config.output.tensorboard, keep_iterations=agent.iterations)

    limits = budget_limits(config)
    show = sys.stderr.isatty() if progress is None else progress
    callbacks: list[Callback] = [RunCheckpoint(checkpoint, config.output.checkpoint_every)]
    title = f"{config.agent_name} ({config.env_kind()})"
    if show and config.output.progress:
        callbacks.append(ProgressBar(limits, title))
    try:
        agent.learn(
            limits["prompt_evals"],
            limits["lm_calls"],
            limits["steps"],
            callbacks=callbacks,
            total_requests=limits["requests"],
            total_tokens=limits["tokens"],
            total_cost=limits["cost"],
        )
        save_run_checkpoint(agent, checkpoint)
    finally:
        logger.close()

    with stages.reporting(stages.RichReporter()) if show and config.output.progress else contextlib.nullcontext():
        result, best_prompt, outcomes = select_and_evaluate(agent, task, config)
    # time of this session plus that of killed ones up to their checkpoints (via the rows' time_s)
    result.wall_time_s = round(max(logger.elapsed(), time.perf_counter() - started), 2)
    if config.output.plot:
        plot_reward_curve(logger.rows, run_dir / REWARD_CURVE, title=title)
    write_result(run_dir, result, best_prompt, outcomes)
    return result


def write_result(run_dir: Path, result: RunResult, best_prompt: Prompt, records: dict[str, Any] | None = None) -> None:
    """The soft prompt's file (soft runs) and the per-example outcomes, then ``best_prompt.json``:
    each written atomically."""
    if records is not None:
        write_run_outcomes(
            run_dir / RUN_OUTCOMES,
            task=result.task,
            metric_names=list(result.metric_names),
            found=records["found"],
            manual=records["manual"],
            prompts={"found": result.named_prompt, "manual": result.baseline["prompt"]},
        )
    if result.kind == "soft":
        from safetensors.torch import save_file

        tmp = temp_path_for(run_dir / SOFT_PROMPT)
        soft_prompt = cast(torch.Tensor, best_prompt)  # a soft run's prompt is a tensor
        save_file({"prompt_embeddings": soft_prompt.detach().float().cpu().contiguous()}, str(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, run_dir / SOFT_PROMPT)
    result.save(run_dir / BEST_PROMPT)


def reselect_run(run_dir: str | os.PathLike[str], overrides: list[str] | None = None) -> tuple[RunResult, RunResult]:
    """Select a finished run's prompt again from its checkpoint, under ``overrides`` of the
    ``selection`` section (nothing else may change: training is not repeated), and rewrite its
    ``config.json`` and ``best_prompt.json``. Returns (previous result, new result); wall time
    adds this selection's. Killed half-way, running it again with the same overrides repairs it."""
    run_dir = Path(run_dir)
    load_run(run_dir)  # a finished run, before its lock file is written
    with directory_lock(run_dir, "run directory"):
        return _reselect_locked(run_dir, overrides)


def _reselect_locked(run_dir: Path, overrides: list[str] | None) -> tuple[RunResult, RunResult]:
    previous_config, previous = load_run(run_dir)
    config = saved_config(run_dir, overrides)
    changed = config_changes(previous_config, config, may_change=("selection", "output"))
    if changed:
        raise ConfigError(
            f"rlprompt select changes only selection.* (and output.*): {changed} would need training "
            "again (start a new run)"
        )
    checkpoint = run_dir / CHECKPOINT
    if not checkpoint.is_file():
        raise RLPromptError(f"{run_dir} has no {CHECKPOINT}: its candidates are gone, it cannot be selected again")
    started = time.perf_counter()
    seed_everything(config.seed)
    task = Task.from_config(config)
    agent = load_run_checkpoint(checkpoint, task, make_env(task, config), config)
    result, best_prompt, outcomes = select_and_evaluate(agent, task, config)
    result.wall_time_s = round((previous.wall_time_s or 0.0) + time.perf_counter() - started, 2)
    save_config(config, run_dir / CONFIG)
    write_result(run_dir, result, best_prompt, outcomes)
    return previous, result


def per_input_metrics(agent: Agent, task: Task, split: str) -> dict[str, Any]:
    """Metrics (with per-example outcomes) of the agent's greedy per-input prompts on ``split``."""
    env = agent.env
    if not isinstance(agent, DiscretePolicy) or not isinstance(env, PerInputPrompts):
        raise ConfigError(
            f"agent {type(agent).__name__} on env {type(env).__name__}: per-input prompts need a discrete "
            "policy (ppo, a2c, reinforce, dqn) on a per-input env"
        )
    prompts = env.prompts_for(task.inputs(split), agent.chooser(deterministic=True))
    return task.evaluate_per_input(prompts, split, per_example=True)


def select_and_evaluate(agent: Agent, task: Task, config: Config) -> tuple[RunResult, Prompt, dict[str, Any]]:
    """Selection (``config.selection``), then train/dev/test metrics of the chosen and the manual
    prompt; returns the result, the chosen prompt and both prompts' per-example outcomes
    (``{"found"|"manual": {split: record}}``). A per-input policy is not selected among prompts:
    it is evaluated as trained, each input under its own prompt."""
    if isinstance(agent.env, PerInputPrompts):
        return _evaluate_policy(agent, task, config)
    selection = config.selection
    text_prompts = config.env_kind() != "soft"
    # the manual prompt as the env writes it (the label-word env: the instruction read with the manual words)
    extra = [agent.env.default_prompt()] if selection.include_manual and text_prompts else []
    with agent.evaluating():
        guard = selection.guard_splits if extra else []
        best = agent.best_prompt(splits=selection.splits, extra=extra, guard_splits=guard)
        before = task.task_model.stats.lm_calls
        metrics: dict[str, dict[str, Any]] = {}
        baseline: dict[str, dict[str, Any]] = {}
        outcomes: dict[str, dict[str, Any]] = {"found": {}, "manual": {}}
        with stages.stage("evaluating the best and the manual prompt", total=2 * len(SPLITS)):
            for scores, prompt, name in ((metrics, best.prompt, "found"), (baseline, config.manual_prompt, "manual")):
                for split in SPLITS:
                    stages.step(f"{name} {stages.shorten(prompt)} on {split} ({len(task.data.split(split))} examples)")
                    full = task.evaluate(prompt, split, per_example=True)
                    outcomes[name][split] = full.pop("per_example")
                    scores[split] = slim_metrics(full, task)
        eval_lm_calls = task.task_model.stats.lm_calls - before
    soft = isinstance(best.prompt, torch.Tensor)
    text = None if soft else prompt_text(best.prompt)
    words = list(best.prompt.label_words) if isinstance(best.prompt, LabeledPrompt) and not best.extra_won else None
    result = RunResult(
        kind="soft" if soft else "discrete",
        prompt=text,
        token_ids=None if soft else task.task_model.prompt_token_ids(cast(str, text)),  # text prompts: text is set
        soft_prompt_path=SOFT_PROMPT if soft else None,
        n_virtual_tokens=int(best.prompt.shape[0]) if soft else None,
        metrics=metrics,
        baseline={"prompt": config.manual_prompt, "metrics": baseline},
        demonstrations=None if soft else task.demonstrations(cast(str, text)),
        label_words=words,
        verbalizers=None if words is None else task.verbalizers_for(words),
        train_reward=best.train_reward,
        candidates=best.candidates,
        dev_lm_calls=best.dev_lm_calls,
        selected_on=list(selection.splits),
        manual_kept=best.extra_won,
        guarded_on=list(guard),
        guard_dropped=best.guard_dropped,
        **run_record(config, agent, task, eval_lm_calls),
    )
    return result, best.prompt, outcomes


def _evaluate_policy(agent: Agent, task: Task, config: Config) -> tuple[RunResult, Prompt, dict[str, Any]]:
    """:func:`select_and_evaluate` for a per-input policy: its train/dev/test metrics (each input
    under its own prompt) and the manual prompt's."""
    metrics, baseline = {}, {}
    outcomes: dict[str, dict[str, Any]] = {"found": {}, "manual": {}}
    described = f"<per input: a {config.agent_name} policy choosing {config.env.k} demonstrations>"
    with agent.evaluating():
        before = task.task_model.stats.lm_calls
        with stages.stage("evaluating the per-input policy and the manual prompt", total=2 * len(SPLITS)):
            for split in SPLITS:
                stages.step(f"per-input prompts on {split}")
                full = per_input_metrics(agent, task, split)
                outcomes["found"][split] = full.pop("per_example")
                metrics[split] = slim_metrics(full, task)
                stages.step(f"manual {stages.shorten(config.manual_prompt)} on {split}")
                full = task.evaluate(config.manual_prompt, split, per_example=True)
                outcomes["manual"][split] = full.pop("per_example")
                baseline[split] = slim_metrics(full, task)
        eval_lm_calls = task.task_model.stats.lm_calls - before
    env_config = config.env
    result = RunResult(
        kind="discrete",
        prompt=described,
        token_ids=None,
        soft_prompt_path=None,
        n_virtual_tokens=None,
        metrics=metrics,
        baseline={"prompt": config.manual_prompt, "metrics": baseline},
        train_reward=None,
        candidates=1,
        dev_lm_calls=0,
        selected_on=[],
        **run_record(config, agent, task, eval_lm_calls),
        per_input={
            "checkpoint": CHECKPOINT,
            "env": config.env_kind(),
            "k": getattr(env_config, "k", None),
            "encoder": getattr(env_config, "encoder", None) or config.demos.encoder,
        },
    )
    return result, described, outcomes


def run_record(config: Config, agent: Agent, task: Task, eval_lm_calls: int) -> dict[str, Any]:
    """The fields of a :class:`RunResult` that every kind of run fills alike: what training spent,
    the evaluation's LM calls, the budget, the run's names and versions."""
    return {
        "lm_calls": agent.lm_calls,
        "prompt_evals": agent.prompt_evals,
        "env_steps": agent.env_steps,
        "iterations": agent.iterations,
        "eval_lm_calls": eval_lm_calls,
        "budget": {k: v for k, v in budget_limits(config).items() if v is not None},
        "agent": config.agent_name,
        "env": config.env_kind(),
        "task_model": config.task_model.label,
        "reward": cast(str, config.reward.name),  # the family fills it
        "seed": config.seed,
        "rlprompt_version": __version__,
        "wall_time_s": None,
        "task": config.task,
        "metric_names": task.metric_names,
        "api": api_usage(agent, task),
        "outcomes": RUN_OUTCOMES,
    }


def load_policy(run_dir: str | os.PathLike[str], task: Task | None = None) -> PerInputPolicy:
    """The per-input policy a run trained (``env.kind: demos_per_input``), ready to give any
    input its prompt: ``load_policy(run).prompt("a gripping film")``. ``task`` is the run's task
    when already loaded (else it is built from the run's config)."""
    config, best = load_run(run_dir)
    return _policy(run_dir, config, best, task or Task.from_config(config))


def _policy(run_dir: str | os.PathLike[str], config: Config, best: RunResult, task: Task) -> PerInputPolicy:
    if best.per_input is None:
        raise RLPromptError(
            f"{run_dir} did not train a per-input policy (env.kind={best.env}): its prompt is "
            f"{best.shown_prompt} for every input"
        )
    path = Path(run_dir) / str(best.per_input["checkpoint"])
    if not path.is_file():
        raise RLPromptError(f"{run_dir}: the policy's checkpoint {path.name} is missing")
    env = make_env(task, config)
    # the agent alone: the task's score cache stays the caller's (a task under overrides would
    # otherwise read the training model's cached scores)
    agent = Agent.load(path, env, expected=(config.agent_name, config.agent_config()))
    return PerInputPolicy(agent, env)


class PerInputPolicy:
    """A trained per-input policy and its env: the reusable artefact of a per-input run."""

    def __init__(self, agent: Agent, env: PromptEnv) -> None:
        if not isinstance(agent, DiscretePolicy) or not isinstance(env, PerInputPrompts):
            raise ConfigError(f"{type(agent).__name__} on {type(env).__name__} is not a per-input policy")
        self.agent, self.env = agent, env

    def prompts(self, examples: list[Any]) -> list[Any]:
        """Each input's prompt (what fills the template's searched slot), greedy."""
        return self.env.prompts_for(examples, self.agent.chooser(deterministic=True))

    def prompt(self, example: Any) -> Any:
        """One input's prompt: a text, or a generation task's field mapping."""
        return self.prompts([example])[0]


def api_usage(agent: Agent, task: Task) -> dict[str, Any] | None:
    """What a served model's run sent and spent (None for local models)."""
    model = task.task_model
    if not model.served:
        return None
    stats = model.stats.as_dict()
    total = {
        k: stats[k]
        for k in (
            "requests",
            "requests_cached",
            "prompt_tokens",
            "completion_tokens",
            "cost",
            "retries",
            "invalid_answers",
        )
    }
    training = {k: v for k, v in agent.spent().items() if k in ("requests", "tokens", "cost")}
    return {"scoring": getattr(model, "scoring", None), "training": training, "total": total}


def evaluate_run(
    run_dir: str | os.PathLike[str], split: str = "test", overrides: list[str] | None = None, per_example: bool = False
) -> dict[str, Any]:
    """Re-score a run's best prompt on ``split`` (under ``overrides``: transfer to another
    model or dataset). Without overrides the result is compared to ``best_prompt.json``.
    ``per_example`` adds the split's per-example outcomes (``per_example``)."""
    config, best = load_run(run_dir, overrides)
    task = Task.from_config(config)
    if best.per_input is not None:  # every input under the prompt the run's policy gives it
        prompts = _policy(run_dir, config, best, task).prompts(task.inputs(split))
        full = task.evaluate_per_input(prompts, split, per_example=per_example)
    else:
        prompt = run_prompt(run_dir, best)
        if isinstance(prompt, torch.Tensor):
            # the declared capability (an isinstance check of the protocol would compute its properties)
            if not task.task_model.supports_soft_prompts:
                raise RLPromptError(
                    f"the run's prompt is a soft prompt, and task_model.kind={config.task_model.kind} takes text "
                    "only: soft prompts need a local model"
                )
            model = cast(SoftPromptable, task.task_model)
            if prompt.shape[1] != model.hidden_size:
                raise RLPromptError(
                    f"the run's soft prompt has width {prompt.shape[1]}, the task model {model.hidden_size}: "
                    "soft prompts transfer only between models with the same embedding size"
                )
        full = task.evaluate(prompt, split, per_example=per_example)
    outcomes = full.pop("per_example", None)
    metrics = slim_metrics(full, task)
    recorded = best.metrics.get(split)
    result: dict[str, Any] = {
        "run": str(run_dir),
        "split": split,
        "kind": best.kind,
        "prompt": best.prompt,
        "label_words": best.label_words,
        "task_model": config.task_model.label,
        "metrics": metrics,
        "task": config.task,
        "metric_names": task.metric_names,
        "overrides": list(overrides or []),
    }
    if not overrides and recorded is not None:
        result["reproduces"], result["max_abs_diff"] = metrics_match(metrics, recorded)
        result["recorded"] = recorded
    if outcomes is not None:
        result["per_example"] = outcomes
    return result


def metrics_match(metrics: dict[str, Any], recorded: dict[str, Any], tol: float = 1e-5) -> tuple[bool, float]:
    """Same predictions (counts exactly) and continuous metrics within ``tol``; the max deviation.

    Re-scoring in a new process batches rows differently (the verbalizer rows, say, now share
    a forward pass with other inputs), which moves float32 log-probs by a few ulps (~1e-7)."""
    worst = 0.0
    for key, value in recorded.items():
        if isinstance(value, float):
            worst = max(worst, abs(float(metrics[key]) - value))
        elif isinstance(value, list) and value and all(isinstance(v, float) for v in value):
            other = metrics.get(key)
            if not isinstance(other, list) or len(other) != len(value):
                return False, float("inf")
            worst = max(worst, *(abs(float(a) - b) for a, b in zip(other, value, strict=True)))
        elif metrics.get(key) != value:
            return False, float("inf")
    return worst <= tol, worst


def record_outcomes(run_dirs: list[Path], echo: Any = print) -> list[Path]:
    """Write ``outcomes.json`` into finished runs from before rlprompt kept per-example outcomes
    (schema < 3): the found and the manual prompt re-scored on every split, each split checked to
    reproduce the metrics ``best_prompt.json`` records (else nothing is written to that run), then
    ``best_prompt.json`` gains its ``outcomes`` field. Runs that have outcomes are skipped. Runs
    with the same ``task_model`` section share one loaded model, and runs of the same task (data,
    template, prompt, scoring; not agent, env, budget or seed) share their prompts' scores, so a
    manual prompt is scored once. Returns the runs written."""
    import json

    from rlprompt.config import config_to_dict

    loaded: dict[str, tuple[Any, Any]] = {}
    records: dict[tuple[str, str, str], tuple[dict[str, Any], dict[str, Any]]] = {}
    written = []
    for run_dir in run_dirs:
        config, best = load_run(run_dir)
        if best.outcomes is not None and (run_dir / best.outcomes).is_file():
            echo(f"{run_dir}: has its outcomes, skipped")
            continue
        with directory_lock(run_dir, "run directory"):
            model_key = json.dumps(config_to_dict(config.task_model), sort_keys=True)
            if model_key not in loaded:
                loaded.clear()
                seed_everything(config.seed)
                task = Task.from_config(config)
                loaded[model_key] = (
                    getattr(task.task_model, "model", None),
                    getattr(task.task_model, "tokenizer", None),
                )
            else:
                seed_everything(config.seed)
                model, tokenizer = loaded[model_key]
                task = Task.from_config(config, model=model, tokenizer=tokenizer)
            shared = {
                k: v
                for k, v in config_to_dict(config).items()
                if k not in ("agent", "env", "budget", "selection", "output", "finetune", "seed")
            }
            task_key = json.dumps(shared, sort_keys=True, default=str)
            if best.per_input is not None:
                raise RLPromptError(
                    f"{run_dir} trained a per-input policy and has no {RUN_OUTCOMES}: write them with "
                    f"rlprompt eval --run {run_dir} --save-outcomes FILE (one split a file)"
                )
            found = run_prompt(run_dir, best)
            out: dict[str, dict[str, Any]] = {"found": {}, "manual": {}}
            for name, prompt, recorded in (
                ("found", found, best.metrics),
                ("manual", best.baseline["prompt"], best.baseline["metrics"]),
            ):
                for split in SPLITS:
                    key = (
                        task_key,
                        prompt_key(prompt) if not isinstance(prompt, torch.Tensor) else f"soft:{run_dir}",
                        split,
                    )
                    if key not in records:
                        full = task.evaluate(prompt, split, per_example=True)
                        record = full.pop("per_example")
                        records[key] = (record, slim_metrics(full, task))
                    record, metrics = records[key]
                    same, worst = metrics_match(metrics, recorded[split])
                    if not same:
                        raise RLPromptError(
                            f"{run_dir}: the {name} prompt's {split} metrics re-scored here differ from "
                            f"its {BEST_PROMPT} (largest deviation {worst:.1e}); its outcomes would not "
                            "describe its recorded results, so none are written"
                        )
                    out[name][split] = record
            best.outcomes = RUN_OUTCOMES
            write_run_outcomes(
                run_dir / RUN_OUTCOMES,
                task=best.task,
                metric_names=list(best.metric_names),
                found=out["found"],
                manual=out["manual"],
                prompts={"found": best.named_prompt, "manual": best.baseline["prompt"]},
            )
            best.save(run_dir / BEST_PROMPT)
        written.append(run_dir)
        sizes = ", ".join(f"{split} {out['found'][split]['n']}" for split in SPLITS)
        echo(f"{run_dir}: outcomes written ({sizes} examples)")
    return written


def finished_runs(paths: list[str]) -> list[Path]:
    """Each path a run directory, or a directory (a bench's output) whose finished runs, found
    below it, are taken in sorted order."""
    runs: list[Path] = []
    for path in map(Path, paths):
        if (path / BEST_PROMPT).is_file():
            runs.append(path)
        elif path.is_dir():
            below = sorted(p.parent for p in path.rglob(BEST_PROMPT) if (p.parent / CONFIG).is_file())
            if not below:
                raise RLPromptError(f"{path} is not a finished run and holds none")
            runs += below
        else:
            raise RLPromptError(f"run directory not found: {path}")
    return list(dict.fromkeys(runs))
