"""The table of bad inputs: each ends in one line naming the problem, a non-zero exit, no
traceback, and no existing file changed.

CLI cases run ``rlprompt`` in-process; Python cases call the public API and expect an
``RLPromptError`` whose message names the field or file. Directories a case points at
(run directories, model folders, export targets) are hashed before and after.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import tree_digest
from rlprompt.cli import main
from rlprompt.config import load_config
from rlprompt.data import demo_dir
from rlprompt.errors import RLPromptError
from rlprompt.experiment import run_experiment

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "experiments" / "configs" / "demo-minilm.yaml")
SQUAD = str(ROOT / "experiments" / "configs" / "squad-smollm2.yaml")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """Small data, a finished run, an unfinished run, a model folder and bad files, made once."""
    root = tmp_path_factory.mktemp("bad-inputs")
    data = root / "data"
    data.mkdir()
    for split in ("train", "dev"):
        shutil.copy(demo_dir() / f"{split}.tsv", data / f"{split}.tsv")
    lines = (demo_dir() / "test.tsv").read_text().splitlines()
    (data / "test.tsv").write_text("\n".join(lines[:21]) + "\n")
    config = {
        "data": {"dir": str(data)},
        "env": {"kind": "edit", "batch_size": 4},
        "agent": {"name": "hill_climb", "n_envs": 4},
        "budget": {"prompt_evals": 8},
        "output": {"tensorboard": False, "plot": False},
    }
    config_path = root / "run.yaml"
    config_path.write_text(yaml.safe_dump(config))
    run = root / "run"
    run_experiment(load_config(config_path), run, progress=False)
    unfinished = root / "unfinished"
    shutil.copytree(run, unfinished)
    (unfinished / "best_prompt.json").unlink()
    model = root / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    (model / "model.safetensors").write_bytes(b"\x00garbage" * 100)
    (model / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nit\nwas\n")
    latin1 = root / "latin1"
    latin1.mkdir()
    for split in ("train", "dev", "test"):
        (latin1 / f"{split}.tsv").write_bytes("sentence\tlabel\nfine\t0\ncaf\xe9 au lait\t1\n".encode("latin-1"))
    bad_labels = root / "bad-labels"
    bad_labels.mkdir()
    for split in ("train", "dev", "test"):
        (bad_labels / f"{split}.tsv").write_text("sentence\tlabel\nfine\t0\nodd\t7\n")
    (root / "dup.yaml").write_text("prompt: a\nprompt: b\n")
    (root / "list.yaml").write_text("- a\n- b\n")
    (root / "broken.yaml").write_text("data: [unclosed\n")
    (root / "other.txt").write_text("someone else's notes\n")
    return {
        "root": root,
        "data": data,
        "config": config_path,
        "run": run,
        "unfinished": unfinished,
        "model": model,
        "latin1": latin1,
        "bad_labels": bad_labels,
    }


@dataclass
class Case:
    id: str
    argv: Callable[[dict[str, Path]], list[str]]
    expect: str
    untouched: tuple[str, ...] = ()
    setup: Callable[[dict[str, Path]], None] | None = field(default=None)


def S(*values: str) -> list[str]:
    """``--set`` arguments."""
    out: list[str] = []
    for v in values:
        out += ["--set", v]
    return out


def truncate(path: Path, keep: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep])


CLI_CASES = [
    # ---- config values: type, range, finiteness, placeholders
    Case(
        "int-field-text",
        lambda w: ["eval", "-c", DEMO, *S("budget.prompt_evals=abc")],
        "budget.prompt_evals' must be an integer",
    ),
    Case(
        "int-field-float",
        lambda w: ["eval", "-c", DEMO, *S("budget.prompt_evals=2000.0")],
        "budget.prompt_evals' must be an integer",
    ),
    Case("str-field-int", lambda w: ["eval", "-c", DEMO, *S("data.dir=5")], "data.dir' must be a string"),
    Case(
        "negative-batch",
        lambda w: ["eval", "-c", DEMO, *S("task_model.batch_size=-1")],
        "task_model.batch_size must be >= 1",
    ),
    Case(
        "nan-float",
        lambda w: ["eval", "-c", DEMO, *S("reward.gap_correct=.nan")],
        "reward.gap_correct' must be a finite number",
    ),
    Case(
        "inf-float",
        lambda w: ["eval", "-c", DEMO, *S("reward.balance_weight=.inf")],
        "reward.balance_weight' must be a finite number",
    ),
    Case(
        "template-typo",
        lambda w: ["eval", "-c", DEMO, *S("template={sentence} {promt}")],
        "unknown placeholder '{promt}'",
    ),
    Case(
        "template-no-prompt",
        lambda w: ["eval", "-c", DEMO, *S("template=Review: {sentence}")],
        "template must contain '{prompt}'",
    ),
    Case(
        "one-verbalizer",
        lambda w: ["eval", "-c", DEMO, *S("verbalizers=[good]")],
        "verbalizers must name at least 2 classes",
    ),
    Case("empty-verbalizer", lambda w: ["eval", "-c", DEMO, *S("verbalizers=['  ', good]")], "verbalizers[0] is empty"),
    Case(
        "unknown-verbalizer-token",
        lambda w: ["eval", "-c", DEMO, *S("verbalizers=['\u2603', good]")],
        "not in the tokenizer's vocabulary",
    ),
    Case(
        "negative-lr",
        lambda w: ["run", str(w["config"]), *S("agent.learning_rate=-0.1", "agent.name=ppo")],
        "agent.learning_rate must be > 0",
    ),
    Case("unknown-agent", lambda w: ["run", str(w["config"]), *S("agent.name=nope")], "unknown agent 'nope'"),
    Case("unknown-agent-field", lambda w: ["run", str(w["config"]), *S("agent.lr=1")], "unknown config key 'agent.lr'"),
    Case("env-kind", lambda w: ["run", str(w["config"]), *S("env.kind=teleport")], "env.kind' must be one of"),
    Case("seed-text", lambda w: ["eval", "-c", DEMO, *S("seed=abc")], "seed' must be an integer"),
    Case(
        "device", lambda w: ["eval", "-c", DEMO, *S("task_model.device=tpu")], "task_model.device 'tpu' is not a device"
    ),
    Case("dtype", lambda w: ["eval", "-c", DEMO, *S("task_model.dtype=float64")], "task_model.dtype' must be one of"),
    Case("few-shot-zero", lambda w: ["eval", "-c", DEMO, *S("data.few_shot_k=0")], "data.few_shot_k must be >= 1"),
    Case(
        "empty-text-mode", lambda w: ["eval", "-c", DEMO, *S("data.empty_text=drop")], "data.empty_text' must be one of"
    ),
    Case(
        "checkpoint-every",
        lambda w: ["run", str(w["config"]), *S("output.checkpoint_every=0")],
        "output.checkpoint_every must be >= 1",
    ),
    Case(
        "negative-budget", lambda w: ["run", str(w["config"]), *S("budget.lm_calls=-5")], "budget.lm_calls must be >= 1"
    ),
    Case("env-batch", lambda w: ["run", str(w["config"]), *S("env.batch_size=0")], "env.batch_size must be >= 1"),
    Case("reward-name", lambda w: ["eval", "-c", DEMO, *S("reward.name=blue")], "reward.name 'blue' is unknown"),
    Case(
        "generation-metric-for-classification",
        lambda w: ["eval", "-c", DEMO, *S("reward.name=bleu")],
        "reward 'bleu' scores generated text; this is a classification task",
    ),
    Case(
        "generation-on-an-encoder",
        lambda w: ["eval", "-c", SQUAD, *S("task_model.kind=encoder")],
        "task_model.kind=encoder cannot generate text",
    ),
    Case(
        "generation-metric-unknown",
        lambda w: ["eval", "-c", SQUAD, *S("generation.metrics=[f1, rouge3]")],
        "unknown generation metric 'rouge3'",
    ),
    Case(
        "generation-with-verbalizers",
        lambda w: ["eval", "-c", SQUAD, *S("verbalizers=[' a', ' b']")],
        "verbalizers are for classification tasks",
    ),
    Case(
        "generation-class-reward",
        lambda w: ["eval", "-c", SQUAD, *S("reward.name=gold_log_prob")],
        "reward 'gold_log_prob' scores class predictions",
    ),
    Case(
        "generation-empty-stop",
        lambda w: ["eval", "-c", SQUAD, *S("generation.stop=['']")],
        "generation.stop holds an empty string",
    ),
    Case(
        "hf-split",
        lambda w: ["eval", "-c", DEMO, *S("data.hf_splits.validation=dev")],
        "data.hf_splits has unknown split",
    ),
    Case("section-scalar", lambda w: ["eval", "-c", DEMO, *S("task_model=3")], "task_model' must be a mapping"),
    Case("dotted-key", lambda w: ["eval", "-c", DEMO, *S("data..dir=x")], "is not a dotted key"),
    Case("set-no-value", lambda w: ["eval", "-c", DEMO, *S("prompt")], "--set expects key=value"),
    Case("finetune-lr", lambda w: ["finetune", DEMO, *S("finetune.learning_rate=0")], "finetune.learning_rate"),
    Case("finetune-encoder", lambda w: ["finetune", DEMO], "finetune trains a causal LM"),
    Case("usage-split", lambda w: ["eval", "--split", "validation"], "argument --split: invalid choice"),
    Case(
        "usage-export-format",
        lambda w: ["export", str(w["run"]), "--format", "xml", "--out", "x"],
        "argument --format/-f",
    ),
    # ---- files: configs, data, models
    Case("config-missing", lambda w: ["eval", "-c", str(w["root"] / "nope.yaml")], "config file not found"),
    Case(
        "config-broken-yaml", lambda w: ["eval", "-c", str(w["root"] / "broken.yaml")], "broken.yaml is not valid YAML"
    ),
    Case("config-duplicate-key", lambda w: ["eval", "-c", str(w["root"] / "dup.yaml")], "key 'prompt' appears twice"),
    Case(
        "config-not-mapping", lambda w: ["eval", "-c", str(w["root"] / "list.yaml")], "must hold a mapping of sections"
    ),
    Case("data-not-utf8", lambda w: ["eval", "-c", DEMO, *S(f"data.dir={w['latin1']}")], "train.tsv:3: not UTF-8 text"),
    Case(
        "data-dir-missing",
        lambda w: ["eval", "-c", DEMO, *S("data.dir=/nonexistent/16-13")],
        "data directory not found",
    ),
    Case(
        "data-label-range",
        lambda w: ["eval", "-c", DEMO, *S(f"data.dir={w['bad_labels']}")],
        "label(s) [7] have no verbalizer",
    ),
    Case(
        "model-garbage-weights",
        lambda w: ["eval", "-c", DEMO, *S(f"task_model.name_or_path={w['model']}")],
        "could not load model from",
        ("model",),
    ),
    Case(
        "model-missing",
        lambda w: ["eval", "-c", DEMO, *S("task_model.name_or_path=/nonexistent/model")],
        "model directory not found",
    ),
    Case(
        "model-hub-offline",
        lambda w: ["eval", "-c", DEMO, *S("task_model.name_or_path=distilroberta-base")],
        "hub is offline",
    ),
    # ---- run directories
    Case(
        "run-into-model-folder",
        lambda w: ["run", str(w["config"]), "-o", str(w["model"])],
        "is not empty and holds no rlprompt run",
        ("model",),
    ),
    Case(
        "run-over-finished", lambda w: ["run", str(w["config"]), "-o", str(w["run"])], "already holds a run", ("run",)
    ),
    Case("resume-not-a-run", lambda w: ["run", "--resume", str(w["root"] / "nope")], "no config.json"),
    Case(
        "resume-truncated-checkpoint",
        lambda w: ["run", "--resume", str(w["unfinished"])],
        "not an rlprompt checkpoint (truncated or corrupt)",
        ("unfinished",),
        lambda w: truncate(w["unfinished"] / "checkpoint.safetensors", 200),
    ),
    Case(
        "resume-truncated-config",
        lambda w: ["run", "--resume", str(w["unfinished"])],
        "config.json is not valid JSON",
        ("unfinished",),
        lambda w: truncate(w["unfinished"] / "config.json", 40),
    ),
    Case(
        "eval-run-truncated-result",
        lambda w: ["eval", "--run", str(w["run"])],
        "best_prompt.json is not valid JSON",
        ("run",),
        lambda w: truncate(w["run"] / "best_prompt.json", 30),
    ),
    Case("eval-run-unfinished", lambda w: ["eval", "--run", str(w["unfinished"])], "has not finished"),
    Case(
        "eval-run-with-prompt",
        lambda w: ["eval", "--run", str(w["run"]), "--prompt", "x"],
        "takes the prompt and config from the run directory",
    ),
    # ---- export
    Case(
        "export-over-run-result",
        lambda w: ["export", str(w["run"]), "--format", "txt", "--out", str(w["run"] / "best_prompt.json")],
        "inside the run directory",
        ("run",),
    ),
    Case(
        "export-over-foreign-file",
        lambda w: ["export", str(w["run"]), "--format", "txt", "--out", str(w["root"] / "other.txt")],
        "never a file it did not write",
        ("root",),
    ),
    Case(
        "export-unwritable",
        lambda w: ["export", str(w["run"]), "--format", "json", "--out", "/proc/rlprompt/prompt.json"],
        "cannot write /proc/rlprompt/prompt.json",
    ),
    Case(
        "export-peft-discrete",
        lambda w: ["export", str(w["run"]), "--format", "peft", "--out", str(w["root"] / "adapter")],
        "found a discrete prompt",
    ),
    Case(
        "export-missing-run",
        lambda w: ["export", str(w["root"] / "nope"), "--format", "json", "--out", str(w["root"] / "x.json")],
        "run directory not found",
    ),
    Case(
        "export-suffix-contradicts-format",
        lambda w: ["export", str(w["run"]), "--format", "txt", "--out", str(w["root"] / "prompt.json")],
        "ends in .json but --format txt",
    ),
    Case(
        "export-out-holds-the-run",
        lambda w: ["export", str(w["run"]), "--format", "json", "--out", str(w["run"].parent), "--force"],
        "holds the run directory",
        ("run",),
    ),
    Case(
        "run-inside-a-run",
        lambda w: ["run", str(w["config"]), "-o", str(w["run"] / "inner")],
        "inside the run directory",
        ("run",),
    ),
    # ---- parsing: bounded YAML, plain values only, the same through --set (tests/test_parsing.py has the rest)
    Case(
        "config-alias-bomb",
        lambda w: ["eval", "-c", str(w["root"] / "bomb.yaml")],
        "once its YAML aliases are expanded",
        (),
        lambda w: (w["root"] / "bomb.yaml").write_text(
            "a: &a [x,x,x,x,x,x,x,x,x,x]\n"
            + "".join(f"{n}: &{n} [{','.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True))
        ),
    ),
    Case(
        "config-date",
        lambda w: ["eval", "-c", str(w["root"] / "date.yaml")],
        "date.yaml, line 2: a date/time (2024-01-01) is not a config value",
        (),
        lambda w: (w["root"] / "date.yaml").write_text("seed: 1\nprompt: 2024-01-01\n"),
    ),
    Case(
        "config-binary",
        lambda w: ["eval", "-c", str(w["root"] / "binary.yaml")],
        "binary data (!!binary) is not a config value",
        (),
        lambda w: (w["root"] / "binary.yaml").write_text("prompt: !!binary aGVsbG8=\n"),
    ),
    Case(
        "config-list-key",
        lambda w: ["eval", "-c", str(w["root"] / "listkey.yaml")],
        "a mapping key must be text, not a list",
        (),
        lambda w: (w["root"] / "listkey.yaml").write_text("? [a, b]\n: 1\n"),
    ),
    Case(
        "config-deep-nesting",
        lambda w: ["eval", "-c", str(w["root"] / "deep.yaml")],
        "values nested more than 64 levels deep",
        (),
        lambda w: (w["root"] / "deep.yaml").write_text("verbalizers: " + "[" * 5000 + "]" * 5000 + "\n"),
    ),
    Case(
        "config-empty",
        lambda w: ["eval", "-c", str(w["root"] / "empty.yaml")],
        "empty.yaml holds no settings",
        (),
        lambda w: (w["root"] / "empty.yaml").write_text("# nothing here yet\n"),
    ),
    Case(
        "set-date",
        lambda w: ["eval", "-c", DEMO, *S("prompt=2024-01-01")],
        "--set prompt=2024-01-01: a date/time (2024-01-01) is not a config value",
    ),
    # ---- data ambiguity
    Case(
        "data-duplicate-column",
        lambda w: ["eval", "-c", DEMO, *S(f"data.dir={w['root'] / 'dupcol'}")],
        "column 'label' appears twice in the header",
        (),
        lambda w: (
            [(w["root"] / "dupcol").mkdir(exist_ok=True)]
            + [
                (w["root"] / "dupcol" / f"{s}.tsv").write_text("sentence\tlabel\tlabel\nfine\t1\t0\n")
                for s in ("train", "dev", "test")
            ]
        ),
    ),
    Case(
        "data-two-train-files",
        lambda w: ["eval", "-c", DEMO, *S(f"data.dir={w['root'] / 'two'}")],
        "holds 2 train files, train.tsv and train.jsonl",
        (),
        lambda w: [
            shutil.copytree(w["data"], w["root"] / "two", dirs_exist_ok=True),
            (w["root"] / "two" / "train.jsonl").write_text('{"sentence": "fine", "label": 1}\n'),
        ],
    ),
    Case(
        "data-test-is-train",
        lambda w: ["eval", "-c", DEMO, *S(f"data.dir={w['data']}", f"data.test={w['data'] / 'train.tsv'}")],
        "the test split is the train split's file",
    ),
    Case(
        "data-jsonl-deep",
        lambda w: ["eval", "-c", DEMO, *S(f"data.dir={w['data']}", f"data.train={w['root'] / 'deep.jsonl'}")],
        "deep.jsonl:1: values nested more than 64 levels deep",
        (),
        lambda w: (w["root"] / "deep.jsonl").write_text(
            '{"sentence": "a", "label": 0, "x": ' + "[" * 5000 + "]" * 5000 + "}\n"
        ),
    ),
]


def record(case_id: str, message: str) -> None:
    """With ``RLPROMPT_BAD_INPUT_TABLE=FILE``, append ``case | message`` to FILE (the table of
    bad inputs and what each gives, for reports)."""
    path = os.environ.get("RLPROMPT_BAD_INPUT_TABLE")
    if path:
        with open(path, "a", encoding="utf-8") as table:
            table.write(f"| {case_id} | `{message.replace('|', '/')}` |\n")


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli_bad_input_is_one_line(case: Case, world, tmp_path, capsys):
    w = dict(world)
    for name in ("run", "unfinished", "model"):  # copies: cases stay independent
        w[name] = tmp_path / name
        shutil.copytree(world[name], w[name])
    if case.setup is not None:
        case.setup(w)
    digests = {name: tree_digest(w[name]) for name in case.untouched}
    try:
        code = main(case.argv(w))
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("rlprompt: warning:")]
    assert code not in (0, None), f"{case.id}: exit status {code}"
    assert len(err) == 1, f"{case.id}: {err}"
    assert err[0].startswith("rlprompt: error:") and "Traceback" not in err[0]
    assert case.expect in err[0], f"{case.id}: {err[0]!r} does not name {case.expect!r}"
    record(case.id, err[0])
    for name, digest in digests.items():
        assert tree_digest(w[name]) == digest, f"{case.id}: {name} was changed"


def test_failed_run_writes_nothing_into_its_directory(world, tmp_path, capsys):
    out = tmp_path / "fresh"
    assert main(["run", str(world["config"]), "-o", str(out), *S("task_model.name_or_path=/nonexistent/model")]) == 2
    assert not out.exists()


def test_a_malicious_pickle_is_refused_and_runs_nothing(world, tmp_path, capsys):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for name in ("checkpoint.safetensors", "checkpoint.pt"):
        run = tmp_path / name
        shutil.copytree(world["unfinished"], run)
        (run / "checkpoint.safetensors").unlink()
        (run / name).write_bytes(pickle.dumps({"agent": Payload()}))
        assert main(["run", "--resume", str(run)]) == 2
        err = capsys.readouterr().err
        assert "pickle" in err and "Traceback" not in err
        assert not marker.exists()
    from rlprompt.agents import Agent

    with pytest.raises(RLPromptError, match="pickle"):
        Agent.load(tmp_path / "checkpoint.safetensors" / "checkpoint.safetensors", None)  # type: ignore[arg-type]
    assert not marker.exists()


def test_export_replaces_only_what_it_wrote(world, tmp_path, capsys):
    out = tmp_path / "prompt.json"
    assert main(["export", str(world["run"]), "--format", "json", "--out", str(out)]) == 0
    assert main(["export", str(world["run"]), "--format", "json", "--out", str(out)]) == 0  # its own file
    foreign = tmp_path / "notes.txt"
    foreign.write_text("keep me\n")
    assert main(["export", str(world["run"]), "--format", "txt", "--out", str(foreign)]) == 2
    assert foreign.read_text() == "keep me\n"
    assert main(["export", str(world["run"]), "--format", "txt", "--out", str(foreign), "--force"]) == 2
    assert foreign.read_text() == "keep me\n"  # --force replaces only rlprompt's own exports


def test_result_files_follow_the_umask(world, tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "p.json"
        assert main(["export", str(world["run"]), "--format", "json", "--out", str(out)]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert stat.S_IMODE((world["run"] / "best_prompt.json").stat().st_mode) & 0o044 == 0o044


# ------------------------------------------------------------------ Python API


def _toy():
    from rlprompt.testing.toy import make_toy_task

    return make_toy_task(vocab_size=10, prompt_length=3)


def _api_cases():
    from rlprompt.agents import AGENT_REGISTRY, make_agent_config
    from rlprompt.config import config_from_dict
    from rlprompt.envs import LMCallBudget, PromptSelectionEnv, SoftPromptEnv, TokenPromptEnv, build_vocabulary
    from rlprompt.task import Task

    def step_before_reset():
        TokenPromptEnv(task=_toy(), prompt_length=2).step(0)

    def float_action():
        env = TokenPromptEnv(task=_toy(), prompt_length=2)
        env.reset(seed=0)
        env.step(1.5)

    def soft_wrong_shape():
        env = SoftPromptEnv(task=_toy(), subspace_dim=4)
        env.reset(seed=0)
        env.step(np.zeros(3, dtype=np.float32))

    def soft_nan():
        env = SoftPromptEnv(task=_toy(), subspace_dim=4)
        env.reset(seed=0)
        env.step(np.full(4, np.nan, dtype=np.float32))

    def reward_index():
        _toy().reward(["w00 w01 w02"], indices=[0, 99])

    def learn_negative():
        AGENT_REGISTRY["ppo"].agent_class(TokenPromptEnv(task=_toy(), prompt_length=2)).learn(total_prompt_evals=-1)

    return [
        ("task-from-int", lambda: Task.from_config(123), "Task.from_config needs a Config"),
        ("task-from-missing-yaml", lambda: Task.from_config("/nonexistent.yaml"), "config file not found"),
        ("config-from-list", lambda: config_from_dict([1]), "a config must be a mapping"),
        ("reward-index", reward_index, "example index 99 is out of range for the train split"),
        ("step-before-reset", step_before_reset, "call reset() before step()"),
        ("float-action", float_action, "action must be an integer"),
        ("soft-shape", soft_wrong_shape, "action must be 4 finite numbers"),
        ("soft-nan", soft_nan, "action must be 4 finite numbers"),
        ("learn-negative", learn_negative, "total_prompt_evals must be a positive integer"),
        (
            "agent-config-lr",
            lambda: make_agent_config("ppo", {"learning_rate": -1.0}),
            "agent.learning_rate must be > 0",
        ),
        (
            "agent-config-type",
            lambda: make_agent_config("dqn", {"buffer_size": "big"}),
            "buffer_size' must be an integer",
        ),
        ("no-candidates", lambda: PromptSelectionEnv(task=_toy(), candidates=[]), "at least one candidate"),
        (
            "bad-regex",
            lambda: build_vocabulary(_toy().task_model, regex="(", top_k=5),
            "not a valid regular expression",
        ),
        ("budget-wrapper", lambda: LMCallBudget(TokenPromptEnv(task=_toy())), "needs max_lm_calls or max_prompt_evals"),
    ]


API_CASES = _api_cases()


@pytest.mark.parametrize(("name", "call", "expect"), API_CASES, ids=[c[0] for c in API_CASES])
def test_api_bad_input_is_one_clear_error(name, call, expect):
    with pytest.raises(RLPromptError) as info:
        call()
    message = str(info.value)
    assert expect in message and "\n" not in message
    record(name, f"{type(info.value).__name__}: {message}")


def test_the_table_is_large_enough():
    assert len(CLI_CASES) + len(API_CASES) >= 40


# ------------------------------------------------------------------ dirty data that must load


def test_empty_rows_load_with_one_warning_and_options(tmp_path, caplog):
    from rlprompt.config import DataConfig
    from rlprompt.data import load_task_data

    for split in ("train", "dev", "test"):
        last = "worse" if split == "test" else "bad"  # a test split equal to train is refused
        (tmp_path / f"{split}.tsv").write_text(f"\ufeffsentence\tlabel\ngood\t1\n\t0\n{last}\t0\n", encoding="utf-8")
    with caplog.at_level("WARNING", logger="rlprompt"):
        data = load_task_data(DataConfig(dir=str(tmp_path)), num_classes=2)
    assert data.train.texts == ["good", "", "bad"] and data.train.labels == [1, 0, 0]  # BOM read as the header's
    warnings = [r.getMessage() for r in caplog.records if "empty text" in r.getMessage()]
    assert len(warnings) == 3 and "1 row(s) with empty text kept" in warnings[0] and "rows 3" in warnings[0]
    skipped = load_task_data(DataConfig(dir=str(tmp_path), empty_text="skip"), num_classes=2)
    assert skipped.train.texts == ["good", "bad"]
    from rlprompt.errors import DataError

    with pytest.raises(DataError, match="rows 3"):
        load_task_data(DataConfig(dir=str(tmp_path), empty_text="error"), num_classes=2)


def test_a_field_over_the_csv_limit_loads(tmp_path):
    from rlprompt.data import load_file

    long = "word " * 40_000  # 200,000 characters, over csv's default 131,072
    (tmp_path / "x.tsv").write_text(f"sentence\tlabel\n{long}\t1\nshort\t0\n")
    (tmp_path / "y.csv").write_text(f'sentence,label\n"{long}",1\n')
    assert len(load_file(tmp_path / "x.tsv").texts[0]) == len(long)
    assert len(load_file(tmp_path / "y.csv").texts[0]) == len(long)


# ------------------------------------------------------------------ bench


def _bench(path: Path, world, out: Path, **extra) -> Path:
    bench = {
        "base": str(world["config"]),
        "set": ["budget.prompt_evals=8"],
        "agents": {"hill_climb": None},
        "seeds": [1],
        "output_dir": str(out),
        "add_random_search": False,
        **extra,
    }
    path.write_text(yaml.safe_dump(bench))
    return path


def test_bench_duplicate_label_is_an_error(world, tmp_path, capsys):
    path = tmp_path / "bench.yaml"
    path.write_text(
        f"base: {world['config']}\nagents:\n  a: [agent.name=hill_climb]\n  a: [agent.name=random_search]\n"
    )
    assert main(["bench", str(path)]) == 2
    assert "key 'a' appears twice" in capsys.readouterr().err


def test_bench_refuses_cells_run_under_another_config_and_restarts_unstarted_ones(world, tmp_path, capsys):
    out = tmp_path / "out"
    path = _bench(tmp_path / "bench.yaml", world, out)
    assert main(["bench", str(path), "--no-progress"]) == 0
    finished = out / "runs" / "default" / "hill_climb" / "bbase" / "seed1"
    before = tree_digest(finished)
    capsys.readouterr()
    _bench(path, world, out, set=["budget.prompt_evals=12"])
    assert main(["bench", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "1 bench cell(s)" in err and "default/hill_climb/bbase/seed1 (['budget.prompt_evals'])" in err
    assert tree_digest(finished) == before
    # a cell that stopped before its first checkpoint starts over under the fixed config
    (finished / "best_prompt.json").unlink()
    (finished / "checkpoint.safetensors").unlink()
    assert main(["bench", str(path), "--no-progress"]) == 0
    assert "starting over" in capsys.readouterr().out
    assert json.loads((finished / "config.json").read_text())["budget"]["prompt_evals"] == 12


def test_resume_removes_temp_files_left_by_a_kill(world, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(world["unfinished"], run)
    stale = [
        run / ".best_prompt.json.k3x9q2ab.tmp",
        run / ".metrics.csv.zz81mmqe.tmp",
        run / ".checkpoint.safetensors.1234x00ff00.tmp",
    ]
    for path in stale:
        path.write_bytes(b"half a write")
    notes = run / "notes.tmp"  # not one of rlprompt's temp names: left alone
    notes.write_text("mine")
    assert main(["run", "--resume", str(run), "--no-progress"]) == 0
    assert not any(p.exists() for p in stale) and notes.read_text() == "mine"
    assert (run / "best_prompt.json").is_file()
