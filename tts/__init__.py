"""Streaming text-to-speech with voice cloning: pipeline, streaming decoder and CLI."""

__version__ = "0.1.0"
