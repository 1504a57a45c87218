"""Budgets as hard caps: every unit of cost is charged *before* it is spent.

A :class:`Budget` holds what training may still spend (prompt evaluations, LM calls, env
steps, and for served models requests, tokens and money). Whoever is about to spend calls
:meth:`Budget.charge`; when the charge would cross a limit it raises :class:`BudgetExhausted`
and nothing is spent, so a run never pays more than its budget. The agent's training loop
catches it and stops, dropping the unfinished iteration's update (its scores were paid and
stay in the prompt tracker).

Units that are only known after a call (tokens and money of a served model's answer) are
charged when the answer arrives: those budgets can be exceeded by at most one batch of
requests, never more.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

BUDGET_KEYS = ("prompt_evals", "lm_calls", "steps", "requests", "tokens", "cost")
API_KEYS = ("requests", "tokens", "cost")
"""The budgets only served task models spend (see ``rlprompt.task_models.openai_api``)."""


class BudgetExhausted(Exception):
    """The next charge would exceed a budget (control flow, not a user error)."""

    def __init__(self, key: str, limit: float, spent: float, amount: float) -> None:
        super().__init__(f"{key} budget of {limit:g} reached ({spent:g} spent, {amount:g} more asked)")
        self.key = key


@dataclass
class Budget:
    """What may still be spent, per key (missing or None: no limit), and what was charged."""

    limits: Mapping[str, float | None]
    spent: dict[str, float] = field(default_factory=dict)

    def check(self, key: str, amount: float = 0.0) -> None:
        """Raise :class:`BudgetExhausted` if spending ``amount`` more of ``key`` would cross its limit."""
        limit = self.limits.get(key)
        used = self.spent.get(key, 0.0)
        if limit is not None and (used + amount > limit or (amount == 0 and used >= limit)):
            raise BudgetExhausted(key, limit, used, amount)

    def charge(self, key: str, amount: float) -> None:
        """Check, then record ``amount`` of ``key`` as spent."""
        self.check(key, amount)
        self.spent[key] = self.spent.get(key, 0.0) + amount

    def record(self, key: str, amount: float) -> None:
        """Record spending that could not be checked in advance (e.g. tokens of an answer)."""
        self.spent[key] = self.spent.get(key, 0.0) + amount
