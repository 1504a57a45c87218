"""File writes that a kill cannot corrupt, and reads that fail with one clear error.

Every result file is written to a temp file in its own directory (named ``.<name>.<random>.tmp``),
flushed, fsynced and renamed over the target, so a reader sees the old file or the new one,
never half of either. Files get the permissions the user's umask allows (``mkstemp`` alone
would make them 0600). :func:`remove_stale_temp_files` deletes the temp files a killed
process left behind.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from rlprompt.errors import RLPromptError

_TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]{6,}\.tmp$")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to a temp file in the same directory, fsync it, then rename over ``path``."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise RLPromptError(f"cannot write {target}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise RLPromptError(f"cannot write {target}: {exc.strerror or exc}") from None
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def json_safe(obj: Any) -> Any:
    """``obj`` with non-finite floats replaced by None: JSON has no NaN or infinity."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as strict JSON (NaN/inf become null), atomically."""
    atomic_write_text(path, json.dumps(json_safe(obj), indent=2, sort_keys=True, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike[str], what: str = "file") -> Any:
    """Parse a JSON file; a missing, unreadable or truncated file is one :class:`RLPromptError`."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RLPromptError(f"{what} not found: {p}") from None
    except UnicodeDecodeError:
        raise RLPromptError(f"{what} {p} is not UTF-8 text (corrupt?)") from None
    except OSError as exc:
        raise RLPromptError(f"cannot read {what} {p}: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RLPromptError(f"{what} {p} is not valid JSON (truncated or corrupt: {exc.msg} at line {exc.lineno})") from None


def remove_stale_temp_files(directory: str | os.PathLike[str]) -> list[Path]:
    """Delete the ``.<name>.<random>.tmp`` files (and ``.tmp`` directories) a killed write left in ``directory``."""
    import shutil

    removed = []
    root = Path(directory)
    if not root.is_dir():
        return removed
    for entry in root.iterdir():
        if _TEMP.match(entry.name) or (entry.is_dir() and entry.name.endswith(".tmp") and entry.name.startswith(".")):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def cache_dir() -> Path:
    """rlprompt's cache (converted models, response caches): ``$RLPROMPT_CACHE`` or ``~/.cache/rlprompt``."""
    return Path(os.environ.get("RLPROMPT_CACHE", Path.home() / ".cache" / "rlprompt")).expanduser()


def temp_path_for(path: str | os.PathLike[str]) -> Path:
    """A hidden temp name beside ``path`` that :func:`remove_stale_temp_files` recognises."""
    target = Path(path)
    return target.with_name(f".{target.name}.{os.getpid()}x{os.urandom(3).hex()}.tmp")
