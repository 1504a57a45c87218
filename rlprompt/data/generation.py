"""Generation data: examples of named input fields, each with one or more reference outputs.

A file (JSONL, TSV or CSV) holds one example per row: the input fields the template names
(``{context}``, ``{question}``, ``{source}`` ...) as strings and a reference field holding a
string or a list of accepted strings (SQuAD's ``answers``, SciTLDR's ``targets``). A row
without the reference field, with an empty reference, or without a field the template
needs is one clear :class:`~rlprompt.errors.DataError` naming the file, row and field.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlprompt.errors import DataError

log = logging.getLogger("rlprompt")


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

    @property
    def keys(self) -> list[str]:
        """One string per example (its fields as canonical JSON): how caches name an example."""
        return [example_key(e) for e in self.examples]

    def subset(self, indices: Sequence[int]) -> GenerationDataset:
        return GenerationDataset([self.examples[i] for i in indices], [self.references[i] for i in indices], self.source)


def example_key(example: dict[str, str]) -> str:
    return json.dumps(example, sort_keys=True, ensure_ascii=False)


def generation_dataset_from_records(
    records: Sequence[dict[str, Any]], source: str, fields: Sequence[str], reference_field: str,
    empty_text: str = "keep", first_row: int = 1,
) -> GenerationDataset:  # fmt: skip
    """Build a dataset from row dicts, checking the input fields and the references."""
    if not records:
        raise DataError(f"{source}: no examples (empty split)")
    examples, references, empty_rows = [], [], []
    for row_no, row in enumerate(records, start=first_row):
        where = f"{source} row {row_no}"
        if reference_field not in row:
            raise DataError(f"{where} has no reference field '{reference_field}' (fields: {sorted(row)}); "
                            "set data.reference_field")  # fmt: skip
        raw = row[reference_field]
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
            raise DataError(f"{source}: {len(empty_rows)} row(s) with empty or missing input (rows {shown}); "
                            "set data.empty_text=keep or skip to load them")  # fmt: skip
        action = "kept" if empty_text == "keep" else "skipped"
        log.warning(f"{source}: {len(empty_rows)} row(s) with empty input {action}: rows {shown} (data.empty_text)")
    if not examples:
        raise DataError(f"{source}: no examples left (every row has empty input)")
    return GenerationDataset(examples, references, source)


def load_generation_file(
    path: str | os.PathLike[str], fields: Sequence[str], reference_field: str, empty_text: str = "keep"
) -> GenerationDataset:
    """Load one .jsonl/.tsv/.csv file of generation examples."""
    from rlprompt.data import _read_rows

    p = Path(path)
    first_row = 1 if p.suffix.lower() == ".jsonl" else 2
    return generation_dataset_from_records(_read_rows(p), str(p), fields, reference_field, empty_text, first_row)
