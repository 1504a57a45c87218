"""Progress of the work between and after training: loading, selection, evaluation.

Code that does such work names its stage and each unit of it::

    with progress.stage("selection on train+dev", total=len(candidates) * len(splits)):
        for prompt in candidates:
            progress.step(f"{prompt!r} on train")
            ...

Nothing is shown unless a reporter is active (:func:`reporting`): the CLI activates
:class:`RichReporter` when stderr is a terminal (or ``progress=True``), so library calls and
tests stay silent. A reporter is a :class:`Reporter`: anything with ``start``, ``step`` and
``stop`` (tests record the stages with a list).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, Protocol


class Reporter(Protocol):
    """Receives the stages and their steps."""

    def start(self, description: str, total: int | None) -> None:
        """A stage begins; ``total`` units of work (None: unknown)."""

    def step(self, detail: str) -> None:
        """The next unit of the current stage begins; ``detail`` says what it scores."""

    def stop(self) -> None:
        """The current stage ended."""


_reporter: ContextVar[Reporter | None] = ContextVar("rlprompt_progress_reporter", default=None)


@contextlib.contextmanager
def reporting(reporter: Reporter | None) -> Iterator[None]:
    """Send the stages of the block to ``reporter`` (None: show nothing)."""
    token = _reporter.set(reporter)
    try:
        yield
    finally:
        _reporter.reset(token)


@contextlib.contextmanager
def stage(description: str, total: int | None = None) -> Iterator[None]:
    """A stage of ``total`` steps (shown only under an active reporter)."""
    reporter = _reporter.get()
    if reporter is None:
        yield
        return
    reporter.start(description, total)
    try:
        yield
    finally:
        reporter.stop()


def step(detail: str) -> None:
    """The next unit of the current stage begins."""
    reporter = _reporter.get()
    if reporter is not None:
        reporter.step(detail)


def shorten(text: Any, limit: int = 40) -> str:
    """A prompt as a short quoted string for a progress line."""
    from rlprompt.template import LabeledPrompt

    if isinstance(text, LabeledPrompt):
        shown = text.describe()
    else:
        shown = repr(text) if isinstance(text, str) else "<soft prompt>"
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"


class RichReporter:
    """One line per stage on stderr: description, a bar over its steps, ``i/total``, what is
    being scored now and the elapsed time; the finished stage stays as a line."""

    def __init__(self) -> None:
        self._progress: Any = None
        self._task: Any = None
        self._done = 0
        self._started = 0.0

    def start(self, description: str, total: int | None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.stop()
        columns = [
            SpinnerColumn(finished_text="done"),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
        ]
        self._progress = Progress(*columns, console=Console(stderr=True), transient=False)
        self._progress.start()
        self._task = self._progress.add_task(description, total=total, detail="")
        self._done = -1
        self._started = time.perf_counter()

    def step(self, detail: str) -> None:
        if self._progress is None:
            return
        self._done += 1
        self._progress.update(self._task, completed=max(self._done, 0), detail=detail)

    def stop(self) -> None:
        if self._progress is None:
            return
        total = self._progress.tasks[0].total
        self._progress.update(self._task, completed=total if total is not None else self._done + 1, detail="")
        self._progress.stop()
        self._progress = None


class RecordingReporter:
    """Keeps ``(description, total, [details])`` of each stage (for tests and scripts)."""

    def __init__(self) -> None:
        self.stages: list[tuple[str, int | None, list[str]]] = []

    def start(self, description: str, total: int | None) -> None:
        self.stages.append((description, total, []))

    def step(self, detail: str) -> None:
        if self.stages:
            self.stages[-1][2].append(detail)

    def stop(self) -> None:
        pass
