"""Shared fixtures: the bundled MNIST, loaded once per test session."""

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


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A small MLP trained for a few seconds on 20,000 images (about 95 % test accuracy)."""
    from jaxdigits import train
    from jaxdigits.config import Config

    workdir = tmp_path_factory.mktemp("tiny") / "run"
    config = Config(model="mlp", hidden=(128,), epochs=4, max_train_examples=20000, validation_size=1000)
    final = train.train_and_evaluate(config, workdir, quiet=True, allow_download=False)
    return workdir, final


@pytest.fixture(scope="session")
def exported_model(tiny_run, tmp_path_factory):
    """The tiny run exported to a model folder with `jaxdigits.export`."""
    from jaxdigits import export

    out = tmp_path_factory.mktemp("export") / "model"
    export.write_model(out, *export.export_run(tiny_run[0]))
    return out
