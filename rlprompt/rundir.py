"""The run directory: its files, the rules for starting and resuming, reading a finished run back.

A run directory holds ``config.json`` (the resolved config), ``metrics.csv`` and
``tensorboard/``, ``checkpoint.safetensors`` (resume point), ``reward_curve.png``,
``soft_prompt.safetensors`` for soft prompts and, written last, ``best_prompt.json`` (a
:class:`~rlprompt.results.RunResult`; its presence marks a finished run). A new run writes
only into a new or empty directory; ``--resume`` continues one from its checkpoint.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from rlprompt.config import Config, config_from_dict, config_to_dict, upgrade_saved_config
from rlprompt.errors import ConfigError, RLPromptError
from rlprompt.io import read_json, remove_stale_temp_files
from rlprompt.results import RunResult

CONFIG = "config.json"
METRICS = "metrics.csv"
CHECKPOINT = "checkpoint.safetensors"
LEGACY_CHECKPOINT = "checkpoint.pt"
BEST_PROMPT = "best_prompt.json"
SOFT_PROMPT = "soft_prompt.safetensors"
REWARD_CURVE = "reward_curve.png"
RUN_FILES = (CONFIG, METRICS, "tensorboard", REWARD_CURVE, CHECKPOINT)


def default_run_dir(config: Config) -> Path:
    return Path("runs") / f"{config.agent_name}-{config.env_kind()}-seed{config.seed}"


def check_run_dir(run_dir: Path, resume: bool) -> None:
    """A new run needs a new or empty directory; a resumed one needs a run's ``config.json``."""
    if resume:
        if not (run_dir / CONFIG).is_file():
            raise ConfigError(f"cannot resume {run_dir}: no config.json there (not a run directory)")
        if not (run_dir / CHECKPOINT).is_file() and (run_dir / LEGACY_CHECKPOINT).is_file():
            raise RLPromptError(
                f"{run_dir} was checkpointed by an older rlprompt as a pickle (checkpoint.pt); rlprompt no longer "
                "loads pickles, which can run code: start the run again in a new directory"
            )
        return
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run directory {run_dir} is a file; choose another --output-dir")
    if any((run_dir / name).is_file() for name in (BEST_PROMPT, CHECKPOINT, METRICS)):
        raise ConfigError(
            f"run directory {run_dir} already holds a run; resume it with --resume {run_dir} "
            "or choose another --output-dir"
        )
    if run_dir.is_dir() and any(run_dir.iterdir()):
        raise ConfigError(
            f"run directory {run_dir} is not empty and holds no rlprompt run; a run writes only into a new "
            "or empty directory (choose another --output-dir)"
        )


def clear_unstarted_run(run_dir: Path) -> bool:
    """Remove the files of a run that stopped before its first checkpoint (so it can start over,
    e.g. with a corrected config); True if ``run_dir`` was such a run. Finished or checkpointed
    runs and files rlprompt did not write are left alone."""
    if not (run_dir / CONFIG).is_file() or (run_dir / CHECKPOINT).is_file() or (run_dir / BEST_PROMPT).is_file():
        return False
    for name in RUN_FILES:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    remove_stale_temp_files(run_dir)
    return True


def saved_config(run_dir: Path, overrides: list[str] | None = None) -> Config:
    """``run_dir``'s ``config.json`` (plus ``overrides``)."""
    check_run_dir(run_dir, resume=True)
    data = read_json(run_dir / CONFIG, "run config")
    try:
        return config_from_dict(upgrade_saved_config(data) if isinstance(data, dict) else data, overrides)
    except ConfigError as exc:
        raise ConfigError(f"{run_dir / CONFIG}: {exc}") from None


def resolve_resume_config(run_dir: Path, config: Config | None) -> Config:
    """The config to resume ``run_dir`` with: its saved one, or ``config`` when that differs from
    it only in ``output`` (plots, progress...); any other difference is an error naming the keys."""
    saved = saved_config(run_dir)
    if config is None:
        return saved
    changed = config_changes(saved, config, may_change=("output",))
    if changed:
        raise ConfigError(f"--resume {run_dir}: the given config differs from the run's config.json at {changed}")
    return config


def config_changes(saved: Config, config: Config, may_change: tuple[str, ...]) -> list[str]:
    """Dotted keys at which ``config`` differs from ``saved``, outside the sections ``may_change``."""
    a, b = config_to_dict(saved), config_to_dict(config)
    for section in may_change:
        a.pop(section, None)
        b.pop(section, None)
    return diff_keys(a, b)


def diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys at which two nested dicts differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b)):
            out += diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def load_run(run_dir: str | os.PathLike[str], overrides: list[str] | None = None) -> tuple[Config, RunResult]:
    """A finished run's config (with ``overrides`` applied) and its result."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RLPromptError(f"run directory not found: {run_dir}")
    for name in (CONFIG, BEST_PROMPT):
        if not (run_dir / name).is_file():
            hint = " (the run has not finished: resume it with rlprompt run --resume)" if name == BEST_PROMPT else ""
            raise RLPromptError(f"{run_dir} has no {name}{hint}")
    return saved_config(run_dir, overrides), RunResult.load(run_dir / BEST_PROMPT)


def run_prompt(run_dir: str | os.PathLike[str], result: RunResult) -> Any:
    """The prompt a run found: its text, or its soft prompt tensor ``[n_tokens, hidden]``."""
    if result.kind == "discrete":
        return result.prompt
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(run_dir) / str(result.soft_prompt_path)
    if not path.is_file():
        raise RLPromptError(f"soft prompt file missing: {path}")
    try:
        return load_file(str(path))["prompt_embeddings"]
    except (SafetensorError, KeyError, OSError) as exc:
        raise RLPromptError(f"soft prompt file {path} is corrupt or truncated ({exc})") from None
