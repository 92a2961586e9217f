"""Every per-backend choice in one place: CPU convolution kernels and layer formulations, XLA
compile options, the default step driver, and how K models share a step.

GPU and TPU keep the libraries' own layers and XLA's defaults; the CPU choices below were each
measured faster on the 2-core machines this project runs on (docs/performance.md, BUILD_NOTES.md).
"""

import jax

from jaxdigits import onednn
from jaxdigits.errors import UserError


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


def onednn_grads(model: str, cpu_conv: str = "auto") -> bool:
    """Whether `model`'s convolutions (the CNNs' after the first) get oneDNN's gradients under
    `--cpu_conv` (see `cpu_conv_choice`); other models never look for oneDNN."""
    return model.startswith("cnn") and cpu_conv_choice(cpu_conv) == "onednn"


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
    0.9 s at level 1, against about 4.5 s op by op). The parameters are bit-identical to the
    op-by-op `model.init` (tests/test_models.py; level 0 is not: it fuses no multiply-adds).
    """
    return {"xla_backend_optimization_level": 1} if is_cpu() else {}


def default_driver(backend: str | None = None) -> tuple[str, int]:
    """(driver, steps per call) for a backend. CPU: 8 steps unrolled in one program, measured
    fastest. GPU/TPU: `lax.scan` over 64 steps (fewer host round-trips), not yet measured."""
    if (backend or jax.default_backend()) == "cpu":
        return "unroll", 8
    return "scan", 64


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
