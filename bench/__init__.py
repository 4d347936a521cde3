"""Benchmarks of workkit_workflow's local runtime: ``python -m bench`` (see docs/benchmarks.md)."""
