"""Fixtures for tests and benchmarks (as Stable-Baselines3 keeps its identity envs): a toy task
with a known optimum, a tiny causal LM, tiny random backbones with offline-trained tokenizers.
Product code never imports this package."""
