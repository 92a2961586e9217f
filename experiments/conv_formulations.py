"""Single conv layers of the seed CNN in several formulations and XLA CPU options, alternating.

    python experiments/conv_formulations.py conv2 lax,nchw,im2col,stack,rows,sum25 3
    python experiments/conv_formulations.py conv2 "lax,lax@xla_cpu_experimental_ynn_fusion_type=" 5

A variant NAME@opt=value+opt=value compiles with those XLA debug options (compile options, so all
variants share one process). "fwd+bwd" is the gradient of sum(conv(x, w)**2) w.r.t. x and w
(conv2) or w (conv1), forward included. Medians over rounds; measured output in BUILD_NOTES.md.
"""
import time, sys, os, statistics, jax, jax.numpy as jnp
from jax import lax
B = 128
def conv_lax(x, w):
    return lax.conv_general_dilated(x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
def conv_nchw(x, w):  # x NCHW, w OIHW
    return lax.conv_general_dilated(x, w, (1, 1), 'SAME', dimension_numbers=('NCHW', 'OIHW', 'NCHW'))
def pad(x, p=2): return jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
def conv_im2col(x, w):
    kh, kw, cin, cout = w.shape; H, W = x.shape[1:3]; xp = pad(x)
    cols = jnp.concatenate([xp[:, i:i + H, j:j + W, :] for i in range(kh) for j in range(kw)], axis=-1)
    return cols @ w.reshape(kh * kw * cin, cout)
def conv_stack(x, w):
    kh, kw, cin, cout = w.shape; H, W = x.shape[1:3]; xp = pad(x)
    cols = jnp.stack([xp[:, i:i + H, j:j + W, :] for i in range(kh) for j in range(kw)], axis=3)
    return cols.reshape(*cols.shape[:3], -1) @ w.reshape(kh * kw * cin, cout)
def conv_rows(x, w):  # im2col along W only, then kh matmuls shifted along H
    kh, kw, cin, cout = w.shape; H, W = x.shape[1:3]; xp = pad(x)
    cols = jnp.concatenate([xp[:, :, j:j + W, :] for j in range(kw)], axis=-1)  # [b, H+4, W, kw*cin]
    wr = jnp.transpose(w, (0, 1, 2, 3)).reshape(kh, kw * cin, cout)
    return sum(cols[:, i:i + H] @ wr[i] for i in range(kh))
def conv_sum25(x, w):
    kh, kw, cin, cout = w.shape; H, W = x.shape[1:3]; xp = pad(x)
    return sum(xp[:, i:i + H, j:j + W, :] @ w[i, j] for i in range(kh) for j in range(kw))

VARIANTS = dict(lax=conv_lax, nchw=conv_nchw, im2col=conv_im2col, stack=conv_stack, rows=conv_rows, sum25=conv_sum25)

def main():
    layer = sys.argv[1]; names = sys.argv[2].split(','); rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    H, cin, cout = (28, 1, 32) if layer == 'conv1' else (14, 32, 64)
    x = jax.random.normal(jax.random.key(0), (B, H, H, cin)); w = jax.random.normal(jax.random.key(1), (5, 5, cin, cout)) * 0.05
    flops = B * H * H * cout * 25 * cin * 2
    fns = {}
    for spec in names:
        name, _, opt = spec.partition('@')
        f = VARIANTS[name]
        xx, ww = (jnp.transpose(x, (0, 3, 1, 2)), jnp.transpose(w, (3, 2, 0, 1))) if name == 'nchw' else (x, w)
        opts = dict(kv.split('=') for kv in opt.split('+')) if opt else {}
        fwd = jax.jit(f).lower(xx, ww).compile(opts or None)
        argn = (0, 1) if layer == 'conv2' else (1,)
        g = jax.jit(jax.grad(lambda x, w: (f(x, w) ** 2).sum(), argnums=argn)).lower(xx, ww).compile(opts or None)
        fns[spec] = (fwd, g, xx, ww)
    nb = 2 if layer == 'conv2' else 1
    res = {s: ([], []) for s in names}
    for r in range(rounds):
        for s in names:
            fwd, g, xx, ww = fns[s]
            for k, fn in enumerate((fwd, g)):
                jax.block_until_ready(fn(xx, ww)); n = 5; t = time.perf_counter()
                for _ in range(n): jax.block_until_ready(fn(xx, ww))
                res[s][k].append((time.perf_counter() - t) / n)
    print(os.popen('uptime').read().strip())
    for s in names:
        f, b = statistics.median(res[s][0]), statistics.median(res[s][1])
        print(f"{layer} {s:40s} fwd {f*1e3:7.1f} ms {flops/f/1e9:6.1f} GF/s | fwd+bwd {b*1e3:7.1f} ms {(1+nb)*flops/b/1e9:6.1f} GF/s")
main()
