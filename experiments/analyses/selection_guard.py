"""What ``selection.guard_splits=[dev]`` changes on finished classification runs.

Training draws its minibatches from the train split only, so the train + dev score that selects
the reported prompt is partly the very data the search fitted. The guard reports a found prompt
only if it also scores at least the manual prompt's selection key (reward, then accuracy) on dev.
For each run directory given, this reads the recorded choice: a run that kept the manual prompt,
or whose prompt does not lose to it on dev, reports the same prompt under the guard (the guard
only removes candidates). The others are selected again with the guard from their checkpoints,
on a temporary copy (``rlprompt select``'s code; the committed run is not touched), and their
new prompt is evaluated on test.

    python experiments/analyses/selection_guard.py --out experiments/results/selection_guard_sst2_smollm2 \\
        experiments/results/bench-sst2-smollm2*/runs/sst2/*/*/* \\
        experiments/results/sst2-smollm2-{unseen,calibrated-unseen,sql-calibrated-unseen,random4000-calibrated-unseen}-16-*/run

Writes ``selection_guard.json`` (one row per run) and ``selection_guard.md`` (the table and the
wins / ties / losses against the manual prompt on test, before and after) under ``--out``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from rlprompt.experiment import reselect_run
from rlprompt.io import atomic_write_json, atomic_write_text
from rlprompt.results import RunResult

GUARD = ["selection.guard_splits=[dev]"]


def dev_key(metrics: dict[str, Any]) -> tuple[float, float]:
    """A classification task's selection key, as ``Task.selection_key`` computes it (the reward,
    then accuracy), read from recorded metrics without building a task (which loads the model)."""
    return (float(metrics["reward"]), float(metrics["accuracy"]))


def outcome(delta: float) -> str:
    return "win" if delta > 0 else "loss" if delta < 0 else "tie"


def guard_run(run_dir: Path) -> dict[str, Any] | None:
    """The run's recorded choice and its choice under the guard, with test accuracies (None: the
    guard does not apply to the run)."""
    result = RunResult.load(run_dir / "best_prompt.json")
    if result.kind != "discrete" or result.metric_names[0] != "accuracy" or "dev" not in result.selected_on:
        return None  # a soft prompt (no manual prompt competes), a generation task, or no dev in the selection
    manual_test = result.baseline["metrics"]["test"]["accuracy"]
    row = {
        "run": str(run_dir),
        "agent": result.agent,
        "env": result.env,
        "seed": result.seed,
        "budget": result.budget.get("prompt_evals"),
        "manual_test": manual_test,
        "prompt": result.prompt,
        "test": result.metrics["test"]["accuracy"],
        "manual_kept": result.manual_kept,
        "dev_gain": result.metrics["dev"]["reward"] - result.baseline["metrics"]["dev"]["reward"],
    }
    passes = result.manual_kept or dev_key(result.metrics["dev"]) >= dev_key(result.baseline["metrics"]["dev"])
    if passes:
        return {
            **row,
            "guarded_prompt": result.prompt,
            "guarded_test": row["test"],
            "guard_dropped": 0,
            "reselected": False,
        }
    if not (run_dir / "checkpoint.safetensors").is_file():  # committed results hold no checkpoint
        return {**row, "guarded_prompt": None, "guarded_test": None, "guard_dropped": None, "reselected": False}
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "run"
        shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("tensorboard"))
        started = time.perf_counter()
        _, guarded = reselect_run(copy, GUARD)
    return {
        **row,
        "guarded_prompt": guarded.prompt,
        "guarded_test": guarded.metrics["test"]["accuracy"],
        "guard_dropped": guarded.guard_dropped,
        "reselected": True,
        "reselect_s": round(time.perf_counter() - started, 1),
    }


def tally(rows: list[dict[str, Any]], column: str) -> str:
    rows = [row for row in rows if row["guarded_test"] is not None]
    counts = {"win": 0, "tie": 0, "loss": 0}
    for row in rows:
        counts[outcome(round(row[column] - row["manual_test"], 6))] += 1
    mean = sum(row[column] - row["manual_test"] for row in rows) / len(rows)
    return f"{counts['win']} wins, {counts['tie']} ties, {counts['loss']} losses, mean {mean:+.4f}"


def markdown(rows: list[dict[str, Any]], command: str) -> str:
    lines = [
        "# Selection with and without the dev guard (`selection.guard_splits=[dev]`)",
        "",
        f"`{command}`",
        "",
        "Test accuracy of the reported prompt against the manual prompt's. 'dev gain': the recorded prompt's dev "
        "reward minus the manual prompt's (negative: the guard drops it).",
        "",
        "| run | prompt (recorded) | test | dev gain | prompt (guard) | test (guard) | dropped |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        name = row["run"].split("results/")[-1]
        kept = " (kept)" if row["manual_kept"] else ""
        if row["guarded_test"] is None:
            lines.append(
                f"| {name} | {row['prompt']!r} | {row['test']:.4f} | {row['dev_gain']:+.3f} | "
                "no checkpoint: not selected again | - | - |"
            )
            continue
        lines.append(
            f"| {name} | {row['prompt']!r}{kept} | {row['test']:.4f} | {row['dev_gain']:+.3f} | "
            f"{row['guarded_prompt']!r} | {row['guarded_test']:.4f} | {row['guard_dropped']} |"
        )
    missing = sum(row["guarded_test"] is None for row in rows)
    lines += [
        "",
        f"Runs the guard would change but that have no checkpoint to select from: {missing} (left out of the counts).",
        f"Recorded selection: {tally(rows, 'test')} against the manual prompt on test.",
        f"With the guard: {tally(rows, 'guarded_test')}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished run directories (best_prompt.json, checkpoint)")
    parser.add_argument("--out", type=Path, required=True, help="directory for selection_guard.json / .md")
    args = parser.parse_args(argv)
    rows = []
    for run_dir in sorted(args.runs):
        row = guard_run(run_dir)
        if row is None:
            print(f"{run_dir}: skipped (a soft prompt, a generation task or a selection without dev)", flush=True)
            continue
        change = (
            f"-> {row['guarded_prompt']!r} {row['guarded_test']:.4f}"
            if row["reselected"]
            else "fails the guard, no checkpoint"
            if row["guarded_test"] is None
            else "passes"
        )
        print(f"{run_dir}: {row['prompt']!r} {row['test']:.4f} {change}", flush=True)
        rows.append(row)
    command = f"python experiments/analyses/selection_guard.py --out {args.out} <{len(args.runs)} run directories; the rows below>"
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "selection_guard.json", {"command": command, "runs": rows})
    atomic_write_text(args.out / "selection_guard.md", markdown(rows, command))
    print(markdown(rows, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
