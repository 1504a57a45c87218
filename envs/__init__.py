"""Gymnasium environments for prompt optimization (installed as ``rlprompt.envs``).

Importing this package registers the env kinds in :data:`rlprompt.registry.ENVS` and their
Gymnasium ids (no torch is imported):

* ``token`` - ``rlprompt/TokenPrompt-v0`` - :class:`TokenPromptEnv`, write a prompt word by word;
* ``selection`` - ``rlprompt/PromptSelection-v0`` - :class:`PromptSelectionEnv`, a bandit over K candidates;
* ``edit`` - ``rlprompt/PromptEdit-v0`` - :class:`PromptEditEnv`, edit the manual prompt;
* ``soft`` - ``rlprompt/SoftPrompt-v0`` - :class:`SoftPromptEnv`, soft prompts in a random subspace;
* ``demos`` - ``rlprompt/DemoSelection-v0`` - :class:`DemoSelectionEnv`, choose and order demonstrations;
* ``label_words`` - ``rlprompt/LabelWords-v0`` - :class:`LabelWordsEnv`, choose each class's word;
* ``demos_per_input`` - ``rlprompt/PerInputDemos-v0`` - :class:`PerInputDemoEnv`, choose each input's own
  demonstrations, observing the input.

``gymnasium.make(id)`` with no kwargs builds the embedded default task (MiniLM on the
built-in demo data); ``task=``, ``config=`` (a Config, dict or YAML path) and ``overrides=``
select another. ``gymnasium.make_vec(id, num_envs=N)`` returns a
:class:`BatchedPromptVectorEnv` that scores all N prompts in one task-model call;
``vectorization_mode="sync"`` gives Gymnasium's own ``SyncVectorEnv``.

A new env kind is one module (its :class:`PromptEnv` subclass and config dataclass) plus one
line in ``_KINDS`` below; ``tests/test_envs.py`` runs ``check_env`` on every registered id.
"""

from gymnasium.envs.registration import register, registry

from rlprompt.envs.base import (
    EnvConfig,
    EnvSpec,
    PerInputPrompts,
    PromptEnv,
    ScoreRequest,
    ScoreResult,
    SlotChoices,
    make_task,
    score_requests,
)
from rlprompt.envs.demos import DemoSelectionEnv, DemosEnvConfig
from rlprompt.envs.edit import EditEnvConfig, PromptEditEnv, enumerate_edits
from rlprompt.envs.label_words import LabelWordsEnv, LabelWordsEnvConfig
from rlprompt.envs.per_input import PerInputDemoEnv, PerInputDemosEnvConfig
from rlprompt.envs.selection import PromptSelectionEnv, SelectionEnvConfig, load_candidates
from rlprompt.envs.soft import SoftEnvConfig, SoftPromptEnv
from rlprompt.envs.token import TokenEnvConfig, TokenPromptEnv
from rlprompt.envs.vector import BatchedPromptVectorEnv, make_batched_vector_env, vector_entry_point
from rlprompt.envs.vocab import build_vocabulary
from rlprompt.envs.wrappers import EpisodeStatistics, LMCallBudget, NormalizeReward
from rlprompt.registry import ENVS

_KINDS = [
    EnvSpec("token", TokenEnvConfig, TokenPromptEnv, "rlprompt/TokenPrompt-v0"),
    EnvSpec("selection", SelectionEnvConfig, PromptSelectionEnv, "rlprompt/PromptSelection-v0"),
    EnvSpec("edit", EditEnvConfig, PromptEditEnv, "rlprompt/PromptEdit-v0"),
    EnvSpec("soft", SoftEnvConfig, SoftPromptEnv, "rlprompt/SoftPrompt-v0"),
    EnvSpec("demos", DemosEnvConfig, DemoSelectionEnv, "rlprompt/DemoSelection-v0"),
    EnvSpec("label_words", LabelWordsEnvConfig, LabelWordsEnv, "rlprompt/LabelWords-v0"),
    EnvSpec("demos_per_input", PerInputDemosEnvConfig, PerInputDemoEnv, "rlprompt/PerInputDemos-v0"),
]
ENV_IDS = {}
for _spec in _KINDS:
    ENVS.register(_spec.kind, _spec)
    _entry_point = f"{_spec.env_class.__module__}:{_spec.env_class.__name__}"
    ENV_IDS[_spec.gym_id] = _entry_point
    if _spec.gym_id not in registry:
        register(id=_spec.gym_id, entry_point=_entry_point, vector_entry_point=vector_entry_point(_spec.env_class))


def build_env(task, config: EnvConfig) -> PromptEnv:
    """The env an ``env`` config section (a registered kind's config) describes, on ``task``."""
    return ENVS[config.kind].env_class.from_config(task, config)


__all__ = [
    "ENV_IDS",
    "BatchedPromptVectorEnv",
    "DemoSelectionEnv",
    "DemosEnvConfig",
    "EditEnvConfig",
    "EnvConfig",
    "EnvSpec",
    "EpisodeStatistics",
    "LMCallBudget",
    "LabelWordsEnv",
    "LabelWordsEnvConfig",
    "NormalizeReward",
    "PromptEditEnv",
    "PerInputDemoEnv",
    "PerInputDemosEnvConfig",
    "PerInputPrompts",
    "PromptEnv",
    "SlotChoices",
    "PromptSelectionEnv",
    "ScoreRequest",
    "ScoreResult",
    "SelectionEnvConfig",
    "SoftEnvConfig",
    "SoftPromptEnv",
    "TokenEnvConfig",
    "TokenPromptEnv",
    "build_env",
    "build_vocabulary",
    "enumerate_edits",
    "load_candidates",
    "make_batched_vector_env",
    "make_task",
    "score_requests",
]
