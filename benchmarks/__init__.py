"""Benchmarks: speed and quality figures, run from the CLI (`tts bench ...`), never as timed tests."""
