"""Benchmarks of workkit_workflow's local runtime: ``python -m bench`` (see "Benchmarks" in README.md)."""
