"""Gymnasium environments for prompt optimization (installed as ``rlprompt.envs``)."""
