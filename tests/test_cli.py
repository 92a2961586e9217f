"""The command-line programs end to end, the kill-and-resume guarantee, and every bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import ROOT, run_cli
from jaxdigits import runs
from jaxdigits.metrics import read_jsonl

QUICK = ["--max_train_examples=2048", "--validation_size=1000", "--quiet"]
TIMING = {"seconds", "images_per_second"}


def test_train_then_evaluate_end_to_end(tmp_path):
    workdir = tmp_path / "run"
    proc = run_cli("jaxdigits.train", "--model=linear", "--epochs=2", f"--workdir={workdir}",
                   "--max_train_examples=2048", "--validation_size=1000")
    assert proc.returncode == 0, proc.stderr
    assert "epoch 2/2" in proc.stderr  # The progress bar.
    assert "epoch 2 | train loss" in proc.stdout
    assert "Test accuracy" in proc.stdout and f"Run saved in {workdir}" in proc.stdout
    records = read_jsonl(workdir / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2, 2]
    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds",
            "images_per_second", "learning_rate"} <= set(records[0])
    assert records[-1]["test_count"] == 10000
    assert json.loads((workdir / "config.json").read_text())["model"] == "linear"
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    assert (workdir / "checkpoints" / "2").is_dir() and list((workdir / "best").iterdir())

    proc = run_cli("jaxdigits.evaluate", f"--workdir={workdir}", "--which=latest")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["count"] == 10000 and result["accuracy"] == records[-1]["test_accuracy"]


def test_benchmark_reports_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_cli("jaxdigits.benchmark", "--model=linear", "--calls=2", "--repeats=2",
                   f"--json={out}", "--max_train_examples=4096")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["images_per_second"] > 0 and result["compile_seconds"] > 0
    assert result["gflops_per_step"] > 0 and result["achieved_gflops_per_second"] > 0
    assert result["backend"] == "cpu" and result["versions"]["jax"] == jax.__version__
    assert "GFLOP/s" in proc.stdout


def _params(workdir):
    return runs.load_run(workdir, "latest")[1]


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    """A run killed with SIGKILL after epoch 2 and resumed ends exactly as an uninterrupted one."""
    args = ["jaxdigits.train", "--model=mlp", "--dropout=0.2", "--augment_shift=1", "--epochs=4",
            "--seed=3", "--max_train_examples=30000", "--validation_size=1000", "--quiet"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    proc = run_cli(*args, f"--workdir={straight}")
    assert proc.returncode == 0, proc.stderr

    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    victim = subprocess.Popen([sys.executable, "-m", *args, f"--workdir={killed}"], cwd=ROOT,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (killed / "checkpoints" / "2").is_dir() and time.time() < deadline:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert (killed / "checkpoints" / "2").is_dir(), "the run never reached epoch 2"
    assert not (killed / "results.json").exists(), "the run finished before it could be killed"

    proc = run_cli(*args, f"--workdir={killed}", "--resume")
    assert proc.returncode == 0, proc.stderr
    assert "Resuming" in proc.stdout
    jax.tree.map(np.testing.assert_array_equal, _params(killed), _params(straight))
    strip = lambda rs: [{k: v for k, v in r.items() if k not in TIMING} for r in rs]
    assert strip(read_jsonl(killed / "metrics.jsonl")) == strip(read_jsonl(straight / "metrics.jsonl"))
    assert (killed / "results.json").read_text() == (straight / "results.json").read_text()


def _linear_run(tmp_path):
    workdir = tmp_path / "linear"
    assert run_cli("jaxdigits.train", "--model=linear", "--epochs=1", f"--workdir={workdir}",
                   *QUICK).returncode == 0
    return workdir


@pytest.mark.parametrize("args, message", [
    (["--model=resnet"], "unknown model 'resnet'; choose one of linear, mlp, cnn, cnn_small, cnn_tiny."),
    (["--optimizer=lbfgs"], "unknown optimizer 'lbfgs'; choose one of sgd, momentum, nesterov"),
    (["--dataset=cifar"], "unknown dataset 'cifar'; choose one of mnist, fashion_mnist, kmnist"),
    (["--schedule=step"], "unknown schedule 'step'"),
    (["--batch_size=0"], "--batch_size must be positive, got 0."),
    (["--epochs=-1"], "--epochs must be at least 1, got -1."),
    (["--learning_rate=0"], "--learning_rate must be positive"),
    (["--validation_size=60000"], "--validation_size=60000 must be at least 0 and below"),
    (["--hidden=a,b"], "--hidden must be comma-separated integers"),
    (["--driver=turbo"], "unknown --driver 'turbo'; choose one of auto, step, unroll, scan."),
    (["--keep_checkpoints=0"], "--keep_checkpoints must be at least 1, got 0."),
    (["--layers=turbo"], "unknown --layers 'turbo'; choose one of auto, fast, plain."),
    (["--recipe=fastest"], "unknown recipe 'fastest'; choose one of speedrun, ensemble."),
    (["--batch_size=4096", "--max_train_examples=1000"], "--batch_size=4096 is larger than"),
])
def test_bad_training_input_is_one_sentence(tmp_path, args, message):
    proc = run_cli("jaxdigits.train", f"--workdir={tmp_path / 'w'}", *args)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_bad_workdirs_are_one_sentence(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    run = _linear_run(tmp_path)
    cases = [
        (("jaxdigits.train", f"--workdir={foreign}"), "is not a jaxdigits run (no config.json)"),
        (("jaxdigits.train", f"--workdir={run}", "--model=mlp"), "different config: model='mlp'"),
        (("jaxdigits.train", f"--workdir={tmp_path / 'new'}", "--resume"), "holds no checkpoint"),
        (("jaxdigits.evaluate", f"--workdir={tmp_path / 'missing'}"), "does not exist"),
        (("jaxdigits.evaluate", f"--workdir={foreign}"), "holds no jaxdigits checkpoint"),
        (("jaxdigits.evaluate",), "pass --workdir=RUN_FOLDER or --checkpoint"),
    ]
    for args, message in cases:
        proc = run_cli(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)
    assert (foreign / "notes.txt").read_text() == "mine" and len(list(foreign.iterdir())) == 1


def test_missing_data_is_one_sentence(tmp_path):
    proc = run_cli("jaxdigits.train", "--dataset=kmnist", "--nodownload",
                   f"--workdir={tmp_path / 'w'}", env={"JAXDIGITS_CACHE_DIR": str(tmp_path / "c")})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "could not find the kmnist IDX files" in proc.stderr
