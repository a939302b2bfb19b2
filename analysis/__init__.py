"""Analyses of trained models: per-class attention weights of ECA/SE blocks and their deployed parity."""
