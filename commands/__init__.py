"""Thin click commands: parse options, call library code, print. Loaded lazily by cli.py."""
