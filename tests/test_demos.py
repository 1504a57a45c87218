"""Demonstrations as a search space: the one renderer, the demonstration env, no example
scoring itself, cached scoring with demonstrations, RL against random search on a toy task
with a known best block, run / eval --run / export round trips, and bad input."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from rlprompt.config import config_from_dict
from rlprompt.envs import DemoSelectionEnv
from rlprompt.errors import ConfigError, DataError, RLPromptError
from rlprompt.task import Task
from rlprompt.task_models import build_task_model
from rlprompt.template import DemoPool, model_template, render, shows_input
from rlprompt.testing.toy import make_toy_demo_task, make_toy_task

sys.path.insert(0, str(Path(__file__).parent))
from test_agents import run  # noqa: E402
from test_generation import gen_config, write_qa  # noqa: E402

SST_DEMO = "Review: {sentence}\nSentiment: {label_word}\n\n"
QA_DEMO = "{context}\nQuestion: {question}\nAnswer: {answer}\n\n"


def demo_config(model_dir, data_dir, **extra):
    """The tiny GPT-2 on the demo data, demonstrations before the review (no score caches)."""
    data = {
        "task_model": {"kind": "causal_lm", "name_or_path": str(model_dir), "cache_size": 0},
        "data": {"dir": str(data_dir)},
        "template": "{demos}Review: {sentence}\n{prompt}",
        "prompt": "Sentiment:",
        "verbalizers": [" negative", " positive"],
        "demos": {"template": SST_DEMO},
        "env": {"kind": "demos", "k": 2, "batch_size": 4},
        "agent": {"name": "random_search"},
    }
    for key, value in extra.items():  # a section with another kind replaces the section
        merge = isinstance(value, dict) and "kind" not in value
        data[key] = {**data.get(key, {}), **value} if merge else value
    return config_from_dict(data)


# ------------------------------------------------------------------ one renderer


def test_one_renderer_for_both_task_families(tiny_clm_dir, small_data, tmp_path):
    pool = DemoPool(SST_DEMO, ["A fine film.", "Dull."], ["positive", "negative"], [1, 0])
    assert pool.texts == ["Review: A fine film.\nSentiment: positive\n\n", "Review: Dull.\nSentiment: negative\n\n"]
    assert pool.render([1, 0]) == pool.texts[1] + pool.texts[0] and pool.parse(pool.render([1, 0])) == [1, 0]
    assert pool.parse("Review: something else") is None and pool.parse("") == []
    qa = DemoPool(QA_DEMO, [{"context": "Paris is in France.", "question": "Where is Paris?"}], ["France"], [None])
    assert qa.texts == ["Paris is in France.\nQuestion: Where is Paris?\nAnswer: France\n\n"]
    # the model's template: the instruction written in, the demonstrations at the model's slot
    assert (
        model_template("{demos}Review: {sentence}\n{prompt}", "Sentiment:") == "{prompt}Review: {sentence}\nSentiment:"
    )
    assert model_template("{sentence} {prompt}", "It was") == "{sentence} {prompt}"
    assert render("a {prompt}.", {"prompt": ""}) == "a."  # whitespace before an empty value goes with it
    # the task renders through the same module: classification and generation
    task = Task.from_config(demo_config(tiny_clm_dir, small_data))
    first = task.data.train
    assert (
        task.demo_pool().texts[0]
        == f"Review: {first.texts[0]}\nSentiment: {['negative', 'positive'][first.labels[0]]}\n\n"
    )
    assert task.config.manual_prompt == "" and task.task_model.template == "{prompt}Review: {sentence}\nSentiment:"
    qa_dir = write_qa(tmp_path / "qa")
    qa_task = Task.from_config(
        gen_config(
            tiny_clm_dir,
            qa_dir,
            "{demos}{context} {question} {prompt}",
            demos={"template": "{context} {question} answer: {answer}\n\n"},
            env={"kind": "demos", "k": 2},
            agent={"name": "random_search"},
        )
    )
    row = qa_task.data.train
    assert (
        qa_task.demo_pool().texts[0]
        == f"{row.examples[0]['context']} {row.examples[0]['question']} answer: {row.references[0][0]}\n\n"
    )
    env = DemoSelectionEnv(task=qa_task, k=2, batch_size=3)  # a generation task runs the env too
    env.reset(seed=0)
    env.step(4)
    _, reward, done, _, info = env.step(1)
    assert done and np.isfinite(reward) and info["demos"] == [4, 1] and info["scorings"] == 3
    metrics = qa_task.evaluate(info["prompt"], "train")
    assert metrics["n"] == len(row) - 2 and metrics["shown_excluded"] == 2


def test_a_block_is_tokenized_as_the_whole_string_is(smollm2_dir):
    """A block of demonstrations ends in a blank line; SmolLM2's BPE makes "\n\n" one token alone
    and two before "Review": the block's tokens come from the joint tokenization, so a spliced
    sequence equals the tokenization of the whole text."""
    from transformers import AutoTokenizer

    from rlprompt.task_models.sequences import TemplateLayout

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    template = model_template("{demos}Review: {sentence}\n{prompt}", "Sentiment:")
    layout = TemplateLayout(template, tokenizer, max_sentence_tokens=128)
    pool = DemoPool(
        SST_DEMO, ["a fine film .", "dull and long .", "it works ."], ["positive", "negative", "positive"], [1, 0, 1]
    )
    block = pool.render([1, 0, 2])
    assert tokenizer(block)["input_ids"] != tokenizer(block + "Review:")["input_ids"][:-2]  # the boundary effect
    for review in ("one more film .", "the plot , such as it is , thins ."):
        pre, post = layout.encode_texts([review])[0]
        whole = tokenizer(render(template, {"prompt": block, "sentence": review}))["input_ids"]
        assert pre + layout.prompt_ids(block) + post == whole
    assert layout.prompt_ids("Sentiment:") == tokenizer("Sentiment:")["input_ids"]  # no trailing whitespace: as before


# ------------------------------------------------------------------ no example scores itself


def test_no_demonstration_scores_itself():
    task = make_toy_demo_task(k=3, seed=0)
    scored: list[list[str]] = []
    original = task.task_model.score_pairs

    def recording(prompts, texts_per_prompt):
        scored.extend([list(t) for t in texts_per_prompt])
        return original(prompts, texts_per_prompt)

    task.task_model.score_pairs = recording
    env = DemoSelectionEnv(task=task, k=3, batch_size=29)  # 32 train examples: a batch of 29 must avoid all 3 shown
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    for _ in range(40):
        for _ in range(3):
            _, _, done, _, info = env.step(env.sample_action(rng))
        shown = {task.data.train.texts[i] for i in info["demos"]}
        assert len(shown) == 3 and len(scored[-1]) == 29 and not shown & set(scored[-1])
        env.reset()
    block = env.pool.render([0, 1, 2])
    assert all(shows_input(block, task.data.train.texts[i]) for i in (0, 1, 2))
    assert task.unshown(block, "train", range(32)) == list(range(3, 32))
    metrics = task.evaluate(block, "train")
    assert metrics["n"] == 29 and metrics["shown_excluded"] == 3
    assert "shown_excluded" not in task.evaluate(block, "test") and task.evaluate(block, "test")["n"] == 32
    scored.clear()
    task.reward([block, ""], range(32))  # the API call too: the block on 29, the zero-shot prompt on all 32
    assert [len(s) for s in scored] == [29, 32]
    with pytest.raises(RLPromptError, match="none is left"):
        task.reward([block], [0, 1, 2])


# ------------------------------------------------------------------ cached scoring


def test_prefix_cached_scores_with_demonstrations_equal_the_full_forward(tiny_clm_dir, small_data):
    task = Task.from_config(demo_config(tiny_clm_dir, small_data))
    cached = task.task_model
    plain = build_task_model(
        dataclasses.replace(task.config.task_model, prefix_cache_mb=0),
        task.config.model_template,
        task.config.verbalizers,
        model=cached.model,
        tokenizer=cached.tokenizer,
    )
    assert cached.prefix_caching and not plain.prefix_caching
    pool = task.demo_pool()
    blocks = [pool.render(ids) for ids in ([0, 1], [5, 2, 7, 9], [3, 4, 6, 8, 10])]
    texts = task.data.test.texts[:6]
    for prompts in (blocks, blocks[::-1]):  # the second call reuses the blocks' caches
        a, b = cached.score(prompts, texts), plain.score(prompts, texts)
        assert (a - b).abs().max() < 1e-4, (a - b).abs().max()
    assert cached.prefix_cache.hits >= 3


# ------------------------------------------------------------------ RL against random search


def toy_demo_qualities(name: str, seeds: tuple[int, ...], budget: int = 600) -> list[dict[str, float]]:
    """Greedy quality of ``name`` and of random search on the toy demonstration task, per seed."""
    outcomes = []
    for seed in seeds:
        quality = {}
        for agent_name in (name, "random_search"):
            agent, env = run(agent_name, "demos", seed, budget)
            quality[agent_name] = float(env.task.task_model.quality(agent.predict()))
        outcomes.append(quality)
    return outcomes


def test_an_rl_agent_beats_random_search_on_the_toy_demonstration_task():
    """The toy task's best block is 3 of 32 train examples in one order (29,760 blocks): at 600
    evaluations random search holds 1-2 of them in place, PPO the whole block on most seeds."""
    outcomes = toy_demo_qualities("ppo", (0, 1, 2))
    shown = f"greedy quality per seed {outcomes}"
    assert sum(q["ppo"] > q["random_search"] for q in outcomes) >= 2, shown
    assert np.mean([q["ppo"] for q in outcomes]) > np.mean([q["random_search"] for q in outcomes]), shown


def test_hill_climbing_swaps_and_replaces_demonstrations_to_the_best_block(tmp_path):
    """Local search over blocks: the first iteration keeps the best random block, then swaps
    (order) and replacements (which examples) that raise the reward. At 600 evaluations it holds
    the whole best block on seeds 0-3 (asserted: at least 3 of 4; random search: 1-2 of its 3 in place)."""
    from rlprompt.agents import AGENT_REGISTRY, Agent

    outcomes = toy_demo_qualities("hill_climb", (0, 1, 2, 3))
    shown = f"greedy quality per seed {outcomes}"
    assert all(q["hill_climb"] > q["random_search"] for q in outcomes), shown
    assert sum(q["hill_climb"] >= 0.9 for q in outcomes) >= 3, shown
    # every move keeps a valid block (no repeats, class quota) and a saved agent resumes as it was
    task = make_toy_demo_task(k=4, seed=1)
    env = DemoSelectionEnv(task=task, k=4, balanced=True, batch_size=8)
    spec = AGENT_REGISTRY["hill_climb"]
    agent = spec.agent_class(env, spec.config_class(seed=0, n_envs=8))
    agent.learn(total_prompt_evals=160)
    for _ in range(200):
        block = agent._neighbour(env, agent.slots)
        labels = [task.demo_pool().labels[i] for i in block]
        assert len(set(block)) == 4 and sorted(labels) == [0, 0, 1, 1], block
    # the copies of one iteration score on one minibatch: the same examples, less each block's own
    copies = [env, env.spawn()]
    for copy in copies:
        copy.reset(options=env.shared_minibatch(7))
    pool = task.demo_pool()
    plain = copies[0]._draw_unshown("")
    shown = task.data.train.texts.index(pool.examples[int(plain[0])])
    with_block = copies[1]._draw_unshown(pool.render([shown]))
    assert len(plain) == len(with_block) == 8 and set(plain) - {shown} <= set(with_block)
    with pytest.raises(ConfigError, match="minibatch_seed"):
        env.reset(options={"minibatch_seed": -1})
    agent.save(tmp_path / "hc.safetensors")
    loaded = Agent.load(tmp_path / "hc.safetensors", DemoSelectionEnv(task=task, k=4, balanced=True, batch_size=8))
    assert loaded.slots == agent.slots and loaded.predict() == agent.predict()
    assert task.demo_pool().parse(agent.predict()) == agent.slots


# ------------------------------------------------------------------ run, eval --run, export


def test_run_eval_and_export_round_trip_with_demonstrations(tiny_clm_dir, small_data, tmp_path):
    from rlprompt.experiment import evaluate_run, run_experiment
    from rlprompt.export import export_run
    from rlprompt.results import RunResult

    config = demo_config(
        tiny_clm_dir,
        small_data,
        budget={"prompt_evals": 16},
        selection={"include_manual": False},
        output={"plot": False, "tensorboard": False},
    )
    result = run_experiment(config, tmp_path / "run", progress=False)
    saved = RunResult.load(tmp_path / "run" / "best_prompt.json")
    demos = saved.demonstrations
    task = Task.from_config(config)
    assert (
        demos["ids"] is not None and len(demos["ids"]) == 2 and task.demo_pool().render(demos["ids"]) == result.prompt
    )
    assert demos["texts"] == [task.demo_pool().texts[i] for i in demos["ids"]] and demos["instruction"] == "Sentiment:"
    assert demos["label_words"] == ["negative", "positive"] and saved.baseline["prompt"] == ""
    assert saved.metrics["train"]["shown_excluded"] == 2 and saved.metrics["train"]["n"] == len(task.data.train) - 2
    for split in ("train", "test"):
        check = evaluate_run(tmp_path / "run", split)
        assert check["reproduces"], check
    exported = json.loads(Path(export_run(tmp_path / "run", "json", tmp_path / "export.json")).read_text())
    assert exported["prompt"] == result.prompt and exported["demonstrations"]["ids"] == demos["ids"]
    assert exported["rendered"] == result.prompt + "Review: {sentence}\nSentiment:"
    assert exported["template"] == "{demos}Review: {sentence}\n{prompt}"


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"demos": {"template": "Review: {sentence}\n\n"}}, r"must show the answer with '\{label_word\}'"),
        ({"demos": {"template": "{review} -> {label_word}\n"}}, r"unknown placeholder '\{review\}'"),
        ({"demos": {"template": "{label_word}\n"}}, "shows no input field"),
        ({"demos": {"template": None}}, "set demos.template"),
        ({"template": "Review: {sentence}\n{prompt}"}, r"env.kind=demos searches demonstrations: put '\{demos\}'"),
        ({"template": "Review: {sentence}\n{demos}{prompt}"}, r"'\{demos\}' must come before the input"),
        ({"template": "{demos}{demos}Review: {sentence}\n{prompt}"}, "at most once"),
        ({"env": {"kind": "edit"}}, "use env.kind: demos"),
        ({"prompt": "Say {x}:"}, "has a placeholder"),
    ],
)
def test_bad_demonstration_configs_are_one_clear_error(tiny_clm_dir, small_data, change, message):
    with pytest.raises(ConfigError, match=message):
        demo_config(tiny_clm_dir, small_data, **change)


def test_bad_pools_and_k_are_one_clear_error(tiny_clm_dir, small_data, tmp_path):
    task = Task.from_config(demo_config(tiny_clm_dir, small_data))
    with pytest.raises(ConfigError, match="env.k=40 demonstrations from a pool of 32 examples"):
        DemoSelectionEnv(task=task, k=40)
    labels = np.asarray(task.data.train.labels)
    lopsided = [*np.flatnonzero(labels == 0)[:4], np.flatnonzero(labels == 1)[0]]  # 4 + 1: at most 3 of a class
    with pytest.raises(ConfigError, match=r"the pool's classes \[4, 1\] cannot fill 5 slots"):
        DemoSelectionEnv(
            task=Task(
                task.config, dataclasses.replace(task.data, train=task.data.train.subset(lopsided)), task.task_model
            ),
            k=5,
            balanced=True,
        )
    empty = tmp_path / "empty.tsv"
    empty.write_text("sentence\tlabel\n")
    with pytest.raises((ConfigError, DataError), match="empty|no examples"):
        Task(
            dataclasses.replace(task.config, demos=dataclasses.replace(task.config.demos, pool=str(empty))),
            task.data,
            task.task_model,
        ).demo_pool()
    with pytest.raises(ConfigError, match="no such file"):
        Task(
            dataclasses.replace(
                task.config, demos=dataclasses.replace(task.config.demos, pool=str(tmp_path / "nope.tsv"))
            ),
            task.data,
            task.task_model,
        ).demo_pool()
    with pytest.raises(ConfigError, match="shows no demonstrations"):
        make_toy_task().demo_pool()  # an instruction task has no pool
