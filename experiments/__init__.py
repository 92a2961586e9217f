"""The classic lessons and the optimizer comparison, each `python -m experiments.NAME` (see
README.md); the speed and latency probes are in benchmarks/."""
