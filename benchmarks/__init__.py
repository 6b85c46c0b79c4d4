"""Benchmarks of MVaEMa against transformers' BLIP at the same size; see benchmarks/README.md."""
