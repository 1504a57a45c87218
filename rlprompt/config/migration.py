"""Older saved configs (a run directory's ``config.json``) read in today's form."""

from __future__ import annotations

import dataclasses
from typing import Any

from rlprompt.config.fields import DEFAULT_AGENT, ENV_SECTION, TASK_MODEL_SECTION
from rlprompt.config.schema import LEGACY_SELECTION
from rlprompt.registry import AGENTS


def upgrade_saved_config(data: dict[str, Any]) -> dict[str, Any]:
    """A run directory's ``config.json`` in today's form. Runs written before each kind had its
    own section (rlprompt 0.2.0) saved the ``task_model`` and ``env`` sections as the union of
    every kind's fields; the fields that belong only to other kinds are dropped (they were
    never read by the kind the run used). Runs saved before the ``selection`` section get the
    selection they ran with (:data:`LEGACY_SELECTION`). Runs saved when the agent section stored
    the seed it resolved to (``agent.seed`` equal to the run's ``seed``) read as ``agent.seed: null``,
    which resolves to the same seed. Anything else unknown stays, to be refused by name."""
    out = dict(data)
    out.setdefault("selection", dict(LEGACY_SELECTION))  # saved before the selection section: dev only
    agent = out.get("agent")
    if isinstance(agent, dict) and agent.get("seed") is not None and agent.get("seed") == out.get("seed", 0):
        out["agent"] = {**agent, "seed": None}
    for section, variant in (("task_model", TASK_MODEL_SECTION), ("env", ENV_SECTION)):
        value = out.get(section)
        if not isinstance(value, dict):
            continue
        name = value.get(variant.key, variant.default)
        if name == variant.deferred:  # env.kind: auto, saved before it was resolved: the agent's main kind
            agent = out.get("agent")
            agent_name = agent.get("name", DEFAULT_AGENT) if isinstance(agent, dict) else DEFAULT_AGENT
            name = AGENTS[agent_name].env_kinds[0] if agent_name in AGENTS else name
        if name not in variant.registry:
            continue
        config_class = variant.config_class(name, section)
        own = {f.name for f in dataclasses.fields(config_class)}
        others = {
            f.name for name in variant.registry.names() for f in dataclasses.fields(variant.registry[name].config_class)
        }
        out[section] = {k: v for k, v in value.items() if k in own or k == variant.key or k not in others}
        if hasattr(config_class, "upgrade_saved"):  # a kind whose defaults became computed ones
            out[section] = config_class.upgrade_saved(out[section], out)
    return out
