"""ringsim's benchmarks: `ringsim bench` (suite.py) and bench_core.py."""
