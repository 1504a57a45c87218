"""Generation data: examples of named input fields, each with one or more reference outputs.

A file (JSONL, TSV or CSV) holds one example per row: the input fields the template names
(``{context}``, ``{question}``, ``{source}`` ...) as strings and a reference field holding a
string or a list of accepted strings (SQuAD's ``answers``, SciTLDR's ``targets``). A row
without the reference field, with an empty reference, or without a field the template
needs is one clear :class:`~rlprompt.errors.DataError` naming the file, row and field.
:func:`load_generation_data` loads train/dev/test from a directory, per-split files or a
``datasets`` name/path (``data.hf_name``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlprompt.errors import DataError

log = logging.getLogger("rlprompt")

REFERENCE_FIELDS = ("answers", "targets", "target", "references", "reference", "summary", "output", "answer")
"""Fields taken as the references when ``data.reference_field`` is not set (the first present)."""
SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class GenerationDataset:
    """Examples (input field values) with their references; ``source`` names the file."""

    examples: list[dict[str, str]]
    references: list[list[str]]
    source: str = "<memory>"

    def __post_init__(self) -> None:
        if len(self.examples) != len(self.references):
            raise DataError(f"{self.source}: {len(self.examples)} examples but {len(self.references)} reference sets")

    def __len__(self) -> int:
        return len(self.examples)

    def subset(self, indices: Sequence[int]) -> GenerationDataset:
        return GenerationDataset(
            [self.examples[i] for i in indices], [self.references[i] for i in indices], self.source
        )


def generation_dataset_from_records(
    records: Sequence[dict[str, Any]],
    source: str,
    fields: Sequence[str],
    reference_field: str,
    empty_text: str = "keep",
    first_row: int = 1,
) -> GenerationDataset:
    """Build a dataset from row dicts, checking the input fields and the references."""
    if not records:
        raise DataError(f"{source}: no examples (empty split)")
    examples, references, empty_rows = [], [], []
    for row_no, row in enumerate(records, start=first_row):
        where = f"{source} row {row_no}"
        if reference_field not in row:
            raise DataError(
                f"{where} has no reference field '{reference_field}' (fields: {sorted(row)}); set data.reference_field"
            )
        raw = row[reference_field]
        if (
            isinstance(raw, dict) and "text" in raw
        ):  # the Hugging Face squad layout: {"text": [...], "answer_start": [...]}
            raw = raw["text"]
        refs = [raw] if isinstance(raw, str) else raw
        if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
            raise DataError(f"{where}: reference field '{reference_field}' must be a string or a list of strings")
        if not refs or any(not r.strip() for r in refs):
            raise DataError(f"{where}: an empty reference in '{reference_field}' (nothing to score against)")
        example = {}
        for name in fields:
            if name not in row:
                raise DataError(f"{where} has no field '{name}' that the template names (fields: {sorted(row)})")
            value = row[name]
            if value is None:
                value = ""
            if not isinstance(value, str):
                raise DataError(f"{where}: field '{name}' is a {type(value).__name__}, not text")
            example[name] = value
        if fields and not any(example[n].strip() for n in fields):
            empty_rows.append(row_no)
            if empty_text == "skip":
                continue
        examples.append(example)
        references.append(list(refs))
    if empty_rows:
        shown = ", ".join(str(r) for r in empty_rows[:5]) + (", ..." if len(empty_rows) > 5 else "")
        if empty_text == "error":
            raise DataError(
                f"{source}: {len(empty_rows)} row(s) with empty or missing input (rows {shown}); "
                "set data.empty_text=keep or skip to load them"
            )
        action = "kept" if empty_text == "keep" else "skipped"
        log.warning(f"{source}: {len(empty_rows)} row(s) with empty input {action}: rows {shown} (data.empty_text)")
    if not examples:
        raise DataError(f"{source}: no examples left (every row has empty input)")
    return GenerationDataset(examples, references, source)


def pick_reference_field(row: dict[str, Any], configured: str | None, source: str) -> str:
    """``configured``, or the first of :data:`REFERENCE_FIELDS` the row has."""
    if configured is not None:
        return configured
    found = next((name for name in REFERENCE_FIELDS if name in row), None)
    if found is None:
        raise DataError(
            f"{source}: cannot tell which field holds the references (fields: {sorted(row)}); set data.reference_field"
        )
    return found


@dataclass(frozen=True)
class GenerationTaskData:
    """The three splits of a generation task."""

    train: GenerationDataset
    dev: GenerationDataset
    test: GenerationDataset
    reference_field: str
    fields: tuple[str, ...]

    def split(self, name: str) -> GenerationDataset:
        if name not in SPLITS:
            raise DataError(f"unknown split '{name}'; choose from {list(SPLITS)}")
        return getattr(self, name)


def load_generation_data(config: Any, fields: Sequence[str]) -> GenerationTaskData:
    """Train/dev/test of a generation task (``config`` is the ``data`` section); ``fields`` are
    the input fields the template names, checked against ``data.input_fields`` and every row."""
    from rlprompt.data import _read_rows, check_held_out, get_hf_split, load_hf_dataset, split_paths

    fields = list(fields)
    if config.input_fields is not None:
        missing = [f for f in config.input_fields if f not in fields]
        extra = [f for f in fields if f not in config.input_fields]
        if missing:
            raise DataError(
                f"the template does not place input field(s) {missing} (data.input_fields); "
                f"add '{{{missing[0]}}}' to the template"
            )
        if extra:
            raise DataError(
                f"the template names '{{{extra[0]}}}', which is not an input field "
                f"(data.input_fields: {config.input_fields})"
            )
    raw: dict[str, tuple[str, list[dict[str, Any]], int]] = {}
    paths: dict[str, str] = {}
    if config.hf_name is not None:
        loaded = load_hf_dataset(config)
        for split, hf_name in config.hf_splits.items():
            raw[split] = (f"{config.hf_name}[{hf_name}]", get_hf_split(loaded, config, hf_name).to_list(), 1)
    else:
        paths = dict(split_paths(config))
        for split, path in paths.items():
            p = Path(path)
            raw[split] = (str(p), _read_rows(p), 1 if p.suffix.lower() == ".jsonl" else 2)
    missing_splits = [s for s in SPLITS if s not in raw]
    if missing_splits:
        raise DataError(f"no {missing_splits[0]} split (data.hf_splits maps {sorted(raw)})")
    source, rows, _ = raw["train"]
    if not rows:
        raise DataError(f"{source}: no examples (empty split)")
    reference_field = pick_reference_field(rows[0], config.reference_field, source)
    splits = {
        split: generation_dataset_from_records(rows, source, fields, reference_field, config.empty_text, first)
        for split, (source, rows, first) in raw.items()
    }
    check_held_out(
        {split: ds.source for split, ds in splits.items()},
        paths,
        {
            split: [(sorted(e.items()), r) for e, r in zip(ds.examples, ds.references, strict=True)]
            for split, ds in splits.items()
        },
    )
    if config.few_shot_k is not None:
        for offset, split in enumerate(("train", "dev")):
            splits[split] = sample_examples(splits[split], config.few_shot_k, config.seed + offset)
    if config.test_limit is not None and config.test_limit < len(splits["test"]):
        splits["test"] = splits["test"].subset(range(config.test_limit))
    return GenerationTaskData(splits["train"], splits["dev"], splits["test"], reference_field, tuple(fields))


def sample_examples(dataset: GenerationDataset, k: int, seed: int) -> GenerationDataset:
    """``k`` examples drawn without replacement (all of them when there are fewer)."""
    import numpy as np

    if k >= len(dataset):
        return dataset
    order = np.random.default_rng(seed).permutation(len(dataset))[:k]
    return dataset.subset(sorted(int(i) for i in order))
