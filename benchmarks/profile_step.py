"""Where a train step spends its time: a jax.profiler trace of the trainer's compiled chunk,
summed per XLA op and per kind of op.

    python -m benchmarks.profile_step --steps_per_call=8 --json=/tmp/profile.json
    python -m benchmarks.profile_step --model=cnn_tiny --optimizer=adam --layers=plain

Result, 2-core Intel Xeon (AVX-512), quiet, 2026-12-01 (then `STEPS=8 python
experiments/profile_step.py`), seed CNN, peers' recipe, 8 steps per call, XLA's Eigen
convolutions: 31 ms per step of named ops (41 ms in a noisier second run, in the same order):
YNNPACK fusions (dots, pooling maxima, bias gradients) 8.5 ms, the 25 slices of conv1's
kernel-gradient patches 7.5 ms and their stack 3.0 ms, pooling and ReLU gradients 3.0 ms.
Eigen's convolutions run on the thread pool and are not named in the trace (oneDNN's gradients,
the default since, are: `ffi_call.N`). On
the 2-core AMD EPYC (load 6.1, 2026-11-22), one step per call with the plain layers, about 230
of 440 ms per step went to the max-pool gradients (select-and-scatter), which led to
jaxdigits/fastconv.py. BUILD_NOTES.md.

The chunk is the trainer's own (benchmarks/common.py `lowered_chunk`: the peers' recipe, the
`--model`'s layers and kernels, `--max_train_examples` images), compiled with the training
options plus `xla_cpu_enable_xprof_traceme`, so that XLA's CPU runtime names each op in the
trace. After `--warmup` calls, `--calls` calls are traced into a temporary folder; per-op times
are divided by the steps traced. `--hlo=PATH` writes the optimised HLO, to map op names
(ynn_fusion.N, wrapped_iota, ...) to ops.
"""

import collections
import dataclasses
import gzip
import json
import pathlib
import tempfile

import jax
from absl import app, flags

from benchmarks import common
from jaxdigits import cli, errors, metrics

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("model", "cnn", "The model.")
    flags.DEFINE_string("optimizer", "momentum", "The optimizer (the peers' recipe: momentum).")
    flags.DEFINE_string("layers", "auto", "--layers: auto, fast or plain.")
    flags.DEFINE_string("cpu_conv", "auto", "--cpu_conv: auto, onednn, eigen or ynnpack.")
    flags.DEFINE_integer("steps_per_call", 1, "Steps per compiled call (unrolled).")
    flags.DEFINE_integer("max_train_examples", 4096, "Training images on the device.")
    flags.DEFINE_integer("warmup", 3, "Calls before tracing.")
    flags.DEFINE_integer("calls", 10, "Traced calls.")
    flags.DEFINE_integer("top", 40, "Ops to print.")
    flags.DEFINE_string("hlo", None, "Write the optimised HLO here.")
    flags.DEFINE_string("json", None, "Write the per-op and per-kind times here as JSON.")


def kind(name: str) -> str:
    """An op's kind: its name without the ".N" XLA numbers each copy with."""
    head, _, tail = name.rpartition(".")
    return head if tail.isdigit() else name


def profile(config, *, warmup: int = 3, calls: int = 10, hlo_path=None) -> dict:
    """Traces `calls` calls of `config`'s compiled chunk; returns milliseconds per step by op."""
    k = config.steps_per_call
    lowered, args = common.lowered_chunk(config, k)
    compiled = lowered.compile({"xla_cpu_enable_xprof_traceme": True})
    if hlo_path:
        metrics.write_atomic(hlo_path, compiled.as_text())
    state, acc, data, perm, _, key = args

    def run(n, first):
        nonlocal state, acc
        for i in range(first, first + n):  # Offsets wrap inside the data on the device.
            start = (i * k) % max(len(perm) // config.batch_size - k + 1, 1)
            state, acc = compiled(state, acc, data, perm, start, key)
        jax.block_until_ready(state)

    run(warmup, 0)
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir):
            run(calls, warmup)
        path = sorted(pathlib.Path(trace_dir).glob("**/*.trace.json.gz"))[0]
        with gzip.open(path) as f:
            events = json.load(f)["traceEvents"]
    total, count = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("ph") == "X":  # Complete events: name, duration in microseconds.
            total[e["name"]] += e["dur"]
            count[e["name"]] += 1
    steps = calls * k
    ops = [{"name": n, "ms_per_step": t / steps / 1e3, "per_step": count[n] / steps}
           for n, t in total.most_common()]
    kinds = collections.Counter()  # Runtime bookkeeping ($..., Thunk..., Pjit...) left out.
    for n, t in total.items():
        if not n.startswith(("$", "Thunk", "Pjit", "Slinky")):
            kinds[kind(n)] += t
    return {"ops": ops,
            "kinds": [{"kind": n, "ms_per_step": t / steps / 1e3} for n, t in kinds.most_common()],
            "named_ms_per_step": sum(kinds.values()) / steps / 1e3, "steps_traced": steps}


def main(argv):
    cli.start(argv)
    config = common.peers_config(
        model=FLAGS.model, optimizer=FLAGS.optimizer, layers=FLAGS.layers,
        cpu_conv=FLAGS.cpu_conv, driver="unroll", steps_per_call=FLAGS.steps_per_call,
        max_train_examples=FLAGS.max_train_examples)
    result = profile(config, warmup=FLAGS.warmup, calls=FLAGS.calls, hlo_path=FLAGS.hlo)
    for op in result["ops"][:FLAGS.top]:
        print(f"{op['ms_per_step']:9.2f} ms/step  x{op['per_step']:.0f}  {op['name'][:100]}")
    print(f"named ops, summed by kind: {result['named_ms_per_step']:.2f} ms/step")
    for row in result["kinds"][:12]:
        print(f"{row['ms_per_step']:9.2f} ms/step  {row['kind']}")
    common.write_json(FLAGS.json, {**result, "config": dataclasses.asdict(config),
                                   "machine": common.machine()})


if __name__ == "__main__":
    define_flags()
    app.run(errors.report_user_errors(main))
