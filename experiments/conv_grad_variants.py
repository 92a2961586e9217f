"""Kernel- and input-gradient formulations of one conv layer (conv1 or conv2), alternating.

    python experiments/conv_grad_variants.py conv2

dw_*: the kernel gradient by XLA (lax), 25 slice matmuls, 5 row-patch matmuls, full im2col;
dx_*: the input gradient by XLA and as a forward convolution with the flipped kernel.
"""
import time, statistics, os, sys, jax, jax.numpy as jnp
from jax import lax
def timeit(fn, *a, n=3):
    jax.block_until_ready(fn(*a)); t=time.perf_counter()
    for _ in range(n): jax.block_until_ready(fn(*a))
    return (time.perf_counter()-t)/n
layer = sys.argv[1]
H, cin, cout = (28, 1, 32) if layer == 'conv1' else (14, 32, 64)
x = jax.random.normal(jax.random.key(0), (128, H, H, cin)); dy = jax.random.normal(jax.random.key(1), (128, H, H, cout)); w = jax.random.normal(jax.random.key(2), (5,5,cin,cout))
conv = lambda x, k: lax.conv_general_dilated(x, k, (1,1), 'SAME', dimension_numbers=('NHWC','HWIO','NHWC'))
def dw_lax(x, dy): return jax.vjp(lambda k: conv(x, k), w)[1](dy)[0]
pad = lambda x: jnp.pad(x, ((0,0),(2,2),(2,2),(0,0)))
def dw_25(x, dy):
    xp = pad(x)
    return jnp.stack([jnp.stack([jnp.einsum('bhwc,bhwo->co', xp[:, i:i+H, j:j+H], dy) for j in range(5)]) for i in range(5)])
def dw_25t(x, dy):  # dy as [cout, N] once, each slice [N, cin]
    xp = pad(x); d2 = dy.reshape(-1, cout)
    return jnp.stack([jnp.stack([xp[:, i:i+H, j:j+H].reshape(-1, cin).T @ d2 for j in range(5)]) for i in range(5)])
def dw_rows(x, dy):
    xp = pad(x)
    rows = jnp.concatenate([xp[:, :, j:j+H] for j in range(5)], axis=-1)  # [b, H+4, W, 5cin]
    return jnp.stack([jnp.einsum('bhwk,bhwo->ko', rows[:, i:i+H], dy).reshape(5, cin, cout) for i in range(5)])
def dw_im2col(x, dy):
    xp = pad(x)
    p = jnp.concatenate([xp[:, i:i+H, j:j+H] for i in range(5) for j in range(5)], axis=-1)
    return (p.reshape(-1, 25*cin).T @ dy.reshape(-1, cout)).reshape(5,5,cin,cout)
def dx_lax(x, dy): return jax.vjp(lambda x: conv(x, w), x)[1](dy)[0]
def dx_fwdconv(x, dy): return conv(dy, jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2))
def fwd(x, dy): return conv(x, w)
fns = dict(dw_lax=dw_lax, dw_25=dw_25, dw_25t=dw_25t, dw_rows=dw_rows, dw_im2col=dw_im2col, dx_lax=dx_lax, dx_fwdconv=dx_fwdconv, fwd=fwd)
ref = dw_lax(x, dy)
for k in list(fns):
    fns[k] = jax.jit(fns[k])
    if k.startswith('dw'): print(k, 'maxerr', float(jnp.abs(fns[k](x, dy) - ref).max() / jnp.abs(ref).max()))
print('dx', float(jnp.abs(fns['dx_lax'](x,dy)-fns['dx_fwdconv'](x,dy)).max()))
res = {k: [] for k in fns}
for r in range(5):
    for k, f in fns.items(): res[k].append(timeit(f, x, dy))
print(os.popen('uptime').read().strip())
for k, v in res.items(): print(f"{layer} {k:12s} median {statistics.median(v)*1e3:7.2f} ms  min {min(v)*1e3:7.2f}")
