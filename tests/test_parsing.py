"""Bounded parsing of user files and unambiguous data: configs, ``--set`` values, candidate
files and data files are read within limits (size, nesting, values, aliases) and hold plain
data only; a data folder, header or split that could mean two things is an error."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

import rlprompt.data as data_module
from rlprompt.config import MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES, DataConfig, load_config
from rlprompt.data import demo_dir, load_file, load_task_data
from rlprompt.envs.selection import load_candidates
from rlprompt.errors import ConfigError, DataError

# ------------------------------------------------------------------------------ configs


def alias_bomb(levels: int = 9) -> str:
    """337 bytes at 8 levels; each level repeats the one before ten times (10**levels values)."""
    names = "abcdefghijklmnop"
    lines = [f"{names[0]}: &{names[0]} [x,x,x,x,x,x,x,x,x,x]"]
    for i in range(1, levels):
        lines.append(f"{names[i]}: &{names[i]} [{','.join([f'*{names[i - 1]}'] * 10)}]")
    return "\n".join(lines) + "\n"


def flow_bomb(levels: int = 9) -> str:
    """The alias bomb as one flow mapping (a ``--set`` value, a list item)."""
    return "{" + ", ".join(alias_bomb(levels).splitlines()) + "}"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_an_alias_bomb_fails_at_once_naming_aliases(tmp_path):
    bomb = write(tmp_path / "bomb.yaml", alias_bomb(9))
    assert len(alias_bomb(8)) < 400
    start = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        load_config(bomb)
    assert time.perf_counter() - start < 1.0
    message = str(info.value)
    assert str(bomb) in message and "aliases" in message and f"{MAX_NODES:,} values" in message
    with pytest.raises(ConfigError, match="aliases are expanded"):
        load_config(None, ["prompt=" + flow_bomb(9)])


# a config file's text -> the line and the problem its error names; the same value through --set
NOT_PLAIN = [
    ("prompt: 2024-01-01\n", 1, "a date/time (2024-01-01) is not a config value", "prompt=2024-01-01"),
    (
        "seed: 1\nprompt: 2024-01-01 10:00:00\n",
        2,
        "a date/time (2024-01-01 10:00:00) is not a config value",
        "prompt=2024-01-01 10:00:00",
    ),
    ("prompt: !!binary aGVsbG8=\n", 1, "binary data (!!binary) is not a config value", "prompt=!!binary aGVsbG8="),
    ("verbalizers: !!set {a, b}\n", 1, "a set (!!set) is not a config value", "verbalizers=!!set {a, b}"),
    ("verbalizers: !!omap [a: 1]\n", 1, "an ordered map (!!omap) is not a config value", "verbalizers=!!omap [a: 1]"),
    (
        "prompt: !!python/object/apply:os.system [echo hi]\n",
        1,
        "a value tagged !!python/object/apply:os.system is not a config value",
        "prompt=!!python/object/apply:os.system [echo hi]",
    ),
    (
        "prompt: !!python/name:os.system\n",
        1,
        "a value tagged !!python/name:os.system is not a config value",
        "prompt=!!python/name:os.system",
    ),
    ("prompt: !custom text\n", 1, "a value tagged !custom is not a config value", "prompt=!custom text"),
    ("seed: !!int abc\n", 1, "'abc' is not a valid !!int", "seed=!!int abc"),
    (
        "data:\n  hf_splits:\n    ? [a, b]\n    : train\n",
        3,
        "a mapping key must be text, not a list",
        "data.hf_splits={[a, b]: train}",
    ),
    (
        "data:\n  hf_splits:\n    ? {a: 1}\n    : train\n",
        3,
        "a mapping key must be text, not a mapping",
        "data.hf_splits={{a: 1}: train}",
    ),
    (
        "data:\n  hf_splits:\n    1: train\n",
        3,
        "a mapping key must be text, not an integer (1) (quote it)",
        "data.hf_splits={1: train}",
    ),
    (
        "data:\n  hf_splits:\n    yes: train\n",
        3,
        "a mapping key must be text, not true/false (yes)",
        "data.hf_splits={yes: train}",
    ),
    (
        "verbalizers: " + "[" * 5000 + "]" * 5000 + "\n",
        1,
        f"values nested more than {MAX_DEPTH} levels deep",
        "verbalizers=" + "[" * 5000 + "]" * 5000,
    ),
    (
        "verbalizers:\n  " + "- " * 5000 + "x\n",
        2,
        f"values nested more than {MAX_DEPTH} levels deep",
        "verbalizers=" + "[" * 100 + "]" * 100,
    ),
]


@pytest.mark.parametrize(("text", "line", "problem", "override"), NOT_PLAIN, ids=[p[3][:40] for p in NOT_PLAIN])
def test_a_value_json_cannot_hold_is_one_config_error_in_a_file_and_in_set(tmp_path, text, line, problem, override):
    path = write(tmp_path / "c.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"config file {path}, line {line}: ") and problem in message, message
    with pytest.raises(ConfigError) as via_set:  # the same value through --set: the same problem
        load_config(None, [override])
    assert str(via_set.value).startswith("--set ") and problem in str(via_set.value), str(via_set.value)
    assert len(str(via_set.value)) < 400


def test_anchors_and_merge_keys_within_the_limits_still_load(tmp_path):
    path = write(
        tmp_path / "c.yaml",
        "verbalizers: &v [' bad', ' good']\nprompt: &p It was\n"
        "generation: &g {max_new_tokens: 8, batch_size: 4}\nx-unused: *v\n",
    )
    with pytest.raises(ConfigError, match="unknown config key 'x-unused'"):  # aliases expand; keys are checked after
        load_config(path)
    merged = write(
        tmp_path / "m.yaml", "budget: &b {prompt_evals: 20}\nselection: {splits: [dev], <<: {include_manual: false}}\n"
    )
    cfg = load_config(merged)
    assert cfg.selection.include_manual is False and cfg.selection.splits == ["dev"] and cfg.budget.prompt_evals == 20


def test_recursive_and_too_many_aliases_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"line 1: the alias \*a is inside the value it names"):
        load_config(write(tmp_path / "r.yaml", "verbalizers: &a [x, *a]\n"))
    many = "p: &p x\nverbalizers: [" + ", ".join(["*p"] * 101) + "]\n"
    with pytest.raises(ConfigError, match="more than 100 YAML aliases"):
        load_config(write(tmp_path / "many.yaml", many))


def test_a_flat_document_over_the_node_limit_is_refused(tmp_path):
    path = write(tmp_path / "big.yaml", "verbalizers: [" + ",".join(["a"] * (MAX_NODES + 1)) + "]\n")
    with pytest.raises(ConfigError, match=f"holds more than {MAX_NODES:,} values"):
        load_config(path)


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path):
    path = tmp_path / "huge.yaml"
    with path.open("w") as handle:
        handle.write("prompt: x\n")
        handle.write("#" * MAX_FILE_BYTES + "\n")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"huge.yaml is 10.0 MiB, more than the 10 MiB"):
        load_config(path)
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n  # and another\n", "~\n", "---\n"])
def test_an_empty_or_comment_only_config_is_an_error(tmp_path, text):
    path = write(tmp_path / "empty.yaml", text)
    with pytest.raises(ConfigError, match=r"empty.yaml holds no settings \(it is empty or only comments\)"):
        load_config(path)
    assert load_config(write(tmp_path / "defaults.yaml", "{}  # every default\n")).prompt == "It was"


def test_a_bench_file_is_read_within_the_same_limits(tmp_path):
    from rlprompt.bench import load_bench

    for text, message in [
        ("", "holds no settings"),
        (alias_bomb(9), "aliases are expanded"),
        ("tasks: {a: [data.dir=x]}\nseeds: [2024-01-01]\n", "a date/time"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_bench(write(tmp_path / "bench.yaml", text))


# ------------------------------------------------------------------------------ candidate files


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("deep.json", "[" * 5000 + "]" * 5000, f"deep.json: values nested more than {MAX_DEPTH} levels deep"),
        (
            "nested.json",
            json.dumps([[[["x"]]]]).replace("[", "[" * 20).replace("]", "]" * 20),
            f"nested.json: values nested more than {MAX_DEPTH} levels deep",
        ),
        ("dup.json", '[{"prompt": "a", "prompt": "b"}]', "dup.json: key 'prompt' appears twice in one object"),
        ("bad.json", '["a",', "bad.json, line 1: invalid JSON"),
        ("date.yaml", "- It was\n- 2024-01-01\n", "date.yaml, line 2: a date/time (2024-01-01) is not a config value"),
        ("bomb.yaml", "- x\n- " + flow_bomb(9) + "\n", "aliases are expanded"),
    ],
)
def test_candidate_files_are_read_within_limits(tmp_path, name, content, message):
    path = write(tmp_path / name, content)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        load_candidates(str(path))
    assert "candidates file" in str(info.value)


def test_candidate_text_files_must_be_utf8_and_small(tmp_path):
    latin = tmp_path / "latin.txt"
    latin.write_bytes("It was\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"candidates file .*latin.txt is not UTF-8 text \(line 2\)"):
        load_candidates(str(latin))
    big = tmp_path / "big.txt"
    big.write_bytes(b"It was\n" * (MAX_FILE_BYTES // 7 + 1))
    with pytest.raises(ConfigError, match="more than the 10 MiB"):
        load_candidates(str(big))


# ------------------------------------------------------------------------------ data files


def test_jsonl_nesting_is_one_data_error_never_recursion_error(tmp_path):
    deep = write(
        tmp_path / "deep.jsonl",
        '{"text": "a", "label": 0}\n{"text": "b", "label": 0, "x": ' + "[" * 5000 + "]" * 5000 + "}\n",
    )
    with pytest.raises(DataError, match=f"deep.jsonl:2: values nested more than {MAX_DEPTH} levels deep"):
        load_file(deep)
    nested = write(tmp_path / "nested.jsonl", '{"text": "b", "label": 0, "x": ' + "[" * 100 + "]" * 100 + "}\n")
    with pytest.raises(DataError, match=f"nested.jsonl:1: values nested more than {MAX_DEPTH} levels deep"):
        load_file(nested)


def test_jsonl_duplicate_keys_and_long_lines_are_errors(tmp_path, monkeypatch):
    dup = write(tmp_path / "dup.jsonl", '{"text": "a", "label": 0}\n{"text": "b", "label": 0, "label": 1}\n')
    with pytest.raises(DataError, match="dup.jsonl:2: key 'label' appears twice in one object"):
        load_file(dup)
    monkeypatch.setattr(data_module, "MAX_FIELD_CHARS", 100)
    long = write(
        tmp_path / "long.jsonl", '{"text": "a", "label": 0}\n' + json.dumps({"text": "x" * 200, "label": 1}) + "\n"
    )
    with pytest.raises(DataError, match="long.jsonl:2: line of 225 characters, more than the 100 a line may hold"):
        load_file(long)
    tsv = write(tmp_path / "long.tsv", "sentence\tlabel\n" + "x" * 200 + "\t1\n")
    with pytest.raises(DataError, match="long.tsv:2: a field of more than 100 characters"):
        load_file(tsv)


def test_a_data_file_over_the_size_limit_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "MAX_DATA_FILE_BYTES", 20)
    path = write(tmp_path / "train.tsv", "sentence\tlabel\n" + "a fine sentence\t1\n")
    with pytest.raises(DataError, match=r"data file .*train.tsv is more than"):
        load_file(path)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("x.tsv", "sentence\tlabel\tlabel\nok\t1\t0\n", "column 'label' appears twice in the header (columns 2 and 3)"),
        ("x.csv", "text,sentence,text\nok,fine,1\n", "column 'text' appears twice in the header (columns 1 and 3)"),
    ],
)
def test_a_duplicate_header_column_is_named(tmp_path, name, content, message):
    with pytest.raises(DataError) as info:
        load_file(write(tmp_path / name, content))
    assert message in str(info.value) and name in str(info.value)


def demo_copy(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev", "test"):
        (directory / f"{split}.tsv").write_text((demo_dir() / f"{split}.tsv").read_text())
    return directory


def test_two_files_for_one_split_name_both(tmp_path):
    folder = demo_copy(tmp_path / "d")
    rows = [json.loads(json.dumps({"sentence": t, "label": 1})) for t in ("a", "b")]
    write(folder / "train.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match="holds 2 train files, train.tsv and train.jsonl: keep one"):
        load_task_data(DataConfig(dir=str(folder)), num_classes=2)
    (folder / "train.jsonl").unlink()
    (folder / "validation.tsv").write_text((folder / "dev.tsv").read_text())
    with pytest.raises(DataError, match="holds 2 dev files, dev.tsv and validation.tsv"):
        load_task_data(DataConfig(dir=str(folder)), num_classes=2)


def test_a_test_split_equal_to_train_or_dev_is_an_error(tmp_path):
    folder = demo_copy(tmp_path / "d")
    train = folder / "train.tsv"
    same_file = str(folder / ".." / "d" / "train.tsv")
    with pytest.raises(DataError, match=r"the test split is the train split's file \(.*train.tsv\)"):
        load_task_data(DataConfig(dir=str(folder), test=same_file), num_classes=2)
    lines = train.read_text().splitlines()
    shuffled = write(tmp_path / "copy.tsv", "\n".join([lines[0], *reversed(lines[1:])]) + "\n")
    with pytest.raises(DataError, match=r"the test split \(.*copy.tsv\) holds the same examples as the train split"):
        load_task_data(DataConfig(dir=str(folder), test=str(shuffled)), num_classes=2)
    with pytest.raises(DataError, match="the test split is the dev split's file"):
        load_task_data(DataConfig(dir=str(folder), test=str(folder / "dev.tsv")), num_classes=2)
    dev_copy = write(tmp_path / "dev-copy.tsv", (folder / "dev.tsv").read_text())
    with pytest.raises(DataError, match=r"dev-copy.tsv\) holds the same examples as the dev split"):
        load_task_data(DataConfig(dir=str(folder), test=str(dev_copy)), num_classes=2)
    assert len(load_task_data(DataConfig(dir=str(folder)), num_classes=2).test) == 200


def test_a_generation_test_split_equal_to_train_is_an_error(tmp_path):
    from rlprompt.data.generation import load_generation_data

    folder = tmp_path / "qa"
    folder.mkdir()
    rows = {
        split: [{"question": f"{split} q{i}", "answers": [f"a{i}"]} for i in range(3)] for split in ("train", "dev")
    }
    rows["test"] = list(reversed(rows["train"]))
    for split, items in rows.items():
        write(folder / f"{split}.jsonl", "".join(json.dumps(r) + "\n" for r in items))
    with pytest.raises(DataError, match=r"the test split \(.*test.jsonl\) holds the same examples as the train split"):
        load_generation_data(DataConfig(dir=str(folder)), ["question"])


def test_a_split_missing_a_class_is_a_warning(tmp_path, caplog):
    folder = demo_copy(tmp_path / "d")
    dev = folder / "dev.tsv"
    lines = dev.read_text().splitlines()
    dev.write_text("\n".join([lines[0], *(line for line in lines[1:] if line.endswith("\t0"))]) + "\n")
    with caplog.at_level(logging.WARNING, logger="rlprompt"):
        data = load_task_data(DataConfig(dir=str(folder), label_names=["negative", "positive"]), num_classes=2)
    warnings = [r.getMessage() for r in caplog.records if r.name == "rlprompt" and r.levelno == logging.WARNING]
    assert len(data.dev) == 16 and len(warnings) == 1, warnings
    assert (
        "the dev split" in warnings[0]
        and "dev.tsv" in warnings[0]
        and "no example of class 1 ('positive')" in warnings[0]
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rlprompt"):
        load_task_data(DataConfig(dir=str(folder), test_limit=1), num_classes=3)
    warnings = [r.getMessage() for r in caplog.records if r.name == "rlprompt"]
    assert any("the train split" in w and "32 examples) has no example of class 2" in w for w in warnings), warnings
    assert any("the test split" in w and ", 1 example) has no examples of classes" in w for w in warnings), warnings
