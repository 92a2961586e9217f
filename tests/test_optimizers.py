"""Optimizers and schedules by name."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdigits import optimizers
from jaxdigits.config import Config
from jaxdigits.errors import UserError


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw", "nadamw"])
def test_each_optimizer_minimises_a_quadratic(name):
    config = Config(optimizer=name, learning_rate=0.05, schedule="constant", epochs=1)
    tx = optimizers.make_optimizer(config, steps_per_epoch=200)
    target = jnp.array([1.0, -2.0, 3.0])
    params = {"w": jnp.zeros(3)}
    state = tx.init(params)
    loss = lambda p: jnp.sum((p["w"] - target) ** 2)

    def step(_, carry):
        params, state = carry
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        return optax.apply_updates(params, updates), state

    params, _ = jax.jit(lambda c: jax.lax.fori_loop(0, 200, step, c))((params, state))
    np.testing.assert_allclose(params["w"], target, rtol=3e-2, atol=3e-2)


def test_momentum_is_optax_sgd_with_momentum():
    config = Config(optimizer="momentum", learning_rate=0.1, momentum=0.9, schedule="constant")
    ours, ref = optimizers.make_optimizer(config, 10), optax.sgd(0.1, momentum=0.9)
    params = {"w": jnp.arange(3.0)}
    g = {"w": jnp.array([0.5, -1.0, 2.0])}
    s1, s2 = ours.init(params), ref.init(params)
    for _ in range(5):
        u1, s1 = ours.update(g, s1, params)
        u2, s2 = ref.update(g, s2, params)
        np.testing.assert_allclose(u1["w"], u2["w"], rtol=1e-6)


def test_schedules_have_their_shape():
    warm = optimizers.make_schedule("warmup_cosine", 1.0, total_steps=100, warmup_steps=10)
    assert float(warm(0)) == 0.0 and float(warm(10)) == pytest.approx(1.0)
    assert float(warm(100)) == pytest.approx(0.0, abs=1e-6)
    cos = optimizers.make_schedule("cosine", 1.0, 100, 0)
    assert float(cos(0)) == 1.0 and float(cos(50)) == pytest.approx(0.5, rel=1e-5)
    assert float(optimizers.make_schedule("constant", 0.3, 100, 0)(77)) == pytest.approx(0.3)
    one = optimizers.make_schedule("one_cycle", 1.0, 100, 0)
    assert float(one(30)) == pytest.approx(1.0, rel=1e-3) and float(one(0)) < 0.1


def test_unknown_names_list_the_choices():
    with pytest.raises(UserError, match="sgd, momentum, nesterov, rmsprop, adam, adamw"):
        optimizers.make_optimizer(Config(optimizer="lbfgs"), 10)
    with pytest.raises(UserError, match="constant, cosine, warmup_cosine, one_cycle"):
        optimizers.make_optimizer(Config(schedule="step"), 10)


def test_registry_is_open(monkeypatch):
    monkeypatch.setitem(optimizers.OPTIMIZERS, "lion", lambda lr, cfg: optax.lion(lr))
    tx = optimizers.make_optimizer(dataclasses.replace(Config(), optimizer="lion"), 10)
    assert isinstance(tx, optax.GradientTransformation)


def test_only_the_shipped_optimizers_skip_the_contract_check(monkeypatch):
    """Runs skip `contract.verify` for this package's own entries (each is tested against the
    contract), never for a registration, even one that replaces a shipped name."""
    assert optimizers.is_shipped("adam") and optimizers.is_shipped("scratch_sgd")
    assert not optimizers.is_shipped("no_such_optimizer")
    monkeypatch.setitem(optimizers.OPTIMIZERS, "lion", lambda lr, cfg: optax.lion(lr))
    monkeypatch.setitem(optimizers.OPTIMIZERS, "adam", lambda lr, cfg: optax.lion(lr))
    assert not optimizers.is_shipped("lion") and not optimizers.is_shipped("adam")


def _abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def test_verify_names_each_fault_in_one_sentence():
    """contract.verify: what training calls before it writes anything (traced, not run)."""
    from jaxdigits import contract

    params = _abstract({"w": jnp.zeros((4, 3)), "b": jnp.zeros(3)})
    contract.verify(optax.adam(1e-3), params, "adam")  # Passes: returns None.
    sgd_like = lambda update, init=lambda p: optax.EmptyState(): optax.GradientTransformation(init, update)

    def raises(grads, state, params=None):
        raise ValueError("boom")

    def growing(grads, state, params=None):
        return grads, jnp.append(state, 1.0)

    cases = [
        (optax.GradientTransformation(lambda p: 1 / 0, optax.sgd(1.0).update),
         "x's init raised ZeroDivisionError: division by zero."),
        (sgd_like(raises), "x's update raised ValueError: boom."),
        (sgd_like(lambda g, s, p=None: ({"w": g["w"]}, s)), "the updates' tree"),
        (sgd_like(lambda g, s, p=None: (jax.tree.map(lambda x: x[..., :1], g), s)),
         "updates['b'] is float32[1] but the parameter is float32[3]"),
        (sgd_like(growing, lambda p: jnp.zeros(0)),
         "x's state changes after one update (state went from float32[0] to float32[1]), so "
         "every training step would compile again"),
    ]
    for tx, message in cases:
        with pytest.raises(UserError) as error:
            contract.verify(tx, params, "x")
        assert message in str(error.value) and "\n" not in str(error.value)
