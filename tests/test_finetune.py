"""``rlprompt finetune``: each method raises greedy dev accuracy on the tiny setup, trains only
LoRA weights, saves an adapter that reloads to the same predictions; clear input errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlprompt.cli import main
from rlprompt.config import load_config
from rlprompt.finetune import AnswerTask, evaluate_greedy, finetune, load_finetuned, resolve_prompt
from rlprompt.testing.toy_lm import SPECIALS, TOY_WORDS, toy_model_path

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "experiments" / "configs" / "finetune-tiny.yaml"


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    """Build the toy model in a per-session cache (never in the user's home)."""
    monkeypatch.setenv("RLPROMPT_CACHE", str(tmp_path_factory.getbasetemp() / "rlprompt-cache"))


@pytest.fixture(autouse=True)
def _cwd(monkeypatch):
    monkeypatch.chdir(ROOT)  # the config's data path is relative to the project root


def base_state() -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(toy_model_path()).state_dict()


def test_toy_model_is_tiny_and_emits_no_label_word_before_training():
    from rlprompt.data import load_task_data
    from rlprompt.finetune import load_policy

    config = load_config(TINY)
    model, tokenizer = load_policy(config)
    assert len(tokenizer) == len(SPECIALS) + len(TOY_WORDS) <= 64
    assert tokenizer(" positive", add_special_tokens=False)["input_ids"] == [
        tokenizer.convert_tokens_to_ids("positive")
    ]
    task = AnswerTask(config, tokenizer, config.prompt, load_task_data(config.data, num_classes=2))
    dev = evaluate_greedy(model, task, ("dev",))["dev"]
    assert dev["invalid"] == dev["n"] and dev["accuracy"] == 0.0  # so every gain below is learned


@pytest.mark.parametrize("method", ["grpo", "rloo", "ppo"])
def test_each_method_raises_greedy_dev_accuracy_and_trains_only_lora(tmp_path, method):
    config = load_config(TINY, [f"finetune.method={method}", "finetune.steps=40"])
    result, model = finetune(config, tmp_path / method)
    before, after = result.before["metrics"], result.after["metrics"]
    assert after["dev"]["accuracy"] - before["dev"]["accuracy"] >= 0.2, (before["dev"], after["dev"])
    assert after["dev"]["invalid"] < before["dev"]["invalid"]
    # LoRA B matrices start at zero: non-zero now means the adapter trained
    adapter = load_file(str(tmp_path / method / "adapter" / "adapter_model.safetensors"))
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)
    # the base weights in memory are bit-identical to the checkpoint's
    original = base_state()
    trained_base = {
        k.replace(".base_layer", ""): v for k, v in model.get_base_model().state_dict().items() if "lora_" not in k
    }
    assert set(original) <= set(trained_base)
    for name, tensor in original.items():
        assert torch.equal(tensor, trained_base[name]), name
    # the saved adapter reloads (PeftModel.from_pretrained on the base) to the same predictions
    reloaded, tokenizer, saved_config = load_finetuned(tmp_path / method)
    from rlprompt.data import load_task_data

    task = AnswerTask(saved_config, tokenizer, result.prompt, load_task_data(saved_config.data, num_classes=2))
    assert evaluate_greedy(reloaded, task) == after
    log = (tmp_path / method / "metrics.csv").read_text().splitlines()
    assert len(log) >= 2 and "reward" in log[0]
    written = json.loads((tmp_path / method / "finetune_result.json").read_text())
    assert written["after"]["metrics"] == after and written["saved"] == "adapter"


def test_full_finetuning_saves_a_reloadable_model(tmp_path):
    config = load_config(
        TINY, ["finetune.method=ppo", "finetune.lora=false", "finetune.steps=10", "finetune.learning_rate=1e-3"]
    )
    result, model = finetune(config, tmp_path / "full")
    assert result.saved == "model" and (tmp_path / "full" / "model" / "config.json").is_file()
    changed = any(not torch.equal(v, model.state_dict()[k]) for k, v in base_state().items())
    assert changed
    reloaded, _, _ = load_finetuned(tmp_path / "full")
    for key, value in reloaded.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key


def test_prompt_comes_from_a_best_prompt_json(tmp_path):
    from rlprompt.results import RunResult

    fields = dict(
        token_ids=None,
        soft_prompt_path=None,
        n_virtual_tokens=None,
        metrics={},
        baseline={},
        train_reward=None,
        candidates=1,
        lm_calls=0,
        prompt_evals=0,
        env_steps=0,
        iterations=0,
        dev_lm_calls=0,
        eval_lm_calls=0,
        agent="ppo",
        env="edit",
        task_model="causal_lm:x",
        reward="accuracy",
        seed=0,
        rlprompt_version="0",
        wall_time_s=None,
    )
    best = tmp_path / "best_prompt.json"
    RunResult(kind="discrete", prompt="it was", **fields).save(best)
    config = load_config(TINY, [f"finetune.prompt_file={best}"])
    assert resolve_prompt(config) == "it was"
    RunResult(kind="soft", prompt=None, **fields).save(best)
    with pytest.raises(Exception, match="soft prompt"):
        resolve_prompt(config)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["task_model.kind=encoder", "task_model.name_or_path=embedded"], "finetune trains a causal LM"),
        (["task_model.name_or_path=embedded:minilm"], "is a BertModel checkpoint, not a causal LM"),
        (["verbalizers=[' negative', ' splendid']"], "verbalizer ' splendid' is not in the tokenizer's vocabulary"),
        (["finetune.prompt_file=/nonexistent/best_prompt.json"], "finetune.prompt_file not found"),
        (["finetune.method=dpo"], "config key 'finetune.method' must be one of"),
        (["finetune.ppo.clip_range=0"], "finetune.ppo.clip_range must be > 0"),
        (["task_model.name_or_path=org/missing-model"], "hub is offline"),
    ],
)
def test_bad_input_gives_one_clear_error(tmp_path, capsys, overrides, message):
    args = ["finetune", str(TINY), "-o", str(tmp_path / "r")]
    for override in overrides:
        args += ["--set", override]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
