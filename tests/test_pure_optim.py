"""The from-scratch optimizers equal optax's own, step for step; heavy ball's two forms agree."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdigits import optimizers, pure_optim
from jaxdigits.config import Config

STEPS = 300
SCHEDULE = optax.cosine_decay_schedule(0.05, STEPS)


def random_tree(key):
    k1, k2, k3 = jax.random.split(key, 3)
    return {"dense": {"w": jax.random.normal(k1, (7, 5)), "b": jax.random.normal(k2, (5,))},
            "scale": jax.random.normal(k3, ())}


PAIRS = {
    "sgd": (lambda lr: pure_optim.sgd(lr), lambda lr: optax.sgd(lr)),
    "momentum": (lambda lr: pure_optim.momentum(lr, 0.9), lambda lr: optax.sgd(lr, momentum=0.9)),
    "nesterov": (lambda lr: pure_optim.nesterov(lr, 0.8),
                 lambda lr: optax.sgd(lr, momentum=0.8, nesterov=True)),
    "rmsprop": (lambda lr: pure_optim.rmsprop(lr, 0.95, 1e-6), lambda lr: optax.rmsprop(lr, 0.95, 1e-6)),
    "adam": (lambda lr: pure_optim.adam(lr, 0.8, 0.99, 1e-7), lambda lr: optax.adam(lr, 0.8, 0.99, 1e-7)),
    "adamw": (lambda lr: pure_optim.adamw(lr, weight_decay=1e-2),
              lambda lr: optax.adamw(lr, weight_decay=1e-2)),
}


@pytest.mark.parametrize("name", PAIRS)
def test_equals_optax_on_random_pytrees(name):
    """Both run STEPS steps on fresh random gradients, on a cosine schedule (the constant rate is
    its special case); updates and params agree at rtol 1e-6."""
    ours, ref = (make(SCHEDULE) for make in PAIRS[name])

    def run(tx):
        def step(carry, key):
            p, s = carry
            updates, s = tx.update(random_tree(key), s, p)
            return (optax.apply_updates(p, updates), s), updates
        params = random_tree(jax.random.key(0))
        keys = jax.random.split(jax.random.key(1), STEPS)
        return jax.lax.scan(step, (params, tx.init(params)), keys)

    # Both runs in one program: one compile instead of two (and of the eager ops around them).
    ((p1, _), u1), ((p2, _), u2) = jax.jit(lambda: (run(ours), run(ref)))()
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), u1, u2)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), p1, p2)


def test_heavy_ball_seed_form_equals_velocity_form():
    """x_{k+1} = x_k - a g_k + eta (x_k - x_{k-1}) traces the same path as v <- eta v + g, x -= a v."""
    a_matrix = jax.random.normal(jax.random.key(2), (6, 6))
    hessian = a_matrix @ a_matrix.T / 6 + jnp.eye(6)
    loss = lambda p: 0.5 * p["x"] @ hessian @ p["x"] + jnp.sum(jnp.cos(p["y"]))
    params = {"x": jnp.ones(6), "y": jnp.linspace(-1.0, 1.0, 4)}

    def path(tx):
        def step(carry, _):
            p, s = carry
            updates, s = tx.update(jax.grad(loss)(p), s, p)
            p = optax.apply_updates(p, updates)
            return (p, s), p
        return jax.lax.scan(step, (params, tx.init(params)), length=STEPS)[1]

    seed, velocity = jax.jit(lambda: (path(pure_optim.heavy_ball(0.05, 0.9)),
                                      path(pure_optim.momentum(0.05, 0.9))))()  # One program.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), seed, velocity)
    assert float(loss(jax.tree.map(lambda v: v[-1], seed))) < float(loss(params)) - 1.0


def test_scratch_optimizers_are_trainable_by_name():
    for name in ["sgd", "momentum", "heavy_ball", "nesterov", "rmsprop", "adam", "adamw"]:
        tx = optimizers.make_optimizer(Config(optimizer=f"scratch_{name}", grad_clip=1.0), 100)
        params = {"w": jnp.ones(3)}
        updates, _ = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
        assert updates["w"].shape == (3,)


# What each scratch_* name must train like, built from the same config (optax's own).
SCRATCH_REFERENCES = {
    "scratch_sgd": lambda lr, c: optax.sgd(lr),
    "scratch_momentum": lambda lr, c: optax.sgd(lr, momentum=c.momentum),
    "scratch_heavy_ball": lambda lr, c: optax.sgd(lr, momentum=c.momentum),
    "scratch_nesterov": lambda lr, c: optax.sgd(lr, momentum=c.momentum, nesterov=True),
    "scratch_rmsprop": lambda lr, c: optax.rmsprop(lr),
    "scratch_adam": lambda lr, c: optax.adam(lr, b1=c.b1, b2=c.b2),
    "scratch_adamw": lambda lr, c: optax.adamw(lr, b1=c.b1, b2=c.b2, weight_decay=c.weight_decay),
}


@pytest.mark.parametrize("name", sorted(SCRATCH_REFERENCES))
def test_each_scratch_name_trains_like_its_optax_twin(name):
    """A name mapped to the wrong optimizer, or one that ignores the config's hyperparameters
    (set away from their defaults here), takes another path and fails."""
    assert {n for n in optimizers.OPTIMIZERS if n.startswith("scratch_")} == set(SCRATCH_REFERENCES)
    config = Config(optimizer=name, learning_rate=0.05, schedule="constant", momentum=0.7,
                    b1=0.8, b2=0.99, weight_decay=0.05)
    a_matrix = jax.random.normal(jax.random.key(3), (5, 5))
    loss = lambda p: 0.5 * p["x"] @ (a_matrix @ a_matrix.T / 5 + jnp.eye(5)) @ p["x"]

    def path(tx):
        def step(carry, _):
            p, s = carry
            updates, s = tx.update(jax.grad(loss)(p), s, p)
            p = optax.apply_updates(p, updates)
            return (p, s), p["x"]
        p = {"x": jnp.linspace(-1.0, 2.0, 5)}
        return jax.lax.scan(step, (p, tx.init(p)), length=30)[1]

    ours, reference = jax.jit(lambda: (  # One program for both paths.
        path(optimizers.make_optimizer(config, steps_per_epoch=30)),
        path(SCRATCH_REFERENCES[name](0.05, config))))()
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)
