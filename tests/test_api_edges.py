"""Typed edges of the Python API (issue 30, item 4): Task.reward/evaluate/from_config (both task
families), gym.make/make_vec kwargs, env actions, seeds and URLs. Every bad input is one
RLPromptError naming the argument, raised before any model loads; valid calls keep their numbers."""

from __future__ import annotations

import json
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import rlprompt.envs  # noqa: F401 - registers the Gymnasium ids
import rlprompt.task
from rlprompt.config import config_from_dict
from rlprompt.envs import (
    LMCallBudget,
    NormalizeReward,
    PromptEditEnv,
    PromptSelectionEnv,
    SoftPromptEnv,
    TokenPromptEnv,
    make_batched_vector_env,
)
from rlprompt.errors import ConfigError, RLPromptError
from rlprompt.task import Task
from rlprompt.testing.toy import make_toy_task

TOY_PROMPT = "w00 w01 w02"
OLD_REWARDS = [-4.010593891143799, -1.5765373706817627]
"""``reward([TOY_PROMPT, "w03 w04 w05"], [0, 1])`` on the toy task, as the code before these checks gave."""


@pytest.fixture
def toy():
    return make_toy_task(vocab_size=10, prompt_length=3)


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if anything loads data or builds a task model (errors must come first)."""

    def loaded(*args, **kwargs):
        pytest.fail("a model or data was loaded before the bad input was refused")

    monkeypatch.setattr(rlprompt.task, "load_task_data", loaded)
    monkeypatch.setattr(rlprompt.task, "build_task_model", loaded)


def refused(call, *words: str, error: type[Exception] = RLPromptError) -> str:
    """Run ``call``; it must raise one ``error`` whose one-line message holds every word."""
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)
    return message


# ------------------------------------------------------------------ Task.reward / evaluate


def test_a_str_is_not_a_list_of_prompts_and_a_list_keeps_its_numbers(toy):
    refused(lambda: toy.reward("It was", indices=[0, 1]), "prompts must be a list of prompts", "got a str")
    refused(lambda: toy.logits("It was"), "prompts must be a list of prompts")
    refused(lambda: toy.score_requests("ab", [[0], [1]]), "prompts must be a list of prompts")
    refused(lambda: toy.reward([]), "prompts is empty")
    refused(lambda: toy.reward([TOY_PROMPT, 3]), "prompts[1] must be a str", "int")
    refused(lambda: toy.reward(torch.zeros(2, 3, 8, 1)), "prompts must be a text prompt", "[2, 3, 8, 1]")
    refused(lambda: toy.reward([torch.full((3, 8), float("nan"))]), "prompts[0]", "finite")
    before = toy.prompt_evals
    rewards = toy.reward([TOY_PROMPT, "w03 w04 w05"], [0, 1])
    assert rewards.tolist() == pytest.approx(OLD_REWARDS, abs=1e-6)
    assert toy.reward((TOY_PROMPT, "w03 w04 w05"), np.array([0, 1])).tolist() == pytest.approx(OLD_REWARDS, abs=1e-6)
    assert toy.reward(np.array([TOY_PROMPT]), range(2)).tolist() == pytest.approx(OLD_REWARDS[:1], abs=1e-6)
    assert toy.prompt_evals == before + 5  # refused calls charged nothing


@pytest.mark.parametrize("split", ["train", "dev", "test"])
@pytest.mark.parametrize(
    ("indices", "words"),
    [
        ([0.9], ("indices must be integers", "float 0.9")),
        ([True], ("indices must be integers", "bool True")),
        ([0, np.float64(1.0)], ("indices must be integers", "indices[1]")),
        (np.array([0.0, 1.0]), ("indices must be integers", "float64")),
        (np.array([True, False]), ("indices must be integers", "bool")),
        ("01", ("indices must be a list of example indices", "str")),
        (3, ("indices must be a list of example indices", "int 3")),
        ([[0, 1]], ("indices must be integers", "list [0, 1]")),
        (np.array([[0, 1]]), ("indices must be a 1-D list", "(1, 2)")),
        ([], ("indices is empty",)),
        ([-1], ("indices: example index -1 is out of range",)),
        ([32], ("indices: example index 32 is out of range", "(32 examples)")),
    ],
)
def test_indices_are_integers_in_range_for_every_split(toy, split, indices, words):
    message = refused(lambda: toy.reward([TOY_PROMPT], indices, split), *words)
    if "out of range" in message:
        assert f"the {split} split" in message
    # numpy integer types are integers
    good = toy.reward([TOY_PROMPT], [np.int64(2), np.int32(5), 7], split)
    assert good.tolist() == pytest.approx(toy.reward([TOY_PROMPT], [2, 5, 7], split).tolist())


def test_dev_reward_unchanged_and_splits_named(toy):
    assert toy.reward([TOY_PROMPT], [2, 5, 7], "dev").tolist() == pytest.approx([-3.256634473800659], abs=1e-6)
    refused(lambda: toy.reward([TOY_PROMPT], [0], "validation"), "split must be one of ['train', 'dev', 'test']")
    refused(lambda: toy.reward([TOY_PROMPT], [0], 0), "split must be one of", "int 0")
    refused(lambda: toy.evaluate(TOY_PROMPT, ["test"]), "split must be one of", "list")


def test_evaluate_takes_one_prompt(toy):
    refused(lambda: toy.evaluate([TOY_PROMPT], "test"), "prompt must be one prompt", "reward()")
    refused(lambda: toy.evaluate(None, "test"), "prompt must be a str", "NoneType")
    refused(lambda: toy.evaluate(torch.zeros(8), "test"), "prompt must be a text prompt", "[8]")
    metrics = toy.evaluate(TOY_PROMPT, "test")
    assert metrics["reward"] == pytest.approx(-4.2278876304626465, abs=1e-6) and metrics["accuracy"] == 0.0


def test_score_requests_pairs_prompts_with_index_sets(toy):
    refused(
        lambda: toy.score_requests([TOY_PROMPT, TOY_PROMPT], [[0, 1]]),
        "one example-index list per prompt",
        "2 prompts, 1 index lists",
    )
    refused(lambda: toy.score_requests([TOY_PROMPT], [[0.5]]), "indices[0] must be integers")
    refused(lambda: toy.score_requests([TOY_PROMPT], "0"), "indices must be a list of example-index lists")
    rewards, _ = toy.score_requests([TOY_PROMPT, "w03 w04 w05"], [np.array([0, 1]), [0, 1]])
    assert rewards.tolist() == pytest.approx(OLD_REWARDS, abs=1e-6)


def test_from_config_takes_loaded_objects_and_checks_them_first(no_loading):
    refused(lambda: Task.from_config({}, model="gpt2"), "model= takes a loaded model object", "task_model.name_or_path")
    refused(lambda: Task.from_config({}, tokenizer=123), "tokenizer= takes a loaded tokenizer object")
    refused(lambda: Task.from_config({}, model=object()), "model= takes a loaded torch model", "object")
    config = rlprompt.task.as_config({})
    refused(lambda: rlprompt.task.evaluate_prompt(config, split="validation"), "split must be one of")
    refused(lambda: rlprompt.task.evaluate_prompt(config, prompt=["It was"]), "prompt must be one prompt")


# ------------------------------------------------------------------ generation task


@pytest.fixture(scope="module")
def gen_task(tiny_clm_dir, tmp_path_factory):
    data = tmp_path_factory.mktemp("qa")
    for split in ("train", "dev", "test"):
        rows = [
            {"context": f"{split} film {i} was {w}", "question": "how ?", "answers": [w]}
            for i, w in enumerate(["great", "bad", "funny", "dull"])
        ]
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = config_from_dict(
        {
            "task": "generation",
            "template": "{context} {question} {prompt} answer:",
            "prompt": "it was",
            "task_model": {"kind": "causal_lm", "name_or_path": str(tiny_clm_dir), "cache_size": 0, "device": "cpu"},
            "data": {"dir": str(data)},
            "generation": {"max_new_tokens": 2, "metrics": ["f1"]},
        }
    )
    return Task.from_config(config)


def test_generation_task_checks_the_same_edges(gen_task):
    refused(lambda: gen_task.reward("it was", [0, 1]), "prompts must be a list of prompts", "got a str")
    refused(lambda: gen_task.reward(["it was"], [0.5]), "indices must be integers")
    refused(lambda: gen_task.reward(["it was"], [True]), "indices must be integers")
    refused(
        lambda: gen_task.reward(["it was"], [4], "dev"), "indices: example index 4 is out of range for the dev split"
    )
    refused(lambda: gen_task.reward(["it was"], None, "valid"), "split must be one of")
    refused(lambda: gen_task.evaluate(["it was"], "test"), "prompt must be one prompt")
    refused(lambda: gen_task.score_requests(["it was"], [[0], [1]]), "one example-index list per prompt")
    one = gen_task.reward(["it was"], [0, 1])
    both = gen_task.reward(["it was", "so it was"], np.array([0, 1]))
    assert one.shape == (1,) and both.shape == (2,) and both[0].item() == pytest.approx(one.item(), abs=1e-5)


# ------------------------------------------------------------------ env actions


def test_vector_env_refuses_a_wrong_number_of_actions_and_changes_nothing(toy):
    vec = make_batched_vector_env(TokenPromptEnv, 2, task=toy, prompt_length=2)
    vec.reset(seed=0)
    refused(lambda: vec.step(np.array([1, 2, 3])), "actions must have shape (2,)", "got shape (3,)")
    refused(lambda: vec.step(np.array([1])), "actions must have shape (2,)", "got shape (1,)")
    refused(lambda: vec.step(1), "actions must have shape (2,)", "a single action")
    refused(lambda: vec.step(np.array([1, 99])), "actions[1]", "action 99 is outside Discrete(10)")
    assert [env._tokens for env in vec.envs] == [[], []]  # the valid first action was not applied either
    _, rewards, _, _, infos = vec.step(np.array([1, 2]))
    assert infos["prompt"].tolist() == ["w01", "w02"]
    soft = make_batched_vector_env(SoftPromptEnv, 2, task=toy, init_prompt=TOY_PROMPT, subspace_dim=4)
    soft.reset(seed=0)
    refused(lambda: soft.step(np.zeros((3, 4), np.float32)), "actions must have shape (2, 4)", "(3, 4)")
    refused(lambda: soft.step(np.zeros((2, 5), np.float32)), "actions must have shape (2, 4)", "(2, 5)")


def _soft(task, **kwargs) -> SoftPromptEnv:
    return SoftPromptEnv(task=task, init_prompt=TOY_PROMPT, subspace_dim=4, batch_size=8, **kwargs)


def _soft_step(env: SoftPromptEnv, action) -> tuple[float, dict]:
    env.reset(seed=0)
    _, reward, _, _, info = env.step(np.asarray(action, dtype=np.float32))
    return reward, info


def test_soft_env_refuses_actions_outside_the_box(toy):
    env = _soft(toy)
    env.reset(seed=0)
    refused(
        lambda: env.step(np.full(4, 100.0, np.float32)),
        "action is outside the action space",
        "coordinate 0 is 100.0",
        "clip_actions",
    )
    refused(lambda: env.step(np.array([0, 0, 0, -1.5], np.float32)), "coordinate 3 is -1.5")
    refused(lambda: env.step(np.array([0, np.inf, 0, 0])), "action must be 4 finite numbers", "coordinate 1")
    refused(lambda: env.step(np.full(4, np.nan)), "action must be 4 finite numbers")
    refused(lambda: env.step(np.zeros((2, 2))), "action must be 4 finite numbers", "shape (2, 2)")
    refused(lambda: env.step(["0.5"] * 4), "action must be 4 finite numbers", "<U3")
    refused(lambda: env.step("0.5"), "action must be a vector of 4 numbers")
    refused(lambda: env.soft_prompt(np.full(4, 2.0)), "action is outside the action space")
    reward, info = _soft_step(env, [0.5, -0.25, 1.0, -1.0])  # the box's edges are in it
    assert reward == pytest.approx(-4.656958103179932, abs=1e-6)
    assert info["clipped"] is False and "|z|=1.521" in info["prompt"]


def test_soft_env_clips_only_when_configured_and_says_so(toy):
    env = _soft(toy, clip_actions=True)
    at_edge, edge_info = _soft_step(env, np.ones(4))
    far, far_info = _soft_step(env, np.full(4, 100.0))
    assert far == pytest.approx(at_edge) and far_info["clipped"] is True and edge_info["clipped"] is False
    assert "|z|=2.000" in far_info["prompt"]  # the norm of the clipped action, not of the one sent (200)
    refused(lambda: _soft_step(env, np.full(4, np.nan)), "finite")  # NaN is never clipped into the box
    config = config_from_dict(
        {"env": {"kind": "soft", "clip_actions": True, "subspace_dim": 4}, "agent": {"name": "cma_es"}}
    )
    built = SoftPromptEnv.from_config(toy, config.env)
    assert built.clip_actions is True and config_from_dict({"agent": {"name": "cma_es"}}).env.clip_actions is False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(
            gym.make(
                "rlprompt/SoftPrompt-v0", task=toy, init_prompt=TOY_PROMPT, subspace_dim=4, clip_actions=True
            ).unwrapped
        )
    assert [str(w.message) for w in caught] == []


@pytest.mark.parametrize("kind", ["token", "selection", "edit"])
def test_discrete_envs_refuse_out_of_space_actions_and_policies(toy, kind):
    if kind == "token":
        env = TokenPromptEnv(task=toy, prompt_length=2)
    elif kind == "selection":
        env = PromptSelectionEnv(task=toy, candidates=[TOY_PROMPT, "w03 w04"])
    else:
        env = PromptEditEnv(task=toy, max_units=4, max_edits=2)
    n = int(env.action_space.n)
    env.reset(seed=0)
    for action in (-1, n, 1.5, np.array([1, 2]), "1", True, None):
        message = refused(lambda a=action: env.step(a), "action")
        assert f"Discrete({n}) (0..{n - 1})" in message
    # a policy's out-of-space choice is refused too, not read as an index from the end
    refused(lambda: env.decode(lambda obs, mask: -1), f"action -1 is outside Discrete({n})")
    refused(lambda: env.decode(lambda obs, mask: 0.0), "action must be an integer")


# ------------------------------------------------------------------ gym.make / make_vec kwargs


@pytest.mark.parametrize(
    ("env_id", "kwargs", "words"),
    [
        ("rlprompt/TokenPrompt-v0", {"prompt_length": "5"}, ("prompt_length must be an integer", "str '5'")),
        ("rlprompt/TokenPrompt-v0", {"prompt_length": 5.0}, ("prompt_length' must be an integer", "5.0")),
        ("rlprompt/TokenPrompt-v0", {"prompt_length": True}, ("prompt_length' must be an integer",)),
        ("rlprompt/TokenPrompt-v0", {"prompt_length": -1}, ("env.prompt_length must be >= 1",)),
        ("rlprompt/TokenPrompt-v0", {"batch_size": "16"}, ("batch_size must be an integer",)),
        ("rlprompt/TokenPrompt-v0", {"vocab_top_k": "10"}, ("vocab_top_k must be an integer",)),
        ("rlprompt/TokenPrompt-v0", {"fixed_length": "no"}, ("fixed_length must be", "str 'no'")),
        ("rlprompt/TokenPrompt-v0", {"vocabulary": "abc"}, ("vocabulary must be a list of words",)),
        ("rlprompt/TokenPrompt-v0", {"promt_length": 5}, ("unknown argument 'promt_length'", "'prompt_length'")),
        ("rlprompt/TokenPrompt-v0", {"task": "sst2"}, ("task= must be an rlprompt Task", "str 'sst2'")),
        ("rlprompt/TokenPrompt-v0", {"config": 5}, ("config= must be a Config",)),
        ("rlprompt/TokenPrompt-v0", {"overrides": "seed=1"}, ("overrides= must be a list",)),
        ("rlprompt/TokenPrompt-v0", {"split": "validation"}, ("split must be one of",)),
        ("rlprompt/SoftPrompt-v0", {"bound": "1"}, ("bound must be a number", "str '1'")),
        ("rlprompt/SoftPrompt-v0", {"bound": float("nan")}, ("bound' must be a finite number",)),
        ("rlprompt/SoftPrompt-v0", {"subspace_dim": 0}, ("env.subspace_dim must be >= 1",)),
        ("rlprompt/SoftPrompt-v0", {"projection_seed": -1}, ("env.projection_seed must lie in 0 <= seed < 2**32",)),
        ("rlprompt/SoftPrompt-v0", {"clip_actions": 1}, ("clip_actions' must be true or false",)),
        ("rlprompt/SoftPrompt-v0", {"init_prompt": 5}, ("init_prompt must be a string",)),
        ("rlprompt/PromptEdit-v0", {"max_edits": 0.5}, ("max_edits' must be an integer",)),
        ("rlprompt/PromptEdit-v0", {"pool_size": 0}, ("env.pool_size must be >= 1",)),
        ("rlprompt/PromptSelection-v0", {"candidates": 5}, ("candidates' must be a string",)),
    ],
)
def test_make_kwargs_are_checked_by_the_env_config_before_loading(no_loading, env_id, kwargs, words):
    refused(lambda: gym.make(env_id, **kwargs), *words, error=ConfigError)
    refused(lambda: gym.make_vec(env_id, num_envs=2, **kwargs), *words, error=ConfigError)


def test_make_vec_arguments_and_valid_numpy_kwargs(no_loading, toy):
    refused(
        lambda: gym.make_vec("rlprompt/TokenPrompt-v0", num_envs="2"),
        "num_envs must be an integer >= 1",
        error=ConfigError,
    )
    refused(
        lambda: gym.make_vec("rlprompt/TokenPrompt-v0", num_envs=0),
        "num_envs must be an integer >= 1",
        error=ConfigError,
    )
    refused(
        lambda: gym.make_vec("rlprompt/TokenPrompt-v0", num_envs=2, autoreset_mode="Sometimes"),
        "autoreset_mode must be one of",
        error=ConfigError,
    )
    refused(lambda: TokenPromptEnv(toy, None, None, 5), "TokenPromptEnv", "positional", error=ConfigError)
    env = gym.make("rlprompt/TokenPrompt-v0", task=toy, prompt_length=np.int64(2), batch_size=np.int32(4))
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2,)
    vec = gym.make_vec("rlprompt/PromptSelection-v0", num_envs=np.int64(2), task=toy, candidates=(TOY_PROMPT, "w03"))
    vec.reset(seed=np.int64(0))
    assert vec.step(np.array([0, 1]))[1].shape == (2,)


# ------------------------------------------------------------------ seeds and URLs


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"seed": -1}, "seed"),
        ({"seed": 2**64 + 1}, "seed"),
        ({"seed": 2**32}, "seed"),
        ({"data": {"seed": -3}}, "data.seed"),
        ({"agent": {"name": "random_search", "seed": -1}}, "agent.seed"),
    ],
)
def test_seeds_are_range_checked_before_any_model_loads(no_loading, data, key):
    words = (f"{key} must be an integer with 0 <= {key} < 2**32",)
    refused(lambda: config_from_dict(data), *words, error=ConfigError)
    refused(lambda: rlprompt.task.as_config(data), *words, error=ConfigError)
    overrides = [f"{key}={value}" for key, value in _flat(data)]
    refused(lambda: gym.make("rlprompt/TokenPrompt-v0", overrides=overrides), *words, error=ConfigError)


def _flat(data: dict, prefix: str = ""):
    for key, value in data.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def test_reset_seeds_are_checked_and_numpy_integers_work(toy):
    env = TokenPromptEnv(task=toy, prompt_length=1, batch_size=4)
    refused(lambda: env.reset(seed=-1), "reset seed must be a non-negative integer", error=ConfigError)
    refused(lambda: env.reset(seed=1.5), "reset seed must be a non-negative integer", "float", error=ConfigError)
    refused(lambda: env.reset(seed="1"), "reset seed", error=ConfigError)
    refused(lambda: env.reset(seed=0, options=["prompt"]), "reset options must be a dict", error=ConfigError)
    env.reset(seed=np.int64(7))
    drawn = env._episode_indices.tolist()
    env.reset(seed=7)
    assert env._episode_indices.tolist() == drawn
    vec = make_batched_vector_env(TokenPromptEnv, 2, task=toy, prompt_length=1, batch_size=4)
    vec.reset(seed=np.int64(3))
    refused(lambda: vec.reset(seed=[0, -1]), "reset seed[1] must be a non-negative integer", error=ConfigError)
    refused(lambda: vec.reset(seed=[0]), "1 seeds for 2 envs", error=ConfigError)
    refused(lambda: vec.reset(seed=2.0), "reset seed must be", error=ConfigError)
    edit = PromptEditEnv(task=toy, max_units=4, max_edits=2)
    refused(
        lambda: edit.reset(seed=0, options={"prompt": 5}),
        "options['prompt'] must be a prompt string",
        error=ConfigError,
    )


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://[::1", ("task_model.base_url is not a valid URL", "Invalid IPv6 URL")),
        ("http://127.0.0.1:99999/v1", ("task_model.base_url is not a valid URL", "Port")),
        ("http://127.0.0.1:port/v1", ("task_model.base_url is not a valid URL",)),
        ("http:///v1", ("task_model.base_url names no host",)),
        ("http://local host/v1", ("task_model.base_url must not contain spaces",)),
    ],
)
def test_base_url_is_a_valid_http_url(url, words):
    data = {
        "task_model": {"kind": "openai", "base_url": url, "model": "m", "api_key_env": None},
        "verbalizers": [" bad", " good"],
    }
    refused(lambda: config_from_dict(data), *words, error=ConfigError)
    ok = {**data, "task_model": {**data["task_model"], "base_url": "http://[::1]:8000/v1"}}
    assert config_from_dict(ok).task_model.base_url == "http://[::1]:8000/v1"


# ------------------------------------------------------------------ wrappers


def test_wrapper_numbers_are_checked(toy):
    env = TokenPromptEnv(task=toy, prompt_length=1)
    refused(lambda: LMCallBudget(env, max_lm_calls="5"), "max_lm_calls must be an integer >= 1", error=ConfigError)
    refused(
        lambda: LMCallBudget(env, max_prompt_evals=2.5), "max_prompt_evals must be an integer >= 1", error=ConfigError
    )
    refused(lambda: NormalizeReward(env, epsilon=-1.0), "epsilon must be a finite number > 0", error=ConfigError)
    refused(lambda: NormalizeReward(env, clip="10"), "clip must be a finite number > 0 (or None)", error=ConfigError)
    assert LMCallBudget(env, max_lm_calls=np.int64(5)).max_lm_calls == 5
    assert NormalizeReward(env, clip=None).clip is None


@pytest.mark.parametrize(
    "args, message",
    [
        ((5,), "a config path must be a str or a path"),
        ((None, "seed=1"), "overrides must be a list of 'key=value' strings"),
        ((None, [3]), "overrides must be a list"),
    ],
)
def test_load_config_checks_its_arguments(args, message):
    from rlprompt import load_config

    with pytest.raises(ConfigError, match=message):
        load_config(*args)
