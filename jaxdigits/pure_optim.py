"""Optimizers written from scratch as pure functions, in optax's protocol.

Each transform is a state `NamedTuple` plus a factory returning
`optax.GradientTransformation(init_fn, update_fn)`; each named optimizer only `optax.chain`s
transforms, so it takes extra keyword arguments to `update` and composes with the rest of optax.
Updates are what `optax.apply_updates` adds to the parameters (already negated). They are tested
step for step against optax's own (tests/test_pure_optim.py) and trainable by name:
`--optimizer=scratch_adam` (see `jaxdigits.optimizers.OPTIMIZERS`).

Notation: g the gradient, a the learning rate (a float or a schedule a_k of the step k),
x the parameters.
"""

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxdigits.classic import ema_update

ScalarOrSchedule = float | jax.Array | Callable[[jax.Array], jax.Array]


def _increment(count):
    """count + 1, saturating at the int32 maximum instead of wrapping to a negative step."""
    return jnp.where(count < jnp.iinfo(jnp.int32).max, count + 1, count)


class ScaleByLearningRateState(NamedTuple):
    count: jax.Array  # int32 [], steps taken (the schedule's argument)


def scale_by_learning_rate(learning_rate: ScalarOrSchedule) -> optax.GradientTransformation:
    """u <- -a_k * u; `a` a float or a schedule of the step k = 0, 1, ..."""

    def init_fn(params):
        del params  # Unused.
        return ScaleByLearningRateState(jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        del params  # Unused.
        a = learning_rate(state.count) if callable(learning_rate) else learning_rate
        # The step size takes the dtype of each update, so bfloat16 parameters stay bfloat16.
        updates = jax.tree.map(lambda u: -jnp.asarray(a, u.dtype) * u, updates)
        return updates, ScaleByLearningRateState(_increment(state.count))

    return optax.GradientTransformation(init_fn, update_fn)


class ScaleByMomentumState(NamedTuple):
    velocity: Any  # like params


def scale_by_momentum(decay: float = 0.9, nesterov: bool = False) -> optax.GradientTransformation:
    """Velocity form of heavy-ball momentum: v <- decay * v + g; emits v.

    With `nesterov`, emits g + decay * v instead: the gradient step is taken from the point the
    momentum is about to carry the parameters to (Sutskever et al. 2013's reformulation).
    """

    def init_fn(params):
        return ScaleByMomentumState(jax.tree.map(jnp.zeros_like, params))

    def update_fn(updates, state, params=None):
        del params  # Unused.
        velocity = jax.tree.map(lambda g, v: g + decay * v, updates, state.velocity)
        if nesterov:
            updates = jax.tree.map(lambda g, v: g + decay * v, updates, velocity)
        else:
            updates = velocity
        return updates, ScaleByMomentumState(velocity)

    return optax.GradientTransformation(init_fn, update_fn)


class HeavyBallState(NamedTuple):
    count: jax.Array  # int32 []
    previous: Any  # x_{k-1}, like params


def heavy_ball(learning_rate: ScalarOrSchedule, momentum: float = 0.9) -> optax.GradientTransformation:
    """Polyak's heavy ball in its original form: x_{k+1} = x_k - a_k * g_k + eta * (x_k - x_{k-1}).

    The state remembers the previous parameters (x_{-1} = x_0), so `update` needs `params`.
    With a constant learning rate this is the velocity form `momentum` exactly (v_k = g_k +
    eta * v_{k-1}, x_{k+1} = x_k - a * v_k), since x_k - x_{k-1} = -a * v_{k-1}.
    """

    def init_fn(params):
        return HeavyBallState(jnp.zeros([], jnp.int32), params)

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("heavy_ball needs params: call update(grads, state, params).")
        a = learning_rate(state.count) if callable(learning_rate) else learning_rate
        updates = jax.tree.map(lambda g, x, prev: -jnp.asarray(a, g.dtype) * g + momentum * (x - prev),
                               updates, params, state.previous)
        return updates, HeavyBallState(_increment(state.count), params)

    return optax.chain(optax.GradientTransformation(init_fn, update_fn))


class ScaleByRmsState(NamedTuple):
    nu: Any  # EMA of g**2, like params


def scale_by_rms(decay: float = 0.9, eps: float = 1e-8) -> optax.GradientTransformation:
    """RMSProp's scaling: nu <- decay * nu + (1 - decay) * g**2;  emits g / sqrt(nu + eps)."""

    def init_fn(params):
        return ScaleByRmsState(jax.tree.map(jnp.zeros_like, params))

    def update_fn(updates, state, params=None):
        del params  # Unused.
        nu = jax.tree.map(lambda g, n: ema_update(n, g * g, decay), updates, state.nu)
        updates = jax.tree.map(lambda g, n: g * jax.lax.rsqrt(n + eps), updates, nu)
        return updates, ScaleByRmsState(nu)

    return optax.GradientTransformation(init_fn, update_fn)


class ScaleByAdamState(NamedTuple):
    count: jax.Array  # int32 [], steps taken
    mu: Any  # EMA of g, like params
    nu: Any  # EMA of g**2, like params


def scale_by_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                  eps_root: float = 0.0) -> optax.GradientTransformation:
    """Adam's scaling (Kingma & Ba 2015), with bias correction at step t = 1, 2, ...:

        mu <- b1 * mu + (1 - b1) * g        mu_hat = mu / (1 - b1**t)
        nu <- b2 * nu + (1 - b2) * g**2     nu_hat = nu / (1 - b2**t)
        emits mu_hat / (sqrt(nu_hat + eps_root) + eps)

    Both moments start at zero, so without the correction the first steps would be too small.
    """

    def init_fn(params):
        zeros = lambda: jax.tree.map(jnp.zeros_like, params)
        return ScaleByAdamState(jnp.zeros([], jnp.int32), zeros(), zeros())

    def update_fn(updates, state, params=None):
        del params  # Unused.
        mu = jax.tree.map(lambda g, m: ema_update(m, g, b1), updates, state.mu)
        nu = jax.tree.map(lambda g, n: ema_update(n, g * g, b2), updates, state.nu)
        t = _increment(state.count)
        # Corrections in float32 (b2**t rounds to 1 in bfloat16), then divided in the moment's dtype.
        c1, c2 = 1 - b1 ** t.astype(jnp.float32), 1 - b2 ** t.astype(jnp.float32)
        updates = jax.tree.map(
            lambda m, n: (m / c1.astype(m.dtype)) / (jnp.sqrt(n / c2.astype(n.dtype) + eps_root) + eps),
            mu, nu)
        return updates, ScaleByAdamState(t, mu, nu)

    return optax.GradientTransformation(init_fn, update_fn)


def add_decayed_weights(weight_decay: float = 1e-4) -> optax.GradientTransformation:
    """u <- u + weight_decay * x: decoupled weight decay when placed before the learning rate."""

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("add_decayed_weights needs params: call update(grads, state, params).")
        return jax.tree.map(lambda u, x: u + weight_decay * x, updates, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


# Named optimizers: chains of the transforms above.

def sgd(learning_rate: ScalarOrSchedule) -> optax.GradientTransformation:
    """x <- x - a_k * g."""
    return optax.chain(scale_by_learning_rate(learning_rate))


def momentum(learning_rate: ScalarOrSchedule, decay: float = 0.9) -> optax.GradientTransformation:
    """Heavy ball, velocity form: v <- decay * v + g;  x <- x - a_k * v (as optax.sgd(momentum=))."""
    return optax.chain(scale_by_momentum(decay), scale_by_learning_rate(learning_rate))


def nesterov(learning_rate: ScalarOrSchedule, decay: float = 0.9) -> optax.GradientTransformation:
    """v <- decay * v + g;  x <- x - a_k * (g + decay * v)  (as optax.sgd(nesterov=True))."""
    return optax.chain(scale_by_momentum(decay, nesterov=True), scale_by_learning_rate(learning_rate))


def rmsprop(learning_rate: ScalarOrSchedule, decay: float = 0.9,
            eps: float = 1e-8) -> optax.GradientTransformation:
    """nu <- decay * nu + (1 - decay) * g**2;  x <- x - a_k * g / sqrt(nu + eps)  (as optax.rmsprop)."""
    return optax.chain(scale_by_rms(decay, eps), scale_by_learning_rate(learning_rate))


def adam(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
         eps: float = 1e-8) -> optax.GradientTransformation:
    """x <- x - a_k * mu_hat / (sqrt(nu_hat) + eps), see `scale_by_adam` (as optax.adam)."""
    return optax.chain(scale_by_adam(b1, b2, eps), scale_by_learning_rate(learning_rate))


def adamw(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
          weight_decay: float = 1e-4) -> optax.GradientTransformation:
    """x <- x - a_k * (mu_hat / (sqrt(nu_hat) + eps) + weight_decay * x)  (Loshchilov & Hutter 2019).

    The decay is not part of the gradient, so Adam's scaling does not shrink it (as optax.adamw).
    """
    return optax.chain(scale_by_adam(b1, b2, eps), add_decayed_weights(weight_decay),
                       scale_by_learning_rate(learning_rate))
