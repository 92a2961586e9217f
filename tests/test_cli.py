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

from conftest import ROOT, run_cli, run_cli_cases
from jaxdigits import runs
from jaxdigits.config import Config
from jaxdigits.metrics import read_jsonl

TIMING = {"seconds", "images_per_second"}
TRAIN = ("jaxdigits.train", "jaxdigits.cli:define_train_flags")
EVALUATE = ("jaxdigits.evaluate", "jaxdigits.evaluate:define_flags")


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_sigkill_then_resume_is_bit_identical(tmp_path):
    """A run killed with SIGKILL after epoch 2 and resumed ends exactly as an uninterrupted one.

    Dropout and augmentation draw keys every step, so the resumed run must replay both. Its
    epochs are short (about a tenth of a second each), so there are twelve: the kill lands in
    the window of the ten after epoch 2, their checkpoints and the test set (over a second)."""
    args = ["jaxdigits.train", "--model=mlp", "--hidden=128", "--dropout=0.2", "--augment_shift=1",
            "--epochs=12", "--seed=3", "--max_train_examples=4096", "--validation_size=1000",
            "--quiet"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    proc = run_cli(*args, f"--workdir={straight}")
    assert proc.returncode == 0, proc.stderr

    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    victim = subprocess.Popen([sys.executable, "-m", *args, f"--workdir={killed}"], cwd=ROOT,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (killed / "checkpoints" / "2").is_dir() and time.time() < deadline:
        time.sleep(0.005)
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


BAD_TRAINING_INPUT = [
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
]


@pytest.fixture(scope="module")
def refused_training(tmp_path_factory):
    """train's main on every bad command line of this file, in one process (run_cli_cases):
    (tmp folder, {name: (result, message)}). The workdir cases are given a foreign folder, a
    linear model's run folder (its config.json: what makes a folder a run) with another model,
    and a new folder with --resume; the missing data a cache with nothing in it and no download."""
    tmp = tmp_path_factory.mktemp("refused")
    foreign, run = tmp / "foreign", tmp / "run"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    run.mkdir()
    (run / "config.json").write_text(Config(model="linear", epochs=1).to_json())
    cases = {f"input{i}": ([f"--workdir={tmp / f'w{i}'}", *args], None, message)
             for i, (args, message) in enumerate(BAD_TRAINING_INPUT)}
    cases.update({
        "foreign": ([f"--workdir={foreign}"], None, "is not a jaxdigits run (no config.json)"),
        "other_config": ([f"--workdir={run}", "--model=mlp"], None,
                         "different config: model='mlp'"),
        "resume_nothing": ([f"--workdir={tmp / 'new'}", "--resume"], None, "holds no checkpoint"),
        "missing_data": (["--dataset=kmnist", "--nodownload", f"--workdir={tmp / 'kmnist'}"],
                         {"JAXDIGITS_CACHE_DIR": str(tmp / "c")},
                         "could not find the kmnist IDX files"),
    })
    results = run_cli_cases(*TRAIN, [(args, env) for args, env, _ in cases.values()])
    return tmp, {name: (proc, case[2]) for (name, case), proc in zip(cases.items(), results)}


def _assert_one_sentence(proc, message):
    """Exit code 2, no traceback, and the last line of stderr is the error naming `message`."""
    assert proc.returncode == 2, (message, proc.stderr)
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, (message, proc.stderr)
    assert "Traceback" not in proc.stderr, (message, proc.stderr)


@pytest.mark.parametrize("case", range(len(BAD_TRAINING_INPUT)),
                         ids=[" ".join(args) for args, _ in BAD_TRAINING_INPUT])
def test_bad_training_input_is_one_sentence(refused_training, case):
    _assert_one_sentence(*refused_training[1][f"input{case}"])


def test_bad_workdirs_are_one_sentence(refused_training, tmp_path):
    tmp, results = refused_training
    for name in ("foreign", "other_config", "resume_nothing"):
        _assert_one_sentence(*results[name])
    # evaluate's refusals, one process for all; a path that does not exist: that one sentence.
    missing, foreign = tmp_path / "missing", tmp / "foreign"
    absent, not_a_run, nothing = run_cli_cases(*EVALUATE, [
        ([f"--workdir={missing}"], None), ([f"--workdir={foreign}"], None), ([], None)])
    assert absent.returncode == 2 and absent.stderr.strip().splitlines() == [
        f"error: {missing} does not exist."]
    _assert_one_sentence(not_a_run, "holds no jaxdigits checkpoint")
    _assert_one_sentence(nothing, "pass --workdir=RUN_FOLDER or --checkpoint")
    # Refused before anything is written: the foreign files and the other run are as they were.
    assert (foreign / "notes.txt").read_text() == "mine" and len(list(foreign.iterdir())) == 1
    assert [p.name for p in (tmp / "run").iterdir()] == ["config.json"]
    assert not (tmp / "new").exists()


def test_missing_data_is_one_sentence(refused_training):
    _assert_one_sentence(*refused_training[1]["missing_data"])
