"""Training corpora: the synthetic multi-speaker corpus and the user-corpus importer."""
