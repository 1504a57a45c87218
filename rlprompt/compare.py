"""``rlprompt compare A B``: is the difference between two prompts on the same test examples real?

A and B are each a run directory (its found prompt), ``RUN:manual`` (that run's manual prompt)
or an outcome file written by ``rlprompt eval --save-outcomes``. The per-example scores of the
main metric (or ``--metric``) on the shared examples are paired and compared with
:func:`rlprompt.stats.compare_paired`: a paired bootstrap interval of the mean difference and a
paired permutation test's p-value.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rlprompt.errors import RLPromptError
from rlprompt.outcomes import outcome_file_record, paired_scores, run_record
from rlprompt.rundir import BEST_PROMPT, load_run
from rlprompt.stats import RESAMPLES, PairedComparison, compare_paired

SIDES = ("found", "manual")


def _split_spec(spec: str) -> tuple[Path, str | None]:
    """``RUN:manual`` / ``RUN:found`` -> (path, side); anything else -> (path, None)."""
    head, sep, tail = spec.rpartition(":")
    if sep and tail in SIDES and head:
        return Path(head), tail
    return Path(spec), None


def load_side(spec: str, split: str) -> dict[str, Any]:
    """What ``spec`` names: its label, prompt, task family, metric names and outcome record on ``split``."""
    path, side = _split_spec(spec)
    if path.is_dir():
        _, result = load_run(path)
        if result.outcomes is None or not (path / result.outcomes).is_file():
            raise RLPromptError(
                f"{path} holds no per-example outcomes (a run from before rlprompt kept them, or its outcomes file "
                f"was removed); write them into the run with: rlprompt outcomes {path}"
            )
        which = side or "found"
        meta, record = run_record(path / result.outcomes, which, split)
        prompt = result.named_prompt if which == "found" else result.baseline.get("prompt")
        return {
            "label": f"{path}:{which}" if side else str(path),
            "prompt": prompt,
            "task": result.task,
            "metric_names": list(result.metric_names),
            "record": record,
        }
    if side is not None:
        raise RLPromptError(f"{spec}: ':{side}' follows a run directory, and {path} is not one")
    if not path.exists():
        raise RLPromptError(f"{spec} is neither a run directory nor an outcome file (not found)")
    if path.is_file() and path.name == BEST_PROMPT:
        raise RLPromptError(f"{spec} is a run's {BEST_PROMPT}; name its run directory ({path.parent})")
    meta, record = outcome_file_record(path, split)
    return {
        "label": str(path),
        "prompt": meta.get("prompt"),
        "task": meta.get("task"),
        "metric_names": list(meta.get("metric_names") or []),
        "record": record,
    }


def compare_outcomes(
    a: str | os.PathLike[str],
    b: str | os.PathLike[str],
    split: str = "test",
    metric: str | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[PairedComparison, dict[str, Any], dict[str, Any]]:
    """The paired comparison of A and B on ``split`` (and what each side is)."""
    if seed < 0:
        raise RLPromptError(f"--seed must be >= 0, got {seed}")
    if resamples < 1000:
        raise RLPromptError(f"--resamples must be at least 1000 for a 95% interval, got {resamples}")
    side_a, side_b = load_side(str(a), split), load_side(str(b), split)
    if side_a["task"] != side_b["task"]:
        raise RLPromptError(
            f"{side_a['label']} is a {side_a['task']} task and {side_b['label']} a "
            f"{side_b['task']} task: they cannot be compared"
        )
    metric = metric or (side_a["metric_names"] or ["accuracy"])[0]
    scores_a, scores_b = paired_scores(side_a["record"], side_b["record"], metric, (side_a["label"], side_b["label"]))
    return compare_paired(scores_a, scores_b, metric, resamples, seed), side_a, side_b


def format_comparison(result: PairedComparison, a: dict[str, Any], b: dict[str, Any], split: str) -> str:
    def shown(side: dict[str, Any]) -> str:
        prompt = side["prompt"]
        return f"{side['label']} ({prompt!r})" if isinstance(prompt, str) else side["label"]

    width = max(len(shown(a)), len(shown(b)))
    return "\n".join(
        [
            f"metric     : {result.metric} on {split} ({result.n} paired examples)",
            f"A          : {shown(a):<{width}}  {result.a:.4f}",
            f"B          : {shown(b):<{width}}  {result.b:.4f}",
            f"difference : A - B = {result.diff:+.4f}, {result.confidence:.0%} interval [{result.ci_low:+.4f}, "
            f"{result.ci_high:+.4f}] (paired bootstrap, {result.resamples:,} resamples)",
            f"p-value    : {result.p_value:.4g} (paired permutation test, {result.resamples:,} sign flips)",
            f"verdict    : {result.verdict()}",
        ]
    )
