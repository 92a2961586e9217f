"""Programs compiled ahead on a second thread (`jaxdigits.ahead`): the first real calls find them
and compile nothing again; what fails ahead is compiled and reported by the real call."""

import threading

import jax
import jax.numpy as jnp
import pytest

from jaxdigits import ahead, contract, step, train
from jaxdigits.config import Config


@pytest.fixture
def compiles():
    """Every XLA compilation while the test runs: (function name, thread name)."""
    seen = []

    def listener(event, duration, **kwargs):
        del duration  # Unused.
        if event == "/jax/core/compile/backend_compile_duration":
            seen.append((kwargs.get("fun_name"), threading.current_thread().name))

    jax.monitoring.register_event_duration_secs_listener(listener)
    yield seen
    jax.monitoring.unregister_event_duration_listener(listener)


def test_a_run_compiles_its_programs_once_and_ahead(tmp_path, compiles):
    config = Config(model="mlp", hidden=(16,), epochs=2, max_train_examples=512,
                    validation_size=256, driver="step")
    train.train_and_evaluate(config, tmp_path / "run", quiet=True, allow_download=False)
    by_name = {}
    for name, thread in compiles:
        by_name.setdefault(name, []).append(thread)
    for name in ("jit(run)", "jit(eval_batch)", "jit(epoch_order)"):
        assert len(by_name[name]) == 1, (name, by_name[name])  # Not again at the first call.
        assert by_name[name][0].startswith("jaxdigits-ahead"), (name, by_name[name])
    assert by_name["jit(gather)"] == ["jaxdigits-ahead_0"] * 2  # Validation's and the test's.


@pytest.mark.slow
def test_a_resumed_run_compiles_its_step_once_and_ahead(tmp_path, monkeypatch, compiles):
    """The restored state is placed as a fresh one (uncommitted), with the shapes
    `step.state_shapes` gave: nothing compiles twice."""
    from conftest import train_interrupted

    config = Config(model="mlp", hidden=(16,), epochs=3, max_train_examples=512,
                    validation_size=256, driver="step")
    train_interrupted(config, tmp_path / "run", monkeypatch, at_epoch=2)
    compiles.clear()
    train.train_and_evaluate(config, tmp_path / "run", quiet=True, resume=True)
    for program in ("jit(run)", "jit(eval_batch)"):
        threads = [thread for name, thread in compiles if name == program]
        assert len(threads) == 1 and threads[0].startswith("jaxdigits-ahead"), compiles


@pytest.mark.parametrize("overrides", [
    dict(model="mlp"),
    dict(model="cnn_tiny", batch_norm=True, ema_decay=0.999, dtype="bfloat16", grad_clip=1.0),
])
def test_state_shapes_are_init_states(overrides):
    setup = step.make_setup(Config(**overrides), 1000, (28, 28, 1), 10, 0.13, 0.31)
    real = step.init_state(setup, jax.random.key(0))
    assert contract.leaf_info(step.state_shapes(setup)) == contract.leaf_info(real)


def test_what_fails_ahead_is_left_to_the_real_call():
    @jax.jit
    def broken(x):
        return x @ jnp.ones((3, 2))  # Shapes that do not fit: fails when traced.

    fine = jax.jit(lambda x: x + 1)

    def plan(early):
        early.compile(broken, jax.ShapeDtypeStruct((4, 4), jnp.float32))
        early.compile(fine, jax.ShapeDtypeStruct((4,), jnp.float32))

    assert ahead.Ahead(plan).wait() == 1
    with pytest.raises(TypeError):
        broken(jnp.zeros((4, 4)))
    assert ahead.Ahead(lambda early: 1 / 0).wait() == 0  # A plan that raises: nothing compiled.


def test_no_plan_starts_no_thread():
    before = {t.name for t in threading.enumerate()}
    early = ahead.Ahead(None)
    assert early.wait() == 0
    assert not any(t.name.startswith("jaxdigits-ahead") for t in threading.enumerate()
                   if t.name not in before)
