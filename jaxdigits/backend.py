"""Every per-backend choice in one place: CPU convolution kernels and layer formulations, XLA
compile options, the default step driver, how K models share a step, the compute dtype, and the
process-wide JAX settings every command starts with (the persistent compilation cache, no log
line about accelerator libraries that are not installed).

GPU and TPU keep the libraries' own layers and XLA's defaults; the CPU choices below were each
measured faster on the 2-core machines this project runs on (docs/performance.md, BUILD_NOTES.md).
Nothing CPU-specific (oneDNN, XLA CPU options, the fast layers) is built or used elsewhere.
"""

import logging
import os

import jax
import jax.numpy as jnp

from jaxdigits import data, onednn
from jaxdigits.config import DTYPES
from jaxdigits.errors import UserError

FALSE = ("0", "false", "no", "off")


def compilation_cache_dir() -> str:
    """Where compiled programs are kept: $JAX_COMPILATION_CACHE_DIR if set, else the jaxdigits
    cache folder's `xla` (~/.cache/jaxdigits/xla, or under $XDG_CACHE_HOME or
    $JAXDIGITS_CACHE_DIR)."""
    return os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(data.cache_dir("xla"))


def enable_compilation_cache(enabled: bool = True) -> str | None:
    """Turns JAX's persistent compilation cache on (in `compilation_cache_dir()`) and returns its
    folder, or off (None) when `enabled` is False or $JAX_ENABLE_COMPILATION_CACHE is false.

    Every program that compiles for 0.05 s or more is kept (JAX's default keeps only those over
    1 s, which none of the speedrun's are), so a second run of the same command loads them.
    """
    env_off = os.environ.get("JAX_ENABLE_COMPILATION_CACHE", "").strip().lower() in FALSE
    if not enabled or env_off:
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    path = compilation_cache_dir()
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.05)
    return path


class NotInstalledFilter(logging.Filter):
    """Drops JAX's INFO line for each accelerator platform whose library is simply not installed
    ("Unable to initialize backend 'tpu': ... libtpu.so: cannot open shared object file").
    Warnings and errors pass, as does everything else; asking for a platform that cannot start
    (JAX_PLATFORMS=cuda) still fails with JAX's own error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno <= logging.INFO
                    and str(record.msg).startswith("Unable to initialize backend"))


def quiet_missing_platforms() -> None:
    """Installs `NotInstalledFilter` on JAX's backend logger (once)."""
    logger = logging.getLogger("jax._src.xla_bridge")
    if not any(isinstance(f, NotInstalledFilter) for f in logger.filters):
        logger.addFilter(NotInstalledFilter())


def compute_dtype(dtype: str = "float32"):
    """`--dtype` (config.DTYPES) as a jnp dtype: what the layers compute in; parameters, optimizer
    state, loss and softmax stay float32 whatever it is (`models.make_model`)."""
    if dtype not in DTYPES:
        raise UserError(f"unknown --dtype {dtype!r}; choose one of {', '.join(DTYPES)}.")
    return jnp.dtype(dtype)


def is_cpu() -> bool:
    return jax.default_backend() == "cpu"


def default_cpu_layers() -> bool:
    """Whether the CNN uses jaxdigits.fastconv's layers: on the CPU backend only, where they were
    measured faster; GPU and TPU keep the library's own layers."""
    return is_cpu()


def cpu_layers(layers: str = "auto") -> bool:
    """`--layers` resolved: auto is fast on CPU, plain elsewhere."""
    return default_cpu_layers() if layers == "auto" else layers == "fast"


def cpu_conv_choice(cpu_conv: str = "auto") -> str:
    """`--cpu_conv` resolved: "onednn", "eigen" or "ynnpack" on the CPU backend, "" elsewhere.

    "auto" is "onednn" where `jaxdigits.onednn` can be used (the `onednn` extra installed and a
    C++ compiler present) and "eigen" otherwise; an explicit "onednn" that cannot be used is a
    UserError saying why.
    """
    if not is_cpu():
        return ""
    if cpu_conv in ("auto", "onednn"):
        reason = onednn.unavailable()
        if reason is None:
            return "onednn"
        if cpu_conv == "onednn":
            raise UserError(f"--cpu_conv=onednn: {reason}; use --cpu_conv=eigen.")
        return "eigen"
    return cpu_conv


def onednn_grads(model: str, cpu_conv: str = "auto", dtype: str = "float32") -> bool:
    """Whether `model`'s convolutions (the CNNs' after the first) get oneDNN's gradients under
    `--cpu_conv` (see `cpu_conv_choice`); other models, other backends and other dtypes than
    float32 (the handlers are float32) never look for oneDNN."""
    return (model.startswith("cnn") and dtype == "float32" and is_cpu()
            and cpu_conv_choice(cpu_conv) == "onednn")


def compiler_options(cpu_conv: str = "auto") -> dict:
    """XLA compile options for the programs that train and score a model (`--cpu_conv`).

    XLA's CPU backend hands convolutions, dots and reductions to YNNPACK by default. "eigen" and
    "onednn" keep the dots and reductions there but leave convolutions to XLA's own Eigen
    kernels: the seed CNN's train step is 1.9x faster on the Intel Xeon measured, the MLP's and
    cnn_tiny's steps unchanged; "onednn" also sends the CNN's later convolutions' gradients to
    oneDNN (`models.make_model(onednn_grads=True)`). "ynnpack" keeps XLA's default.
    GPU and TPU: no options.
    """
    if not is_cpu() or cpu_conv == "ynnpack":
        return {}
    return {"xla_cpu_experimental_ynn_fusion_type":
            "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}


def init_compile_options() -> dict:
    """Compile options of a model's one-off parameter initialisation.

    On CPU XLA's optimisation level 1 rather than the default 3: it runs once, and the full
    optimisation cost more than running it (cnn_small: 3.1 s of compiling at the default level,
    0.9 s at level 1, against about 4.5 s op by op); and XLA's older loop emitters rather than
    its fusion emitters (`cnn_tiny`: 0.69 -> 0.50 s). The parameters are bit-identical to the
    op-by-op `model.init` (tests/test_models.py; level 0 is not: it fuses no multiply-adds).
    """
    return {"xla_backend_optimization_level": 1, **CHEAP_CODEGEN} if is_cpu() else {}


# Code generation that compiles sooner and runs slower: for programs that run once or once an
# epoch (initialisation, the epoch order), never for the step or the scorer.
CHEAP_CODEGEN = {"xla_cpu_use_fusion_emitters": False}


# The default (driver, steps per call) of each backend and what it rests on. A backend not listed
# here gets ACCELERATOR_DRIVER, which no measurement supports yet: `python -m jaxdigits.benchmark
# --suite` (or `python -m benchmarks.accelerator`) on that backend measures the drivers, and the
# winner belongs here with its numbers.
MEASURED_DRIVERS = {
    "cpu": ("unroll", 8, "measured on 2-core Xeon and EPYC CPUs (docs/performance.md)"),
}
ACCELERATOR_DRIVER = ("scan", 64, "not yet measured on this backend: a guess (fewer host "
                      "round-trips); run `python -m jaxdigits.benchmark --suite` to measure")


def default_driver(backend: str | None = None) -> tuple[str, int]:
    """(driver, steps per call) for a backend (default: this one); see MEASURED_DRIVERS."""
    driver, steps, _ = MEASURED_DRIVERS.get(backend or jax.default_backend(), ACCELERATOR_DRIVER)
    return driver, steps


def driver_basis(backend: str | None = None) -> str:
    """What the backend's default driver rests on: a measurement, or "not yet measured"."""
    return MEASURED_DRIVERS.get(backend or jax.default_backend(), ACCELERATOR_DRIVER)[2]


def resolve_driver(driver: str = "auto", steps_per_call: int = 0) -> tuple[str, int]:
    """`--driver` and `--steps_per_call` resolved for this backend: (driver, steps per call)."""
    default, steps = default_driver()
    if driver == "step":
        return "step", 1
    return (default if driver == "auto" else driver), steps_per_call or steps


def member_loop(members: str, model: str) -> bool:
    """Whether the step loops over K members (True) or vmaps them (False), as `--members` says.

    auto loops for conv nets on CPU: under `vmap` their convolutions become one grouped
    convolution (feature_group_count = K), which YNNPACK (`--cpu_conv=ynnpack`) runs several
    times slower than K ordinary ones; with the default Eigen kernels the two are within a few
    per cent. Dense models, and every model on GPU/TPU, keep `vmap`.
    """
    if members != "auto":
        return members == "loop"
    return is_cpu() and model.startswith("cnn")
