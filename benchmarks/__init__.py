"""Speed and latency probes, each `python -m benchmarks.NAME` from the repository root.

Each writes its figures as JSON with `--json=PATH`; its docstring opens with the command and the
result it gave, on which machine. Importing one does nothing: flags are defined and work is done
only when it runs as a script (tests/test_experiments.py checks this).
"""
