"""The classic lessons as runnable scripts: `python -m experiments.NAME` (see README.md)."""
