"""Benchmarks of agents: ``rlprompt bench BENCH.yaml`` runs a grid of agents x tasks x seeds x budgets.

A bench file names a base run config and the grid::

    base: sst2-minilm.yaml            # relative to the bench file
    set: [env.batch_size=16]          # overrides applied to every cell
    agents:                           # label -> overrides (null: agent.name=<label>)
      sql: null
      ppo-edit: [agent.name=ppo, env.kind=edit]
    tasks:                            # label -> overrides; "{seed}" is replaced per cell
      sst2: ["data.dir=../shared/data/sst-2/16-{seed}"]
    seeds: [13, 21, 42]
    budgets: [2000]                   # budget.prompt_evals per cell (empty: the base's budget)
    data_dirs: [../shared/data/sst-2/16-13, ../shared/data/sst-2/16-21]   # optional: splits
    task_models: {smollm2: null, gemma: [task_model.name_or_path=embedded:gemma3-270m]}  # optional
    output_dir: experiments/results/bench-sst2

Every cell is an ``rlprompt run`` in
``<output_dir>/runs/<task>[/<model>]/<agent>/b<budget>[/<split>]/seed<seed>`` (the model and
split levels only when ``task_models`` / ``data_dirs`` are given); finished cells are skipped
and a killed cell resumes from its checkpoint, so a killed benchmark picks up where it stopped.
After each cell ``results.csv`` (one row per cell), ``results.md``, ``curves.png`` and
``profile.png`` are rewritten. The tables treat the data splits as tasks and the seeds as runs
(Agarwal et al., 2021, through ``rliable``): per agent and budget the mean, the interquartile mean
with its stratified-bootstrap 95% interval, the probability of improvement over the manual prompt
and over random search of the same budget with intervals, and a verdict in words
(:mod:`rlprompt.aggregate`). ``curves.png`` is the IQM of the best-so-far train reward against LM
calls with its interval band; ``profile.png`` the performance profile of the test metric. A
``random_search`` cell is added when no agent of the grid is random search.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlprompt.config import load_config
from rlprompt.errors import ConfigError, RLPromptError
from rlprompt.io import atomic_write_text
from rlprompt.registry import TASKS
from rlprompt.results import RunResult
from rlprompt.rundir import (
    BENCH_FILES,
    BEST_PROMPT,
    CHECKPOINT,
    METRICS,
    check_output_path,
    read_manifest,
    record_files,
    resolve_resume_config,
    unstarted_run,
)

RANDOM_LABEL = "random_search"


@dataclass
class BenchConfig:
    """A benchmark grid (see module docstring)."""

    base: str | None = ""
    """Run config every cell starts from (path relative to the bench file). Required: ``null``
    names the built-in defaults (the embedded demo task) explicitly."""
    set: list[str] = field(default_factory=list)
    """Overrides applied to every cell (``key=value``)."""
    agents: dict[str, list[str] | None] = field(default_factory=lambda: {"ppo": None})
    """Agent label -> overrides; null means ``agent.name=<label>``."""
    tasks: dict[str, list[str]] = field(default_factory=lambda: {"default": []})
    """Task label -> overrides (``{seed}`` in a value is replaced by the cell's seed)."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """Seeds: the global seed of each cell (and ``{seed}`` in task overrides)."""
    budgets: list[int] = field(default_factory=list)
    """Values of ``budget.prompt_evals``; empty keeps the base config's budget."""
    output_dir: str = "bench"
    """Directory of the cells and the result tables (relative to the working directory)."""
    add_random_search: bool = True
    """Add a ``random_search`` agent (equal budget) when the grid has none."""
    num_cpus: float = 1
    """CPUs per cell: its torch threads (on every backend, so results agree across backends)
    and what a Ray worker asks for."""
    num_gpus: float = 0
    """GPUs per cell a Ray worker asks for (fractions share a GPU)."""
    data_dirs: list[str] = field(default_factory=list)
    """Data directories every task runs on (``data.dir`` of each cell; relative to the working
    directory), e.g. RLPrompt's 16-shot splits 16-13, 16-21, 16-42, 16-87, 16-100. The tables
    treat them as tasks and the seeds as runs. Empty: each task's own ``data.dir``."""
    task_models: dict[str, list[str] | None] = field(default_factory=dict)
    """Task-model label -> overrides (null: none, the base's model), e.g.
    ``{gemma: [task_model.name_or_path=embedded:gemma3-270m]}``; one table per model. Empty: the
    base's model, and no model level in the cell paths."""
    bootstrap_reps: int = 2000
    """Bootstrap resamples of the tables' intervals (IQM, probability of improvement, curve bands)."""

    def __post_init__(self) -> None:
        if self.num_cpus < 1 or self.num_gpus < 0:
            raise ConfigError(f"bench num_cpus must be >= 1 and num_gpus >= 0, got {self.num_cpus} / {self.num_gpus}")
        if not self.agents or not self.tasks or not self.seeds:
            raise ConfigError("bench needs at least one agent, one task and one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"bench seeds must be distinct, got {self.seeds}")
        if any(b < 1 for b in self.budgets):
            raise ConfigError(f"bench budgets must be >= 1, got {self.budgets}")
        if len(set(self.budgets)) != len(self.budgets):
            raise ConfigError(f"bench budgets must be distinct, got {self.budgets}")
        for label in list(self.agents) + list(self.tasks) + list(self.task_models):
            if not label or "/" in label or label.startswith("."):
                raise ConfigError(f"bench label {label!r} must be a plain name (it names a directory)")
        if self.bootstrap_reps < 200:
            raise ConfigError(f"bench bootstrap_reps must be >= 200 for a 95% interval, got {self.bootstrap_reps}")
        if self.data_dirs:
            names = [split_label(d) for d in self.data_dirs]
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise ConfigError(
                    f"bench data_dirs must end in distinct folder names (they label the splits), "
                    f"got {repeated} more than once"
                )
            if any("{seed}" in o for overrides in self.tasks.values() for o in overrides if o.startswith("data.dir=")):
                raise ConfigError(
                    "bench data_dirs gives every cell its data.dir: drop 'data.dir=...{seed}' from tasks "
                    "(with data_dirs the splits and the seeds are separate axes)"
                )


def split_label(data_dir: str) -> str:
    """A data directory's label in cell paths and tables: its folder name."""
    name = Path(data_dir.rstrip("/")).name
    if not name or name.startswith("."):
        raise ConfigError(f"bench data_dirs entry {data_dir!r} names no folder")
    return name


@dataclass
class Cell:
    task: str
    agent: str
    budget: int | None
    seed: int
    overrides: list[str]
    split: str | None = None
    """The data split's label (``data_dirs``), None when the bench has none."""
    model: str | None = None
    """The task model's label (``task_models``), None when the bench has none."""

    @property
    def key(self) -> str:
        budget = "base" if self.budget is None else str(self.budget)
        model = f"{self.model}/" if self.model is not None else ""
        split = f"{self.split}/" if self.split is not None else ""
        return f"{self.task}/{model}{self.agent}/b{budget}/{split}seed{self.seed}"


def load_bench(path: str | os.PathLike[str], overrides: list[str] | None = None) -> tuple[BenchConfig, Path]:
    """The bench config and the directory its relative paths start from."""
    path = Path(path)
    return load_config(path, overrides, cls=BenchConfig), path.parent


def agents_of(bench: BenchConfig) -> dict[str, list[str]]:
    agents = {label: list(o) if o is not None else [f"agent.name={label}"] for label, o in bench.agents.items()}
    is_random = any(f"agent.name={RANDOM_LABEL}" in o for o in agents.values())
    if bench.add_random_search and not is_random:
        agents[RANDOM_LABEL] = [f"agent.name={RANDOM_LABEL}"]
    return agents


def cells_of(bench: BenchConfig) -> list[Cell]:
    """The grid's cells, model by model (a model loads once), then task, agent, budget, split, seed."""
    cells = []
    models: dict[str | None, list[str]] = {m: list(o or []) for m, o in bench.task_models.items()} or {None: []}
    splits: dict[str | None, list[str]] = {split_label(d): [f"data.dir={d}"] for d in bench.data_dirs} or {None: []}
    budgets: Sequence[int | None] = bench.budgets or [None]
    for model, model_overrides in models.items():
        for task, task_overrides in bench.tasks.items():
            for agent, agent_overrides in agents_of(bench).items():
                for budget in budgets:
                    for split, split_overrides in splits.items():
                        for seed in bench.seeds:
                            overrides = [
                                *bench.set,
                                *model_overrides,
                                *(o.replace("{seed}", str(seed)) for o in task_overrides),
                                *split_overrides,
                                *agent_overrides,
                                f"seed={seed}",
                            ]
                            if budget is not None:
                                overrides.append(f"budget.prompt_evals={budget}")
                            cells.append(Cell(task, agent, budget, seed, overrides, split, model))
    return cells


def run_bench(
    path: str | os.PathLike[str],
    overrides: list[str] | None = None,
    progress: bool | None = None,
    echo: Any = print,
    *,
    backend: str = "local",
    workers: int = 1,
    address: str | None = None,
    report_only: bool = False,
) -> list[dict[str, Any]]:
    """Run every unfinished cell, then (and after each cell) rewrite the result tables.

    The tables show the cells of this invocation's grid only: after runs of parts of a grid
    (``--set seeds=[21]``), ``report_only`` rewrites them for the whole grid and runs nothing.

    ``backend="local"`` runs cells here (``workers`` 1) or in ``workers`` local processes;
    ``"ray"`` runs them on Ray actors (a local Ray, or the cluster at ``address``). A cell that
    fails is reported and the others go on; the failures are one error at the end."""
    if backend not in ("local", "ray"):
        raise ConfigError(f"unknown bench backend '{backend}': local or ray")
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if address and backend != "ray":
        raise ConfigError("--address is for --backend ray")
    bench, root = load_bench(path, overrides)
    base = (root / bench.base) if bench.base else None
    out = Path(bench.output_dir)
    cells = cells_of(bench)
    command = " ".join(["rlprompt bench", str(path), *(f"--set {o}" for o in overrides or [])])
    configs = {cell.key: load_config(base, cell.overrides) for cell in cells}  # all cells validate up front
    if bench.base == "":
        raise ConfigError(
            f"bench file {path} names no base run config: add 'base: <run config>.yaml' (relative to "
            "the bench file), or 'base: null' for the built-in demo task"
        )
    kinds = {(c.task, tuple(c.family.metric_names(c))) for c in configs.values()}
    if len(kinds) > 1:
        raise ConfigError(
            f"bench cells must share one task family and metrics (one results table), got {sorted(kinds)}"
        )
    check_bench_dir(out)
    check_cells_unchanged(out, cells, configs)
    if not out.is_dir() or not any(out.iterdir()):  # a new bench directory: recorded as one
        out.mkdir(parents=True, exist_ok=True)
        record_files(out, "bench")
    if report_only:
        rows = write_results(out, cells, command, bench.bootstrap_reps)
        echo(f"{len(rows)} of {len(cells)} cells finished; tables rewritten in {out}, no cell run")
        return rows
    from rlprompt.config import config_to_dict
    from rlprompt.scaleout import CellJob, run_in_process, run_in_processes, run_on_ray

    jobs = []
    for i, cell in enumerate(cells, 1):
        cell_dir = out / "runs" / cell.key
        if (cell_dir / BEST_PROMPT).is_file():
            echo(f"[{i}/{len(cells)}] {cell.key}: finished before, skipped")
            continue
        resume = (cell_dir / CHECKPOINT).is_file()
        if not resume and unstarted_run(cell_dir):  # cleared by its worker, under the cell's lock
            echo(f"[{i}/{len(cells)}] {cell.key}: stopped before its first checkpoint, starting over")
        echo(f"[{i}/{len(cells)}] {cell.key}: {'resuming' if resume else 'queued'}")
        jobs.append(
            CellJob(
                cell.key,
                config_to_dict(configs[cell.key]),
                str(cell_dir.resolve()),
                resume,
                int(bench.num_cpus),
                progress=progress if backend == "local" and workers == 1 else False,
                command=command,
            )
        )
    if backend == "ray":
        outcomes = run_on_ray(
            jobs,
            workers=workers if workers > 1 else None,
            address=address,
            num_cpus=bench.num_cpus,
            num_gpus=bench.num_gpus,
        )
    elif workers > 1:
        outcomes = run_in_processes(jobs, workers)
    else:
        outcomes = run_in_process(jobs)
    failed = []
    for outcome in outcomes:
        if outcome.error is None and not (out / "runs" / outcome.key / BEST_PROMPT).is_file():
            outcome.error = (
                f"the worker {outcome.worker} finished it, but {out / 'runs' / outcome.key} has no "
                f"{BEST_PROMPT} here: workers need the driver's file system (a shared one on a cluster)"
            )
        if outcome.error is None:
            echo(
                f"{outcome.key} finished ({outcome.wall_s} s on {outcome.worker}"
                f"{', model loaded' if outcome.loaded_model else ', model reused'})"
            )
            echo(outcome.summary)
        else:
            failed.append(f"{outcome.key}: {outcome.error}")
            echo(f"{outcome.key} FAILED: {outcome.error}")
        write_results(out, cells, command, bench.bootstrap_reps)
    rows = write_results(out, cells, command, bench.bootstrap_reps)
    if failed:
        raise RLPromptError(
            f"{len(failed)} bench cell(s) failed (the others finished; rerun to retry them): " + "; ".join(failed[:3])
        )
    return rows


def check_bench_dir(out: Path) -> None:
    """A bench writes its tables into a new or empty ``output_dir``, or one a bench wrote (its
    manifest, or a ``runs/`` folder of cells); never into the working directory, a run directory,
    or a folder of other files (whose ``results.csv`` it would replace)."""
    check_output_path(out, "bench output_dir")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ConfigError(f"bench output_dir {out} is a file or a link; name a directory")
    if not out.is_dir():
        return
    manifest = read_manifest(out)
    if manifest is not None:
        if manifest["rlprompt"] == "bench":
            return
        raise ConfigError(
            f"bench output_dir {out} is a {manifest['rlprompt']} directory; name a directory for the bench"
        )
    if (out / "runs").is_dir():
        return  # a bench of an older rlprompt (no manifest yet)
    names = sorted(entry.name for entry in out.iterdir())
    if names:
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise ConfigError(
            f"bench output_dir {out} holds files no bench wrote ({shown}); a bench writes its cells and "
            f"tables ({', '.join(BENCH_FILES)}) only into a new or empty directory, or one of its own"
        )


def check_cells_unchanged(out: Path, cells: list[Cell], configs: dict[str, Any]) -> None:
    """Cells that finished or checkpointed under another config than the bench file now gives
    are an error (reusing them would report results of a config the table does not show)."""
    changed = []
    for cell in cells:
        cell_dir = out / "runs" / cell.key
        if (cell_dir / BEST_PROMPT).is_file() or (cell_dir / CHECKPOINT).is_file():
            try:
                resolve_resume_config(cell_dir, configs[cell.key])
            except ConfigError as exc:
                keys = str(exc).split(" differs from the run's config.json at ")[-1]
                changed.append(f"{cell.key} ({keys})")
    if changed:
        shown = "; ".join(changed[:3]) + (f"; and {len(changed) - 3} more" if len(changed) > 3 else "")
        raise ConfigError(
            f"{len(changed)} bench cell(s) in {out} were run with another config: {shown}. "
            "Restore the bench file, or give a new output_dir"
        )


# ---------------------------------------------------------------- tables and plot

CSV_FIELDS = [
    "task",
    "model",
    "split",
    "agent",
    "budget",
    "seed",
    "agent_name",
    "env",
    "kind",
    "prompt",
    "test_accuracy",
    "dev_accuracy",
    "train_accuracy",
    "test_macro_f1",
    "dev_reward",
    "manual_test_accuracy",
    "manual_dev_accuracy",
    "paired_accuracy_diff",
    "paired_accuracy_ci_low",
    "paired_accuracy_ci_high",
    "paired_accuracy_p",
    "lm_calls",
    "prompt_evals",
    "dev_lm_calls",
    "wall_time_s",
]
"""Columns of a classification bench's ``results.csv``."""


def csv_fields(metric_names: list[str]) -> list[str]:
    """Columns of ``results.csv``: :data:`CSV_FIELDS` for classification; for generation, per
    metric the test/dev/train values of the found prompt and the manual prompt's test/dev."""
    if metric_names[0] == "accuracy":
        return list(CSV_FIELDS)
    per_metric = [
        f"{where}_{m}" for m in metric_names for where in ("test", "dev", "train", "manual_test", "manual_dev")
    ]
    paired = [f"paired_{metric_names[0]}_{x}" for x in ("diff", "ci_low", "ci_high", "p")]
    return [
        *CSV_FIELDS[:10],
        *per_metric,
        "test_likelihood",
        "manual_test_likelihood",
        "dev_reward",
        *paired,
        "lm_calls",
        "prompt_evals",
        "dev_lm_calls",
        "wall_time_s",
    ]


def paired_vs_manual(cell_dir: Path, result: RunResult) -> dict[str, float]:
    """Per metric, the paired test of the cell's found prompt against its manual prompt on the
    test examples (:func:`rlprompt.stats.compare_paired`): ``paired_<metric>_diff``, ``_ci_low``,
    ``_ci_high``, ``_p``. Empty for a run without per-example outcomes."""
    from rlprompt.outcomes import run_record
    from rlprompt.stats import compare_paired

    if result.outcomes is None or not (cell_dir / result.outcomes).is_file():
        return {}
    path = cell_dir / result.outcomes
    (_, found), (_, manual) = run_record(path, "found", "test"), run_record(path, "manual", "test")
    if found["keys"] != manual["keys"]:
        return {}
    out = {}
    for metric in result.metric_names:
        if metric in found["scores"] and metric in manual["scores"]:
            c = compare_paired(found["scores"][metric], manual["scores"][metric], metric)
            out.update(
                {
                    f"paired_{metric}_diff": c.diff,
                    f"paired_{metric}_ci_low": c.ci_low,
                    f"paired_{metric}_ci_high": c.ci_high,
                    f"paired_{metric}_p": c.p_value,
                }
            )
    return out


def _rows(out: Path, cells: list[Cell]) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per finished cell, and the metric names (the main one first)."""
    rows = []
    names: list[str] = ["accuracy", "macro_f1", "gold_log_prob"]
    for cell in cells:
        path = out / "runs" / cell.key / BEST_PROMPT
        if not path.is_file():
            continue
        best = RunResult.load(path)
        names = best.metric_names
        m, base = best.metrics, best.baseline["metrics"]
        row = {
            "task": cell.task,
            "model": cell.model,
            "split": cell.split,
            "agent": cell.agent,
            "budget": "base" if cell.budget is None else cell.budget,
            "seed": cell.seed,
            "agent_name": best.agent,
            "env": best.env,
            "kind": best.kind,
            "prompt": best.named_prompt if best.kind == "discrete" else "<soft>",
            "dev_reward": m["dev"]["reward"],
            "lm_calls": best.lm_calls,
            "prompt_evals": best.prompt_evals,
            "dev_lm_calls": best.dev_lm_calls,
            "wall_time_s": best.wall_time_s,
        }
        row.update(TASKS[best.task].result_row(m, base, names))
        row.update(paired_vs_manual(path.parent, best))
        rows.append(row)
    return rows, names


def write_results(out: Path, cells: list[Cell], command: str = "", reps: int = 2000) -> list[dict[str, Any]]:
    """``results.csv``, ``results.md``, ``curves.png`` and ``profile.png`` from the finished cells
    (``reps``: bootstrap resamples of the intervals)."""
    rows, names = _rows(out, cells)
    out.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=csv_fields(names), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "results.csv", buffer.getvalue())
    header = f"Command: `{command}`\n\n" if command else ""
    from rlprompt.reporting import bench_table, plot_curves_iqm, plot_performance_profiles, score_matrix, sections

    shown = [names[0]] if names[0] == "accuracy" else names
    tables = "\n".join(bench_table(rows, metric, heading=len(shown) > 1, reps=reps) for metric in shown)
    atomic_write_text(out / "results.md", header + tables)
    if rows:
        several_budgets = len({c.budget for c in cells}) > 1
        finished = [c for c in cells if (out / "runs" / c.key / BEST_PROMPT).is_file()]
        curves: dict[str, dict[str, dict[str | None, list[Path]]]] = {}
        for c in finished:
            panel_name = f"{c.task} on {c.model}" if c.model is not None else c.task
            label = f"{c.agent} @ {c.budget}" if several_budgets else c.agent
            curves.setdefault(panel_name, {}).setdefault(label, {}).setdefault(c.split, []).append(
                out / "runs" / c.key / METRICS
            )
        plot_curves_iqm(
            {p: {lab: list(by_split.values()) for lab, by_split in g.items()} for p, g in curves.items()},
            out / "curves.png",
            reps=reps,
        )
        profiles: dict[str, dict[str, Any]] = {}
        for (task, model), task_rows in sections(rows).items():
            splits = list(dict.fromkeys(r.get("split") for r in task_rows))
            panel = profiles.setdefault(f"{task} on {model}" if model is not None else str(task), {})
            manual, _ = score_matrix(task_rows, f"manual_test_{names[0]}", splits)
            if manual.size:
                panel["manual prompt"] = manual
            for r in task_rows:
                label = f"{r['agent']} @ {r['budget']}" if several_budgets else r["agent"]
                if label not in panel:
                    matrix, _ = score_matrix(
                        [x for x in task_rows if (x["agent"], x["budget"]) == (r["agent"], r["budget"])],
                        f"test_{names[0]}",
                        splits,
                    )
                    if matrix.size:
                        panel[label] = matrix
        plot_performance_profiles(profiles, out / "profile.png", names[0], reps=reps)
    return rows
