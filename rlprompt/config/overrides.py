"""``--set dotted.key=value`` overrides: each value read as YAML under the limits of config files."""

from __future__ import annotations

import json
from typing import Any

import yaml

from rlprompt.config.reading import _YAML, MAX_FILE_BYTES, PLAIN_DATA, _clip, _compose_yaml, _plain_value, _Problem
from rlprompt.errors import ConfigError, first_line


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value``; the value is read as YAML (``3`` int, ``true`` bool, ``[a, b]``)
    under the limits and plain-data rule of config files (a date or ``!!binary`` value is refused
    as in a file); text that is not valid YAML is kept as text."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got '{text}'")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set expects key=value, got '{text}'")
    if any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text}: '{key}' is not a dotted key")
    try:
        size = len(raw.encode("utf-8"))
    except UnicodeEncodeError:  # undecodable bytes on the command line
        raise ConfigError(f"--set {key}=...: the value is not valid text (bytes that are not UTF-8)") from None
    if size > MAX_FILE_BYTES:
        raise ConfigError(f"--set {key}=...: the value is more than {MAX_FILE_BYTES / 2**20:g} MiB")
    value: Any = ""
    if raw.strip():
        try:
            node = _compose_yaml(raw)
        except yaml.YAMLError:
            node = raw  # not YAML: the text as given
        except _Problem as exc:
            raise ConfigError(f"--set {_clip(text)}: {exc}") from None
        # "Review: {sentence} {prompt}" is text with a colon, not a YAML mapping (flow syntax "{...}" /
        # "[...]" still gives mappings and lists)
        opens = raw.lstrip()[:1]
        if node is None:
            value = None
        elif (
            node is raw or (node.tag == f"{_YAML}map" and opens != "{") or (node.tag == f"{_YAML}seq" and opens != "[")
        ):
            value = raw
        else:
            try:
                value = _plain_value(node)
            except _Problem as exc:
                raise ConfigError(f"--set {_clip(text)}: {exc}") from None
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys in a nested dict (a copy); the dataclass build then validates them."""
    try:
        data = json.loads(json.dumps(data))
    except (TypeError, ValueError, RecursionError) as exc:  # a dict built in Python
        raise ConfigError(f"a config holds only {PLAIN_DATA}: {first_line(exc)}") from None
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text}: '{part}' is not a section")
            node = child
        node[path[-1]] = value
    return data
