"""Benchmarks and the baseline collector they compare nbstream against (not shipped)."""
