"""Data augmentation on the device, inside the compiled train step."""

import jax
import jax.numpy as jnp


def random_shift(key, images, max_shift: int):
    """Translates each image by a random whole number of pixels in [-max_shift, max_shift] on
    each axis, filling with zeros (the background). images: [b, H, W, C], any dtype."""
    b, h, w, c = images.shape
    pad = ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0))
    padded = jnp.pad(images, pad)  # [b, H + 2s, W + 2s, C]
    offsets = jax.random.randint(key, (b, 2), 0, 2 * max_shift + 1)  # [b, 2]
    crop = lambda image, o: jax.lax.dynamic_slice(image, (o[0], o[1], 0), (h, w, c))
    return jax.vmap(crop)(padded, offsets)
