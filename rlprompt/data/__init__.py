"""Classification data: TSV/CSV/JSONL files, split directories, ``datasets``, few-shot sampling.

Every loader returns :class:`ClassificationDataset` objects whose labels are class indices
``0..C-1``; :func:`load_task_data` assembles train/dev/test from a :class:`DataConfig` and
checks them against the verbalizers (one per class).

Files are read within limits (:data:`MAX_DATA_FILE_BYTES`, :data:`MAX_FIELD_CHARS`, JSONL
nesting :data:`rlprompt.config.MAX_DEPTH`) and data that could mean two things is an error: a
column or JSON key given twice, two files for one split in a folder, a test split that is the
train or dev split (the same file or the same examples). A split without an example of some
class is a warning on the ``rlprompt`` logger.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from rlprompt.config import MAX_DEPTH, DataConfig, check_plain_data, json_object_without_duplicates
from rlprompt.errors import DataError, first_line

SPLITS = ("train", "dev", "test")
TEXT_COLUMN_CANDIDATES = ("sentence", "text")
SPLIT_FILE_STEMS = {"train": ("train",), "dev": ("dev", "validation", "valid"), "test": ("test",)}
SUFFIXES = (".tsv", ".csv", ".jsonl")
MAX_DATA_FILE_BYTES = 2**30
"""Largest data file read (1 GiB): larger sets go through ``data.hf_name`` (``datasets``)."""
MAX_FIELD_CHARS = 10 * 2**20
"""Longest JSONL line and longest TSV/CSV field (10 Mi characters, far above a long document)."""
log = logging.getLogger("rlprompt")


@dataclass(frozen=True)
class ClassificationDataset:
    """Texts with class-index labels; ``source`` names where they came from (for errors)."""

    texts: list[str]
    labels: list[int]
    source: str = "<memory>"
    label_names: list[str] | None = None

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise DataError(f"{self.source}: {len(self.texts)} texts but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_classes_seen(self) -> int:
        return max(self.labels) + 1 if self.labels else 0

    def subset(self, indices: Sequence[int]) -> ClassificationDataset:
        return ClassificationDataset(
            [self.texts[i] for i in indices], [self.labels[i] for i in indices], self.source, self.label_names
        )


@dataclass(frozen=True)
class TaskData:
    """The three splits of a task, validated against its classes."""

    train: ClassificationDataset
    dev: ClassificationDataset
    test: ClassificationDataset
    num_classes: int
    label_names: list[str] | None = field(default=None)

    def split(self, name: str) -> ClassificationDataset:
        if name not in SPLITS:
            raise DataError(f"unknown split '{name}'; choose from {list(SPLITS)}")
        return getattr(self, name)


# ------------------------------------------------------------------------ raw readers


def read_text_file(path: Path) -> str:
    """A data file's text (UTF-8, a leading byte-order mark dropped); bad bytes name their line."""
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    too_big = f"data file {path} is more than {MAX_DATA_FILE_BYTES / 2**30:g} GiB; load large sets through data.hf_name"
    try:
        if path.stat().st_size > MAX_DATA_FILE_BYTES:
            raise DataError(too_big)
        with path.open("rb") as handle:
            raw = handle.read(MAX_DATA_FILE_BYTES + 1)
    except OSError as exc:
        raise DataError(f"cannot read data file {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_DATA_FILE_BYTES:
        raise DataError(too_big)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); convert the file to UTF-8"
        ) from None


def _read_rows(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"{path}: unsupported file type '{suffix}' (use .tsv, .csv or .jsonl)")
    try:
        text = read_text_file(path)
        # csv's default 131,072-character field limit is too small for documents
        csv.field_size_limit(MAX_FIELD_CHARS)
        with io.StringIO(text, newline="") as handle:
            if suffix == ".tsv":
                # TSV: quote characters are literal text (SST-2 has sentences starting with ``).
                reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
                return _csv_rows(reader, path)
            if suffix == ".csv":
                return _csv_rows(csv.DictReader(handle), path)
            rows = (_jsonl_row(line, path, line_no) for line_no, line in enumerate(handle, start=1))
            return [row for row in rows if row is not None]
    except MemoryError:
        raise DataError(f"data file {path} is too large to load into memory; load it through data.hf_name") from None


def _jsonl_row(line: str, path: Path, line_no: int) -> dict[str, Any] | None:
    """One JSONL line as a row (None for a blank line): an object of at most :data:`MAX_FIELD_CHARS`
    characters, nested at most :data:`~rlprompt.config.MAX_DEPTH` deep, no key given twice."""
    if len(line) > MAX_FIELD_CHARS:
        raise DataError(
            f"{path}:{line_no}: line of {len(line):,} characters, more than the {MAX_FIELD_CHARS:,} a line may hold"
        )
    if not line.strip():
        return None
    try:
        row = json.loads(line, object_pairs_hook=json_object_without_duplicates)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{line_no}: invalid JSON ({exc.msg})") from None
    except ValueError as exc:  # a key given twice
        raise DataError(f"{path}:{line_no}: {exc}") from None
    except RecursionError:
        raise DataError(f"{path}:{line_no}: values nested more than {MAX_DEPTH} levels deep") from None
    if not isinstance(row, dict):
        raise DataError(f"{path}:{line_no}: each JSONL line must be an object")
    if any(isinstance(value, (list, dict)) for value in row.values()):
        try:
            check_plain_data(row, MAX_DEPTH, max_nodes=None)
        except ValueError as exc:
            raise DataError(f"{path}:{line_no}: {exc}") from None
    return row


def _csv_rows(reader: csv.DictReader, path: Path) -> list[dict[str, Any]]:
    kind = path.suffix[1:].upper()
    try:
        header = reader.fieldnames or []
        seen: dict[str, int] = {}
        for number, name in enumerate(header, start=1):
            if name in seen:
                raise DataError(
                    f"{path}: column '{name}' appears twice in the header (columns {seen[name]} and "
                    f"{number}); rename one"
                )
            seen[name] = number
        rows = list(reader)
    except csv.Error as exc:
        if "field limit" in str(exc):  # raised before the line is counted
            raise DataError(
                f"{path}:{reader.line_num + 1}: a field of more than {MAX_FIELD_CHARS:,} characters (malformed {kind}?)"
            ) from None
        raise DataError(f"{path}:{reader.line_num}: malformed {kind} ({exc})") from None
    for row_no, row in enumerate(rows, start=2):
        if None in row:  # csv puts surplus fields under the key None
            raise DataError(f"{path}: row {row_no} has more fields than the header")
    return rows


def _pick_text_column(columns: Sequence[str], text_column: str | None, source: str) -> str:
    if text_column is not None:
        if text_column not in columns:
            raise DataError(f"{source}: text column '{text_column}' not found; columns are {list(columns)}")
        return text_column
    for candidate in TEXT_COLUMN_CANDIDATES:
        if candidate in columns:
            return candidate
    raise DataError(
        f"{source}: no text column among {list(TEXT_COLUMN_CANDIDATES)}; columns are {list(columns)} "
        "(set data.text_column)"
    )


def _label_to_index(raw: Any, label_names: Sequence[str] | None, where: str) -> tuple[int, type]:
    """Map one raw label (int, numeric string or class name) to a class index."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise DataError(f"{where}: missing label")
    if isinstance(raw, bool):
        raise DataError(f"{where}: boolean label {raw!r}; use integers or class names")
    if isinstance(raw, int):
        return raw, int
    if isinstance(raw, float) and raw.is_integer():
        return int(raw), int
    if isinstance(raw, str):
        text = raw.strip()
        if text.lstrip("-").isdigit():
            return int(text), int
        if label_names is not None and text in label_names:
            return list(label_names).index(text), str
        if label_names is None:
            raise DataError(f"{where}: label '{text}' is not an integer; set data.label_names to map class names")
        raise DataError(f"{where}: unknown label '{text}'; data.label_names are {list(label_names)}")
    raise DataError(f"{where}: unusable label {raw!r}")


def dataset_from_records(
    records: Sequence[dict[str, Any]],
    source: str,
    text_column: str | None = None,
    label_column: str = "label",
    label_names: Sequence[str] | None = None,
    empty_text: str = "keep",
    first_row: int = 1,
) -> ClassificationDataset:
    """Build a dataset from row dicts, validating columns and labels.

    Rows with empty text are kept, skipped or refused as ``empty_text`` says; rows are
    numbered from ``first_row`` in messages (2 for files with a header line)."""
    if not records:
        raise DataError(f"{source}: no examples (empty split)")
    columns = list(records[0].keys())
    text_key = _pick_text_column(columns, text_column, source)
    if label_column not in columns:
        raise DataError(f"{source}: label column '{label_column}' not found; columns are {columns}")
    texts: list[str] = []
    labels: list[int] = []
    kinds: set[type] = set()
    empty_rows: list[int] = []
    for row_no, row in enumerate(records, start=first_row):
        where = f"{source} row {row_no}"
        text = row.get(text_key)
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise DataError(f"{where}: text in column '{text_key}' is a {type(text).__name__}, not a string")
        if not text.strip():
            empty_rows.append(row_no)
            if empty_text == "skip":
                continue
        index, kind = _label_to_index(row.get(label_column), label_names, where)
        if index < 0:
            raise DataError(f"{where}: negative label {index}")
        kinds.add(kind)
        texts.append(text)
        labels.append(index)
    if len(kinds) > 1:
        raise DataError(f"{source}: mixed label types (class names and integers in one column)")
    if empty_rows:
        shown = ", ".join(str(r) for r in empty_rows[:5]) + (", ..." if len(empty_rows) > 5 else "")
        if empty_text == "error":
            raise DataError(
                f"{source}: {len(empty_rows)} row(s) with empty or missing text in column '{text_key}' (rows {shown}); "
                "set data.empty_text=keep or skip to load them"
            )
        action = "kept (scored as the template without a sentence)" if empty_text == "keep" else "skipped"
        log.warning(f"{source}: {len(empty_rows)} row(s) with empty text {action}: rows {shown} (data.empty_text)")
    if not texts:
        raise DataError(f"{source}: no examples left (every row has empty text)")
    return ClassificationDataset(texts, labels, source, list(label_names) if label_names else None)


def load_file(
    path: str | os.PathLike[str],
    text_column: str | None = None,
    label_column: str = "label",
    label_names: Sequence[str] | None = None,
    empty_text: str = "keep",
) -> ClassificationDataset:
    """Load one .tsv/.csv/.jsonl file of labelled texts."""
    p = Path(path)
    first_row = 1 if p.suffix.lower() == ".jsonl" else 2
    return dataset_from_records(_read_rows(p), str(p), text_column, label_column, label_names, empty_text, first_row)


def find_split_file(directory: Path, split: str) -> Path:
    """Find ``train``/``dev``/``test`` (dev also as ``validation``/``valid``) with a supported
    suffix. Two files for one split (``train.tsv`` and ``train.jsonl``, ``dev.tsv`` and
    ``validation.tsv``) are an error naming both: which one was meant is not ours to guess."""
    if not directory.is_dir():
        raise DataError(f"data directory not found: {directory}")
    found = [directory / f"{stem}{suffix}" for stem in SPLIT_FILE_STEMS[split] for suffix in SUFFIXES]
    found = [candidate for candidate in found if candidate.is_file()]
    if len(found) > 1:
        names = " and ".join(candidate.name for candidate in found)
        raise DataError(
            f"{directory} holds {len(found)} {split} files, {names}: keep one, or name it with data.{split}"
        )
    if found:
        return found[0]
    names = ", ".join(f"{s}{x}" for s in SPLIT_FILE_STEMS[split] for x in SUFFIXES)
    raise DataError(f"no {split} file in {directory} (looked for {names})")


def demo_dir() -> Path:
    """Directory of the built-in sentiment demo set (32 train, 32 dev, 200 test)."""
    return Path(str(resources.files("rlprompt.data") / "demo"))


def load_hf_dataset(config: DataConfig) -> Any:
    """``datasets.load_dataset(data.hf_name, data.hf_config)`` with one clear error on failure."""
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is a dependency
        raise DataError("data.hf_name needs the 'datasets' package") from exc
    name = config.hf_name
    assert name is not None
    try:
        return datasets.load_dataset(name, config.hf_config)
    except FileNotFoundError as exc:
        raise DataError(f"dataset '{name}' not found: {exc}") from None
    except (ConnectionError, OSError, ValueError) as exc:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"
        why = " (the Hugging Face hub is offline: give a local path)" if offline else ""
        raise DataError(f"could not load dataset '{name}'{why}: {first_line(exc)}") from None


def get_hf_split(loaded: Any, config: DataConfig, hf_split: str) -> Any:
    """One split of a loaded dataset (an error naming the splits it has otherwise)."""
    if hf_split not in loaded:
        raise DataError(
            f"dataset '{config.hf_name}' has no split '{hf_split}' (has {list(loaded)}); set data.hf_splits"
        )
    return loaded[hf_split]


def load_hf_splits(config: DataConfig) -> dict[str, ClassificationDataset]:
    """Load splits through ``datasets.load_dataset`` (a hub name, or a local path/builder)."""
    loaded = load_hf_dataset(config)
    name = config.hf_name
    out = {}
    for split, hf_split in config.hf_splits.items():
        split_data = get_hf_split(loaded, config, hf_split)
        features = split_data.features
        names = config.label_names
        label_feature = features.get(config.label_column)
        if names is None and label_feature is not None and hasattr(label_feature, "names"):
            names = list(label_feature.names)
        out[split] = dataset_from_records(
            split_data.to_list(),
            f"{name}[{hf_split}]",
            config.text_column,
            config.label_column,
            names,
            config.empty_text,
        )
    return out


def few_shot_sample(dataset: ClassificationDataset, k: int, seed: int) -> ClassificationDataset:
    """Draw ``k`` examples per class with a seeded generator (order shuffled)."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(dataset.labels)
    chosen: list[int] = []
    for label in sorted(set(dataset.labels)):
        pool = np.flatnonzero(labels == label)
        if len(pool) < k:
            raise DataError(f"{dataset.source}: class {label} has {len(pool)} examples, fewer than few_shot_k={k}")
        chosen.extend(rng.choice(pool, size=k, replace=False).tolist())
    order = rng.permutation(len(chosen))
    return dataset.subset([chosen[i] for i in order])


def split_paths(config: DataConfig) -> dict[str, str]:
    """The train/dev/test files a ``data`` section names: explicit files, else those found in
    ``data.dir``, else the built-in demo set."""
    directory = Path(config.dir) if config.dir is not None else None
    explicit = {"train": config.train, "dev": config.dev, "test": config.test}
    if directory is None and not any(explicit.values()):
        directory = demo_dir()
    paths = {}
    for split in SPLITS:
        path = explicit[split]
        if path is None:
            if directory is None:
                raise DataError(f"no {split} data: set data.{split} or data.dir")
            path = str(find_split_file(directory, split))
        paths[split] = path
    return paths


def check_held_out(sources: dict[str, str], paths: Mapping[str, str | None], contents: dict[str, list[Any]]) -> None:
    """The test split must be neither the train nor the dev split: not the same file and not
    the same examples (in any order), or the test metrics a run reports are not held out.
    ``sources`` name the splits, ``paths`` are their files (None: not a file), ``contents``
    the examples as comparable items."""
    for other in ("train", "dev"):
        test_path, other_path = paths.get("test"), paths.get(other)
        if test_path is not None and other_path is not None and Path(test_path).resolve() == Path(other_path).resolve():
            raise DataError(
                f"the test split is the {other} split's file ({test_path}): test metrics must be held out; "
                f"set data.test to another file"
            )
        if len(contents["test"]) == len(contents[other]) and sorted(contents["test"]) == sorted(contents[other]):
            raise DataError(
                f"the test split ({sources['test']}) holds the same examples as the {other} split "
                f"({sources[other]}): test metrics must be held out"
            )


def _warn_missing_classes(
    splits: dict[str, ClassificationDataset], num_classes: int, names: Sequence[str] | None
) -> None:
    """A warning (not an error: a small dev or test split may lack a rare class) per split
    that has no example of some class."""
    for split, ds in splits.items():
        present = set(ds.labels)
        missing = [c for c in range(num_classes) if c not in present]
        if missing:
            shown = ", ".join(f"{c} ({names[c]!r})" if names else str(c) for c in missing)
            what = f"example of class {shown}" if len(missing) == 1 else f"examples of classes {shown}"
            size = f"{len(ds)} example{'' if len(ds) == 1 else 's'}"
            log.warning(f"the {split} split ({ds.source}, {size}) has no {what}")


def load_task_data(config: DataConfig, num_classes: int) -> TaskData:
    """Load train/dev/test as configured and check labels against ``num_classes`` verbalizers."""
    kwargs: dict[str, Any] = dict(
        text_column=config.text_column,
        label_column=config.label_column,
        label_names=config.label_names,
        empty_text=config.empty_text,
    )
    splits: dict[str, ClassificationDataset] = {}
    paths: dict[str, str] = {}
    if config.hf_name is not None:
        splits = load_hf_splits(config)
        missing = [split for split in SPLITS if split not in splits]
        if missing:
            raise DataError(f"no {missing[0]} split (data.hf_splits maps {sorted(splits)})")
    else:
        paths = dict(split_paths(config))
        for split, path in paths.items():
            splits[split] = load_file(path, **kwargs)
    if config.label_names is not None and len(config.label_names) != num_classes:
        raise DataError(f"data.label_names has {len(config.label_names)} names but there are {num_classes} verbalizers")
    for ds in splits.values():
        bad = sorted({y for y in ds.labels if y >= num_classes})
        if bad:
            raise DataError(
                f"{ds.source}: label(s) {bad} have no verbalizer ({num_classes} verbalizers, one per class 0..{num_classes - 1})"
            )
    check_held_out(
        {k: ds.source for k, ds in splits.items()},
        paths,
        {k: list(zip(ds.texts, ds.labels, strict=True)) for k, ds in splits.items()},
    )
    if config.few_shot_k is not None:
        splits["train"] = few_shot_sample(splits["train"], config.few_shot_k, config.seed)
        splits["dev"] = few_shot_sample(splits["dev"], config.few_shot_k, config.seed + 1)
    if config.test_limit is not None and config.test_limit < len(splits["test"]):
        splits["test"] = splits["test"].subset(range(config.test_limit))
    _warn_missing_classes(splits, num_classes, config.label_names)
    return TaskData(splits["train"], splits["dev"], splits["test"], num_classes, config.label_names)


__all__ = [
    "ClassificationDataset",
    "TaskData",
    "dataset_from_records",
    "demo_dir",
    "few_shot_sample",
    "find_split_file",
    "load_file",
    "load_hf_splits",
    "load_task_data",
]
