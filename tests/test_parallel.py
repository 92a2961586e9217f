"""Data parallel on a forced 4-device CPU, and two processes over loopback, against one device."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT
from jaxdigits import parallel, runs
from jaxdigits.errors import UserError
from jaxdigits.metrics import read_jsonl

# MLP with dropout: the dropout masks of a sharded batch must match the unsharded ones too.
ARGS = dict(model="mlp", hidden=(32,), epochs=2, batch_size=64, max_train_examples=512,
            validation_size=256, dropout=0.1, eval_batch_size=500, driver="step")
FLAGS = ["--model=mlp", "--hidden=32", "--epochs=2", "--batch_size=64",
         "--max_train_examples=512", "--validation_size=256", "--dropout=0.1",
         "--eval_batch_size=500", "--driver=step", "--quiet"]

SCRIPT = """
import dataclasses, json, sys
from jaxdigits import train
from jaxdigits.config import Config
from jaxdigits.errors import UserError
config = Config.from_dict(json.loads(sys.argv[1]))
train.train_and_evaluate(config, sys.argv[2] + "/one", quiet=True, devices=1)
train.train_and_evaluate(config, sys.argv[2] + "/four", quiet=True)
try:
    train.train_and_evaluate(dataclasses.replace(config, batch_size=66), sys.argv[2] + "/bad",
                             quiet=True)
except UserError as e:
    print("UserError:", e)
"""


def _same_run(a, b):
    """Same metrics (bar timings) and the same parameters, to float tolerance."""
    ra, rb = read_jsonl(a / "metrics.jsonl"), read_jsonl(b / "metrics.jsonl")
    assert len(ra) == len(rb) == 3
    for x, y in zip(ra, rb):
        for key in set(x) - {"seconds", "images_per_second"}:
            assert x[key] == pytest.approx(y[key], rel=1e-5, abs=1e-6), key
    _, pa, _ = runs.load_run(a, "latest")
    _, pb, _ = runs.load_run(b, "latest")
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6), pa, pb)


@pytest.fixture(scope="module")
def one_and_four(tmp_path_factory):
    """SCRIPT's runs on a forced 4-device CPU: (folder with one/ and four/, CompletedProcess)."""
    folder = tmp_path_factory.mktemp("parallel")
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    config = json.dumps({**ARGS, "hidden": list(ARGS["hidden"])})
    return folder, subprocess.run([sys.executable, "-c", SCRIPT, config, str(folder)], cwd=ROOT,
                                  env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_four_devices_give_the_same_run_as_one(one_and_four):
    tmp_path, out = one_and_four
    assert out.returncode == 0, out.stderr[-2000:]
    assert "cpu (cpu) x1," in out.stdout and "cpu (cpu) x4," in out.stdout
    assert "UserError: --batch_size=66 does not split evenly across 4 devices" in out.stdout
    _same_run(tmp_path / "one", tmp_path / "four")


SETTLE = """
import json, jax, numpy as np
from jaxdigits import inputs, parallel, scoring, step
from jaxdigits.config import Config
waits, block = [], jax.block_until_ready
jax.block_until_ready = lambda x: waits.append(1) or block(x)
rng = np.random.default_rng(0)
images = rng.integers(0, 256, (10000, 28, 28, 1), dtype=np.uint8)
data = inputs.to_device(images, rng.integers(0, 10, 10000).astype(np.int32))
setup = step.make_setup(Config(model="mlp", hidden=(32,), eval_batch_size=500), 10000,
                        images.shape[1:], 10, *inputs.pixel_stats(images))
params = step.init_state(setup, jax.random.key(0)).params
one = scoring.make_evaluator(setup)(params, data)
one_waits = len(waits)
mesh = parallel.make_mesh(4)
four = scoring.make_evaluator(setup, mesh)(*parallel.replicate((params, data), mesh))
print(json.dumps([one_waits, len(waits) - one_waits, one, four]))
"""


@pytest.mark.slow
def test_queued_calls_on_several_cpu_devices_are_waited_for():
    """XLA:CPU can deadlock with dozens of multi-device calls queued (`parallel.WINDOW`; two runs
    side by side hung in 3 of 6 tries before): scoring 20 batches on 4 devices waits twice, on
    one device never, and the scores agree."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    out = subprocess.run([sys.executable, "-c", SETTLE], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    one_waits, four_waits, one, four = json.loads(out.stdout.splitlines()[-1])
    assert (one_waits, four_waits) == (0, 20 // parallel.WINDOW)
    assert one["count"] == four["count"] == 10000 and one["accuracy"] == four["accuracy"]
    assert one["loss"] == pytest.approx(four["loss"], rel=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_give_the_same_run_as_one(tmp_path, one_and_four):
    """Two processes on loopback (gloo CPU collectives), one CPU device each, one workdir; the
    run on one device is the one of SCRIPT (the same ARGS, devices=1)."""
    port, workdir = _free_port(), tmp_path / "two"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
           "JAX_NUM_PROCESSES": "2"}
    procs = [subprocess.Popen([sys.executable, "-m", "jaxdigits.train", *FLAGS,
                               f"--workdir={workdir}"], cwd=ROOT, text=True,
                              env={**env, "JAX_PROCESS_ID": str(i)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in (0, 1)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    assert "x2 in 2 processes" in outputs[0][0] and "Test accuracy" in outputs[0][0]
    assert "Test accuracy" not in outputs[1][0]  # Process 1 prints nothing of its own (gloo does).
    one, out = one_and_four
    assert out.returncode == 0, out.stderr[-2000:]
    _same_run(one / "one", workdir)
    assert json.loads((workdir / "results.json").read_text())["test_count"] == 10000


def test_multi_host_flags_are_checked(monkeypatch):
    for name in parallel.ENV.values():
        monkeypatch.delenv(name, raising=False)
    assert parallel.initialize() is False
    with pytest.raises(UserError, match="need --coordinator_address"):
        parallel.initialize(num_processes=2)
    with pytest.raises(UserError, match="needs --num_processes and --process_id"):
        parallel.initialize("127.0.0.1:1234", num_processes=2)
    with pytest.raises(UserError, match=r"--process_id must be in \[0, 2\)"):
        parallel.initialize("127.0.0.1:1234", num_processes=2, process_id=2)
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(UserError, match="JAX_NUM_PROCESSES must be an integer"):
        parallel.initialize("127.0.0.1:1234")


def test_more_devices_than_visible_is_refused():
    with pytest.raises(UserError, match=f"--devices=9 but {jax.device_count()} devices are visible"):
        parallel.make_mesh(9)
    assert parallel.make_mesh(0).size == jax.device_count() and parallel.make_mesh(1).size == 1
