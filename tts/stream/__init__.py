"""Streaming: token frames to PCM chunks (decoder), and PCM chunks to a player that never stutters (playout)."""
