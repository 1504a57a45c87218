"""Per-example outcomes: what a prompt scored on each example of a split, kept so that two
prompts can be compared example by example (``rlprompt compare``, :mod:`rlprompt.stats`).

A split's record (:func:`split_record`) holds, in example order:

* ``keys`` - a short hash of each example (its text and label, or its input fields and
  references): two records are paired only when their keys agree one for one;
* ``scores`` - per-example values of the task's metrics whose mean is the split's metric
  (classification: ``accuracy`` as 1/0 and ``gold_log_prob``; generation: each configured
  metric on that example alone - for a corpus metric such as BLEU the per-example mean differs
  from the corpus value, and comparisons then use the per-example mean);
* ``predictions`` - the predicted class (``-1``: a tie, no answer) or the generated text;
* ``log_probs`` (classification) - the class log-probabilities the prediction was made from
  (calibrated when the task calibrates).

A run keeps the records of its found and its manual prompt on every split in ``outcomes.json``
(:data:`RUN_OUTCOMES`); ``rlprompt eval --save-outcomes FILE`` writes one prompt's record of one
split as an outcome file. Both are plain JSON on one line (compact: about 55 bytes per example and
prompt for classification, 200 KB for a run on SST-2's 1821 test reviews).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from rlprompt.errors import RLPromptError
from rlprompt.io import atomic_write_json, read_json

RUN_OUTCOMES = "outcomes.json"
FORMAT = "rlprompt-outcomes"
VERSION = 1


def example_key(*parts: Any) -> str:
    """A 12-hex-digit hash of an example's content (text and label, or fields and references)."""
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def split_record(
    keys: list[str], scores: dict[str, list[float]], predictions: list[Any], log_probs: list[list[float]] | None = None
) -> dict[str, Any]:
    """One prompt's outcomes on one split (values rounded to 6 decimals: a compact file)."""
    record: dict[str, Any] = {
        "n": len(keys),
        "keys": keys,
        "scores": {name: [round(float(v), 6) for v in values] for name, values in scores.items()},
        "predictions": predictions,
    }
    if log_probs is not None:
        record["log_probs"] = [[round(float(v), 6) for v in row] for row in log_probs]
    return record


def write_outcome_file(
    path: str | os.PathLike[str],
    *,
    task: str,
    metric_names: list[str],
    prompt: Any,
    split: str,
    record: dict[str, Any],
    source: str,
) -> None:
    """One prompt's outcomes on one split, with what produced them (``source``: a run or a config)."""
    atomic_write_json(
        path,
        {
            "format": FORMAT,
            "version": VERSION,
            "task": task,
            "metric_names": metric_names,
            "prompt": prompt,
            "split": split,
            "source": source,
            "outcomes": record,
        },
        compact=True,
    )


def write_run_outcomes(
    path: str | os.PathLike[str],
    *,
    task: str,
    metric_names: list[str],
    found: dict[str, dict[str, Any]],
    manual: dict[str, dict[str, Any]],
    prompts: dict[str, Any],
) -> None:
    """A run's outcomes: ``found`` and ``manual`` map splits to :func:`split_record` records."""
    atomic_write_json(
        path,
        {
            "format": FORMAT,
            "version": VERSION,
            "task": task,
            "metric_names": metric_names,
            "prompts": prompts,
            "found": found,
            "manual": manual,
        },
        compact=True,
    )


def _check_record(record: Any, where: str) -> dict[str, Any]:
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("keys"), list)
        or not isinstance(record.get("scores"), dict)
    ):
        raise RLPromptError(f"{where} holds no per-example outcomes (keys and scores)")
    n = len(record["keys"])
    for name, values in record["scores"].items():
        if not isinstance(values, list) or len(values) != n or not all(isinstance(v, (int, float)) for v in values):
            raise RLPromptError(f"{where}: scores of {name!r} are not {n} numbers")
    return record


def read_outcomes(path: str | os.PathLike[str]) -> dict[str, Any]:
    """An outcome file or a run's ``outcomes.json``, checked to be one."""
    data = read_json(path, "outcome file")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise RLPromptError(f"{path} is not an rlprompt outcome file (write one with rlprompt eval --save-outcomes)")
    if data.get("version") != VERSION:
        raise RLPromptError(f"{path} is outcome format v{data.get('version')}; this rlprompt reads v{VERSION}")
    return data


def outcome_file_record(path: str | os.PathLike[str], split: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(file metadata, record) of an outcome file written by ``eval --save-outcomes``."""
    data = read_outcomes(path)
    if "outcomes" not in data:
        raise RLPromptError(f"{path} is a run's outcomes.json; name the run directory instead (or RUN:manual)")
    if split is not None and data.get("split") != split:
        raise RLPromptError(f"{path} holds the {data.get('split')} split, not {split}")
    return data, _check_record(data["outcomes"], str(path))


def run_record(path: Path, which: str, split: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(file metadata, record) of a run's ``found`` or ``manual`` prompt on ``split``."""
    data = read_outcomes(path)
    records = data.get(which)
    if not isinstance(records, dict) or split not in records:
        raise RLPromptError(f"{path} holds no {which} outcomes on the {split} split")
    return data, _check_record(records[split], f"{path} ({which}, {split})")


def paired_scores(
    a: dict[str, Any], b: dict[str, Any], metric: str, names: tuple[str, str]
) -> tuple[list[float], list[float]]:
    """The two records' per-example ``metric`` on the same examples; a mismatch is one error naming it."""
    if a["keys"] != b["keys"]:
        if len(a["keys"]) != len(b["keys"]):
            raise RLPromptError(
                f"{names[0]} and {names[1]} were scored on different examples ({len(a['keys'])} "
                f"against {len(b['keys'])}); a paired comparison needs the same test set"
            )
        first = next(i for i, (x, y) in enumerate(zip(a["keys"], b["keys"], strict=True)) if x != y)
        differing = sum(x != y for x, y in zip(a["keys"], b["keys"], strict=True))
        raise RLPromptError(
            f"{names[0]} and {names[1]} were scored on different examples ({differing} of "
            f"{len(a['keys'])} differ, the first at position {first}); a paired comparison "
            "needs the same test set in the same order"
        )
    for record, name in zip((a, b), names, strict=True):
        if metric not in record["scores"]:
            raise RLPromptError(f"{name} has no per-example '{metric}'; it has {sorted(record['scores'])}")
    return a["scores"][metric], b["scores"][metric]
