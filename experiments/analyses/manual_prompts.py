"""Test accuracy of hand-written template / prompt / verbalizer triples on SST-2 with one task model.

The model loads once; each triple is a task sharing it. Prints a markdown table (test accuracy
on the full test split, dev accuracy on the 16-shot dev split, predicted-class counts) and
writes it with a JSON copy. ``--calibration batch`` reports the batch-calibrated accuracies
(``calibration: batch``) beside the raw ones, both from the same scores.

    python experiments/analyses/manual_prompts.py --out experiments/results/manual-prompts-smollm2
    python experiments/analyses/manual_prompts.py --calibration batch --out experiments/results/manual-prompts-smollm2-calibrated
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

TRIPLES = [
    ("{sentence} {prompt}", "It was", [" terrible", " great"]),
    ("{sentence} {prompt}", "It was", [" bad", " good"]),
    ("{sentence} {prompt}", "All in all, the movie was", [" terrible", " great"]),
    ("{sentence} {prompt}", "In summary, the film was", [" bad", " good"]),
    ("Review: {sentence}\n{prompt}", "Sentiment:", [" negative", " positive"]),
    ("Review: {sentence}\n{prompt}", "The sentiment of this review is", [" negative", " positive"]),
    ("Review: {sentence}\n{prompt}", "Did the reviewer like the movie? Answer:", [" No", " Yes"]),
    (
        "{prompt}\nReview: {sentence}\nSentiment:",
        "Classify the sentiment of the movie review as positive or negative.",
        [" negative", " positive"],
    ),
    ("{prompt}\nReview: {sentence}\nAnswer:", "Is this movie review positive or negative?", [" negative", " positive"]),
]


def markdown_rows(rows: list[dict], calibrated: bool) -> list[str]:
    """The table's header and one row per triple, best test accuracy (calibrated when asked) first."""
    if calibrated:
        columns = [
            ("test accuracy, calibrated", "{test_accuracy_calibrated:.4f}"),
            ("dev accuracy, calibrated", "{dev_accuracy_calibrated:.4f}"),
            ("predicted per class (test, calibrated)", "{test_predicted_counts_calibrated}"),
            ("test accuracy, raw", "{test_accuracy:.4f}"),
            ("predicted per class (test, raw)", "{test_predicted_counts}"),
        ]
    else:
        columns = [
            ("test accuracy", "{test_accuracy:.4f}"),
            ("test macro-F1", "{test_macro_f1:.4f}"),
            ("dev accuracy", "{dev_accuracy:.4f}"),
            ("predicted per class (test)", "{test_predicted_counts}"),
        ]
    headers = ["template", "prompt", "verbalizers", *(header for header, _ in columns)]
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    sort_key = "test_accuracy_calibrated" if calibrated else "test_accuracy"
    for r in sorted(rows, key=lambda r: -r[sort_key]):
        template = r["template"].replace("\n", "\\n")
        cells = [
            f"`{template}`",
            repr(r["prompt"]),
            " / ".join(repr(v) for v in r["verbalizers"]),
            *(fmt.format(**r) for _, fmt in columns),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded", help="task_model.name_or_path (causal LM)")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "sst-2" / "16-13"))
    parser.add_argument("--out", default=None, help="directory for table.md and results.json")
    parser.add_argument(
        "--calibration",
        choices=["none", "batch"],
        default="none",
        help="batch: also report batch-calibrated accuracies (sorted by them)",
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from rlprompt.config import config_from_dict
    from rlprompt.rewards import batch_calibrate, classification_metrics
    from rlprompt.task import Task

    shared = None
    rows = []
    for template, prompt, verbalizers in TRIPLES:
        config = config_from_dict(
            {
                "task_model": {"kind": "causal_lm", "name_or_path": args.model},
                "data": {"dir": args.data_dir},
                "template": template,
                "prompt": prompt,
                "verbalizers": verbalizers,
            }
        )
        if shared is None:
            shared = Task.from_config(config).task_model
        task = Task.from_config(config, model=shared.model, tokenizer=shared.tokenizer)
        start = time.perf_counter()
        test, dev = task.evaluate(prompt, "test"), task.evaluate(prompt, "dev")
        row = {
            "template": template,
            "prompt": prompt,
            "verbalizers": verbalizers,
            "test_accuracy": test["accuracy"],
            "test_macro_f1": test["macro_f1"],
            "dev_accuracy": dev["accuracy"],
            "test_predicted_counts": test["predicted_counts"],
            "n_test": test["n"],
        }
        if args.calibration == "batch":  # the same scores (cached), calibrated over each split
            for split in ("test", "dev"):
                scores = task.task_model.score([prompt], task.data.split(split).texts)[0]
                calibrated = classification_metrics(batch_calibrate(scores), task.labels(split))
                row[f"{split}_accuracy_calibrated"] = calibrated["accuracy"]
                row[f"{split}_predicted_counts_calibrated"] = calibrated["predicted_counts"]
        row["seconds"] = round(time.perf_counter() - start, 1)
        rows.append(row)
        print(
            f"{test['accuracy']:.4f} test, {dev['accuracy']:.4f} dev  {template!r} prompt={prompt!r} "
            f"verbalizers={verbalizers} counts={test['predicted_counts']}",
            flush=True,
        )
    command = " ".join(["python", "experiments/analyses/manual_prompts.py", *sys.argv[1:]])
    lines = [
        f"Command: `{command}`",
        "",
        f"Task model `causal_lm:{args.model}`, data `{args.data_dir}` (test n={rows[0]['n_test']}).",
        "",
        *markdown_rows(rows, calibrated=args.calibration == "batch"),
    ]
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "table.md").write_text(table)
        (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
