"""Per-example outcomes of runs and ``eval --save-outcomes``, and ``rlprompt compare``."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from rlprompt.cli import main
from rlprompt.config import load_config
from rlprompt.experiment import run_experiment
from rlprompt.results import SCHEMA_VERSION, RunResult

CONFIG = {
    "env": {"kind": "edit", "batch_size": 4},
    "agent": {"name": "hill_climb", "n_envs": 4},
    "budget": {"prompt_evals": 8},
    "output": {"tensorboard": False, "plot": False},
}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("compare")
    path = root / "run.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    run_experiment(load_config(path), root / "run", progress=False)
    assert (
        main(
            [
                "eval",
                "-c",
                str(path),
                "--prompt",
                "It was not",
                "--save-outcomes",
                str(root / "not.json"),
                "--no-progress",
            ]
        )
        == 0
    )
    return {"root": root, "config": path, "run": root / "run", "not": root / "not.json"}


def compare_json(capsys, *argv: str) -> dict:
    assert main(["compare", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.slow
def test_run_outcomes_hold_every_split_and_average_to_its_metrics(world):
    result = RunResult.load(world["run"] / "best_prompt.json")
    assert result.outcomes == "outcomes.json" and result.schema_version == SCHEMA_VERSION
    data = json.loads((world["run"] / "outcomes.json").read_text())
    for which, metrics in (("found", result.metrics), ("manual", result.baseline["metrics"])):
        for split in ("train", "dev", "test"):
            record = data[which][split]
            assert record["n"] == metrics[split]["n"] == len(record["predictions"]) == len(record["log_probs"])
            assert sum(record["scores"]["accuracy"]) / record["n"] == pytest.approx(metrics[split]["accuracy"])
            assert sum(record["scores"]["gold_log_prob"]) / record["n"] == pytest.approx(
                metrics[split]["gold_log_prob"], abs=1e-5
            )


def test_a_run_compared_with_itself_differs_by_zero(world, capsys):
    out = compare_json(capsys, str(world["run"]), str(world["run"]))
    assert out == {
        "metric": "accuracy",
        "a": out["a"],
        "b": out["a"],
        "diff": 0.0,
        "ci_low": 0.0,
        "ci_high": 0.0,
        "p_value": 1.0,
        "n": 200,
    }


def test_a_hand_written_prompt_against_the_runs_manual_prompt(world, capsys):
    out = compare_json(capsys, str(world["not"]), f"{world['run']}:manual")
    manual = RunResult.load(world["run"] / "best_prompt.json").baseline["metrics"]["test"]["accuracy"]
    assert out["b"] == pytest.approx(manual)
    assert out["diff"] == pytest.approx(out["a"] - out["b"])
    assert out["ci_low"] <= out["diff"] <= out["ci_high"]
    assert out["ci_high"] < 0  # 'It was not' loses by 0.185 on 200 reviews: detectable
    assert 0 < out["p_value"] < 0.001


def test_two_outcome_files_differing_on_known_examples_give_the_known_difference(world, tmp_path, capsys):
    data = json.loads(world["not"].read_text())
    scores = data["outcomes"]["scores"]["accuracy"]
    flipped = [i for i, v in enumerate(scores) if v == 1.0][:12]
    for i in flipped:
        scores[i] = 0.0
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(data))
    out = compare_json(capsys, str(world["not"]), str(changed))
    assert out["diff"] == pytest.approx(12 / 200) and out["n"] == 200
    assert out["ci_low"] > 0 and out["p_value"] < 0.001  # 12 discordant pairs, all one way
    text = main(["compare", str(changed), str(world["not"])])
    assert text == 0 and "B is better" in capsys.readouterr().out


@pytest.mark.slow
def test_eval_run_reproduces_the_runs_outcomes(world, tmp_path):
    target = tmp_path / "again.json"
    assert main(["eval", "--run", str(world["run"]), "--save-outcomes", str(target), "--no-progress"]) == 0
    again = json.loads(target.read_text())["outcomes"]
    recorded = json.loads((world["run"] / "outcomes.json").read_text())["found"]["test"]
    assert again["keys"] == recorded["keys"] and again["predictions"] == recorded["predictions"]
    assert again["scores"]["accuracy"] == recorded["scores"]["accuracy"]
    assert again["scores"]["gold_log_prob"] == pytest.approx(recorded["scores"]["gold_log_prob"], abs=1e-5)


def test_different_test_sets_are_one_error_naming_the_mismatch(world, tmp_path, capsys):
    data = json.loads(world["not"].read_text())
    data["outcomes"]["keys"][5] = "000000000000"
    other = tmp_path / "other.json"
    other.write_text(json.dumps(data))
    assert main(["compare", str(world["not"]), str(other)]) == 2
    assert "different examples (1 of 200 differ, the first at position 5)" in capsys.readouterr().err
    shorter = json.loads(world["not"].read_text())
    for key in ("keys", "predictions"):
        shorter["outcomes"][key] = shorter["outcomes"][key][:150]
    shorter["outcomes"]["scores"] = {k: v[:150] for k, v in shorter["outcomes"]["scores"].items()}
    other.write_text(json.dumps(shorter))
    assert main(["compare", str(world["not"]), str(other)]) == 2
    assert "different examples (200 against 150)" in capsys.readouterr().err


@pytest.mark.slow
def test_a_run_without_outcomes_says_how_to_get_them(world, tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(world["run"], old)
    (old / "outcomes.json").unlink()
    result = json.loads((old / "best_prompt.json").read_text())
    del result["outcomes"]
    result["schema_version"] = 2
    (old / "best_prompt.json").write_text(json.dumps(result))
    assert RunResult.load(old / "best_prompt.json").outcomes is None  # an older run still loads
    assert main(["compare", str(old), str(world["run"])]) == 2
    err = capsys.readouterr().err
    assert "holds no per-example outcomes" in err and f"rlprompt outcomes {old}" in err


def _make_old(run: Path, where: Path) -> Path:
    """A copy of ``run`` as a run from before schema 3 (no outcomes)."""
    shutil.copytree(run, where)
    (where / "outcomes.json").unlink()
    result = json.loads((where / "best_prompt.json").read_text())
    del result["outcomes"]
    result["schema_version"] = 2
    (where / "best_prompt.json").write_text(json.dumps(result))
    return where


def test_outcomes_backfills_an_older_run_and_its_records_equal_a_new_runs(world, tmp_path, capsys):
    bench = tmp_path / "bench" / "runs"
    old_a, old_b = _make_old(world["run"], bench / "a"), _make_old(world["run"], bench / "b")
    assert main(["outcomes", str(tmp_path / "bench")]) == 0  # a directory of runs: every finished run below it
    assert "outcomes written into 2 of 2 run(s)" in capsys.readouterr().out
    original = json.loads((world["run"] / "outcomes.json").read_text())
    for old in (old_a, old_b):
        assert json.loads((old / "outcomes.json").read_text()) == original
        assert RunResult.load(old / "best_prompt.json").outcomes == "outcomes.json"
    assert compare_json(capsys, str(old_a), str(world["run"]))["diff"] == 0.0
    assert main(["outcomes", str(old_a)]) == 0  # already has them: skipped, nothing rewritten
    assert "has its outcomes, skipped" in capsys.readouterr().out


def test_outcomes_refuses_a_run_whose_records_it_cannot_reproduce(world, tmp_path, capsys):
    old = _make_old(world["run"], tmp_path / "old")
    result = json.loads((old / "best_prompt.json").read_text())
    result["baseline"]["metrics"]["test"]["accuracy"] += 0.01  # a record the manual prompt does not give
    (old / "best_prompt.json").write_text(json.dumps(result))
    before = (old / "best_prompt.json").read_bytes()
    assert main(["outcomes", str(old)]) == 2
    err = capsys.readouterr().err
    assert "the manual prompt's test metrics re-scored here differ" in err and len(err.strip().splitlines()) == 1
    assert not (old / "outcomes.json").exists() and (old / "best_prompt.json").read_bytes() == before
    assert main(["outcomes", str(tmp_path / "nothing")]) == 2
    assert "run directory not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["{run}", "{root}/nope"], "neither a run directory nor an outcome file"),
        (["{run}", "{config}"], "not valid JSON"),
        (["{run}", "{run}", "--metric", "f1"], "has no per-example 'f1'"),
        (["{run}", "{run}", "--resamples", "10"], "--resamples must be at least 1000"),
        (["{run}", "{run}", "--seed", "-1"], "--seed must be >= 0"),
        (["{not}", "{run}", "--split", "dev"], "holds the test split, not dev"),
        (["{not}:manual", "{run}"], "':manual' follows a run directory"),
        (["{root}:manual", "{run}"], "has no config.json"),
    ],
)
def test_compare_errors_are_one_line(world, argv, message, capsys):
    args = [a.format(**{k: str(v) for k, v in world.items()}) for a in argv]
    assert main(["compare", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_save_outcomes_never_replaces_a_file_it_did_not_write(world, tmp_path, capsys):
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": true}\n')
    before = hashlib.sha256(notes.read_bytes()).hexdigest()
    assert main(["eval", "-c", str(world["config"]), "--save-outcomes", str(notes), "--no-progress"]) == 2
    assert "never replaces it" in capsys.readouterr().err
    assert hashlib.sha256(notes.read_bytes()).hexdigest() == before
    assert main(["eval", "-c", str(world["config"]), "--save-outcomes", str(tmp_path / "x.txt"), "--no-progress"]) == 2
    assert (
        main(["eval", "-c", str(world["config"]), "--save-outcomes", str(world["run"] / "mine.json"), "--no-progress"])
        == 2
    )
    assert not (world["run"] / "mine.json").exists()
