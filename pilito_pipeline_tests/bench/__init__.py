"""Benchmarks: one command each (`python -m pilito_pipeline_tests.bench.<name>`); not collected by pytest."""
