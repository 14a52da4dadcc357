"""Data: tokenizers, corpora and chunking into fixed-length sequences."""
