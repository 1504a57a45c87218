"""Gymnasium environments for prompt optimization (installed as ``rlprompt.envs``).

Importing this package registers:

* ``rlprompt/TokenPrompt-v0`` - :class:`TokenPromptEnv`, write a prompt word by word;
* ``rlprompt/PromptSelection-v0`` - :class:`PromptSelectionEnv`, a bandit over K candidates;
* ``rlprompt/PromptEdit-v0`` - :class:`PromptEditEnv`, edit the manual prompt;
* ``rlprompt/SoftPrompt-v0`` - :class:`SoftPromptEnv`, soft prompts in a random subspace.

``gymnasium.make(id)`` with no kwargs builds the embedded default task (MiniLM on the
built-in demo data); ``task=``, ``config=`` (a Config, dict or YAML path) and ``overrides=``
select another. ``gymnasium.make_vec(id, num_envs=N)`` returns a
:class:`BatchedPromptVectorEnv` that scores all N prompts in one task-model call;
``vectorization_mode="sync"`` gives Gymnasium's own ``SyncVectorEnv``.
"""

from gymnasium.envs.registration import register, registry

from rlprompt.envs.base import PromptEnv, ScoreRequest, ScoreResult, make_task, score_requests
from rlprompt.envs.edit import PromptEditEnv, enumerate_edits
from rlprompt.envs.selection import PromptSelectionEnv, load_candidates
from rlprompt.envs.soft import SoftPromptEnv
from rlprompt.envs.token import TokenPromptEnv
from rlprompt.envs.vector import BatchedPromptVectorEnv, _vector_entry_point, make_batched_vector_env
from rlprompt.envs.vocab import build_vocabulary, tokenizer_words
from rlprompt.envs.wrappers import EpisodeStatistics, LMCallBudget, NormalizeReward

ENV_IDS = {
    "rlprompt/TokenPrompt-v0": "rlprompt.envs.token:TokenPromptEnv",
    "rlprompt/PromptSelection-v0": "rlprompt.envs.selection:PromptSelectionEnv",
    "rlprompt/PromptEdit-v0": "rlprompt.envs.edit:PromptEditEnv",
    "rlprompt/SoftPrompt-v0": "rlprompt.envs.soft:SoftPromptEnv",
}

for _env_id, _entry_point in ENV_IDS.items():
    if _env_id not in registry:
        register(id=_env_id, entry_point=_entry_point, vector_entry_point=_vector_entry_point(_entry_point))

__all__ = [
    "ENV_IDS",
    "BatchedPromptVectorEnv",
    "EpisodeStatistics",
    "LMCallBudget",
    "NormalizeReward",
    "PromptEditEnv",
    "PromptEnv",
    "PromptSelectionEnv",
    "ScoreRequest",
    "ScoreResult",
    "SoftPromptEnv",
    "TokenPromptEnv",
    "build_vocabulary",
    "enumerate_edits",
    "load_candidates",
    "make_batched_vector_env",
    "make_task",
    "score_requests",
    "tokenizer_words",
]
