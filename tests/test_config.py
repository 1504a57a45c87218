"""Configs: strict keys, typed values, overrides, cross-field checks, JSON round trip."""

from __future__ import annotations

import json

import pytest

from rlprompt.config import Config, config_from_dict, config_to_dict, load_config, save_config
from rlprompt.errors import ConfigError


def test_defaults_are_the_embedded_demo_task():
    cfg = Config()
    assert cfg.task_model.kind == "encoder" and cfg.task_model.name_or_path == "embedded"
    assert cfg.prompt == "It was" and cfg.reward.name == "gold_log_prob"


def test_unknown_key_is_named_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"unknown config key 'data\.dirr' \(did you mean 'data\.dir'\?\)"):
        config_from_dict({"data": {"dirr": "x"}})
    with pytest.raises(ConfigError, match="unknown config key 'tempalte'"):
        config_from_dict({"tempalte": "{sentence}"})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"task_model": {"batch_size": "big"}}, "task_model.batch_size' must be an integer"),
        ({"task_model": {"batch_size": 0}}, "batch_size must be >= 1"),
        ({"task_model": {"kind": "seq2seq"}}, "must be one of"),
        ({"verbalizers": "great"}, "must be a list"),
        ({"verbalizers": ["great"]}, "at least 2 classes"),
        ({"verbalizers": ["a", "a"]}, "distinct"),
        ({"template": "{prompt}"}, "must contain '{sentence}'"),
        ({"template": "{sentence} {mask}"}, "only for task_model.kind=masked_lm"),
        ({"task_model": {"kind": "masked_lm"}}, "exactly one '{mask}'"),
        ({"reward": {"name": "blue"}}, "reward.name 'blue' is unknown"),
        ({"reward": {"name": "bleu"}}, "reward 'bleu' scores generated text; this is a classification task"),
        ({"data": {"dir": "a", "hf_name": "b"}}, "exclusive"),
        ({"task_model": "encoder"}, "must be a mapping"),
        ({"reward": {"gap_correct": True}}, "must be a number"),
    ],
)
def test_bad_values_are_rejected(data, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data)


def test_set_overrides_parse_yaml_values(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("data:\n  dir: a\nprompt: x\n")
    cfg = load_config(
        f,
        [
            "data.dir=b",
            "task_model.batch_size=8",
            "reward.gap_correct=1.5",
            'verbalizers=["{prompt} bad.", "{prompt} good."]',
            "prompt=",
        ],
    )
    assert cfg.data.dir == "b" and cfg.task_model.batch_size == 8 and cfg.reward.gap_correct == 1.5
    assert cfg.verbalizers == ["{prompt} bad.", "{prompt} good."] and cfg.prompt == ""
    with pytest.raises(ConfigError, match="unknown config key 'data.dri'"):
        load_config(f, ["data.dri=c"])
    with pytest.raises(ConfigError, match="expects key=value"):
        load_config(f, ["data.dir"])


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_saved_json_round_trips(tmp_path):
    cfg = load_config(None, ["data.few_shot_k=4", "reward.name=gap"])
    save_config(cfg, tmp_path / "config.json")
    again = config_from_dict(json.loads((tmp_path / "config.json").read_text()))
    assert again == cfg


def test_shipped_configs_load():
    from conftest import ROOT

    for path in sorted((ROOT / "experiments" / "configs").glob("*.yaml")):
        if not path.name.startswith("bench-"):  # bench grids are checked in test_experiment.py
            load_config(path)


def test_budget_sections_count_only_what_is_set():
    from rlprompt.config import config_from_dict

    assert config_from_dict({}).budget.prompt_evals == 1000  # nothing given: the default budget
    only_calls = config_from_dict({"budget": {"lm_calls": 5000}}).budget
    assert (only_calls.prompt_evals, only_calls.lm_calls, only_calls.steps) == (None, 5000, None)


def test_agent_seed_follows_the_global_seed_unless_set():
    import json
    from dataclasses import asdict

    from rlprompt.config import config_from_dict

    saved = json.loads(json.dumps(asdict(config_from_dict({"seed": 13}))))  # a run's config.json
    assert config_from_dict(saved, ["seed=21"]).agent_config().seed == 21
    assert config_from_dict({"seed": 13, "agent": {"name": "sql", "seed": 3}}).agent_config().seed == 3


def test_a_saved_agent_seed_equal_to_the_run_seed_reads_as_following_it():
    """Runs that stored the seed their agent resolved to compare equal to today's config (whose
    ``agent.seed`` is null) when it is the run's seed; another agent seed stays a difference."""
    from rlprompt.config import config_from_dict, upgrade_saved_config
    from rlprompt.rundir import diff_keys

    today = config_to_dict(config_from_dict({"seed": 13, "agent": {"name": "sql"}}))
    stored = {**today, "agent": {**today["agent"], "seed": 13}}
    assert upgrade_saved_config(stored)["agent"]["seed"] is None
    assert diff_keys(config_to_dict(config_from_dict(upgrade_saved_config(stored))), today) == []
    other = {**today, "agent": {**today["agent"], "seed": 3}}
    assert diff_keys(config_to_dict(config_from_dict(upgrade_saved_config(other))), today) == ["agent.seed"]
    assert config_from_dict(upgrade_saved_config(other)).agent_config().seed == 3


def test_run_directories_of_rlprompt_0_2_still_load(tmp_path):
    """Runs saved before per-kind sections (every kind's fields in ``env``/``task_model``) load;
    a key no kind has is still refused by name."""
    import json
    import shutil

    import pytest

    from conftest import ROOT
    from rlprompt.errors import ConfigError
    from rlprompt.rundir import saved_config

    old = ROOT / "experiments" / "results" / "bench-sst2" / "runs" / "sst2" / "sql" / "b2000" / "seed13"
    assert "bound" in json.loads((old / "config.json").read_text())["env"]  # the soft env's field, saved flat
    config = saved_config(old)
    assert config.env.kind == "token" and config.env.prompt_length == 5 and config.agent_name == "sql"
    run = tmp_path / "run"
    shutil.copytree(old, run, ignore=shutil.ignore_patterns("tensorboard"))
    data = json.loads((run / "config.json").read_text())
    data["env"]["bogus"] = 1
    (run / "config.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="unknown config key 'env.bogus'"):
        saved_config(run)
