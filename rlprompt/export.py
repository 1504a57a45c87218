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

import json
import os
import shutil
from pathlib import Path
from typing import Any, Literal

from rlprompt.config import config_to_dict
from rlprompt.errors import ConfigError, RLPromptError
from rlprompt.io import atomic_write_json, atomic_write_text, temp_path_for
from rlprompt.registry import TASK_MODELS
from rlprompt.rundir import load_run, run_prompt

FORMATS = ("json", "txt", "peft")


EXPORT_MARK = "rlprompt_export"
"""Key of JSON exports (and name of a marker file in adapter directories): what rlprompt
wrote, and so may replace without ``force``."""


def _check_target(out: Path, run_dir: Path, fmt: str, force: bool) -> None:
    """Refuse to replace a run's own files, or (without ``force``) anything rlprompt did not export."""
    if not out.name or out.resolve() == Path.cwd().resolve():
        raise RLPromptError(f"--out {out}: name a new file or directory to export to")
    resolved = out.resolve()
    source = run_dir.resolve()
    if resolved == source:
        raise RLPromptError(f"--out {out} is the run directory itself, not a PEFT adapter directory; "
                            "export never writes over a run")  # fmt: skip
    if source in resolved.parents:
        raise RLPromptError(f"--out {out} is inside the run directory {run_dir}; export never writes over a run")
    if not out.exists() and not out.is_symlink():
        return
    ours = False
    if fmt == "json" and out.is_file():
        try:
            ours = EXPORT_MARK in json.loads(out.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError, TypeError):
            ours = False
    elif fmt == "peft" and out.is_dir():
        ours = (out / f"{EXPORT_MARK}.json").is_file()
    if fmt == "peft" and out.exists() and not out.is_dir():
        raise RLPromptError(f"--out {out} is a file; a PEFT adapter is a directory")
    if fmt != "peft" and out.is_dir():
        raise RLPromptError(f"--out {out} is a directory; --format {fmt} writes a file")
    if not ours and not force:
        kind = "directory" if out.is_dir() else "file"
        raise RLPromptError(f"--out {out}: the {kind} exists and was not written by rlprompt export; "
                            "pass --force to replace it")  # fmt: skip


def export_run(
    run_dir: str | os.PathLike[str],
    fmt: Literal["json", "txt", "peft"],
    out: str | os.PathLike[str],
    force: bool = False,
) -> Path:
    """Write the run's best prompt to ``out`` in ``fmt``; returns the path written.

    An existing ``out`` is replaced only if an earlier export wrote it, or with ``force``;
    files of the run itself are never replaced."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose from {list(FORMATS)}")
    config, best = load_run(run_dir)
    out = Path(out)
    if best.kind == "soft" and fmt != "peft":
        raise RLPromptError(f"{run_dir} found a soft prompt: export it with --format peft (json/txt are for text)")
    if best.kind == "discrete" and fmt == "peft":
        raise RLPromptError(f"{run_dir} found a discrete prompt: export it with --format json or txt "
                            "(peft adapters hold soft prompts)")  # fmt: skip
    _check_target(out, Path(run_dir), fmt, force)
    if fmt == "txt":
        atomic_write_text(out, str(best.prompt) + "\n")
        return out
    if fmt == "json":
        atomic_write_json(out, {
            "prompt": best.prompt,
            "token_ids": best.token_ids,
            **task_fields(config),
            "metrics": best.metrics,
            "baseline": best.baseline,
            "agent": best.agent,
            "seed": best.seed,
            EXPORT_MARK: {"run": str(run_dir), "format": "json"},
        })  # fmt: skip
        return out
    description = {**task_fields(config), "metrics": best.metrics, "agent": best.agent, "seed": best.seed,
                   EXPORT_MARK: {"run": str(run_dir), "format": "peft"}}  # fmt: skip
    return export_peft(config, run_prompt(run_dir, best), out, description)


def task_fields(config: Any) -> dict[str, Any]:
    """What a user of an exported prompt needs beside it to score as the run did: the task, its
    template, its verbalizers and calibration (a classification task; with ``calibration: batch``
    a single input's class log-probs minus ``metrics["train"]["class_shift"]``) or its generation
    settings, and the task model."""
    family = ({"verbalizers": config.verbalizers, "calibration": config.calibration}
              if config.task == "classification" else {"generation": config_to_dict(config.generation)})  # fmt: skip
    return {"task": config.task, "template": config.template, **family,
            "task_model": config_to_dict(config.task_model)}  # fmt: skip


def export_peft(config: Any, soft_prompt: Any, out: Path, description: dict[str, Any]) -> Path:
    """Write ``soft_prompt`` ``[n, hidden]`` as a PEFT prompt-tuning adapter directory. Its
    ``rlprompt_export.json`` marks it as rlprompt's and holds ``description`` (the run's task
    fields and metrics: the adapter alone does not say how its scores are read)."""
    import torch
    from peft import PromptTuningConfig, PromptTuningInit
    from safetensors.torch import save_file
    from transformers import AutoConfig

    from rlprompt.task_models.loading import resolve_name_or_path

    tm = config.task_model
    task_type = TASK_MODELS[tm.kind].model_class.peft_task_type
    if task_type is None:
        raise RLPromptError(f"{tm.kind} runs score with parts a PEFT adapter does not hold; export needs another kind")
    if getattr(tm, "soft_prompt_position", "prefix") != "prefix":
        raise RLPromptError("PEFT adapters prepend virtual tokens to the input; this run put its soft prompt at "
                            "the template slot (task_model.soft_prompt_position=template), which PEFT cannot express")  # fmt: skip
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
        (tmp / f"{EXPORT_MARK}.json").write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
        if out.exists() or out.is_symlink():
            if out.is_dir() and not out.is_symlink():
                shutil.rmtree(out)
            else:
                out.unlink()
        os.replace(tmp, out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RLPromptError(f"cannot write the adapter to {out}: {exc.strerror or exc}") from None
    return out
