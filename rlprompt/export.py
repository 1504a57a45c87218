"""Export a run's best prompt: ``rlprompt export RUN_DIR --format json|txt|peft --out PATH``.

* ``json`` - a discrete prompt with its token ids, template, verbalizers, calibration, task
  model and metrics: everything needed to use it elsewhere;
* ``txt`` - the prompt text alone;
* ``peft`` - a soft prompt as a PEFT prompt-tuning adapter directory
  (``adapter_config.json`` + ``adapter_model.safetensors`` holding ``prompt_embeddings``)
  that ``peft.PeftModel.from_pretrained(base_model, PATH)`` loads. rlprompt's default soft
  layout (``task_model.soft_prompt_position: prefix``) is PEFT's: virtual tokens before the
  whole input, attention on, so the loaded adapter reproduces rlprompt's scores. Its
  ``rlprompt_export.json`` holds what the adapter cannot: template, verbalizers, calibration,
  task model and metrics, as the json export does.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Literal

from rlprompt.config import config_to_dict
from rlprompt.errors import ConfigError, RLPromptError
from rlprompt.io import atomic_write_bytes, json_safe, temp_path_for
from rlprompt.registry import TASK_MODELS
from rlprompt.rundir import check_output_path, is_run_dir, load_run, run_prompt
from rlprompt.template import has_demos_slot, render

FORMATS = ("json", "txt", "peft")


EXPORT_MARK = "rlprompt_export"
"""Key of JSON exports (and name of a marker file in adapter directories): the record of what
rlprompt export wrote (the format, the run, and a SHA-256 of every file or of the JSON's data),
so that it may replace exactly that, and only while nobody changed it."""
MARKER = f"{EXPORT_MARK}.json"
LEGACY_PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")
"""What an adapter directory of an older rlprompt (a marker without ``files``) held."""
SUFFIXES = {".json": "json", ".txt": "txt"}
"""A suffix of ``--out`` that says which format the file holds."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _data_hash(obj: Any) -> str:
    """SHA-256 of JSON data in canonical form (the same after re-indenting the file)."""
    return _sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def _file_hash(path: Path) -> str | None:
    try:
        return _sha256(path.read_bytes()) if path.is_file() and not path.is_symlink() else None
    except OSError:
        return None


def _check_out_path(out: Path, run_dir: Path, fmt: str) -> None:
    """Refuse a path whose suffix contradicts ``fmt``, the working directory or one holding it,
    the run itself, a path inside a run or holding the run, and links."""
    if not out.name or out.name in (".", ".."):
        raise RLPromptError(f"--out {out}: name a new file or directory to export to")
    resolved, source = out.resolve(), run_dir.resolve()
    if resolved == source:
        raise RLPromptError(
            f"--out {out} is the run directory itself, not a PEFT adapter directory; export never writes over a run"
        )
    if is_run_dir(resolved):
        raise RLPromptError(f"--out {out} is a run directory; export never writes over a run")
    if source in resolved.parents:
        raise RLPromptError(f"--out {out} is inside the run directory {run_dir}; export never writes over a run")
    if resolved in source.parents:
        raise RLPromptError(
            f"--out {out} holds the run directory {run_dir}; export never writes over a run "
            "(name a new file or directory)"
        )
    check_output_path(out, "--out")
    suffix_fmt = SUFFIXES.get(out.suffix.lower())
    if suffix_fmt is not None and suffix_fmt != fmt:
        shown = {"txt": "plain text", "json": "JSON", "peft": "a PEFT adapter directory"}[fmt]
        raise RLPromptError(
            f"--out {out} ends in {out.suffix} but --format {fmt} writes {shown}: name it "
            f"{out.with_suffix('' if fmt == 'peft' else '.' + fmt).name}, or use --format {suffix_fmt}"
        )
    if out.is_symlink():
        raise RLPromptError(
            f"--out {out} is a symbolic link; export writes only files and directories it creates (name a new path)"
        )
    if fmt == "peft" and out.exists() and not out.is_dir():
        raise RLPromptError(f"--out {out} is a file; a PEFT adapter is a directory")
    if fmt != "peft" and out.is_dir():
        raise RLPromptError(f"--out {out} is a directory; --format {fmt} writes a file")


def _not_ours(out: Path, why: str) -> RLPromptError:
    kind = "directory" if out.is_dir() else "file"
    return RLPromptError(
        f"--out {out}: the {kind} exists and {why}; export replaces only its own exports and "
        "never a file it did not write, even with --force (choose another --out, or move it away "
        "yourself)"
    )


def _check_file_target(out: Path, fmt: str, data: bytes, force: bool) -> None:
    """An existing json/txt ``out`` may be replaced if rlprompt export wrote it: a JSON export
    unchanged since (its record's hash), or changed with ``force``; a txt export holds no record,
    so only a file that already holds exactly this export is rewritten."""
    if not out.exists():
        return
    try:
        current = out.read_bytes()
    except OSError as exc:
        raise RLPromptError(f"cannot read --out {out}: {exc.strerror or exc}") from None
    if current == data:
        return  # the same export again
    if fmt == "txt":
        raise _not_ours(out, "rlprompt cannot tell that it wrote it (a txt export holds the prompt alone)")
    try:
        existing = json.loads(current.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        existing = None
    mark = existing.get(EXPORT_MARK) if isinstance(existing, dict) else None
    if not isinstance(mark, dict):
        raise _not_ours(out, "holds no rlprompt_export record (rlprompt did not write it)")
    body = {k: v for k, v in existing.items() if k != EXPORT_MARK}
    if mark.get("sha256") != _data_hash(body) and not force:
        raise RLPromptError(
            f"--out {out} is an rlprompt export that was changed since it was written; pass --force to replace it"
        )


def export_run(
    run_dir: str | os.PathLike[str],
    fmt: Literal["json", "txt", "peft"],
    out: str | os.PathLike[str],
    force: bool = False,
) -> Path:
    """Write the run's best prompt to ``out`` in ``fmt``; returns the path written.

    Only rlprompt's own exports are replaced: an existing ``out`` is replaced if an earlier
    export wrote it and nothing changed it since; ``force`` also replaces one that was changed
    (only the files its record lists). Files rlprompt did not write, the run's files, the
    working directory and any run directory are never written over."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose from {list(FORMATS)}")
    config, best = load_run(run_dir)
    out = Path(out)
    if best.kind == "soft" and fmt != "peft":
        raise RLPromptError(f"{run_dir} found a soft prompt: export it with --format peft (json/txt are for text)")
    if best.kind == "discrete" and fmt == "peft":
        raise RLPromptError(
            f"{run_dir} found a discrete prompt: export it with --format json or txt (peft adapters hold soft prompts)"
        )
    _check_out_path(out, Path(run_dir), fmt)
    if best.label_words is not None and fmt == "txt":
        raise RLPromptError(
            f"{run_dir} found label words {best.label_words}: a txt export holds the prompt alone, which "
            "would be read with the config's words; export --format json (the prompt with its "
            "verbalizers)"
        )
    if best.per_input is not None and fmt == "txt":
        raise RLPromptError(
            f"{run_dir} trained a per-input policy: each input has its own prompt, so there is no one "
            "prompt to write as text; export --format json records the policy, and "
            "rlprompt.experiment.load_policy(run_dir).prompt(input) gives an input's prompt"
        )
    if fmt == "txt":
        data = (str(best.prompt) + "\n").encode("utf-8")
    elif fmt == "json":
        body = json_safe(
            {
                "prompt": best.prompt,
                "token_ids": best.token_ids,
                **task_fields(config, best),
                **demonstration_fields(config, best),
                "metrics": best.metrics,
                "baseline": best.baseline,
                "agent": best.agent,
                "seed": best.seed,
            }
        )
        body = json.loads(json.dumps(body, allow_nan=False))  # as it reads back
        record = {"run": str(run_dir), "format": "json", "sha256": _data_hash(body)}
        data = (json.dumps({**body, EXPORT_MARK: record}, indent=2, sort_keys=True, allow_nan=False) + "\n").encode(
            "utf-8"
        )
    else:
        description = {
            **task_fields(config, best),
            "metrics": best.metrics,
            "agent": best.agent,
            "seed": best.seed,
            EXPORT_MARK: {"run": str(run_dir), "format": "peft"},
        }
        _check_peft_target(out, force)  # before the model is read
        return export_peft(config, run_prompt(run_dir, best), out, description, force=force)
    _check_file_target(out, fmt, data, force)
    atomic_write_bytes(out, data)
    return out


def task_fields(config: Any, best: Any = None) -> dict[str, Any]:
    """What a user of an exported prompt needs beside it to score as the run did: the task, its
    template, the family's fields (:meth:`rlprompt.families.base.TaskFamily.export_fields`: a
    classification task's verbalizers and calibration, a generation task's settings) and the task
    model."""
    family = config.family.export_fields(config, best)
    return {"task": config.task, "template": config.template, **family, "task_model": config_to_dict(config.task_model)}


def demonstration_fields(config: Any, best: Any) -> dict[str, Any]:
    """A demonstration run's structured prompt: ``demonstrations`` (the found block's pool ids
    and texts, the fixed instruction, the demonstration template, the pool, the label words) and
    ``rendered``: the template as the task model reads it with the block written in (the input
    fields left as placeholders). Nothing for instruction prompts. A per-input policy's run
    gives ``per_input`` instead: where its policy is and how it observes an input."""
    if best.per_input is not None:
        return {"per_input": best.per_input, "demo_template": config.demos.template, "pool": config.demos.pool}
    if not has_demos_slot(config.template) or best.prompt is None:
        return {}
    rendered = render(config.model_template, {"prompt": best.prompt})
    return {"demonstrations": best.demonstrations, "rendered": rendered}


def _peft_state(out: Path) -> tuple[set[str], list[str], list[str]]:
    """An existing adapter directory's recorded files, the entries it holds that rlprompt export
    did not record (the user's), and the recorded files changed since they were written."""
    try:
        marker = json.loads((out / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        marker = None
    mark = marker.get(EXPORT_MARK) if isinstance(marker, dict) else None
    if not isinstance(mark, dict):
        return set(), sorted(entry.name for entry in out.iterdir()), []
    files = mark.get("files")
    if files is None:  # an older rlprompt's marker: what it wrote, unverifiable
        recorded: dict[str, Any] = dict.fromkeys(LEGACY_PEFT_FILES)
        changed = sorted(name for name in recorded if (out / name).exists())
    elif isinstance(files, dict) and all(
        isinstance(k, str)
        and isinstance(v, str)
        and "/" not in k
        and "\\" not in k
        and k not in (".", "..", "", MARKER)
        for k, v in files.items()
    ):
        recorded = dict(files)
        changed = sorted(
            name for name, digest in recorded.items() if (out / name).exists() and _file_hash(out / name) != digest
        )
    else:  # not a record rlprompt wrote
        return set(), sorted(entry.name for entry in out.iterdir()), []
    foreign = sorted(entry.name for entry in out.iterdir() if entry.name not in recorded and entry.name != MARKER)
    return set(recorded) | {MARKER}, foreign, changed


def _check_peft_target(out: Path, force: bool) -> None:
    """An adapter directory is written where nothing is, into an empty directory, or over an
    earlier export: unchanged and alone, it is replaced; holding other files (or changed files)
    only with ``force``, which replaces the export's files and keeps the others."""
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not (out / MARKER).is_file():
        raise _not_ours(out, f"holds no {MARKER} (rlprompt did not write it)")
    recorded, foreign, changed = _peft_state(out)
    if len(recorded) <= 1:
        raise _not_ours(out, f"its {MARKER} is not an rlprompt export record")
    clash = sorted(set(foreign) & {*LEGACY_PEFT_FILES, MARKER})
    if clash:
        raise _not_ours(out, f"holds {', '.join(clash)}, which rlprompt export did not record")
    if (foreign or changed) and not force:
        parts = ([f"files rlprompt export did not write ({', '.join(foreign[:5])})"] if foreign else []) + (
            [f"export files changed since ({', '.join(changed)})"] if changed else []
        )
        raise RLPromptError(
            f"--out {out} is an earlier export that now holds {' and '.join(parts)}; pass --force "
            "to replace the export's own files (every other file stays)"
        )


def export_peft(config: Any, soft_prompt: Any, out: Path, description: dict[str, Any], force: bool = False) -> Path:
    """Write ``soft_prompt`` ``[n, hidden]`` as a PEFT prompt-tuning adapter directory. Its
    ``rlprompt_export.json`` marks it as rlprompt's, lists the files written (with SHA-256) and
    holds ``description`` (the run's task fields and metrics: the adapter alone does not say
    how its scores are read).

    The adapter is written into a temp sibling and renamed in. An earlier export at ``out``
    (see :func:`_check_peft_target`) is replaced as a whole when it holds only its own files,
    and file by file (the others kept) when it holds the user's files too."""
    import torch
    from peft import PromptTuningConfig, PromptTuningInit
    from safetensors.torch import save_file
    from transformers import AutoConfig

    from rlprompt.task_models.loading import resolve_name_or_path

    _check_peft_target(out, force)
    tm = config.task_model
    task_type = TASK_MODELS[tm.kind].model_class.peft_task_type
    if task_type is None:
        raise RLPromptError(f"{tm.kind} runs score with parts a PEFT adapter does not hold; export needs another kind")
    if getattr(tm, "soft_prompt_position", "prefix") != "prefix":
        raise RLPromptError(
            "PEFT adapters prepend virtual tokens to the input; this run put its soft prompt at "
            "the template slot (task_model.soft_prompt_position=template), which PEFT cannot express"
        )
    path = resolve_name_or_path(tm.name_or_path, tm.kind)
    model_config = AutoConfig.from_pretrained(path)
    tensor = torch.as_tensor(soft_prompt).detach().float().cpu().contiguous()
    peft_config = PromptTuningConfig(
        task_type=task_type,
        num_virtual_tokens=int(tensor.shape[0]),
        token_dim=int(tensor.shape[1]),
        num_transformer_submodules=1,
        num_attention_heads=int(getattr(model_config, "num_attention_heads", 1)),
        num_layers=int(getattr(model_config, "num_hidden_layers", 1)),
        prompt_tuning_init=PromptTuningInit.RANDOM,
        base_model_name_or_path=path,  # "embedded"/"toy:" names resolved: AutoPeftModel can load it
    )
    tmp = temp_path_for(out)
    try:
        tmp.mkdir(parents=True)
        peft_config.save_pretrained(str(tmp))
        save_file({"prompt_embeddings": tensor}, str(tmp / "adapter_model.safetensors"))
        files = {entry.name: _file_hash(entry) for entry in sorted(tmp.iterdir())}
        if any(digest is None for digest in files.values()):
            raise RLPromptError(f"PEFT wrote a directory into the adapter ({sorted(files)}); export cannot record it")
        mark = {**description[EXPORT_MARK], "files": files}
        (tmp / MARKER).write_text(json.dumps({**description, EXPORT_MARK: mark}, indent=2) + "\n", encoding="utf-8")
        _move_in(tmp, out, force)
    except OSError as exc:
        raise RLPromptError(f"cannot write the adapter to {out}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the temp sibling: rlprompt's own
    return out


def _move_in(tmp: Path, out: Path, force: bool) -> None:
    """Put the adapter written in ``tmp`` at ``out``, replacing only an earlier export's files."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        try:
            os.replace(tmp, out)  # a new path, or over an empty directory
        except OSError as exc:
            raise RLPromptError(
                f"cannot write the adapter to {out}: {exc.strerror or exc} (did something else write there meanwhile?)"
            ) from None
        return
    recorded, foreign, changed = _peft_state(out)
    if not foreign and not changed:
        # the earlier export alone: swap the directories, then delete its recorded files (checked again
        # once it is out of the way: a file added meanwhile sends it back and stops the export)
        old = temp_path_for(out)
        os.replace(out, old)
        again_recorded, again_foreign, again_changed = _peft_state(old)
        if again_foreign or again_changed or again_recorded != recorded:
            os.replace(old, out)
            raise RLPromptError(f"--out {out} changed while the export was written; nothing was replaced, run it again")
        os.replace(tmp, out)
        for name in recorded:
            (old / name).unlink(missing_ok=True)
        try:
            old.rmdir()
        except OSError:
            raise RLPromptError(
                f"the adapter was written to {out}, but a file appeared in the earlier export meanwhile; "
                f"it is kept in {old}"
            ) from None
        return
    _check_peft_target(out, force)  # again: --force is needed to keep the others and replace ours
    written = {entry.name for entry in tmp.iterdir()}
    for name in sorted(recorded - written):  # files of the earlier export this one does not write
        (out / name).unlink(missing_ok=True)
    for entry in sorted(tmp.iterdir(), key=lambda p: p.name == MARKER):  # the marker last
        os.replace(entry, out / entry.name)
