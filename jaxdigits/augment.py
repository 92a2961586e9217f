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


def rotate_scale(images, angles, scales):
    """Rotates image i counter-clockwise by angles[i] radians and scales it by scales[i] about its
    centre: bilinear interpolation, zeros outside. images: [b, H, W, C] -> float32 [b, H, W, C]."""
    b, h, w, c = images.shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32) - cy,
                          jnp.arange(w, dtype=jnp.float32) - cx, indexing="ij")  # [H, W] each

    def one(image, angle, scale):  # image [H, W, C]
        cos, sin = jnp.cos(angle) / scale, jnp.sin(angle) / scale
        # Output pixel (y, x) takes the input at the inverse rotation and scaling of (y, x).
        src = [cos * ys + sin * xs + cy, -sin * ys + cos * xs + cx]  # rows, columns
        channel = lambda ch: jax.scipy.ndimage.map_coordinates(
            image[..., ch].astype(jnp.float32), src, order=1, mode="constant", cval=0.0)
        return jnp.stack([channel(ch) for ch in range(c)], axis=-1)

    return jax.vmap(one)(images, angles, scales)


def random_rotate_scale(key, images, max_degrees: float, max_scale: float):
    """`rotate_scale` by a random angle in [-max_degrees, max_degrees] degrees and a random
    factor in [1 - max_scale, 1 + max_scale], drawn per image."""
    angle_key, scale_key = jax.random.split(key)
    b = images.shape[0]
    angles = jnp.deg2rad(jax.random.uniform(angle_key, (b,), minval=-max_degrees, maxval=max_degrees))
    scales = jax.random.uniform(scale_key, (b,), minval=1 - max_scale, maxval=1 + max_scale)
    return rotate_scale(images, angles, scales)
