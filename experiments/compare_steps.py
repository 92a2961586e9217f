"""Train-step variants side by side, alternating: `benchmark.benchmark` per variant per round.

    python experiments/compare_steps.py "layers=plain;layers=fast" 3
    python experiments/compare_steps.py "layers=fast;layers=fast,steps_per_call=4" 3 4

Variants are ;-separated lists of Config overrides on the peers recipe (momentum SGD 0.1, batch
128, no augmentation). Arguments: variants, rounds, compiled calls per timing. Prints ms/step.
"""
import sys, dataclasses, statistics, os
from jaxdigits import benchmark
from jaxdigits.config import Config
base = dict(model='cnn', optimizer='momentum', learning_rate=0.1, schedule='constant', validation_size=0, augment_shift=0)
variants = sys.argv[1].split(';'); rounds = int(sys.argv[2]); calls = int(sys.argv[3]) if len(sys.argv) > 3 else 4
def parse(v):
    d = dict(base)
    for kv in v.split(','):
        if kv: k, val = kv.split('='); d[k] = type(getattr(Config(), k))(val)
    return Config(**d)
res = {v: [] for v in variants}
for r in range(rounds):
    for v in variants:
        out = benchmark.benchmark(parse(v), calls=calls, repeats=1)
        res[v].append(out['step_seconds']); print(f"{v:40s} {out['step_seconds']*1e3:8.2f} ms/step compile {out['compile_seconds']:.1f}s GF/step {out['gflops_per_step']:.3f}", flush=True)
print(os.popen('uptime').read().strip())
for v in variants: print(f"{v:40s} median {statistics.median(res[v])*1e3:8.2f} min {min(res[v])*1e3:8.2f} max {max(res[v])*1e3:8.2f}")
