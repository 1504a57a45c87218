"""Wall time of a bench grid on 1 and on 2 workers of this machine, and identical results.

Runs the SST-2 grid of ``experiments/configs/bench-sst2.yaml`` (MiniLM; sql, ppo-edit and random
search over seeds 13/21/42) at a reduced budget three times into fresh directories:
``--backend local`` (one cell after another, in this process), ``--backend local --workers 2``
(two worker processes) and ``--backend ray --workers 2`` (a local Ray, two actors), every cell
on one CPU (``num_cpus: 1``: one torch thread). Prints each wall time, the speed-ups over one
worker, and whether the three ``results.csv`` agree (time columns aside).

    python experiments/benchmarks/bench_scaleout.py --budget 300 --json-out experiments/results/scaleout_sst2_cpu.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "experiments" / "configs" / "bench-sst2.yaml"


def run(label: str, out: Path, budget: int, extra: list[str], seeds: list[int] | None = None) -> tuple[float, str]:
    command = [
        sys.executable,
        "-m",
        "rlprompt.cli",
        "bench",
        str(BENCH),
        "--no-progress",
        "--set",
        f"output_dir={out}",
        "--set",
        f"budgets=[{budget}]",
        "--set",
        "num_cpus=1",
        *(["--set", f"seeds=[{', '.join(map(str, seeds))}]"] if seeds else []),
        *extra,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{label} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    print(f"{label:<28} {wall:7.1f} s", flush=True)
    return wall, done.stdout


def table(out: Path) -> list[dict[str, str]]:
    with (out / "results.csv").open(newline="") as handle:
        return [{k: v for k, v in row.items() if k != "wall_time_s"} for row in csv.DictReader(handle)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=300, help="prompt evaluations per cell")
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="part of the grid (default: its 3 seeds)")
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rlprompt-scaleout-") as tmp:
        base = Path(tmp)
        runs = {
            "local, 1 worker": (base / "one", []),
            "local, 2 worker processes": (base / "two", ["--workers", "2"]),
        }
        if not args.no_ray:
            runs["ray, 2 workers"] = (base / "ray", ["--backend", "ray", "--workers", "2"])
        walls, logs = {}, {}
        print(
            f"SST-2 grid of {BENCH.name} (sql, ppo-edit, random search x seeds "
            f"{'/'.join(map(str, args.seeds or [13, 21, 42]))} = {3 * len(args.seeds or [13, 21, 42])} cells), "
            f"{args.budget} prompt evaluations per cell, one CPU per cell, {os.cpu_count()} cores",
            flush=True,
        )
        for label, (out, extra) in runs.items():
            walls[label], logs[label] = run(label, out, args.budget, extra, args.seeds)
        tables = {label: table(out) for label, (out, _) in runs.items()}
        reference = tables["local, 1 worker"]
        identical = {label: t == reference for label, t in tables.items()}
        loads = {label: log.count("model loaded") for label, log in logs.items()}
    one = walls["local, 1 worker"]
    speedups = {label: one / wall for label, wall in walls.items()}
    for label in walls:
        print(
            f"speed-up of {label:<28} over 1 worker: {speedups[label]:.2f}   results.csv identical: "
            f"{identical[label]}   model loads: {loads[label]}"
        )
    if args.json_out:
        Path(args.json_out).write_text(
            json.dumps(
                {
                    "bench": str(BENCH.relative_to(ROOT)),
                    "cells": len(reference),
                    "budget": args.budget,
                    "cpu_cores": os.cpu_count(),
                    "wall_s": walls,
                    "speedup_over_one_worker": speedups,
                    "results_identical": identical,
                    "model_loads": loads,
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
