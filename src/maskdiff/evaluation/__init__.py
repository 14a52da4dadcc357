"""Evaluation above the trained model: the NELBO of a split (nelbo), zero-shot tables (zeroshot),
generative quality of samples (quality), FID on a classifier trained here (fid) and the DNA species
probe (probe). Each module is imported on its own; nothing is imported here."""
