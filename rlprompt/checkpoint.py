"""Checkpoints without pickle: tensors in safetensors, everything else as JSON in its header.

A checkpoint is one ``.safetensors`` file (replaced atomically). Tensors and numpy arrays of
the saved tree are stored as safetensors tensors; the tree around them (dicts, lists, tuples,
numbers, strings, bytes, non-finite floats, and the few dataclasses registered with
:func:`checkpoint_type`) is JSON in the file's metadata. Loading parses JSON and tensors and
constructs only those registered dataclasses: no code from the file ever runs, unlike
``torch.load(weights_only=False)`` on a pickle.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, TypeVar

from rlprompt.errors import RLPromptError
from rlprompt.io import atomic_write_bytes

FORMAT = "rlprompt-checkpoint"
VERSION = "1"
_TYPES: dict[str, type] = {}
T = TypeVar("T", bound=type)


class CheckpointError(RLPromptError):
    """A checkpoint file is missing, truncated, corrupt or not an rlprompt checkpoint."""


def checkpoint_type(cls: T) -> T:
    """Class decorator: let instances of this dataclass be saved in (and rebuilt from) checkpoints."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__name__} must be a dataclass to be stored in checkpoints")
    _TYPES[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return cls


class _Encoder:
    def __init__(self) -> None:
        self.tensors: dict[str, Any] = {}

    def _store(self, tensor: Any) -> str:
        key = f"t{len(self.tensors)}"
        self.tensors[key] = tensor.detach().cpu().contiguous().clone()
        return key

    def encode(self, obj: Any, where: str = "$") -> Any:
        import numpy as np
        import torch

        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, int):
            return obj
        if isinstance(obj, float):
            return obj if math.isfinite(obj) else {"__float__": repr(obj)}
        if isinstance(obj, torch.Tensor):
            return {"__tensor__": self._store(obj)}
        if isinstance(obj, np.ndarray):
            if obj.dtype.kind not in "biuf":
                raise TypeError(f"{where}: numpy arrays of dtype {obj.dtype} cannot be checkpointed")
            stored = obj.astype(np.int64) if obj.dtype.kind == "u" and obj.dtype.itemsize > 1 else obj
            return {"__ndarray__": self._store(torch.from_numpy(np.ascontiguousarray(stored))), "dtype": str(obj.dtype)}
        if isinstance(obj, np.generic):
            return {"__npscalar__": str(obj.dtype), "value": self.encode(obj.item(), where)}
        if isinstance(obj, bytes):
            return {"__bytes__": base64.b64encode(obj).decode("ascii")}
        if isinstance(obj, tuple):
            return {"__tuple__": [self.encode(v, f"{where}[{i}]") for i, v in enumerate(obj)]}
        if isinstance(obj, list):
            return [self.encode(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        if isinstance(obj, dict):
            if all(isinstance(k, str) and not k.startswith("__") for k in obj):
                return {k: self.encode(v, f"{where}.{k}") for k, v in obj.items()}
            return {"__dict__": [[self.encode(k, where), self.encode(v, f"{where}[{k!r}]")] for k, v in obj.items()]}
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            name = f"{type(obj).__module__}.{type(obj).__qualname__}"
            if name not in _TYPES:
                raise TypeError(f"{where}: {name} is not registered with @checkpoint_type")
            fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
            return {"__dataclass__": name, "fields": self.encode(fields, where)}
        raise TypeError(f"{where}: a {type(obj).__name__} cannot be stored in a checkpoint")


def _decode(obj: Any, tensors: dict[str, Any]) -> Any:
    import numpy as np

    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        return tensors[obj["__ndarray__"]].numpy().astype(np.dtype(obj["dtype"]), copy=True)
    if "__npscalar__" in obj:
        return np.dtype(obj["__npscalar__"]).type(obj["value"])
    if "__float__" in obj:
        return float(obj["__float__"])
    if "__bytes__" in obj:
        return base64.b64decode(obj["__bytes__"])
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if "__dict__" in obj:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__dict__"]}
    if "__dataclass__" in obj:
        cls = _TYPES.get(obj["__dataclass__"])
        if cls is None:
            raise CheckpointError(f"checkpoint holds an unknown type {obj['__dataclass__']!r}")
        return cls(**_decode(obj["fields"], tensors))
    return {k: _decode(v, tensors) for k, v in obj.items()}


def save_checkpoint(path: str | os.PathLike[str], tree: Any) -> None:
    """Write ``tree`` to ``path`` as one safetensors file, atomically."""
    from safetensors.torch import save

    encoder = _Encoder()
    header = json.dumps(encoder.encode(tree), allow_nan=False, separators=(",", ":"))
    atomic_write_bytes(path, save(encoder.tensors, metadata={"format": FORMAT, "version": VERSION, "tree": header}))


def load_checkpoint(path: str | os.PathLike[str]) -> Any:
    """Read a tree written by :func:`save_checkpoint`; anything else is a :class:`CheckpointError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {p}") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {p}: {exc.strerror or exc}") from None
    why = "truncated or corrupt"
    if data[:2] == b"\x80\x02" or data[:2] == b"PK":  # a pickle / torch.save zip
        why = "a pickle (torch.save); rlprompt never unpickles checkpoints, because a pickle can run code"
    try:
        metadata = _header_metadata(data)
        tensors = load(data)
    except (SafetensorError, ValueError, UnicodeDecodeError, json.JSONDecodeError, OverflowError, RecursionError):
        raise CheckpointError(f"{p} is not an rlprompt checkpoint ({why})") from None
    if metadata.get("format") != FORMAT or "tree" not in metadata:
        raise CheckpointError(f"{p} is a safetensors file but not an rlprompt checkpoint")
    if metadata.get("version") != VERSION:
        raise CheckpointError(f"{p} is checkpoint format v{metadata.get('version')}; this rlprompt reads v{VERSION}")
    try:
        return _decode(json.loads(metadata["tree"]), tensors)
    except (KeyError, TypeError, ValueError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{p} is a corrupt rlprompt checkpoint ({type(exc).__name__}: {exc})") from None


def _header_metadata(data: bytes) -> dict[str, str]:
    if len(data) < 8:
        raise ValueError("too short")
    size = int.from_bytes(data[:8], "little")
    if size <= 0 or 8 + size > len(data):
        raise ValueError("bad header size")
    header = json.loads(data[8 : 8 + size].decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("bad header")
    return dict(header.get("__metadata__") or {})
