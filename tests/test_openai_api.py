"""The served task model (``task_model.kind: openai``) against real local servers.

A server of our own (``rlprompt.testing.openai_server``) serves the tiny GPT-2 with its real
log-probs and injects faults; every server here listens on 127.0.0.1, answers a bounded number
of requests and stops by itself. The ``transformers serve`` drill (SmolLM2) is in the slow tier.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import clm_config, openai_config
from rlprompt.config import config_from_dict
from rlprompt.data import demo_dir
from rlprompt.errors import ConfigError, RLPromptError
from rlprompt.task import Task
from rlprompt.task_models.openai_api import ApiError, LogprobsUnavailable, match_verbalizer, render, verbalizer_scores
from rlprompt.testing.openai_server import OpenAICompatibleServer

TEXTS = ["a warm , funny film", "i checked my watch four times", "not bad at all", "it was great ."]
PROMPTS = ["it was", "honestly", ""]


@pytest.fixture(scope="module")
def local_task(tiny_clm_dir):
    return Task.from_config(clm_config(tiny_clm_dir))


def served(server: OpenAICompatibleServer, **task_model) -> Task:
    return Task.from_config(openai_config(server.base_url, **task_model))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def own_server(tiny_clm_dir):
    """A fresh server per test (faults, keys and counters of its own), bounded in requests and time."""
    servers: list[OpenAICompatibleServer] = []

    def start(**kwargs) -> OpenAICompatibleServer:
        kwargs.setdefault("model_name", "tiny-gpt2")
        kwargs.setdefault("max_requests", 2000)
        kwargs.setdefault("lifetime_s", 300)
        server = OpenAICompatibleServer(tiny_clm_dir, **kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


# ------------------------------------------------------------------ scoring modes


def test_logprobs_scores_equal_the_local_model(tiny_openai_server, local_task):
    want = local_task.task_model.score(PROMPTS, TEXTS)
    model = served(tiny_openai_server).task_model
    got = model.score(PROMPTS, TEXTS)
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
    assert model.scoring == "logprobs" and model.stats.requests == len(PROMPTS) * len(TEXTS)
    assert model.stats.prompt_tokens > 0 and model.stats.completion_tokens == len(PROMPTS) * len(TEXTS)


def test_echo_scores_multi_token_verbalizers_exactly(tiny_openai_server, tiny_clm_dir):
    base = {"template": "{prompt} {sentence} It was", "verbalizers": [" very bad", " good"]}
    local = Task.from_config(
        config_from_dict({**base, "task_model": {"kind": "causal_lm", "name_or_path": str(tiny_clm_dir)}})
    )
    remote = Task.from_config(
        config_from_dict(
            {
                **base,
                "task_model": {
                    "kind": "openai",
                    "base_url": tiny_openai_server.base_url,
                    "model": "tiny-gpt2",
                    "api_key_env": None,
                    "scoring": "echo",
                    "response_cache": None,
                },
            }
        )
    )
    want, got = local.task_model.score(PROMPTS, TEXTS), remote.task_model.score(PROMPTS, TEXTS)
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
    assert remote.task_model.stats.requests == len(PROMPTS) * len(TEXTS) * 2  # one per (pair, class)


def test_auto_falls_back_to_generation_on_a_server_without_logprobs(own_server):
    server = own_server(logprobs=False)
    model = served(server, scoring="auto", max_tokens=3).task_model
    scores = model.score(["it was"], TEXTS)
    assert model.scoring == "generation"
    # the random tiny model answers no verbalizer: every answer is a tie, counted invalid and wrong
    assert model.stats.invalid_answers == len(TEXTS) and bool((scores[0, :, 0] == scores[0, :, 1]).all())
    with pytest.raises(LogprobsUnavailable, match="log-probabilities"):
        served(server, scoring="logprobs").task_model.score(["it was"], TEXTS)


def test_probability_rewards_are_refused_on_answers_without_log_probs(own_server):
    server = own_server(logprobs=False)
    task = served(server, scoring="auto")
    with pytest.raises(RLPromptError, match="set reward.name: accuracy"):
        task.reward(["it was"], [0, 1])
    task.config.reward.name = "accuracy"
    assert task.reward(["it was"], [0, 1]).shape == (1,)
    task.config.calibration = "batch"  # shifting tied answer scores would invent class probabilities
    with pytest.raises(RLPromptError, match="set calibration: none"):
        task.reward(["it was"], [0, 1])


def test_several_word_verbalizers_need_echo_or_generation(tiny_openai_server, tiny_clm_dir):
    base = {"template": "{prompt} {sentence} It was", "verbalizers": [" very bad", " good"]}
    with pytest.raises(ConfigError, match="several words"):
        Task.from_config(
            config_from_dict(
                {
                    **base,
                    "task_model": {
                        "kind": "openai",
                        "base_url": tiny_openai_server.base_url,
                        "model": "tiny-gpt2",
                        "api_key_env": None,
                        "scoring": "logprobs",
                        "response_cache": None,
                    },
                }
            )
        )
    auto = Task.from_config(
        config_from_dict(
            {
                **base,
                "task_model": {
                    "kind": "openai",
                    "base_url": tiny_openai_server.base_url,
                    "model": "tiny-gpt2",
                    "api_key_env": None,
                    "scoring": "auto",
                    "response_cache": None,
                },
            }
        )
    )
    auto.task_model.score(["it was"], TEXTS[:1])
    assert auto.task_model.scoring == "echo"


def test_generated_answers_map_to_classes():
    verbalizers = [" negative", " positive", " very positive"]
    assert match_verbalizer("Positive.", verbalizers) == 1
    assert match_verbalizer(" very positive!", verbalizers) == 2  # the longest verbalizer that matches
    assert match_verbalizer("negative, I think", verbalizers) == 0
    assert match_verbalizer("The review is positive.", verbalizers) == 1  # the one class named in it
    assert match_verbalizer("It is very positive.", verbalizers) == 2  # 'positive' is inside 'very positive'
    assert match_verbalizer("positive or negative? hard to say", verbalizers[:2]) == 1  # it starts with one
    assert match_verbalizer("not sure, negative and positive", verbalizers[:2]) is None  # two: invalid
    assert match_verbalizer("I cannot tell", verbalizers) is None  # counted invalid
    assert match_verbalizer("", verbalizers) is None
    # every verbalizer's exact token listed: those tokens, for every class alike
    assert verbalizer_scores(
        {" positive": -0.5, "Positive": -1.0, " negative": -2.0}, [" negative", " positive"]
    ) == pytest.approx([-2.0, -0.5])
    # otherwise, for every class, the tokens equal up to case and spaces, summed; absent: below all listed
    scores = verbalizer_scores({" positive": -0.5, "Positive": -1.0, " neg": -2.0}, [" negative", " positive"])
    assert scores[1] == pytest.approx(torch.logsumexp(torch.tensor([-0.5, -1.0]), 0).item())
    assert scores[0] == pytest.approx(-2.0 - torch.log(torch.tensor(2.0)).item())
    assert render("{prompt} {sentence} It was", {"prompt": "", "sentence": "good"}) == " good It was"


def test_tied_scores_count_as_wrong_in_every_metric():
    from rlprompt.rewards import accuracy, classification_metrics

    logits = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([0, 0, 1])
    assert float(accuracy(logits, labels)) == pytest.approx(2 / 3)
    metrics = classification_metrics(logits, labels)
    assert metrics["invalid"] == 1 and metrics["predicted_counts"] == [1, 1]


# ------------------------------------------------------------------ faults


def test_a_burst_of_429s_and_5xx_is_retried_and_counted(own_server):
    server = own_server()
    server.inject("429", "429", "429", "500", "drop")
    model = served(server, backoff_s=0.01, max_concurrency=1).task_model
    scores = model.score(["it was"], TEXTS)
    assert torch.isfinite(scores).all()
    assert model.stats.retries == 5 and model.stats.requests == len(TEXTS)
    assert server.requests_seen == len(TEXTS) + 5 and server.answered == len(TEXTS)


def test_retry_after_is_honoured(own_server):
    server = own_server()
    server.retry_after_s = 1.5
    model = served(server, backoff_s=0.001).task_model
    model.score(["warm up"], TEXTS[:1])  # client set up and connected: what is timed below is the wait
    server.inject("429")
    started = time.perf_counter()
    model.score(["it was"], TEXTS[:1])
    assert time.perf_counter() - started >= 1.45 and model.stats.retries == 1


def test_retries_exhausted_stop_with_a_clear_error(own_server):
    server = own_server()
    server.inject(*["500"] * 10)
    model = served(server, backoff_s=0.01, max_retries=2).task_model
    with pytest.raises(ApiError, match="failed 3 times in a row"):
        model.score(["it was"], TEXTS[:1])


def test_wrong_api_key_is_one_clear_error(own_server, monkeypatch):
    server = own_server(api_key="sk-right")
    monkeypatch.setenv("RLPROMPT_TEST_KEY", "sk-wrong")
    model = served(server, api_key_env="RLPROMPT_TEST_KEY").task_model
    with pytest.raises(ApiError, match=r"refused the API key from \$RLPROMPT_TEST_KEY"):
        model.score(["it was"], TEXTS)
    assert server.requests_seen == 1  # the first refusal stops the batch
    monkeypatch.setenv("RLPROMPT_TEST_KEY", "sk-right")
    assert served(server, api_key_env="RLPROMPT_TEST_KEY").task_model.score(["it was"], TEXTS).shape == (1, 4, 2)


def test_missing_key_variable_and_key_in_config_are_config_errors(monkeypatch):
    monkeypatch.delenv("RLPROMPT_NO_SUCH_KEY", raising=False)
    with pytest.raises(ConfigError, match="RLPROMPT_NO_SUCH_KEY is not set"):
        Task.from_config(openai_config("http://127.0.0.1:9/v1", api_key_env="RLPROMPT_NO_SUCH_KEY"))
    with pytest.raises(ConfigError, match="NAME of an environment variable"):
        openai_config("http://127.0.0.1:9/v1", api_key_env="sk-abc123-secret")
    with pytest.raises(ConfigError, match="base_url"):
        openai_config("127.0.0.1:8000")


def test_unreachable_base_url_fails_fast():
    model = Task.from_config(openai_config(f"http://127.0.0.1:{free_port()}/v1")).task_model
    started = time.perf_counter()
    with pytest.raises(ApiError, match="cannot reach"):
        model.score(["it was"], TEXTS)
    assert time.perf_counter() - started < 5


def test_unknown_model_names_what_the_server_has(own_server):
    server = own_server()
    config = openai_config(server.base_url)
    config.task_model.model = "gpt-9"
    with pytest.raises(ApiError, match=r"model 'gpt-9'.*\['tiny-gpt2'\]"):
        Task.from_config(config).task_model.score(["it was"], TEXTS)


# ------------------------------------------------------------------ cache and budgets


def test_disk_cache_makes_repeated_requests_free_across_instances(own_server, tmp_path):
    server = own_server()
    cache = str(tmp_path / "responses.sqlite")
    first = served(server, response_cache=cache).task_model
    scores = first.score(PROMPTS, TEXTS)
    answered = server.answered
    second = served(server, response_cache=cache).task_model
    assert torch.equal(second.score(PROMPTS, TEXTS), scores)
    assert server.answered == answered  # nothing sent
    assert second.stats.requests == first.stats.requests and second.stats.requests_cached == second.stats.requests
    assert second.stats.prompt_tokens == first.stats.prompt_tokens  # logical counts: same as paid


def test_concurrent_requests_give_the_same_scores(own_server):
    server = own_server()
    one = served(server, max_concurrency=1).task_model.score(PROMPTS, TEXTS)
    many = served(server, max_concurrency=8).task_model.score(PROMPTS, TEXTS)
    assert torch.equal(one, many)


def test_lists_of_prompts_per_request_give_the_same_scores(own_server):
    server = own_server()
    single = served(server).task_model.score(PROMPTS, TEXTS)
    model = served(server, prompts_per_request=5).task_model
    before = server.answered
    assert torch.allclose(model.score(PROMPTS, TEXTS), single, atol=1e-6)
    assert server.answered - before == 3  # 12 texts in lists of 5: 3 requests
    assert model.stats.requests == 3


def small_data(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    for split in ("train", "dev"):
        (path / f"{split}.tsv").write_text((demo_dir() / f"{split}.tsv").read_text())
    lines = (demo_dir() / "test.tsv").read_text().splitlines()
    (path / "test.tsv").write_text("\n".join(lines[:21]) + "\n")
    return path


def run_config(tmp_path: Path, server: OpenAICompatibleServer, budget: dict, **task_model) -> Path:
    config = {
        "task_model": {
            "kind": "openai",
            "base_url": server.base_url,
            "model": "tiny-gpt2",
            "api_key_env": "RLPROMPT_TEST_KEY",
            "scoring": "logprobs",
            "top_logprobs": 2000,
            "response_cache": str(tmp_path / "cache.sqlite"),
            "backoff_s": 0.01,
            **task_model,
        },
        "data": {"dir": str(small_data(tmp_path))},
        "template": "{prompt} {sentence} It was",
        "verbalizers": [" bad", " good"],
        "env": {"kind": "edit", "batch_size": 4},
        "prompt": "it was",
        "agent": {"name": "random_search", "n_envs": 4, "log_interval": 1},
        "budget": budget,
        "output": {"checkpoint_every": 1, "tensorboard": False, "plot": False},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_money_budget_stops_the_run_and_usage_is_reported(own_server, tmp_path, monkeypatch):
    from rlprompt.cli import main

    server = own_server(api_key="sk-test-secret-123")
    monkeypatch.setenv("RLPROMPT_TEST_KEY", "sk-test-secret-123")
    config = run_config(tmp_path, server, {"cost": 0.01}, price_prompt_per_1m=1.0, price_completion_per_1m=2.0)
    assert main(["run", str(config), "-o", str(tmp_path / "run"), "--no-progress"]) == 0
    result = json.loads((tmp_path / "run" / "best_prompt.json").read_text())
    api = result["api"]
    assert api["scoring"] == "logprobs"
    spent = api["training"]["cost"]
    # stops at the budget, overshooting by at most one batch (4 envs x 4 examples = 16 requests)
    total = api["total"]
    largest = (max(r["usage"]["prompt_tokens"] for r in server.answers) * 1.0 + 1 * 2.0) / 1e6
    assert total["requests"] == len(server.answers)
    assert 0.01 - 16 * largest <= spent <= 0.01 + 16 * largest
    assert api["total"]["requests"] > api["training"]["requests"] > 0  # evaluation is counted too
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"requests", "tokens", "cost"} <= set(header)
    for path in (tmp_path / "run").rglob("*"):  # the key is never written to the run directory
        if path.is_file():
            assert b"sk-test-secret-123" not in path.read_bytes(), path


def test_budgets_in_requests_need_a_served_model():
    with pytest.raises(ConfigError, match="budget.requests counts API usage"):
        config_from_dict({"budget": {"requests": 10}})
    with pytest.raises(ConfigError, match="budget.cost needs prices"):
        config_from_dict(
            {
                "task_model": {
                    "kind": "openai",
                    "base_url": "http://127.0.0.1:9/v1",
                    "model": "m",
                    "api_key_env": None,
                },
                "template": "{sentence} {prompt}",
                "verbalizers": [" a", " b"],
                "budget": {"cost": 1.0},
            }
        )


@pytest.mark.slow  # about 60 s on 2 cores: the slow tier
def test_server_killed_mid_run_resumes_to_the_undisturbed_result(own_server, tmp_path, monkeypatch):
    from rlprompt.cli import main

    monkeypatch.setenv("RLPROMPT_TEST_KEY", "k")
    reference_server = own_server(api_key="k")
    reference_dir = tmp_path / "reference"
    reference_dir.mkdir()
    config = run_config(reference_dir, reference_server, {"requests": 160})
    assert main(["run", str(config), "-o", str(reference_dir / "run"), "--no-progress"]) == 0

    server = own_server(api_key="k", max_requests=120)  # dies (answers 503) after 120 requests
    port = server.port
    killed_dir = tmp_path / "killed"
    killed_dir.mkdir()
    config = run_config(killed_dir, server, {"requests": 160}, max_retries=1)
    assert main(["run", str(config), "-o", str(killed_dir / "run"), "--no-progress"]) == 2  # one-line error
    assert (killed_dir / "run" / "checkpoint.safetensors").is_file()  # resumable
    assert not (killed_dir / "run" / "best_prompt.json").exists()
    server.stop()
    restarted = own_server(api_key="k", port=port)  # the same address, as a restarted server has
    assert main(["run", "--resume", str(killed_dir / "run"), "--no-progress"]) == 0

    def stable(run: Path) -> dict:
        data = json.loads((run / "best_prompt.json").read_text())
        data.pop("wall_time_s")
        data["api"]["total"].pop("requests_cached")
        data["api"]["total"].pop("retries")
        data.pop("task_model")  # the label names the server's port
        return data

    assert stable(killed_dir / "run") == stable(reference_dir / "run")
    # the answers received before the failure were not paid again
    assert server.answered + restarted.answered == reference_server.answered


def test_soft_prompts_are_refused_clearly(tiny_openai_server):
    from rlprompt.envs import SoftPromptEnv
    from rlprompt.task_models.base import SoftPromptable

    task = served(tiny_openai_server)
    model = task.task_model
    assert not isinstance(model, SoftPromptable)  # it has no soft-prompt methods, not ones that raise
    with pytest.raises(RLPromptError, match="soft prompts need a local model"):
        model.score([torch.zeros(2, 4)], TEXTS)
    with pytest.raises(RLPromptError, match="task_model.kind=openai has none .*soft prompts need a local model"):
        SoftPromptEnv(task=task)


# ------------------------------------------------------------------ generation tasks


def served_generation_config(local, server: OpenAICompatibleServer):
    """The same generation task, on the served tiny GPT-2."""
    from dataclasses import asdict

    data = asdict(local)
    data["task_model"] = {
        "kind": "openai",
        "base_url": server.base_url,
        "model": "tiny-gpt2",
        "api_key_env": None,
        "response_cache": None,
    }
    data.pop("env", None)
    return config_from_dict(data)


def test_generation_task_on_a_served_model_equals_the_local_one(tiny_openai_server, tiny_clm_dir, tmp_path):
    from test_generation import gen_config, write_qa

    data = write_qa(tmp_path / "qa")
    local = Task.from_config(gen_config(tiny_clm_dir, data))
    remote = Task.from_config(served_generation_config(gen_config(tiny_clm_dir, data), tiny_openai_server))
    prompts = ["it was", "the answer"]
    examples = [list(local.data.train.examples)] * 2
    references = [list(local.data.train.references)] * 2
    want = local.task_model.log_likelihood(prompts, examples, references)
    got = remote.task_model.log_likelihood(prompts, examples, references)
    assert remote.task_model.scoring == "echo"
    for w, g in zip(want, got, strict=True):
        assert torch.allclose(w, g, atol=1e-4), (w - g).abs().max()
    assert remote.task_model.generate(prompts, examples) == local.task_model.generate(prompts, examples)
    assert remote.task_model.stats.generated_tokens > 0
    metrics = remote.evaluate("it was", "dev")
    assert metrics["f1"] == pytest.approx(local.evaluate("it was", "dev")["f1"])
    # stops that count only after text: the server is asked without them, the answer cut here
    after = {"generation": {"stop_after_text": True}}
    local = Task.from_config(gen_config(tiny_clm_dir, data, **after))
    remote = Task.from_config(served_generation_config(gen_config(tiny_clm_dir, data, **after), tiny_openai_server))
    assert remote.task_model.generate(prompts, examples) == local.task_model.generate(prompts, examples)
    bodies = []  # an answer that opens with a line break: asked without stops, cut after its text

    def answer(sent):
        bodies.extend(sent)
        return [{"text": "\nParis\nmore"}] * len(sent)

    remote.task_model._requests = answer
    assert remote.task_model.generate(["a new prompt"], [examples[0][:1]]) == [["Paris"]]
    assert bodies and all("stop" not in body for body in bodies)


def test_likelihood_reward_on_a_server_without_echo_is_one_clear_error(own_server, tiny_clm_dir, tmp_path):
    from test_generation import gen_config, write_qa

    server = own_server(logprobs=False)
    task = Task.from_config(served_generation_config(gen_config(tiny_clm_dir, write_qa(tmp_path / "qa")), server))
    with pytest.raises(LogprobsUnavailable, match="log-probabilities"):
        task.reward(["it was"], [0, 1])
    # a generation metric as the reward works on the same server
    task.config.reward.name = "f1"
    assert task.reward(["it was"], [0, 1]).shape == (1,)


# ------------------------------------------------------------------ transformers serve (slow tier)


@pytest.mark.slow
def test_sst2_run_against_transformers_serve_with_smollm2(smollm2_dir, tmp_path):
    """``transformers serve`` (no logprobs): scoring=auto falls back to generated answers; a short
    run finishes, reports its mode and usage, and ``eval --run`` reproduces it from the cache."""
    from conftest import sst2_dir
    from rlprompt.cli import main
    from rlprompt.testing.openai_server import transformers_serve

    data = sst2_dir(13)
    with transformers_serve(smollm2_dir, free_port()) as base_url:
        config = {
            "task_model": {
                "kind": "openai",
                "base_url": base_url,
                "model": smollm2_dir,
                "api_key_env": None,
                "scoring": "auto",
                "max_tokens": 2,
                "max_concurrency": 4,
                "response_cache": str(tmp_path / "cache.sqlite"),
            },
            "data": {"dir": str(data), "test_limit": 48},
            "template": "Review: {sentence}\n{prompt}",
            "prompt": "Sentiment:",
            "verbalizers": [" negative", " positive"],
            "env": {"kind": "edit", "batch_size": 8},
            "agent": {"name": "random_search", "n_envs": 2, "top_k": 2},
            "reward": {"name": "accuracy"},
            "budget": {"prompt_evals": 8},
            "output": {"tensorboard": False, "plot": False},
        }
        path = tmp_path / "served.yaml"
        path.write_text(yaml.safe_dump(config))
        assert main(["run", str(path), "-o", str(tmp_path / "run"), "--no-progress"]) == 0
        result = json.loads((tmp_path / "run" / "best_prompt.json").read_text())
        assert result["api"]["scoring"] == "generation"
        manual = result["baseline"]["metrics"]["test"]
        answered = sum(manual["predicted_counts"])  # the others were answers naming no class
        assert manual["n"] == 48 and manual["invalid"] == 48 - answered and answered >= 24
        assert manual["accuracy"] * 48 / answered >= 0.7  # SmolLM2's ' positive'/' negative' answers are mostly right
        assert result["api"]["total"]["invalid_answers"] >= manual["invalid"]
        assert main(["eval", "--run", str(tmp_path / "run")]) == 0
        # a model the server does not serve: one clear error naming it
        wrong = Task.from_config(openai_config(base_url, model="gpt-9", scoring="generation"))
        with pytest.raises(ApiError, match="gpt-9"):
            wrong.task_model.score(["Sentiment:"], TEXTS[:1])
