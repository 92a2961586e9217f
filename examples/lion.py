"""Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"), as a plug-in."""
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class LionState(NamedTuple):
    count: jax.Array  # int32 [], steps taken (the schedule's argument)
    mu: Any  # momentum, like params


def lion(learning_rate, b1: float = 0.9, b2: float = 0.99, weight_decay: float = 0.0):
    """x <- x - a_k * (sign(b1 * m + (1 - b1) * g) + weight_decay * x);  m <- b2 * m + (1 - b2) * g."""
    def init_fn(params):
        return LionState(jnp.zeros([], jnp.int32), jax.tree.map(jnp.zeros_like, params))

    def update_fn(grads, state, params):
        a = learning_rate(state.count) if callable(learning_rate) else learning_rate
        step = lambda g, m, x: -jnp.asarray(a, x.dtype) * (jnp.sign(b1 * m + (1 - b1) * g) + weight_decay * x)
        updates = jax.tree.map(step, grads, state.mu, params)
        mu = jax.tree.map(lambda g, m: b2 * m + (1 - b2) * g, grads, state.mu)
        return updates, LionState(state.count + 1, mu)

    return optax.chain(optax.GradientTransformation(init_fn, update_fn))  # chain: accepts extra kwargs
