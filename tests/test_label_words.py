"""Label-word search: labeled prompts, vocabulary candidates, the env, runs, export and resume."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import pytest

from conftest import clm_config, mlm_config
from rlprompt.agents import AGENT_REGISTRY
from rlprompt.checkpoint import load_checkpoint
from rlprompt.config import load_config
from rlprompt.envs import LabelWordsEnv
from rlprompt.errors import ConfigError, RLPromptError
from rlprompt.experiment import evaluate_run, load_run_checkpoint, make_env, run_experiment
from rlprompt.export import export_run
from rlprompt.finetune import resolve_prompt
from rlprompt.registry import ENVS
from rlprompt.task import Task
from rlprompt.task_models import build_task_model
from rlprompt.template import LabeledPrompt, verbalizer_with
from rlprompt.testing.toy_lm import toy_lm_config

LABEL_AGENTS = ("a2c", "dqn", "hill_climb", "ppo", "q_table", "random_search", "reinforce")


@pytest.fixture(scope="module")
def toy_lm_task():
    return Task.from_config(toy_lm_config())


def test_labeled_prompts_and_verbalizer_forms():
    assert verbalizer_with(" negative", "bad") == " bad"
    assert verbalizer_with("{prompt} terrible.", "bad") == "{prompt} bad."
    prompt = LabeledPrompt("It was", ["bad", "good"])
    assert prompt.label_words == ("bad", "good") and hash(prompt) == hash(LabeledPrompt("It was", ("bad", "good")))
    assert prompt.describe() == "'It was' [bad/good]"
    for words, message in (
        (("bad", "bad"), "distinct"),
        ((" bad", "good"), "surrounding spaces"),
        ("bad good", "list of words"),
    ):
        with pytest.raises(ConfigError, match=message):
            LabeledPrompt("It was", words)
    with pytest.raises(ConfigError, match="no word"):
        verbalizer_with("{prompt}", "bad")


def test_labeled_prompt_scores_as_a_model_with_those_verbalizers(toy_lm_task):
    """Reading two words' columns from the model that reads every candidate gives exactly what
    a task model built with those two verbalizers gives (accuracy, log-probs, calibration)."""
    task = toy_lm_task
    task.label_word_model([" movie", " fun", " great", " awful"])  # a wider model than needed
    labeled = task.evaluate(LabeledPrompt("sentiment :", ("movie", "fun")), "dev", per_example=True)
    config = replace(task.config, verbalizers=[" movie", " fun"])
    model = build_task_model(
        config.task_model,
        config.model_template,
        config.verbalizers,
        model=task.task_model.model,
        tokenizer=task.task_model.tokenizer,
    )
    plain = Task(config, task.data, model).evaluate("sentiment :", "dev", per_example=True)
    for key in ("accuracy", "macro_f1", "gold_log_prob", "reward", "predicted_counts"):
        assert labeled[key] == pytest.approx(plain[key], abs=1e-5), key
    assert labeled["per_example"]["predictions"] == plain["per_example"]["predictions"]
    assert np.allclose(labeled["per_example"]["log_probs"], plain["per_example"]["log_probs"], atol=1e-5)
    # the manual words as a labeled prompt score as the manual prompt does
    manual = task.evaluate(LabeledPrompt("sentiment :", ("negative", "positive")), "dev")
    assert manual["accuracy"] == task.evaluate("sentiment :", "dev")["accuracy"]
    with pytest.raises(ConfigError, match="one per class"):
        task.evaluate(LabeledPrompt("sentiment :", ("a", "b", "c")), "dev")


def test_vocabulary_candidates_are_single_token_whole_words(tiny_clm_dir):
    config = replace(clm_config(tiny_clm_dir), calibration="batch")
    task = Task.from_config(config)
    env = LabelWordsEnv(task=task, per_class=8, vocab_regex="[a-z]{3,}")
    tokenizer = task.task_model.tokenizer
    vocab = tokenizer.get_vocab()
    assert [words[0] for words in env.candidates] == ["bad", "good"]  # seeded by the manual words
    for words in env.candidates:
        assert 2 <= len(words) <= 8
        for word in words[1:]:
            assert re.fullmatch("[a-z]{3,}", word)
            assert tokenizer(" " + word, add_special_tokens=False)["input_ids"] == [vocab["Ġ" + word]]
    assert not set(env.candidates[0][1:]) & set(env.candidates[1][1:])  # a word goes to one class
    assert env.setup_lm_calls == len(task.data.train)  # one forward per train example ranks every word


def test_masked_lm_candidates_come_from_a_word_level_vocabulary(tiny_mlm_dir):
    task = Task.from_config(replace(mlm_config(tiny_mlm_dir), calibration="batch"))
    env = LabelWordsEnv(task=task, per_class=5, seed_manual=False)
    words = [w for per in env.candidates for w in per]
    assert len(words) == len(set(words)) == 10
    for word in words:
        assert len(task.task_model.tokenizer(word, add_special_tokens=False)["input_ids"]) == 1


def test_label_word_search_beats_the_manual_words_on_the_toy_lm(tmp_path):
    """On the random toy LM the manual words read the input poorly; a search over vocabulary
    words (calibrated) finds words that score higher on dev, and the run reports, reproduces
    and exports them."""
    config = toy_lm_config(
        [
            "env.kind=label_words",
            "env.per_class=6",
            "env.vocab_regex=null",
            "env.batch_size=16",
            "agent.name=hill_climb",
            "budget.prompt_evals=200",
            "seed=0",
        ]
    )
    result = run_experiment(config, tmp_path / "run", progress=False)
    assert result.label_words is not None and result.label_words != ["negative", "positive"]
    assert result.verbalizers == [f" {w}" for w in result.label_words]
    assert result.metrics["dev"]["accuracy"] >= result.baseline["metrics"]["dev"]["accuracy"] + 0.1
    assert result.lm_calls == 64  # ranking the vocabulary on 64 train reviews; then every choice is a cache hit
    again = evaluate_run(tmp_path / "run", "test")
    assert again["reproduces"] and again["label_words"] == result.label_words
    out = export_run(tmp_path / "run", "json", tmp_path / "prompt.json")
    exported = json.loads(out.read_text())
    assert exported["label_words"] == result.label_words and exported["verbalizers"] == result.verbalizers
    assert exported["manual_verbalizers"] == [" negative", " positive"]
    outcomes = json.loads((tmp_path / "run" / "outcomes.json").read_text())
    assert result.label_words[0] in json.dumps(outcomes["prompts"]["found"])
    with pytest.raises(RLPromptError, match="label words"):  # a txt export would be read with the config's words
        export_run(tmp_path / "run", "txt", tmp_path / "prompt.txt")
    finetune = toy_lm_config([f"finetune.prompt_file={tmp_path / 'run' / 'best_prompt.json'}"])
    with pytest.raises(ConfigError, match="verbalizers they make"):
        resolve_prompt(finetune)


@pytest.mark.parametrize("agent", LABEL_AGENTS)
def test_every_slot_agent_runs_on_the_label_word_env(agent, toy_lm_task):
    assert "label_words" in AGENT_REGISTRY[agent].env_kinds
    config = replace(
        toy_lm_task.config, env=ENVS["label_words"].config_class(per_class=4, vocab_regex=None, batch_size=8)
    )
    env = make_env(toy_lm_task, config)
    model = AGENT_REGISTRY[agent].agent_class(env, AGENT_REGISTRY[agent].config_class(seed=0))
    model.learn(total_prompt_evals=24)
    found = model.predict()
    assert isinstance(found, LabeledPrompt) and len(found.label_words) == 2
    best = model.best_prompt(splits=("dev",), extra=["sentiment :"])
    assert isinstance(best.prompt, (LabeledPrompt, str)) and best.scores["accuracy"] > 0
    assert 0 < model.prompt_evals <= 24 and len(model.tracker.records) >= 1


def test_punctuated_verbalizers_keep_their_form(toy_lm_task):
    from rlprompt.template import label_word_of

    assert label_word_of("{prompt} terrible.") == "terrible" and label_word_of(" very bad") == "bad"
    config = replace(toy_lm_task.config, verbalizers=[" negative :", " positive :"])
    model = toy_lm_task.task_model.with_verbalizers(config.verbalizers)
    task = Task(config, toy_lm_task.data, model)
    assert task.manual_label_words == ("negative", "positive")
    assert task.verbalizers_for(["bad", "good"]) == [" bad :", " good :"]
    manual = task.evaluate(LabeledPrompt("sentiment :", task.manual_label_words), "dev")
    assert manual["accuracy"] == task.evaluate("sentiment :", "dev")["accuracy"]
    with pytest.raises(ConfigError, match="spans 2 tokens"):  # one forward reads one token per class
        LabelWordsEnv(task=task, candidates=["bad", "good"])


def test_hill_climbing_replaces_words_within_each_class_list(toy_lm_task):
    """Per-class lists of different lengths: a move replaces one class's word by another of its
    own list (never swaps across classes), and the prompt reported is one that was scored."""
    config = replace(
        toy_lm_task.config,
        env=ENVS["label_words"].config_class(
            candidates=[["bad", "awful"], ["good", "fun", "great", "love"]], batch_size=16
        ),
    )
    env = make_env(toy_lm_task, config)
    assert [len(c) for c in env.candidates] == [3, 5]
    agent = AGENT_REGISTRY["hill_climb"].agent_class(env, AGENT_REGISTRY["hill_climb"].config_class(seed=0))
    agent.learn(total_prompt_evals=80)
    found = agent.predict()
    assert found.label_words[0] in env.candidates[0] and found.label_words[1] in env.candidates[1]
    from rlprompt.task_models.base import prompt_key

    assert prompt_key(found) in agent.tracker.records or found == env.default_prompt()
    for slots in ([0, 4], [2, 1]):
        for position in (0, 1):
            mask = env.mask_at(slots, position)
            assert not mask[len(env.candidates[position]) :].any()


def test_env_masks_distinct_words_and_plays_masked_actions(toy_lm_task):
    env = LabelWordsEnv(task=toy_lm_task, candidates=["bad", "good", "fun"], batch_size=8)
    assert env.candidates == [["negative", "bad", "good", "fun"], ["positive", "bad", "good", "fun"]]
    obs, _ = env.reset(seed=0)
    assert obs.tolist() == [0, 0]
    env.step(1)  # class 0 reads "bad"
    assert not env.action_masks()[1] and env.action_masks().sum() == 3
    obs, reward, terminated, _, info = env.step(1)  # "bad" again is masked: the first allowed word
    assert terminated and info["label_words"] == ["bad", "positive"] and obs.tolist() == [2, 1]
    assert np.isfinite(reward)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["env.candidates=[[bad], [good], [fun]]"], "3 word lists for 2 classes"),
        (["env.candidates=[bad, [good]]"], "not a mix"),
        (["env.candidates=[' bad']"], "not a word"),
        (["env.vocab_regex=[a-"], "not a valid regular expression"),
        (["env.per_class=0"], "per_class"),
        (["env.candidates=[[fun], [good]]", "env.seed_manual=false"], "needs at least 2"),
    ],
)
def test_bad_label_word_settings_are_one_clear_error(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        task = Task.from_config(toy_lm_config(["env.kind=label_words", "agent.name=random_search", *overrides]))
        make_env(task, task.config)


def test_label_words_need_a_classification_task_an_instruction_template_and_an_lm_head(minilm_task):
    with pytest.raises(ConfigError, match="classification"):
        load_config(
            None,
            [
                "task=generation",
                "task_model.kind=causal_lm",
                "data.dir=x",
                "template={question} {prompt}",
                "env.kind=label_words",
                "agent.name=random_search",
            ],
        )
    with pytest.raises(ConfigError, match="env.kind: demos"):
        toy_lm_config(
            [
                "template={demos}review : {sentence} {prompt}",
                "demos.template=review : {sentence} {label_word} ",
                "env.kind=label_words",
                "agent.name=random_search",
            ]
        )
    with pytest.raises(ConfigError, match="causal_lm or masked_lm"):
        LabelWordsEnv(task=minilm_task)
    with pytest.raises(ConfigError, match="not in the tokenizer's vocabulary"):
        LabelWordsEnv(task=Task.from_config(toy_lm_config()), candidates=["zebra"])


def test_checkpoint_keeps_labeled_prompts_and_the_label_word_cache(tmp_path):
    # listed candidates: building the env scores nothing, so only the restored cache can spare LM calls
    config = toy_lm_config(
        [
            "env.kind=label_words",
            "env.candidates=[good, bad, fun, awful, great]",
            "agent.name=random_search",
            "budget.prompt_evals=40",
            "output.checkpoint_every=1",
        ]
    )
    run = tmp_path / "run"
    result = run_experiment(config, run, progress=False)
    payload = load_checkpoint(run / "checkpoint.safetensors")
    stored = [record[0] for record in payload["tracker"]["records"].values()]
    assert stored and all(isinstance(p, LabeledPrompt) for p in stored)
    fresh = Task.from_config(config)
    agent = load_run_checkpoint(run / "checkpoint.safetensors", fresh, make_env(fresh, config), config)
    before = fresh.task_model.stats.lm_calls
    fresh.score_requests([stored[0]], [list(range(16))], "train")  # scored in training: restored from the cache
    assert fresh.task_model.stats.lm_calls == before
    assert agent.lm_calls == result.lm_calls


# ------------------------------------------------------------------ joint edits (TEMPERA's space)


def test_edit_env_edits_label_words_beside_the_instruction(toy_lm_task):
    from gymnasium.utils.env_checker import check_env

    from rlprompt.envs import PromptEditEnv

    env = PromptEditEnv(
        task=toy_lm_task,
        pool=["sentiment", ":", "review", "it", "was"],
        max_units=4,
        max_edits=3,
        label_words=[["bad", "awful"], ["good", "fun", "great"]],
        batch_size=16,
    )
    check_env(env, skip_render_check=True)
    assert env.word_candidates == [["negative", "bad", "awful"], ["positive", "good", "fun", "great"]]
    assert env.default_prompt() == LabeledPrompt("sentiment :", ("negative", "positive"))
    obs, info = env.reset(seed=0)
    assert info["prompt_value"] == env.default_prompt() and obs.shape == env.observation_space.shape
    label = env.edits.index(("label", 1, 2))  # class 1 reads "fun"
    obs, reward, _, _, info = env.step(label)
    assert info["prompt_value"] == LabeledPrompt("sentiment :", ("negative", "fun")) and obs[env.max_units + 1] == 3
    assert np.isfinite(reward) and not env.action_masks()[label]  # no change: masked
    env.step(env.edits.index(("replace", 0, 3)))  # the instruction's first word becomes "it"
    assert env.current_prompt() == LabeledPrompt("it :", ("negative", "fun"))
    assert env.reset(options={"prompt": LabeledPrompt("was", ("awful", "great"))})[1]["prompt_value"].label_words == (
        "awful",
        "great",
    )
    with pytest.raises(ConfigError, match="cannot read"):
        env.reset(options={"prompt": LabeledPrompt("was", ("zebra", "great"))})
    # a shared list: a class never takes the word another class reads, and a masked edit changes nothing
    shared = PromptEditEnv(
        task=toy_lm_task, pool=["sentiment", ":"], max_units=3, max_edits=4, label_words=["bad", "good"], batch_size=16
    )
    shared.reset(seed=0)
    shared.step(shared.edits.index(("label", 0, 2)))  # class 0 reads "good"
    taken = shared.edits.index(("label", 1, 2))  # class 1 "good" too: masked
    assert not shared.action_masks()[taken]
    before = shared.current_prompt()
    _, reward, _, _, info = shared.step(taken)
    assert shared.current_prompt() == before == LabeledPrompt("sentiment :", ("good", "positive")) and reward == 0.0
    for bad, message in (
        ([" bad"], "not a word"),
        (["bad", ["good"]], "not a mix"),
        ([["bad", 1], ["good"]], "not a word"),
    ):
        with pytest.raises(ConfigError, match=message):
            ENVS["edit"].config_class(label_words=bad)


@pytest.mark.parametrize("agent", ["a2c", "dqn", "hill_climb", "ppo", "q_table", "random_search"])
def test_every_edit_agent_runs_on_joint_edits(agent, toy_lm_task):
    config = replace(
        toy_lm_task.config,
        env=ENVS["edit"].config_class(
            pool=["sentiment", ":", "review", "it"],
            max_units=4,
            max_edits=3,
            label_words=["bad", "good", "fun"],
            batch_size=16,
        ),
    )
    env = make_env(toy_lm_task, config)
    model = AGENT_REGISTRY[agent].agent_class(env, AGENT_REGISTRY[agent].config_class(seed=0))
    model.learn(total_prompt_evals=48)
    assert isinstance(model.predict(), LabeledPrompt)
    assert any(isinstance(r.prompt, LabeledPrompt) for r in model.tracker.records.values())


def test_joint_edit_run_finds_words_the_manual_ones_lose_to(tmp_path):
    """Hill climbing over instruction and label-word edits of the toy LM's prompt: the words it
    finds beat the manual ones on dev and on test (0.59 and 0.43 with 'negative'/'positive')."""
    config = toy_lm_config(
        [
            "env.kind=edit",
            "env.pool=[sentiment, ':']",
            "env.max_units=3",
            "env.max_edits=3",
            "env.label_words=[bad, good, fun, awful, great, movie, boring]",
            "env.batch_size=32",
            "agent.name=hill_climb",
            "budget.prompt_evals=300",
            "seed=0",
        ]
    )
    result = run_experiment(config, tmp_path / "run", progress=False)
    assert result.label_words is not None and result.label_words != ["negative", "positive"] and not result.manual_kept
    assert result.metrics["dev"]["accuracy"] >= result.baseline["metrics"]["dev"]["accuracy"] + 0.05
    assert result.metrics["test"]["accuracy"] >= result.baseline["metrics"]["test"]["accuracy"] + 0.05
    assert evaluate_run(tmp_path / "run", "test")["reproduces"]
