"""The run directory: its files, the rules for starting and resuming, reading a finished run back.

A run directory holds ``config.json`` (the resolved config), ``metrics.csv`` and
``tensorboard/``, ``checkpoint.safetensors`` (resume point), ``reward_curve.png``,
``soft_prompt.safetensors`` for soft prompts and, written last, ``best_prompt.json`` (a
:class:`~rlprompt.results.RunResult`; its presence marks a finished run).

Ownership: rlprompt deletes or replaces only files it wrote and recorded. Every directory a run
(or a fine-tuning run, or a bench) writes holds a manifest, ``.rlprompt-manifest.json``, naming
the files rlprompt writes there; nothing else in the directory is ever touched. A new run
writes only into a new or empty directory, or over a run of its own kind that stopped before
its first checkpoint (only the manifest's files are removed). A start that fails before its
first checkpoint removes what it wrote (and the directories it created), so the same command
can simply be run again. No output directory may be the working directory or hold it, nor lie
inside a run directory.

One writer: everything that writes a run directory (``run``, ``run --resume``, ``select``,
``finetune``, bench cells) holds its lock (:func:`rlprompt.io.directory_lock`,
``.rlprompt.lock``) while it writes; a second writer gets one error naming the first.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlprompt.config import Config, config_from_dict, config_to_dict, upgrade_saved_config
from rlprompt.errors import ConfigError, RLPromptError
from rlprompt.io import LOCK_FILE, atomic_write_json, directory_lock, read_json, remove_stale_temp_files
from rlprompt.outcomes import RUN_OUTCOMES
from rlprompt.results import RunResult

CONFIG = "config.json"
METRICS = "metrics.csv"
CHECKPOINT = "checkpoint.safetensors"
LEGACY_CHECKPOINT = "checkpoint.pt"
BEST_PROMPT = "best_prompt.json"
SOFT_PROMPT = "soft_prompt.safetensors"
REWARD_CURVE = "reward_curve.png"
OUTCOMES = RUN_OUTCOMES
FINETUNE_RESULT = "finetune_result.json"
RUN_FILES = (CONFIG, METRICS, "tensorboard", REWARD_CURVE, CHECKPOINT, SOFT_PROMPT, OUTCOMES, BEST_PROMPT)
"""What a run writes into its directory (besides the manifest and the lock file)."""
FINETUNE_FILES = (
    CONFIG,
    METRICS,
    "tensorboard",
    "trainer",
    "adapter",
    "model",
    "adapter.tmp",
    "model.tmp",
    FINETUNE_RESULT,
)
"""What ``rlprompt finetune`` writes into its directory."""
BENCH_FILES = ("runs", "results.csv", "results.md", "curves.png", "profile.png")
"""What ``rlprompt bench`` writes into its ``output_dir``."""
MANIFEST = ".rlprompt-manifest.json"
"""The record of what rlprompt wrote into a directory: ``{"rlprompt": kind, "files": [names],
"directory": [device, inode]}`` (valid only in the directory it was written for)."""
OWN_FILES = {"run": RUN_FILES, "finetune": FINETUNE_FILES, "bench": BENCH_FILES}
DONE = {"run": CHECKPOINT, "finetune": FINETUNE_RESULT}
"""The file whose presence means a start got far enough to be kept (resumed, or reported)."""


def default_run_dir(config: Config) -> Path:
    return Path("runs") / f"{config.agent_name}-{config.env_kind()}-seed{config.seed}"


# ---------------------------------------------------------------- ownership


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """``directory``'s manifest (kind and files), or None if it has none (or an unreadable one)."""
    path = directory / MANIFEST
    if not path.is_file():
        return None
    try:
        data = read_json(path, "manifest")
    except RLPromptError:
        return None
    if not isinstance(data, dict) or data.get("rlprompt") not in OWN_FILES or not isinstance(data.get("files"), list):
        return None
    if data.get("directory") != _identity(directory):
        return None  # written for another directory (a copy, a clone) or by hand: not a record of ours here
    return data


def _identity(directory: Path) -> list[int] | None:
    """The directory's device and inode: a manifest holds them, so a manifest that was copied
    (or written by hand) into another directory does not make rlprompt own that one's files."""
    try:
        st = os.stat(directory)
    except OSError:
        return None
    return [st.st_dev, st.st_ino]


def owned_names(directory: Path, kind: str) -> set[str]:
    """The names in ``directory`` that rlprompt wrote as a ``kind`` directory (its manifest's files,
    the manifest and the lock file); empty if the manifest is missing or of another kind."""
    manifest = read_manifest(directory)
    if manifest is None or manifest["rlprompt"] != kind:
        return set()
    return {str(name) for name in manifest["files"] if name in OWN_FILES[kind]} | {MANIFEST, LOCK_FILE}


def record_files(directory: Path, kind: str) -> None:
    """Write ``directory``'s manifest: it holds the files of a ``kind`` directory that rlprompt writes."""
    atomic_write_json(
        directory / MANIFEST, {"rlprompt": kind, "files": list(OWN_FILES[kind]), "directory": _identity(directory)}
    )


def remove_owned(directory: Path, kind: str, keep_lock: bool = False) -> None:
    """Delete what rlprompt wrote into ``directory`` (its manifest's files, their temp files, the
    manifest and, unless ``keep_lock``, the lock file); every other file stays."""
    names = owned_names(directory, kind)
    if not names:
        return
    remove_stale_temp_files(directory, names)
    for name in sorted(names - {MANIFEST, LOCK_FILE}):
        path = directory / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    (directory / MANIFEST).unlink(missing_ok=True)
    if not keep_lock:
        (directory / LOCK_FILE).unlink(missing_ok=True)


def is_run_dir(path: Path) -> bool:
    """A run directory (of ``run`` or ``finetune``): its manifest says so, or it holds a run's files."""
    manifest = read_manifest(path)
    if manifest is not None:
        return manifest["rlprompt"] in DONE
    return (path / CONFIG).is_file() and any(
        (path / name).is_file() for name in (BEST_PROMPT, CHECKPOINT, FINETUNE_RESULT)
    )


def enclosing_run(path: Path) -> Path | None:
    """The run directory ``path`` lies inside (not ``path`` itself), if any."""
    for parent in Path(os.path.abspath(path)).parents:
        if is_run_dir(parent):
            return parent
    return None


def check_output_path(path: Path, what: str) -> None:
    """An output path may not be the working directory or hold it, nor lie inside a run directory."""
    resolved = Path(path).resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise RLPromptError(f"{what} {path} is the working directory or holds it; name a new directory for the output")
    inside = enclosing_run(resolved)
    if inside is not None:
        raise RLPromptError(
            f"{what} {path} is inside the run directory {inside}; rlprompt never writes into "
            "another run (choose a path outside it)"
        )


def _unstarted(run_dir: Path, kind: str) -> bool:
    """``run_dir`` holds a ``kind`` run of rlprompt's that stopped before its first checkpoint."""
    return (
        bool(owned_names(run_dir, kind))
        and not (run_dir / DONE[kind]).exists()
        and not (run_dir / BEST_PROMPT).exists()
    )


def _holds_files(directory: Path) -> bool:
    """``directory`` holds anything besides a lock file."""
    return directory.is_dir() and any(entry.name != LOCK_FILE for entry in directory.iterdir())


def check_run_dir(run_dir: Path, resume: bool) -> None:
    """A new run needs a new or empty directory (or one of its own runs that never checkpointed);
    a resumed one needs a run's ``config.json``. Reads only."""
    if resume:
        if not (run_dir / CONFIG).is_file():
            raise ConfigError(f"cannot resume {run_dir}: no config.json there (not a run directory)")
        if not (run_dir / CHECKPOINT).is_file() and (run_dir / LEGACY_CHECKPOINT).is_file():
            raise RLPromptError(
                f"{run_dir} was checkpointed by an older rlprompt as a pickle (checkpoint.pt); rlprompt no longer "
                "loads pickles, which can run code: start the run again in a new directory"
            )
        return
    if run_dir.is_symlink() or (run_dir.exists() and not run_dir.is_dir()):
        raise ConfigError(f"run directory {run_dir} is a file or a link; choose another --output-dir")
    if any((run_dir / name).is_file() for name in (BEST_PROMPT, CHECKPOINT)) or (
        (run_dir / METRICS).is_file() and not _unstarted(run_dir, "run")
    ):
        raise ConfigError(
            f"run directory {run_dir} already holds a run; resume it with --resume {run_dir} "
            "or choose another --output-dir"
        )
    check_output_path(run_dir, "run directory")
    if _holds_files(run_dir) and not _unstarted(run_dir, "run"):
        raise ConfigError(
            f"run directory {run_dir} is not empty and holds no rlprompt run; a run writes only into a new "
            "or empty directory (choose another --output-dir)"
        )


def check_finetune_dir(run_dir: Path) -> None:
    """A fine-tuning run writes into a new or empty directory (or over one of its own that never
    finished). Reads only."""
    if (run_dir / FINETUNE_RESULT).is_file():
        raise ConfigError(f"{run_dir} already holds a finished fine-tuning run; choose another --output-dir")
    if run_dir.is_symlink() or (run_dir.exists() and not run_dir.is_dir()):
        raise ConfigError(f"{run_dir} is a file or a link; fine-tuning writes only into a new or empty directory")
    check_output_path(run_dir, "fine-tuning directory")
    if _holds_files(run_dir) and not _unstarted(run_dir, "finetune"):
        raise ConfigError(f"{run_dir} is not an empty directory; fine-tuning writes only into a new or empty one")


def _make_dirs(path: Path) -> list[Path]:
    """Create ``path`` and its missing parents; the ones created, outermost first."""
    missing = []
    for candidate in [path, *path.parents]:
        if candidate.exists() or candidate.is_symlink():
            break
        missing.append(candidate)
    created = []
    try:
        for directory in reversed(missing):
            directory.mkdir()
            created.append(directory)
    except FileExistsError:
        pass  # created by someone else meanwhile: the lock decides
    except OSError as exc:
        _remove_empty(created)
        raise RLPromptError(f"cannot create {path}: {exc.strerror or exc}") from None
    return created


def _remove_empty(created: list[Path]) -> None:
    for directory in reversed(created):
        with contextlib.suppress(OSError):
            directory.rmdir()  # only if empty


@contextlib.contextmanager
def writing_run_dir(run_dir: Path, kind: str, *, resume: bool = False, command: str | None = None) -> Iterator[None]:
    """Create and lock ``run_dir`` for a ``kind`` run (``run`` or ``finetune``) while the block
    writes it; checked first with :func:`check_run_dir` / :func:`check_finetune_dir`.

    Under the lock the directory is checked again; a new run clears a run of its kind that
    stopped before its first checkpoint (its manifest's files only) and records what it will
    write. If the block fails before the run's first checkpoint (``DONE[kind]``), a new start
    removes everything it wrote and the directories it created; a resumed run is left as it
    was (``--resume`` and a rerun both accept it)."""
    created = _make_dirs(run_dir)
    lock_existed = (run_dir / LOCK_FILE).exists()
    recorded = False
    try:
        with directory_lock(run_dir, "run directory", command=command):
            try:
                if resume:
                    check_run_dir(run_dir, resume=True)
                else:
                    (check_run_dir(run_dir, resume=False) if kind == "run" else check_finetune_dir(run_dir))
                    remove_owned(run_dir, kind, keep_lock=True)  # a run of ours that never checkpointed
                    record_files(run_dir, kind)
                    recorded = True
                remove_stale_temp_files(run_dir, [*OWN_FILES[kind], MANIFEST])
                yield
                if resume and read_manifest(run_dir) is None:
                    # a run of an older rlprompt, or one copied here: recorded once it resumed
                    # (a resume that fails leaves the directory as it was)
                    record_files(run_dir, kind)
            except BaseException:
                if not resume and recorded and not (run_dir / DONE[kind]).exists():
                    remove_owned(run_dir, kind)
                elif not resume and not recorded and not lock_existed:
                    (run_dir / LOCK_FILE).unlink(missing_ok=True)
                raise
    except BaseException:
        _remove_empty(created)
        raise


def unstarted_run(run_dir: Path) -> bool:
    """True if ``run_dir`` holds a run of rlprompt's that stopped before its first checkpoint (a
    new run there clears it, under the directory's lock, and starts over). Removes nothing."""
    return _unstarted(run_dir, "run")


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
    """The prompt a run found: its text, its text with the label words it found
    (:class:`~rlprompt.template.LabeledPrompt`), or its soft prompt tensor ``[n_tokens, hidden]``."""
    if result.per_input is not None:
        raise RLPromptError(
            f"{run_dir} trained a per-input policy: each input has its own prompt "
            "(rlprompt.experiment.load_policy(run_dir).prompt(input))"
        )
    if result.kind == "discrete":
        if result.label_words is not None:
            from rlprompt.template import LabeledPrompt

            return LabeledPrompt(str(result.prompt), tuple(result.label_words))
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
