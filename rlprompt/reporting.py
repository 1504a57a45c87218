"""Reports: reward-curve plots, benchmark tables and the summaries the CLI prints.

Plots use matplotlib's object API (a ``Figure`` drawn on an Agg canvas), so nothing here
touches matplotlib's global backend or pyplot state; every image is written atomically.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rlprompt.io import temp_path_for
from rlprompt.results import FinetuneResult, RunResult

# ---------------------------------------------------------------- plots


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    tmp = temp_path_for(path)
    fig.savefig(tmp, dpi=110, format="png")
    os.replace(tmp, path)


def plot_reward_curve(rows: Sequence[Mapping[str, Any]], path: Path, title: str = "") -> None:
    """Best (and, when logged, batch mean) train reward against LM calls, from metrics rows."""
    if not rows:
        return
    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot()
    xs = [float(r["lm_calls"]) for r in rows]
    ax.plot(xs, [float(r["best_train_reward"]) for r in rows], label="best prompt (mean train reward)")
    if "mean_reward" in rows[0]:
        ax.plot(xs, [float(r["mean_reward"]) for r in rows], alpha=0.5, label="batch mean reward")
    ax.set_xlabel("LM calls")
    ax.set_ylabel("train reward")
    ax.set_title(title)
    ax.legend(fontsize=8)
    _save(fig, path)


def read_curve(metrics_csv: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(LM calls, best train reward) of a run's ``metrics.csv`` (rows logging NaN skipped)."""
    if not metrics_csv.is_file():
        return None
    with metrics_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    x = np.array([float(r["lm_calls"]) for r in rows])
    y = np.array([float(r["best_train_reward"]) for r in rows])
    keep = np.isfinite(y)  # e.g. DQN logs NaN until its first episode ends
    return (x[keep], y[keep]) if keep.any() else None


def plot_curves_over_seeds(panels: Mapping[str, Mapping[str, Sequence[Path]]], path: Path) -> None:
    """One panel per task; per label the mean over seeds of the running-best train reward vs LM
    calls with a ±std band. ``panels``: task -> label -> the seeds' ``metrics.csv`` files."""
    fig = _figure(6.4 * max(len(panels), 1), 4.4)
    for index, (task, groups) in enumerate(panels.items(), start=1):
        ax = fig.add_subplot(1, len(panels), index)
        for label, files in groups.items():
            curves = [cv for f in files if (cv := read_curve(f)) is not None]
            if not curves:
                continue
            grid = np.linspace(min(float(x[0]) for x, _ in curves), min(float(x[-1]) for x, _ in curves), 200)
            # running best; rows before the first finished episode log NaN (fmax skips them)
            ys = np.stack([np.interp(grid, x, np.fmax.accumulate(y)) for x, y in curves])
            mean, std = ys.mean(0), ys.std(0)
            line = ax.plot(grid, mean, label=f"{label} (n={len(curves)})")[0]
            ax.fill_between(grid, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        ax.set_xlabel("LM calls (training)")
        ax.set_ylabel("best mean train reward")
        ax.set_title(task)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    _save(fig, path)


# ---------------------------------------------------------------- tables


def mean_std(values: Sequence[float]) -> str:
    arr = np.asarray(values, dtype=float)
    return f"{arr.mean():.4f} ± {arr.std(ddof=1) if len(arr) > 1 else 0.0:.4f}"


def bench_table(rows: Sequence[Mapping[str, Any]], metric: str = "accuracy", heading: bool = False) -> str:
    """Markdown: per task, the manual prompt and each (agent, budget) with mean ± std over seeds
    of test and dev ``metric``, train LM calls and the per-seed test values (``heading``: the
    metric named in the section title, for one table per metric)."""
    lines: list[str] = []
    for task in dict.fromkeys(r["task"] for r in rows):
        task_rows = [r for r in rows if r["task"] == task]
        seeds = sorted({r["seed"] for r in task_rows})
        title = f"### {task}: {metric}" if heading else f"### {task}"
        lines += [title, "", f"Mean ± std over seeds {seeds} (cells finished: {len(task_rows)}).", "",
                  f"| agent | env | budget (prompt evals) | test {metric} | dev {metric} | train LM calls | seeds | "
                  f"per-seed test {metric} |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        manual = {r["seed"]: r[f"manual_test_{metric}"] for r in task_rows}
        manual_dev = {r["seed"]: r[f"manual_dev_{metric}"] for r in task_rows}
        per_seed = " / ".join(f"{manual[s]:.4f}" for s in sorted(manual))
        lines.append(f"| manual prompt | - | 0 | {mean_std(list(manual.values()))} | "
                     f"{mean_std(list(manual_dev.values()))} | 0 | {len(manual)} | {per_seed} |")  # fmt: skip
        groups: dict[tuple[str, Any], list[Mapping[str, Any]]] = {}
        for r in task_rows:
            groups.setdefault((r["agent"], r["budget"]), []).append(r)
        ordered = sorted(groups.items(), key=lambda kv: -float(np.mean([r[f"test_{metric}"] for r in kv[1]])))
        for (agent, budget), group in ordered:
            group = sorted(group, key=lambda r: r["seed"])
            per_seed = " / ".join(f"{r[f'test_{metric}']:.4f}" for r in group)
            lines.append(
                f"| {agent} | {group[0]['env']} | {budget} | {mean_std([r[f'test_{metric}'] for r in group])} | "
                f"{mean_std([r[f'dev_{metric}'] for r in group])} | {int(np.mean([r['lm_calls'] for r in group]))} | "
                f"{len(group)} | {per_seed} |"
            )
        lines.append("")
    return "\n".join(lines) + ("\n" if lines else "No finished cells yet.\n")


# ---------------------------------------------------------------- summaries


def _budget_text(budget: Mapping[str, int]) -> str:
    names = {"prompt_evals": "prompt evaluations", "lm_calls": "LM calls", "steps": "env steps"}
    return ", ".join(f"{v} {names.get(k, k)}" for k, v in budget.items()) or "none"


def format_summary(result: RunResult, run_dir: str | os.PathLike[str], metric: str | None = None) -> str:
    """The lines ``rlprompt run`` prints at the end (``metric``: the run's main one by default)."""
    base, best = result.baseline, result.metrics
    metric = metric or result.primary_metric
    return "\n".join([
        f"agent        : {result.agent} on the {result.env} env, task model {result.task_model}, seed {result.seed}",
        f"manual prompt: {base['prompt']!r:<40} test {metric} {base['metrics']['test'][metric]:.4f}  "
        f"(dev {base['metrics']['dev'][metric]:.4f})",
        f"best prompt  : {result.shown_prompt:<40} test {metric} {best['test'][metric]:.4f}  "
        f"(dev {best['dev'][metric]:.4f})",
        *_selection_lines(result),
        f"cost         : {result.lm_calls} LM calls for {result.prompt_evals} prompt evaluations in training "
        f"(budget {_budget_text(result.budget)}), {result.dev_lm_calls} for selection on "
        f"{'+'.join(result.selected_on)} ({result.candidates} candidates), "
        f"{result.eval_lm_calls} for evaluation; {result.wall_time_s} s",
        *_api_lines(result),
        f"results      : {run_dir}",
    ])  # fmt: skip


def _selection_lines(result: RunResult) -> list[str]:
    """Say so when no found prompt beat the manual one (the run reports the manual prompt), and
    when the guard dropped prompts that would have been reported."""
    lines = []
    if result.guard_dropped:
        lines.append(f"guard        : {result.guard_dropped} found prompt(s) beat the reported one on "
                     f"{'+'.join(result.selected_on)} but lost to the manual prompt on {'+'.join(result.guarded_on)}; "
                     "dropped (selection.guard_splits)")  # fmt: skip
    if result.manual_kept:
        lines.append(f"selection    : no prompt found in training beat the manual prompt on {'+'.join(result.selected_on)}"
                     f"{' without losing on ' + '+'.join(result.guarded_on) if result.guarded_on else ''}; "
                     "the manual prompt is kept")  # fmt: skip
    return lines


def _api_lines(result: RunResult) -> list[str]:
    """A served model's scoring mode and usage (training, and the whole run)."""
    if not result.api:
        return []
    train, total = result.api["training"], result.api["total"]
    money = f", cost {total['cost']:.4f} (training {train.get('cost', 0):.4f})" if total.get("cost") else ""
    return [f"API          : scoring={result.api['scoring']}; {total['requests']} requests "
            f"({total['requests_cached']} from the response cache, {total['retries']} retries), "
            f"{total['prompt_tokens'] + total['completion_tokens']} tokens{money}; training "
            f"{int(train.get('requests', 0))} requests, {int(train.get('tokens', 0))} tokens"
            + (f"; {total['invalid_answers']} invalid answers" if total.get("invalid_answers") else "")]  # fmt: skip


def format_finetune_summary(result: FinetuneResult, splits: Sequence[str] = ("dev", "test")) -> str:
    """The lines ``rlprompt finetune`` prints at the end."""
    b, a = result.before["metrics"], result.after["metrics"]
    lines = [f"method   : {result.method} ({'LoRA' if result.lora else 'full fine-tuning'}) on "
             f"{result.task_model}, prompt {result.prompt!r}, {result.steps} steps"]  # fmt: skip
    for split in splits:
        lines.append(f"{split:<9}: greedy accuracy {b[split]['accuracy']:.4f} -> {a[split]['accuracy']:.4f}  "
                     f"(invalid answers {b[split]['invalid']} -> {a[split]['invalid']} of {a[split]['n']})")  # fmt: skip
    lines.append(f"saved    : {Path(result.run_dir) / result.saved}  ({result.wall_time_s} s)")
    return "\n".join(lines)
