"""Speaker encoder and voice enrollment store."""
