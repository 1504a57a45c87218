"""Task models: real effects of prompts, soft == discrete, gradient path, cache, batching, errors."""

from __future__ import annotations

import pytest
import torch

from conftest import clm_config, mlm_config
from rlprompt.config import Config
from rlprompt.errors import ConfigError, ModelLoadError
from rlprompt.task import Task
from rlprompt.task_models import HFTaskModelConfig as TaskModelConfig
from rlprompt.task_models import build_task_model

TEXTS = ["a warm, funny film with wonderful performances", "i checked my watch four times", "not bad at all"]


# ------------------------------------------------------------------ MiniLM (embedded default)


def test_minilm_scores_shape_and_prompt_effect(minilm_task):
    tm = minilm_task.task_model
    logits = tm.score(["It was", "Honestly, the food", ""], TEXTS)
    assert logits.shape == (3, len(TEXTS), 2)
    assert logits.dtype == torch.float32
    assert not torch.allclose(logits[0], logits[1], atol=1e-3)
    assert not torch.allclose(logits[0], logits[2], atol=1e-3)
    # Positive review leans "great" (class 1) under the manual prompt.
    assert logits[0, 0, 1] > logits[0, 0, 0]


def test_minilm_matches_sentence_transformers_embedding(minilm_task):
    """Our pooled embedding of a rendered input equals sentence-transformers' own encode()."""
    from sentence_transformers import SentenceTransformer

    from rlprompt.task_models import embedded_model_path

    tm = minilm_task.task_model
    reference = SentenceTransformer(str(embedded_model_path()), device="cpu")
    text = TEXTS[0] + " It was"
    ours, _ = tm._embed(["It was"], False, [(0, 0)], [TEXTS[0]], False, with_verbalizers=False)
    theirs = torch.tensor(reference.encode([text], normalize_embeddings=True))
    assert torch.allclose(ours.cpu(), theirs, atol=1e-4)
    # And the class logits are scale * cosine to the rendered verbalizer sentences.
    verbs = torch.tensor(reference.encode(["It was terrible.", "It was great."], normalize_embeddings=True))
    expected = 20.0 * theirs @ verbs.T
    assert torch.allclose(tm.score(["It was"], [TEXTS[0]])[0], expected, atol=1e-3)


def test_cache_hits_cost_no_lm_calls(minilm_task):
    tm = minilm_task.task_model
    tm.clear_cache()
    before = tm.stats.as_dict()
    first = tm.score(["The movie is"], TEXTS)
    mid = tm.stats.as_dict()
    second = tm.score(["The movie is"], TEXTS)
    after = tm.stats.as_dict()
    assert mid["lm_calls"] - before["lm_calls"] == len(TEXTS)
    assert mid["verbalizer_calls"] - before["verbalizer_calls"] == 2
    assert after["lm_calls"] == mid["lm_calls"]
    assert after["forward_batches"] == mid["forward_batches"]
    assert after["cache_hits"] - mid["cache_hits"] == len(TEXTS)
    assert after["requested"] - mid["requested"] == len(TEXTS)
    assert torch.equal(first, second)


def test_duplicate_pairs_in_one_call_are_computed_once(minilm_task):
    tm = minilm_task.task_model
    tm.clear_cache()
    before = tm.stats.lm_calls
    logits = tm.score(["Verdict:", "Verdict:"], [TEXTS[0], TEXTS[0]])
    assert tm.stats.lm_calls - before == 1
    assert torch.equal(logits[0, 0], logits[1, 1])


def test_batch_size_and_order_do_not_change_scores(minilm_task):
    tm = minilm_task.task_model
    texts = minilm_task.data.dev.texts[:12]
    tm.clear_cache()
    big = tm.score(["It was", "Overall"], texts)
    old = tm.config.batch_size
    try:
        tm.config.batch_size = 1
        tm.clear_cache()
        small = tm.score(["It was", "Overall"], texts)
        tm.clear_cache()
        reversed_ = tm.score(["Overall", "It was"], texts[::-1])
    finally:
        tm.config.batch_size = old
    assert torch.allclose(big, small, atol=1e-4)
    assert torch.allclose(big, reversed_.flip(0).flip(1), atol=1e-4)


def test_minilm_soft_prompt_at_slot_equals_discrete(minilm_template_task):
    tm = minilm_template_task.task_model
    soft = tm.prompt_embeddings("It was")
    assert soft.shape == (2, tm.hidden_size)
    discrete = tm.score(["It was"], TEXTS)
    soft_scores = tm.score(soft.unsqueeze(0), TEXTS)
    assert torch.allclose(discrete, soft_scores, atol=1e-4)


def test_minilm_gradient_path_matches_inference_path(minilm_task):
    tm = minilm_task.task_model
    torch.manual_seed(0)
    soft = (0.02 * torch.randn(3, tm.hidden_size)).requires_grad_(True)
    with_grad = tm.score_soft_with_grad(soft, TEXTS)
    inference = tm.score(soft.detach().unsqueeze(0), TEXTS)[0]
    assert torch.allclose(with_grad.detach(), inference, atol=1e-4)
    with_grad[:, 1].sum().backward()
    assert soft.grad is not None and soft.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in tm.model.parameters())


def test_soft_prompts_change_scores_and_are_validated(minilm_task):
    tm = minilm_task.task_model
    generator = torch.Generator().manual_seed(0)
    a = 0.05 * torch.randn(2, tm.hidden_size, generator=generator)
    b = 0.05 * torch.randn(2, tm.hidden_size, generator=generator)
    scores = tm.score([a, b], TEXTS)
    assert not torch.allclose(scores[0], scores[1], atol=1e-4)
    with pytest.raises(Exception, match="soft prompt must be"):
        tm.score([torch.zeros(2, 7)], TEXTS)
    with pytest.raises(Exception, match="non-finite"):
        tm.score([torch.full((2, tm.hidden_size), float("nan"))], TEXTS)
    with pytest.raises(Exception, match="not a mix"):
        tm.score(["It was", a], TEXTS)


def test_encoder_tuned_head_is_fitted_and_frozen(minilm_task):
    tm = minilm_task.task_model
    cfg = TaskModelConfig(kind="encoder-tuned")
    tuned = build_task_model(
        cfg,
        "{sentence} {prompt}",
        ["{prompt} terrible.", "{prompt} great."],
        train_texts=minilm_task.data.train.texts,
        train_labels=minilm_task.data.train.labels,
        manual_prompt="It was",
        model=tm.model,
        tokenizer=tm.tokenizer,
    )
    assert tuned.head is not None and not tuned.head.weight.requires_grad
    train_logits = tuned.score(["It was"], minilm_task.data.train.texts)[0]
    train_acc = (train_logits.argmax(-1) == torch.tensor(minilm_task.data.train.labels)).float().mean()
    assert train_acc >= 0.9  # a fitted head separates its own 32 training examples
    assert tuned.stats.verbalizer_calls == 0
    other = tuned.score(["Overall"], TEXTS)
    assert not torch.allclose(other[0], tuned.score(["It was"], TEXTS)[0], atol=1e-4)


# ------------------------------------------------------------------ tiny masked LM


@pytest.fixture(scope="module")
def mlm_task(tiny_mlm_dir):
    return Task.from_config(mlm_config(tiny_mlm_dir))


def test_mlm_loads_by_path_and_prompts_matter(mlm_task):
    tm = mlm_task.task_model
    assert tm._use_head_shortcut
    logits = tm.score(["it was", "the movie"], TEXTS)
    assert logits.shape == (2, 3, 2)
    assert not torch.allclose(logits[0], logits[1], atol=1e-5)
    assert (logits <= 0).all()  # log-probs over the vocabulary


def test_mlm_scores_equal_full_forward_log_probs(mlm_task):
    tm = mlm_task.task_model
    ids = tm.tokenizer(f"{TEXTS[0]} it was [MASK] .", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = tm.model(input_ids=ids).logits[0]
    position = int((ids[0] == tm.tokenizer.mask_token_id).nonzero())
    expected = torch.log_softmax(logits[position], -1)[tm._verbalizer_tensor]
    assert torch.allclose(tm.score(["it was"], [TEXTS[0]])[0, 0], expected, atol=1e-5)


def test_mlm_soft_at_slot_equals_discrete(tiny_mlm_dir):
    task = Task.from_config(mlm_config(tiny_mlm_dir, soft_prompt_position="template"))
    tm = task.task_model
    soft = tm.prompt_embeddings("it was")
    assert torch.allclose(tm.score(["it was"], TEXTS), tm.score(soft.unsqueeze(0), TEXTS), atol=1e-5)
    grad_scores = tm.score_soft_with_grad(soft.clone().requires_grad_(True), TEXTS)
    assert torch.allclose(grad_scores.detach(), tm.score(soft.unsqueeze(0), TEXTS)[0], atol=1e-5)


def test_mlm_multi_token_verbalizer_is_a_clear_error(tiny_mlm_dir):
    cfg = mlm_config(tiny_mlm_dir)
    with pytest.raises(ConfigError, match="several tokens"):
        build_task_model(cfg.task_model, cfg.template, ["terrible", "very great"])


def test_mlm_unknown_verbalizer_word_is_a_clear_error(tiny_mlm_dir):
    cfg = mlm_config(tiny_mlm_dir)
    with pytest.raises(ConfigError, match="not in the tokenizer's vocabulary"):
        build_task_model(cfg.task_model, cfg.template, ["terrible", "zzzqqq"])


# ------------------------------------------------------------------ tiny causal LM


@pytest.fixture(scope="module")
def clm_task(tiny_clm_dir):
    return Task.from_config(clm_config(tiny_clm_dir))


def test_clm_scores_equal_full_forward(clm_task):
    tm = clm_task.task_model
    assert tm._use_head_shortcut
    ids = tm.tokenizer(f"Honestly {TEXTS[1]} It was", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        last = torch.log_softmax(tm.model(input_ids=ids).logits[0, -1], -1)
    expected = last[tm._verbalizer_tensor]
    assert torch.allclose(tm.score(["Honestly"], [TEXTS[1]])[0, 0], expected, atol=1e-5)


def test_clm_soft_prefix_equals_discrete_prefix(clm_task):
    """PEFT layout: virtual tokens before the input == the discrete prompt at the template's start."""
    tm = clm_task.task_model
    assert tm.config.soft_prompt_position == "prefix"
    soft = tm.prompt_embeddings("Honestly the")
    discrete = tm.score(["Honestly the"], TEXTS)
    assert torch.allclose(discrete, tm.score(soft.unsqueeze(0), TEXTS), atol=1e-5)
    grad_scores = tm.score_soft_with_grad(soft.clone().requires_grad_(True), TEXTS)
    assert torch.allclose(grad_scores.detach(), discrete[0], atol=1e-5)


def test_clm_multi_token_verbalizers_sum_log_probs(tiny_clm_dir):
    cfg = clm_config(tiny_clm_dir)
    verbalizers = [" terrible movie", " great"]
    tm = build_task_model(cfg.task_model, cfg.template, verbalizers)
    assert tm.multi_token
    scores = tm.score(["Honestly"], TEXTS[:2])[0]
    for n, text in enumerate(TEXTS[:2]):
        context = tm.tokenizer(f"Honestly {text} It was")["input_ids"]
        for c, verbalizer in enumerate(verbalizers):
            target = tm.tokenizer(verbalizer)["input_ids"]
            ids = torch.tensor([context + target])
            with torch.no_grad():
                log_probs = torch.log_softmax(tm.model(input_ids=ids).logits[0], -1)
            expected = sum(float(log_probs[len(context) - 1 + t, tok]) for t, tok in enumerate(target))
            assert scores[n, c].item() == pytest.approx(expected, abs=1e-4)
    with pytest.raises(ConfigError, match="several tokens"):
        build_task_model(
            TaskModelConfig(kind="causal_lm", name_or_path=str(tiny_clm_dir), multi_token="error"),
            cfg.template,
            verbalizers,
        )


def test_clm_batching_is_padding_invariant(clm_task):
    tm = clm_task.task_model
    texts = clm_task.data.test.texts[:10]
    tm.clear_cache()
    together = tm.score(["Honestly", "I think"], texts)
    singles = torch.stack([torch.stack([tm.score([p], [t])[0, 0] for t in texts]) for p in ["Honestly", "I think"]])
    assert torch.allclose(together, singles, atol=1e-5)


# ------------------------------------------------------------------ loading errors


def test_hub_id_while_offline_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = Config(
        task_model=TaskModelConfig(kind="causal_lm", name_or_path="distilgpt2"),
        template="{sentence} {prompt}",
        verbalizers=[" bad", " good"],
    )
    with pytest.raises(ModelLoadError, match="hub is offline"):
        Task.from_config(cfg)


def test_missing_local_model_dir_is_clear(tmp_path):
    cfg = TaskModelConfig(kind="encoder", name_or_path=str(tmp_path / "nope"))
    with pytest.raises(ModelLoadError, match="not found"):
        build_task_model(cfg, "{sentence}", ["a", "b"])


def test_minilm_has_no_mlm_head_so_masked_lm_is_refused():
    cfg = TaskModelConfig(kind="masked_lm")
    with pytest.raises(ModelLoadError, match="lacks trained weights"):
        build_task_model(cfg, "{sentence} {mask}", ["bad", "good"])


def test_encoder_as_causal_lm_is_refused(tiny_mlm_dir):
    cfg = TaskModelConfig(kind="causal_lm", name_or_path=str(tiny_mlm_dir))
    with pytest.raises(ModelLoadError):
        build_task_model(cfg, "{sentence}", ["bad", "good"])


def test_verbalizer_cache_eviction_never_drops_rows_a_call_still_reads(tiny_mlm_dir):
    """Regression: with more than 1024 distinct prompts, caching the fresh verbalizer rows of
    a call used to evict older rows the same call was about to read (KeyError)."""
    config = Config(task_model=TaskModelConfig(kind="encoder", name_or_path=str(tiny_mlm_dir), batch_size=512))
    model = build_task_model(config.task_model, config.template, config.verbalizers)
    words = ["good", "bad", "film", "movie", "plot", "great", "it", "was", "the", "a", "fun", "dull"]
    prompts = [f"{a} {b} {c}" for a in words for b in words for c in words][:1100]
    model.score(prompts[:1000], ["a short probe sentence"])
    mixed = prompts[:60] + prompts[1000:1100]  # 60 cached at the LRU end, 100 fresh
    scores = model.score(mixed, ["a short probe sentence"])
    model.clear_cache()
    model._verbalizer_cache.clear()
    assert torch.allclose(scores, model.score(mixed, ["a short probe sentence"]), atol=1e-5)
