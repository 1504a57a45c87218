"""Callbacks of a training loop: called after each learning iteration; ``on_step`` returning
False stops training (Stable-Baselines3's contract)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rlprompt.agents.base import Agent


class Callback:
    """Called after every learning iteration; return False from ``on_step`` to stop."""

    def on_start(self, agent: Agent) -> None:
        """Before the first iteration."""

    def on_step(self, agent: Agent) -> bool:
        return True

    def on_end(self, agent: Agent) -> None:
        """After the last iteration."""


class StopOnReward(Callback):
    """Stop once the best mean train reward reaches ``threshold``."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def on_step(self, agent: Agent) -> bool:
        best = agent.tracker.best()
        return best is None or best.mean_reward < self.threshold


class ProgressBar(Callback):
    """A rich progress bar on stderr: budget spent, best train reward, LM calls, ETA."""

    def __init__(self, limits: dict[str, float | None], description: str) -> None:
        self.limits = limits
        self.description = description
        self._progress: Any = None

    def on_start(self, agent: Agent) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("best {task.fields[best]}"),
            TextColumn("LM calls {task.fields[lm_calls]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(self.description, total=1000, best="-", lm_calls=0)
        self._update(agent)

    def _update(self, agent: Agent) -> None:
        best = agent.tracker.best()
        spent = agent.spent()
        fraction = min(1.0, max(spent[k] / v for k, v in self.limits.items() if v))
        calls = f"{spent['lm_calls']}"
        if "requests" in spent:  # a served model: what it cost so far
            calls += f" | requests {int(spent['requests'])} tokens {int(spent['tokens'])}"
            if self.limits.get("cost") or spent["cost"]:
                calls += f" cost {spent['cost']:.4f}"
        self._progress.update(
            self._task, completed=int(1000 * fraction), best=f"{best.mean_reward:+.4f}" if best else "-", lm_calls=calls
        )

    def on_step(self, agent: Agent) -> bool:
        self._update(agent)
        return True

    def on_end(self, agent: Agent) -> None:
        if self._progress is not None:
            self._update(agent)
            self._progress.stop()
