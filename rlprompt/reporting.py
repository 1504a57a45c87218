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


def _curve_array(files: Sequence[Sequence[Path]], points: int = 60) -> tuple[np.ndarray, np.ndarray] | None:
    """(LM-call grid, runs x tasks x points running-best train reward) of ``files`` (per task, the
    runs' ``metrics.csv``), on the LM calls every run reached; None when a task has no curve."""
    per_task = [[cv for f in task_files if (cv := read_curve(f)) is not None] for task_files in files]
    runs = min((len(curves) for curves in per_task), default=0)
    if runs == 0:
        return None
    per_task = [curves[:runs] for curves in per_task]
    every = [cv for curves in per_task for cv in curves]
    start, stop = max(float(x[0]) for x, _ in every), min(float(x[-1]) for x, _ in every)
    grid = np.linspace(min(start, stop), stop, points)
    # running best; rows before the first finished episode log NaN (fmax skips them)
    values = np.stack(
        [np.stack([np.interp(grid, x, np.fmax.accumulate(y)) for x, y in curves]) for curves in per_task], axis=1
    )
    return grid, values


def plot_curves_iqm(panels: Mapping[str, Mapping[str, Sequence[Sequence[Path]]]], path: Path, reps: int = 2000) -> None:
    """One panel per task (and model); per label the IQM over runs x data splits of the running-best
    train reward against LM calls, with a 95% stratified-bootstrap band (:func:`rlprompt.aggregate.iqm_curve`).
    ``panels``: panel -> label -> per data split, the runs' ``metrics.csv`` files."""
    from rlprompt.aggregate import iqm_curve

    fig = _figure(6.4 * max(len(panels), 1), 4.4)
    for index, (panel, groups) in enumerate(panels.items(), start=1):
        ax = fig.add_subplot(1, len(panels), index)
        for label, files in groups.items():
            curve = _curve_array(files)
            if curve is None:
                continue
            grid, values = curve
            mid, low, high = iqm_curve(values, reps=reps)
            line = ax.plot(grid, mid, label=f"{label} ({values.shape[0]} x {values.shape[1]} runs)")[0]
            ax.fill_between(grid, low, high, color=line.get_color(), alpha=0.2)
        ax.set_xlabel("LM calls (training)")
        ax.set_ylabel("best mean train reward (IQM, 95% band)")
        ax.set_title(panel)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    _save(fig, path)


def plot_performance_profiles(
    panels: Mapping[str, Mapping[str, np.ndarray]], path: Path, metric: str, reps: int = 2000
) -> None:
    """One panel per task (and model): per label the share of its runs x data splits whose test
    ``metric`` exceeds each threshold, with 95% bands (:func:`rlprompt.aggregate.performance_profile`)."""
    from rlprompt.aggregate import performance_profile

    fig = _figure(6.4 * max(len(panels), 1), 4.4)
    for index, (panel, matrices) in enumerate(panels.items(), start=1):
        ax = fig.add_subplot(1, len(panels), index)
        values = np.concatenate([m.ravel() for m in matrices.values()]) if matrices else np.zeros(1)
        span = max(float(values.max() - values.min()), 1e-3)
        taus = np.linspace(float(values.min()) - 0.05 * span, float(values.max()) + 0.05 * span, 101)
        profiles, bands = performance_profile(matrices, taus, reps=reps) if matrices else ({}, {})
        for label, profile in profiles.items():
            line = ax.plot(taus, profile, label=label)[0]
            ax.fill_between(taus, bands[label][0], bands[label][1], color=line.get_color(), alpha=0.2)
        ax.set_xlabel(f"test {metric} threshold")
        ax.set_ylabel(f"share of runs with test {metric} > threshold")
        ax.set_title(panel)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    _save(fig, path)


# ---------------------------------------------------------------- tables


def mean_std(values: Sequence[float] | np.ndarray) -> str:
    arr = np.asarray(values, dtype=float)
    return f"{arr.mean():.4f} ± {arr.std(ddof=1) if len(arr) > 1 else 0.0:.4f}"


RANDOM_SEARCH = "random_search"


def score_matrix(rows: Sequence[Mapping[str, Any]], key: str, splits: Sequence[Any]) -> tuple[np.ndarray, list[Any]]:
    """Runs x tasks matrix of ``row[key]``: one row per seed that finished on every split of
    ``splits`` (the tasks), in seed order; and those seeds."""
    by_cell = {(r["seed"], r.get("split")): float(r[key]) for r in rows}
    seeds = sorted({seed for seed, _ in by_cell if all((seed, split) in by_cell for split in splits)})
    return np.array([[by_cell[(seed, split)] for split in splits] for seed in seeds]).reshape(
        len(seeds), len(splits)
    ), seeds


def section_groups(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[Any, Any], list[Mapping[str, Any]]]:
    """A table section's rows grouped by (agent, budget), in first-seen order."""
    groups: dict[tuple[Any, Any], list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["agent"], r["budget"]), []).append(r)
    return groups


def random_search_of(
    groups: Mapping[tuple[Any, Any], Sequence[Mapping[str, Any]]], budget: Any
) -> tuple[Any, Any] | None:
    """The random-search group of ``budget`` (the label random_search first, else any cell whose
    agent is random search)."""
    if (RANDOM_SEARCH, budget) in groups:
        return (RANDOM_SEARCH, budget)
    return next((key for key, g in groups.items() if key[1] == budget and g[0]["agent_name"] == RANDOM_SEARCH), None)


def sections(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[Any, Any], list[Mapping[str, Any]]]:
    """Rows by (task, model): one table section each."""
    out: dict[tuple[Any, Any], list[Mapping[str, Any]]] = {}
    for r in rows:
        out.setdefault((r["task"], r.get("model")), []).append(r)
    return out


def bench_table(
    rows: Sequence[Mapping[str, Any]], metric: str = "accuracy", heading: bool = False, reps: int = 2000
) -> str:
    """Markdown: per task (and task model), the manual prompt and each (agent, budget) over the data
    splits (tasks) x seeds (runs): mean ± std, the IQM with its 95% stratified-bootstrap interval,
    the probability of improvement over the manual prompt and over random search of the same
    budget with 95% intervals and a verdict (:mod:`rlprompt.aggregate`), the dev mean, train LM
    calls and each run's test value (``heading``: the metric named in the section title)."""
    from rlprompt.aggregate import MIN_RUNS, iqm, probability_of_improvement, verdict

    lines: list[str] = []
    for (task, model), task_rows in sections(rows).items():
        splits = list(dict.fromkeys(r.get("split") for r in task_rows))
        seeds = sorted({r["seed"] for r in task_rows})
        name = f"{task} on {model}" if model is not None else str(task)
        split_text = (
            f"data splits {[str(s) for s in splits]} (tasks) x seeds {seeds} (runs)"
            if splits != [None]
            else f"seeds {seeds} (runs; one task: each cell's data.dir)"
        )
        lines += [
            f"### {name}: {metric}" if heading else f"### {name}",
            "",
            f"Test {metric} over {split_text}; cells finished: {len(task_rows)}. IQM: interquartile mean "
            f"with its 95% stratified-bootstrap interval; P(> Y): probability that a run beats a run of Y on the "
            f"same split (ties count half), averaged over splits, with its 95% interval; the verdict says "
            f"'better' or 'worse' when that interval lies wholly above or below 0.5, and needs {MIN_RUNS} runs "
            f"or more (rliable, {reps} resamples; only seeds finished on every split count). Runs better / worse than manual: runs whose found "
            f"prompt's paired 95% bootstrap interval of the difference from the manual prompt on the same test "
            f"examples lies above / below 0 (rlprompt compare; runs without per-example outcomes are not "
            f"counted: rlprompt outcomes writes them).",
            "",
            f"| agent | env | budget (prompt evals) | runs | test {metric} mean ± std | test IQM [95% CI] | "
            f"P(> manual) [95% CI] | P(> random search) [95% CI] | verdict | runs better / worse than manual "
            f"(paired test) | dev {metric} | train LM calls | per-run test {metric} |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        manual, manual_seeds = score_matrix(task_rows, f"manual_test_{metric}", splits)
        manual_dev, _ = score_matrix(task_rows, f"manual_dev_{metric}", splits)
        if manual.size:
            lines.append(
                f"| manual prompt | - | 0 | {manual.size} | {mean_std(manual.ravel())} | "
                f"{iqm(manual, reps).text()} | - | - | - | - | {manual_dev.mean():.4f} | 0 | "
                f"{_per_run(manual, splits)} |"
            )
        groups = section_groups(task_rows)
        matrices = {key: score_matrix(g, f"test_{metric}", splits)[0] for key, g in groups.items()}
        ordered = sorted(groups, key=lambda key: -float(np.mean([r[f"test_{metric}"] for r in groups[key]])))
        for key in ordered:
            group, scores = groups[key], matrices[key]
            agent, budget = key
            if not scores.size:
                lines.append(
                    f"| {agent} | {group[0]['env']} | {budget} | 0 | - | - | - | - | not finished on every "
                    f"split | {_paired_counts(group, metric)} | - | - | - |"
                )
                continue
            own_manual, _ = score_matrix(group, f"manual_test_{metric}", splits)
            vs_manual = probability_of_improvement(scores, own_manual, reps)
            words = [verdict(vs_manual, "manual", scores.size)]
            random_key = random_search_of(groups, budget)
            vs_random_text = "-"
            if random_key is not None and random_key != key and matrices[random_key].size:
                vs_random = probability_of_improvement(scores, matrices[random_key], reps)
                vs_random_text = vs_random.text(2)
                words.append(verdict(vs_random, "random search", min(scores.size, matrices[random_key].size)))
            dev, _ = score_matrix(group, f"dev_{metric}", splits)
            lines.append(
                f"| {agent} | {group[0]['env']} | {budget} | {scores.size} | {mean_std(scores.ravel())} | "
                f"{iqm(scores, reps).text()} | {vs_manual.text(2)} | {vs_random_text} | {'; '.join(words)} | "
                f"{_paired_counts(group, metric)} | {dev.mean():.4f} | {int(np.mean([r['lm_calls'] for r in group]))} | {_per_run(scores, splits)} |"
            )
        lines.append("")
    return "\n".join(lines) + ("\n" if lines else "No finished cells yet.\n")


def _paired_counts(group: Sequence[Mapping[str, Any]], metric: str) -> str:
    """``better / worse of n``: the group's runs whose paired interval against the manual prompt
    lies above / below 0, of those with per-example outcomes."""
    tested = [r for r in group if r.get(f"paired_{metric}_ci_low") is not None]
    if not tested:
        return "-"
    better = sum(float(r[f"paired_{metric}_ci_low"]) > 0 for r in tested)
    worse = sum(float(r[f"paired_{metric}_ci_high"]) < 0 for r in tested)
    return f"{better} / {worse} of {len(tested)}"


def _per_run(scores: np.ndarray, splits: Sequence[Any]) -> str:
    """Each run's value, seed by seed, split by split."""
    if splits == [None]:
        return " / ".join(f"{v:.4f}" for v in scores[:, 0])
    return "; ".join(f"{split}: " + " / ".join(f"{v:.4f}" for v in scores[:, i]) for i, split in enumerate(splits))


# ---------------------------------------------------------------- summaries


def _budget_text(budget: Mapping[str, float]) -> str:
    names = {"prompt_evals": "prompt evaluations", "lm_calls": "LM calls", "steps": "env steps"}
    return ", ".join(f"{v} {names.get(k, k)}" for k, v in budget.items()) or "none"


def format_summary(result: RunResult, run_dir: str | os.PathLike[str], metric: str | None = None) -> str:
    """The lines ``rlprompt run`` prints at the end (``metric``: the run's main one by default)."""
    base, best = result.baseline, result.metrics
    metric = metric or result.primary_metric
    return "\n".join(
        [
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
        ]
    )


def _selection_lines(result: RunResult) -> list[str]:
    """Say so when no found prompt beat the manual one (the run reports the manual prompt), and
    when the guard dropped prompts that would have been reported."""
    lines = []
    if result.guard_dropped:
        lines.append(
            f"guard        : {result.guard_dropped} found prompt(s) beat the reported one on "
            f"{'+'.join(result.selected_on)} but lost to the manual prompt on {'+'.join(result.guarded_on)}; "
            "dropped (selection.guard_splits)"
        )
    if result.manual_kept:
        lines.append(
            f"selection    : no prompt found in training beat the manual prompt on {'+'.join(result.selected_on)}"
            f"{' without losing on ' + '+'.join(result.guarded_on) if result.guarded_on else ''}; "
            "the manual prompt is kept"
        )
    return lines


def _api_lines(result: RunResult) -> list[str]:
    """A served model's scoring mode and usage (training, and the whole run)."""
    if not result.api:
        return []
    train, total = result.api["training"], result.api["total"]
    money = f", cost {total['cost']:.4f} (training {train.get('cost', 0):.4f})" if total.get("cost") else ""
    return [
        f"API          : scoring={result.api['scoring']}; {total['requests']} requests "
        f"({total['requests_cached']} from the response cache, {total['retries']} retries), "
        f"{total['prompt_tokens'] + total['completion_tokens']} tokens{money}; training "
        f"{int(train.get('requests', 0))} requests, {int(train.get('tokens', 0))} tokens"
        + (f"; {total['invalid_answers']} invalid answers" if total.get("invalid_answers") else "")
    ]


def format_finetune_summary(result: FinetuneResult, splits: Sequence[str] = ("dev", "test")) -> str:
    """The lines ``rlprompt finetune`` prints at the end."""
    b, a = result.before["metrics"], result.after["metrics"]
    lines = [
        f"method   : {result.method} ({'LoRA' if result.lora else 'full fine-tuning'}) on "
        f"{result.task_model}, prompt {result.prompt!r}, {result.steps} steps"
    ]
    for split in splits:
        lines.append(
            f"{split:<9}: greedy accuracy {b[split]['accuracy']:.4f} -> {a[split]['accuracy']:.4f}  "
            f"(invalid answers {b[split]['invalid']} -> {a[split]['invalid']} of {a[split]['n']})"
        )
    lines.append(f"saved    : {Path(result.run_dir) / result.saved}  ({result.wall_time_s} s)")
    return "\n".join(lines)
