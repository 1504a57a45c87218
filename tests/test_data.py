"""Data layer: file formats, split directories, datasets library, few-shot, validation errors."""

from __future__ import annotations

import json

import pytest

from conftest import sst2_dir
from rlprompt.config import DataConfig
from rlprompt.data import demo_dir, few_shot_sample, load_file, load_task_data
from rlprompt.errors import DataError


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_tsv_keeps_quote_characters_literal(tmp_path):
    f = write(tmp_path / "train.tsv", "sentence\tlabel\n`` bad '' is the word\t0\n\"quoted\" start, comma\t1\n")
    ds = load_file(f)
    assert ds.texts == ["`` bad '' is the word", '"quoted" start, comma']
    assert ds.labels == [0, 1]


def test_csv_jsonl_and_configured_columns(tmp_path):
    csv_file = write(tmp_path / "a.csv", 'review,stars\n"great, really",pos\nawful,neg\n')
    ds = load_file(csv_file, text_column="review", label_column="stars", label_names=["neg", "pos"])
    assert ds.texts == ["great, really", "awful"] and ds.labels == [1, 0]
    jsonl = write(
        tmp_path / "b.jsonl",
        json.dumps({"text": "fine", "label": 2}) + "\n\n" + json.dumps({"text": "meh", "label": 0}) + "\n",
    )
    ds = load_file(jsonl)
    assert ds.texts == ["fine", "meh"] and ds.labels == [2, 0]


def test_directory_layout_and_multiclass(tmp_path):
    for split in ("train", "validation", "test"):
        write(tmp_path / f"{split}.tsv", "text\tlabel\n" + "".join(f"{split} example {i}\t{i % 3}\n" for i in range(9)))
    data = load_task_data(DataConfig(dir=str(tmp_path)), num_classes=3)
    assert len(data.train) == len(data.dev) == len(data.test) == 9
    assert sorted(set(data.dev.labels)) == [0, 1, 2]


def test_sst2_directory_layout():
    data = load_task_data(DataConfig(dir=str(sst2_dir(13))), num_classes=2)
    assert (len(data.train), len(data.dev), len(data.test)) == (32, 32, 1821)
    assert sorted(set(data.train.labels)) == [0, 1]


def test_builtin_demo_set_sizes_and_balance():
    data = load_task_data(DataConfig(), num_classes=2)
    assert (len(data.train), len(data.dev), len(data.test)) == (32, 32, 200)
    for ds in (data.train, data.dev, data.test):
        assert ds.labels.count(0) == ds.labels.count(1)
    assert demo_dir().is_dir()


def test_datasets_library_from_local_files(tmp_path):
    for split in ("train", "validation", "test"):
        lines = [json.dumps({"sentence": f"{split} text {i}", "label": ["neg", "pos"][i % 2]}) for i in range(6)]
        write(tmp_path / f"{split}.jsonl", "\n".join(lines) + "\n")
    # A local folder of split files goes through datasets.load_dataset as a path.
    cfg_dir = DataConfig(hf_name=str(tmp_path), label_names=["neg", "pos"])
    data = load_task_data(cfg_dir, num_classes=2)
    assert len(data.train) == 6 and data.train.labels[:2] == [0, 1]
    assert data.dev.texts[0].startswith("validation")


def test_datasets_hub_name_offline_is_clear(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match="sst2_no_such_dataset"):
        load_task_data(DataConfig(hf_name="stanfordnlp/sst2_no_such_dataset"), num_classes=2)


def test_few_shot_sampler_is_balanced_and_seeded():
    ds = load_file(demo_dir() / "test.tsv")
    a = few_shot_sample(ds, 4, seed=1)
    b = few_shot_sample(ds, 4, seed=1)
    c = few_shot_sample(ds, 4, seed=2)
    assert a.texts == b.texts and a.texts != c.texts
    assert a.labels.count(0) == a.labels.count(1) == 4
    with pytest.raises(DataError, match="fewer than few_shot_k"):
        few_shot_sample(ds, 1000, seed=0)


def test_few_shot_through_config():
    data = load_task_data(DataConfig(few_shot_k=3, seed=5), num_classes=2)
    assert len(data.train) == 6 and len(data.dev) == 6 and len(data.test) == 200


@pytest.mark.parametrize(
    ("content", "kwargs", "message"),
    [
        ("sentence\tlabel\n", {}, "empty split"),
        ("review\tlabel\nok\t1\n", {}, "no text column"),
        ("sentence\tlabel\nok\t1\n", {"text_column": "review"}, "text column 'review' not found"),
        ("sentence\tstars\nok\t1\n", {}, "label column 'label' not found"),
        ("sentence\tlabel\nok\tpos\n", {}, "not an integer"),
        ("sentence\tlabel\nok\tmeh\n", {"label_names": ["neg", "pos"]}, "unknown label 'meh'"),
        ("sentence\tlabel\nok\tpos\nbad\t0\n", {"label_names": ["neg", "pos"]}, "mixed label types"),
        ("sentence\tlabel\nok\t1\textra\n", {}, "more fields than the header"),
        ("sentence\tlabel\n\t1\n", {"empty_text": "error"}, "empty or missing text"),
        ("sentence\tlabel\nok\t\n", {}, "missing label"),
    ],
)
def test_file_validation_errors(tmp_path, content, kwargs, message):
    f = write(tmp_path / "x.tsv", content)
    with pytest.raises(DataError, match=message):
        load_file(f, **kwargs)


def test_missing_file_and_dir_errors(tmp_path):
    with pytest.raises(DataError, match="data file not found"):
        load_file(tmp_path / "nope.tsv")
    with pytest.raises(DataError, match="data directory not found"):
        load_task_data(DataConfig(dir=str(tmp_path / "nodir")), num_classes=2)
    write(tmp_path / "train.tsv", "sentence\tlabel\na\t0\n")
    with pytest.raises(DataError, match="no dev file"):
        load_task_data(DataConfig(dir=str(tmp_path)), num_classes=2)
    with pytest.raises(DataError, match="unsupported file type"):
        load_file(write(tmp_path / "x.parquet", ""))


def test_labels_must_match_verbalizers(tmp_path):
    for split in ("train", "dev", "test"):
        write(tmp_path / f"{split}.tsv", "sentence\tlabel\na\t0\nb\t2\n")
    with pytest.raises(DataError, match=r"label\(s\) \[2\] have no verbalizer"):
        load_task_data(DataConfig(dir=str(tmp_path)), num_classes=2)
    with pytest.raises(DataError, match="label_names has 3 names but there are 2 verbalizers"):
        load_task_data(DataConfig(dir=str(tmp_path), label_names=["a", "b", "c"]), num_classes=2)
