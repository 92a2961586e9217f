"""Losses as pure functions."""

import jax
import jax.numpy as jnp
import optax


def cross_entropy(*, logits, labels):
    """Softmax cross-entropy per example. logits [batch, classes] float, labels [batch] int."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)  # [batch]


def l2_penalty(params) -> jax.Array:
    """Half the squared L2 norm of every weight matrix and kernel (biases are not decayed)."""
    return 0.5 * sum(jnp.sum(jnp.square(w)) for w in jax.tree.leaves(params) if w.ndim > 1)
