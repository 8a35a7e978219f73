"""Benchmarks: scripts whose results are committed under benchmarks/results."""
