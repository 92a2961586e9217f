"""Side-by-side training epochs: jaxdigits' CNN and MLP against PyTorch (and the Flax example).

    python experiments/compare_speed.py                   # 3 rounds, about 5 minutes on 2 quiet cores (estimated)
    python experiments/compare_speed.py --rounds=5 --peers=torch,flax --out=speed.json
    python experiments/compare_speed.py --cnn_variants=layers=fast,layers=plain   # formulations
    python experiments/compare_speed.py --cnn_variants=layers=auto,GLIBC_TUNABLES=glibc.malloc.mmap_max=0  # env
    git worktree add /tmp/before HEAD~1 && python experiments/compare_speed.py --baseline=/tmp/before

Every job runs in its own process, as a user would run it, and each round runs every job once,
in turn, so a busy machine slows them all alike; ratios are taken within a round, then the
median (min, max) over rounds is printed. All runs use the peers' recipe: SGD(0.1, momentum 0.9),
batch 128, 468 steps (59,904 images) per epoch, no augmentation. A round also times a jitted
2048x2048 float32 matmul (the roofline the MLP is held to) and records `uptime`'s load.

Needs PyTorch in its own environment (`--torch_python`, default /tmp/venv-torch/bin/python):
    python3 -m venv /tmp/venv-torch && /tmp/venv-torch/bin/pip install torch==2.13.0 numpy
Results measured here are in BUILD_NOTES.md (issue 6).
"""

import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCH = ROOT.parent / "shared" / "bench"

_ROUNDS = flags.DEFINE_integer("rounds", 3, "Rounds; each runs every job once.")
_PEERS = flags.DEFINE_list("peers", ["torch"], "Peers: torch (CNN and MLP), flax (CNN, slow).")
_TORCH = flags.DEFINE_string("torch_python", "/tmp/venv-torch/bin/python", "Python with torch.")
_BENCH_DIR = flags.DEFINE_string("bench_dir", str(BENCH), "The shared peer scripts.")
_DATA = flags.DEFINE_string("data_dir", str(ROOT / "jaxdigits" / "datasets" / "mnist"),
                            "MNIST IDX files for the peers.")
_CNN_EPOCHS = flags.DEFINE_integer("cnn_epochs", 1, "Timed CNN epochs per job (last is used).")
_MLP_EPOCHS = flags.DEFINE_integer("mlp_epochs", 3, "Timed MLP epochs per job (last is used).")
_CNN_VARIANTS = flags.DEFINE_list("cnn_variants", ["layers=auto"],
                                  "jaxdigits CNN configs to time (flag=value, '+'-joined; "
                                  "an UPPER_CASE name sets that environment variable).")
_MODELS = flags.DEFINE_list("models", ["cnn", "mlp"], "Which models to compare.")
_OUT = flags.DEFINE_string("out", None, "Also write every measurement here as JSON.")
_BASELINE = flags.DEFINE_string("baseline", None, "Another jaxdigits checkout (an earlier commit) "
                                "whose CNN is timed too, as 'jaxdigits cnn baseline'.")

RECIPE = ["--optimizer=momentum", "--learning_rate=0.1", "--momentum=0.9", "--schedule=constant",
          "--batch_size=128", "--validation_size=0", "--augment_shift=0", "--calls=2",
          "--repeats=1", "--quiet"]


def load() -> str:
    return os.popen("uptime").read().strip().split("load average:")[-1].strip()


def run_jaxdigits(model: str, epochs: int, extra: list[str], env: dict | None = None,
                  root: pathlib.Path = ROOT) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "r.json"
        cmd = [sys.executable, "-m", "jaxdigits.benchmark", f"--model={model}", *RECIPE,
               f"--bench_epochs={epochs}", f"--json={out}", *extra]
        subprocess.run(cmd, cwd=root, check=True, capture_output=True, text=True,
                       env={**os.environ, **(env or {})})
        r = json.loads(out.read_text())
    return {"seconds": r["epoch_seconds"][-1], "gflops_per_step": r["gflops_per_step"],
            "steps": r["epoch_examples"] // r["batch_size"], "cmd": " ".join(cmd[1:])}


def run_peer(python: str, script: str, epochs: int) -> dict:
    cmd = [python, script, _DATA.value, str(epochs)]
    done = subprocess.run(cmd, cwd=_BENCH_DIR.value, check=True, capture_output=True, text=True)
    seconds = [float(s) for s in re.findall(r"seconds ([0-9.]+)", done.stdout)]
    return {"seconds": seconds[-1], "cmd": " ".join(cmd)}


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    import jax
    import jax.numpy as jnp

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
    """name -> zero-argument function returning {"seconds", ...} for one timed epoch."""
    out = {}
    torch_ok = "torch" in _PEERS.value
    if "cnn" in _MODELS.value:
        for variant in _CNN_VARIANTS.value:
            items = [kv for kv in variant.split("+") if kv]  # UPPER_CASE=value: the environment.
            env = dict(kv.split("=", 1) for kv in items if kv.split("=")[0].isupper())
            extra = [f"--{kv}" for kv in items if not kv.split("=")[0].isupper()]
            out[f"jaxdigits cnn {variant}"] = lambda e=extra, v=env: run_jaxdigits(
                "cnn", _CNN_EPOCHS.value, e, v)
        if _BASELINE.value:
            out["jaxdigits cnn baseline"] = lambda: run_jaxdigits(
                "cnn", _CNN_EPOCHS.value, [], root=pathlib.Path(_BASELINE.value))
        if torch_ok:
            out["torch cnn"] = lambda: run_peer(_TORCH.value, "peer_torch.py", _CNN_EPOCHS.value)
        if "flax" in _PEERS.value:
            out["flax-example cnn"] = lambda: run_peer(sys.executable, "peer_flax_loop.py",
                                                       _CNN_EPOCHS.value)
    if "mlp" in _MODELS.value:
        out["jaxdigits mlp"] = lambda: run_jaxdigits("mlp", _MLP_EPOCHS.value, [])
        if torch_ok:
            out["torch mlp"] = lambda: run_peer(_TORCH.value, str(ROOT / "experiments" /
                                                                  "peer_torch_mlp.py"),
                                                _MLP_EPOCHS.value)
    return out


def spread(values) -> str:
    return f"{statistics.median(values):8.3f} (min {min(values):.3f}, max {max(values):.3f})"


def main(argv):
    del argv  # Unused.
    todo = jobs()
    results = {name: [] for name in todo}
    roofline = []
    for r in range(1, _ROUNDS.value + 1):
        roofline.append({"gflops": matmul_gflops(), "load": load()})
        print(f"round {r}: matmul 2048^3 {roofline[-1]['gflops']:.1f} GFLOP/s "
              f"(load {roofline[-1]['load']})", flush=True)
        for name, fn in todo.items():
            before = load()
            res = {**fn(), "load_before": before, "load_after": load(), "round": r}
            results[name].append(res)
            print(f"round {r}: {name:32s} {res['seconds']:8.2f} s/epoch  (load {before})", flush=True)

    print(f"\nmedian (min, max) over {_ROUNDS.value} rounds; 59,904 images per epoch")
    print(f"{'job':34s} {'seconds per epoch':>34s} {'images/s':>9s}")
    for name, rs in results.items():
        s = [x["seconds"] for x in rs]
        print(f"{name:34s} {spread(s):>34s} {59904 / statistics.median(s):9,.0f}")
    ratios = {}
    for name in results:
        model = name.split()[1]
        for other in (f"torch {model}", f"jaxdigits {model} baseline"):
            if name.startswith("jaxdigits") and name != other and other in results:
                ratios[f"{name} / {other}"] = [a["seconds"] / b["seconds"]
                                               for a, b in zip(results[name], results[other])]
    if "jaxdigits mlp" in results:
        ratios["jaxdigits mlp GFLOP/s / matmul roofline"] = [
            x["gflops_per_step"] * x["steps"] / x["seconds"] / rf["gflops"]
            for x, rf in zip(results["jaxdigits mlp"], roofline)]
    print("\nratios within a round (time ratios: below 1 means jaxdigits is faster)")
    for name, values in ratios.items():
        print(f"{name:58s} {spread(values)}")
    print(f"matmul roofline GFLOP/s {spread([x['gflops'] for x in roofline])}")
    if _OUT.value:
        sys.path.insert(0, str(ROOT))
        from jaxdigits.metrics import write_atomic

        write_atomic(_OUT.value, json.dumps({"results": results, "ratios": ratios,
                                             "roofline": roofline}, indent=2) + "\n")


if __name__ == "__main__":
    app.run(main)
