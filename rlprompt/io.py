"""File writes that a kill cannot corrupt, and reads that fail with one clear error.

Every result file is written to a temp file in its own directory (named ``.<name>.<random>.tmp``),
flushed, fsynced and renamed over the target, so a reader sees the old file or the new one,
never half of either. Files get the permissions the user's umask allows (``mkstemp`` alone
would make them 0600). :func:`remove_stale_temp_files` deletes the temp files a killed
process left behind.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from rlprompt.errors import RLPromptError

_TEMP_OF = re.compile(r"^\.(.+)\.(?:[a-z0-9_]{8}|\d+x[0-9a-f]{6})\.tmp$")
"""A temp name of :func:`atomic_write_bytes` or :func:`temp_path_for`; group 1 is the target's name."""


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


def atomic_write_json(path: str | os.PathLike[str], obj: Any, compact: bool = False) -> None:
    """Write ``obj`` as strict JSON (NaN/inf become null), atomically; indented, or on one line
    without spaces when ``compact`` (large records of numbers)."""
    layout: dict[str, Any] = {"separators": (",", ":")} if compact else {"indent": 2}
    atomic_write_text(path, json.dumps(json_safe(obj), sort_keys=True, allow_nan=False, **layout) + "\n")


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
        raise RLPromptError(
            f"{what} {p} is not valid JSON (truncated or corrupt: {exc.msg} at line {exc.lineno})"
        ) from None
    except RecursionError:
        raise RLPromptError(f"{what} {p} is nested too deeply to be an rlprompt file") from None


def remove_stale_temp_files(directory: str | os.PathLike[str], names: Iterable[str] | None = None) -> list[Path]:
    """Delete the ``.<name>.<random>.tmp`` files (and ``.tmp`` directories) a killed write left in
    ``directory``; with ``names``, only the temp files of those names (the files rlprompt writes
    there), so a user's own ``.notes.backup1.tmp`` is never touched."""
    import shutil

    removed: list[Path] = []
    root = Path(directory)
    if not root.is_dir():
        return removed
    wanted = None if names is None else set(names)
    for entry in root.iterdir():
        match = _TEMP_OF.match(entry.name)
        if match is None or (wanted is not None and match.group(1) not in wanted):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


# ---------------------------------------------------------------- one writer per directory

LOCK_FILE = ".rlprompt.lock"
"""The file in a directory that :func:`directory_lock` flocks; it holds the holder's details."""

_HELD: dict[tuple[int, int], list[int]] = {}  # (st_dev, st_ino) of a locked directory -> [thread id, depth]
_HELD_GUARD = threading.Lock()


def _directory_key(directory: Path) -> tuple[int, int]:
    try:
        st = os.stat(directory)
    except OSError as exc:
        raise RLPromptError(f"cannot lock {directory}: {exc.strerror or exc}") from None
    return st.st_dev, st.st_ino


def lock_holder(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """What the holder of ``directory``'s lock wrote about itself (pid, host, command, since), if readable."""
    try:
        info = json.loads((Path(directory) / LOCK_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return info if isinstance(info, dict) else None


def _busy(directory: Path, what: str) -> RLPromptError:
    info = lock_holder(directory)
    if info:
        who = (
            f"pid {info.get('pid')} on {info.get('host')}, since {info.get('since')}: "
            f"{' '.join(str(info.get('command', '?')).split())[:300]}"
        )
    else:
        who = "its details are not written yet"
    return RLPromptError(
        f"{what} {directory} is in use by another rlprompt process ({who}); one process writes a "
        "directory at a time: wait for it to finish or stop it, then rerun"
    )


@contextlib.contextmanager
def directory_lock(
    directory: str | os.PathLike[str], what: str = "directory", command: str | None = None
) -> Iterator[None]:
    """Hold ``directory`` (which must exist) as its only writer while the block runs: an exclusive
    ``flock`` on ``<directory>/.rlprompt.lock``, into which the holder's pid, host, command and
    start time are written. A second writer, in another process or another thread, gets one
    :class:`RLPromptError` naming the holder; the thread that holds the lock may take it again
    (nested uses in one call chain share it). Leaving the block empties the file and releases it."""
    import fcntl
    import shlex
    import socket
    import sys
    import time

    root = Path(directory)
    key = _directory_key(root)
    me = threading.get_ident()
    with _HELD_GUARD:
        held = _HELD.get(key)
        if held is not None and held[0] == me:
            held[1] += 1
    if held is not None and held[0] == me:
        try:
            yield
        finally:
            with _HELD_GUARD:
                held[1] -= 1
        return
    path = root / LOCK_FILE
    for _ in range(10):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise RLPromptError(f"cannot lock {what} {root}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _busy(root, what) from None
        except OSError as exc:
            os.close(fd)
            raise RLPromptError(f"cannot lock {what} {root}: {exc.strerror or exc}") from None
        try:  # the file may have been removed (by a failed start cleaning up) between open and flock
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except OSError:
            same = False
        if same:
            break
        os.close(fd)
    else:  # pragma: no cover - ten removals in a row
        raise RLPromptError(f"cannot lock {what} {root}: its lock file keeps disappearing")
    if command is None:
        command = shlex.join(
            ["rlprompt" if Path(sys.argv[0]).name in ("rlprompt", "cli.py") else sys.argv[0], *sys.argv[1:]]
        )
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command,
        "since": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
    except OSError:
        pass  # the lock holds without its details
    with _HELD_GUARD:
        _HELD[key] = [me, 1]
    try:
        yield
    finally:
        with _HELD_GUARD:
            _HELD.pop(key, None)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # releases the flock


def cache_dir() -> Path:
    """rlprompt's cache (converted models, response caches): ``$RLPROMPT_CACHE`` or ``~/.cache/rlprompt``."""
    return Path(os.environ.get("RLPROMPT_CACHE", Path.home() / ".cache" / "rlprompt")).expanduser()


def temp_path_for(path: str | os.PathLike[str]) -> Path:
    """A hidden temp name beside ``path`` that :func:`remove_stale_temp_files` recognises."""
    target = Path(path)
    return target.with_name(f".{target.name}.{os.getpid()}x{os.urandom(3).hex()}.tmp")
