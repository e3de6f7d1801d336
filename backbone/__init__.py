"""Autoregressive transformer backbone: text + speaker embedding in, codec tokens out."""
