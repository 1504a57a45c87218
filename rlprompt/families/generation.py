"""The generation family (``task: generation``): the model writes text, scored against one or
more references (the likelihood of the references while training, SQuAD F1, ROUGE, BLEU or chrF
of greedy generations). The task class is :class:`rlprompt.generation_task.GenerationTask`."""

from __future__ import annotations

from typing import Any, ClassVar

from rlprompt.config import GENERATION_REWARDS, config_to_dict
from rlprompt.errors import ConfigError
from rlprompt.families.base import TaskFamily
from rlprompt.registry import AGENTS, GENERATION_METRICS, REWARDS, TASK_MODELS
from rlprompt.template import PLACEHOLDER, input_fields


class GenerationFamily(TaskFamily):
    name: ClassVar[str] = "generation"
    task_entry_point: ClassVar[str] = "rlprompt.generation_task:GenerationTask"
    answer_field: ClassVar[str] = "answer"
    has_classes: ClassVar[bool] = False

    def check_config(self, config: Any) -> None:
        spec = TASK_MODELS[config.task_model.kind]
        if config.verbalizers:
            raise ConfigError(
                "verbalizers are for classification tasks; a generation task scores references "
                "(remove 'verbalizers' or set task: classification)"
            )
        config.verbalizers = []
        if spec.generation_entry_point is None:
            kinds = [k for k in TASK_MODELS.names() if TASK_MODELS[k].generation_entry_point is not None]
            raise ConfigError(
                f"task_model.kind={config.task_model.kind} cannot generate text; generation tasks need one of {kinds}"
            )
        template, chat = config.template, config.generation.chat
        names = [m.group(1) for m in PLACEHOLDER.finditer(template)]
        if "mask" in names:
            raise ConfigError("'{mask}' in template is only for masked-LM classification")
        prompts = names.count("prompt")
        wanted = 0 if chat == "system" else 1
        if "demos" in names and chat == "system":
            raise ConfigError(
                "'{demos}' places demonstrations in the template; generation.chat=system moves the prompt "
                "into the system message: use generation.chat none or user with demonstrations"
            )
        if prompts != wanted and not ("demos" in names and prompts == 0):
            where = (
                "the system message holds the prompt (generation.chat=system): remove '{prompt}' from template"
                if wanted == 0
                else "template must contain '{prompt}' exactly once (where the prompt goes)"
            )
            raise ConfigError(f"{where}, got {template!r}")
        if not input_fields(template):
            raise ConfigError(f"template names no input field ('{{context}}', '{{source}}' ...), got {template!r}")
        if chat == "system" and getattr(config.task_model, "soft_prompt_position", None) == "template":
            raise ConfigError(
                "task_model.soft_prompt_position=template places soft prompts at '{prompt}', which "
                "generation.chat=system moves into the system message; use soft_prompt_position=prefix"
            )
        if AGENTS[config.agent_name].needs_gradients:
            raise ConfigError(f"agent '{config.agent_name}' trains through class logits: classification tasks only")
        reward = config.reward.name
        if reward is None:
            config.reward.name = "likelihood"
        elif reward in REWARDS and reward not in GENERATION_METRICS:
            raise ConfigError(
                f"reward '{reward}' scores class predictions; a generation task takes 'likelihood' "
                f"or a generation metric ({GENERATION_METRICS.names()})"
            )
        elif reward not in GENERATION_REWARDS and reward not in GENERATION_METRICS:
            if "." in reward or ":" in reward:
                GENERATION_METRICS.check(reward)  # a metric function of an installed module
            else:
                raise ConfigError(
                    f"reward '{reward}': a generation task takes 'likelihood' or a generation metric "
                    f"({GENERATION_METRICS.names()})"
                )

    def metric_names(self, config: Any) -> list[str]:
        return list(config.generation.metrics)

    def result_row(self, metrics: dict[str, Any], baseline: dict[str, Any], names: list[str]) -> dict[str, Any]:
        row: dict[str, Any] = {}
        for name in names:
            row.update(
                {
                    f"test_{name}": metrics["test"][name],
                    f"dev_{name}": metrics["dev"][name],
                    f"train_{name}": metrics["train"][name],
                    f"manual_test_{name}": baseline["test"][name],
                    f"manual_dev_{name}": baseline["dev"][name],
                }
            )
        row.update(test_likelihood=metrics["test"]["likelihood"], manual_test_likelihood=baseline["test"]["likelihood"])
        return row

    def export_fields(self, config: Any, result: Any = None) -> dict[str, Any]:
        """The generation settings (stop strings, chat template, metrics)."""
        return {"generation": config_to_dict(config.generation)}


FAMILY = GenerationFamily()
