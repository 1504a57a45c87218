"""Random k-shot demonstrations, the baseline any user tries first, against the zero-shot prompt.

With a demonstration config (``{demos}`` in the template, e.g. ``sst2-smollm2-demos.yaml``) the
model loads once; each draw is a class-balanced block of ``k`` train demonstrations in random
order (seeded: draw ``i`` uses seed ``i``), scored on a split with per-example outcomes, and
compared with the config's zero-shot prompt on the same examples (paired bootstrap interval and
permutation test, as ``rlprompt compare`` computes them). Writes a markdown table, a JSON copy
and one outcome file per prompt (``rlprompt compare`` reads them).

    python experiments/analyses/random_demos.py --config experiments/configs/sst2-smollm2-demos.yaml --draws 3 \\
        --out experiments/results/random-demos-sst2-smollm2
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def draw_block(pool, k: int, balanced: bool, seed: int) -> list[int]:
    """``k`` distinct pool ids in random order (with ``balanced``, ``k / classes`` of each class)."""
    rng = np.random.default_rng(seed)
    if not balanced or pool.num_classes == 0:
        return rng.choice(len(pool), size=k, replace=False).tolist()
    labels = np.asarray(pool.labels)
    per_class = k // pool.num_classes
    ids = np.concatenate(
        [rng.choice(np.flatnonzero(labels == c), size=per_class, replace=False) for c in range(pool.num_classes)]
    )
    return rng.permutation(ids).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a demonstration config ('{demos}' in its template)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--k", type=int, default=None, help="demonstrations per block (default: the config's env.k)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--run",
        dest="runs",
        action="append",
        default=[],
        metavar="RUN_DIR",
        help="also score this run's found block (re-scored here, with this rlprompt)",
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from rlprompt.compare import compare_outcomes
    from rlprompt.config import load_config
    from rlprompt.outcomes import write_outcome_file
    from rlprompt.task import Task

    config = load_config(args.config, args.overrides)
    task = Task.from_config(config)
    pool = task.demo_pool()
    k = args.k or config.env.k
    balanced = bool(getattr(config.env, "balanced", False)) and k % max(pool.num_classes, 1) == 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    metric = task.primary_metric

    def score(prompt: str, name: str) -> dict:
        start = time.perf_counter()
        metrics = task.evaluate(prompt, args.split, per_example=True)
        record = metrics.pop("per_example")
        write_outcome_file(
            out / f"{name}.outcomes.json",
            task=config.task,
            metric_names=list(task.metric_names),
            prompt=prompt,
            split=args.split,
            record=record,
            source=f"config {args.config}",
        )
        print(f"{name}: {metric} {metrics[metric]:.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
        return {"metrics": metrics, "record": record}

    zero = score(config.manual_prompt, "zero-shot")
    rows = [{"draw": "zero-shot", "ids": [], metric: zero["metrics"][metric], "n": zero["metrics"]["n"]}]
    for draw in range(args.draws):
        ids = draw_block(pool, k, balanced, draw)
        scored = score(pool.render(ids), f"draw{draw}")
        paired, _, _ = compare_outcomes(
            out / f"draw{draw}.outcomes.json", out / "zero-shot.outcomes.json", args.split, metric
        )
        rows.append(
            {
                "draw": f"seed {draw}",
                "ids": ids,
                metric: scored["metrics"][metric],
                "n": scored["metrics"]["n"],
                "labels": [pool.labels[i] for i in ids],
                **{f"vs_zero_shot_{k_}": v for k_, v in paired.as_dict().items()},
            }
        )
    for i, run in enumerate(args.runs):
        from rlprompt.results import RunResult

        found = RunResult.load(Path(run) / "best_prompt.json")
        scored = score(found.prompt, f"run{i}")
        paired, _, _ = compare_outcomes(
            out / f"run{i}.outcomes.json", out / "zero-shot.outcomes.json", args.split, metric
        )
        rows.append(
            {
                "draw": f"{found.agent} ({run})",
                "ids": pool.parse(found.prompt),
                metric: scored["metrics"][metric],
                "n": scored["metrics"]["n"],
                **{f"vs_zero_shot_{k_}": v for k_, v in paired.as_dict().items()},
            }
        )
    lines = [
        f"Command: `python experiments/analyses/random_demos.py --config {args.config} --draws {args.draws}"
        + (f" --k {args.k}" if args.k else "")
        + "".join(f" --set {o}" for o in args.overrides)
        + "".join(f" --run {r}" for r in args.runs)
        + f" --out {args.out}`",
        "",
        f"Task model `{config.task_model.label}`, data `{config.data.dir}`, {args.split} split; {k} demonstrations a "
        f"block{' (class-balanced)' if balanced else ''} from the {config.demos.pool} pool; the instruction "
        f"{config.prompt!r}. Paired: the block minus zero-shot on the same examples, 95% bootstrap interval, "
        "permutation p.",
        "",
        f"| prompt | pool ids (in order) | {args.split} {metric} | n | difference from zero-shot [95% CI] | p |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        diff = (
            "-"
            if r["draw"] == "zero-shot"
            else f"{r['vs_zero_shot_diff']:+.4f} [{r['vs_zero_shot_ci_low']:+.4f}, {r['vs_zero_shot_ci_high']:+.4f}]"
        )
        p = "-" if r["draw"] == "zero-shot" else f"{r['vs_zero_shot_p_value']:.4f}"
        lines.append(f"| {r['draw']} | {r['ids'] or '-'} | {r[metric]:.4f} | {r['n']} | {diff} | {p} |")
    table = "\n".join(lines) + "\n"
    (out / "table.md").write_text(table)
    (out / "results.json").write_text(json.dumps(rows, indent=2, sort_keys=True) + "\n")
    print(table)


if __name__ == "__main__":
    main()
