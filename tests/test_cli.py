"""The command-line programs end to end and every bad input (kills: test_crash.py)."""

import json
import subprocess
import sys

import jax
import pytest

from conftest import run_cli, run_cli_cases
from jaxdigits.config import Config
from jaxdigits.metrics import read_jsonl

TRAIN = ("jaxdigits.train", "jaxdigits.cli:define_train_flags")
EVALUATE = ("jaxdigits.evaluate", "jaxdigits.evaluate:define_flags")


@pytest.mark.slow
def test_train_then_evaluate_end_to_end(tmp_path):
    workdir = tmp_path / "run"
    proc = run_cli("jaxdigits.train", "--model=linear", "--epochs=2", f"--workdir={workdir}",
                   "--max_train_examples=2048", "--validation_size=1000", "--crop=2")
    assert proc.returncode == 0, proc.stderr
    assert "epoch 2 | train loss" in proc.stdout
    assert "Test accuracy" in proc.stdout and f"Run saved in {workdir}" in proc.stdout
    records = read_jsonl(workdir / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2, 2]
    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds",
            "images_per_second", "learning_rate"} <= set(records[0])
    assert records[-1]["test_count"] == 10000
    saved = json.loads((workdir / "config.json").read_text())
    assert (saved["model"], saved["crop"]) == ("linear", 2)  # Evaluate below sees the centre too.
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    assert (workdir / "checkpoints" / "2").is_dir() and list((workdir / "best").iterdir())

    proc = run_cli("jaxdigits.evaluate", f"--workdir={workdir}", "--which=latest", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)  # --json: exactly one object on stdout.
    assert result["count"] == 10000 and result["accuracy"] == records[-1]["test_accuracy"]


@pytest.mark.slow
def test_benchmark_reports_json(tmp_path):
    """A table for people; with --json exactly one JSON object on stdout; --out writes it."""
    out = tmp_path / "bench.json"
    args = ["jaxdigits.benchmark", "--model=linear", "--calls=2", "--repeats=2",
            "--max_train_examples=4096"]
    proc = run_cli(*args, f"--out={out}", "--verbosity=0")  # INFO logs too: still no TPU line.
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["images_per_second"] > 0 and result["compile_seconds"] > 0
    assert result["gflops_per_step"] > 0 and result["achieved_gflops_per_second"] > 0
    assert result["backend"] == "cpu" and result["versions"]["jax"] == jax.__version__
    assert 0 < result["mfu"] < 1 and not result["compilation_cache"]
    assert "GFLOP/s" in proc.stdout and "MFU" in proc.stdout and "{" not in proc.stdout
    assert proc.stdout.strip().endswith(f"Result written to {out}.")
    assert "Unable to initialize backend" not in proc.stderr

    proc = run_cli(*args, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["model"] == "linear"  # The whole of stdout, one object.


BAD_TRAINING_INPUT = [
    (["--model=resnet"], "unknown model 'resnet'; choose one of linear, mlp, cnn, cnn_small, cnn_tiny, cnn_deep."),
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
    (["--recipe=fastest"], "unknown recipe 'fastest'; choose one of speedrun, accurate, ensemble."),
    (["--batch_size=4096", "--max_train_examples=1000"], "--batch_size=4096 is larger than"),
]


@pytest.fixture(scope="module")
def refused_training(tmp_path_factory):
    """train's main on every bad command line of this file, in one process (run_cli_cases):
    (tmp folder, {name: (result, message)}). The workdir cases are given a foreign folder, a
    linear model's run folder (its config.json: what makes a folder a run) with another model,
    and a new folder with --resume; the missing data a cache with nothing in it and no download.
    (A run folder that saved no checkpoint or results gives way to a new config.)"""
    tmp = tmp_path_factory.mktemp("refused")
    foreign, run = tmp / "foreign", tmp / "run"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    run.mkdir()
    (run / "config.json").write_text(Config(model="linear", epochs=1).to_json())
    (run / "results.json").write_text("{}")  # A finished run: a new config does not replace it.
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


@pytest.mark.slow
@pytest.mark.parametrize("case", range(len(BAD_TRAINING_INPUT)),
                         ids=[" ".join(args) for args, _ in BAD_TRAINING_INPUT])
def test_bad_training_input_is_one_sentence(refused_training, case):
    _assert_one_sentence(*refused_training[1][f"input{case}"])


@pytest.mark.slow
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
    assert sorted(p.name for p in (tmp / "run").iterdir()) == ["config.json", "results.json"]
    assert not (tmp / "new").exists()


@pytest.mark.slow
def test_missing_data_is_one_sentence(refused_training):
    _assert_one_sentence(*refused_training[1]["missing_data"])


def test_commands_import_orbax_only_when_they_checkpoint():
    """Orbax (0.3 s to import) is not loaded with the commands' modules, only at a checkpoint's
    first use (`checkpoint.preload`, or any save or restore)."""
    script = ("import sys\n"
              "from jaxdigits import checkpoint, evaluate, export, serve, train\n"
              "assert 'orbax.checkpoint.checkpoint_manager' not in sys.modules\n"
              "checkpoint.preload()\n"
              "assert 'orbax.checkpoint.checkpoint_manager' in sys.modules\n"
              "assert checkpoint.ocp.args.Composite is not None\n")
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
