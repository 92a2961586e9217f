"""Test-time augmentation by shifts and mirroring: a prediction averaged over views of each image.

The views are the image shifted by every whole-pixel offset in [-s, s] on each axis, (2s + 1)^2
of them (the unshifted image among them), filled with the background (zero); with `flip` the
same shifts of its left-right mirror image too, for mirror-symmetric classes (clothes; digits are
not). The prediction is the mean of the views' softmax probabilities, returned as its logarithm
so that it is scored like logits (argmax, cross-entropy).
"""

import jax
import jax.numpy as jnp


def offsets(max_shift: int) -> list[tuple[int, int]]:
    """Every (rows, columns) shift of the views, (0, 0) first."""
    grid = [(dy, dx) for dy in range(-max_shift, max_shift + 1)
            for dx in range(-max_shift, max_shift + 1)]
    return sorted(grid, key=lambda o: o != (0, 0))


def shift(images, dy: int, dx: int):
    """Images [b, H, W, C] moved down by `dy` and right by `dx` pixels, zeros where they leave."""
    _, h, w, _ = images.shape
    s = max(abs(dy), abs(dx))
    padded = jnp.pad(images, ((0, 0), (s, s), (s, s), (0, 0)))
    return padded[:, s - dy:s - dy + h, s - dx:s - dx + w, :]


def predict(logits_fn, images, max_shift: int, flip: bool = False):
    """log(mean over the views of softmax(logits_fn(view))) [b, classes]; `logits_fn` itself where
    `max_shift` is 0 and `flip` off. `logits_fn` takes raw images of `images`' dtype (it
    normalises them)."""
    if not max_shift and not flip:
        return logits_fn(images)
    sources = [images, images[:, :, ::-1]] if flip else [images]
    views = jnp.stack([shift(x, dy, dx) for x in sources
                       for dy, dx in offsets(max_shift)])  # [V, b, H, W, C]
    probs = jax.lax.map(lambda view: jax.nn.softmax(logits_fn(view), -1), views)  # [V, b, classes]
    return jnp.log(jnp.maximum(probs.mean(0), 1e-30))  # [b, classes]
