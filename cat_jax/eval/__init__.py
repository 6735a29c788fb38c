"""Evaluation: the paper's reconstruction metrics and a sweep over codebook counts."""
