"""The interface of a task family (see :mod:`rlprompt.families`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from rlprompt.registry import import_object


class TaskFamily(ABC):
    """One ``task:`` value: how a config of the family is checked, which task class builds it,
    and what results, bench tables and exports of it hold. Subclasses set the class attributes
    and implement the methods; every method takes plain configs and results (no torch)."""

    name: ClassVar[str]
    """The ``task:`` value it is registered under."""
    task_entry_point: ClassVar[str]
    """``"module:Class"`` of the :class:`~rlprompt.task.Task` subclass that loads and scores the
    family's data (imported on first use, so the config layer never imports torch)."""
    answer_field: ClassVar[str]
    """The placeholder a demonstration template shows the answer with (``{label_word}`` /
    ``{answer}``)."""
    has_classes: ClassVar[bool]
    """Whether answers are classes read through verbalizers: what calibration, label-word search,
    class-balanced demonstrations and fine-tuning on verbalizer answers need."""

    @property
    def task_class(self) -> type:
        """The task class (imported here, on first use)."""
        return import_object(self.task_entry_point)

    @abstractmethod
    def check_config(self, config: Any) -> None:
        """Check the family's part of a run config and fill its defaults (verbalizers, reward);
        one :class:`~rlprompt.errors.ConfigError` naming the key otherwise."""

    @abstractmethod
    def metric_names(self, config: Any) -> list[str]:
        """The per-split metrics results lead with, the main one first."""

    @abstractmethod
    def result_row(self, metrics: dict[str, Any], baseline: dict[str, Any], names: list[str]) -> dict[str, Any]:
        """A bench table's columns of one run: its found prompt's ``metrics`` and the manual
        prompt's (``baseline``) per split, for the ``names`` the run recorded."""

    @abstractmethod
    def export_fields(self, config: Any, result: Any = None) -> dict[str, Any]:
        """What a user of an exported prompt needs beside the template to score as the run did
        (``result`` is the run's :class:`~rlprompt.results.RunResult`, when there is one)."""
