"""Rows of scalars to ``metrics.csv`` and TensorBoard: shared by prompt search and fine-tuning."""

from __future__ import annotations

import csv
import io
import math
import os
import time
from pathlib import Path
from typing import Any

from rlprompt.io import atomic_write_text


class Logger:
    """Rows of scalars to ``metrics.csv`` (header grows with new keys) and TensorBoard.

    Every row gets a ``time_s`` column (seconds since the run began, resumed runs included).
    A resumed run passes ``keep_iterations``: rows logged after its checkpoint are dropped (the
    resumed run logs them again) and TensorBoard events from that point on are purged.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        tensorboard: bool = True,
        keep_iterations: int | None = None,
    ) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.rows: list[dict[str, Any]] = []
        self._clock = time.perf_counter
        existing = self.directory / "metrics.csv" if self.directory is not None else None
        if existing is not None and existing.is_file():  # a resumed run appends to its rows
            with existing.open(newline="") as handle:
                self.rows = list(csv.DictReader(handle))
            if keep_iterations is not None:
                self.rows = [r for r in self.rows if int(r["iteration"]) <= keep_iterations]
                self._write_csv()
        last_time = float(self.rows[-1].get("time_s") or 0.0) if self.rows else 0.0
        self._start = self._clock() - last_time
        purge_step = None
        if keep_iterations is not None:  # events past the last kept row were logged after the checkpoint
            last = self.rows[-1] if self.rows else {}
            purge_step = int(float(last["prompt_evals"])) + 1 if "prompt_evals" in last else 0
        self._writer = None
        if self.directory is not None and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.directory / "tensorboard"), purge_step=purge_step)
            except ImportError:  # pragma: no cover - tensorboard is a dependency
                self._writer = None

    def elapsed(self) -> float:
        """Seconds since the run began (time of killed sessions up to their last kept row included)."""
        return self._clock() - self._start

    def record(self, row: dict[str, float], step: int) -> None:
        row = {**row, "time_s": round(self._clock() - self._start, 3)}
        self.rows.append(row)
        if self._writer is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self._writer.add_scalar(key, value, step)
        if self.directory is not None:
            self._write_csv()

    def _write_csv(self) -> None:
        keys: list[str] = []
        for row in self.rows:
            keys.extend(k for k in row if k not in keys)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=keys, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        assert self.directory is not None
        atomic_write_text(self.directory / "metrics.csv", buffer.getvalue())

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
