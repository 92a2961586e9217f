"""CPU-fast formulations of the CNN's layers, with the same math as the plain ones.

Measured on XLA's CPU backend (BUILD_NOTES.md, issue 6), two layers of the seed CNN lower badly:

- 2x2 max pooling. `lax.reduce_window` is fine forward, but its gradient is a select-and-scatter,
  which the CPU backend expands into a variadic reduce-window carrying four int32 index arrays
  the size of the activations, then a scatter into a zeroed buffer: more time than the
  convolutions. `max_pool_2x2` reshapes instead ([b, h/2, 2, w/2, 2, c], a max over the two small
  axes) and its gradient routes each window's cotangent to the first maximal element in
  row-major order, exactly what select-and-scatter does (ties included), in elementwise code
  XLA fuses.
- The first convolution's kernel gradient (one input channel). XLA computes it as a
  convolution with the batch as features, at a few GFLOP/s. `conv_patch_grad` keeps XLA's
  forward and input gradient and computes the kernel gradient as one
  [25, b*h*w] x [b*h*w, out] matmul over the 25 shifted copies of the input.

Measured and rejected (experiments/, BUILD_NOTES.md): im2col for the second convolution, in
any of four arrangements, forward or for either gradient; XLA's own YNNPACK convolutions win.

Both are plain jax.numpy, so they run on every backend; `models.CNN` uses them only where they
were measured to help (the CPU backend, `jaxdigits.models.default_cpu_layers`).
"""

import jax
import jax.numpy as jnp


def max_pool_2x2(x):
    """2x2 max pooling, stride 2, VALID: [b, h, w, c] -> [b, h // 2, w // 2, c].

    Equals `flax.linen.max_pool(x, (2, 2), strides=(2, 2))`, value and gradient.
    """
    b, h, w, c = x.shape
    return _pool_even(x[:, :h - h % 2, :w - w % 2])  # An odd last row or column is dropped.


@jax.custom_vjp
def _pool_even(x):
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _corners(x):
    """The four elements of each 2x2 window, in row-major order, each [b, h/2, w/2, c]."""
    return x[:, 0::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 0::2], x[:, 1::2, 1::2]


def _pool_fwd(x):
    return _pool_even(x), x


def _pool_bwd(x, g):
    """Sends g to the first maximal element of each window (as XLA's select-and-scatter does)."""
    a, b_, c, d = _corners(x)
    m = jnp.maximum(jnp.maximum(a, b_), jnp.maximum(c, d))
    zero = jnp.zeros_like(g)
    take_a = a == m
    take_b = ~take_a & (b_ == m)
    take_c = ~take_a & ~take_b & (c == m)
    take_d = ~take_a & ~take_b & ~take_c
    top = jnp.stack([jnp.where(take_a, g, zero), jnp.where(take_b, g, zero)], axis=3)  # [b, h/2, w/2, 2, c]
    bottom = jnp.stack([jnp.where(take_c, g, zero), jnp.where(take_d, g, zero)], axis=3)
    bsz, hh, ww, ch = g.shape
    return (jnp.stack([top, bottom], axis=2).reshape(bsz, 2 * hh, 2 * ww, ch),)  # [b, h, w, c]


_pool_even.defvjp(_pool_fwd, _pool_bwd)


def _conv(x, kernel):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


@jax.custom_vjp
def conv_patch_grad(x, kernel):
    """SAME, stride-1 NHWC/HWIO convolution whose kernel gradient is one matmul over patches.

    Forward and input gradient are XLA's own convolutions; the kernel gradient is
    [kh*kw, b*h*w] patches x [b*h*w, cout] for each input channel, which beats XLA's
    kernel-gradient convolution where `cin` is small (the first layer, cin = 1).
    """
    return _conv(x, kernel)


def _conv_fwd(x, kernel):
    return _conv(x, kernel), (x, kernel)


def _conv_bwd(res, g):
    x, kernel = res
    kh, kw, cin, cout = kernel.shape
    b, h, w, _ = x.shape
    _, input_vjp = jax.vjp(lambda x_: _conv(x_, kernel), x)
    xp = jnp.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    patches = jnp.stack([xp[:, i:i + h, j:j + w, :] for i in range(kh) for j in range(kw)])
    patches = patches.reshape(kh * kw, b * h * w, cin)  # [taps, n, cin]
    dk = jnp.einsum("tnc,no->tco", patches, g.reshape(b * h * w, cout))  # [taps, cin, cout]
    return input_vjp(g)[0], dk.reshape(kh, kw, cin, cout)


conv_patch_grad.defvjp(_conv_fwd, _conv_bwd)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None):
    """`lax.conv_general_dilated`'s signature (what flax's `nn.Conv` calls), routing the plain
    SAME, stride-1, NHWC case with one input channel to `conv_patch_grad`."""
    plain = (tuple(window_strides) == (1, 1) and padding == "SAME" and lhs.shape[-1] == 1
             and not any(d not in (None, (1, 1)) for d in (lhs_dilation, rhs_dilation))
             and feature_group_count == 1 and precision is None and rhs.shape[0] % 2 == 1
             and rhs.shape[1] % 2 == 1 and dimension_numbers == jax.lax.conv_dimension_numbers(
                 lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC")))
    if plain:
        return conv_patch_grad(lhs, rhs)
    return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                        rhs_dilation, dimension_numbers, feature_group_count,
                                        precision=precision)
