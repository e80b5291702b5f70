"""Benchmarks for dbpool."""
