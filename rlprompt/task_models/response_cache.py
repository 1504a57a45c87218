"""An on-disk cache of API answers (SQLite): a request already answered is never paid for twice.

Keys are digests of (base_url, endpoint, request body), the body holding the model name and
every generation setting, so a cached answer is exactly the one the request would get from a
deterministic server. Each answer is committed as it arrives (WAL journal), so a run killed
mid-way loses none, and a resumed or repeated run reads them back instead of re-sending.
The API key is not part of the key and never stored.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from rlprompt.errors import ConfigError


def request_key(base_url: str, endpoint: str, body: dict[str, Any]) -> str:
    """The cache key of one request (stable across processes and machines)."""
    canonical = json.dumps(
        {"base_url": base_url.rstrip("/"), "endpoint": endpoint, "body": body},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class ResponseCache:
    """``get(key)`` / ``put(key, answer)`` over one SQLite file, safe across threads and processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, answer TEXT NOT NULL)")
            self._db.commit()
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(
                f"task_model.response_cache: cannot open {self.path} as an SQLite cache ({exc})"
            ) from None
        self._lock = threading.Lock()

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT answer FROM answers WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, answer: dict[str, Any]) -> None:
        data = json.dumps(answer, ensure_ascii=False)
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO answers (key, answer) VALUES (?, ?)", (key, data))
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
