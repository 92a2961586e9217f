"""CPU-fast formulations of the CNN's layers, with the same math as the plain ones.

Measured on XLA's CPU backend (BUILD_NOTES.md), the seed CNN's layers lower badly in
two places:

- 2x2 max pooling. `lax.reduce_window` is fine forward, but its gradient is a select-and-scatter,
  which the CPU backend expands into a variadic reduce-window carrying four int32 index arrays
  the size of the activations, then a scatter into a zeroed buffer: more time than the
  convolutions. `max_pool_2x2` reshapes instead ([b, h/2, 2, w/2, 2, c], a max over the two small
  axes) and its gradient routes each window's cotangent to the first maximal element in
  row-major order, exactly what select-and-scatter does (ties included), in elementwise code
  XLA fuses.
- The first layer (one input channel): XLA computes its kernel gradient as a convolution with
  the batch as features, at a few GFLOP/s, and its bias, ReLU and pooling are elementwise passes
  over the largest activation of the net, forward and backward. `conv_relu_pool` does the
  convolution, bias, ReLU and pooling as one matmul and one pass, and the kernel gradient as one
  more matmul.

Measured and rejected (experiments/, BUILD_NOTES.md): im2col for the second convolution, in
any of four arrangements, forward or for either gradient; XLA's own convolutions win there.

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


def _windows(x, k):
    """The (k+1)x(k+1) windows, stride 2, of x padded for a SAME kxk convolution.

    [b, h, w, cin] -> [b, h // 2, w // 2, (k+1)^2 * cin]: one 2x2 pooling window of the
    convolution's output is computed from one such window of its input.
    """
    b, h, w, cin = x.shape
    ho, wo, p = h // 2, w // 2, k // 2
    xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    taps = [xp[:, a:a + 2 * ho - 1:2, c:c + 2 * wo - 1:2, :] for a in range(k + 1)
            for c in range(k + 1)]
    return jnp.concatenate(taps, axis=-1)


def _quadrant_kernel(kernel):
    """[k, k, cin, cout] -> [(k+1)^2 * cin, 4 * cout]: the kernel placed at each of the four
    offsets of a 2x2 window (row-major), zero elsewhere, to multiply `_windows`."""
    k, _, cin, cout = kernel.shape
    placed = [jnp.pad(kernel, ((qy, 1 - qy), (qx, 1 - qx), (0, 0), (0, 0)))
              for qy in (0, 1) for qx in (0, 1)]
    return jnp.stack(placed, axis=3).reshape((k + 1) ** 2 * cin, 4 * cout)


@jax.custom_vjp
def conv_relu_pool(x, kernel, bias):
    """`max_pool_2x2(relu(conv(x, kernel) + bias))` for a SAME, stride-1, odd kxk NHWC/HWIO kernel.

    Computed as one matmul: the (k+1)x(k+1) input window under each pooling window times the
    kernel placed at its four offsets gives the four convolution outputs of that window, which
    are pooled before the bias and ReLU (both monotone, so the value is the same). Nothing of
    the full-size activation is written but that matmul's output; the gradient sends each
    window's cotangent to its first maximal output (as select-and-scatter does) and gets the
    kernel's gradient as one more matmul. Meant for the first layer: the matmul does (k+1)^2 / k^2
    the multiply-adds of the convolution (1.44x for 5x5), cheap only where cin is small.
    """
    return _crp_fwd(x, kernel, bias)[0]


def _crp_fwd(x, kernel, bias):
    k, _, cin, cout = kernel.shape
    b, h, w, _ = x.shape
    windows = _windows(x, k)
    z = (windows.reshape(-1, windows.shape[-1]) @ _quadrant_kernel(kernel)).reshape(-1, 4, cout)
    first_max = jnp.argmax(z, axis=1).astype(jnp.int8)  # [n, cout]: which of the four
    out = jnp.maximum(z.max(axis=1) + bias, 0.0)
    return out.reshape(b, h // 2, w // 2, cout), (x, windows, first_max, out, kernel)


def _crp_bwd(res, g):
    x, windows, first_max, out, kernel = res
    k, _, cin, cout = kernel.shape
    g = jnp.where(out > 0, g.reshape(out.shape), 0.0)  # Through the ReLU: [n, cout]
    dz = jnp.stack([jnp.where(first_max == q, g, 0.0) for q in range(4)], axis=1)
    dz = dz.reshape(-1, 4 * cout)  # Through the pooling.
    dw = (windows.reshape(dz.shape[0], -1).T @ dz).reshape(k + 1, k + 1, cin, 4, cout)
    dkernel = sum(dw[qy:qy + k, qx:qx + k, :, 2 * qy + qx] for qy in (0, 1) for qx in (0, 1))
    # The input's gradient (XLA drops it for the first layer, whose input is the data).
    _, windows_vjp = jax.vjp(lambda x_: _windows(x_, k), x)
    dx = windows_vjp((dz @ _quadrant_kernel(kernel).T).reshape(windows.shape))[0]
    return dx, dkernel, g.sum(axis=0)


conv_relu_pool.defvjp(_crp_fwd, _crp_bwd)
