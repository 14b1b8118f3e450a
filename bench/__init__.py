"""Benchmarks (run by hand; not part of the test run). See `lexrerank bench --help`."""
