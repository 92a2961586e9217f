"""Shared fixtures: the bundled MNIST, loaded once per test session."""

import contextlib
import functools
import os
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "jaxdigits" / "datasets" / "mnist"


@pytest.fixture(scope="session")
def mnist():
    from jaxdigits import data

    return data.load_dataset("mnist", allow_download=False)


@pytest.fixture
def no_env(monkeypatch, tmp_path):
    """No JAXDIGITS_DATA_DIR, and an empty cache, so only the places a test names are used."""
    monkeypatch.delenv("JAXDIGITS_DATA_DIR", raising=False)
    monkeypatch.setenv("JAXDIGITS_CACHE_DIR", str(tmp_path / "cache"))


def run_cli(*args, timeout=300, env=None):
    """Runs `python -m ARGS` and returns the CompletedProcess (text)."""
    import subprocess

    full_env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=full_env)


# Runs one program's main for several command lines in one Python process: each case exactly as
# `cli.run` does (absl's app.run over the main wrapped by report_user_errors, --help by cli.parse),
# its flags reset in between, its stdout and stderr captured and its exit code kept. A Python
# start with jax's import costs seconds; many refused command lines need only one.
_CASES = r"""
import contextlib, importlib, io, json, os, sys, traceback
from absl import app, flags
from jaxdigits import cli
from jaxdigits.errors import report_user_errors
program, define, cases = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
module = importlib.import_module(program)
module_name, function = define.split(":")
cli.define_common_flags()  # As cli.run does, before the program's own.
getattr(importlib.import_module(module_name), function)()
results = []
for case in cases:
    flags.FLAGS.unparse_flags()
    environ = dict(os.environ)
    os.environ.update(case["env"])
    argv = sys.argv = [module.__file__, *case["args"]]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            app.run(report_user_errors(module.main), argv=argv, flags_parser=cli.parse)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else int(e.code is not None)
        except BaseException:
            traceback.print_exc()
            code = 1
    os.environ.clear()
    os.environ.update(environ)
    results.append({"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
print("CASES " + json.dumps(results))
"""


def run_cli_cases(program: str, define: str, cases, timeout=300):
    """`python -m PROGRAM ARGS` for each (ARGS, extra environment) of `cases`, all in one process
    (see _CASES): `define` ("module:function") defines the program's flags, as its __main__ block
    does. Returns one CompletedProcess-like result (returncode, stdout, stderr) per case, and
    asserts that nothing was written outside the cases (no import-time warning, no crash)."""
    import json
    import subprocess
    import types

    full_env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    cases = [{"args": [str(a) for a in args], "env": env or {}} for args, env in cases]
    proc = subprocess.run([sys.executable, "-c", _CASES, program, define, json.dumps(cases)],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=full_env)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-3000:]
    (line,) = [line for line in proc.stdout.splitlines() if line.startswith("CASES ")]
    return [types.SimpleNamespace(**r) for r in json.loads(line[len("CASES "):])]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A small MLP trained for a few seconds on 20,000 images (about 95 % test accuracy). One step
    per call: the same numbers as the default 8 (test_train), a second less compiling."""
    from jaxdigits import train
    from jaxdigits.config import Config

    workdir = tmp_path_factory.mktemp("tiny") / "run"
    config = Config(model="mlp", hidden=(128,), epochs=4, max_train_examples=20000, validation_size=1000,
                    driver="step")
    final = train.train_and_evaluate(config, workdir, quiet=True, allow_download=False)
    return workdir, final


@pytest.fixture(scope="session")
def exported_model(tiny_run, tmp_path_factory):
    """The tiny run exported to a model folder with `jaxdigits.export`."""
    from jaxdigits import export

    out = tmp_path_factory.mktemp("export") / "model"
    export.write_model(out, *export.export_run(tiny_run[0]))
    return out


@contextlib.contextmanager
def count_compiles(name: str | None):
    """Counts XLA compilations of jitted functions named `name` (None: of any) while the block
    runs, through `jax.monitoring`'s public events (not JAX's private cache counters). Yields a
    function that returns the count so far."""
    import jax

    names = []

    def listener(event, duration, **kwargs):
        del duration  # Unused.
        if event == "/jax/core/compile/backend_compile_duration":
            names.append(kwargs.get("fun_name"))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield lambda: len(names) if name is None else names.count(f"jit({name})")
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


@functools.cache  # Per process: test_fastconv and test_onednn both compare against "eigen".
def train_cnn_two_steps(cpu_conv: str):
    """(state, compiled HLO text) after two momentum steps of the seed CNN on 64 random images
    with `--cpu_conv=cpu_conv`, asserting that the step compiled once."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxdigits import drivers, inputs, step
    from jaxdigits.config import Config

    images = np.random.default_rng(0).integers(0, 256, (64, 28, 28, 1), dtype=np.uint8)
    labels = np.arange(64, dtype=np.int32) % 10
    config = Config(model="cnn", batch_size=32, optimizer="momentum", learning_rate=0.05,
                    schedule="constant", cpu_conv=cpu_conv)
    setup = step.make_setup(config, 64, images.shape[1:], 10, 0.13, 0.31)
    state, acc = step.init_state(setup, jax.random.key(0)), step.zero_metrics()
    run_chunk = drivers.make_chunk_runner(setup, "unroll")
    args = (state, acc, inputs.to_device(images, labels), jnp.arange(64, dtype=jnp.int32), 0,
            jax.random.key(1))
    with count_compiles("run") as compiles:
        hlo = run_chunk.lower(*args, num_steps=2).compile().as_text()
        state = run_chunk(*args, num_steps=2)[0]
    assert compiles() == 1
    return state, hlo


@pytest.fixture(autouse=True, scope="session")
def compilation_cache_in_tmp(tmp_path_factory):
    """Compiled programs of the commands the tests run go to a folder of this test session, never
    to the user's cache (~/.cache/jaxdigits/xla, where jaxdigits' commands keep them). The tests'
    own process keeps its programs there too, as every command does: a test that trains, resumes
    and evaluates the same model compiles each program once (JAX's compile event, which
    `count_compiles` counts, fires for a program loaded from the cache as for one compiled)."""
    from jaxdigits import backend

    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path_factory.mktemp("xla_cache"))
    backend.enable_compilation_cache(True)


def run_driver(setup, data, driver: str, steps: int, steps_per_call: int):
    """(state, metric sums) after `steps` steps from a fresh state, `steps_per_call` per call of
    `driver`'s runner (the last call shorter), with fixed keys and a fixed order."""
    import jax
    import jax.numpy as jnp

    from jaxdigits import drivers, step

    state = step.init_state(setup, jax.random.key(0))
    run = drivers.make_chunk_runner(setup, driver)
    perm = jax.random.permutation(jax.random.key(1), data.labels.shape[0]).astype(jnp.int32)
    acc = step.zero_metrics()
    for start in range(0, steps, steps_per_call):
        state, acc = run(state, acc, data, perm, start, jax.random.key(2),
                         num_steps=min(steps_per_call, steps - start))
    return state, acc


def setup_on(mnist, config, n: int):
    """(setup, device data) for `config` on the first `n` MNIST training images."""
    from jaxdigits import inputs, step

    images, labels = mnist.train_images[:n], mnist.train_labels[:n]
    setup = step.make_setup(config, n, images.shape[1:], 10, *inputs.pixel_stats(images))
    return setup, inputs.to_device(images, labels)


TIMING = ("seconds", "images_per_second")


def without_timing(records: list[dict]) -> list[dict]:
    """metrics.jsonl records with their timings left out (the rest must not depend on the run)."""
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def train_interrupted(config, workdir, monkeypatch, at_epoch: int = 2) -> None:
    """Trains `config` into `workdir`, interrupted (KeyboardInterrupt) as epoch `at_epoch` starts."""
    import pytest

    from jaxdigits import drivers, train

    real_epoch, epochs = drivers.run_epoch, []

    def interrupted(*args, **kwargs):
        epochs.append(len(epochs) + 1)
        if epochs[-1] == at_epoch:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(drivers, "run_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train.train_and_evaluate(config, workdir, quiet=True)
    monkeypatch.setattr(drivers, "run_epoch", real_epoch)


def restored_states(folders, epoch: int) -> list:
    """The train states of epoch `epoch` in each run folder's checkpoints/, restored into the
    structure of the first run's state (its optimizer built as training builds it)."""
    import jax

    from jaxdigits import checkpoint, optimizers, runs, step

    setup, _, _ = runs.load_run(folders[0], "latest")  # Loading builds no optimizer: add it.
    setup = setup._replace(tx=optimizers.make_optimizer(setup.config, setup.steps_per_epoch))
    target = step.init_state(setup, jax.random.key(0))
    return [checkpoint.restore(pathlib.Path(f) / "checkpoints", epoch, target)[0] for f in folders]


def assert_same_run(single, member, epoch: int = 2) -> None:
    """A K-model member's folder holds what its separate run wrote: the metrics (timings aside)
    and the train state of `epoch`, parameters and optimizer state, to float tolerance."""
    import jax
    import numpy as np
    import pytest

    from jaxdigits.metrics import read_jsonl

    ra, rb = read_jsonl(single / "metrics.jsonl"), read_jsonl(member / "metrics.jsonl")
    assert len(ra) == len(rb)
    for x, y in zip(ra, rb):
        assert set(x) == set(y)
        for key in set(x) - set(TIMING):
            assert x[key] == pytest.approx(y[key], rel=1e-5, abs=1e-6), key
    a, b = restored_states([single, member], epoch)  # Same structure: the plain state.
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6), a, b)
