"""jaxdigits.fastconv against the plain layers, alternating: pooling forward+backward (both
pools of the seed CNN), the first conv forward, and its forward + kernel gradient.

    python experiments/fast_layers.py
"""
import time, statistics, os, jax, jax.numpy as jnp, flax.linen as nn
from jax import lax
from jaxdigits import fastconv
def timeit(fn, *a, n=5):
    jax.block_until_ready(fn(*a)); t=time.perf_counter()
    for _ in range(n): jax.block_until_ready(fn(*a))
    return (time.perf_counter()-t)/n
x1 = jax.random.normal(jax.random.key(0), (128, 28, 28, 32)); x2 = jax.random.normal(jax.random.key(0), (128, 14, 14, 64))
img = jax.random.normal(jax.random.key(0), (128, 28, 28, 1)); k1 = jax.random.normal(jax.random.key(1), (5,5,1,32))
pool_ref = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))
conv_ref = lambda x, k: lax.conv_general_dilated(x, k, (1,1), 'SAME', dimension_numbers=('NHWC','HWIO','NHWC'))
cases = {
 'pool1 ref': (jax.jit(jax.grad(lambda x: (pool_ref(x)**2).sum())), (x1,)),
 'pool1 fast': (jax.jit(jax.grad(lambda x: (fastconv.max_pool_2x2(x)**2).sum())), (x1,)),
 'pool2 ref': (jax.jit(jax.grad(lambda x: (pool_ref(x)**2).sum())), (x2,)),
 'pool2 fast': (jax.jit(jax.grad(lambda x: (fastconv.max_pool_2x2(x)**2).sum())), (x2,)),
 'conv1 ref fwd': (jax.jit(conv_ref), (img, k1)),
 'conv1 im2col fwd': (jax.jit(fastconv.conv_im2col), (img, k1)),
 'conv1 ref fwd+dW': (jax.jit(jax.grad(lambda k, x: (conv_ref(x, k)**2).sum())), (k1, img)),
 'conv1 im2col fwd+dW': (jax.jit(jax.grad(lambda k, x: (fastconv.conv_im2col(x, k)**2).sum())), (k1, img)),
}
res = {k: [] for k in cases}
for r in range(5):
    for k, (f, a) in cases.items(): res[k].append(timeit(f, *a))
print(os.popen('uptime').read().strip())
for k, v in res.items(): print(f"{k:22s} median {statistics.median(v)*1e3:7.2f} ms  min {min(v)*1e3:7.2f}")

# First conv: XLA's kernel gradient against fastconv.conv_patch_grad.
img = jax.random.normal(jax.random.key(0), (128, 28, 28, 1)); k1 = jax.random.normal(jax.random.key(1), (5,5,1,32))
conv_ref = lambda x, k: lax.conv_general_dilated(x, k, (1,1), 'SAME', dimension_numbers=('NHWC','HWIO','NHWC'))
cases = {'ref': jax.jit(jax.grad(lambda k, x: (conv_ref(x, k)**2).sum())), 'patch': jax.jit(jax.grad(lambda k, x: (fastconv.conv_patch_grad(x, k)**2).sum()))}
a, b = cases['ref'](k1, img), cases['patch'](k1, img); print('relerr', float(jnp.abs(a-b).max()/jnp.abs(a).max()))
res = {k: [] for k in cases}
for r in range(7):
    for k, f in cases.items(): res[k].append(timeit(f, k1, img))
print(os.popen('uptime').read().strip())
for k, v in res.items(): print(f"{k:22s} median {statistics.median(v)*1e3:7.2f} ms  min {min(v)*1e3:7.2f}")
