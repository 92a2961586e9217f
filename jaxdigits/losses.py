"""Losses as pure functions."""

import jax
import jax.numpy as jnp
import optax


def cross_entropy(*, logits, labels, smoothing: float = 0.0):
    """Softmax cross-entropy per example. logits [batch, classes] float, labels [batch] int;
    `smoothing` > 0: against the labels smoothed by that much (optax.smooth_labels)."""
    if not smoothing:
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels)  # [batch]
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), smoothing)
    return optax.softmax_cross_entropy(logits, targets)  # [batch]


def l2_penalty(params) -> jax.Array:
    """Half the squared L2 norm of every weight matrix and kernel (biases are not decayed)."""
    return 0.5 * sum(jnp.sum(jnp.square(w)) for w in jax.tree.leaves(params) if w.ndim > 1)
