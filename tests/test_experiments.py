"""Smoke tests of the nine lessons in experiments/: tiny flags, real assertions on results.json;
that the probes in benchmarks/ import without doing anything, name only what jaxdigits has, and
run end to end on tiny settings (those `slow`).

Each lesson test calls the experiment's `run(workdir, ...)` in-process (what `main` calls after
parsing its flags), then checks the JSON it wrote and that every PNG it promised is a real,
non-blank image.
"""

import ast
import importlib
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from conftest import ROOT, run_cli

sys.path.insert(0, str(ROOT))  # `experiments` and `benchmarks` are folders beside the package.

from experiments import (exp1_perceptron, exp2_logistic_newton, exp3_moons_mlp,  # noqa: E402
                         exp4_least_squares, exp5_newton_1d, exp6_gd_variants, exp7_conv_slashes,
                         exp8_model_zoo, exp9_lr_sensitivity)


def read_results(workdir, returned):
    saved = json.loads((workdir / "results.json").read_text())
    assert saved["experiment"] == returned["experiment"]
    return saved


def assert_png(path, min_side=300):
    import matplotlib.image

    image = matplotlib.image.imread(path)  # [h, w, channels] floats in [0, 1]
    assert min(image.shape[:2]) >= min_side, image.shape
    assert image[..., :3].std() > 0.05  # Not blank: a plot, not an empty canvas.


def test_perceptron_separates_the_points(tmp_path):
    r = read_results(tmp_path, exp1_perceptron.run(tmp_path, points=40, steps=300))
    p, s = r["perceptron"], r["softsign"]
    assert p["converged"] and p["train_accuracy"] == 1.0 and p["mistakes_per_epoch"][-1] == 0
    assert 0 < p["updates"] <= p["novikoff_bound"]  # Novikoff's theorem holds.
    assert s["final_loss"] < 0.5 * s["initial_loss"] and s["train_accuracy"] >= 0.95
    assert_png(tmp_path / "perceptron.png")


@pytest.mark.slow
def test_logistic_gradient_descent_agrees_with_newton(tmp_path):
    r = read_results(tmp_path, exp2_logistic_newton.run(tmp_path, points=100, steps=5000))
    gd, nt = r["gradient_descent"], r["newton"]
    assert nt["steps"] <= 10
    assert r["max_probability_difference"] < 1e-3
    np.testing.assert_allclose([gd["w"], gd["b"]], [nt["w"], nt["b"]], rtol=3e-2, atol=3e-2)
    assert abs(nt["boundary_x"] - 5) < 1.5  # The labels switch at x = 5.
    assert_png(tmp_path / "logistic.png")


@pytest.mark.slow
def test_moons_mlp_learns_the_moons(tmp_path):
    r = read_results(tmp_path, exp3_moons_mlp.run(tmp_path, points=400, steps=1000))
    assert r["layers"] == [2, 4, 2, 1] and r["test_count"] == 80
    assert r["final_loss"] < 0.1 < r["initial_loss"]
    assert r["test_accuracy"] >= 0.95
    assert_png(tmp_path / "moons.png")
    assert_png(tmp_path / "hidden_units.png")


def test_least_squares_gradient_descent_is_close_to_lstsq(tmp_path):
    r = read_results(tmp_path, exp4_least_squares.run(tmp_path))
    a, b = np.asarray(r["A"]), np.asarray(r["b"])
    x_star = np.asarray(r["closed_form"]["x"])
    np.testing.assert_allclose(a.T @ (a @ x_star - b), 0, atol=1e-9)  # The normal equations.
    gd = r["gradient_descent"]
    assert gd["distance_to_closed_form"] < 5e-3
    np.testing.assert_allclose(gd["x"], x_star, atol=5e-3)
    np.testing.assert_allclose(gd["cost"], r["closed_form"]["cost"], rtol=1e-4)
    assert r["flags"]["learning_rate"] < r["stable_learning_rate_below"]
    assert_png(tmp_path / "least_squares.png")


def test_newton_converges_to_nine_quarters_and_backtracking_finds_a_quarter(tmp_path):
    r = read_results(tmp_path, exp5_newton_1d.run(tmp_path))
    assert r["minimum"] == 2.25
    nt = r["newton"]
    assert nt["x0"] == 2.0 and nt["steps"] <= 6 and abs(nt["final_x"] - 2.25) < 1e-5
    errors = [abs(x - 2.25) for x in nt["iterates"][:4]]
    assert errors[3] < errors[2] ** 2 < errors[1]  # Quadratic convergence.
    assert abs(r["newton_from_1"]["final_x"]) < 1e-3  # f''(1) < 0: Newton finds x = 0 instead.
    bt = r["backtracking"]
    assert bt["tried"] == [1.0, 0.5, 0.25] and bt["step_size"] == 0.25 and bt["x1"] == 2.25
    gd = r["gradient_descent"]
    assert gd["0.02"]["converged"] and not gd["0.02"]["oscillates"]
    assert gd["0.09"]["converged"] and gd["0.09"]["oscillates"]  # Between 1/f'' and 2/f''.
    assert not gd["0.12"]["converged"] and gd["0.12"]["oscillates"]  # Above 2/f''(9/4).
    assert r["gd_oscillates_above"] < 0.09 < r["gd_stable_below"] < 0.12
    assert_png(tmp_path / "newton_1d.png")


@pytest.mark.slow
def test_gradient_descent_variants(tmp_path):
    r = read_results(tmp_path, exp6_gd_variants.run(tmp_path, points=200, iterations=120))
    methods = r["methods"]
    assert [m["batch_size"] for m in methods.values()] == [200, 1, 32, 32]
    for name, m in methods.items():
        assert r["minimum_cost"] - 1e-6 <= m["final_cost"] < r["initial_cost"], name
        assert len(r["cost_per_iteration"][name]) == 121
    assert methods["momentum"]["cost_after_10_percent"] < methods["batch"]["cost_after_10_percent"]
    batch = np.asarray(r["cost_per_iteration"]["batch"])
    assert np.all(np.diff(batch) <= 1e-7)  # Full-batch GD at a small step never goes up.
    assert_png(tmp_path / "gd_variants.png")


@pytest.mark.slow
def test_conv_relu_pool_on_slashes(tmp_path):
    params = exp7_conv_slashes.init(exp7_conv_slashes.jax.random.key(0),
                                    exp7_conv_slashes.FIXED_KERNELS)
    backslash = np.eye(6, dtype=np.float32)[None, :, :, None]  # [1, 6, 6, 1]: a clean "\"
    out = exp7_conv_slashes.layers(params, backslash)
    assert out["conv"].shape == (1, 4, 4, 2) and out["pool"].shape == (1, 2, 2, 2)
    np.testing.assert_allclose(np.diag(out["conv"][0, :, :, 1]), 3)  # "\" detector: 3 on the line
    assert float(out["relu"][0, :, :, 0].max()) < 3 and float(out["relu"].min()) == 0
    np.testing.assert_allclose(np.asarray(out["pool"][0, :, :, 1]), [[3, 0], [0, 3]], atol=1e-6)

    r = read_results(tmp_path, exp7_conv_slashes.run(tmp_path, train_size=200, test_size=200,
                                                     steps=200))
    assert r["frozen"]["kernels_unchanged"]
    assert r["frozen"]["test_accuracy"] >= 0.85 and r["trainable"]["test_accuracy"] >= 0.85
    assert r["trainable"]["final_loss"] < r["trainable"]["initial_loss"]
    assert np.asarray(r["trainable"]["learned_kernels"]).shape == (2, 3, 3)
    for name in ("layers.png", "learned_layers.png", "kernels.png"):
        assert_png(tmp_path / name)


@pytest.mark.slow
def test_model_zoo_table_on_a_budget(tmp_path, no_env):
    r = read_results(tmp_path, exp8_model_zoo.run(
        tmp_path, datasets=("mnist", "kmnist"), model_names=("linear",), train_examples=2048,
        epochs=2))  # The MLP and the CNN run the same code; the core tests train them.
    assert "kmnist" in r["skipped"]  # Not available offline here: recorded, not a crash.
    [row] = r["rows"]
    assert row["dataset"] == "mnist" and row["model"] == "linear" and row["parameters"] == 7850
    assert row["test_count"] == 10000 and row["test_accuracy"] > 0.6
    assert row["seconds"] > row["train_seconds"] > 0
    assert "| mnist | linear | 7,850 |" in (tmp_path / "table.md").read_text()
    assert_png(tmp_path / "model_zoo.png")
    with pytest.raises(exp8_model_zoo.UserError, match="unknown dataset"):
        exp8_model_zoo.run(tmp_path / "bad", datasets=("mnsit",), train_examples=1024)


@pytest.mark.slow
def test_learning_rate_sensitivity_detects_divergence(tmp_path):
    r = read_results(tmp_path, exp9_lr_sensitivity.run(
        tmp_path, learning_rates=(0.1, 1000.0), steps=30, train_examples=1280))
    good, bad = r["runs"]["0.1"], r["runs"]["1000.0"]
    assert not good["diverged"] and good["final_loss"] < good["initial_loss"]
    assert good["test_count"] == 10000 and good["test_accuracy"] > 0.6
    assert bad["diverged"] and bad["non_finite_at_step"] is not None and bad["final_loss"] is None
    assert r["diverged"] == [1000.0] and r["best_learning_rate"] == 0.1
    guard = r["library_guard"]  # train_and_evaluate stopped with a UserError, caught.
    assert guard["stopped"] and "diverged" in guard["message"]
    assert len(r["loss_per_step"]["0.1"]) == 30
    assert_png(tmp_path / "lr_sensitivity.png")


@pytest.mark.slow
def test_experiment_command_line(tmp_path):
    done = run_cli("experiments.exp4_least_squares", "--steps=100", f"--workdir={tmp_path / 'ok'}",
                   timeout=120)
    assert done.returncode == 0, done.stderr
    assert "gradient descent after 100 steps" in done.stdout
    assert json.loads((tmp_path / "ok" / "results.json").read_text())["flags"]["steps"] == 100
    assert (tmp_path / "ok" / "least_squares.png").exists()
    bad = run_cli("experiments.exp4_least_squares", "--steps=0", f"--workdir={tmp_path / 'x'}",
                  timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().endswith("--steps must be positive, got 0.")
    assert "Traceback" not in bad.stderr


SCRIPTS = sorted([*(ROOT / "experiments").glob("*.py"), *(ROOT / "benchmarks").glob("*.py")])
BENCHMARKS = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if p.stem != "__init__")

# Run in a fresh process by the import test: imports each module named on the command line, in
# turn, and prints what importing it did, as JSON on its last line.
IMPORT_PROBE = r"""
import builtins, contextlib, importlib, io, json, os, subprocess, sys, threading, time

from absl import app, flags, logging  # noqa: F401  Their own flags are the baseline.
import jax
import jaxdigits.benchmark, jaxdigits.serve, jaxdigits.train  # noqa: F401  The library's cost.

did = []

def watch(owner, name, describe):
    original = getattr(owner, name)
    def wrapper(*args, **kwargs):
        what = describe(*args, **kwargs)
        if what:
            did.append(what)
        return original(*args, **kwargs)
    setattr(owner, name, wrapper)

def writes(file, mode="r", *args, **kwargs):
    return f"open {file!r} {mode!r}" if set(mode) & set("wax+") else None
watch(builtins, "open", writes)
watch(io, "open", writes)
watch(os, "mkdir", lambda path, *a, **k: f"os.mkdir {path!r}")
watch(os, "makedirs", lambda path, *a, **k: f"os.makedirs {path!r}")
watch(os, "system", lambda command: f"os.system {command!r}")
watch(subprocess.Popen, "__init__", lambda self, args, *a, **k: f"subprocess {args!r}")
watch(threading.Thread, "start", lambda self: f"thread {self.name}")
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kw: did.append(f"XLA compile {kw.get('fun_name')}")
    if event == "/jax/core/compile/backend_compile_duration" else None)

report = {}
for name in sys.argv[1:]:
    flags_before, printed = set(flags.FLAGS), io.StringIO()
    did.clear()
    start = time.perf_counter()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        importlib.import_module(name)
    report[name] = {"seconds": time.perf_counter() - start, "did": list(did),
                    "flags": sorted(set(flags.FLAGS) - flags_before),
                    "printed": printed.getvalue(), "files": sorted(os.listdir("."))}
print(json.dumps(report))
"""


def test_benchmarks_import_without_doing_anything(tmp_path):
    """Importing a probe defines no flags, writes no file, starts no process or thread, compiles
    nothing, prints nothing and takes well under a second: all of that waits for `__main__`.
    (Four probes once did work when imported, one running `rm -rf` through `os.system`.)"""
    modules = ["benchmarks", *(f"benchmarks.{name}" for name in BENCHMARKS)]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", IMPORT_PROBE, *modules], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert list(report) == modules
    for name, r in report.items():
        assert r["flags"] == [], f"{name} defined flags when imported: {r['flags']}"
        assert r["did"] == [], f"{name} did this when imported: {r['did']}"
        assert r["printed"] == "", f"{name} printed when imported: {r['printed']!r}"
        assert r["files"] == [], f"{name} left files in the working folder: {r['files']}"
        assert r["seconds"] < 2.0, f"{name} took {r['seconds']:.1f} s to import"
    assert not list(tmp_path.iterdir())


def test_scripts_name_only_what_jaxdigits_has():
    """Every name the scripts in experiments/ and benchmarks/ take from jaxdigits (or from each
    other's shared modules) exists: `module.name` after `from jaxdigits import module`, and
    `from jaxdigits.module import name`. The probes are run by hand, not here, so a renamed or
    removed function must fail a test (one script once called a function removed since). In
    benchmarks/ only the `module.name` form is used, so renaming jaxdigits' internals is a
    mechanical edit."""
    packages = ("jaxdigits", "benchmarks", "experiments")
    checked = 0
    for path in SCRIPTS:
        tree = ast.parse(path.read_text(), filename=str(path))
        where = f"{path.parent.name}/{path.name}"
        modules = {}  # local name -> the module it was imported as
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in packages:
                modules.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jaxdigits."):
                assert path.parent.name != "benchmarks", \
                    f"{where}:{node.lineno}: use `from jaxdigits import module` and module.name"
                module = importlib.import_module(node.module)
                for a in node.names:
                    assert hasattr(module, a.name), \
                        f"{where}:{node.lineno}: {node.module} has no {a.name!r}"
                    checked += 1
            elif isinstance(node, ast.Import):
                modules.update({a.asname: a.name for a in node.names
                                if a.name.startswith(packages) and a.asname})
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in modules):
                module = importlib.import_module(modules[node.value.id])
                assert hasattr(module, node.attr), \
                    f"{where}:{node.lineno}: {modules[node.value.id]} has no {node.attr!r}"
                checked += 1
    assert checked > 100  # The scripts do use jaxdigits this way.


def test_config_overrides_from_text():
    from benchmarks import common
    from jaxdigits.errors import UserError

    base = common.peers_config(model="mlp")
    assert (base.optimizer, base.learning_rate, base.augment_shift) == ("momentum", 0.1, 0)
    config = common.config_with("driver=unroll,steps_per_call=4,hidden=256:128,learning_rate=0.5",
                                base)
    assert (config.driver, config.steps_per_call, config.hidden, config.learning_rate) == (
        "unroll", 4, (256, 128), 0.5)
    assert config.model == "mlp" and common.config_with("", base) == base
    with pytest.raises(UserError, match="'learning_rat=1' is not name=value with a Config field"):
        common.config_with("learning_rat=1", base)
    with pytest.raises(UserError, match="'batch_size=big': not a valid int for batch_size"):
        common.config_with("batch_size=big", base)


@pytest.mark.slow
def test_program_hash_command(tmp_path):
    """The hash is of the program alone: the same in a second process, another for another model."""
    from benchmarks import program_hash

    done = run_cli("benchmarks.program_hash", "--models=linear,mlp", "--steps=1",
                   f"--json={tmp_path / 'h.json'}", timeout=120)
    assert done.returncode == 0, done.stderr
    saved = json.loads((tmp_path / "h.json").read_text())
    assert list(saved["models"]) == ["linear", "mlp"] and saved["steps"] == 1
    assert saved["models"]["linear"] == program_hash.program_hashes(["linear"], steps=1)["linear"]
    hashes = {m["hash"] for m in saved["models"].values()}
    assert len(hashes) == 2 and all(len(h) == 16 for h in hashes)
    assert "linear " + saved["models"]["linear"]["hash"] in done.stdout


@pytest.mark.slow
def test_compare_steps_on_the_linear_model():
    from benchmarks import compare_steps

    result = compare_steps.compare("linear", ["driver=step", "driver=unroll,steps_per_call=4"],
                                   rounds=2, steps=8)
    step, unroll = result["rows"]
    assert (step["driver"], step["steps_per_call"]) == ("step", 1)
    assert (unroll["driver"], unroll["steps_per_call"]) == ("unroll", 4)
    assert step["speedup"] == 1.0 and unroll["speedup"] > 0
    assert step["gflops_per_step"] > 0 and unroll["gflops_per_step"] > 0
    ms = step["ms_per_step"]
    assert 0 < ms["min"] <= ms["median"] <= ms["max"]
    assert "driver=unroll,steps_per_call=4" in compare_steps.table(result)


@pytest.mark.slow
def test_profile_step_sums_the_traced_ops(tmp_path, monkeypatch):
    import tempfile

    from benchmarks import common, profile_step

    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    config = common.peers_config(model="mlp", driver="unroll", steps_per_call=2,
                                 max_train_examples=1024)
    result = profile_step.profile(config, warmup=1, calls=2, hlo_path=tmp_path / "hlo.txt")
    assert result["steps_traced"] == 4 and result["named_ms_per_step"] > 0
    kinds = {row["kind"] for row in result["kinds"]}
    assert any("dot" in k or "ynn" in k for k in kinds), kinds  # The MLP's matmuls are named.
    assert "HloModule" in (tmp_path / "hlo.txt").read_text()
    assert not list((tmp_path / "tmp").iterdir())  # The trace's temporary folder is gone.


@pytest.mark.slow
def test_serve_latency_against_a_running_server(exported_model):
    from benchmarks import serve_latency
    from jaxdigits import predictor, serve

    httpd = serve.make_server(predictor.load(exported_model), "127.0.0.1", 0, log=lambda line: None)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        rows = serve_latency.latency(f"http://127.0.0.1:{httpd.server_address[1]}", requests=8)
    finally:
        httpd.shutdown()
    assert [(r["payload"], r["clients"]) for r in rows] == [
        ("28x28", 1), ("png", 1), ("28x28", 8), ("png", 8)]
    for r in rows:
        assert r["requests"] == 8 and 0 < r["median_ms"] <= r["max_ms"]
        assert r["server_model_median_ms"] > 0 and r["server_preprocess_median_ms"] > 0


@pytest.mark.slow
def test_compare_speed_times_the_mlp_epoch(tmp_path):
    """Without PyTorch (`--peers=`): the jaxdigits job, its own process, and the matmul roofline."""
    done = run_cli("benchmarks.compare_speed", "--peers=", "--models=mlp", "--mlp_epochs=1",
                   "--rounds=1", f"--json={tmp_path / 's.json'}", timeout=300)
    assert done.returncode == 0, done.stderr
    saved = json.loads((tmp_path / "s.json").read_text())
    [run] = saved["results"]["jaxdigits mlp"]
    assert run["steps"] == 468 and run["seconds"] > 0 and "--momentum=0.9" in run["cmd"]
    assert saved["roofline"][0]["gflops"] > 0
    assert list(saved["ratios"]) == ["jaxdigits mlp GFLOP/s / matmul roofline"]


def test_public_nets_are_the_published_shapes_and_counted_by_xla():
    import jax
    import jax.numpy as jnp

    from benchmarks import public_nets

    images = jax.ShapeDtypeStruct((2, 28, 28, 1), jnp.float32)
    for name, (module, _) in public_nets.NETS.items():
        out = jax.eval_shape(lambda x, m=module: m.init_with_output(
            jax.random.key(0), x, train=False)[0], images)
        assert out.shape == (2, 10), name
    # The CNN's step against the count by hand: per image, forward multiply-adds of conv 5x5x32
    # on 28x28, conv 5x5x32x64 on 14x14 and the two dense layers; a step is about three forward
    # passes (the first layer's input gradient is not needed), two flops a multiply-add.
    macs = 28 * 28 * 25 * 32 + 14 * 14 * 25 * 32 * 64 + 7 * 7 * 64 * 128 + 128 * 10
    row = public_nets.time_net(public_nets.NETS["cnn"][0], steps=1)
    assert 0.7 < row["gflops_per_step"] / (3 * 2 * macs * 128 / 1e9) < 1.1
    assert row["step_seconds"] > 0 and row["epoch_seconds"] == pytest.approx(
        row["step_seconds"] * 55_000 / 128)
    rows = {"cnn": {**row, "about": "x", "flops_vs_cnn": 1.0}}
    table = public_nets.results_file(rows, {"cpu": "c", "cpu_count": 2, "load_average": [0.5]})
    assert table["rows"][0][:4] == ["`cnn`", "x", f"{row['gflops_per_step']:.1f}", "1.0x"]
    assert all(len(r) == len(table["columns"]) for r in table["rows"])
