"""The ``rlprompt`` command line: a thin layer over the Python API.

Errors caused by input (config keys, files, labels, models, rewards) print as one line,
``rlprompt: error: ...``, with exit status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from rlprompt.errors import RLPromptError


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", help="YAML config (defaults: the embedded demo task)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config field by dotted path, e.g. --set data.dir=path/16-21 (repeatable)",
    )  # fmt: skip


def _cmd_eval(args: argparse.Namespace) -> int:
    from rlprompt.config import load_config
    from rlprompt.task import evaluate_prompt

    config = load_config(args.config, args.overrides)
    result = evaluate_prompt(config, args.prompt, args.split)
    counts = "/".join(str(c) for c in result["predicted_counts"])
    print(f"task model : {result['task_model']}")
    print(f"prompt     : {result['prompt']!r}")
    print(
        f"{args.split:<11}: accuracy {result['accuracy']:.4f}  macro-F1 {result['macro_f1']:.4f}  "
        f"gold log-prob {result['gold_log_prob']:.4f}  (n={result['n']}, predicted per class {counts})"
    )
    print(
        f"cost       : {result['lm_calls']} LM calls in {result['forward_batches']} forward batches, {result['wall_time_s']:.2f} s"
    )
    if args.json:
        print(json.dumps(result, sort_keys=True))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlprompt", description="Prompt optimization with reinforcement learning.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_eval = sub.add_parser("eval", help="score a prompt on a split")
    _add_common(p_eval)
    p_eval.add_argument("--prompt", "-p", help="prompt text (default: the config's manual prompt)")
    p_eval.add_argument("--split", default="test", choices=["train", "dev", "test"])
    p_eval.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    p_eval.set_defaults(func=_cmd_eval)
    return parser


def _quiet_libraries() -> None:
    """Hide loading progress bars and advisory warnings of the HF libraries on the CLI."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_libraries()
    try:
        return int(args.func(args))
    except RLPromptError as exc:
        print(f"rlprompt: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rlprompt: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
