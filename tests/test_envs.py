"""Gymnasium envs: env checker on every id, seeding, batched vector env, wrappers, SB3, errors."""

from __future__ import annotations

import functools
import os
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import rlprompt.envs
from rlprompt.envs import (
    BatchedPromptVectorEnv,
    EpisodeStatistics,
    LMCallBudget,
    NormalizeReward,
    PromptEditEnv,
    PromptSelectionEnv,
    SoftPromptEnv,
    TokenPromptEnv,
    build_vocabulary,
    make_batched_vector_env,
)
from rlprompt.envs.edit import enumerate_edits
from rlprompt.errors import ConfigError
from rlprompt.registry import ENVS
from rlprompt.task import Task
from rlprompt.testing.toy import make_toy_demo_task, make_toy_task
from rlprompt.testing.toy_lm import toy_lm_config

TOY_KWARGS = {
    "rlprompt/TokenPrompt-v0": {"prompt_length": 3},
    "rlprompt/PromptSelection-v0": {"candidates": ["w00 w01 w02", "w03 w04 w05", "w06 w07 w08"]},
    "rlprompt/PromptEdit-v0": {"max_units": 4, "max_edits": 3},
    "rlprompt/SoftPrompt-v0": {"init_prompt": "w00 w01 w02", "subspace_dim": 10},
    "rlprompt/DemoSelection-v0": {"k": 3},
    "rlprompt/LabelWords-v0": {"per_class": 4, "vocab_regex": None},
}


@functools.cache
def toy_lm_task():
    return Task.from_config(toy_lm_config())


def task_for(env_id: str, toy_task):
    """The toy task an env kind runs on: envs that search demonstrations get the toy
    demonstration task (its template has ``{demos}``), label words the toy LM's (whose head
    reads them), the others the toy instruction task."""
    kind = next(k for k in ENVS.names() if ENVS[k].gym_id == env_id)
    searches = ENVS[kind].config_class.searches
    if searches == "demos":
        return make_toy_demo_task(k=3)
    return toy_lm_task() if searches == "label_words" else toy_task


@pytest.fixture
def toy_task():
    return make_toy_task(vocab_size=10, prompt_length=3, seed=0)


REGISTERED_IDS = sorted(ENVS[kind].gym_id for kind in ENVS.names())


def test_every_registered_id_is_covered():
    registered = {env_id for env_id in gym.registry if env_id.startswith("rlprompt/")}
    assert registered == set(rlprompt.envs.ENV_IDS) == set(REGISTERED_IDS)
    assert set(TOY_KWARGS) <= set(REGISTERED_IDS)


@pytest.mark.parametrize("env_id", REGISTERED_IDS)
def test_env_checker_passes_without_warnings(env_id, toy_task):
    """Every registered kind (a new one with its defaults, unless TOY_KWARGS sizes it down)."""
    env = gym.make(
        env_id, task=task_for(env_id, toy_task), render_mode="ansi", batch_size=8, **TOY_KWARGS.get(env_id, {})
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped, skip_render_check=False)
    messages = [str(w.message) for w in caught]
    assert messages == []
    env.reset(seed=0)
    env.step(env.action_space.sample())
    assert "prompt:" in env.unwrapped.render()


def _rollout(env: gym.Env, seed: int, steps: int = 12):
    env.action_space.seed(seed)
    obs, info = env.reset(seed=seed)
    trace = [(np.asarray(obs).tolist(), info)]
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        trace.append((np.asarray(obs).tolist(), reward, terminated, truncated, info))
        if terminated or truncated:
            obs, info = env.reset()
            trace.append((np.asarray(obs).tolist(), info))
    return trace


@pytest.mark.parametrize("env_id", sorted(TOY_KWARGS))
def test_seeded_resets_reproduce_episodes(env_id, toy_task):
    make = lambda: gym.make(env_id, task=task_for(env_id, toy_task), batch_size=4, **TOY_KWARGS[env_id])  # noqa: E731
    first, second = _rollout(make(), 7), _rollout(make(), 7)
    assert repr(first) == repr(second)
    assert repr(_rollout(make(), 8)) != repr(first)  # another seed draws other minibatches/actions


def test_make_without_kwargs_builds_the_embedded_default_task():
    env = gym.make("rlprompt/TokenPrompt-v0", prompt_length=2, render_mode="ansi")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2,) and (obs == 0).all()
    vocabulary = env.unwrapped.vocabulary
    assert len(vocabulary) == 1000 and all(w.isalpha() for w in vocabulary)
    _, r0, term0, _, info0 = env.step(vocabulary.index("it"))
    assert r0 == 0.0 and not term0 and info0["scorings"] == 0
    _, reward, terminated, _, info = env.step(vocabulary.index("was"))
    assert terminated and info["prompt"] == "it was" and info["scorings"] == 16
    assert np.isfinite(reward) and reward == pytest.approx(info["metrics"]["reward"])
    assert "it was" in env.unwrapped.render()


def test_token_env_shaping_rewards_sum_to_final_score(toy_task):
    env = TokenPromptEnv(task=toy_task, prompt_length=3, shaping=True, batch_size=8)
    env.reset(seed=1)
    rewards = []
    for action in [3, 1, 4]:
        _, reward, terminated, _, info = env.step(action)
        rewards.append(reward)
    assert terminated
    assert sum(rewards) == pytest.approx(info["metrics"]["reward"], abs=1e-5)


def test_stepping_a_finished_episode_is_a_clear_error(toy_task):
    env = TokenPromptEnv(task=toy_task, prompt_length=1)
    env.reset(seed=0)
    env.step(1)
    with pytest.raises(ConfigError, match="episode is over"):
        env.step(1)


def test_spawned_copies_do_not_share_episode_state(toy_task):
    env = TokenPromptEnv(task=toy_task, prompt_length=3)
    env.reset(seed=0)
    env.step(1)
    copy = env.spawn()
    copy.step(2)
    assert env._tokens == [1] and copy._tokens == [1, 2] and copy.task is env.task


def test_token_env_variable_length_stop_action(toy_task):
    env = TokenPromptEnv(task=toy_task, prompt_length=4, fixed_length=False)
    assert env.action_space.n == len(env.vocabulary) + 1
    env.reset(seed=0)
    env.step(2)
    _, _, terminated, _, info = env.step(env.stop_action)
    assert terminated and info["prompt"] == env.vocabulary[2]


def test_vocabulary_from_tokenizers(minilm_task, tiny_clm_dir):
    from rlprompt.task_models.loading import load_tokenizer
    from rlprompt.task_models.vocab import tokenizer_words

    words = build_vocabulary(minilm_task.task_model, top_k=300)
    assert "the" in words and not any(w.startswith("##") or w.startswith("[") for w in words)
    bpe_tokenizer = load_tokenizer(str(tiny_clm_dir))
    bpe = type("M", (), {"words": lambda self: tokenizer_words(bpe_tokenizer)})()
    bpe_words = build_vocabulary(bpe, top_k=None)
    assert "great" in bpe_words and all("Ġ" not in w for w in bpe_words)
    assert (
        build_vocabulary(minilm_task.task_model, regex=r"[a-z]{4}", top_k=5)
        == [w for w in words if len(w) == 4 and w.islower()][:5]
    )


def test_edit_env_rewards_telescope_and_masks(toy_task):
    env = PromptEditEnv(task=toy_task, start_prompt="w00 w01", max_units=4, max_edits=4, batch_size=None)
    _, info = env.reset(seed=0)
    start = info["start_score"]
    target = toy_task.task_model.target
    # replace both words by the target's and insert its last word: the score must rise.
    actions = [
        env.edits.index(("replace", 0, env.pool.index(target[0]))),
        env.edits.index(("replace", 1, env.pool.index(target[1]))),
        env.edits.index(("insert", 2, env.pool.index(target[2]))),
    ]
    total = 0.0
    for action in actions:
        assert env.action_masks()[action]
        _, reward, terminated, truncated, info = env.step(action)
        total += reward
    assert info["prompt"] == " ".join(target)
    assert total == pytest.approx(info["score"] - start, abs=1e-5) and total > 0
    _, reward, terminated, truncated, _ = env.step(env.edits.index(("delete", 3, -1)))  # past the end: no-op
    assert reward == 0.0 and truncated and not terminated
    env.reset(seed=0)
    _, _, terminated, _, _ = env.step(env.edits.index(("stop", -1, -1)))
    assert terminated


def test_edit_pool_from_a_file_of_instructions(toy_task, tmp_path):
    """``env.pool`` as a candidates file: the distinct words of its prompts, outer punctuation stripped,
    a final colon kept, comments skipped, first-seen order, cut to ``pool_size``; edits then insert those words."""
    from rlprompt.envs.edit import EditEnvConfig

    instructions = tmp_path / "instructions.txt"
    instructions.write_text(
        "# candidate instructions\nUse w03, then w01.\n\n# w09 is commented out\nw03 (w05)! (w06):\n"
    )
    env = PromptEditEnv.from_config(
        toy_task, EditEnvConfig(pool=str(instructions), pool_size=4, max_units=4, batch_size=None)
    )
    assert env.pool == ["Use", "w03", "then", "w01"]
    assert len(env.edits) == len(enumerate_edits(4, 4))
    env.reset(seed=0, options={"prompt": "w01"})
    _, _, _, _, info = env.step(env.edits.index(("insert", 0, env.pool.index("w03"))))
    assert info["prompt"] == "w03 w01"
    assert PromptEditEnv.from_config(toy_task, EditEnvConfig(pool=str(instructions), max_units=4)).pool == [
        "Use",
        "w03",
        "then",
        "w01",
        "w05",
        "w06:",
    ]
    assert PromptEditEnv.from_config(toy_task, EditEnvConfig(pool=["w07 w08", "w02"], max_units=4)).pool == [
        "w07 w08",
        "w02",
    ]
    with pytest.raises(ConfigError, match="file not found"):
        PromptEditEnv.from_config(toy_task, EditEnvConfig(pool=str(tmp_path / "missing.txt")))
    (tmp_path / "punctuation.txt").write_text("# a comment\n... !!\n")
    with pytest.raises(ConfigError, match="holds no words"):
        PromptEditEnv.from_config(toy_task, EditEnvConfig(pool=str(tmp_path / "punctuation.txt")))
    with pytest.raises(ConfigError, match="empty list"):
        EditEnvConfig(pool=[])
    with pytest.raises(ConfigError, match="non-empty string"):
        EditEnvConfig(pool=["w01", " "])


def test_selection_env_candidates_with_templates_and_verbalizers(minilm_task):
    candidates = [
        "It was",
        {"prompt": "It was", "verbalizers": ["{prompt} bad.", "{prompt} good."]},
        {"prompt": "Overall", "template": "{prompt}: {sentence}"},
    ]
    env = PromptSelectionEnv(task=minilm_task, candidates=candidates, batch_size=None)
    rewards = []
    for k in range(3):
        env.reset(seed=0)
        _, reward, terminated, _, info = env.step(k)
        rewards.append(reward)
        assert terminated and info["candidate"] == k
    assert len(set(rewards)) == 3
    assert env._tasks[1].task_model.model is minilm_task.task_model.model  # weights shared, not reloaded


def test_builtin_candidate_lists():
    from rlprompt.envs import load_candidates

    assert "It was" in load_candidates("sentiment")
    assert len(load_candidates("topic")) >= 5


def test_soft_env_projection_and_scores(toy_task):
    env = SoftPromptEnv(task=toy_task, init_prompt="w00 w01 w02", subspace_dim=6, bound=0.5, projection_seed=3)
    zero = env.soft_prompt(np.zeros(6))
    assert torch.allclose(zero, toy_task.task_model.prompt_embeddings("w00 w01 w02"))
    env.reset(seed=0)
    _, r1, *_ = env.step(np.full(6, 0.3, dtype=np.float32))
    env.reset(seed=0)
    _, r2, *_ = env.step(np.full(6, -0.3, dtype=np.float32))
    assert r1 != r2
    again = SoftPromptEnv(task=toy_task, init_prompt="w00 w01 w02", subspace_dim=6, bound=0.5, projection_seed=3)
    assert torch.equal(again.projection, env.projection)


def test_soft_env_on_minilm_uses_the_soft_prompt_path(minilm_task):
    env = SoftPromptEnv(task=minilm_task, n_tokens=3, subspace_dim=20, batch_size=8)
    env.reset(seed=0)
    before = minilm_task.task_model.stats.lm_calls
    _, reward, terminated, _, info = env.step(np.zeros(20, dtype=np.float32))
    assert terminated and np.isfinite(reward) and minilm_task.task_model.stats.lm_calls - before == 8


# ------------------------------------------------------------------ vector env


def test_vector_env_step_is_one_forward_batch(minilm_task):
    tm = minilm_task.task_model
    num_envs = 8
    vec = make_batched_vector_env(TokenPromptEnv, num_envs, task=minilm_task, prompt_length=1, batch_size=4)
    vec.reset(seed=0)
    tm.clear_cache()
    tm._verbalizer_cache.clear()
    actions = np.arange(100, 100 + num_envs)
    before = tm.stats.as_dict()
    _, rewards, terminated, _, infos = vec.step(actions)
    after = tm.stats.as_dict()
    assert terminated.all()
    assert after["forward_batches"] - before["forward_batches"] == 1
    assert after["lm_calls"] - before["lm_calls"] == num_envs * 4
    # The same prompts through independent envs: N calls, same rewards.
    tm.clear_cache()
    tm._verbalizer_cache.clear()
    singles = []
    start = tm.stats.forward_batches
    for i in range(num_envs):
        env = TokenPromptEnv(task=minilm_task, prompt_length=1, batch_size=4)
        env.reset(seed=i)
        singles.append(env.step(int(actions[i]))[1])
    assert tm.stats.forward_batches - start == num_envs
    np.testing.assert_allclose(rewards, singles, atol=1e-5)


def test_vector_env_next_step_autoreset(toy_task):
    vec = make_batched_vector_env(TokenPromptEnv, 3, task=toy_task, prompt_length=2, batch_size=4)
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (3, 2)
    vec.step(np.array([1, 2, 3]))
    obs, rewards, terminated, _, infos = vec.step(np.array([1, 2, 3]))
    assert terminated.all() and (obs > 0).all()
    obs, rewards, terminated, truncated, _ = vec.step(np.array([4, 4, 4]))  # ignored: resets
    assert (obs == 0).all() and (rewards == 0).all() and not terminated.any() and not truncated.any()


def test_vector_env_same_step_autoreset(toy_task):
    vec = make_batched_vector_env(TokenPromptEnv, 2, task=toy_task, prompt_length=1, autoreset_mode="SameStep")
    vec.reset(seed=0)
    obs, rewards, terminated, _, infos = vec.step(np.array([1, 2]))
    assert terminated.all() and (obs == 0).all()
    assert infos["final_obs"][0].tolist() == [2] and infos["final_info"]["prompt"][1] == "w02"


def test_make_vec_modes(toy_task):
    batched = gym.make_vec(
        "rlprompt/PromptSelection-v0", num_envs=4, task=toy_task, candidates=["w00", "w01 w02"], batch_size=4
    )
    assert isinstance(batched, BatchedPromptVectorEnv)
    batched.reset(seed=0)
    _, rewards, terminated, _, _ = batched.step(np.array([0, 1, 0, 1]))
    assert terminated.all() and rewards.shape == (4,)
    sync = gym.make_vec(
        "rlprompt/TokenPrompt-v0", num_envs=2, vectorization_mode="sync", task=toy_task, prompt_length=1
    )
    sync.reset(seed=0)
    _, rewards, terminated, _, _ = sync.step(np.array([1, 2]))
    assert terminated.all()


# ------------------------------------------------------------------ wrappers


def test_lm_call_budget_truncates(toy_task):
    env = LMCallBudget(TokenPromptEnv(task=toy_task, prompt_length=1, batch_size=4), max_lm_calls=10)
    env.reset(seed=0)
    _, _, _, truncated, info = env.step(1)
    assert not truncated and info["budget_left"] == {"lm_calls": 6}
    env.reset()
    env.step(1)
    env.reset()
    _, _, _, truncated, info = env.step(1)
    assert truncated and info["budget_exhausted"] and env.spent()["lm_calls"] == 12
    with pytest.raises(ConfigError, match="needs max_lm_calls"):
        LMCallBudget(env.env)


def test_normalize_reward_running_zscore(toy_task):
    env = NormalizeReward(PromptSelectionEnv(task=toy_task, candidates=["w00", "w01 w02", "w03"], batch_size=4))
    raw, normalized = [], []
    env.reset(seed=0)
    for k in [0, 1, 2, 0, 1, 2, 1, 1]:
        env.reset()
        _, reward, _, _, info = env.step(k)
        raw.append(info["raw_reward"])
        normalized.append(reward)
    expected = (raw[-1] - np.mean(raw)) / np.std(raw)
    assert normalized[-1] == pytest.approx(expected, rel=1e-4)
    assert env.count == 8


def test_episode_statistics(toy_task):
    env = EpisodeStatistics(TokenPromptEnv(task=toy_task, prompt_length=2, batch_size=4))
    env.reset(seed=0)
    env.step(1)
    _, reward, terminated, _, info = env.step(2)
    assert terminated and info["episode"]["l"] == 2 and info["episode"]["r"] == pytest.approx(reward)
    assert info["episode"]["prompt"] == "w01 w02" and info["episode"]["scorings"] == 4


# ------------------------------------------------------------------ bad kwargs


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda t: TokenPromptEnv(task=t, vocabulary=[]), "vocabulary is empty"),
        (lambda t: TokenPromptEnv(task=t, vocab_regex="zzz+"), "vocabulary is empty"),
        (lambda t: TokenPromptEnv(task=t, prompt_length=0), "prompt_length must be >= 1"),
        (lambda t: PromptSelectionEnv(task=t, candidates=[]), "K = 0"),
        (lambda t: PromptSelectionEnv(task=t, candidates="/nonexistent.txt"), "candidates file not found"),
        (lambda t: SoftPromptEnv(task=t, init_prompt="w00 w01", subspace_dim=17), r"subspace_dim must lie in 1\.\.16"),
        (lambda t: SoftPromptEnv(task=t, n_tokens=0), "n_tokens must be >= 1"),
        (lambda t: PromptEditEnv(task=t, max_edits=0), "max_edits must be >= 1"),
        (lambda t: TokenPromptEnv(task=t, batch_size=0), "batch_size must be >= 1"),
        (lambda t: TokenPromptEnv(task=t, render_mode="human"), "render_mode must be one of"),
    ],
)
def test_bad_kwargs_raise_one_clear_error(toy_task, factory, message):
    with pytest.raises(ConfigError, match=message):
        factory(toy_task)


def test_vector_env_rejects_mismatched_spaces(toy_task):
    with pytest.raises(ConfigError, match="same spaces"):
        BatchedPromptVectorEnv(
            [TokenPromptEnv(task=toy_task, prompt_length=2), TokenPromptEnv(task=toy_task, prompt_length=3)]
        )


# ------------------------------------------------------------------ Stable-Baselines3


def _sb3():
    try:
        import stable_baselines3
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("stable-baselines3 is part of the test extra and must be installed under CI")
        pytest.skip("stable-baselines3 not installed")
    return stable_baselines3


@pytest.mark.parametrize("env_name", ["token", "selection"])
def test_sb3_ppo_mean_reward_rises(env_name):
    sb3 = _sb3()
    from stable_baselines3.common.monitor import Monitor

    task = make_toy_task(vocab_size=8, prompt_length=3, seed=0)
    if env_name == "token":
        env = Monitor(TokenPromptEnv(task=task, prompt_length=3, batch_size=8))
        total, window = 1200, 60
    else:
        target = " ".join(task.task_model.target)
        env = Monitor(
            PromptSelectionEnv(
                task=task, candidates=["w00 w01 w02", target, "w03 w04 w05", "w06 w07 w01"], batch_size=8
            )
        )
        total, window = 640, 64
    model = sb3.PPO(
        "MlpPolicy", env, n_steps=96, batch_size=48, learning_rate=3e-3, ent_coef=0.01, seed=0, device="cpu"
    )
    model.learn(total_timesteps=total)
    rewards = env.get_episode_rewards()
    assert np.mean(rewards[-window:]) > np.mean(rewards[:window]) + 1.0


def test_edit_env_leaves_room_for_a_long_start_instruction():
    """``max_units: null`` fits the start prompt plus 3 words (at least 8); a set value too small
    for the config's prompt is one config error; a run saved with the old default 8 reads as null."""
    from rlprompt.config import load_config, upgrade_saved_config

    task = make_toy_task()
    words = task.task_model.vocabulary
    long = " ".join(words[:11])
    env = PromptEditEnv(task=task, start_prompt=long, batch_size=4)
    assert env.max_units == 14 and env.reset(seed=0)[0][:11].tolist() == [i + 1 for i in env._start_ids]
    assert PromptEditEnv(task=task, batch_size=4).max_units == 8
    with pytest.raises(ConfigError, match="more than max_units=5"):
        PromptEditEnv(task=task, start_prompt=long, max_units=5)
    with pytest.raises(ConfigError, match="set env.max_units to at least 11"):
        load_config(None, [f"prompt={long}", "agent.name=ppo", "env.kind=edit", "env.max_units=8"])
    assert load_config(None, [f"prompt={long}", "agent.name=ppo", "env.kind=edit"]).env.max_units is None
    saved = {"prompt": "It was", "env": {"kind": "edit", "max_units": 8}}
    assert upgrade_saved_config(saved)["env"]["max_units"] is None
    saved["prompt"] = "one two three four five six"  # null would now give 9: the saved 8 stays
    assert upgrade_saved_config(saved)["env"]["max_units"] == 8
