"""Hand-written instructions of a generation task, each scored on whole splits with one task model.

The model loads once; every instruction is evaluated (greedy generations, the config's metrics,
the reference likelihood) on the test split and the dev split of the config's data folder.
Prints a markdown table sorted by the main metric on test and writes it with a JSON copy.

    python experiments/analyses/manual_instructions.py experiments/configs/squad-smollm2.yaml \\
        --instructions experiments/configs/candidates/squad-instructions.txt --first 6 \\
        --out experiments/results/manual-instructions-squad-smollm2
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--instructions", required=True, help="one instruction per line")
    parser.add_argument("--first", type=int, default=None, help="only the first N instructions of the file")
    parser.add_argument("--splits", nargs="+", default=["test", "dev"])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", required=True, help="directory for table.md and results.json")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from rlprompt.config import load_config
    from rlprompt.errors import RLPromptError
    from rlprompt.task import Task

    config = load_config(args.config, args.overrides)
    if config.task != "generation":
        raise RLPromptError(f"{args.config} is a {config.task} task; this table is for generation tasks")
    instructions = [line.strip() for line in Path(args.instructions).read_text().splitlines() if line.strip()]
    instructions = instructions[: args.first] if args.first else instructions
    if config.prompt not in instructions:
        instructions.insert(0, config.prompt)
    task = Task.from_config(config)
    metrics = task.metric_names
    main_metric, started = metrics[0], time.perf_counter()
    rows = []
    for i, instruction in enumerate(instructions, 1):
        t0 = time.perf_counter()
        row = {"instruction": instruction, "manual": instruction == config.prompt}
        for split in args.splits:
            result = task.evaluate(instruction, split)
            row[split] = {k: result[k] for k in [*metrics, "likelihood", "n"]}
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        shown = "  ".join(f"{s} {main_metric} {row[s][main_metric]:.4f}" for s in args.splits)
        print(f"{i:>3}/{len(instructions)}  {shown}  {instruction!r}  ({row['seconds']} s)", flush=True)
    rows.sort(key=lambda r: -r[args.splits[0]][main_metric])
    header = ["instruction", *[f"{s} {m}" for s in args.splits for m in metrics], f"{args.splits[0]} likelihood"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for r in rows:
        cells = [repr(r["instruction"]) + (" (config)" if r["manual"] else "")]
        cells += [f"{r[s][m]:.4f}" for s in args.splits for m in metrics] + [f"{r[args.splits[0]]['likelihood']:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    n = {s: rows[0][s]["n"] for s in args.splits}
    command = "python experiments/analyses/manual_instructions.py " + " ".join(
        [args.config, "--instructions", args.instructions]
        + (["--first", str(args.first)] if args.first else [])
        + [f"--set {o}" for o in args.overrides]
        + ["--out", args.out]
    )
    table = "\n".join(
        [
            f"Command: `{command}`",
            "",
            f"{config.task_model.label} on {config.data.dir} ({', '.join(f'{s} n={k}' for s, k in n.items())}), "
            f"greedy generations, {torch.get_num_threads()} torch threads, "
            f"{time.perf_counter() - started:.0f} s in all.",
            "",
            *lines,
            "",
        ]
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table)
    (out / "results.json").write_text(
        json.dumps(
            {
                "config": args.config,
                "overrides": args.overrides,
                "task_model": config.task_model.label,
                "data": config.data.dir,
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(table)


if __name__ == "__main__":
    main()
