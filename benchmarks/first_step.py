"""`python -m jaxdigits.train` that prints when its first train step is done, counted from the
process's start (the kernel's record of it, so the interpreter's own start-up counts), then
stops. For start-up with the compilation cache cold and warm (`benchmarks.speedrun_compare`).

    python -m benchmarks.first_step --recipe=speedrun --quiet --workdir=/tmp/first
"""

import os
import sys
import time

import jax

from jaxdigits import cli, drivers, train


def process_age() -> float:
    """Seconds since this process started (Linux /proc; elsewhere since this module ran)."""
    try:
        with open("/proc/self/stat") as f:
            started = int(f.read().rsplit(")", 1)[1].split()[19])  # Clock ticks after boot.
        with open("/proc/uptime") as f:
            return float(f.read().split()[0]) - started / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - START


START = time.perf_counter()


class FirstStepDone(Exception):
    """Raised out of the training loop once the first chunk of steps has run."""


def stop_after_first_chunk(make_chunk_runner):
    """`drivers.make_chunk_runner` whose runner reports its first call and stops the run."""

    def make(*args, **kwargs):
        run = make_chunk_runner(*args, **kwargs)

        def first(*call_args, **call_kwargs):
            jax.block_until_ready(run(*call_args, **call_kwargs))
            print(f"first step done after {process_age():.2f} s", flush=True)
            raise FirstStepDone

        return first

    return make


def main(argv):
    drivers.make_chunk_runner = stop_after_first_chunk(drivers.make_chunk_runner)
    try:
        train.main(argv)
    except FirstStepDone:
        sys.exit(0)


if __name__ == "__main__":
    cli.run(main, cli.define_train_flags)
