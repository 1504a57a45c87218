"""Bounded reading of config, bench and candidate files: one YAML/JSON reader with limits
(:data:`MAX_FILE_BYTES`, :data:`MAX_DEPTH`, :data:`MAX_NODES`, :data:`MAX_ALIASES`) counted while
a document is composed, and only JSON's types (plain data)."""

from __future__ import annotations

import json
import os
import typing
from pathlib import Path
from typing import Any

import yaml

from rlprompt.errors import ConfigError

# ---------------------------------------------------------------- bounded YAML / JSON reading

MAX_FILE_BYTES = 10 * 2**20
"""Largest config, bench or candidates file read (10 MiB): larger ones are refused unread."""
MAX_DEPTH = 64
"""Deepest nesting of lists and mappings in one YAML/JSON document, YAML aliases expanded."""
MAX_NODES = 100_000
"""Most values (scalars, lists and mappings, YAML aliases expanded) in one YAML/JSON document.
Counted while the document is composed, so an alias bomb (each level repeating the one before)
is refused after reading a few hundred bytes, before anything is expanded."""
MAX_ALIASES = 100
"""Most YAML aliases (``*name``) in one document."""

_YAML = "tag:yaml.org,2002:"
_SCALAR_TAGS = {f"{_YAML}{name}" for name in ("str", "int", "float", "bool", "null")}
_TAG_WHAT = {
    "binary": "binary data (!!binary)",
    "set": "a set (!!set)",
    "omap": "an ordered map (!!omap)",
    "pairs": "a list of pairs (!!pairs)",
}
PLAIN_DATA = "text, numbers, true/false, null, lists and mappings with text keys"
"""What a config value may be (the JSON data model)."""


class _Problem(Exception):
    """A document breaks a limit or holds a non-JSON value; ``line`` is 1-based (None: unknown)."""

    def __init__(self, message: str, mark: Any = None) -> None:
        super().__init__(message)
        self.line = None if mark is None else mark.line + 1


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_YAML) :] if tag.startswith(_YAML) else tag


try:  # libyaml's scanner and parser (C) when installed; composition and checks stay in Python
    from yaml.cyaml import CParser as _YamlParser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    _YamlParser = None


class _BoundedComposer(yaml.composer.Composer):
    """PyYAML's composer, counting as it goes: nesting depth, aliases, and the values the
    document holds once aliases are expanded (an alias counts the whole value it names)."""

    def _reset_limits(self) -> None:
        self._depth = 0
        self._nodes = 0
        self._aliases = 0

    def _count(self, weight: int, mark: Any) -> None:
        self._nodes += weight
        if self._nodes > MAX_NODES:
            through = " once its YAML aliases are expanded (an alias bomb?)" if self._aliases else ""
            raise _Problem(f"the document holds more than {MAX_NODES:,} values{through}", mark)

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _Problem(f"more than {MAX_ALIASES} YAML aliases (*{event.anchor} ...)", event.start_mark)
            node = super().compose_node(parent, index)
            weight = getattr(node, "_rlp_weight", None)
            if weight is None:
                raise _Problem(
                    f"the alias *{event.anchor} is inside the value it names (a recursive alias)", event.start_mark
                )
            if self._depth + node._rlp_height > MAX_DEPTH:
                raise _Problem(
                    f"the alias *{event.anchor} nests values more than {MAX_DEPTH} levels deep", event.start_mark
                )
            self._count(weight, event.start_mark)
            return node
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Problem(f"values nested more than {MAX_DEPTH} levels deep", event.start_mark)
        before = self._nodes
        self._count(1, event.start_mark)
        node = super().compose_node(parent, index)
        self._depth -= 1
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            children = []
        node._rlp_height = 1 + max((child._rlp_height for child in children), default=0)
        node._rlp_weight = self._nodes - before
        return node


if _YamlParser is not None:

    class _BoundedLoader(_BoundedComposer, _YamlParser, yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
        def __init__(self, stream: str) -> None:
            _YamlParser.__init__(self, stream)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)
            yaml.composer.Composer.__init__(self)
            self._reset_limits()

else:  # pragma: no cover

    class _BoundedLoader(  # type: ignore[no-redef]
        yaml.reader.Reader,
        yaml.scanner.Scanner,
        yaml.parser.Parser,
        _BoundedComposer,
        yaml.constructor.SafeConstructor,
        yaml.resolver.Resolver,
    ):
        def __init__(self, stream: str) -> None:
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)
            yaml.composer.Composer.__init__(self)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)
            self._reset_limits()


def _compose_yaml(text: str) -> Any:
    """The document's node tree (None for an empty document), within the limits above; a YAML
    syntax error is a ``yaml.YAMLError``, a limit a :class:`_Problem`."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        if "nesting depth" in str(exc.problem):  # libyaml's own limit (1000 levels): the same problem
            raise _Problem(f"values nested more than {MAX_DEPTH} levels deep", exc.problem_mark) from None
        raise
    finally:
        loader.dispose()


def _plain_value(node: Any) -> Any:
    """A composed node as plain data (str, int, float, bool, None, list, dict with str keys);
    any other YAML type (dates, ``!!binary``, ``!!set``, ``!!python/...``, non-text keys) is a
    :class:`_Problem` naming it. Aliases are expanded into copies (the node count bounds them)."""
    constructor = yaml.constructor.SafeConstructor()

    def convert(node: Any) -> Any:
        tag = node.tag
        if isinstance(node, yaml.ScalarNode):
            if tag in (f"{_YAML}value", f"{_YAML}merge"):  # a plain '=' or '<<' outside a key is text
                return node.value
            if tag not in _SCALAR_TAGS:
                raise _Problem(_not_plain(node), node.start_mark)
            try:
                return constructor.yaml_constructors[tag](constructor, node)
            except Exception:  # '!!int abc', '!!bool maybe'
                raise _Problem(f"{node.value!r} is not a valid {_short_tag(tag)}", node.start_mark) from None
        if isinstance(node, yaml.SequenceNode):
            if tag != f"{_YAML}seq":
                raise _Problem(_not_plain(node), node.start_mark)
            return [convert(child) for child in node.value]
        if tag != f"{_YAML}map":
            raise _Problem(_not_plain(node), node.start_mark)
        out: dict[str, Any] = {}
        lines: dict[str, int] = {}
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == f"{_YAML}merge":  # '<<: *defaults' (YAML 1.1 merge keys)
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for source in sources:
                    if not isinstance(source, yaml.MappingNode):
                        raise _Problem("a merge key '<<' takes a mapping or a list of mappings", source.start_mark)
                    for key, value in convert(source).items():
                        merged.setdefault(key, value)
                continue
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != f"{_YAML}str":
                quote = " (quote it)" if isinstance(key_node, yaml.ScalarNode) else ""
                raise _Problem(f"a mapping key must be text, not {_describe(key_node)}{quote}", key_node.start_mark)
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in lines:
                raise _Problem(
                    f"key '{key}' appears twice in one mapping (line {lines[key]} and line {line})", key_node.start_mark
                )
            lines[key] = line
            out[key] = convert(value_node)
        return {**{k: v for k, v in merged.items() if k not in out}, **out} if merged else out

    return convert(node)


def _describe(node: Any) -> str:
    """What a node is, in words: ``an integer (1)``, ``a list``, ``a date/time (2024-01-01)``."""
    tag: str = node.tag
    name = tag[len(_YAML) :] if tag.startswith(_YAML) else None
    if tag in (f"{_YAML}seq", f"{_YAML}map"):
        return "a list" if name == "seq" else "a mapping"
    if isinstance(node, yaml.ScalarNode) and (tag in _SCALAR_TAGS or name == "timestamp"):
        kind = {
            "int": "an integer",
            "float": "a number",
            "bool": "true/false",
            "null": "null",
            "timestamp": "a date/time",
            "str": "text",
        }[typing.cast(str, name)]  # a scalar tag or timestamp: name is set
        return f"{kind} ({_clip(node.value) or '~'})"
    return _TAG_WHAT[name] if name in _TAG_WHAT else f"a value tagged {_short_tag(tag)}"


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _not_plain(node: Any) -> str:
    hint = "; quote it to make it text" if isinstance(node, yaml.ScalarNode) else ""
    return f"{_describe(node)} is not a config value (only {PLAIN_DATA}){hint}"


def _read_limited(path: Path, what: str, error: type[Exception], limit: int = MAX_FILE_BYTES) -> str:
    """A user file's UTF-8 text (a leading byte-order mark dropped), refused unread when over ``limit`` bytes."""
    if not path.is_file():
        if path.exists():  # a directory, a pipe, a device: never read (a pipe would block)
            raise error(f"{what} {path} is not a regular file")
        raise error(f"{what} not found: {path}")
    mib = f"{limit / 2**20:g} MiB"
    try:
        if path.stat().st_size > limit:
            raise error(f"{what} {path} is {path.stat().st_size / 2**20:.1f} MiB, more than the {mib} it may be")
        with path.open("rb") as handle:
            raw = handle.read(limit + 1)
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(raw) > limit:
        raise error(f"{what} {path} is more than the {mib} it may be")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise error(f"{what} {path} is not UTF-8 text (line {line})") from None


def _where(what: str, line: int | None) -> str:
    return f"{what}, line {line}" if line is not None else what


def parse_yaml_text(text: str, what: str, error: type[Exception] = ConfigError) -> Any:
    """Parse one YAML document into plain data within the limits above (:data:`MAX_DEPTH`,
    :data:`MAX_NODES`, :data:`MAX_ALIASES`); every problem is one ``error`` naming ``what``
    and the line. An empty document (nothing or only comments) gives None."""
    try:
        node = _compose_yaml(text)
        return None if node is None else _plain_value(node)
    except _Problem as exc:
        raise error(f"{_where(what, exc.line)}: {exc}") from None
    except yaml.YAMLError as exc:
        raise error(f"{what} is not valid YAML: {' '.join(str(exc).split())}") from None
    except (RecursionError, MemoryError) as exc:  # pragma: no cover - the limits come first
        raise error(f"{what} is too deeply nested or too large to read ({type(exc).__name__})") from None


def read_yaml(path: str | os.PathLike[str], what: str = "config file", error: type[Exception] = ConfigError) -> Any:
    """Parse a YAML file strictly: at most :data:`MAX_FILE_BYTES`, plain data only (see
    :func:`parse_yaml_text`), a key given twice in one mapping an error (plain YAML keeps the
    last value silently, so a repeated bench label would run under one name). Errors name the
    file and, where there is one, the line. An empty document gives None."""
    p = Path(path)
    return parse_yaml_text(_read_limited(p, what, error), f"{what} {p}", error)


def json_object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` of :func:`json.loads`: a key given twice in one object is a
    :class:`ValueError` (plain ``json`` keeps the last value silently)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"key '{key}' appears twice in one object")
            seen.add(key)
    return out


def check_plain_data(value: Any, max_depth: int = MAX_DEPTH, max_nodes: int | None = MAX_NODES) -> None:
    """Raise :class:`ValueError` when ``value`` (parsed JSON) nests deeper than ``max_depth``
    or holds more than ``max_nodes`` values. Iterative: deep data cannot exhaust the stack."""
    stack = [(value, 1)]
    nodes = 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if max_nodes is not None and nodes > max_nodes:
            raise ValueError(f"more than {max_nodes:,} values")
        if isinstance(item, (list, dict)):
            if depth > max_depth:
                raise ValueError(f"values nested more than {max_depth} levels deep")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def parse_json_text(
    text: str, what: str, error: type[Exception] = ConfigError, max_nodes: int | None = MAX_NODES
) -> Any:
    """Parse JSON within :data:`MAX_DEPTH` (and ``max_nodes``), a key given twice in one object
    an error; every problem is one ``error`` naming ``what`` (and the line of a syntax error)."""
    try:
        value = json.loads(text, object_pairs_hook=json_object_without_duplicates)
    except json.JSONDecodeError as exc:
        raise error(f"{what}, line {exc.lineno}: invalid JSON ({exc.msg})") from None
    except ValueError as exc:  # a duplicate key
        raise error(f"{what}: {exc}") from None
    except RecursionError:
        raise error(f"{what}: values nested more than {MAX_DEPTH} levels deep") from None
    try:
        check_plain_data(value, MAX_DEPTH, max_nodes)
    except ValueError as exc:
        raise error(f"{what}: {exc}") from None
    return value


def read_json_file(path: str | os.PathLike[str], what: str, error: type[Exception] = ConfigError) -> Any:
    """Parse a user's JSON file within :data:`MAX_FILE_BYTES`, :data:`MAX_DEPTH` and :data:`MAX_NODES`."""
    p = Path(path)
    return parse_json_text(_read_limited(p, what, error), f"{what} {p}", error)


def read_text_file_limited(path: str | os.PathLike[str], what: str, error: type[Exception] = ConfigError) -> str:
    """A user's text file (UTF-8, at most :data:`MAX_FILE_BYTES`), with one clear error otherwise."""
    return _read_limited(Path(path), what, error)
