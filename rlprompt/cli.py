"""The ``rlprompt`` command line: a thin layer over the Python API.

Errors caused by input (config keys, files, labels, models, rewards) print as one line,
``rlprompt: error: ...``, with exit status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import cast

from rlprompt.errors import RLPromptError, first_line


def _add_overrides(parser: argparse.ArgumentParser, example: str) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a config field by dotted path, e.g. --set {example} (repeatable)",
    )


def _add_verbose(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the libraries' own output too (transformers/peft/trl progress bars, "
        "info lines and advisory warnings, hidden by default)",
    )


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", help="YAML config (defaults: the embedded demo task)")
    _add_overrides(parser, "data.dir=path/16-21")


def _cmd_eval(args: argparse.Namespace) -> int:
    from rlprompt.config import load_config
    from rlprompt.errors import ConfigError

    _check_outcome_target(args.save_outcomes)
    _check_retriever_target(args.save_retriever, args.save_outcomes)
    if args.run is not None:
        return _eval_run(args)
    config = load_config(args.config, args.overrides)
    if args.save_retriever is not None and config.demos.select != "nearest":
        raise ConfigError(
            "--save-retriever writes the per-input retriever of demos.select: nearest; this config shows fixed prompts"
        )
    if args.prompt is not None and config.demos.select == "nearest":
        raise ConfigError(
            "demos.select: nearest gives each input its own demonstrations by retrieval; --prompt "
            "would be one fixed block for every input (set demos.select: fixed for that)"
        )
    from rlprompt import progress
    from rlprompt.task import Task, evaluate_prompt  # torch and the model: only once the config is valid

    with progress.stage(f"loading {config.task_model.label} and the data", total=1):
        progress.step("")
        task = Task.from_config(config)
    shown = config.manual_prompt if args.prompt is None else args.prompt
    with progress.stage(f"scoring on {args.split}", total=1):
        progress.step(f"{progress.shorten(shown)} ({len(task.data.split(args.split))} examples)")
        result = evaluate_prompt(config, args.prompt, args.split, task=task, per_example=args.save_outcomes is not None)
    prompt = result["prompt"]
    outcomes = result.pop("per_example", None)
    print(f"task model : {result['task_model']}")
    print(f"prompt     : {result['prompt']!r}")
    print(f"{args.split:<11}: {_metrics_line(result)}")
    for output in result.get("outputs", []):
        print(f"output     : {output!r}")
    print(
        f"cost       : {result['lm_calls']} LM calls in {result['forward_batches']} forward batches, {result['wall_time_s']:.2f} s"
    )
    if outcomes is not None:
        _save_outcomes(
            args.save_outcomes,
            task=config.task,
            metric_names=list(task.metric_names),
            prompt=prompt,
            split=args.split,
            record=outcomes,
            source=f"config {args.config or '(defaults)'}",
        )
    if args.save_retriever is not None:
        print(
            f"retriever  : {task.retriever().save(args.save_retriever)} "
            "(DemoRetriever.load(path).prompt(x): a new input's demonstrations)"
        )
    if args.json:
        print(json.dumps(result, sort_keys=True))
    return 0


def _metrics_line(m: dict) -> str:
    """One line of a split's metrics: classification's accuracy/macro-F1/gold log-prob, or a
    generation task's metrics and reference likelihood."""
    if "accuracy" in m:
        counts = (
            f", predicted per class {'/'.join(str(c) for c in m['predicted_counts'])}"
            if "predicted_counts" in m
            else ""
        )
        return (
            f"accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}  gold log-prob {m['gold_log_prob']:.4f}  "
            f"(n={m['n']}{counts})"
        )
    skip = {
        "reward",
        "n",
        "likelihood",
        "outputs",
        "lm_calls",
        "generated_tokens",
        "prompt",
        "split",
        "task_model",
        "wall_time_s",
        "forward_batches",
    }
    shown = "  ".join(f"{k} {v:.4f}" for k, v in m.items() if k not in skip and isinstance(v, float))
    return f"{shown}  likelihood {m['likelihood']:.4f}  (n={m['n']})"


def _eval_run(args: argparse.Namespace) -> int:
    from rlprompt import progress
    from rlprompt.errors import ConfigError
    from rlprompt.experiment import evaluate_run

    if args.config is not None or args.prompt is not None:
        raise ConfigError("eval --run takes the prompt and config from the run directory; use --set for transfer")
    if args.save_retriever is not None:
        raise ConfigError(
            "--save-retriever writes the retriever of a demos.select: nearest config (rlprompt eval "
            "CONFIG); a run's prompt is one fixed prompt"
        )
    with progress.stage(f"re-scoring the run's prompt on {args.split}", total=1):
        progress.step(str(args.run))
        result = evaluate_run(args.run, args.split, args.overrides, per_example=args.save_outcomes is not None)
    outcomes = result.pop("per_example", None)
    m = result["metrics"]
    shown = repr(result["prompt"]) if result["kind"] == "discrete" else "<soft prompt>"
    if result.get("label_words"):
        shown += f" [{'/'.join(result['label_words'])}]"
    print(f"run        : {result['run']}")
    print(
        f"task model : {result['task_model']}"
        + (f"  (overrides: {' '.join(result['overrides'])})" if result["overrides"] else "")
    )
    print(f"prompt     : {shown}")
    print(f"{args.split:<11}: {_metrics_line(m)}")
    if "reproduces" in result:
        verdict = (
            f"reproduces best_prompt.json (largest deviation {result['max_abs_diff']:.1e})"
            if result["reproduces"]
            else f"DIFFERS from best_prompt.json {result['recorded']}"
        )
        print(f"check      : {verdict}")
    if outcomes is not None:
        _save_outcomes(
            args.save_outcomes,
            task=result["task"],
            metric_names=list(result["metric_names"]),
            prompt=result["prompt"]
            if not result.get("label_words")
            else f"{result['prompt']} [{'/'.join(result['label_words'])}]",
            split=args.split,
            record=outcomes,
            source=f"run {args.run}" + (f" with {' '.join(result['overrides'])}" if result["overrides"] else ""),
        )
    if args.json:
        print(json.dumps(result, sort_keys=True))
    return 0 if result.get("reproduces", True) else 1


def _check_outcome_target(path: str | None) -> None:
    """``--save-outcomes`` may name a new ``.json`` file or an earlier outcome file only (checked
    before anything is scored)."""
    if path is None:
        return
    from rlprompt.errors import RLPromptError
    from rlprompt.outcomes import read_outcomes
    from rlprompt.rundir import check_output_path

    target = Path(path)
    if target.suffix != ".json":
        raise RLPromptError(f"--save-outcomes {path}: an outcome file is JSON; name it *.json")
    check_output_path(target, "--save-outcomes")
    if target.is_symlink() or (target.exists() and not target.is_file()):
        raise RLPromptError(f"--save-outcomes {path} exists and is not a file; choose another path")
    if target.exists():
        try:
            ours = "outcomes" in read_outcomes(target)
        except RLPromptError:
            ours = False
        if not ours:
            raise RLPromptError(
                f"--save-outcomes {path} exists and is not an outcome file of rlprompt eval; "
                "rlprompt never replaces it (choose another path)"
            )


def _check_retriever_target(path: str | None, outcomes: str | None) -> None:
    """``--save-retriever`` may name a new ``.json`` file or an earlier retriever file only, and
    not the ``--save-outcomes`` file (checked before anything is scored)."""
    if path is None:
        return
    from rlprompt.errors import RLPromptError
    from rlprompt.retrieval import check_retriever_target
    from rlprompt.rundir import check_output_path

    if outcomes is not None and Path(outcomes).resolve() == Path(path).resolve():
        raise RLPromptError(f"--save-outcomes and --save-retriever name the same file {path}: give two paths")
    check_output_path(Path(path), "--save-retriever")
    check_retriever_target(path)


def _save_outcomes(path: str, **fields: object) -> None:
    """Write an outcome file where nothing but an earlier one is replaced (never a run's file)."""
    from rlprompt.outcomes import write_outcome_file

    _check_outcome_target(path)  # again: it may have appeared while the prompt was scored
    target = Path(path)
    write_outcome_file(target, **fields)  # type: ignore[arg-type]
    print(f"outcomes   : {target} ({fields['split']}, {fields['record']['n']} examples)")  # type: ignore[index]


def _cmd_compare(args: argparse.Namespace) -> int:
    from rlprompt.compare import compare_outcomes, format_comparison

    result, a, b = compare_outcomes(args.a, args.b, args.split, args.metric, args.resamples, args.seed)
    print(format_comparison(result, a, b, args.split))
    if args.json:
        print(json.dumps(result.as_dict(), sort_keys=True))
    return 0


def _cmd_outcomes(args: argparse.Namespace) -> int:
    from rlprompt.experiment import finished_runs, record_outcomes

    runs = finished_runs(args.runs)
    written = record_outcomes(runs)
    print(f"outcomes written into {len(written)} of {len(runs)} run(s)")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from rlprompt.config import load_config
    from rlprompt.errors import ConfigError
    from rlprompt.rundir import resolve_resume_config, saved_config

    if args.resume is not None:
        if args.output_dir is not None:
            raise ConfigError("--resume DIR names the run directory; drop --output-dir")
        if args.config is not None:
            given = load_config(args.config, args.overrides)
        else:  # overrides apply to the run's own config (only output.* may change)
            given = saved_config(Path(args.resume), args.overrides)
        config = resolve_resume_config(Path(args.resume), given)
        run_dir = Path(args.resume)
    else:
        if args.config is None:
            raise ConfigError("rlprompt run needs a CONFIG (or --resume RUN_DIR)")
        config = load_config(args.config, args.overrides)
        run_dir = args.output_dir
    from rlprompt.experiment import run_experiment  # torch and the models: only once the config is valid
    from rlprompt.reporting import format_summary

    progress = False if args.no_progress else None
    result = run_experiment(config, run_dir, resume=args.resume is not None, progress=progress)
    print(format_summary(result, cast(str, config.output.dir)))  # run_experiment sets it to the run directory
    return 0


def _cmd_select(args: argparse.Namespace) -> int:
    from rlprompt.experiment import reselect_run
    from rlprompt.reporting import format_summary

    previous, result = reselect_run(args.run_dir, args.overrides)
    metric = result.primary_metric
    print(
        f"before       : {previous.shown_prompt} (selected on {'+'.join(previous.selected_on)}) "
        f"test {metric} {previous.metrics['test'][metric]:.4f}"
    )
    print(format_summary(result, args.run_dir))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from rlprompt.bench import run_bench

    rows = run_bench(
        args.bench,
        args.overrides,
        progress=False if args.no_progress else None,
        backend=args.backend,
        workers=args.workers,
        address=args.address,
        report_only=args.report,
    )
    if not args.report:
        print(f"{len(rows)} cells finished")
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    from rlprompt.config import load_config

    config = load_config(args.config, args.overrides)
    from rlprompt.finetune import run_finetune
    from rlprompt.reporting import format_finetune_summary

    result = run_finetune(config, args.output_dir)
    print(format_finetune_summary(result))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from rlprompt.export import export_run

    path = export_run(args.run_dir, args.format, args.out, force=args.force)
    print(f"exported {args.format} to {path}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors as one ``rlprompt: error:`` line (exit status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"rlprompt: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rlprompt", description="Prompt optimization with reinforcement learning.")
    parser.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="show the libraries' own output too (also accepted after the command)",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p_run = sub.add_parser(
        "run", help="optimize a prompt: train an agent, select on train+dev (selection.splits), test, write a run dir"
    )
    p_run.add_argument("config", nargs="?", help="YAML run config (see experiments/configs)")
    _add_overrides(p_run, "agent.name=sql --set budget.prompt_evals=500")
    p_run.add_argument(
        "--output-dir", "-o", help="run directory (default: output.dir or runs/<agent>-<env>-seed<seed>)"
    )
    p_run.add_argument("--resume", metavar="RUN_DIR", help="continue a killed run from its last checkpoint")
    p_run.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_verbose(p_run)
    p_run.set_defaults(func=_cmd_run)

    p_bench = sub.add_parser("bench", help="run a grid of agents x tasks x seeds (resumable), write tables and a plot")
    p_bench.add_argument("bench", help="YAML bench file (see experiments/configs/bench-sst2.yaml)")
    _add_overrides(p_bench, "seeds=[13]")
    p_bench.add_argument("--no-progress", action="store_true", help="no progress bars")
    p_bench.add_argument(
        "--backend",
        choices=["local", "ray"],
        default="local",
        help="local: this machine (cells here, or in --workers processes); ray: Ray actors",
    )
    p_bench.add_argument(
        "--workers",
        type=int,
        default=1,
        help="cells run at once (local processes, or Ray workers; ray default: as the CPUs allow)",
    )
    p_bench.add_argument("--address", default=None, help="--backend ray: join the Ray cluster at this address")
    p_bench.add_argument(
        "--report",
        action="store_true",
        help="run no cell: rewrite the tables and plot from the grid's finished cells (after "
        "runs of a part of the grid, e.g. --set seeds=[21])",
    )
    _add_verbose(p_bench)
    p_bench.set_defaults(func=_cmd_bench)

    p_select = sub.add_parser(
        "select", help="select a finished run's prompt again (another selection section), without training again"
    )
    p_select.add_argument("run_dir")
    p_select.add_argument("--no-progress", action="store_true", help="no progress lines")
    _add_overrides(p_select, "selection.splits=[dev] --set selection.include_manual=false")
    _add_verbose(p_select)
    p_select.set_defaults(func=_cmd_select)

    p_ft = sub.add_parser("finetune", help="RL fine-tuning of a causal LM on the task reward (grpo, rloo, ppo)")
    p_ft.add_argument("config", help="YAML config with a finetune section (see experiments/configs/finetune-tiny.yaml)")
    _add_overrides(p_ft, "finetune.method=ppo")
    p_ft.add_argument("--output-dir", "-o", help="run directory (default: runs/finetune-<method>-seed<seed>)")
    p_ft.add_argument("--no-progress", action="store_true", help="no progress lines")
    _add_verbose(p_ft)
    p_ft.set_defaults(func=_cmd_finetune)

    p_export = sub.add_parser(
        "export", help="export a run's best prompt (json, txt, or a PEFT adapter for soft prompts)"
    )
    p_export.add_argument("run_dir")
    p_export.add_argument("--format", "-f", required=True, choices=["json", "txt", "peft"])
    p_export.add_argument(
        "--out",
        required=True,
        help="output file (json, txt) or directory (peft): a new path or an earlier rlprompt export; "
        "never the working directory, a run, or a path inside a run",
    )
    p_export.add_argument(
        "--force",
        action="store_true",
        help="also replace an earlier rlprompt export at --out that was changed since it was written "
        "(only the files its rlprompt_export record lists; other files in an adapter directory "
        "stay). Nothing rlprompt did not write is ever replaced or deleted",
    )
    _add_verbose(p_export)
    p_export.set_defaults(func=_cmd_export)

    p_eval = sub.add_parser("eval", help="score a prompt (or a run's best prompt) on a split")
    _add_common(p_eval)
    p_eval.add_argument("--run", help="a run directory: re-score its best prompt (--set measures transfer)")
    p_eval.add_argument("--prompt", "-p", help="prompt text (default: the config's manual prompt)")
    p_eval.add_argument("--split", default="test", choices=["train", "dev", "test"])
    p_eval.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    p_eval.add_argument("--no-progress", action="store_true", help="no progress lines")
    p_eval.add_argument(
        "--save-outcomes",
        metavar="FILE.json",
        help="also write the per-example outcomes (scores, predictions) to FILE.json, for "
        "rlprompt compare (replaces only an earlier outcome file)",
    )
    p_eval.add_argument(
        "--save-retriever",
        metavar="FILE.json",
        help="demos.select: nearest: also write the retriever (pool, embeddings, settings) to "
        "FILE.json; DemoRetriever.load(FILE).prompt(x) gives a new input's demonstrations "
        "(replaces only an earlier retriever file)",
    )
    _add_verbose(p_eval)
    p_eval.set_defaults(func=_cmd_eval)

    p_cmp = sub.add_parser(
        "compare", help="paired test of two prompts on the same test examples (bootstrap interval, permutation p-value)"
    )
    p_cmp.add_argument(
        "a", help="a run directory (its found prompt), RUN:manual, or an outcome file of eval --save-outcomes"
    )
    p_cmp.add_argument("b", help="the same kinds as A")
    p_cmp.add_argument("--split", default="test", choices=["train", "dev", "test"])
    p_cmp.add_argument("--metric", help="per-example metric to compare (default: the task's main metric)")
    p_cmp.add_argument(
        "--resamples", type=int, default=10_000, help="bootstrap resamples and sign flips (default 10000)"
    )
    p_cmp.add_argument("--seed", type=int, default=0, help="seed of the resampling (default 0)")
    p_cmp.add_argument(
        "--json",
        action="store_true",
        help='print one JSON line {"metric", "a", "b", "diff", "ci_low", "ci_high", "p_value", "n"} last',
    )
    _add_verbose(p_cmp)
    p_cmp.set_defaults(func=_cmd_compare)

    p_out = sub.add_parser(
        "outcomes",
        help="write the per-example outcomes of runs from before rlprompt kept them "
        "(found and manual prompt re-scored; each split must reproduce best_prompt.json)",
    )
    p_out.add_argument(
        "runs",
        nargs="+",
        metavar="RUN",
        help="a run directory, or a directory (a bench's output) whose finished runs below it are taken",
    )
    _add_verbose(p_out)
    p_out.set_defaults(func=_cmd_outcomes)
    return parser


def _quiet_libraries() -> None:
    """Hide loading progress bars and advisory warnings of the HF libraries on the CLI (through
    their environment variables, so that nothing is imported before it is needed; the commands
    run inside :func:`rlprompt.verbosity.quiet_libraries` too)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:  # already imported (the CLI called in-process): tell it directly
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def _log_to_stderr() -> None:
    """rlprompt's warnings (e.g. data rows kept with empty text) as ``rlprompt: warning: ...`` lines."""
    import logging

    logger = logging.getLogger("rlprompt")
    if not any(getattr(h, "_rlprompt_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("rlprompt: %(levelname)s: %(message)s"))
        handler._rlprompt_cli = True  # type: ignore[attr-defined]
        handler.setLevel(logging.WARNING)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from rlprompt import progress
    from rlprompt.verbosity import quiet_libraries, set_verbose

    if args.verbose:
        set_verbose(True)
    else:
        _quiet_libraries()
    _log_to_stderr()
    show = sys.stderr.isatty() and not getattr(args, "no_progress", False)
    try:
        with quiet_libraries(), progress.reporting(progress.RichReporter() if show else None):
            return int(args.func(args))
    except RLPromptError as exc:
        print(f"rlprompt: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rlprompt: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("rlprompt: error: out of memory (lower task_model.batch_size or the data size)", file=sys.stderr)
        return 1
    except OSError as exc:  # disk full, permissions ... on a path rlprompt did not check first
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"rlprompt: error: {exc.strerror or first_line(exc)}{where}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: still one line, with the way to the full traceback
        if os.environ.get("RLPROMPT_DEBUG"):
            raise
        print(
            f"rlprompt: error: unexpected {type(exc).__name__}: {first_line(exc)} "
            "(a bug in rlprompt; set RLPROMPT_DEBUG=1 for the traceback and please report it)",
            file=sys.stderr,
        )
        return 1
    finally:
        if args.verbose:
            set_verbose(None)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
