"""The contract every registered task-model kind keeps, checked on a tiny model of each kind.

A new kind registered in ``rlprompt.task_models`` is picked up here: it needs an entry in
``FIXTURES`` (how to build a tiny one), then every check below runs on it.
"""

from __future__ import annotations

import pytest
import torch

from conftest import clm_config, mlm_config, openai_config
from rlprompt.budget import Budget, BudgetExhausted
from rlprompt.config import Config, config_from_dict
from rlprompt.registry import TASK_MODELS
from rlprompt.task import Task

TEXTS = ["a warm , funny film", "i checked my watch four times", "not bad at all", "it was great ."]


def _encoder(tiny_mlm_dir, kind: str) -> Config:
    return config_from_dict(
        {
            "task_model": {"kind": kind, "name_or_path": str(tiny_mlm_dir)},
            "verbalizers": ["{prompt} terrible .", "{prompt} great ."],
        }
    )


FIXTURES = {
    "encoder": lambda d: _encoder(d["mlm"], "encoder"),
    "encoder-tuned": lambda d: _encoder(d["mlm"], "encoder-tuned"),
    "masked_lm": lambda d: mlm_config(d["mlm"]),
    "causal_lm": lambda d: clm_config(d["clm"]),
    "openai": lambda d: openai_config(d["openai"].base_url),
}


@pytest.fixture(scope="module")
def built(tiny_mlm_dir, tiny_clm_dir, tiny_openai_server):
    dirs = {"mlm": tiny_mlm_dir, "clm": tiny_clm_dir, "openai": tiny_openai_server}
    cache: dict[str, Task] = {}

    def get(kind: str) -> Task:
        if kind not in FIXTURES:
            pytest.fail(f"task-model kind '{kind}' is registered but has no tiny fixture in FIXTURES")
        if kind not in cache:
            cache[kind] = Task.from_config(FIXTURES[kind](dirs))
        return cache[kind]

    return get


KINDS = TASK_MODELS.names()


@pytest.mark.parametrize("kind", KINDS)
def test_scores_have_the_contract_shape_and_are_deterministic(kind, built):
    model = built(kind).task_model
    prompts = ["it was", "honestly", ""]
    first = model.score(prompts, TEXTS)
    assert first.shape == (3, len(TEXTS), model.num_classes) and first.dtype == torch.float32
    assert torch.isfinite(first).all()
    model.clear_cache()
    again = model.score(prompts, TEXTS)
    assert torch.allclose(first, again, atol=1e-5)
    pairs = model.score_pairs(prompts, [TEXTS[:2], TEXTS[1:], TEXTS[3:]])
    assert [p.shape for p in pairs] == [(2, model.num_classes), (3, model.num_classes), (1, model.num_classes)]
    assert torch.allclose(pairs[1], first[1, 1:], atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_cached_scores_equal_computed_ones_and_cost_nothing(kind, built):
    model = built(kind).task_model
    model.clear_cache()
    fresh = model.score(["the movie is"], TEXTS)
    calls = model.stats.lm_calls
    cached = model.score(["the movie is"], TEXTS)
    assert torch.equal(fresh, cached) and model.stats.lm_calls == calls
    state = model.cache_state()
    model.clear_cache()
    model.load_cache_state(state)
    assert torch.equal(model.score(["the movie is"], TEXTS), fresh) and model.stats.lm_calls == calls


@pytest.mark.parametrize("kind", KINDS)
def test_budget_is_charged_before_anything_is_computed(kind, built):
    model = built(kind).task_model
    model.clear_cache()
    batches = model.stats.forward_batches
    model.budget = Budget({"lm_calls": len(TEXTS) - 1})
    try:
        with pytest.raises(BudgetExhausted):
            model.score(["a new prompt"], TEXTS)
    finally:
        model.budget = None
    assert model.stats.forward_batches == batches


@pytest.mark.parametrize("kind", KINDS)
def test_soft_prompts_and_gradients_as_the_class_declares(kind, built):
    from rlprompt.task_models.base import SoftPromptable

    model = built(kind).task_model
    cls = type(model)
    assert isinstance(model, SoftPromptable) == cls.supports_soft_prompts  # declared = what it has
    if not cls.supports_soft_prompts:
        with pytest.raises(Exception, match="soft"):
            model.score([torch.zeros(2, 4)], TEXTS)
        return
    soft = model.prompt_embeddings("it was")
    assert soft.dim() == 2 and soft.shape[1] == model.hidden_size and model.embedding_std > 0
    scores = model.score(soft.unsqueeze(0), TEXTS)
    assert scores.shape == (1, len(TEXTS), model.num_classes) and torch.isfinite(scores).all()
    if cls.supports_gradients:
        variable = soft.clone().requires_grad_(True)
        model.score_soft_with_grad(variable, TEXTS)[:, 0].sum().backward()
        assert variable.grad is not None and variable.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", KINDS)
def test_capabilities_and_registration_agree(kind, built):
    import transformers

    spec = TASK_MODELS[kind]
    model = built(kind).task_model
    assert isinstance(model, spec.model_class)
    assert spec.model_class.peft_task_type in (None, "FEATURE_EXTRACTION", "CAUSAL_LM", "SEQ_2_SEQ_LM")
    if spec.model_class.hf_auto_class is not None:
        assert hasattr(transformers, spec.model_class.hf_auto_class)
    words = model.words()
    assert words and all(isinstance(w, str) and w for w in words)
    assert spec.config_class is type(model.config)


def test_every_generation_class_has_the_generation_interface():
    """Each kind that can generate names a class with ``check_references``, ``log_likelihood`` and
    ``generate`` (the :class:`GeneratingModel` protocol), and the kinds that cannot name none."""
    import inspect

    from rlprompt.task_models.base import GeneratingModel

    generating = [k for k in TASK_MODELS.names() if TASK_MODELS[k].generation_entry_point is not None]
    assert set(generating) == {"causal_lm", "openai"}
    for kind in generating:
        cls = TASK_MODELS[kind].generation_class
        assert issubclass(cls, GeneratingModel), kind
        for name in ("check_references", "log_likelihood", "generate"):
            wanted = list(inspect.signature(getattr(GeneratingModel, name)).parameters)
            assert list(inspect.signature(getattr(cls, name)).parameters) == wanted, (kind, name)
