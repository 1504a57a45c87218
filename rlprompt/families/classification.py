"""The classification family (``task: classification``): each class is read through its
verbalizer, the model's score for the class's words after the prompted input; rewards and
metrics compare the class scores with the gold labels. The task class is
:class:`rlprompt.task.Task`."""

from __future__ import annotations

from typing import Any, ClassVar

from rlprompt.config import GENERATION_REWARDS
from rlprompt.errors import ConfigError
from rlprompt.families.base import TaskFamily
from rlprompt.registry import GENERATION_METRICS, REWARDS, TASK_MODELS
from rlprompt.template import check_placeholders, has_demos_slot

DEFAULT_VERBALIZERS = ["{prompt} terrible.", "{prompt} great."]
"""The verbalizers of a config that names none (RLPrompt's SST-2 words, the prompt inside)."""


class ClassificationFamily(TaskFamily):
    name: ClassVar[str] = "classification"
    task_entry_point: ClassVar[str] = "rlprompt.task:Task"
    answer_field: ClassVar[str] = "label_word"
    has_classes: ClassVar[bool] = True

    def check_config(self, config: Any) -> None:
        spec = TASK_MODELS[config.task_model.kind]
        if config.verbalizers is None:
            config.verbalizers = list(DEFAULT_VERBALIZERS)
        reward = config.reward.name
        if reward is None:
            config.reward.name = "gold_log_prob"
        elif reward in GENERATION_REWARDS or (reward in GENERATION_METRICS and reward not in REWARDS):
            raise ConfigError(
                f"reward '{reward}' scores generated text; this is a classification task "
                f"(set task: generation, or pick one of {REWARDS.names()})"
            )
        template = config.template
        check_placeholders("template", template, ("sentence", "prompt", "demos", "mask"))
        if "{sentence}" not in template:
            raise ConfigError("template must contain '{sentence}'")
        kind = config.task_model.kind
        if spec.mask_slot and template.count("{mask}") != 1:
            raise ConfigError(f"task_model.kind={kind} needs exactly one '{{mask}}' in template")
        if not spec.mask_slot and "{mask}" in template:
            raise ConfigError(f"'{{mask}}' in template is only for task_model.kind=masked_lm, not {kind}")
        if template.count("{prompt}") != 1 and not (has_demos_slot(template) and "{prompt}" not in template):
            raise ConfigError(
                f"template must contain '{{prompt}}' exactly once (where the prompt goes), got {template!r}: "
                "without it every prompt would score the same"
            )
        verbalizers = config.verbalizers
        if len(verbalizers) < 2:
            raise ConfigError(f"verbalizers must name at least 2 classes, got {len(verbalizers)}")
        if len(set(verbalizers)) != len(verbalizers):
            raise ConfigError(f"verbalizers must be distinct, got {verbalizers}")
        for i, verbalizer in enumerate(verbalizers):
            check_placeholders(f"verbalizers[{i}]", verbalizer, ("prompt",))
            if not verbalizer.replace("{prompt}", "").strip():
                raise ConfigError(f"verbalizers[{i}] is empty ({verbalizer!r}): each class needs words to score")
        if not spec.prompt_in_verbalizers and any("{prompt}" in v for v in verbalizers):
            raise ConfigError(f"'{{prompt}}' in verbalizers is only for encoder kinds, not {kind}")

    def metric_names(self, config: Any) -> list[str]:
        return ["accuracy", "macro_f1", "gold_log_prob"]

    def result_row(self, metrics: dict[str, Any], baseline: dict[str, Any], names: list[str]) -> dict[str, Any]:
        return {
            "test_accuracy": metrics["test"]["accuracy"],
            "dev_accuracy": metrics["dev"]["accuracy"],
            "train_accuracy": metrics["train"]["accuracy"],
            "test_macro_f1": metrics["test"]["macro_f1"],
            "manual_test_accuracy": baseline["test"]["accuracy"],
            "manual_dev_accuracy": baseline["dev"]["accuracy"],
        }

    def export_fields(self, config: Any, result: Any = None) -> dict[str, Any]:
        """The verbalizers and calibration (with ``calibration: batch`` a single input's class
        log-probs minus ``metrics["train"]["class_shift"]``); a run that found label words
        exports the verbalizers they make (``label_words`` beside them, the config's in
        ``manual_verbalizers``)."""
        if result is not None and result.label_words is not None:
            return {
                "verbalizers": result.verbalizers,
                "label_words": result.label_words,
                "manual_verbalizers": config.verbalizers,
                "calibration": config.calibration,
            }
        return {"verbalizers": config.verbalizers, "calibration": config.calibration}


FAMILY = ClassificationFamily()
