"""Nothing a user owns is ever deleted, and no run directory has two writers.

Ownership: rlprompt replaces or deletes only files it wrote and recorded (an export's
``rlprompt_export`` record, a run directory's ``.rlprompt-manifest.json``); ``--force`` never
reaches past them; no output path is the working directory, holds it, holds a run or lies
inside one. One writer: ``run``, ``run --resume``, ``select`` and bench cells take the run
directory's lock (``.rlprompt.lock``), and a second writer is refused with one line naming the
first. Every test hashes the trees it points at before and after.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from conftest import tree_digest as digest
from rlprompt.cli import main
from rlprompt.config import load_config
from rlprompt.data import demo_dir
from rlprompt.errors import RLPromptError
from rlprompt.experiment import run_experiment
from rlprompt.io import LOCK_FILE, directory_lock
from rlprompt.rundir import MANIFEST, record_files

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """Small data, a finished discrete run, an unfinished copy and a finished soft run, made once."""
    root = tmp_path_factory.mktemp("ownership")
    data = root / "data"
    data.mkdir()
    for split in ("train", "dev"):
        shutil.copy(demo_dir() / f"{split}.tsv", data / f"{split}.tsv")
    lines = (demo_dir() / "test.tsv").read_text().splitlines()
    (data / "test.tsv").write_text("\n".join(lines[:21]) + "\n")
    common = {
        "data": {"dir": str(data)},
        "budget": {"prompt_evals": 8},
        "output": {"tensorboard": False, "plot": False},
    }
    config = root / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {**common, "env": {"kind": "edit", "batch_size": 4}, "agent": {"name": "hill_climb", "n_envs": 4}}
        )
    )
    soft_config = root / "soft.yaml"
    soft_config.write_text(
        yaml.safe_dump(
            {
                **common,
                "env": {"kind": "soft", "batch_size": 4, "n_tokens": 2},
                "agent": {"name": "cma_es", "n_envs": 4},
            }
        )
    )
    run = root / "run"
    run_experiment(load_config(config), run, progress=False)
    soft = root / "soft"
    run_experiment(load_config(soft_config), soft, progress=False)
    unfinished = root / "unfinished"
    shutil.copytree(run, unfinished)
    (unfinished / "best_prompt.json").unlink()
    return {"root": root, "data": data, "config": config, "run": run, "soft": soft, "unfinished": unfinished}


@pytest.fixture
def w(world, tmp_path) -> dict[str, Path]:
    """Copies of the world's runs in this test's own directory, each with its own manifest (a
    copied manifest names the directory it was written for, so rlprompt does not trust it)."""
    out = dict(world)
    for name in ("run", "soft", "unfinished"):
        out[name] = tmp_path / name
        shutil.copytree(world[name], out[name])
        record_files(out[name], "run")
    return out


def refused(argv: list[str], capsys, expect: str) -> str:
    """Run the CLI; it must exit 2 with one error line naming ``expect``."""
    code = main(argv)
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("rlprompt: warning:")]
    assert code == 2, f"{argv}: exit {code}"
    assert len(err) == 1 and err[0].startswith("rlprompt: error:"), err
    assert expect in err[0], err[0]
    return err[0]


# ------------------------------------------------------------------ export


def test_peft_force_never_deletes_a_folder_that_holds_the_run(w, tmp_path, capsys):
    parent = tmp_path / "thesis"
    parent.mkdir()
    shutil.move(str(w["soft"]), parent / "soft")
    (parent / "thesis.tex").write_text("\\chapter{Results}\n")
    before = digest(parent)
    refused(
        ["export", str(parent / "soft"), "--format", "peft", "--out", str(parent), "--force"],
        capsys,
        "holds the run directory",
    )
    assert digest(parent) == before


def test_peft_reexport_keeps_what_the_user_added(w, tmp_path, capsys):
    adapter = tmp_path / "adapter"
    assert main(["export", str(w["soft"]), "--format", "peft", "--out", str(adapter)]) == 0
    record = json.loads((adapter / "rlprompt_export.json").read_text())["rlprompt_export"]
    assert set(record["files"]) == {"adapter_config.json", "adapter_model.safetensors"}
    assert main(["export", str(w["soft"]), "--format", "peft", "--out", str(adapter)]) == 0  # alone: replaced
    (adapter / "README.md").write_text("# my adapter\n")
    (adapter / "eval").mkdir()
    (adapter / "eval" / "results.csv").write_text("split,accuracy\ntest,0.7\n")
    before = digest(adapter)
    capsys.readouterr()
    refused(["export", str(w["soft"]), "--format", "peft", "--out", str(adapter)], capsys, "README.md")
    assert digest(adapter) == before
    (adapter / "adapter_model.safetensors").write_bytes(b"stale")  # an export file, changed since
    assert main(["export", str(w["soft"]), "--format", "peft", "--out", str(adapter), "--force"]) == 0
    assert (adapter / "README.md").read_text() == "# my adapter\n"
    assert (adapter / "eval" / "results.csv").read_text() == "split,accuracy\ntest,0.7\n"
    weights = (adapter / "adapter_model.safetensors").read_bytes()
    assert weights != b"stale" and hashlib.sha256(weights).hexdigest() == record["files"]["adapter_model.safetensors"]


def test_force_never_replaces_what_rlprompt_did_not_write(w, tmp_path, capsys):
    mine = tmp_path / "my-adapter"
    mine.mkdir()
    (mine / "adapter_config.json").write_text("{}\n")
    (mine / "notes.md").write_text("mine\n")
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me\n")
    data = tmp_path / "data.json"
    data.write_text('{"prompt": "mine"}\n')
    before = {p: digest(p) for p in (mine, notes, data)}
    refused(["export", str(w["soft"]), "--format", "peft", "--out", str(mine), "--force"], capsys, "did not write")
    refused(["export", str(w["run"]), "--format", "txt", "--out", str(notes), "--force"], capsys, "did not write")
    refused(["export", str(w["run"]), "--format", "json", "--out", str(data), "--force"], capsys, "did not write")
    assert {p: digest(p) for p in before} == before


def test_out_is_never_the_working_directory_or_above_it(w, tmp_path, capsys, monkeypatch):
    cwd = tmp_path / "work"
    cwd.mkdir()
    (cwd / "thesis.tex").write_text("keep\n")
    monkeypatch.chdir(cwd)
    before = digest(tmp_path)
    for out in (".", "..", "/", str(cwd)):
        refused(["export", str(w["soft"]), "--format", "peft", "--out", out, "--force"], capsys, "--out")
    assert digest(tmp_path) == before


def test_out_inside_a_run_or_over_one_is_refused(w, capsys):
    before = {name: digest(w[name]) for name in ("run", "unfinished", "soft")}
    refused(
        ["export", str(w["run"]), "--format", "json", "--out", str(w["unfinished"] / "prompt.json")],
        capsys,
        "inside the run directory",
    )
    refused(
        ["export", str(w["soft"]), "--format", "peft", "--out", str(w["unfinished"]), "--force"],
        capsys,
        "is a run directory",
    )
    assert {name: digest(w[name]) for name in before} == before


@pytest.mark.parametrize(
    ("fmt", "name", "expect"),
    [
        ("txt", "prompt.json", "ends in .json but --format txt"),
        ("json", "prompt.txt", "ends in .txt but --format json"),
    ],
)
def test_a_suffix_that_contradicts_the_format_is_refused(w, tmp_path, capsys, fmt, name, expect):
    refused(["export", str(w["run"]), "--format", fmt, "--out", str(tmp_path / name)], capsys, expect)
    assert not (tmp_path / name).exists()


def test_an_export_changed_since_is_replaced_only_with_force(w, tmp_path, capsys):
    out = tmp_path / "prompt.json"
    assert main(["export", str(w["run"]), "--format", "json", "--out", str(out)]) == 0
    exported = json.loads(out.read_text())
    out.write_text(json.dumps(exported, indent=4) + "\n")  # re-indented: the same data, still ours
    assert main(["export", str(w["run"]), "--format", "json", "--out", str(out)]) == 0
    edited = {**json.loads(out.read_text()), "note": "tuned by hand"}
    out.write_text(json.dumps(edited))
    capsys.readouterr()
    refused(["export", str(w["run"]), "--format", "json", "--out", str(out)], capsys, "changed since")
    assert json.loads(out.read_text())["note"] == "tuned by hand"
    assert main(["export", str(w["run"]), "--format", "json", "--out", str(out), "--force"]) == 0
    assert "note" not in json.loads(out.read_text())
    text = tmp_path / "prompt.txt"
    assert main(["export", str(w["run"]), "--format", "txt", "--out", str(text)]) == 0
    assert main(["export", str(w["run"]), "--format", "txt", "--out", str(text)]) == 0  # the same export again


# ------------------------------------------------------------------ run directories


def test_a_failed_start_leaves_nothing_and_the_command_runs_again(w, tmp_path, capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = tmp_path / "api.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "task_model": {
                    "kind": "openai",
                    "base_url": f"http://127.0.0.1:{port}/v1",
                    "model": "tiny-gpt2",
                    "api_key_env": None,
                    "scoring": "logprobs",
                    "response_cache": None,
                },
                "template": "{prompt} {sentence} It was",
                "verbalizers": [" bad", " good"],
                "data": {"dir": str(w["data"])},
                "env": {"kind": "edit", "batch_size": 4},
                "agent": {"name": "hill_climb", "n_envs": 4},
                "budget": {"prompt_evals": 8},
                "output": {"tensorboard": True, "plot": False},
            }
        )
    )
    out = tmp_path / "new" / "api-run"
    for _ in range(2):  # the same command twice: refused for the server both times, never for the directory
        refused(["run", str(config), "-o", str(out), "--no-progress"], capsys, "cannot reach")
        assert not (tmp_path / "new").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    refused(["run", str(config), "-o", str(empty), "--no-progress"], capsys, "cannot reach")
    assert empty.is_dir() and not any(empty.iterdir())


def test_a_run_killed_before_its_first_checkpoint_starts_over_and_other_files_stay(w, capsys):
    killed = w["unfinished"]
    (killed / "checkpoint.safetensors").unlink()  # as a kill before the first checkpoint leaves it
    (killed / "metrics.csv").write_text("iteration,prompt_evals\n1,4\n")
    (killed / "notes.txt").write_text("what I tried\n")
    assert main(["run", str(w["config"]), "-o", str(killed), "--no-progress"]) == 0
    assert (killed / "best_prompt.json").is_file() and (killed / "checkpoint.safetensors").is_file()
    assert (killed / "notes.txt").read_text() == "what I tried\n"


def test_a_run_directory_is_never_the_working_directory_nor_inside_a_run(w, tmp_path, capsys, monkeypatch):
    cwd = tmp_path / "empty-cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    refused(["run", str(w["config"]), "-o", ".", "--no-progress"], capsys, "working directory")
    assert not any(cwd.iterdir())
    before = digest(w["run"])
    refused(
        ["run", str(w["config"]), "-o", str(w["run"] / "inner"), "--no-progress"], capsys, "inside the run directory"
    )
    assert digest(w["run"]) == before


def write_bench(path: Path, world, out: Path, **extra) -> Path:
    bench = {
        "base": str(world["config"]),
        "agents": {"hill_climb": None},
        "seeds": [1],
        "output_dir": str(out),
        "add_random_search": False,
        **extra,
    }
    path.write_text(yaml.safe_dump(bench))
    return path


def test_bench_never_clears_or_overwrites_files_it_did_not_write(w, tmp_path, capsys):
    # a cell directory holding someone's model folder (config.json + tensorboard/, as an unstarted run had)
    out = tmp_path / "bench-out"
    cell = out / "runs" / "default" / "hill_climb" / "bbase" / "seed1"
    (cell / "tensorboard").mkdir(parents=True)
    (cell / "config.json").write_text('{"model_type": "bert"}\n')
    (cell / "tensorboard" / "events.out").write_bytes(b"\x00events")
    before = digest(cell)
    path = write_bench(tmp_path / "bench.yaml", w, out)
    assert main(["bench", str(path), "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert "holds no rlprompt run" in captured.out + captured.err
    assert digest(cell) == before
    # an output_dir of other files (a results.csv of the user's) is refused before anything is written
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "results.csv").write_text("mine\n")
    before = digest(mine)
    refused(
        ["bench", str(write_bench(tmp_path / "bench2.yaml", w, mine)), "--no-progress"],
        capsys,
        "holds files no bench wrote",
    )
    assert digest(mine) == before


def test_a_bench_file_without_base_is_an_error(w, tmp_path, capsys):
    out = tmp_path / "bench-out"
    path = tmp_path / "bench.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "set": ["budget.prompt_evals=8"],
                "agents": {"hill_climb": None},
                "seeds": [1],
                "output_dir": str(out),
                "add_random_search": False,
            }
        )
    )
    refused(["bench", str(path), "--no-progress"], capsys, "names no base run config")
    assert not out.exists()


# ------------------------------------------------------------------ one writer


@contextmanager
def held_by_another_process(directory: Path) -> Iterator[subprocess.Popen]:
    """A second process holding ``directory``'s lock until the block ends."""
    code = (
        "import sys\nfrom rlprompt.io import directory_lock\n"
        "with directory_lock(sys.argv[1], command='rlprompt bench grid.yaml [cell a/b]'):\n"
        "    print('locked', flush=True)\n    sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(directory)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=60)


def check_holder_named(message: str, proc: subprocess.Popen) -> None:
    assert f"pid {proc.pid} on {socket.gethostname()}" in message
    assert "rlprompt bench grid.yaml [cell a/b]" in message and "since " in message


def test_a_second_writer_is_refused_with_the_first_named(w, tmp_path, capsys):
    unfinished, finished = w["unfinished"], w["run"]
    with held_by_another_process(unfinished) as proc:
        info = json.loads((unfinished / LOCK_FILE).read_text())
        assert info["pid"] == proc.pid and info["host"] == socket.gethostname()
        assert info["command"] == "rlprompt bench grid.yaml [cell a/b]" and info["since"]
        before = digest(unfinished)
        message = refused(
            ["run", "--resume", str(unfinished), "--no-progress"], capsys, "is in use by another rlprompt process"
        )
        check_holder_named(message, proc)
        (unfinished / "checkpoint.safetensors").rename(unfinished.parent / "ckpt")  # now an unstarted run
        before = digest(unfinished)
        message = refused(["run", str(w["config"]), "-o", str(unfinished), "--no-progress"], capsys, "in use by")
        check_holder_named(message, proc)
        assert digest(unfinished) == before
        (unfinished.parent / "ckpt").rename(unfinished / "checkpoint.safetensors")
    with held_by_another_process(finished) as proc:
        before = digest(finished)
        message = refused(["select", str(finished), "--set", "selection.splits=[dev]"], capsys, "in use by")
        check_holder_named(message, proc)
        assert digest(finished) == before
    # the holder gone, the same commands go through
    assert main(["run", "--resume", str(unfinished), "--no-progress"]) == 0
    assert (unfinished / "best_prompt.json").is_file()


def test_a_bench_cell_held_by_another_process_fails_and_the_others_run(w, tmp_path, capsys):
    out = tmp_path / "bench-out"
    path = write_bench(tmp_path / "bench.yaml", w, out, seeds=[1, 2])
    held = out / "runs" / "default" / "hill_climb" / "bbase" / "seed1"
    held.mkdir(parents=True)
    with held_by_another_process(held) as proc:
        assert main(["bench", str(path), "--no-progress"]) == 2
        captured = capsys.readouterr()
    assert "seed1 FAILED" in captured.out and f"in use by another rlprompt process (pid {proc.pid}" in captured.out
    assert not (held / "config.json").exists()
    assert (out / "runs" / "default" / "hill_climb" / "bbase" / "seed2" / "best_prompt.json").is_file()
    assert main(["bench", str(path), "--no-progress"]) == 0  # no self-deadlock: the worker's and the run's lock are one
    assert (held / "best_prompt.json").is_file()


def test_the_lock_is_reentrant_in_its_thread_and_exclusive_across_threads(tmp_path):
    errors: list[str] = []

    def other() -> None:
        try:
            with directory_lock(tmp_path):
                errors.append("second writer got the lock")
        except RLPromptError as exc:
            errors.append(str(exc))

    with directory_lock(tmp_path, command="first"):
        with directory_lock(tmp_path, command="nested"):  # the same call chain: no self-deadlock
            thread = threading.Thread(target=other)
            thread.start()
            thread.join(timeout=30)
        assert json.loads((tmp_path / LOCK_FILE).read_text())["command"] == "first"
    assert len(errors) == 1 and "in use by another rlprompt process" in errors[0] and ": first)" in errors[0]
    with directory_lock(tmp_path):  # released
        pass


# ------------------------------------------------------------------ resume


def test_resume_refuses_a_checkpoint_of_another_agent(w, capsys):
    run = w["unfinished"]
    config = json.loads((run / "config.json").read_text())
    config["agent"] = {"name": "random_search", "n_envs": 4, "seed": None, "top_k": 10, "log_interval": 1}
    (run / "config.json").write_text(json.dumps(config))
    before = digest(run)
    message = refused(["run", "--resume", str(run), "--no-progress"], capsys, "'hill_climb'")
    assert "'random_search'" in message
    assert digest(run) == before
    config["agent"] = {
        "name": "hill_climb",
        "n_envs": 4,
        "seed": None,
        "top_k": 10,
        "log_interval": 1,
        "min_improvement": 0.5,
    }
    (run / "config.json").write_text(json.dumps(config))
    refused(["run", "--resume", str(run), "--no-progress"], capsys, "agent.min_improvement: 0.0 in the checkpoint, 0.5")


def test_finetune_takes_the_same_lock_and_stays_out_of_runs(w, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RLPROMPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(ROOT)  # the config's data path is relative to the project root
    tiny = str(ROOT / "experiments" / "configs" / "finetune-tiny.yaml")
    held = tmp_path / "ft"
    held.mkdir()
    with held_by_another_process(held) as proc:
        message = refused(["finetune", tiny, "-o", str(held)], capsys, "in use by another rlprompt process")
        check_holder_named(message, proc)
    assert [p.name for p in held.iterdir()] == [LOCK_FILE]
    before = digest(w["run"])
    refused(["finetune", tiny, "-o", str(w["run"] / "ft")], capsys, "inside the run directory")
    assert digest(w["run"]) == before


def test_a_forged_or_copied_manifest_owns_nothing(w, tmp_path, capsys):
    """A manifest written by hand, or copied from another run, does not make rlprompt own the
    files it lists: the user's config.json and metrics.csv beside it survive a new run."""
    forged = tmp_path / "forged"
    forged.mkdir()
    (forged / "config.json").write_text("my own config\n")
    (forged / "metrics.csv").write_text("my,own,numbers\n")
    (forged / ".config.json.backup1.tmp").write_text("my backup\n")
    shutil.copy(w["unfinished"] / MANIFEST, forged / MANIFEST)
    before = digest(forged)
    assert main(["run", str(w["config"]), "-o", str(forged), "--no-progress"]) == 2
    assert "already holds a run" in capsys.readouterr().err  # its metrics.csv: refused, not cleared
    assert digest(forged) == before
    (forged / "metrics.csv").unlink()
    before = digest(forged)
    assert main(["run", str(w["config"]), "-o", str(forged), "--no-progress"]) == 2
    assert "not empty and holds no rlprompt run" in capsys.readouterr().err
    assert digest(forged) == before
    (forged / MANIFEST).write_text(json.dumps({"rlprompt": "run", "files": ["config.json", "metrics.csv"]}))
    before = digest(forged)
    assert main(["run", str(w["config"]), "-o", str(forged), "--no-progress"]) == 2
    assert digest(forged) == before
