"""Runs `train.train_and_evaluate` and SIGKILLs itself at one named instant (used by test_crash.py).

    python tests/kill_run.py WORKDIR CONFIG_JSON POINT

POINT is one of: startup (config.json written, nothing trained), mid_epoch:E (after the first
steps of epoch E), before_latest:E, torn_latest:E (orbax's temporary folder half-written),
between:E (checkpoints/E written, best/E not), after_best:E (both written, metrics not),
after_metrics:E (the epoch fully recorded), scoring (test set scored, nothing written),
before_results (the final metrics line written, results.json not). The process dies by SIGKILL,
so no `finally` runs: what is on disk is what a power cut or an OOM kill would leave.
"""

import json
import os
import pathlib
import signal
import sys

import orbax.checkpoint as ocp

from jaxdigits import drivers, metrics, runs, train
from jaxdigits.config import Config


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point: str) -> None:
    """Wraps the function that marks `point` so the process dies there."""
    name, _, arg = point.partition(":")
    epoch = int(arg) if arg else None
    if name == "startup":
        train.restore = lambda *a, **k: die()
    elif name == "mid_epoch":
        real_epoch = drivers.train_epoch

        def train_epoch(run_chunk, state, *args):
            calls = []

            def chunk(*a, **k):
                calls.append(1)
                if args[3] == epoch and len(calls) == 3:
                    die()
                return run_chunk(*a, **k)
            return real_epoch(chunk, state, *args)
        drivers.train_epoch = train_epoch
    elif name in ("before_latest", "torn_latest", "between", "after_best"):
        arm_save(name, epoch)
    elif name == "after_metrics":
        real_write = metrics.MetricWriter.write

        def write(self, record, step):
            real_write(self, record, step)
            if record.get("epoch") == epoch and "train_loss" in record:
                die()
        metrics.MetricWriter.write = write
    elif name == "scoring":
        runs.final_record = lambda *a, **k: die()
    elif name == "before_results":
        train.write_json = lambda *a, **k: die()
    else:
        raise SystemExit(f"unknown point {point}")


def arm_save(name: str, epoch: int) -> None:
    real_save = ocp.CheckpointManager.save

    def save(self, step, *args, **kwargs):
        folder = pathlib.Path(self.directory).name
        if step == epoch and folder == "checkpoints" and name == "before_latest":
            die()
        if step == epoch and folder == "checkpoints" and name == "torn_latest":
            torn = pathlib.Path(self.directory) / f"{step}.orbax-checkpoint-tmp-1"
            (torn / "state").mkdir(parents=True)
            (torn / "state" / "manifest.ocdbt").write_bytes(b"\0" * 100)
            die()
        result = real_save(self, step, *args, **kwargs)
        if step == epoch and (folder, name) in (("checkpoints", "between"), ("best", "after_best")):
            die()
        return result
    ocp.CheckpointManager.save = save


if __name__ == "__main__":
    workdir, config, point = sys.argv[1:]
    arm(point)
    train.train_and_evaluate(Config.from_dict(json.loads(config)), workdir, quiet=True,
                             allow_download=False)
    raise SystemExit("finished without reaching the kill point")
