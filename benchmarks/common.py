"""What the benchmarks share: the peers' recipe, configs from "name=value" text, rounds that
alternate their jobs, medians, the machine, the JSON they write, and the trainer's own chunk of
steps for the probes that look inside it (program_hash, profile_step).

Every use of jaxdigits' internals by more than one probe is here, so a rename is made once.
"""

import dataclasses
import os
import pathlib
import platform
import statistics
import subprocess
import tempfile
import time

import jax

from jaxdigits import config as config_lib
from jaxdigits import drivers, errors, inputs, metrics, step

# The recipe of ../shared/bench/peer_torch.py, which every comparison with PyTorch uses: SGD 0.1
# with momentum 0.9, batch 128, a constant rate, no augmentation, no validation split.
PEERS = {"optimizer": "momentum", "learning_rate": 0.1, "momentum": 0.9, "schedule": "constant",
         "batch_size": 128, "validation_size": 0, "augment_shift": 0}


def peers_config(**overrides) -> config_lib.Config:
    """The peers' recipe as a Config, with `overrides` (field=value) on top."""
    return dataclasses.replace(config_lib.Config(**PEERS), **overrides)


def config_with(text: str, base: config_lib.Config) -> config_lib.Config:
    """`base` with the overrides in `text`: "name=value,name=value", Config's field names (a
    tuple's values joined by ":", e.g. hidden=512:256). A mistake is a UserError."""
    fields = {f.name for f in dataclasses.fields(base)}
    values = {}
    for item in filter(None, text.split(",")):
        name, sep, value = item.partition("=")
        if not sep or name not in fields:
            raise errors.UserError(f"{item!r} is not name=value with a Config field's name.")
        default = getattr(base, name)
        try:
            if isinstance(default, bool):  # bool("false") is True.
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                values[name] = value.lower() in ("true", "1")
            else:
                values[name] = (tuple(int(v) for v in value.split(":") if v)
                                if isinstance(default, tuple) else type(default)(value))
        except ValueError:
            kind = "list of ints" if isinstance(default, tuple) else type(default).__name__
            raise errors.UserError(f"{item!r}: not a valid {kind} for {name}.") from None
    return dataclasses.replace(base, **values)


def alternate(jobs: dict, rounds: int, describe=str) -> dict[str, list]:
    """Runs each job (name -> function of no arguments) once per round, in turn, so a busy machine
    slows them all alike; prints `describe(value)` as each finishes. Returns name -> values."""
    results = {name: [] for name in jobs}
    for r in range(1, rounds + 1):
        for name, job in jobs.items():
            results[name].append(job())
            print(f"round {r}: {name:36s} {describe(results[name][-1])}", flush=True)
    return results


def spread(values) -> dict:
    """Median, min and max of a list of numbers."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def machine() -> dict:
    """The CPU's name (from /proc/cpuinfo where there is one), its cores and the load averages."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f
                         if line.startswith("model name")), name)
    except OSError:
        pass
    return {"cpu": name, "cpu_count": os.cpu_count(), "load_average": list(os.getloadavg())}


def train_in_tmp(config: config_lib.Config) -> tuple[dict, list[dict], float]:
    """Trains `config` offline in a temporary folder: (its final record, its metrics.jsonl
    records, the wall seconds of the training)."""
    from jaxdigits import train  # Here: the probes that train nothing do not import it.

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        final = train.train_and_evaluate(config, pathlib.Path(tmp) / "run", quiet=True,
                                         allow_download=False)
        seconds = time.perf_counter() - start
        return final, metrics.read_jsonl(pathlib.Path(tmp) / "run" / "metrics.jsonl"), seconds


def run_command(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Runs `cmd` to the end, its output captured as text; if it fails, raises with the last lines
    of its standard error (a probe's jobs are other processes: their traceback is the news)."""
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if done.returncode:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(cmd)} exited with {done.returncode}:\n{tail}")
    return done


def write_json(path, result: dict) -> None:
    """Writes `result` to `path` as indented JSON, atomically (nothing if `path` is empty)."""
    if path:
        metrics.write_json(path, result)
        print(f"Wrote {path}")


def lowered_chunk(config: config_lib.Config, num_steps: int):
    """The trainer's jitted chunk of `num_steps` steps (driver `config.driver`: unroll or scan)
    for `config` on the bundled data, lowered; returns (lowered, the arguments it takes)."""
    ds, (images, labels), _, _ = inputs.prepare_data(config, allow_download=False)
    mean, std = inputs.pixel_stats(images)
    setup = step.make_setup(config, len(images), images.shape[1:], ds.num_classes, mean, std)
    init_key, data_key, step_key = jax.random.split(jax.random.key(config.seed), 3)
    args = (step.init_state(setup, init_key), step.zero_metrics(),
            inputs.to_device(images, labels), inputs.epoch_order(data_key, 1, len(images)), 0,
            step_key)
    run = drivers.make_chunk_runner(setup, config.driver)
    return run.lower(*args, num_steps=num_steps), args
