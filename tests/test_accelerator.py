"""Off the CPU: nothing CPU-specific is built or used (the backend faked as a GPU), the default
driver says it is unmeasured; the persistent compilation cache and its switches; no log line for
accelerator libraries that are not installed; and the accelerator script's tiny run on the CPU."""

import json
import logging
import subprocess
import sys

import jax
import pytest

from conftest import ROOT, run_cli
from jaxdigits import backend, onednn, step
from jaxdigits.config import Config


@pytest.fixture
def fake_gpu(monkeypatch):
    """jax.default_backend() says "gpu"; any attempt to load oneDNN fails the test."""
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")

    def no_onednn():
        raise AssertionError("oneDNN was looked for on a GPU backend")

    monkeypatch.setattr(onednn, "unavailable", no_onednn)


def test_nothing_cpu_specific_on_an_accelerator(fake_gpu):
    assert not backend.is_cpu() and not backend.cpu_layers("auto")
    assert backend.cpu_conv_choice("auto") == "" and backend.cpu_conv_choice("onednn") == ""
    assert not backend.onednn_grads("cnn", "auto") and not backend.onednn_grads("cnn", "onednn")
    assert backend.compiler_options("auto") == {} and backend.compiler_options("eigen") == {}
    assert backend.init_compile_options() == {}
    assert not backend.member_loop("auto", "cnn")
    model = step.make_config_model(Config(model="cnn"), 10)
    params = jax.eval_shape(lambda k: model.init(k, (28, 28, 1)), jax.random.key(0))
    program = str(jax.make_jaxpr(lambda p, x: model.apply(p, x))(
        params, jax.ShapeDtypeStruct((2, 28, 28, 1), "float32")))
    assert "reduce_window_max" in program  # flax's own pooling, not jaxdigits.fastconv's
    assert "custom_vjp" not in program and "ffi" not in program


def test_an_unmeasured_backend_says_so(fake_gpu):
    assert backend.default_driver() == ("scan", 64)
    assert backend.resolve_driver("auto") == ("scan", 64)
    assert "not yet measured" in backend.driver_basis()
    assert "measured on" in backend.driver_basis("cpu")


@pytest.fixture
def jax_cache_config():
    """Restores JAX's compilation-cache settings after the test."""
    names = ("jax_enable_compilation_cache", "jax_compilation_cache_dir",
             "jax_persistent_cache_min_compile_time_secs")
    saved = {n: getattr(jax.config, n) for n in names}
    yield
    for n, v in saved.items():
        jax.config.update(n, v)


def test_compilation_cache_defaults_to_the_user_cache_folder(monkeypatch, tmp_path,
                                                             jax_cache_config):
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.delenv("JAX_ENABLE_COMPILATION_CACHE", raising=False)
    monkeypatch.setenv("JAXDIGITS_CACHE_DIR", str(tmp_path))
    assert backend.enable_compilation_cache() == str(tmp_path / "xla")
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "xla")
    assert jax.config.jax_enable_compilation_cache
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "mine"))
    assert backend.enable_compilation_cache() == str(tmp_path / "mine")


@pytest.mark.parametrize("flag, env", [(False, None), (True, "false"), (True, "0")])
def test_compilation_cache_turns_off(monkeypatch, jax_cache_config, flag, env):
    if env is not None:
        monkeypatch.setenv("JAX_ENABLE_COMPILATION_CACHE", env)
    assert backend.enable_compilation_cache(flag) is None
    assert not jax.config.jax_enable_compilation_cache


@pytest.mark.slow
def test_a_second_run_loads_its_programs_from_the_cache(tmp_path):
    """A command fills the cache folder; with JAX_ENABLE_COMPILATION_CACHE=false nothing is
    written."""
    args = ["jaxdigits.train", "--model=linear", "--epochs=1", "--max_train_examples=1024",
            "--validation_size=256", "--quiet"]
    for name, env in (("on", {}), ("off", {"JAX_ENABLE_COMPILATION_CACHE": "false"})):
        cache = tmp_path / f"cache_{name}"
        done = run_cli(*args, f"--workdir={tmp_path / name}",
                       env={"JAX_COMPILATION_CACHE_DIR": str(cache), **env})
        assert done.returncode == 0, done.stderr
        entries = list(cache.glob("*")) if cache.exists() else []
        assert (len(entries) > 0) == (name == "on"), entries


def test_missing_accelerator_libraries_make_no_log_line():
    record = lambda level, msg: logging.LogRecord("jax._src.xla_bridge", level, "", 0, msg, (),
                                                  None)
    quiet = backend.NotInstalledFilter()
    line = "Unable to initialize backend 'tpu': INTERNAL: Failed to open libtpu.so"
    assert not quiet.filter(record(logging.INFO, line))
    assert quiet.filter(record(logging.WARNING, line))  # Warnings and errors still show.
    assert quiet.filter(record(logging.INFO, "Something else"))
    code = ("import logging; logging.basicConfig(level=logging.DEBUG)\n"
            "from jaxdigits import backend; backend.quiet_missing_platforms()\n"
            "import jax; print(jax.devices())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert done.returncode == 0 and "CpuDevice" in done.stdout
    assert "Unable to initialize backend" not in done.stderr, done.stderr


@pytest.mark.slow
def test_the_accelerator_script_runs_end_to_end_on_the_cpu(tmp_path):
    out = tmp_path / "accelerator.json"
    done = run_cli("benchmarks.accelerator", "--tiny", "--noinstall", "--seeds=2",
                   "--modes=many", f"--out={out}", timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["device"]["backend"] == "cpu" and result["tiny"]
    suite = result["suite"]
    assert suite["rows"] and len(suite["rows"]) + len(suite["skipped"]) == 2
    assert {r["dtype"] for r in suite["results"]} == {"float32", "bfloat16"}
    run = result["speedrun"][0]
    assert run["mode"] == "many" and len(run["test_accuracy"]) == 2
    assert 0 < run["train_seconds"] < run["train_seconds_with_compile"]
    assert run["step_compile_seconds"] > 0
    assert "seeds at >= 99.0 %" in done.stdout
