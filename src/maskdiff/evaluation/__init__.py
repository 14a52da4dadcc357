"""Evaluation above the trained model: the NELBO of a split (nelbo), zero-shot tables (zeroshot),
statistics of samples (metrics), the judge LM of generative perplexity (judge), both in one report of
sample quality (quality), FID on a classifier trained here (fid) and the DNA species probe (probe). Each
module is imported on its own; nothing is imported here."""
