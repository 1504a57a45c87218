"""Quiet, informative progress: selection and evaluation report what they score and how much is
left; the libraries' bars, info lines and advisory warnings are hidden unless asked for (-v)."""

from __future__ import annotations

import sys
import warnings

import pytest
import yaml

from conftest import ROOT
from rlprompt import progress
from rlprompt.cli import main
from rlprompt.config import load_config
from rlprompt.experiment import run_experiment
from rlprompt.verbosity import quiet_libraries, set_verbose

DEMO = str(ROOT / "experiments" / "configs" / "demo-minilm.yaml")


def test_selection_and_evaluation_report_every_scoring(tmp_path):
    config = {
        "env": {"kind": "edit", "batch_size": 4},
        "agent": {"name": "hill_climb", "n_envs": 4},
        "budget": {"prompt_evals": 8},
        "output": {"tensorboard": False, "plot": False},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    recorder = progress.RecordingReporter()
    with progress.reporting(recorder):
        result = run_experiment(load_config(path), tmp_path / "run", progress=False)
    names = [s[0] for s in recorder.stages]
    assert names == ["selecting on train+dev", "evaluating the best and the manual prompt"]
    (_, total, steps), (_, eval_total, eval_steps) = recorder.stages
    assert total == len(steps) == 2 * result.candidates
    assert steps[0].endswith("on train") and steps[1].endswith("on dev")
    assert eval_total == len(eval_steps) == 6
    assert eval_steps[-1] == "manual 'It was' on test (200 examples)"


def test_eval_cli_reports_loading_and_scoring(monkeypatch, capsys):
    recorder = progress.RecordingReporter()
    monkeypatch.setattr(progress, "RichReporter", lambda: recorder)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert main(["eval", "-c", DEMO, "--split", "dev"]) == 0
    assert [s[0] for s in recorder.stages] == ["loading encoder:embedded and the data", "scoring on dev"]
    assert recorder.stages[1][2] == ["'It was' (32 examples)"]
    recorder.stages.clear()
    assert main(["eval", "-c", DEMO, "--split", "dev", "--no-progress"]) == 0
    assert recorder.stages == []


def test_library_bars_hidden_unless_verbose(capfd):
    from transformers.utils import logging as hf_logging

    from rlprompt.task_models.loading import load_model

    hf_logging.enable_progress_bar()  # as in a fresh Python session
    try:
        capfd.readouterr()
        load_model(
            "embedded:minilm", "encoder", device=__import__("torch").device("cpu"), dtype=__import__("torch").float32
        )
        assert "Loading weights" not in capfd.readouterr().err
        assert hf_logging.is_progress_bar_enabled()  # the user's setting restored
        set_verbose(True)
        load_model(
            "embedded:minilm", "encoder", device=__import__("torch").device("cpu"), dtype=__import__("torch").float32
        )
        assert "Loading weights" in capfd.readouterr().err
    finally:
        set_verbose(None)


def test_advisory_warnings_hidden_inside_quiet_block_only():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_libraries():
            warnings.warn("deprecated thing", FutureWarning, stacklevel=1)
        warnings.warn("shown outside", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["shown outside"]


@pytest.mark.parametrize("argv", [["-v", "eval", "--help"], ["eval", "-v", "--help"]])
def test_verbose_flag_before_or_after_the_command(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    assert "--verbose" in capsys.readouterr().out


def test_help_says_what_selection_does(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "select on dev" not in out and "select on train+dev" in out
