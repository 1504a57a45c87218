"""Prompt-optimization agents (installed as ``rlprompt.agents``)."""
