"""Benchmarks: parity and speed of deployed artifacts against the PyTorch reference, the pipeline, attention-module baselines."""
