"""rlprompt's own PPO for LM fine-tuning (rlprompt.ppo_finetune), tested on its own."""

from __future__ import annotations

import pytest
import torch

from rlprompt.errors import ConfigError
from rlprompt.ppo_finetune import PPOFinetuneConfig, PPOFinetuner


@pytest.fixture()
def toy(tmp_path_factory, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlprompt.testing.toy_lm import toy_model_path

    monkeypatch.setenv("RLPROMPT_CACHE", str(tmp_path_factory.getbasetemp() / "rlprompt-cache"))
    path = toy_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    return AutoModelForCausalLM.from_pretrained(path).eval(), tokenizer


def target_probability(model, batch, target: int) -> float:
    with torch.no_grad():
        logits = model(**batch).logits[:, -1]
    return float(torch.softmax(logits, -1)[:, target].mean())


def make_trainer(model, tokenizer, target: int, kl_coef: float = 0.0, **config) -> PPOFinetuner:
    def reward(indices: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
        return (answers[:, 0] == target).float()

    return PPOFinetuner(
        model,
        tokenizer.pad_token_id,
        reward,
        PPOFinetuneConfig(**config),
        learning_rate=1e-2,
        kl_coef=kl_coef,
        temperature=1.0,
        max_new_tokens=1,
    )


def test_ppo_raises_the_probability_of_rewarded_answers_and_keeps_the_reference(toy):
    model, tokenizer = toy
    torch.manual_seed(0)
    target = tokenizer.convert_tokens_to_ids("positive")
    batch = tokenizer(
        ["review : good film sentiment :", "review : the plot is dull sentiment :"] * 16,
        return_tensors="pt",
        padding=True,
    )
    trainer = make_trainer(model, tokenizer, target, kl_coef=0.01)
    reference = {k: v.clone() for k, v in trainer.reference.state_dict().items()}
    before = target_probability(model, batch, target)
    first = trainer.step(torch.arange(32), batch["input_ids"], batch["attention_mask"])
    assert first["kl"] == pytest.approx(0.0, abs=1e-6)  # policy == reference on the first rollout
    for _ in range(15):
        stats = trainer.step(torch.arange(32), batch["input_ids"], batch["attention_mask"])
    after = target_probability(model, batch, target)
    assert after > before + 0.2, (before, after)
    assert stats["kl"] > 0 and stats["reward"] > first["reward"]
    for key, value in trainer.reference.state_dict().items():
        assert torch.equal(value, reference[key]), key  # the reference stays frozen
    assert trainer.value_head.weight.abs().sum() > 0  # the value head learned


def test_ppo_with_a_lora_adapter_uses_the_disabled_adapter_as_reference(toy):
    from peft import LoraConfig, get_peft_model

    model, tokenizer = toy
    torch.manual_seed(0)
    model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_proj", "c_fc"], task_type="CAUSAL_LM")
    )
    target = tokenizer.convert_tokens_to_ids("negative")
    batch = tokenizer(["review : so bad sentiment :"] * 16, return_tensors="pt", padding=True)
    trainer = make_trainer(model, tokenizer, target)
    assert trainer.reference is None and trainer.uses_adapter
    before = target_probability(model, batch, target)
    for _ in range(10):
        trainer.step(torch.arange(16), batch["input_ids"], batch["attention_mask"])
    assert target_probability(model, batch, target) > before
    with model.disable_adapter():
        assert target_probability(model, batch, target) == pytest.approx(before, abs=1e-6)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("clip_range", 0.0, "clip_range"),
        ("gamma", 1.5, "gamma"),
        ("epochs", 0, "epochs"),
        ("value_clip", -1.0, "value_clip"),
    ],
)
def test_config_checks(field, value, message):
    with pytest.raises(ConfigError, match=message):
        PPOFinetuneConfig(**{field: value})
