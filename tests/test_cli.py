"""The CLI: `rlprompt eval` output, --set, golden SST-2 accuracy, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, sst2_dir
from rlprompt.cli import main

DEMO = str(ROOT / "experiments" / "configs" / "demo-minilm.yaml")
SST2 = str(ROOT / "experiments" / "configs" / "sst2-minilm.yaml")


def run_json(capsys, *argv: str) -> dict:
    assert main(["eval", *argv, "--json"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    return json.loads(last)


def test_demo_manual_prompt_is_a_real_test(capsys):
    result = run_json(capsys, "--config", DEMO)
    assert result["n"] == 200
    assert 0.6 <= result["accuracy"] <= 0.9
    assert result["lm_calls"] == 200
    assert result["prompt"] == "It was"


def test_other_prompt_changes_accuracy_and_set_overrides(capsys):
    a = run_json(capsys, "--config", DEMO, "--split", "dev")
    b = run_json(capsys, "--config", DEMO, "--split", "dev", "--prompt", "Overall, the movie was")
    c = run_json(capsys, "--config", DEMO, "--split", "dev", "--set", "verbalizers=[bad, good]")
    assert a["n"] == b["n"] == c["n"] == 32
    assert len({a["gold_log_prob"], b["gold_log_prob"], c["gold_log_prob"]}) == 3  # three different scorings


@pytest.mark.slow  # the whole SST-2 test set, twice (about 40 s): the slow tier
def test_golden_sst2_minilm_manual_prompt(capsys):
    """Golden numbers of "It was" on SST-2 test (1821 sentences) with MiniLM: 0.6200 with the
    fixed verbalizers of sst2-minilm.yaml, 0.7194 with the prompt inside the verbalizers."""
    data = f"data.dir={sst2_dir(13)}"
    fixed = run_json(capsys, "--config", SST2, "--set", data)
    assert fixed["n"] == 1821
    assert 0.60 <= fixed["accuracy"] <= 0.64
    inside = run_json(
        capsys, "--config", SST2, "--set", data, "--set", "verbalizers=['{prompt} terrible.', '{prompt} great.']"
    )
    assert 0.70 <= inside["accuracy"] <= 0.74


def test_eval_on_another_16_shot_dir_without_code_change(capsys):
    other = sst2_dir(21)
    result = run_json(capsys, "--config", SST2, "--set", f"data.dir={other}", "--split", "dev")
    own = run_json(capsys, "--config", SST2, "--split", "dev")  # the config's own split, 16-13
    assert result["n"] == own["n"] == 32 and sum(result["predicted_counts"]) == 32
    assert result["accuracy"] * 32 == pytest.approx(round(result["accuracy"] * 32), abs=1e-4)  # a count of 32
    assert result["gold_log_prob"] != own["gold_log_prob"]  # other reviews were scored


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--set", "data.dirr=x"], "unknown config key 'data.dirr'"),
        (["--set", "data.dir=/nonexistent/16-13"], "data directory not found"),
        (
            [
                "--set",
                "task_model.name_or_path=roberta-large",
                "--set",
                "task_model.kind=masked_lm",
                "--set",
                "template={sentence} {prompt} {mask}",
                "--set",
                "verbalizers=[bad, good]",
            ],
            "hub is offline",
        ),
        (["--config", "/nonexistent.yaml"], "config file not found"),
    ],
)
def test_bad_input_gives_one_clear_line(capsys, argv, message):
    assert main(["eval", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rlprompt: error:") and message in err[0]


def test_console_script_error_has_no_traceback(tmp_path):
    data = tmp_path / "d"
    data.mkdir()
    for split in ("train", "dev", "test"):
        (data / f"{split}.tsv").write_text("sentence\tlabel\nfine\t0\nodd\t7\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "rlprompt.cli", "eval", "--set", f"data.dir={data}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "label(s) [7] have no verbalizer" in proc.stderr
