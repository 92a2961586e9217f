"""Crash windows: a run SIGKILLed at any phase boundary, then run again, ends bit for bit as an
uninterrupted run: the same checkpoints (latest and best), metrics, TensorBoard scalars and
results, and no leftovers. Damaged checkpoints are refused by name and resumed past."""

import json
import pathlib
import shutil
import subprocess
import sys

import pytest

from conftest import without_timing
from jaxdigits import checkpoint, runs, train
from jaxdigits.config import Config
from jaxdigits.errors import UserError
from jaxdigits.metrics import read_jsonl, read_scalars

CONFIG = Config(model="mlp", hidden=(32,), epochs=3, max_train_examples=1536,
                validation_size=512, batch_size=128, driver="step")
POINTS = ["startup", "mid_epoch:1", "mid_epoch:2", "before_latest:1", "torn_latest:2",
          "between:1", "between:3", "after_best:2", "after_metrics:2", "scoring", "before_results"]


def run(workdir) -> dict:
    return train.train_and_evaluate(CONFIG, workdir, quiet=True, allow_download=False)


def snapshot(workdir: pathlib.Path) -> dict:
    """Everything a run leaves that must not depend on interruptions (timings left out)."""
    tb = {k: v for k, v in read_scalars(workdir / "tensorboard").items()
          if not k[0].startswith(("seconds", "images/"))}
    folders = {sub: checkpoint.saved_epochs(workdir / sub) for sub in ("checkpoints", "best")}
    digests = {which: checkpoint.digest(runs.load_run(workdir, which)[1])
               for which in ("latest", "best")}
    return {"results": json.loads((workdir / "results.json").read_text()),
            "metrics": without_timing(read_jsonl(workdir / "metrics.jsonl")),
            "tensorboard": tb, "folders": folders, "digests": digests,
            "files": sorted(p.name for p in workdir.iterdir())}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("reference") / "run"
    run(workdir)
    return snapshot(workdir)


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
def test_a_kill_at_any_point_then_a_rerun_ends_as_an_uninterrupted_run(point, reference, tmp_path):
    workdir = tmp_path / "run"
    killer = pathlib.Path(__file__).with_name("kill_run.py")
    done = subprocess.run([sys.executable, str(killer), str(workdir), CONFIG.to_json(), point],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stderr[-2000:]  # Killed where armed, not before.
    run(workdir)
    assert snapshot(workdir) == reference
    leftovers = [p for p in workdir.rglob("*") if "tmp" in p.name or p.name.endswith((".new", ".old"))]
    assert leftovers == []


@pytest.mark.slow
def test_a_finished_run_run_again_changes_nothing_on_disk(tiny_run):
    workdir, final = tiny_run
    before = {p: p.stat().st_mtime_ns for p in workdir.rglob("*")}
    config = runs.read_config(workdir)
    assert train.train_and_evaluate(config, workdir, quiet=True, allow_download=False) == final
    assert {p: p.stat().st_mtime_ns for p in workdir.rglob("*")} == before


def damage(folder: pathlib.Path) -> None:
    """Flips bytes in the middle of every data file of a checkpoint's state."""
    for path in (folder / "state").rglob("*"):
        if path.is_file() and path.stat().st_size > 64 and path.parent.name == "d":
            data = bytearray(path.read_bytes())
            middle = len(data) // 2
            data[middle:middle + 8] = bytes(b ^ 0xFF for b in data[middle:middle + 8])
            path.write_bytes(bytes(data))


@pytest.mark.slow
def test_damaged_checkpoints_are_refused_by_name_and_a_resume_goes_past_them(reference, tmp_path):
    workdir = tmp_path / "run"
    run(workdir)
    shutil.rmtree(workdir / "checkpoints" / "2" / "meta")  # A lost file...
    damage(workdir / "checkpoints" / "3")  # ...and flipped bytes.
    for which in ("latest",):
        with pytest.raises(checkpoint.Damaged, match=r"checkpoints/3 is damaged"):
            runs.load_run(workdir, which)
    run(workdir)  # Falls back to epoch 1, the newest intact one, and trains 2 and 3 again.
    assert snapshot(workdir) == {**reference, "files": sorted(reference["files"] + ["damaged"])}
    assert sorted(p.name for p in (workdir / "damaged").iterdir()) == ["checkpoints-2", "checkpoints-3"]


def test_a_damaged_best_checkpoint_is_refused_by_evaluate_and_export(tiny_run, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(tiny_run[0], workdir)
    epoch = checkpoint.saved_epochs(workdir / "best")[-1]
    damage(workdir / "best" / str(epoch))
    with pytest.raises(UserError, match=rf"best/{epoch} is damaged"):
        runs.load_run(workdir, "best")


def test_a_run_that_saved_nothing_gives_way_to_a_new_config(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "config.json").write_text(Config(model="mlp", learning_rate=1e9).to_json())
    (workdir / "metrics.jsonl").write_text("")
    assert runs.check_workdir(workdir, Config(model="mlp")) is False
    (workdir / "best" / "1").mkdir(parents=True)  # Once a checkpoint exists, the config holds.
    with pytest.raises(UserError, match="holds a run with a different config"):
        runs.check_workdir(workdir, Config(model="mlp"))


@pytest.mark.parametrize("make", ["file", "file_parent"])
def test_a_workdir_that_is_or_lies_under_a_file_is_one_sentence(tmp_path, make):
    blocker = tmp_path / "x"
    blocker.write_text("")
    workdir = blocker if make == "file" else blocker / "run"
    with pytest.raises(UserError, match="is a file"):
        runs.check_workdir(workdir, Config(model="mlp"))
    assert blocker.read_text() == ""


BAD_PLUGINS = {  # What the plug-in does, and what the sentence must say.
    "init_raises": ("def init(params):\n    raise RuntimeError('boom')", "RuntimeError: boom"),
    "wrong_tree": ("def init(params):\n    return ()\n\ndef update(g, s, p=None):\n"
                   "    return {'w': 0.0}, s", "returns updates that do not match the parameters"),
    "growing_state": ("def init(params):\n    return jnp.zeros(1)\n\ndef update(g, s, p=None):\n"
                      "    return g, jnp.concatenate([s, s])", "state changes after one update"),
}


@pytest.mark.slow
@pytest.mark.parametrize("fault", sorted(BAD_PLUGINS))
def test_a_broken_plug_in_optimizer_is_one_sentence_before_anything_is_written(tmp_path, fault):
    plugin = tmp_path / "bad.py"
    body, sentence = BAD_PLUGINS[fault]
    if "def update" not in body:
        body += "\n\ndef update(g, s, p=None):\n    return g, s"
    plugin.write_text("import jax.numpy as jnp\nimport optax\n\n" + body +
                      "\n\ndef factory(learning_rate):\n    return optax.GradientTransformation(init, update)\n")
    config = Config(model="linear", epochs=1, max_train_examples=256, validation_size=0,
                    optimizer=f"{plugin}:factory")
    with pytest.raises(UserError, match=sentence) as error:
        train.train_and_evaluate(config, tmp_path / "run", quiet=True, allow_download=False)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_k_models_resume_past_a_damaged_member_checkpoint_and_repair_best(tmp_path):
    config = CONFIG.__class__(**{**CONFIG.__dict__, "num_models": 2})
    reference, workdir = tmp_path / "reference", tmp_path / "run"
    for folder in (reference, workdir):
        train.train_and_evaluate(config, folder, quiet=True, allow_download=False)
    damage(workdir / "member_1" / "checkpoints" / "3")
    shutil.rmtree(workdir / "member_0" / "best")  # As a kill between latest and best leaves it.
    train.train_and_evaluate(config, workdir, quiet=True, allow_download=False)
    assert (json.loads((workdir / "results.json").read_text())
            == json.loads((reference / "results.json").read_text()))
    for member in ("member_0", "member_1"):
        got, want = snapshot(workdir / member), snapshot(reference / member)
        assert {**got, "files": None} == {**want, "files": None}
    assert (workdir / "member_1" / "damaged" / "checkpoints-3").is_dir()


def garble(path: pathlib.Path) -> None:
    path.write_bytes(b"\x00garbage\xff" * 10)


def cut(path: pathlib.Path) -> None:
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])


FILE_DAMAGE = {  # name: (what is damaged, how, "repaired" or the sentence it must give)
    "config_garbled": ("config.json", garble, "is not a valid jaxdigits config"),
    "config_deleted": ("config.json", pathlib.Path.unlink, "is not a jaxdigits run"),
    "metrics_cut": ("metrics.jsonl", cut, "repaired"),
    "metrics_garbled": ("metrics.jsonl", garble, "repaired"),
    "results_garbled": ("results.json", garble, "repaired"),
    "events_cut": ("tensorboard/events.*", cut, "repaired"),
    "events_garbled": ("tensorboard/events.*", garble, "repaired"),
    "latest_meta_garbled": ("checkpoints/4/meta/metadata", garble, "repaired"),
    "latest_orbax_metadata_garbled": ("checkpoints/4/_CHECKPOINT_METADATA", garble, "repaired"),
    "latest_state_metadata_cut": ("checkpoints/4/state/_METADATA", cut, "repaired"),
    "best_data_flipped": ("best/*", damage, "repaired"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(FILE_DAMAGE))
def test_every_file_a_run_writes_damaged_is_repaired_or_one_sentence(tiny_run, tmp_path, case):
    workdir, config = tmp_path / "run", runs.read_config(tiny_run[0])
    shutil.copytree(tiny_run[0], workdir)
    pattern, harm, outcome = FILE_DAMAGE[case]
    target = sorted(workdir.glob(pattern))[-1]
    want = snapshot(workdir)
    harm(target)
    if outcome != "repaired":
        with pytest.raises(UserError, match=outcome):
            train.train_and_evaluate(config, workdir, quiet=True, allow_download=False)
        return
    train.train_and_evaluate(config, workdir, quiet=True, allow_download=False)
    got = snapshot(workdir)
    assert {**got, "files": None} == {**want, "files": None}
    assert set(got["files"]) - set(want["files"]) <= {"damaged"}
