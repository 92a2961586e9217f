"""Side-by-side training epochs: jaxdigits' CNN and MLP against PyTorch (and the Flax example).

    python -m benchmarks.compare_speed --rounds=3 --cnn_epochs=2 --models=cnn \
        --cnn_variants=cpu_conv=auto,cpu_conv=eigen --json=/tmp/speed.json

Result, 2-core Intel Xeon (AVX-512), quiet, 2026-12-02, three runs (then
`experiments/compare_speed.py`): the seed CNN's second epoch took 27.4 / 25.4 / 26.9 s with
oneDNN's convolution gradients (`cpu_conv=auto`) against PyTorch 2.13's 34.2 / 30.2 / 32.6 s,
0.78x / 0.89x / 0.76x within a round; with XLA's own kernels (`eigen`) 37.1 / 33.1 s, 1.14x /
1.08x. The MLP (`--models=mlp`, 2026-12-01): 0.97 s against PyTorch's 1.28 s, 0.79x, at 48 % of
a jitted 2048^3 float32 matmul's rate. BUILD_NOTES.md.

More: `--peers=torch,flax` adds the Flax example's CNN (slow); `--cnn_variants=layers=fast,
layers=plain` compares formulations, `--cnn_variants=layers=auto,GLIBC_TUNABLES=glibc.malloc.
mmap_max=0` an environment variable (an UPPER_CASE name sets one); `--baseline=DIR` times
another checkout's CNN too (e.g. `git archive HEAD~1 | tar -x -C /tmp/before`).

Every job runs in its own process, as a user would run it (`python -m jaxdigits.benchmark` with
`--bench_epochs`, or a peer script), and each round runs every job once, in turn, so a busy
machine slows them all alike; ratios are taken within a round, then the median (min, max) over
rounds is printed. All runs use the peers' recipe (benchmarks/common.py: SGD 0.1, momentum 0.9,
batch 128, 468 steps or 59,904 images per epoch, no augmentation) and the last timed epoch. A
round also times a jitted 2048x2048 float32 matmul (the roofline the MLP is held to) and records
the load average.

Needs PyTorch in its own environment (`--torch_python`, default /tmp/venv-torch/bin/python):
    python3 -m venv /tmp/venv-torch && /tmp/venv-torch/bin/pip install torch==2.13.0 numpy
"""

import json
import os
import pathlib
import re
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
from absl import app, flags

from benchmarks import common
from jaxdigits import cli, errors

FLAGS = flags.FLAGS
ROOT = pathlib.Path(__file__).resolve().parents[1]
EPOCH_IMAGES = 59904  # 468 batches of 128, as the peers run them.


def define_flags() -> None:
    flags.DEFINE_integer("rounds", 3, "Rounds; each runs every job once.")
    flags.DEFINE_list("peers", ["torch"], "Peers: torch (CNN and MLP), flax (CNN, slow).")
    flags.DEFINE_string("torch_python", "/tmp/venv-torch/bin/python", "Python with torch.")
    flags.DEFINE_string("bench_dir", str(ROOT.parent / "shared" / "bench"),
                        "The shared peer scripts (peer_torch.py, peer_flax_loop.py).")
    flags.DEFINE_string("data_dir", str(ROOT / "jaxdigits" / "datasets" / "mnist"),
                        "MNIST IDX files for the peers.")
    flags.DEFINE_integer("cnn_epochs", 1, "Timed CNN epochs per job (the last is used).")
    flags.DEFINE_integer("mlp_epochs", 3, "Timed MLP epochs per job (the last is used).")
    flags.DEFINE_list("cnn_variants", ["layers=auto"],
                      "jaxdigits CNN configs to time (flag=value, '+'-joined; an UPPER_CASE name "
                      "sets that environment variable).")
    flags.DEFINE_list("models", ["cnn", "mlp"], "Which models to compare.")
    flags.DEFINE_string("baseline", None, "Another jaxdigits checkout (an earlier commit) whose "
                        "CNN is timed too, as 'jaxdigits cnn baseline'.")
    flags.DEFINE_string("json", None, "Write every measurement here as JSON.")


def run_jaxdigits(model: str, epochs: int, extra: list[str], env: dict | None = None,
                  root: pathlib.Path = ROOT) -> dict:
    """One `python -m jaxdigits.benchmark` process timing `epochs` epochs of the peers' recipe."""
    recipe = [f"--{k}={v}" for k, v in common.PEERS.items()]
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "r.json"
        # --out=PATH writes the JSON; older checkouts (a --baseline) took --json=PATH.
        newer = '"out"' in (pathlib.Path(root) / "jaxdigits" / "benchmark.py").read_text()
        cmd = [sys.executable, "-m", "jaxdigits.benchmark", f"--model={model}", *recipe,
               "--calls=2", "--repeats=1", "--quiet", f"--bench_epochs={epochs}",
               f"--out={out}" if newer else f"--json={out}", *extra]
        common.run_command(cmd, cwd=root, env={**os.environ, **(env or {})})
        r = json.loads(out.read_text())
    return {"seconds": r["epoch_seconds"][-1], "gflops_per_step": r["gflops_per_step"],
            "steps": r["epoch_examples"] // r["batch_size"], "cmd": " ".join(cmd[1:])}


def run_peer(python: str, script: str, epochs: int) -> dict:
    """A peer script (`python SCRIPT DATA_DIR EPOCHS`, printing "seconds S" per epoch)."""
    cmd = [python, script, FLAGS.data_dir, str(epochs)]
    done = common.run_command(cmd, cwd=FLAGS.bench_dir)
    seconds = [float(s) for s in re.findall(r"seconds ([0-9.]+)", done.stdout)]
    return {"seconds": seconds[-1], "cmd": " ".join(cmd)}


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    jax.block_until_ready(f(a))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(f(a))
        times.append(time.perf_counter() - start)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def jobs() -> dict:
    """name -> function of no arguments returning {"seconds", ...} for one timed epoch."""
    out = {}
    torch = "torch" in FLAGS.peers
    if "cnn" in FLAGS.models:
        for variant in FLAGS.cnn_variants:
            items = [kv for kv in variant.split("+") if kv]
            env = dict(kv.split("=", 1) for kv in items if kv.split("=")[0].isupper())
            extra = [f"--{kv}" for kv in items if not kv.split("=")[0].isupper()]
            out[f"jaxdigits cnn {variant}"] = lambda e=extra, v=env: run_jaxdigits(
                "cnn", FLAGS.cnn_epochs, e, v)
        if FLAGS.baseline:
            out["jaxdigits cnn baseline"] = lambda: run_jaxdigits(
                "cnn", FLAGS.cnn_epochs, [], root=pathlib.Path(FLAGS.baseline))
        if torch:
            out["torch cnn"] = lambda: run_peer(FLAGS.torch_python, "peer_torch.py",
                                                FLAGS.cnn_epochs)
        if "flax" in FLAGS.peers:
            out["flax-example cnn"] = lambda: run_peer(sys.executable, "peer_flax_loop.py",
                                                       FLAGS.cnn_epochs)
    if "mlp" in FLAGS.models:
        out["jaxdigits mlp"] = lambda: run_jaxdigits("mlp", FLAGS.mlp_epochs, [])
        if torch:
            out["torch mlp"] = lambda: run_peer(
                FLAGS.torch_python, str(ROOT / "benchmarks" / "peer_torch_mlp.py"),
                FLAGS.mlp_epochs)
    return out


def ratios(results: dict, roofline: list) -> dict:
    """Time ratios within each round: every jaxdigits job over PyTorch's and over the baseline's
    for its model; the MLP's achieved GFLOP/s over the round's matmul rate."""
    out = {}
    for name in results:
        model = name.split()[1]
        for other in (f"torch {model}", f"jaxdigits {model} baseline"):
            if name.startswith("jaxdigits") and name != other and other in results:
                out[f"{name} / {other}"] = [a["seconds"] / b["seconds"]
                                            for a, b in zip(results[name], results[other])]
    if "jaxdigits mlp" in results:
        out["jaxdigits mlp GFLOP/s / matmul roofline"] = [
            x["gflops_per_step"] * x["steps"] / x["seconds"] / rf["gflops"]
            for x, rf in zip(results["jaxdigits mlp"], roofline)]
    return out


def spread(values) -> str:
    s = common.spread(values)
    return f"{s['median']:8.3f} (min {s['min']:.3f}, max {s['max']:.3f})"


def main(argv):
    cli.start(argv)

    def matmul():  # The roofline, measured in every round beside the jobs.
        return {"gflops": matmul_gflops(), "load": os.getloadavg()[0]}

    def timed(fn):
        def job():
            before = os.getloadavg()[0]
            return {**fn(), "load_before": before, "load_after": os.getloadavg()[0]}
        return job

    results = common.alternate(
        {"matmul 2048^3": matmul, **{name: timed(fn) for name, fn in jobs().items()}},
        FLAGS.rounds,
        lambda r: (f"{r['gflops']:.1f} GFLOP/s" if "gflops" in r else
                   f"{r['seconds']:8.2f} s per epoch (load {r['load_before']:.1f})"))
    roofline = results.pop("matmul 2048^3")

    print(f"\nmedian (min, max) over {FLAGS.rounds} rounds; {EPOCH_IMAGES:,} images per epoch")
    print(f"{'job':34s} {'seconds per epoch':>34s} {'images/s':>9s}")
    for name, rs in results.items():
        s = [x["seconds"] for x in rs]
        print(f"{name:34s} {spread(s):>34s} {EPOCH_IMAGES / statistics.median(s):9,.0f}")
    within = ratios(results, roofline)
    print("\nratios within a round (time ratios: below 1 means jaxdigits is faster)")
    for name, values in within.items():
        print(f"{name:58s} {spread(values)}")
    print(f"matmul roofline GFLOP/s {spread([x['gflops'] for x in roofline])}")
    common.write_json(FLAGS.json, {"results": results, "ratios": within, "roofline": roofline,
                                   "epoch_images": EPOCH_IMAGES, "machine": common.machine()})


if __name__ == "__main__":
    define_flags()
    app.run(errors.report_user_errors(main))
