"""Benchmarks: parity and speed of deployed artifacts against PyTorch, the attention-module baselines, make bench."""
