"""The benchmark suite: every model x batch size x dtype x step driver of its lists, measured one
after another in one process, as one JSON record and one table that compare across machines.

`python -m jaxdigits.benchmark --suite` runs it (`--suite_models`, `--suite_batch_sizes`,
`--suite_dtypes`, `--suite_drivers`); the record is a results/render.py table (its columns, rows,
machine, date and command) with every measurement's full result under "results", and, per
model, batch size and dtype, the driver that was fastest ("fastest_drivers"): the measurement a
backend's default driver (`backend.MEASURED_DRIVERS`) should rest on.
"""

import dataclasses
import datetime
import itertools
import sys
import time

import jax

from jaxdigits import bench_format
from jaxdigits.config import Config, validate
from jaxdigits.errors import UserError


def parse_drivers(items) -> list[tuple[str, int]]:
    """["step", "unroll:8", "scan:64", "auto"] -> [(driver, steps per call)]; 0 is the backend's."""
    out = []
    for item in items:
        name, _, steps = item.partition(":")
        if name not in ("auto", "step", "unroll", "scan") or (steps and not steps.isdigit()):
            raise UserError(f"--suite_drivers: {item!r} is not DRIVER or DRIVER:STEPS (auto, "
                            "step, unroll or scan).")
        out.append((name, int(steps or 0)))
    return out


def configs(base: Config, models, batch_sizes, dtypes, drivers) -> list[Config]:
    """Every combination, in order, each checked."""
    return [validate(dataclasses.replace(base, model=m, batch_size=int(b), dtype=d, driver=name,
                                         steps_per_call=k))
            for m, b, d, (name, k) in itertools.product(models, batch_sizes, dtypes, drivers)]


def fastest_drivers(results: list[dict]) -> list[dict]:
    """Per (model, batch, dtype): the driver of the least step time, and its speed-up over the
    slowest."""
    groups = {}
    for r in results:
        groups.setdefault((r["model"], r["batch_size"], r["dtype"]), []).append(r)
    out = []
    for (model, batch, dtype), rs in groups.items():
        best, worst = (f(rs, key=lambda r: r["step_seconds"]) for f in (min, max))
        out.append({"model": model, "batch_size": batch, "dtype": dtype,
                    "driver": f"{best['driver']} x{best['steps_per_call']}",
                    "speedup_over_slowest": worst["step_seconds"] / best["step_seconds"]})
    return out


def suite(combos: list[Config], measure, command: str, machine: str, log=None,
          deadline: float | None = None) -> dict:
    """Measures each config with `measure(config) -> result`; the suite's record. Past
    `deadline` (time.monotonic()), the configs left are listed under "skipped", not measured."""
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    results, skipped = [], []
    for i, config in enumerate(combos, 1):
        if deadline is not None and time.monotonic() > deadline:
            skipped.append(f"{config.model} batch {config.batch_size} {config.dtype} "
                           f"{config.driver} x{config.steps_per_call}")
            continue
        results.append(measure(config))
        r = results[-1]
        log(f"[{i}/{len(combos)}] {r['model']} batch {r['batch_size']} {r['dtype']} "
            f"{r['driver']} x{r['steps_per_call']}: {1e3 * r['step_seconds']:.2f} ms per step, "
            f"compile {r['compile_seconds']:.2f} s")
    if not results:
        raise UserError("the suite measured nothing: no time was left for its first config.")
    first = results[0]
    return {"table": f"bench_suite_{first['backend']}", "page": "docs/performance.md",
            "columns": bench_format.SUITE_COLUMNS,
            "rows": [bench_format.suite_row(r) for r in results],
            "command": command, "machine": machine,
            "date": datetime.date.today().isoformat(), "jax": jax.__version__,
            "note": (f"Peak for MFU: {first['peak_source']}; program memory: XLA's memory "
                     f"analysis of the compiled chunk. Medians of the timed repeats."),
            "fastest_drivers": fastest_drivers(results), "skipped": skipped, "results": results}
