"""Building blocks of the codec: streaming convs and the SEANet encoder/decoder."""
