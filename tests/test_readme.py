"""The README and the documentation site say what the code does: every ``rlprompt`` command in
their shell blocks parses and names files and config keys that exist; the error examples print
what the pages show; the Python snippets run; every relative link points at a file that exists;
the configuration reference is the one generated from the code; the README stays a front page.
The slow tier runs the experiment walkthrough (run, resume, eval --run, transfer, select,
export) and the README's Python example end to end, with ``runs/`` and export targets under a
temp folder.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from conftest import ROOT, sst2_dir
from rlprompt.bench import load_bench
from rlprompt.cli import build_parser, main
from rlprompt.config import load_config

PAGES = [ROOT / "README.md", ROOT / "ARCHITECTURE.md", *sorted((ROOT / "docs").rglob("*.md"))]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = "\n".join(page.read_text(encoding="utf-8") for page in PAGES)
"""The README, then every page of the site: the text the command and snippet checks read."""
PLACEHOLDERS = {"my.yaml"}
"""Files a README command names as the user's own (not in the repository)."""


def code_blocks(lang: str | None = None) -> list[tuple[str, str]]:
    return [(kind, body) for kind, body in re.findall(r"```(\w*)\n(.*?)```", DOCS, re.S) if lang in (None, kind)]


def shell_commands() -> list[str]:
    """Every ``rlprompt`` command of the shell blocks (continuation lines joined, comments cut)."""
    commands = []
    for kind, body in code_blocks():
        if kind not in ("bash", ""):
            continue
        body = body.replace("\\\n", " ")
        for line in body.splitlines():
            line = line.strip().removeprefix("$ ")
            line = re.sub(r"^\.venv/bin/", "", line)
            if line.startswith("rlprompt "):
                commands.append(line)
    return commands


def argv_of(command: str) -> list[str]:
    return shlex.split(command, comments=True)[1:]


COMMANDS = shell_commands()
ERROR_EXAMPLES = re.findall(r"^\$ (rlprompt [^\n]*)\n(rlprompt: error: [^\n]*)$", DOCS, re.M)


def test_the_readme_has_commands_to_check():
    assert len(COMMANDS) >= 25
    assert len(ERROR_EXAMPLES) >= 4


def test_the_readme_is_a_front_page():
    """At most 200 lines: what it is, the two commands, a Python example, the headline results, links."""
    lines = README.splitlines()
    assert len(lines) <= 200, len(lines)
    assert "make demo" in README and "make test" in README and "```python" in README


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_names_a_file_that_exists(page):
    """Links between pages (and to files of the repository) resolve from the page that holds them."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.exists(), f"{page.relative_to(ROOT)} links to {target}, which does not exist"


def test_the_configuration_reference_is_generated_from_the_code():
    from rlprompt.config_reference import reference_markdown

    page = ROOT / "docs" / "reference" / "configuration.md"
    assert page.read_text(encoding="utf-8") == reference_markdown(), (
        "docs/reference/configuration.md is stale: python -m rlprompt.config_reference --out docs/reference/configuration.md"
    )


def test_the_configuration_reference_documents_every_field():
    """Every field of every section and registered kind is on the page, with a description."""
    import dataclasses

    from rlprompt.config import AGENT_SECTION, ENV_SECTION, TASK_MODEL_SECTION
    from rlprompt.config_reference import reference_markdown

    page = reference_markdown()
    rows = dict(re.findall(r"^\| `([\w.]+)` \| .*? \| .*? \| (.*) \|$", page, re.M))
    for section, variant in (("task_model", TASK_MODEL_SECTION), ("env", ENV_SECTION), ("agent", AGENT_SECTION)):
        for name in variant.registry.names():
            for f in dataclasses.fields(variant.config_class(name, section)):
                assert rows.get(f"{section}.{f.name}", "").strip(), f"{section}.{f.name} ({name}) has no description"
    assert rows["data.dir"] and rows["budget.prompt_evals"] and rows["finetune.ppo.clip_range"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_readme_command_parses_and_names_real_files(command, monkeypatch):
    argv = [a.replace("$MODEL", "served-model") for a in argv_of(command) if a != "..."]
    args = build_parser().parse_args(argv)
    monkeypatch.chdir(ROOT)
    overrides = getattr(args, "overrides", [])
    config = {
        "run": getattr(args, "config", None),
        "eval": getattr(args, "config", None),
        "finetune": getattr(args, "config", None),
    }.get(args.command)
    if args.command == "bench":
        assert Path(args.bench).is_file(), f"{command}: no bench file {args.bench}"
        load_bench(args.bench, overrides)
    elif config is not None and config not in PLACEHOLDERS:
        assert Path(config).is_file(), f"{command}: no config {config}"
        if command.startswith("rlprompt run --resume") or "--run" in argv:
            return
        load_config(config, overrides)


@pytest.mark.parametrize("command, shown", ERROR_EXAMPLES, ids=[c for c, _ in ERROR_EXAMPLES])
def test_readme_error_examples_print_what_the_readme_shows(command, shown, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    argv = [a for a in argv_of(command) if a != "..."]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    pattern = ".*".join(re.escape(part) for part in shown.split("..."))
    assert re.fullmatch(pattern, err[0]), (err[0], shown)


def python_blocks() -> list[str]:
    return [body for _, body in code_blocks("python")]


def test_readme_env_snippet_runs():
    snippet = next(b for b in python_blocks() if "gym.make_vec" in b)
    namespace: dict = {}
    exec(compile(snippet, "docs", "exec"), namespace)  # noqa: S102 - the docs' own code
    env, vec = namespace["env"], namespace["vec"]
    obs, _ = env.reset(seed=0)
    assert obs.shape == (5,)
    assert vec.num_envs == 16
    env.close()
    vec.close()


@pytest.mark.slow
def test_readme_task_snippet_gives_the_numbers_it_shows(monkeypatch):
    snippet = next(b for b in python_blocks() if "Task.from_config" in b)
    sst2_dir(13)  # skips (or fails under CI) without the shared data
    monkeypatch.chdir(ROOT)
    lines = snippet.splitlines()
    namespace: dict = {}
    exec(compile("\n".join(lines[:3]), "docs", "exec"), namespace)  # noqa: S102
    shown = re.search(r"# (\d\.\d+)", lines[3])
    accuracy = eval(lines[3].split("#")[0], namespace)  # noqa: S307 - the README's own expression
    assert shown and abs(accuracy - float(shown.group(1))) < 5e-4
    rewards = eval(lines[4].split("#")[0], namespace)  # noqa: S307
    assert len(rewards) == 2


@pytest.mark.slow
def test_readme_agent_snippet_runs(tmp_path, monkeypatch):
    snippet = next(b for b in python_blocks() if "AGENT_REGISTRY" in b)
    assert "total_prompt_evals=2000" in snippet
    snippet = snippet.replace("total_prompt_evals=2000", "total_prompt_evals=200")  # the test's budget
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(snippet, "docs", "exec"), namespace)  # noqa: S102
    assert namespace["agent"].prompt_evals <= 200
    assert (tmp_path / "runs" / "ppo" / "agent.safetensors").is_file()
    assert isinstance(namespace["best"].text, str)


WALKTHROUGH_START = "rlprompt run experiments/configs/sst2-minilm.yaml --set agent.name=ppo"


@pytest.mark.slow
def test_readme_experiment_walkthrough_runs(tmp_path, capsys, monkeypatch):
    """The experiments block, command by command, with runs and exports under a temp folder and
    the ppo run's budget cut from 500 to 64 evaluations (its first, default-budget run and the
    bench are covered elsewhere; the soft run that the PEFT export names is made first)."""
    sst2_dir(13)
    monkeypatch.chdir(ROOT)
    start = COMMANDS.index(next(c for c in COMMANDS if c.startswith(WALKTHROUGH_START)))
    end = next(i for i in range(start, len(COMMANDS)) if COMMANDS[i].startswith("rlprompt bench"))
    walkthrough = COMMANDS[start:end]  # the block's commands up to its bench line
    assert any(c.startswith("rlprompt compare") for c in walkthrough)
    soft = [
        "run",
        "experiments/configs/sst2-minilm.yaml",
        "--set",
        "agent.name=cma_es",
        "--set",
        "env.kind=soft",
        "--set",
        "budget.prompt_evals=40",
        "--no-progress",
        "-o",
        str(tmp_path / "runs" / "cma-soft"),
    ]
    assert main(soft) == 0
    for command in walkthrough:
        argv = [
            a.replace("runs/", f"{tmp_path}/runs/").replace("budget.prompt_evals=500", "budget.prompt_evals=64")
            for a in argv_of(command)
        ]
        argv = [str(tmp_path / a) if a in ("prompt.json", "adapter/") else a for a in argv]
        if argv[0] == "run" and "--resume" not in argv:
            argv += ["--no-progress"]
        code = main(argv)
        out = capsys.readouterr().out
        assert code == 0, (command, out)
        if "eval --run" in command and "--set" not in command:
            assert "reproduces best_prompt.json" in out
    assert (tmp_path / "prompt.json").is_file()
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()


@pytest.mark.slow
def test_readme_python_example_runs_and_prints_the_found_and_the_manual_prompt(tmp_path, capsys, monkeypatch):
    """The README's ten lines, as written (SmolLM2, hill climbing at 64 evaluations), into a temp folder."""
    snippet = next(body for kind, body in re.findall(r"```(\w*)\n(.*?)```", README, re.S) if kind == "python")
    assert len(snippet.strip().splitlines()) <= 10
    monkeypatch.chdir(ROOT)
    snippet = snippet.replace('"runs/readme-example"', repr(str(tmp_path / "readme-example")))
    namespace: dict = {}
    exec(compile(snippet, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    result = namespace["result"]
    assert result.agent == "hill_climb" and result.prompt_evals <= 64
    printed = capsys.readouterr().out.strip().splitlines()[-2:]
    assert printed[0].startswith(result.prompt) and printed[1].startswith(result.baseline["prompt"])
    assert (tmp_path / "readme-example" / "best_prompt.json").is_file()
