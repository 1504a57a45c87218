"""Every agent on SST-2 16-shot with the MiniLM task model, at equal budgets of prompt evaluations.

For each agent: train for ``--budget`` prompt evaluations (16 train examples each) on its
main env kind, select the best prompt on dev (the greedy prompt and the top 10 seen), and
report its test accuracy; the same is read at ``--early`` evaluations off the same run.
Writes ``results.csv``, ``results.md`` (table) and ``curves.png`` (best train reward vs prompt
evaluations) under ``--out``; finished agents are skipped on a rerun (one JSON per agent).

    python experiments/bench_agents.py [--data-dir ../shared/data/sst-2/16-13] [--agents ppo sql ...]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import time
from pathlib import Path

import torch

from rlprompt.agents import AGENT_REGISTRY, Callback, Logger
from rlprompt.config import Config, DataConfig
from rlprompt.envs import PromptEditEnv, PromptSelectionEnv, SoftPromptEnv, TokenPromptEnv
from rlprompt.io import atomic_write_json, atomic_write_text
from rlprompt.task import Task

ROOT = Path(__file__).resolve().parents[1]


def make_env(kind: str, task: Task, examples: int):
    if kind == "token":
        return TokenPromptEnv(task=task, prompt_length=5, vocab_top_k=1000, batch_size=examples)
    if kind == "soft":
        return SoftPromptEnv(task=task, n_tokens=5, subspace_dim=50, bound=1.0, batch_size=examples)
    if kind == "edit":
        return PromptEditEnv(task=task, pool_size=50, max_units=8, max_edits=5, batch_size=examples)
    return PromptSelectionEnv(task=task, candidates="sentiment", batch_size=examples)


class EarlyReading(Callback):
    """Dev-select and test the best prompt once the budget passes ``at`` evaluations."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.result: dict | None = None

    def on_step(self, agent) -> bool:
        if self.result is None and agent._spent()["prompt_evals"] >= self.at:
            with agent.evaluating():  # dev selection and test scoring are not training cost
                best = agent.best_prompt()
                accuracy = agent.task.evaluate(best.prompt, "test")["accuracy"]
            self.result = {"prompt_evals": agent._spent()["prompt_evals"], "test_accuracy": accuracy}
        return True


def run_agent(spec: str, task: Task, args: argparse.Namespace, out: Path) -> dict:
    """Run ``name`` on its main env kind, or ``name:kind`` on another it supports."""
    name, _, kind = spec.partition(":")
    config_class, agent_class = AGENT_REGISTRY[name]
    kind = kind or agent_class.env_kinds[0]
    env = make_env(kind, task, args.examples)
    logger = Logger(out / "runs" / spec.replace(":", "-"), tensorboard=False)
    agent = agent_class(env, config_class(seed=args.seed), logger)
    early = EarlyReading(args.early)
    start = time.perf_counter()
    agent.learn(total_prompt_evals=args.budget, callbacks=[early])
    train_s = time.perf_counter() - start
    best = agent.best_prompt()
    test = task.evaluate(best.prompt, "test")
    return {
        "agent": name,
        "env": kind,
        "spec": spec,
        "prompt": best.text if best.text is not None else "<soft prompt>",
        "train_reward": best.train_reward,
        "dev_accuracy": best.dev["accuracy"],
        "test_accuracy": test["accuracy"],
        "test_accuracy_early": early.result["test_accuracy"] if early.result else None,
        "early_prompt_evals": early.result["prompt_evals"] if early.result else None,
        "prompt_evals": agent.prompt_evals,
        "lm_calls": agent.lm_calls,
        "dev_lm_calls": best.dev_lm_calls,
        "train_seconds": round(train_s, 1),
        "curve": [(row["prompt_evals"], row["best_train_reward"]) for row in logger.rows],
    }


def write_outputs(out: Path, rows: list[dict], manual: dict, command: str) -> None:
    fields = ["agent", "env", "test_accuracy", "test_accuracy_early", "dev_accuracy", "train_reward", "prompt_evals",
              "lm_calls", "dev_lm_calls", "train_seconds", "prompt"]  # fmt: skip
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "results.csv", buffer.getvalue())
    lines = [
        f"Command: `{command}`",
        "",
        "| agent | env | test acc @ budget | test acc @ early | dev acc | prompt evals | LM calls | train s | prompt |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| manual prompt | - | {manual['accuracy']:.4f} | - | {manual['dev_accuracy']:.4f} | 0 | - | - | {manual['prompt']!r} |",
    ]
    for r in sorted(rows, key=lambda r: -r["test_accuracy"]):
        early = f"{r['test_accuracy_early']:.4f}" if r["test_accuracy_early"] is not None else "-"
        lines.append(
            f"| {r['agent']} | {r['env']} | {r['test_accuracy']:.4f} | {early} | {r['dev_accuracy']:.4f} | "
            f"{r['prompt_evals']} | {r['lm_calls']} | {r['train_seconds']} | {r['prompt']!r} |"
        )
    atomic_write_text(out / "results.md", "\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    for r in rows:
        if r["curve"]:
            xs, ys = zip(*r["curve"], strict=True)
            ax.plot(xs, ys, label=f"{r['agent']} ({r['env']})")
    ax.set_xlabel("prompt evaluations (16 train examples each)")
    ax.set_ylabel("best mean train reward (gold log-prob)")
    ax.set_title("SST-2 16-shot, MiniLM task model")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "sst-2" / "16-13"))
    parser.add_argument(
        "--agents", nargs="+", default=sorted(AGENT_REGISTRY), help="names, or name:kind (e.g. ppo:edit)"
    )
    parser.add_argument("--budget", type=int, default=2000)
    parser.add_argument("--early", type=int, default=500)
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "experiments" / "results" / "bench_agents_sst2"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    task = Task.from_config(Config(data=DataConfig(dir=args.data_dir)))
    manual = task.evaluate(task.config.prompt, "test")
    manual = {
        "prompt": task.config.prompt,
        "accuracy": manual["accuracy"],
        "dev_accuracy": task.evaluate(task.config.prompt, "dev")["accuracy"],
    }
    rows = []
    for name in args.agents:
        path = out / "runs" / f"{name.replace(':', '-')}.json"
        if path.is_file():
            rows.append(json.loads(path.read_text()))
            print(f"{name}: done before, skipped")
            continue
        row = run_agent(name, task, args, out)
        atomic_write_json(path, row)
        rows.append(row)
        print(f"{name:>14} ({row['env']}): test {row['test_accuracy']:.4f} (early {row['test_accuracy_early']}) "
              f"dev {row['dev_accuracy']:.4f} prompt {row['prompt']!r} in {row['train_seconds']} s", flush=True)  # fmt: skip
    command = "python experiments/bench_agents.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in
                                                                 [("budget", args.budget), ("early", args.early), ("examples", args.examples), ("seed", args.seed)])  # fmt: skip
    write_outputs(out, rows, manual, command)
    print(f"manual prompt {manual['prompt']!r}: test {manual['accuracy']:.4f}")


if __name__ == "__main__":
    main()
