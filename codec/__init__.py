"""Neural audio codec (SoundStream-style): causal encoder/decoder, residual VQ, bitstream."""
