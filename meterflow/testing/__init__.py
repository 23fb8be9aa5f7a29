"""Seeded traffic for tests and benchmarks: scenario generators with known ground truth."""
