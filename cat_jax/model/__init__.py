"""Flax NNX modules of CAT: transformer stages, patching, quantizers, and the assembly."""
