"""Plug-in optimizers: --optimizer=module:factory, typed --optimizer_args, and every mistake."""

import dataclasses
import json
import re
import shutil
import textwrap

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import ROOT, run_cli, run_cli_cases
from jaxdigits import checkpoint, evaluate, optimizers, plugin, train
from jaxdigits.config import Config
from jaxdigits.errors import UserError

LION = "examples/lion.py:lion"
QUICK = ["--model=linear", "--max_train_examples=1024", "--validation_size=500", "--quiet"]


def _write(tmp_path, source: str):
    path = tmp_path / "my_optim.py"
    path.write_text(textwrap.dedent(source))
    return path


def test_args_are_typed_from_the_signature(tmp_path):
    path = _write(tmp_path, """
        import optax
        def factory(learning_rate, steps: int = 1, scale: float = 1.0, flag: bool = False,
                    name: str = "x", maybe: float | None = None, untyped=0.5, anything=None):
            return optax.sgd(learning_rate)
        """)
    factory = plugin.load_factory(f"{path}:factory")
    args = plugin.parse_args(factory, "steps=3, scale=2, flag=true,name=abc,maybe=none,untyped=1,"
                                      "anything=1e-3", takes_schedule=True)
    assert args == {"steps": 3, "scale": 2.0, "flag": True, "name": "abc", "maybe": None,
                    "untyped": 1.0, "anything": 0.001}
    assert type(args["scale"]) is float and type(args["steps"]) is int
    assert plugin.parse_args(factory, "", takes_schedule=True) == {}


def test_learning_rate_goes_to_the_factory_or_is_chained_after_it():
    """A factory with `learning_rate` gets the schedule; one without emits a direction."""
    config = Config(optimizer="jaxdigits.pure_optim:adam", optimizer_args="b1=0.8",
                    learning_rate=0.01, schedule="constant")
    direction = dataclasses.replace(config, optimizer="optax:scale_by_adam")
    params = {"w": jnp.arange(3.0)}
    grads = {"w": jnp.array([0.5, -1.0, 2.0])}
    for tx, ref in [(optimizers.make_optimizer(config, 10), optax.adam(0.01, b1=0.8)),
                    (optimizers.make_optimizer(direction, 10), optax.adam(0.01))]:
        s1, s2 = tx.init(params), ref.init(params)
        for _ in range(3):
            u1, s1 = tx.update(grads, s1, params)
            u2, s2 = ref.update(grads, s2, params)
            np.testing.assert_allclose(u1["w"], u2["w"], rtol=1e-6)


@pytest.mark.slow
def test_train_evaluate_and_resume_with_a_plug_in(tmp_path):
    """Trained from the command line; the spec and its arguments are saved, so evaluate rebuilds
    it and a resumed run ends equal to the uninterrupted one."""
    args = "b1=0.95,weight_decay=0.001"
    proc = run_cli("jaxdigits.train", *QUICK, "--epochs=2", f"--optimizer={LION}",
                   f"--optimizer_args={args}", "--learning_rate=0.003", f"--workdir={tmp_path / 'run'}")
    assert proc.returncode == 0, proc.stderr
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["optimizer"] == LION and saved["optimizer_args"] == args
    assert checkpoint.read_meta(tmp_path / "run" / "checkpoints", 2)["config"]["optimizer_args"] == args
    final = json.loads((tmp_path / "run" / "results.json").read_text())
    assert final["test_accuracy"] > 0.7  # Chance is 0.1; 16 steps of a linear model.

    shutil.copytree(tmp_path / "run", tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "2")
    config = Config.from_dict(saved)
    resumed = train.train_and_evaluate(config, tmp_path / "resumed", quiet=True, resume=True)
    assert resumed == final
    scored = evaluate.evaluate_run(tmp_path / "run", which="latest")
    assert scored["accuracy"] == final["test_accuracy"] and scored["count"] == 10000


BAD = """
    import optax
    def not_a_tx(learning_rate):
        return {"init": None}
    def needs(learning_rate, b1: float = 0.9, flag: bool = False):
        return optax.adam(learning_rate, b1=b1)
    def required(learning_rate, k: int):
        return optax.sgd(learning_rate)
    """


@pytest.mark.parametrize("optimizer, args, message", [
    ("no_such_module_xyz:f", "", "no module named 'no_such_module_xyz' on the Python path"),
    ("{path}:missing", "", "has no function 'missing'"),
    ("nowhere/optim.py:f", "", "optimizer file nowhere/optim.py does not exist"),
    ("{path}:not_a_tx", "", "returned a dict, not an optax.GradientTransformation"),
    ("{path}:needs", "b3=1", "takes no argument 'b3'; its arguments are b1, flag"),
    ("{path}:needs", "b1=fast", "argument b1='fast' is not a valid float"),
    ("{path}:needs", "flag=maybe", "argument flag='maybe' is not a valid bool"),
    ("{path}:needs", "b1", "takes name=value pairs"),
    ("{path}:needs", "learning_rate=0.1", "gets its learning rate from --learning_rate"),
    ("{path}:required", "", "pass the missing arguments with --optimizer_args"),
    ("adam", "b1=0.9", "--optimizer_args is for a plug-in optimizer"),
])
def test_plug_in_mistakes_are_one_sentence(tmp_path, optimizer, args, message):
    path = _write(tmp_path, BAD)
    config = Config(optimizer=optimizer.format(path=path), optimizer_args=args)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace("?", r"\?")):
        optimizers.make_optimizer(config, 10)


@pytest.mark.slow
def test_train_cli_refuses_a_bad_plug_in(tmp_path):
    path = _write(tmp_path, BAD)
    cases = [(f"{path}:not_a_tx", "", "not an optax.GradientTransformation"),
             (f"{path}:needs", "b3=1", "takes no argument 'b3'")]
    results = run_cli_cases("jaxdigits.train", "jaxdigits.cli:define_train_flags", [
        ([*QUICK, f"--optimizer={optimizer}", f"--optimizer_args={args}",
          f"--workdir={tmp_path / 'run'}"], None) for optimizer, args, _ in cases])
    for (_, _, message), proc in zip(cases, results):
        assert proc.returncode == 2
        assert message in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "run").exists()


def test_the_docs_show_the_lion_plug_in_as_shipped():
    assert (ROOT / "examples" / "lion.py").read_text().strip() in (ROOT / "docs" / "optimizers.md").read_text()


FLOAT_ONLY = """
    import jax
    import optax

    def sgd_number(learning_rate):
        # Treats the rate as a number: training's schedule arrives through inject_hyperparams.
        update = lambda g, s, p=None: (jax.tree.map(lambda x: -learning_rate * x, g), s)
        return optax.chain(optax.GradientTransformation(lambda p: optax.EmptyState(), update))

    def sgd_float(learning_rate):
        return optax.sgd(float(learning_rate))  # float() of a schedule: nothing can feed it.
    """
TINY = Config(model="linear", epochs=1, batch_size=64, max_train_examples=512, validation_size=100,
              driver="step", schedule="warmup_cosine", learning_rate=0.1)


@pytest.mark.slow
def test_a_float_only_learning_rate_trains_as_the_kit_says(tmp_path, mnist):
    """The kit and training treat a factory that takes its rate as a number alike: it is fed the
    schedule's value each step, and trains as optax.sgd on the same schedule does."""
    from jaxdigits import check_optimizer

    spec = f"{_write(tmp_path, FLOAT_ONLY)}:sgd_number"
    report = check_optimizer.check(spec, skip=("quadratic", "rosenbrock", "mnist"))
    assert report.passed, str(report)
    assert "feeds it the schedule's value" in report.items[0].reason
    ours = train.train_and_evaluate(dataclasses.replace(TINY, optimizer=spec), tmp_path / "ours",
                                    quiet=True, allow_download=False)
    reference = train.train_and_evaluate(dataclasses.replace(TINY, optimizer="sgd"),
                                         tmp_path / "sgd", quiet=True, allow_download=False)
    assert ours["test_accuracy"] == pytest.approx(reference["test_accuracy"], abs=2e-4)
    assert ours["test_loss"] == pytest.approx(reference["test_loss"], rel=1e-4)


def test_a_float_only_learning_rate_that_cannot_be_fed_fails_kit_and_training_alike(tmp_path):
    from jaxdigits import check_optimizer

    spec = f"{_write(tmp_path, FLOAT_ONLY)}:sgd_float"
    report = check_optimizer.check(spec)
    assert [(i.name, i.passed) for i in report.items] == [("builds", False)]
    assert "takes its learning rate as a Python number only" in report.items[0].reason
    with pytest.raises(UserError) as error:
        train.train_and_evaluate(dataclasses.replace(TINY, optimizer=spec), tmp_path / "run",
                                 quiet=True, allow_download=False)
    assert str(error.value) == report.items[0].reason  # The same sentence, how to fix it included.
    assert "learning_rate(count) if callable(learning_rate)" in str(error.value)
    assert not (tmp_path / "run").exists()  # Before any work: no config.json.


BROKEN_STATE = """
    import jax
    import jax.numpy as jnp
    import optax

    def growing(learning_rate):
        def update(grads, state, params=None):
            return jax.tree.map(lambda g: -0.01 * g, grads), jnp.append(state, 1.0)
        return optax.GradientTransformation(lambda params: jnp.zeros(0), update)

    def raising(learning_rate):
        def init(params):
            raise RuntimeError("no state for you")
        return optax.GradientTransformation(init, optax.sgd(0.1).update)

    def half_tree(learning_rate):
        update = lambda grads, state, params=None: ({"w": grads["w"]}, state)
        return optax.GradientTransformation(lambda params: optax.EmptyState(), update)
    """


@pytest.mark.parametrize("factory, message", [
    ("growing", "growing's state changes after one update (state went from float32[0] to "
                "float32[1]), so every training step would compile again"),
    ("raising", "raising's init raised RuntimeError: no state for you."),
    ("half_tree", "half_tree's update returns updates that do not match the parameters"),
])
def test_training_refuses_a_broken_plug_in_before_any_work(tmp_path, factory, message):
    spec = f"{_write(tmp_path, BROKEN_STATE)}:{factory}"
    with pytest.raises(UserError, match=re.escape(message)):
        train.train_and_evaluate(dataclasses.replace(TINY, optimizer=spec), tmp_path / "run",
                                 quiet=True, allow_download=False)
    assert not (tmp_path / "run").exists()
