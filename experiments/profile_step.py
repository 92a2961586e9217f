"""Where the CNN train step spends its time: a jax.profiler trace of 10 steps, summed per XLA op.

    python experiments/profile_step.py            # LAYERS=plain for the library layers
    MODEL=cnn_tiny OPT=adam STEPS=8 python experiments/profile_step.py   # 8 steps per call

Uses --xla_cpu_enable_xprof_traceme so the CPU thunk executor names each op in the trace; writes
the optimised HLO to /tmp/step_hlo.txt to map names (ynn_fusion.N, wrapped_iota, ...) to ops.
Measured output (issue 6) is in BUILD_NOTES.md.
"""
import os, sys, glob, gzip, json, collections, time
import jax, jax.numpy as jnp
from jaxdigits import train
from jaxdigits.config import Config
K = int(os.environ.get('STEPS', '1'))  # Steps per compiled call (the unroll driver).
cfg = Config(model=os.environ.get('MODEL', 'cnn'), optimizer=os.environ.get('OPT', 'momentum'), learning_rate=0.1, schedule='constant', validation_size=0, augment_shift=0, driver='unroll', steps_per_call=K, layers=os.environ.get('LAYERS', 'fast'), max_train_examples=4096)
ds, (tx, ty), _, _ = train.prepare_data(cfg)
mean, std = train.pixel_stats(tx)
setup = train.make_setup(cfg, len(tx), tx.shape[1:], 10, mean, std)
state = train.init_state(setup, jax.random.key(0)); data = train.to_device(tx, ty)
run = train.make_chunk_runner(setup, 'unroll'); perm = jnp.arange(len(tx), dtype=jnp.int32); key = jax.random.key(1)
acc = train.zero_metrics()
opts = {**train.compiler_options(setup), 'xla_cpu_enable_xprof_traceme': True}
c = run.lower(state, acc, data, perm, 0, key, num_steps=K).compile(opts)
open('/tmp/step_hlo.txt','w').write(c.as_text())
for i in range(3): state, acc = c(state, acc, data, perm, i * K, key)
jax.block_until_ready(state)
d = '/tmp/jaxdigits_trace'; os.system(f'rm -rf {d}')
with jax.profiler.trace(d):
    for i in range(10): state, acc = c(state, acc, data, perm, i * K, key)
    jax.block_until_ready(state)
f = glob.glob(f'{d}/**/*.trace.json.gz', recursive=True)[0]
ev = json.load(gzip.open(f))['traceEvents']
tot = collections.Counter(); cnt = collections.Counter()
for e in ev:
    if e.get('ph') == 'X': tot[e['name']] += e['dur']; cnt[e['name']] += 1
for n, t in tot.most_common(40): print(f"{t/10/K/1e3:9.2f} ms/step  x{cnt[n]/10:.0f}  {n[:100]}")
kinds = collections.Counter()  # Summed by op kind: with K > 1 each step's copy has its own name.
for n, t in tot.items():
    if not n.startswith(('$', 'Thunk', 'Pjit', 'Slinky')): kinds[n.rsplit('.', 1)[0] if n.rsplit('.', 1)[-1].isdigit() else n] += t
print(f"named ops, summed by kind: {sum(kinds.values())/10/K/1e3:.2f} ms/step")
for n, t in kinds.most_common(12): print(f"{t/10/K/1e3:9.2f} ms/step  {n}")
