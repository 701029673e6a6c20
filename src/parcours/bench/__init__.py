"""Benchmarks: run through `parcours bench ...`; results in bench/RESULTS.md."""
